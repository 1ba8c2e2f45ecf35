"""Cross-entropy and NLL as lean ``torch.autograd.Function`` ops; softmax, log-softmax, log-sum-exp re-exported.

Every op computes with :mod:`softmaxkit.torch._stable`, which holds the numerics (the row maximum,
the shifted logits and the sum of the non-top exponentials, so that confident rows and logits of
any magnitude keep full relative accuracy) and the package's non-finite policy (see
:func:`softmaxkit.softmax`): a fully masked row has softmax 0 and a zero gradient, ``+inf``
logits share the mass, ``0 * -inf`` contributes 0, where PyTorch's own functions return ``NaN``.
The softmax ops live in :mod:`._softmax_ops`.

The backward passes keep only what they need. ``cross_entropy`` saves the logits (a reference to a
tensor autograd holds anyway), the target, the class weights, and per row the position of the
maximum and the sum of the non-top exponentials: O(N) beyond its inputs, never a second N x C
tensor; the softmax is recomputed in backward from the shifted logits.

float16 and bfloat16 are computed in float32 and returned in their own dtype; integer and boolean
input is promoted to ``torch.get_default_dtype()``, as ``torch.exp`` does. The backward passes are
written with differentiable operations, so double backward (``create_graph=True``) works; only then
are the row statistics recomputed from the input so that their dependence on it is recorded.
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from softmaxkit._validation import check_label_smoothing
from softmaxkit.torch._autocast import as_autocast_loss
from softmaxkit.torch._checks import (
    check_denominator,
    check_index_target,
    check_loss_args,
    check_probability_target,
    check_target_kind,
)
from softmaxkit.torch._function import signature_once
from softmaxkit.torch._softmax_ops import log_softmax, logsumexp, softmax
from softmaxkit.torch._stable import (
    INF,
    compute_dtype,
    log_softmax_terms,
    may_hold,
    normaliser,
    row_dot,
    shift_logits,
    softmax_parts,
    sum_except,
    times,
    top_complement,
)

__all__ = ["cross_entropy", "log_softmax", "logsumexp", "nll_loss", "softmax"]


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
    The target is compared with ``ignore_index`` as int64, whatever its own dtype (a uint8 label
    156 is not the default ``-100``).
    """

    def __init__(self, target, weight, ignore_index, eps, n_classes, dtype):
        target = target.long()
        self.valid = target != ignore_index
        self.y = torch.where(self.valid, target, 0).unsqueeze(1)
        v = self.valid.to(dtype)
        target_weight = v if weight is None else torch.where(self.valid, weight.to(dtype)[self.y.squeeze(1)], 0.0)
        self.denominator = target_weight.sum()
        self.target_coef = (1 - eps) * target_weight
        self.smooth_coef = (eps / n_classes) * v if eps > 0 else None
        self.total_coef = self.target_coef
        if eps > 0:
            total_weight = float(n_classes) if weight is None else weight.to(dtype).sum()
            self.total_coef = self.target_coef + self.smooth_coef * total_weight

    def rest_coef(self, weight, arg, n_classes, dtype):
        """``A'_n = A_n - a_n,arg = sum_{c != arg} a_nc`` without the subtraction: 0 for a top target."""
        rest = torch.where(self.y != arg, self.target_coef.unsqueeze(1), 0.0)
        if self.smooth_coef is not None:
            if weight is None:
                others = float(n_classes - 1)
            else:  # sum_{c != arg} w_c, summed in float64 so that a dominant w_arg costs nothing
                w64 = weight.to(torch.float64)
                others = (w64.sum() - w64[arg]).to(dtype)
            rest = rest + self.smooth_coef.unsqueeze(1) * others
        return rest


@signature_once
class _CrossEntropyFunction(Function):
    """Cross-entropy on (N, C, ...) logits; the wrapper handles unbatched input and the checks.

    ``loss_n = -sum_c a_nc l_nc`` with ``l`` the log-softmax; the gradient is ``p_nc A_n - a_nc``
    (times the upstream gradient of row n), see :func:`softmaxkit.cross_entropy`. With ``m`` the
    row maximum at ``arg`` and ``S'`` the sum of the other exponentials (:mod:`._stable`):
    ``-l_nc = log1p(S') + (m - x_nc)``, a sum of two non-negative terms, so the loss keeps full
    relative accuracy however confident the row; ``p = exp(x - m) / (1 + S')``, and at the top
    entry the gradient is ``A'_n - A_n S' / (1 + S')`` with ``A'_n = sum_{c != arg} a_nc``
    (``p_t - 1 = -sum_{j != t} p_j`` for a top target), never ``p_top A_n - a_n,top``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, target, weight, ignore_index, reduction, eps, given_denominator):
        cdt = compute_dtype(x.dtype)
        xc = x.to(cdt)
        n_classes = xc.shape[1]
        shifted, l1, arg, rest = log_softmax_terms(xc, 1)  # -log p_c = l1 - shifted_c
        w = None if weight is None else _class_view(weight.to(cdt), xc.ndim)
        if target.is_floating_point():
            prob_coef = _prob_coef(target, w, eps, n_classes, cdt)
            per = -row_dot(prob_coef, shifted) + times(prob_coef.sum(dim=1), l1.squeeze(1))
            denominator = per.numel()
        else:
            terms = _IndexTerms(target, weight, ignore_index, eps, n_classes, cdt)
            per = times(terms.target_coef, l1.squeeze(1) - shifted.gather(1, terms.y).squeeze(1))
            if terms.smooth_coef is not None:
                if w is None:
                    weighted = n_classes * l1.squeeze(1) - shifted.sum(dim=1)
                else:
                    weighted = w.sum() * l1.squeeze(1) - row_dot(w, shifted)
                per = per + times(terms.smooth_coef, weighted)
            denominator = terms.denominator
        del shifted
        if given_denominator is None:
            denominator = torch.as_tensor(denominator, dtype=cdt, device=x.device)
        else:  # global normalisation (see cross_entropy's denominator); a copy, as outputs are saved
            denominator = given_denominator.to(dtype=cdt, device=x.device, copy=True)
        return _reduce(per, reduction, denominator).to(x.dtype), arg, rest, denominator

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x, target, weight, ignore_index, reduction, eps, _), (_, arg, rest, denominator) = inputs, output
        ctx.mark_non_differentiable(rest, denominator)
        ctx.probabilities = target.is_floating_point()
        ctx.reduction, ctx.eps, ctx.ignore_index = reduction, eps, ignore_index
        # Saved: the logits and target (references to the caller's tensors), the (C,) weights,
        # per row the maximum's position and S' (O(N)), and the 0-d mean denominator; never an
        # N x C tensor.
        ctx.save_for_backward(x, target, weight, arg, rest, denominator)

    @staticmethod
    def backward(ctx, grad, _grad_arg, _grad_rest, _grad_denominator):
        x, target, weight, arg, rest, denominator = ctx.saved_tensors
        cdt = rest.dtype
        xc = x.to(cdt)
        # Under create_graph=True the backward is recorded, so the row statistics must depend on x
        # and nothing may be overwritten in place; otherwise the softmax buffer becomes the gradient.
        recorded = torch.is_grad_enabled()
        if recorded:
            parts = softmax_parts(xc, 1)
            shifted, top, arg, rest = parts.shifted, parts.top, parts.arg, parts.rest
        else:
            shifted, top = shift_logits(xc, 1, arg)
        n_classes, eps = xc.shape[1], ctx.eps
        batch_shape = xc.shape[:1] + xc.shape[2:]
        scale = _row_scale(grad.to(cdt), ctx.reduction, denominator, batch_shape)
        w = None if weight is None else _class_view(weight.to(cdt), xc.ndim)
        p = shifted.exp() if recorded else shifted.exp_()  # times 1 / (1 + S') below
        inv_norm = 1 / normaliser(top, rest)
        grad_target = None
        if ctx.probabilities:
            prob_coef = _prob_coef(target, w, eps, n_classes, cdt)
            row = times(prob_coef.sum(dim=1), scale).unsqueeze(1)
            rest_coef = sum_except(prob_coef, arg, 1)
            if recorded:
                grad_x = p * (row * inv_norm) - prob_coef * scale.unsqueeze(1)
            else:
                grad_x = p.mul_(row * inv_norm).addcmul_(prob_coef, scale.unsqueeze(1), value=-1)
            if ctx.needs_input_grad[1]:  # the exponentials overwrote `shifted` unless recording
                log_p = (shifted if recorded else shift_logits(xc, 1, arg)[0]) - rest.log1p()
                factor = torch.full_like(log_p, 1 - eps) if w is None else ((1 - eps) * w).expand_as(log_p)
                grad_target = (-times(factor, log_p) * scale.unsqueeze(1)).to(target.dtype)
        else:
            terms = _IndexTerms(target, weight, ctx.ignore_index, eps, n_classes, cdt)
            row = times(terms.total_coef, scale).unsqueeze(1)
            rest_coef = terms.rest_coef(weight, arg, n_classes, cdt)
            at_target = -times(terms.target_coef, scale).unsqueeze(1)
            if recorded:
                grad_x = (p * (row * inv_norm)).scatter_add(1, terms.y, at_target)
            else:
                grad_x = p.mul_(row * inv_norm).scatter_add_(1, terms.y, at_target)
            if terms.smooth_coef is not None:
                smooth = times(terms.smooth_coef, scale).unsqueeze(1)
                if w is None:
                    grad_x = grad_x - smooth if recorded else grad_x.sub_(smooth)
                else:
                    grad_x = grad_x - smooth * w if recorded else grad_x.addcmul_(smooth, w, value=-1)
        # The top entry without cancellation: p_top A - a_top = A' - A (1 - p_top).
        at_top = times(rest_coef, scale.unsqueeze(1)) - row * top_complement(rest)
        grad_x = grad_x.scatter(1, arg, at_top) if recorded else grad_x.scatter_(1, arg, at_top)
        dead = top == -INF  # a fully masked row takes no part: zero gradient
        if may_hold(dead):
            grad_x = torch.where(dead, 0.0, grad_x)
        return grad_x.to(x.dtype), grad_target, None, None, None, None, None


class _CrossEntropy:
    """``apply(x, target, weight, ignore_index, reduction, eps)`` returning the loss alone, unchecked
    (what :mod:`softmaxkit.linear_model._torch_backend` calls on its chunks)."""

    @staticmethod
    def apply(*args):
        return _CrossEntropyFunction.apply(*args, None)[0]


def _prob_coef(target, w, eps, n_classes, dtype):
    """``prob_coef``: ``a_nc = w_c t'_nc`` for probability targets, with ``t' = (1 - eps) t + eps / C``."""
    prob_coef = target.to(dtype)
    if eps > 0:
        prob_coef = (1 - eps) * prob_coef + eps / n_classes
    return prob_coef if w is None else prob_coef * w


@signature_once
class _NLLLoss(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, target, weight, ignore_index, reduction, given_denominator):
        cdt = compute_dtype(x.dtype)
        xc = x.to(cdt)
        terms = _IndexTerms(target, weight, ignore_index, 0.0, xc.shape[1], cdt)
        per = times(terms.target_coef, -xc.gather(1, terms.y).squeeze(1))
        denominator = (
            terms.denominator if given_denominator is None else given_denominator.to(cdt, copy=True).to(x.device)
        )
        return _reduce(per, reduction, denominator).to(x.dtype), denominator

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x, target, weight, ignore_index, reduction, _), (_, denominator) = inputs, output
        ctx.mark_non_differentiable(denominator)
        ctx.reduction, ctx.ignore_index = reduction, ignore_index
        ctx.shape, ctx.dtype, ctx.cdt = x.shape, x.dtype, compute_dtype(x.dtype)
        ctx.save_for_backward(target, weight, denominator)

    @staticmethod
    def backward(ctx, grad, _grad_denominator):
        target, weight, denominator = ctx.saved_tensors
        cdt = ctx.cdt
        terms = _IndexTerms(target, weight, ctx.ignore_index, 0.0, ctx.shape[1], cdt)
        scale = _row_scale(grad.to(cdt), ctx.reduction, denominator, target.shape)
        grad_x = torch.zeros(ctx.shape, dtype=cdt, device=target.device)
        grad_x = grad_x.scatter(1, terms.y, -times(terms.target_coef, scale).unsqueeze(1))
        return grad_x.to(ctx.dtype), None, None, None, None, None


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    denominator: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Cross-entropy between logits and targets, as a lean autograd op; ``torch.nn.functional.cross_entropy``'s semantics.

    The loss and its gradient are those of :func:`softmaxkit.cross_entropy`, where the formulas are
    written (class weights, ``ignore_index``, label smoothing, class probabilities, and what
    ``"mean"`` divides by). The class axis is 1, or 0 for an unbatched ``(C,)`` input; inputs
    ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``.

    The backward pass saves the logits (already held by autograd), the target, the weights and two
    numbers per row (the maximum's position and the sum of the other exponentials); it recomputes
    the softmax from the shifted logits instead of keeping an N x C tensor. The loss, the
    log-probability it is built from and the gradient at the target keep full relative accuracy
    however confident the row and whatever the logits' magnitude (see :mod:`softmaxkit.torch._stable`). Gradients with respect to probability targets are supported.

    Parameters
    ----------
    input : torch.Tensor
        Logits, ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``; float16/bfloat16 computed in float32.
    target : torch.Tensor
        Integer class indices shaped like ``input`` without the class axis, or floating class
        probabilities of ``input``'s shape.
    weight : torch.Tensor of shape (C,), optional
        Finite, non-negative class weights (positional or keyword, as in ``torch.nn.functional``).
    ignore_index : int, default -100
        Index targets equal to it contribute neither loss nor gradient. With probability targets it
        must be negative (unused), as in PyTorch.
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0.0
    denominator : float or 0-d tensor, optional
        What ``"mean"`` divides by, instead of this call's own :math:`W` (summed class weight of the
        kept samples; their number for probability targets): give the global one of a step's
        micro-batches and data-parallel ranks, and the summed gradients are exactly those of the
        global mean (see the docs' "Global normalisation"). Positive and finite; an error with
        ``"sum"`` or ``"none"``. No gradient flows to it.

    Returns
    -------
    torch.Tensor
        A scalar, or per-sample losses (``"none"``), in the input's floating dtype; float32 for
        float16 / bfloat16 input under ``torch.autocast``, as PyTorch's loss.

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
    x = as_autocast_loss(x)
    eps = check_label_smoothing(label_smoothing)
    check_target_kind(target, allow_probabilities=True)
    if target.is_floating_point():
        check_probability_target(target, x, ignore_index)
    else:
        check_index_target(target, x, ignore_index)
    den = check_denominator(denominator, "denominator", reduction)
    if x.ndim == 1:
        x, target = x.unsqueeze(0), target.unsqueeze(0)
        out = _CrossEntropyFunction.apply(x, target, weight, ignore_index, reduction, eps, den)[0]
        return out.squeeze(0) if reduction == "none" else out
    return _CrossEntropyFunction.apply(x, target, weight, ignore_index, reduction, eps, den)[0]


def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    denominator: float | torch.Tensor | None = None,
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
    denominator : float or 0-d tensor, optional
        What ``"mean"`` divides by instead of this call's own (as :func:`cross_entropy`'s).

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
    x = as_autocast_loss(x)
    check_target_kind(target, allow_probabilities=False)
    check_index_target(target, x, ignore_index)
    den = check_denominator(denominator, "denominator", reduction)
    if x.ndim == 1:
        out = _NLLLoss.apply(x.unsqueeze(0), target.unsqueeze(0), weight, ignore_index, reduction, den)[0]
        return out.squeeze(0) if reduction == "none" else out
    return _NLLLoss.apply(x, target, weight, ignore_index, reduction, den)[0]
