"""Softmax, log-softmax, log-sum-exp, cross-entropy and NLL as lean ``torch.autograd.Function`` ops.

Every op computes with :mod:`softmaxkit.torch._stable`, which holds the numerics and the package's
non-finite policy (see :func:`softmaxkit.softmax`): a fully masked row has softmax 0 and a zero
gradient, ``+inf`` logits share the mass, ``0 * -inf`` contributes 0, where PyTorch's own
functions return ``NaN``.

The backward passes keep only what they need. ``cross_entropy`` saves the logits (a reference to a
tensor autograd holds anyway), the target, the class weights and the per-row log-sum-exp: O(N)
beyond its inputs, never a second N x C tensor; the softmax is recomputed in backward as
``exp(x - lse)``. ``logsumexp`` does the same; ``softmax`` and ``log_softmax`` save their output,
as PyTorch does.

float16 and bfloat16 are computed in float32 and returned in their own dtype; integer and boolean
input is promoted to ``torch.get_default_dtype()``, as ``torch.exp`` does. The backward passes are
written with differentiable operations, so double backward (``create_graph=True``) works; only then
is the log-sum-exp recomputed from the input so that its dependence on the input is recorded.
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from softmaxkit._validation import check_label_smoothing
from softmaxkit.torch._checks import (
    check_index_target,
    check_loss_args,
    check_probability_target,
    check_target_kind,
    float_input,
    normalize_dim,
    normalize_dims,
)
from softmaxkit.torch._stable import (
    INF,
    compute_dtype,
    flat_dims,
    log_softmax_and_lse,
    log_softmax_from_lse,
    row_dot,
    softmax_from_lse,
    times,
)

__all__ = ["cross_entropy", "log_softmax", "logsumexp", "nll_loss", "softmax"]


# --------------------------------------------------------------------------------------------
# softmax, log_softmax, logsumexp.
# --------------------------------------------------------------------------------------------


def _empty_reduction(x: torch.Tensor, dims: tuple[int, ...]) -> bool:
    return any(x.shape[d] == 0 for d in dims) if x.ndim else False


class _Softmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        xc = x.to(compute_dtype(x.dtype))
        out = log_softmax_and_lse(xc, dim)[0].exp().to(x.dtype)
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        p = out.to(compute_dtype(out.dtype))
        g = grad.to(p.dtype)
        grad_in = p * (g - (g * p).sum(dim=ctx.dim, keepdim=True))
        return grad_in.to(out.dtype), None


class _LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        xc = x.to(compute_dtype(x.dtype))
        out = log_softmax_and_lse(xc, dim)[0].to(x.dtype)
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        lp = out.to(compute_dtype(out.dtype))
        g = grad.to(lp.dtype)
        grad_in = g - lp.exp() * g.sum(dim=ctx.dim, keepdim=True)
        # An all -inf row has no probability mass to move: its gradient is zero.
        dead = lp.amax(dim=ctx.dim, keepdim=True) == -INF
        if bool(dead.any()):
            grad_in = torch.where(dead, 0.0, grad_in)
        return grad_in.to(out.dtype), None


def _logsumexp_keepdim(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """The log-sum-exp over ``dims``, with the reduced dimensions kept (size one)."""
    if len(dims) == 1:
        return log_softmax_and_lse(x, dims[0])[1]
    lse = log_softmax_and_lse(flat_dims(x, dims), -1)[1]
    return lse.reshape([1 if d in dims else n for d, n in enumerate(x.shape)])


class _LogSumExp(Function):
    @staticmethod
    def forward(ctx, x, dims, keepdim):
        xc = x.to(compute_dtype(x.dtype))
        lse = _logsumexp_keepdim(xc, dims)
        ctx.dims = dims
        ctx.save_for_backward(x, lse)
        out = lse if keepdim else lse.squeeze(dims)
        ctx.keepdim = keepdim
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, lse = ctx.saved_tensors
        xc = x.to(lse.dtype)
        if torch.is_grad_enabled():  # create_graph=True: lse must depend on x
            lse = _logsumexp_keepdim(xc, ctx.dims)
        g = grad.to(lse.dtype)
        if not ctx.keepdim:
            for d in ctx.dims:
                g = g.unsqueeze(d)
        grad_in = g * softmax_from_lse(xc, lse, ctx.dims)
        return grad_in.to(x.dtype), None, None


def softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Softmax along ``dim``, as an autograd op with the package's non-finite policy.

    .. math:: \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \quad m = \max_j x_j

    Parameters
    ----------
    input : torch.Tensor
        Logits of any shape; float16 and bfloat16 are computed in float32.
    dim : int, default -1
        The axis that sums to one.

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
    x = float_input(input)
    d = normalize_dim(dim, x.ndim)
    if x.ndim == 0:
        return _Softmax.apply(x.unsqueeze(0), 0).squeeze(0)
    if x.shape[d] == 0:
        return x.clone()
    return _Softmax.apply(x, d)


def log_softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""Log-softmax along ``dim``, as an autograd op with the package's non-finite policy.

    .. math:: \log\operatorname{softmax}(x)_i = (x_i - m) - \log\sum_j e^{x_j - m}

    Parameters
    ----------
    input : torch.Tensor
        Logits of any shape; float16 and bfloat16 are computed in float32.
    dim : int, default -1
        The class axis.

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
    x = float_input(input)
    d = normalize_dim(dim, x.ndim)
    if x.ndim == 0:
        return _LogSoftmax.apply(x.unsqueeze(0), 0).squeeze(0)
    if x.shape[d] == 0:
        return x.clone()
    return _LogSoftmax.apply(x, d)


def logsumexp(input: torch.Tensor, dim: int | tuple[int, ...] | None = -1, *, keepdim: bool = False) -> torch.Tensor:
    r"""Log-sum-exp over ``dim`` (an int, a tuple of ints, or ``None`` for all), as an autograd op.

    .. math:: \operatorname{lse}(x) = m + \log\sum_j e^{x_j - m}, \quad m = \max_j x_j

    The backward pass saves the input (held by autograd anyway) and the result only, and
    recomputes the softmax as ``exp(x - lse)``.

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
    x = float_input(input)
    if not isinstance(keepdim, bool):
        raise TypeError(f"keepdim must be a bool, got {keepdim!r}")
    if x.ndim == 0:
        normalize_dims(dim, 1)
        return _LogSumExp.apply(x.unsqueeze(0), (0,), False)
    dims = normalize_dims(dim, x.ndim)
    if _empty_reduction(x, dims):
        shape = (
            [1 if d in dims else n for d, n in enumerate(x.shape)]
            if keepdim
            else [n for d, n in enumerate(x.shape) if d not in dims]
        )
        out = torch.full(shape, -INF, dtype=x.dtype, device=x.device)
        return out + 0 * x.sum(dim=dims, keepdim=keepdim) if x.requires_grad else out
    return _LogSumExp.apply(x, dims, keepdim)


# --------------------------------------------------------------------------------------------
# cross_entropy and nll_loss.
# --------------------------------------------------------------------------------------------


def _class_view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """A (C,) vector shaped to broadcast along axis 1 of an ``ndim``-dimensional (N, C, ...) tensor."""
    return v.view((1, -1) + (1,) * (ndim - 2))


def _reduce(per: torch.Tensor, reduction: str, denominator) -> torch.Tensor:
    if reduction == "none":
        return per
    total = per.sum()
    return total if reduction == "sum" else total / denominator  # 0 / 0 = NaN, as in PyTorch


def _row_scale(grad: torch.Tensor, reduction: str, denominator, shape) -> torch.Tensor:
    """The upstream gradient of each sample's loss, of the per-sample loss's ``shape``."""
    if reduction == "mean":
        grad = torch.where(denominator == 0, torch.nan, grad / denominator)
    return grad.expand(shape)


class _IndexTerms:
    """Index targets as ``loss_n = -sum_c a_nc l_nc``: what the forward and the backward share.

    ``target_coef``, ``smooth_coef`` (None without smoothing), ``total_coef`` and ``denominator``
    as named in :mod:`softmaxkit._numpy._cross_entropy` (see :func:`softmaxkit.cross_entropy`).
    """

    def __init__(self, target, weight, ignore_index, eps, n_classes, dtype):
        self.valid = target != ignore_index
        self.y = torch.where(self.valid, target, 0).long().unsqueeze(1)
        v = self.valid.to(dtype)
        target_weight = v if weight is None else torch.where(self.valid, weight.to(dtype)[self.y.squeeze(1)], 0.0)
        self.denominator = target_weight.sum()
        self.target_coef = (1 - eps) * target_weight
        self.smooth_coef = (eps / n_classes) * v if eps > 0 else None
        self.total_coef = self.target_coef
        if eps > 0:
            total_weight = float(n_classes) if weight is None else weight.to(dtype).sum()
            self.total_coef = self.target_coef + self.smooth_coef * total_weight


class _CrossEntropy(Function):
    """Cross-entropy on (N, C, ...) logits; the wrapper handles unbatched input and the checks.

    ``loss_n = -sum_c a_nc l_nc`` with ``l`` the log-softmax; the gradient is ``p_nc A_n - a_nc``
    (times the upstream gradient of row n), with ``p = exp(x - lse)`` (see :func:`softmaxkit.cross_entropy`).
    """

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction, eps):
        cdt = compute_dtype(x.dtype)
        xc = x.to(cdt)
        n_classes = xc.shape[1]
        log_p, lse = log_softmax_and_lse(xc, 1)
        w = None if weight is None else _class_view(weight.to(cdt), xc.ndim)
        ctx.probabilities = target.is_floating_point()
        ctx.reduction, ctx.eps, ctx.ignore_index = reduction, eps, ignore_index
        if ctx.probabilities:
            per = -row_dot(_prob_coef(target, w, eps, n_classes, cdt), log_p)
            denominator = per.numel()
        else:
            terms = _IndexTerms(target, weight, ignore_index, eps, n_classes, cdt)
            per = times(terms.target_coef, -log_p.gather(1, terms.y).squeeze(1))
            if terms.smooth_coef is not None:
                weighted = log_p.sum(dim=1) if w is None else row_dot(w, log_p)
                per = per + times(terms.smooth_coef, -weighted)
            denominator = terms.denominator
        del log_p
        # Saved: the logits and target (references to the caller's tensors), the (C,) weights,
        # the O(N) log-sum-exp and the 0-d mean denominator; never an N x C tensor.
        ctx.save_for_backward(x, target, weight, lse, torch.as_tensor(denominator, dtype=cdt))
        return _reduce(per, reduction, denominator).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, target, weight, lse, denominator = ctx.saved_tensors
        cdt = lse.dtype
        xc = x.to(cdt)
        # Under create_graph=True the backward is recorded, so lse must depend on x and nothing
        # may be overwritten in place; otherwise the softmax buffer is reused for the gradient.
        recorded = torch.is_grad_enabled()
        if recorded:
            lse = log_softmax_and_lse(xc, 1)[1]
        n_classes, eps = xc.shape[1], ctx.eps
        batch_shape = xc.shape[:1] + xc.shape[2:]
        scale = _row_scale(grad.to(cdt), ctx.reduction, denominator, batch_shape)
        w = None if weight is None else _class_view(weight.to(cdt), xc.ndim)
        grad_x = softmax_from_lse(xc, lse, 1)
        grad_target = None
        if ctx.probabilities:
            prob_coef = _prob_coef(target, w, eps, n_classes, cdt)
            row = times(prob_coef.sum(dim=1), scale).unsqueeze(1)
            if recorded:
                grad_x = grad_x * row - prob_coef * scale.unsqueeze(1)
            else:
                grad_x.mul_(row).addcmul_(prob_coef, scale.unsqueeze(1), value=-1)
            if ctx.needs_input_grad[1]:
                log_p = log_softmax_from_lse(xc, lse, 1)
                factor = torch.full_like(log_p, 1 - eps) if w is None else ((1 - eps) * w).expand_as(log_p)
                grad_target = (-times(factor, log_p) * scale.unsqueeze(1)).to(target.dtype)
        else:
            terms = _IndexTerms(target, weight, ctx.ignore_index, eps, n_classes, cdt)
            row = times(terms.total_coef, scale).unsqueeze(1)
            at_target = -times(terms.target_coef, scale).unsqueeze(1)
            if recorded:
                grad_x = (grad_x * row).scatter_add(1, terms.y, at_target)
            else:
                grad_x.mul_(row).scatter_add_(1, terms.y, at_target)
            if terms.smooth_coef is not None:
                smooth = times(terms.smooth_coef, scale).unsqueeze(1)
                if w is None:
                    grad_x = grad_x - smooth if recorded else grad_x.sub_(smooth)
                else:
                    grad_x = grad_x - smooth * w if recorded else grad_x.addcmul_(smooth, w, value=-1)
        dead = lse == -INF  # a fully masked row takes no part: zero gradient
        if bool(dead.any()):
            grad_x = torch.where(dead, 0.0, grad_x)
        return grad_x.to(x.dtype), grad_target, None, None, None, None


def _prob_coef(target, w, eps, n_classes, dtype):
    """``prob_coef``: ``a_nc = w_c t'_nc`` for probability targets, with ``t' = (1 - eps) t + eps / C``."""
    prob_coef = target.to(dtype)
    if eps > 0:
        prob_coef = (1 - eps) * prob_coef + eps / n_classes
    return prob_coef if w is None else prob_coef * w


class _NLLLoss(Function):
    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction):
        cdt = compute_dtype(x.dtype)
        xc = x.to(cdt)
        terms = _IndexTerms(target, weight, ignore_index, 0.0, xc.shape[1], cdt)
        per = times(terms.target_coef, -xc.gather(1, terms.y).squeeze(1))
        ctx.reduction, ctx.ignore_index = reduction, ignore_index
        ctx.shape, ctx.dtype, ctx.cdt = xc.shape, x.dtype, cdt
        ctx.save_for_backward(target, weight, terms.denominator)
        return _reduce(per, reduction, terms.denominator).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        target, weight, denominator = ctx.saved_tensors
        cdt = ctx.cdt
        terms = _IndexTerms(target, weight, ctx.ignore_index, 0.0, ctx.shape[1], cdt)
        scale = _row_scale(grad.to(cdt), ctx.reduction, denominator, target.shape)
        grad_x = torch.zeros(ctx.shape, dtype=cdt, device=target.device)
        grad_x = grad_x.scatter(1, terms.y, -times(terms.target_coef, scale).unsqueeze(1))
        return grad_x.to(ctx.dtype), None, None, None, None


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""Cross-entropy between logits and targets, as a lean autograd op; ``torch.nn.functional.cross_entropy``'s semantics.

    The loss and its gradient are those of :func:`softmaxkit.cross_entropy`, where the formulas are
    written (class weights, ``ignore_index``, label smoothing, class probabilities, and what
    ``"mean"`` divides by). The class axis is 1, or 0 for an unbatched ``(C,)`` input; inputs
    ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.

    The backward pass saves the logits (already held by autograd), the target, the weights and the
    per-row log-sum-exp; it recomputes the softmax as ``exp(x - lse)`` instead of keeping an
    N x C tensor. Gradients with respect to probability targets are supported.

    Parameters
    ----------
    input : torch.Tensor
        Logits, ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``; float16/bfloat16 computed in float32.
    target : torch.Tensor
        Integer class indices shaped like ``input`` without the class axis, or floating class
        probabilities of ``input``'s shape.
    weight : torch.Tensor of shape (C,), optional
        Finite, non-negative class weights.
    ignore_index : int, default -100
        Index targets equal to it contribute neither loss nor gradient. With probability targets it
        must be negative (unused), as in PyTorch.
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0.0

    Returns
    -------
    torch.Tensor
        A scalar, or per-sample losses (``"none"``), in the input's floating dtype.

    Raises
    ------
    ValueError
        A class index outside ``[0, C)`` that is not ``ignore_index`` (``-1`` never wraps around),
        a target or weight of the wrong shape, a negative or non-finite weight, ``label_smoothing``
        outside ``[0, 1]``, an unknown ``reduction``.
    TypeError
        A target that is neither integer nor floating; a non-tensor argument.

    Notes
    -----
    Non-finite logits follow the package's policy (see the module docstring): a ``-inf`` target logit
    gives ``+inf`` with a finite gradient, an all ``-inf`` row a zero gradient, and a zero coefficient
    times ``-inf`` contributes 0, where PyTorch returns ``NaN``. A sample whose coefficients are all
    zero (ignored, or of a zero-weight class without smoothing) has a zero gradient even when
    ``"mean"`` divides by :math:`W = 0` (PyTorch then returns ``NaN`` gradients with smoothing, and
    ``NaN`` everywhere when some sample has zero weight). The results equal the NumPy functions'
    :func:`softmaxkit.cross_entropy` and :func:`softmaxkit.cross_entropy_backward`.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import cross_entropy
    >>> x = torch.tensor([[2.0, 1.0, 0.1]], dtype=torch.float64, requires_grad=True)
    >>> loss = cross_entropy(x, torch.tensor([0]))
    >>> round(loss.item(), 10)
    0.417030016
    >>> loss.backward()
    >>> x.grad
    tensor([[-0.3410,  0.2424,  0.0986]], dtype=torch.float64)
    """
    x, target, weight, ignore_index, reduction = check_loss_args(input, target, weight, ignore_index, reduction)
    eps = check_label_smoothing(label_smoothing)
    check_target_kind(target, allow_probabilities=True)
    if target.is_floating_point():
        check_probability_target(target, x, ignore_index)
    else:
        check_index_target(target, x, ignore_index)
    if x.ndim == 1:
        out = _CrossEntropy.apply(x.unsqueeze(0), target.unsqueeze(0), weight, ignore_index, reduction, eps)
        return out.squeeze(0) if reduction == "none" else out
    return _CrossEntropy.apply(x, target, weight, ignore_index, reduction, eps)


def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Negative log-likelihood of log-probabilities, as an autograd op; ``torch.nn.functional.nll_loss``'s semantics.

    The loss is that of :func:`softmaxkit.nll_loss` (see there and :func:`softmaxkit.cross_entropy`
    for the formula and what ``"mean"`` divides by). Shapes as in :func:`cross_entropy` with
    class-index targets; the backward pass saves only the target and the weights.

    Parameters
    ----------
    input : torch.Tensor
        Log-probabilities, ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.
    target : torch.Tensor
        Integer class indices shaped like ``input`` without the class axis.
    weight : torch.Tensor of shape (C,), optional
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import log_softmax, nll_loss
    >>> x = torch.tensor([[2.0, 1.0, 0.1]], dtype=torch.float64)
    >>> round(nll_loss(log_softmax(x, dim=1), torch.tensor([0])).item(), 10)
    0.417030016
    """
    x, target, weight, ignore_index, reduction = check_loss_args(input, target, weight, ignore_index, reduction)
    check_target_kind(target, allow_probabilities=False)
    check_index_target(target, x, ignore_index)
    if x.ndim == 1:
        out = _NLLLoss.apply(x.unsqueeze(0), target.unsqueeze(0), weight, ignore_index, reduction)
        return out.squeeze(0) if reduction == "none" else out
    return _NLLLoss.apply(x, target, weight, ignore_index, reduction)
