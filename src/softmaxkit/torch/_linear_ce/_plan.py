"""The problem of a fused linear cross-entropy, validated once, and its plan: chunk sizes within a memory budget.

:func:`make_problem` checks every argument (with :mod:`softmaxkit.torch._checks`) and turns the
target into the per-token coefficients of the loss, a :class:`Problem`; :func:`make_plan` sizes
the chunks of both engines' passes so that their scratch stays within ``max_memory`` bytes
(:func:`check_max_memory` gives its default). :class:`RowScales` is what autograd hands an engine
for a gradient. Nothing here computes a logit.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, NamedTuple

import torch

from softmaxkit._validation import _describe, check_label_smoothing, check_reduction
from softmaxkit.torch._checks import (
    check_class_indices,
    check_finite_real,
    check_ignore_index64,
    check_linear_class_weight,
    check_linear_target,
    check_linear_tensors,
)

#: Default bound, in bytes, of the chunk-shaped scratch tensors (CPU and other devices): this, or
#: more with a large weight (see :func:`check_max_memory`).
DEFAULT_MAX_MEMORY = 32 * 2**20
#: The default scratch may grow to ``weight.nbytes / _WEIGHT_SHARE``.
_WEIGHT_SHARE = 4
#: ... and to no more than ``N * V * 4 / _LOGITS_SHARE`` bytes.
_LOGITS_SHARE = 8
#: Default on CUDA, where wide chunks are what keeps the GPU busy.
DEFAULT_MAX_MEMORY_CUDA = 2**30
#: Fewer token rows than this per chunk and the vocabulary is tiled as well.
_MIN_ROWS = 32
#: Narrowest vocabulary block of the weight-gradient pass before tokens are chunked there too.
_MIN_COLS = 64
#: Chunk sizes are rounded down to these multiples (see :func:`aligned`).
_ROW_ALIGN = 64
_COL_ALIGN = 256


@dataclasses.dataclass(frozen=True)
class Plan:
    rows: int  # tokens per chunk in the token pass
    cols: int  # vocabulary entries per block in the token pass (== V: one block)
    w_rows: int  # tokens per chunk in the weight pass (low-precision input only)
    w_cols: int  # vocabulary entries per block in the weight pass


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything but the three differentiable tensors, flattened to ``N`` tokens."""

    kind: str  # "index", "prob" or "lse" (no target: log-sum-exp only)
    n: int
    v: int
    acc: torch.dtype  # float32, or float64 for float64 input
    target: torch.Tensor | None  # (N,) int64 class indices, or (N, V) probabilities
    valid: torch.Tensor | None  # (N,) bool, index targets only
    class_weight: torch.Tensor | None  # (V,) acc dtype
    # The coefficients, named as in softmaxkit._numpy._cross_entropy (see softmaxkit.cross_entropy):
    total_weight: float  # sum_c w_c (V when there are no class weights)
    target_coef: torch.Tensor | None  # (N,) (1 - eps) w_y v: 0 on ignored tokens (index targets)
    smooth_coef: torch.Tensor | None  # (N,) eps / V * v (index targets)
    total_coef: torch.Tensor | None  # (N,) A_n = sum_c a_nc
    ce_denominator: float  # what "mean" divides the cross-entropy part by
    n_kept: int  # what "mean" divides the z-loss part by
    label_smoothing: float
    z_loss: float
    softcap: float | None
    reduction: str
    max_memory: int
    plan: Plan
    temperature: float = 1.0  # the logits are softcap(u) / temperature
    entropy: bool = False  # the forward pass also accumulates each token's entropy
    # Vocabulary-parallel shards (softmaxkit.torch._linear_ce._vocab_parallel): ``weight`` holds ``v``
    # of the ``vocab_total`` classes and the coefficients above are those of the whole vocabulary.
    vocab_total: int = 0  # 0: the whole vocabulary is here (vocab_total == v)
    rest_coef_extra: torch.Tensor | None = None  # (N,) probability targets: A' of the other shards

    @property
    def vocab(self) -> int:
        """The number of classes :math:`V` of the formulas (the label smoothing's ``eps / V``)."""
        return self.vocab_total or self.v


def check_max_memory_option(max_memory: Any) -> int | None:
    """``max_memory`` as given: None or an integer number of bytes >= 64 (the default is sized later)."""
    if max_memory is not None and (
        isinstance(max_memory, bool) or not isinstance(max_memory, numbers.Integral) or max_memory < 64
    ):
        raise ValueError(f"max_memory must be None or an integer number of bytes >= 64, got {_describe(max_memory)}")
    return None if max_memory is None else int(max_memory)


def check_max_memory(max_memory: Any, device: torch.device, *, weight_bytes: int, logits_elements: int) -> int:
    if max_memory is None:
        if device.type == "cuda":
            return DEFAULT_MAX_MEMORY_CUDA
        # The weight gradient (V x d) is the memory floor of any implementation; a scratch of a
        # quarter of it costs little on top and gives the products enough rows (512 instead of
        # 128 at d = 2048, V = 65536 float32: the pass took 10 % less time on the CPU). The
        # growth stops at an eighth of the float32 logits, so few tokens and a huge weight get
        # no N x V scratch beyond the 32 MiB floor.
        grown = min(weight_bytes // _WEIGHT_SHARE, logits_elements * 4 // _LOGITS_SHARE)
        return max(DEFAULT_MAX_MEMORY, grown)
    return check_max_memory_option(max_memory)


def make_plan(
    n: int,
    v: int,
    d: int,
    dtype: torch.dtype,
    acc: torch.dtype,
    *,
    kind: str,
    softcap: bool,
    max_memory: int,
    entropy: bool = False,
) -> Plan:
    """Chunk sizes such that the chunk-shaped scratch stays within ``max_memory`` bytes.

    Counted: every tile of ``rows x cols`` (logits, softcap derivative, low-precision copy, target)
    and the float32 copies that low-precision input needs where a chunk cannot span the whole
    vocabulary (a weight block, ``cols x d``) or all tokens (a token chunk, ``w_rows x d``).
    Not counted, like the gradients themselves: the float32 accumulators of at most
    ``_MIN_ROWS`` rows or ``_MIN_COLS`` columns of width ``d``. At least one row and one column
    are processed whatever the bound.
    """
    acc_size = torch.finfo(acc).bits // 8
    low = dtype != acc
    per_element = acc_size  # the logits / gradient tile
    if softcap:
        per_element += acc_size  # the softcap derivative
    if low:
        per_element += torch.finfo(dtype).bits // 8  # the low-precision product and gradient tile
    if kind == "prob":
        per_element += acc_size  # the smoothed, weighted target tile
    if entropy:
        per_element += acc_size  # the entropy terms of a tile
    elements = max(1, max_memory // per_element)
    n1, row_bytes = max(n, 1), d * acc_size
    if elements // v >= min(n1, _MIN_ROWS):
        rows, cols = aligned(min(n1, elements // v), n1, _ROW_ALIGN), v
    else:
        # Vocabulary tiles; low-precision input converts each tile's weight block to float32.
        rows = max(1, min(n1, _MIN_ROWS, elements))
        per_col = rows * per_element + (row_bytes if low else 0)
        cols = aligned(max(1, min(v, max_memory // per_col)), v, _COL_ALIGN)
    if elements // n1 >= min(v, _MIN_COLS):
        w_rows, w_cols = n1, aligned(min(v, elements // n1), v, _COL_ALIGN)
    else:
        # Token chunks (low precision only), each converted to float32 for the exact product.
        w_cols = max(1, min(v, _MIN_COLS, elements))
        w_rows = aligned(max(1, min(n1, max_memory // (w_cols * per_element + row_bytes))), n1, _ROW_ALIGN)
    return Plan(rows, cols, w_rows, w_cols)


def aligned(size: int, whole: int, multiple: int) -> int:
    """``size`` rounded down to a multiple of ``multiple`` unless it covers ``whole`` or is smaller.

    Matrix products over chunk sizes such as 85 rows run far slower than over 64 or 128 on the
    CPU (the bfloat16 logits product: 261 GFLOP/s at 85 rows, 410 at 64), so chunks are aligned.
    """
    if size >= whole or size < multiple:
        return size
    return size - size % multiple


def make_problem(
    input,
    weight,
    bias,
    target,
    *,
    ignore_index,
    reduction,
    label_smoothing,
    class_weight,
    z_loss,
    softcap,
    max_memory,
    temperature=1.0,
    entropy=False,
) -> tuple[torch.Tensor, Problem, tuple[int, ...]]:
    """Validate everything; return ``(input as (N, d), problem, batch shape)``."""
    check_linear_tensors(input, weight, bias)
    reduction = check_reduction(reduction)
    label_smoothing = check_label_smoothing(label_smoothing)
    ignore_index = check_ignore_index64(ignore_index)
    z_loss = check_finite_real(z_loss, "z_loss", low=0.0)
    softcap = check_finite_real(softcap, "softcap", low=0.0, allow_none=True)
    d, v = input.shape[-1], weight.shape[0]
    batch = tuple(input.shape[:-1])
    x2 = input.reshape(math.prod(batch), d)  # not -1: with d = 0 the row count would be ambiguous
    max_memory = check_max_memory(
        max_memory, input.device, logits_elements=x2.shape[0] * v, weight_bytes=weight.numel() * weight.element_size()
    )
    n = x2.shape[0]
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    device = input.device

    class_weight = check_linear_class_weight(class_weight, v)
    cw = None if class_weight is None else class_weight.detach().to(device=device, dtype=acc)
    # In float64, so that sum_{c != arg} w_c = total_weight - w_arg stays exact when w_arg dominates.
    total_weight = float(class_weight.detach().double().sum()) if cw is not None else float(v)

    if check_linear_target(target, batch, v):
        if ignore_index >= 0:  # as cross_entropy (and PyTorch) with probability targets
            raise ValueError(
                f"ignore_index must be negative (unused) with class-probability targets, got {ignore_index}"
            )
        probs = target.detach().reshape(n, v).to(device)
        eps = label_smoothing
        total_coef = (1.0 - eps) * target_mass(probs, cw, acc, max_memory) + eps / v * total_weight
        kind, tgt, valid, target_coef, smooth_coef = "prob", probs, None, None, None
        ce_denominator, n_kept = float(n), n
    else:
        tgt = target.to(device=device, dtype=torch.int64)
        valid = check_class_indices(tgt, v, ignore_index).reshape(n)
        tgt = tgt.reshape(n)
        safe = torch.where(valid, tgt, 0)
        target_weight = cw[safe] * valid if cw is not None else valid.to(acc)
        eps = label_smoothing
        target_coef = (1.0 - eps) * target_weight
        smooth_coef = (eps / v) * valid.to(acc)
        total_coef = target_coef + smooth_coef * total_weight
        kind = "index"
        ce_denominator, n_kept = float(target_weight.sum()), int(valid.sum())
        tgt = safe
    temperature = check_finite_real(temperature, "temperature", low=0.0, allow_none=True)
    plan = make_plan(
        n, v, d, input.dtype, acc, kind=kind, softcap=softcap is not None, max_memory=max_memory, entropy=entropy
    )
    problem = Problem(
        kind=kind,
        n=n,
        v=v,
        acc=acc,
        target=tgt,
        valid=valid,
        class_weight=cw,
        total_weight=total_weight,
        target_coef=target_coef,
        smooth_coef=smooth_coef,
        total_coef=total_coef,
        ce_denominator=ce_denominator,
        n_kept=n_kept,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        reduction=reduction,
        max_memory=max_memory,
        plan=plan,
        temperature=1.0 if temperature is None else temperature,
        entropy=bool(entropy),
    )
    return x2, problem, batch


def make_lse_problem(input, weight, bias, *, softcap, max_memory) -> tuple[torch.Tensor, Problem, tuple[int, ...]]:
    """:func:`make_problem` for :func:`~softmaxkit.torch.linear_logsumexp`: no target, kind "lse".

    Planned as for index targets (whose chunks are the same as those of no target at all).
    """
    dummy = (
        torch.zeros(input.shape[:-1], dtype=torch.int64, device=input.device)
        if isinstance(input, torch.Tensor) and input.ndim >= 1
        else None
    )
    x2, problem, batch = make_problem(
        input,
        weight,
        bias,
        dummy,
        ignore_index=-100,
        reduction="none",
        label_smoothing=0.0,
        class_weight=None,
        z_loss=0.0,
        softcap=softcap,
        max_memory=max_memory,
    )
    problem = dataclasses.replace(
        problem, kind="lse", target=None, valid=None, target_coef=None, smooth_coef=None, total_coef=None
    )
    return x2, problem, batch


def target_mass(probs: torch.Tensor, cw: torch.Tensor | None, acc: torch.dtype, max_memory: int) -> torch.Tensor:
    """``sum_c w_c t_nc`` per token, summed in ``acc`` (float32 or wider) whatever the target's dtype.

    In chunks of rows converted to ``acc`` within ``max_memory``: a bfloat16 target summed in
    bfloat16 is off by 1e-3 relative, and so would be the gradient.
    """
    n, v = probs.shape
    out = torch.empty(n, dtype=acc, device=probs.device)
    rows = max(1, max_memory // max(1, v * (torch.finfo(acc).bits // 8)))
    for r0 in range(0, n, rows):
        chunk = probs[r0 : r0 + rows].to(acc)
        out[r0 : r0 + rows] = chunk @ cw if cw is not None else chunk.sum(1)
    return out


#: Below this S' (p_top above 0.8) a token is confident: its top column is found and S' summed
#: without the top's exp(0) = 1 exactly. Above it ``sum - 1`` cannot cancel (at most 5 ulp), and
#: the direct gradient ``p_top A - a_top`` loses at most a factor 5 (measured: within the 32 ulp
#: of tests/test_exactness.py).
CONFIDENT = 0.25


class RowStats(NamedTuple):
    """Each token's softmax as the engines keep it (the forms of :mod:`softmaxkit.torch._stable`).

    With ``m`` the largest logit and ``S' = sum_{c != top} exp(z_c - m)``: ``lse = m + log1p(S')``,
    ``p_c = exp(z_c - m) / (1 + S')`` and ``1 - p_top = S' / (1 + S')``, each with full relative
    accuracy however confident the token and whatever the logits' magnitude. ``arg`` is the top
    column where the gradient needs it (the token is confident, ``S' < CONFIDENT``), else ``-1``
    (the Triton engine always knows it).
    """

    m: torch.Tensor  # (N,) the largest logit
    arg: torch.Tensor  # (N,) int64, its column, or -1
    rest: torch.Tensor  # (N,) S'

    @property
    def lse(self) -> torch.Tensor:
        return self.m + torch.log1p(self.rest)

    def rows(self, rows: slice) -> RowStats:
        return RowStats(self.m[rows], self.arg[rows], self.rest[rows])


class LogitStats(NamedTuple):
    """What the loss needs from the logits ``z``, per token: an engine's forward result."""

    row: RowStats
    zt: torch.Tensor  # (N,) the target's logit (index targets)
    # (N,) D = sum_c a_c (m - z_nc) >= 0: with the class weights a_c = w_c (index targets with label
    # smoothing), the target coefficients a_nc (probability targets); 0 otherwise. Accumulated from
    # the shifted logits, so the loss terms built from it do not cancel at large |z|.
    zs: torch.Tensor
    # (N,) E = sum_c exp(z_c - m) (m - z_c) >= 0 when the problem asks for the entropy, else None:
    # H = log1p(S') + E / (1 + S'), a sum of non-negative terms.
    ent: torch.Tensor | None = None


class TileCoefs(NamedTuple):
    """The per-token coefficients of a gradient tile, already scaled by the upstream gradient.

    ``g_nc = p_nc total_n - [c == y_n] target_n - smooth_n w_c`` (index targets; probability targets
    subtract ``ce_scale_n a_nc`` instead), except at the top column ``arg_n``, where
    ``g = top_n = A'_n ce_n - A_n ce_n S'/(1 + S') + extra_n / (1 + S')`` replaces the cancelling
    ``p_top total_n - a_top``.
    """

    total: torch.Tensor
    target: torch.Tensor | None
    smooth: torch.Tensor | None
    top: torch.Tensor
    ce: torch.Tensor  # the cross-entropy scale itself (probability targets scale their tile by it)


def _times(coef: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``coef * scale`` with ``0 * nan = 0``: a token with zero coefficients has a zero gradient even when
    ``"mean"`` divides by a zero total weight (:func:`softmaxkit.torch.cross_entropy`'s policy)."""
    return torch.where(coef == 0, 0.0, coef * scale)


def _prob_rest_coef(p: Problem, rows: slice, arg: torch.Tensor) -> torch.Tensor:
    """``A'_n = sum_{c != arg_n} a_nc`` for probability targets, where ``arg_n >= 0`` (0 elsewhere).

    Summed without the top column (never ``A - a_top``, which cancels when the target is as confident
    as the model), in chunks of the target's rows converted to ``acc`` within ``max_memory``.
    """
    out = torch.zeros(arg.shape[0], dtype=p.acc, device=arg.device)
    wanted = (arg >= 0).nonzero()[:, 0]
    chunk = max(1, p.max_memory // max(1, p.v * (torch.finfo(p.acc).bits // 8)))
    target = p.target[rows]
    for k0 in range(0, wanted.numel(), chunk):
        sel = wanted[k0 : k0 + chunk]
        coef = target[sel].to(p.acc)
        if p.label_smoothing > 0.0:
            coef = coef.mul_(1.0 - p.label_smoothing).add_(p.label_smoothing / p.vocab)
        if p.class_weight is not None:
            coef = coef.mul_(p.class_weight)
        out[sel] = coef.scatter_(1, arg[sel, None], 0.0).sum(1)
    return out


def scaled_coefs(p: Problem, rows: slice, row: RowStats, scales: RowScales) -> TileCoefs:
    """:class:`TileCoefs` of the tokens ``rows`` (``row`` their :class:`RowStats`)."""
    ce, extra = scales.at(rows, row.lse)
    p_top = 1 / (1 + row.rest)
    complement = row.rest * p_top  # 1 - p_top
    if p.kind == "lse":
        zeros = torch.zeros_like(extra)
        return TileCoefs(extra, zeros, zeros, extra * p_top, zeros)
    a_total = _times(p.total_coef[rows], ce)
    target = smooth = None
    arg = row.arg.clamp(min=0)  # where arg is -1 the top value is not used
    if p.kind == "index":
        target_coef, smooth_coef = p.target_coef[rows], p.smooth_coef[rows]
        target, smooth = _times(target_coef, ce), _times(smooth_coef, ce)
        rest_coef = torch.where(p.target[rows] != arg, target_coef, torch.zeros_like(target_coef))
        if p.label_smoothing > 0.0:
            if p.class_weight is None:
                others = float(p.vocab - 1)
            else:
                others = (p.total_weight - p.class_weight[arg].double()).to(p.acc)
            rest_coef = rest_coef + smooth_coef * others
    else:
        rest_coef = _prob_rest_coef(p, rows, row.arg)
        if p.rest_coef_extra is not None:
            rest_coef = rest_coef + p.rest_coef_extra[rows]
    top = _times(rest_coef, ce) - a_total * complement + extra * p_top
    return TileCoefs(a_total + extra, target, smooth, top, ce)


class RowScales:
    """The per-token scales of a gradient, what the engines consume: the engines' whole view of autograd.

    ``ce_scale`` multiplies the cross-entropy part (the upstream gradient, divided by the mean's
    denominator); the z-loss and an upstream log-sum-exp gradient add ``q * lse + lse_grad`` to the
    coefficient of the probabilities.
    """

    def __init__(self, ce_scale: torch.Tensor, z_scale: torch.Tensor, lse_grad: torch.Tensor | None, p: Problem):
        self.ce_scale = ce_scale
        self.q = z_scale * (2.0 * p.z_loss)
        self.lse_grad = lse_grad

    def at(self, rows: slice, lse_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        extra = self.q[rows] * lse_c
        if self.lse_grad is not None:
            extra = extra + self.lse_grad[rows]
        return self.ce_scale[rows], extra
