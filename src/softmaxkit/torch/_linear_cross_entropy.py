r"""Fused linear cross-entropy: the loss of ``softcap(input @ weight.T + bias)`` without the N x V logits.

The math
--------
For token :math:`n` with hidden state :math:`h_n \in \mathbb{R}^d` (a row of ``input``), the
:math:`C = V` logits are

.. math::

    u_{nc} = h_n \cdot W_c + b_c, \qquad
    z_{nc} = \kappa \tanh(u_{nc} / \kappa) \ (\text{softcap } \kappa, \text{ or } z = u), \qquad
    \operatorname{lse}_n = \log \sum_c e^{z_{nc}}, \qquad p_{nc} = e^{z_{nc} - \operatorname{lse}_n},

with :math:`W_c` the rows of ``weight``. The per-token loss is the cross-entropy of these logits,
exactly :func:`softmaxkit.cross_entropy`'s (which writes the formula: its class weights
:math:`w_c` are ``class_weight``, its :math:`\varepsilon` is ``label_smoothing``, its
:math:`v_n = [y_n \ne \text{ignore\_index}]`, 1 for probability targets), plus a z-loss
:math:`\lambda`:

.. math::

    L_n = -\sum_c a_{nc} (z_{nc} - \operatorname{lse}_n) + \lambda v_n \operatorname{lse}_n^2 .

``reduction="mean"`` divides the cross-entropy part by :func:`~softmaxkit.cross_entropy`'s
:math:`W` (by ``N`` for probability targets), exactly as PyTorch does, and the z-loss part by the
number of kept tokens :math:`\sum_n v_n`. With :math:`A_n = \sum_c a_{nc}`, the gradient is

.. math::

    \frac{\partial L_n}{\partial z_{nc}} = p_{nc} \big(A_n + 2 \lambda v_n \operatorname{lse}_n\big) - a_{nc},
    \qquad \frac{\partial z_{nc}}{\partial u_{nc}} = 1 - (z_{nc} / \kappa)^2,

and with :math:`G = \partial L / \partial u` the gradients of ``input``, ``weight`` and ``bias``
are :math:`G W`, :math:`G^\top H` and the column sums of :math:`G`. The coefficients
:math:`a_{nc}` and :math:`A_n` are stored under the names of
:mod:`softmaxkit._numpy._cross_entropy` (``target_coef``, ``smooth_coef``, ``total_coef``).

The hidden states, weights and bias are expected to be finite (the logits of finite inputs are
finite, so no row is ever all ``-inf``); a non-finite input gives ``NaN`` in the affected rows, as
in the naive computation. No gradient flows to ``target`` or ``class_weight``. Double backward is
not supported, and asking for it (``create_graph=True``, nested ``torch.func`` gradients) raises a
``RuntimeError`` in the backward pass rather than returning a gradient that autograd would treat
as a constant.

Precisions
----------
The logits product runs in the input's dtype (a float32 or float64 weight is cast to a float16 /
bfloat16 input's dtype first: mixed precision's master weights) and everything after it in
float32 (float64 for float64 input); the loss is float32 (float64). Under ``torch.autocast`` the
input, weight and bias are cast to the autocast dtype first, as ``torch.nn.functional.linear``
would cast them. Gradients come back in each tensor's own dtype.

PyTorch's tools
---------------
``torch.compile`` (``fullgraph=True``) and ``torch.export`` see one custom op per pass
(``torch.ops.softmaxkit.linear_cross_entropy`` and its backward, ``...linear_logsumexp``); the
value checks run inside it. ``torch.func.grad`` works; ``vmap`` and forward mode do not
(see :mod:`softmaxkit.torch._linear_ce._autograd`).

How it is computed
------------------
In layers under :mod:`softmaxkit.torch._linear_ce`: the problem and its plan (``_plan``:
validation, per-token coefficients, chunk sizes within ``max_memory``), two engines with one
interface (``_torch_engine``: chunked PyTorch tiles and passes; ``_triton_engine``: Triton
kernels), the loss from their statistics (``_reduction``), and the autograd layer (``_autograd``) that
chooses the engine once per call. No
tensor of ``N x V`` elements is ever allocated.

Both engines keep, per token, the largest logit :math:`m`, its column and
:math:`S' = \sum_{c \ne \arg\max} e^{z_c - m}` (rescaled online across vocabulary tiles), so
that :math:`\operatorname{lse} - z_t = \operatorname{log1p}(S') + (m - z_t)`, the probabilities are
:math:`e^{z - m} / (1 + S')` and the gradient at the top column is formed without the cancelling
:math:`p_{top} A - a_{top}` (see :class:`~softmaxkit.torch._linear_ce._plan.TileCoefs`): a confident
token's loss and gradient keep full relative accuracy, and large logits cost nothing (the forms of
:mod:`softmaxkit.torch._stable`).
"""

from __future__ import annotations

import torch

from softmaxkit._validation import check_label_smoothing, check_reduction
from softmaxkit.torch._checks import (
    check_backend,
    check_denominator,
    check_finite_real,
    check_ignore_index64,
    check_linear_class_weight,
    check_linear_target,
    check_linear_tensors,
)
from softmaxkit.torch._linear_ce._autograd import LinearCrossEntropy, LinearLogSumExp, Options
from softmaxkit.torch._linear_ce._plan import check_max_memory_option

__all__ = ["LinearCrossEntropyLoss", "linear_cross_entropy", "linear_logsumexp"]


def amp_operands(input, weight, bias):
    """``(input, weight, bias)`` in the precision of the logits product, checked.

    Under ``torch.autocast`` on the input's device all three are cast to the autocast dtype, as
    ``torch.nn.functional.linear`` would be. Outside it a float32 (or float64) ``weight`` with a
    float16 / bfloat16 ``input`` (mixed precision's master weights) is cast to the input's dtype:
    the product runs in the input's precision with float32 accumulation, and the weight's gradient
    comes back in its own dtype through the cast.
    """
    if isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor) and input.is_floating_point():
        device = input.device.type
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            low = torch.get_autocast_dtype(device)
            input, weight = input.to(low), weight.to(low) if weight.is_floating_point() else weight
            bias = bias.to(low) if isinstance(bias, torch.Tensor) and bias.is_floating_point() else bias
        elif input.dtype in (torch.float16, torch.bfloat16) and weight.dtype in (torch.float32, torch.float64):
            weight = weight.to(input.dtype)
    check_linear_tensors(input, weight, bias)
    return input, weight, bias


def linear_cross_entropy(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    class_weight: torch.Tensor | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    max_memory: int | None = None,
    backend: str = "auto",
    denominator: float | torch.Tensor | None = None,
    z_loss_denominator: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Cross-entropy of the logits ``input @ weight.T + bias`` without materialising them.

    Equal to ``torch.nn.functional.cross_entropy(softcap(input @ weight.T + bias), target, ...)``
    plus ``z_loss`` times the mean squared log-sum-exp, for every shared option, with the math
    of the module docstring. Only chunks bounded by ``max_memory`` are ever allocated.

    Parameters
    ----------
    input : torch.Tensor, shape (..., d)
        Hidden states, float32, float64, bfloat16 or float16.
    weight : torch.Tensor, shape (V, d)
        Output projection (one row per class), on the input's device, of its dtype or (for a
        float16 / bfloat16 input) float32 / float64 (see "Precisions" in the module docstring).
    target : torch.Tensor
        Class indices of shape ``(...)`` (integer), or class probabilities of shape ``(..., V)``.
    bias : torch.Tensor, shape (V,), optional
        Added to the logits.
    ignore_index : int, default -100
        Index targets equal to it contribute no loss and no gradient.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in PyTorch: "mean" divides the cross-entropy by the summed class weight of the kept
        tokens (by N for probability targets); the z-loss part by the number of kept tokens.
    label_smoothing : float in [0, 1], default 0.0
    class_weight : torch.Tensor, shape (V,), optional
        PyTorch's ``weight=`` of ``cross_entropy`` (renamed: ``weight`` is the projection here);
        finite and non-negative, as :func:`cross_entropy`'s (PyTorch takes negative weights).
    z_loss : float >= 0, default 0.0
        Coefficient of :math:`\operatorname{lse}^2` per kept token.
    softcap : float > 0, optional
        Logits become ``softcap * tanh(logits / softcap)`` before the softmax.
    max_memory : int, optional
        Bound in bytes on the chunk-shaped scratch tensors (logits and gradient tiles, and the
        float32 copies of weight blocks or token chunks that tight bounds need for low-precision
        input); the gradients themselves, O(N) statistics and float32 accumulators of at most
        64 rows of width ``d`` are not counted, and one row and one column are always processed.
        Default: 32 MiB, raised to a quarter of the size of ``weight`` in bytes when that is more
        (so the scratch stays small next to the weight gradient that must exist anyway) but
        raised no further than an eighth of the float32 logits' ``4 N V`` bytes; 1 GiB for CUDA
        tensors, where wide chunks keep the GPU busy. Smaller is leaner and, below a few
        megabytes, slower; the result does not depend on it beyond float rounding.
    backend : {"auto", "torch", "triton"}, default "auto"
        "auto" uses the Triton kernels for CUDA tensors with index targets when Triton is
        installed, and the pure-PyTorch chunked path otherwise.
    denominator : float or 0-d tensor, optional
        What ``reduction="mean"`` divides the cross-entropy part by, instead of this call's own
        summed class weight of the kept tokens: give the *global* one (over every micro-batch and
        data-parallel rank of the step) and the sum of the per-call gradients is exactly the
        gradient of the mean over the global batch (the recipe is in the docs' "Global normalisation").
        Positive and finite; an error with ``"sum"`` or ``"none"``. No gradient flows to it.
    z_loss_denominator : float or 0-d tensor, optional
        The same for the z-loss part (the global count of kept tokens). Defaults to
        ``denominator``, which is that count unless index targets have ``class_weight``; then it
        must be given when ``z_loss > 0``.

    Returns
    -------
    torch.Tensor
        The loss in float32 (float64 for float64 input): a scalar, or of shape ``(...)`` for
        ``reduction="none"``. Gradients for ``input`` and ``weight`` come back in their dtype.

    Notes
    -----
    With a scalar reduction under grad mode the gradients are computed in the forward pass (one
    sweep over the vocabulary for the whole training step) and handed over in backward: a forward
    that is never backpropagated costs about as much as forward + backward, so evaluate under
    ``torch.no_grad()`` (the measurement is in :mod:`softmaxkit.torch._linear_ce._autograd`).

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from softmaxkit.torch import linear_cross_entropy
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    >>> w = torch.randn(10, 4, generator=g, dtype=torch.float64)
    >>> t = torch.tensor([1, 0, 9, -100, 3, 3])
    >>> loss = linear_cross_entropy(x, w, t, label_smoothing=0.1)
    >>> bool(torch.isclose(loss, F.cross_entropy(x @ w.T, t, label_smoothing=0.1), rtol=1e-12))
    True
    """
    input, weight, bias = amp_operands(input, weight, bias)
    options = Options(
        check_ignore_index64(ignore_index),
        check_reduction(reduction),
        check_label_smoothing(label_smoothing),
        check_finite_real(z_loss, "z_loss", low=0.0),
        check_finite_real(softcap, "softcap", low=0.0, allow_none=True),
        check_max_memory_option(max_memory),
        check_backend(backend),
    )
    probabilities = check_linear_target(target, tuple(input.shape[:-1]), weight.shape[0])
    check_linear_class_weight(class_weight, weight.shape[0])
    den, z_den = resolve_denominators(
        denominator, z_loss_denominator, options, weighted=class_weight is not None and not probabilities
    )
    grad = torch.is_grad_enabled()
    needs = (
        grad and input.requires_grad,
        grad and weight.requires_grad,
        grad and bias is not None and bias.requires_grad,
    )
    return LinearCrossEntropy.apply(input, weight, bias, target, class_weight, options, needs, den, z_den)[0]


def resolve_denominators(denominator, z_loss_denominator, options: Options, *, weighted: bool):
    """``(denominator, z_loss_denominator)`` checked, as 0-d float64 tensors or None.

    ``z_loss_denominator`` defaults to ``denominator``: without class weights (or with probability
    targets) the mean's two denominators are the same number, the count of kept tokens. With class
    weights on index targets they differ, so the z-loss one must then be given explicitly.
    """
    den = check_denominator(denominator, "denominator", options.reduction)
    z_den = check_denominator(z_loss_denominator, "z_loss_denominator", options.reduction)
    if z_den is None and den is not None and options.z_loss:
        if weighted:
            raise ValueError(
                "z_loss_denominator must be given with denominator, class_weight and z_loss > 0 "
                "(the z-loss part's mean is over the kept tokens, not their class weight), got None"
            )
        z_den = den.clone()  # not the same tensor twice: torch.compile refuses duplicate inputs of a Function
    return den, z_den


def linear_logsumexp(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    softcap: float | None = None,
    max_memory: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    r"""Per-row :math:`\operatorname{lse}_n = \log \sum_c e^{z_{nc}}` of the logits ``input @ weight.T + bias``.

    For z-losses, perplexities or distillation: the same chunked computation (and softcap) as
    :func:`linear_cross_entropy`, differentiable, never materialising the logits. The result is
    float32 (float64 for float64 input), of shape ``input.shape[:-1]``.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import linear_logsumexp
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    >>> w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> linear_logsumexp(x, w)
    tensor([1.5514, 1.0986])
    """
    input, weight, bias = amp_operands(input, weight, bias)
    softcap = check_finite_real(softcap, "softcap", low=0.0, allow_none=True)
    return LinearLogSumExp.apply(
        input, weight, bias, softcap, check_max_memory_option(max_memory), check_backend(backend)
    )[0]


class LinearCrossEntropyLoss(torch.nn.Module):
    """Module shell of :func:`linear_cross_entropy`: ``loss(input, weight, target, bias=None)``.

    The options are stored at construction and passed through unchanged; see the function for
    the math, the shapes and the dtypes.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import LinearCrossEntropyLoss
    >>> loss = LinearCrossEntropyLoss(z_loss=1e-4)
    >>> x, w = torch.zeros(3, 2), torch.zeros(5, 2)
    >>> round(loss(x, w, torch.tensor([0, 1, 2])).item(), 6)  # log(5) + 1e-4 * log(5)**2
    1.609697
    """

    def __init__(
        self,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        class_weight: torch.Tensor | None = None,
        z_loss: float = 0.0,
        softcap: float | None = None,
        max_memory: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing
        self.z_loss, self.softcap, self.max_memory, self.backend = z_loss, softcap, max_memory, backend
        self.register_buffer("class_weight", class_weight)

    def extra_repr(self) -> str:
        """The options that differ from their defaults (``class_weight`` is shown as a buffer would be: its shape)."""
        defaults = dict(ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None)
        defaults.update(max_memory=None, backend="auto")
        shown = [f"{k}={getattr(self, k)!r}" for k, v in defaults.items() if getattr(self, k) != v]
        if self.class_weight is not None:
            shown.append(f"class_weight=<tensor of shape {tuple(self.class_weight.shape)}>")
        return ", ".join(shown)

    def forward(
        self, input: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return linear_cross_entropy(
            input,
            weight,
            target,
            bias,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            class_weight=self.class_weight,
            z_loss=self.z_loss,
            softcap=self.softcap,
            max_memory=self.max_memory,
            backend=self.backend,
        )
