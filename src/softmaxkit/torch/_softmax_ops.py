"""Softmax, log-softmax and log-sum-exp as lean ``torch.autograd.Function`` ops (the losses: :mod:`._ops`).

Every op computes with :mod:`softmaxkit.torch._stable`, which holds the numerics (the row maximum,
the shifted logits and the sum of the non-top exponentials) and the package's non-finite policy.
``softmax`` and ``log_softmax`` save their output (and per row the maximum's position; ``log_softmax``
also the sum of the other exponentials), as PyTorch saves the output; for float16 and bfloat16 they
save the input instead and recompute the float32 output in backward, so that the gradient is the
float32 one rounded once (from the rounded output it is off by up to thousands of ulp).
``logsumexp`` saves the input and two numbers per row, and recomputes the softmax from the shifted
input. The backward passes are differentiable (double backward works).
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from softmaxkit.torch._autocast import as_autocast_op
from softmaxkit.torch._checks import float_input, normalize_dim, normalize_dims
from softmaxkit.torch._function import signature_once
from softmaxkit.torch._stable import (
    INF,
    compute_dtype,
    flat_dims,
    log_softmax_parts,
    log_softmax_vjp,
    logsumexp_parts,
    normaliser,
    shift_by,
    softmax_and_arg,
    softmax_vjp,
)

__all__ = ["log_softmax", "logsumexp", "softmax"]


def _torch_softmax(x):
    return torch.softmax(x, 0)


def _torch_log_softmax(x):
    return torch.log_softmax(x, 0)


def _torch_logsumexp(x):
    return torch.logsumexp(x, 0)


def _empty_reduction(x: torch.Tensor, dims: tuple[int, ...]) -> bool:
    return any(x.shape[d] == 0 for d in dims) if x.ndim else False


def _softmax_forward(xc: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax, arg)``: ``exp(x - m) / (1 + S')`` (see :func:`softmax_and_arg`)."""
    return softmax_and_arg(xc, dim)


def _log_softmax_forward(xc: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_softmax, arg, rest)``: ``(x - m) - log1p(S')`` (see :func:`log_softmax_parts`)."""
    return log_softmax_parts(xc, dim)


@signature_once
class _Softmax(Function):
    """New-style (``setup_context``) so that ``torch.func`` and ``torch.compile`` see through it; the forward
    returns the maximum's position as a second, non-differentiable output for the backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim):
        cdt = compute_dtype(x.dtype)
        p, arg = _softmax_forward(x.to(cdt), dim)
        return p.to(x.dtype), arg

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x, dim), (out, arg) = inputs, output
        ctx.dim, ctx.from_input = dim, compute_dtype(x.dtype) != x.dtype
        ctx.save_for_backward(x if ctx.from_input else out, arg)

    @staticmethod
    def backward(ctx, grad, _grad_arg):
        saved, arg = ctx.saved_tensors
        dim = ctx.dim
        if ctx.from_input:  # float16 / bfloat16: the float32 softmax again, from the input
            p, arg = _softmax_forward(saved.to(compute_dtype(saved.dtype)), dim)
        else:
            p = saved
        g = grad.to(p.dtype)
        # p_i (g_i - <g, p>) with <g, p> - g_top = sum_j (g_j - g_top) p_j: at the top entry
        # p_top sum_j (g_top - g_j) p_j, no cancellation however confident the row.
        grad_in = softmax_vjp(p, arg, g, dim)
        return grad_in.to(saved.dtype), None


@signature_once
class _LogSoftmax(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim):
        cdt = compute_dtype(x.dtype)
        lp, arg, rest = _log_softmax_forward(x.to(cdt), dim)
        return lp.to(x.dtype), arg, rest

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x, dim), (out, arg, rest) = inputs, output
        ctx.mark_non_differentiable(rest)
        ctx.dim, ctx.from_input = dim, compute_dtype(x.dtype) != x.dtype
        ctx.save_for_backward(x if ctx.from_input else out, arg, rest)

    @staticmethod
    def backward(ctx, grad, _grad_arg, _grad_rest):
        saved, arg, rest = ctx.saved_tensors
        dim = ctx.dim
        recorded = torch.is_grad_enabled()
        if ctx.from_input:  # float16 / bfloat16: the float32 log-softmax again, from the input
            lp, arg, rest = _log_softmax_forward(saved.to(compute_dtype(saved.dtype)), dim)
        else:
            lp = saved
        g = grad.to(lp.dtype)
        # At the top entry g_top (1 - p_top) - p_top sum_{j != top} g_j, with 1 - p_top = S' / (1 + S')
        # (when recording, the sum of the other probabilities: the same value, and it depends on x).
        grad_in = log_softmax_vjp(lp, arg, rest, g, dim, recorded and not ctx.from_input)
        return grad_in.to(saved.dtype), None


def _logsumexp_parts(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, S')`` over ``dims``, shaped with the reduced dimensions kept (size one)."""
    if len(dims) == 1:
        return logsumexp_parts(x, dims[0])
    top, rest = logsumexp_parts(flat_dims(x, dims), -1)
    shape = [1 if d in dims else n for d, n in enumerate(x.shape)]
    return top.reshape(shape), rest.reshape(shape)


@signature_once
class _LogSumExp(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, dims, keepdim):
        xc = x.to(compute_dtype(x.dtype))
        top, rest = _logsumexp_parts(xc, dims)
        lse = top + rest.log1p()
        out = lse if keepdim else lse.squeeze(dims)
        return out.to(x.dtype), top, rest

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x, dims, keepdim), (_, top, rest) = inputs, output
        ctx.mark_non_differentiable(top, rest)
        ctx.dims, ctx.keepdim = dims, keepdim
        ctx.save_for_backward(x, top, rest)

    @staticmethod
    def backward(ctx, grad, _grad_top, _grad_rest):
        x, top, rest = ctx.saved_tensors
        xc = x.to(top.dtype)
        if torch.is_grad_enabled():  # create_graph=True: the statistics must depend on x
            top, rest = _logsumexp_parts(xc, ctx.dims)
        g = grad.to(top.dtype)
        if not ctx.keepdim:
            for d in ctx.dims:
                g = g.unsqueeze(d)
        # The softmax from the shifted logits, exp(x - m) / (1 + S'): independent of the magnitude of x.
        # The per-row factor first, and (unless recording) the exponentials in place: one N x C temporary.
        factor = g / normaliser(top, rest)
        shifted = shift_by(xc, top)
        grad_in = shifted.exp() * factor if torch.is_grad_enabled() else shifted.exp_().mul_(factor)
        return grad_in.to(x.dtype), None, None


def _with_dtype(x: torch.Tensor, dtype) -> torch.Tensor:
    """``dtype=`` as PyTorch's ``softmax`` takes it: the input is cast to it before the op."""
    if dtype is None:
        return x
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be None or a floating torch.dtype, got {dtype!r}")
    return x.to(dtype)


def softmax(input: torch.Tensor, dim: int = -1, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Softmax along ``dim``, as an autograd op with the package's non-finite policy.

    .. math:: \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \quad m = \max_j x_j

    Parameters
    ----------
    input : torch.Tensor
        Logits of any shape; float16 and bfloat16 are computed in float32.
    dim : int, default -1
        The axis that sums to one.
    dtype : torch.dtype, optional
        Cast the input to it first, as ``torch.softmax``'s ``dtype=``. Under ``torch.autocast`` the
        result has the dtype PyTorch's ``softmax`` would give (see :mod:`softmaxkit.torch._autocast`).

    Returns
    -------
    torch.Tensor
        Probabilities, of the input's shape and floating dtype. A row of only ``-inf`` gives zeros
        (PyTorch: ``NaN``); ``+inf`` entries share the mass equally.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import softmax
    >>> softmax(torch.tensor([2.0, 1.0, 0.1], dtype=torch.float64))
    tensor([0.6590, 0.2424, 0.0986], dtype=torch.float64)
    >>> softmax(torch.tensor([float("-inf"), float("-inf")]))
    tensor([0., 0.])
    """
    x = as_autocast_op(_with_dtype(float_input(input), dtype), _torch_softmax)
    d = normalize_dim(dim, x.ndim)
    if x.ndim == 0:
        return _Softmax.apply(x.unsqueeze(0), 0)[0].squeeze(0)
    if x.shape[d] == 0:
        return x.clone()
    return _Softmax.apply(x, d)[0]


def log_softmax(input: torch.Tensor, dim: int = -1, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Log-softmax along ``dim``, as an autograd op with the package's non-finite policy.

    .. math:: \log\operatorname{softmax}(x)_i = (x_i - m) - \log\sum_j e^{x_j - m}

    Parameters
    ----------
    input : torch.Tensor
        Logits of any shape; float16 and bfloat16 are computed in float32.
    dim : int, default -1
        The class axis.
    dtype : torch.dtype, optional
        Cast the input to it first, as ``torch.log_softmax``'s ``dtype=``; autocast as in :func:`softmax`.

    Returns
    -------
    torch.Tensor
        Log-probabilities, of the input's shape and floating dtype. A row of only ``-inf`` gives
        ``-inf`` with a zero gradient (PyTorch: ``NaN``).

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import log_softmax
    >>> log_softmax(torch.tensor([[0.0, 0.0], [float("-inf"), 0.0]]))
    tensor([[-0.6931, -0.6931],
            [   -inf,  0.0000]])
    """
    x = as_autocast_op(_with_dtype(float_input(input), dtype), _torch_log_softmax)
    d = normalize_dim(dim, x.ndim)
    if x.ndim == 0:
        return _LogSoftmax.apply(x.unsqueeze(0), 0)[0].squeeze(0)
    if x.shape[d] == 0:
        return x.clone()
    return _LogSoftmax.apply(x, d)[0]


def logsumexp(input: torch.Tensor, dim: int | tuple[int, ...] | None = -1, *, keepdim: bool = False) -> torch.Tensor:
    r"""Log-sum-exp over ``dim`` (an int, a tuple of ints, or ``None`` for all), as an autograd op.

    .. math:: \operatorname{lse}(x) = m + \log\sum_j e^{x_j - m}, \quad m = \max_j x_j

    The backward pass saves the input (held by autograd anyway) and two numbers per row (the
    maximum and the sum of the other exponentials), and recomputes the softmax from the shifted
    input, so that its accuracy does not depend on the magnitude of ``input``.

    Parameters
    ----------
    input : torch.Tensor
        Any shape; float16 and bfloat16 are computed in float32.
    dim : int, tuple of int or None, default -1
        The axes reduced.
    keepdim : bool, default False
        Keep the reduced axes with size one.

    Returns
    -------
    torch.Tensor
        An all ``-inf`` row gives ``-inf`` with a zero gradient; any ``+inf`` gives ``+inf``;
        an empty reduction gives ``-inf``.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import logsumexp
    >>> logsumexp(torch.tensor([[0.0, 0.0], [float("-inf"), float("-inf")]]))
    tensor([0.6931,   -inf])
    """
    x = as_autocast_op(float_input(input), _torch_logsumexp)
    if not isinstance(keepdim, bool):
        raise TypeError(f"keepdim must be a bool, got {keepdim!r}")
    if x.ndim == 0:
        normalize_dims(dim, 1)
        return _LogSumExp.apply(x.unsqueeze(0), (0,), False)[0]
    dims = normalize_dims(dim, x.ndim)
    if _empty_reduction(x, dims):
        shape = (
            [1 if d in dims else n for d, n in enumerate(x.shape)]
            if keepdim
            else [n for d, n in enumerate(x.shape) if d not in dims]
        )
        out = torch.full(shape, -INF, dtype=x.dtype, device=x.device)
        return out + 0 * x.sum(dim=dims, keepdim=keepdim) if x.requires_grad else out
    return _LogSumExp.apply(x, dims, keepdim)[0]
