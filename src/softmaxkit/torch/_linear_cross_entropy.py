"""Fused linear cross-entropy: the loss of ``softcap(input @ weight.T + bias)`` without the N x V logits.

The math, written once
----------------------
For token ``i`` with hidden state :math:`x_i \\in \\mathbb{R}^d`, the ``V`` logits are

.. math::

    \\ell_{ij} = x_i \\cdot w_j + b_j, \\qquad
    z_{ij} = c \\tanh(\\ell_{ij} / c) \\ (\\text{softcap } c, \\text{ or } z = \\ell), \\qquad
    \\operatorname{lse}_i = \\log \\sum_j e^{z_{ij}}, \\qquad p_{ij} = e^{z_{ij} - \\operatorname{lse}_i}.

With class weights :math:`\\omega` (all ones when absent), label smoothing :math:`\\varepsilon` and
the smoothed target distribution :math:`q_{ij} = (1 - \\varepsilon) y_{ij} + \\varepsilon / V`
(:math:`y` one-hot for index targets, the given probabilities otherwise), the per-token loss is

.. math::

    L_i = \\underbrace{\\sum_j \\omega_j q_{ij} (\\operatorname{lse}_i - z_{ij})}_{\\text{cross-entropy, as } \\texttt{torch.nn.functional.cross\\_entropy}}
          + \\lambda \\operatorname{lse}_i^2 \\quad (\\text{z-loss } \\lambda),

where for index targets the one-hot part carries the weight :math:`\\omega_{t_i}` of the target, and
ignored tokens (``target == ignore_index``) contribute nothing. ``reduction="mean"`` divides the
cross-entropy part by :math:`\\sum_{i \\text{ kept}} \\omega_{t_i}` (by ``N`` for probability
targets), exactly as PyTorch does, and the z-loss part by the number of kept tokens. The gradient
with respect to the logits is

.. math::

    \\frac{\\partial L_i}{\\partial z_{ij}} = p_{ij}
        \\Big(\\sum_k \\omega_k q_{ik} + 2 \\lambda \\operatorname{lse}_i\\Big) - \\omega_j q_{ij},
    \\qquad \\frac{\\partial z_{ij}}{\\partial \\ell_{ij}} = 1 - (z_{ij} / c)^2,

and the gradients of ``input``, ``weight`` and ``bias`` follow by the chain rule
(:math:`\\partial \\ell / \\partial X \\cdot W`, :math:`\\partial \\ell^T X`, column sums).

How it is computed
------------------
The tokens are processed in chunks of ``rows`` and, when even a few rows of the full vocabulary do
not fit ``max_memory``, the vocabulary in blocks of ``cols`` with an online log-sum-exp; no tensor
of ``N x V`` elements is ever allocated. Every intermediate of the softmax is float32 (float64 for
float64 input); the matrix products run in the input's dtype with float32 accumulation.

* float32 and float64 input: one pass. Each chunk computes its logits, its loss terms and its
  logit gradient, then ``grad_input`` rows and a float32 ``addmm`` into ``grad_weight``: three
  ``N V d`` products, as the naive computation.
* bfloat16 and float16 input: the statistics and the input gradient come from one token pass (each
  row's gradient is one matrix product over the whole vocabulary), the weight and bias gradients
  from a second pass over vocabulary blocks (each block's gradient is one matrix product over all
  tokens, accumulated in float32 inside the product). No ``V x d`` float32 buffer is needed; the
  price is one more logits product: four ``N V d`` products instead of three. (Summing
  the weight gradient over token chunks instead would need float32 product outputs, which PyTorch
  offers on CUDA only, or a ``V x d`` float32 buffer fed by rounded partial products.)

When even ``_MIN_ROWS`` rows of the whole vocabulary do not fit ``max_memory``, a chunk's
statistics are gathered over vocabulary tiles first and its gradient tiles recompute the logits:
one more product in either case.

For ``reduction="mean"`` and ``"sum"`` the gradients are computed during the forward pass (when
autograd will need them) and scaled by the incoming gradient in backward; for ``"none"`` they are
recomputed in backward from the saved per-token log-sum-exp. The result is deterministic: the
same inputs, shapes and ``max_memory`` give the same bits run to run.

The hidden states, weights and bias are expected to be finite (the logits of finite inputs are
finite, so no row is ever all ``-inf``); a non-finite input gives ``NaN`` in the affected rows, as
in the naive computation. No gradient flows to ``target`` or ``class_weight``; double backward is
not supported.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from softmaxkit._validation import _describe, check_ignore_index, check_label_smoothing, check_reduction
from softmaxkit.torch._checks import (
    check_backend,
    check_class_indices,
    check_finite_real,
    check_linear_class_weight,
    check_linear_target,
    check_linear_tensors,
)

__all__ = ["LinearCrossEntropyLoss", "linear_cross_entropy", "linear_logsumexp"]

#: Default bound, in bytes, of the chunk-shaped scratch tensors (CPU and other devices): this, or
#: more with a large weight (see :func:`_check_max_memory`).
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
#: Chunk sizes are rounded down to these multiples (see :func:`_aligned`).
_ROW_ALIGN = 64
_COL_ALIGN = 256
_LOW = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------
# The problem, validated once.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    rows: int  # tokens per chunk in the token pass
    cols: int  # vocabulary entries per block in the token pass (== V: one block)
    w_rows: int  # tokens per chunk in the weight pass (low-precision input only)
    w_cols: int  # vocabulary entries per block in the weight pass


@dataclasses.dataclass(frozen=True)
class _Problem:
    """Everything but the three differentiable tensors, flattened to ``N`` tokens."""

    kind: str  # "index", "prob" or "lse" (no target: log-sum-exp only)
    n: int
    v: int
    acc: torch.dtype  # float32, or float64 for float64 input
    target: torch.Tensor | None  # (N,) int64 class indices, or (N, V) probabilities
    valid: torch.Tensor | None  # (N,) bool, index targets only
    class_weight: torch.Tensor | None  # (V,) acc dtype
    weight_sum: float  # sum of the class weights (V when absent)
    tw: torch.Tensor | None  # (N,) (1 - eps) * w[t] on kept tokens, 0 elsewhere (index)
    sm: torch.Tensor | None  # (N,) eps / V on kept tokens (index)
    alpha: torch.Tensor | None  # (N,) sum_j w_j q_ij: the per-row total target mass
    ce_denominator: float  # what "mean" divides the cross-entropy part by
    n_kept: int  # what "mean" divides the z-loss part by
    label_smoothing: float
    z_loss: float
    softcap: float | None
    reduction: str
    max_memory: int
    plan: _Plan


def _check_max_memory(max_memory: Any, device: torch.device, *, weight_bytes: int, logits_elements: int) -> int:
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
    if isinstance(max_memory, bool) or not isinstance(max_memory, numbers.Integral) or max_memory < 64:
        raise ValueError(f"max_memory must be None or an integer number of bytes >= 64, got {_describe(max_memory)}")
    return int(max_memory)


def _make_plan(
    n: int, v: int, d: int, dtype: torch.dtype, acc: torch.dtype, *, kind: str, softcap: bool, max_memory: int
) -> _Plan:
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
    elements = max(1, max_memory // per_element)
    n1, row_bytes = max(n, 1), d * acc_size
    if elements // v >= min(n1, _MIN_ROWS):
        rows, cols = _aligned(min(n1, elements // v), n1, _ROW_ALIGN), v
    else:
        # Vocabulary tiles; low-precision input converts each tile's weight block to float32.
        rows = max(1, min(n1, _MIN_ROWS, elements))
        per_col = rows * per_element + (row_bytes if low else 0)
        cols = _aligned(max(1, min(v, max_memory // per_col)), v, _COL_ALIGN)
    if elements // n1 >= min(v, _MIN_COLS):
        w_rows, w_cols = n1, _aligned(min(v, elements // n1), v, _COL_ALIGN)
    else:
        # Token chunks (low precision only), each converted to float32 for the exact product.
        w_cols = max(1, min(v, _MIN_COLS, elements))
        w_rows = _aligned(max(1, min(n1, max_memory // (w_cols * per_element + row_bytes))), n1, _ROW_ALIGN)
    return _Plan(rows, cols, w_rows, w_cols)


def _aligned(size: int, whole: int, multiple: int) -> int:
    """``size`` rounded down to a multiple of ``multiple`` unless it covers ``whole`` or is smaller.

    Matrix products over chunk sizes such as 85 rows run far slower than over 64 or 128 on the
    CPU (the bfloat16 logits product: 261 GFLOP/s at 85 rows, 410 at 64), so chunks are aligned.
    """
    if size >= whole or size < multiple:
        return size
    return size - size % multiple


def _prepare(
    input, weight, bias, target, *, ignore_index, reduction, label_smoothing, class_weight, z_loss, softcap, max_memory
) -> tuple[torch.Tensor, _Problem, tuple[int, ...]]:
    """Validate everything; return ``(input as (N, d), problem, batch shape)``."""
    check_linear_tensors(input, weight, bias)
    reduction = check_reduction(reduction)
    label_smoothing = check_label_smoothing(label_smoothing)
    ignore_index = check_ignore_index(ignore_index)
    z_loss = check_finite_real(z_loss, "z_loss", low=0.0)
    softcap = check_finite_real(softcap, "softcap", low=0.0, allow_none=True)
    d, v = input.shape[-1], weight.shape[0]
    batch = tuple(input.shape[:-1])
    x2 = input.reshape(-1, d)
    max_memory = _check_max_memory(
        max_memory, input.device, logits_elements=x2.shape[0] * v, weight_bytes=weight.numel() * weight.element_size()
    )
    n = x2.shape[0]
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    device = input.device

    class_weight = check_linear_class_weight(class_weight, v)
    cw = None if class_weight is None else class_weight.detach().to(device=device, dtype=acc)
    weight_sum = float(cw.sum()) if cw is not None else float(v)

    if check_linear_target(target, batch, v):
        probs = target.detach().reshape(n, v).to(device)
        eps = label_smoothing
        mass = probs @ cw.to(probs.dtype) if cw is not None else probs.sum(1)
        alpha = (1.0 - eps) * mass.to(acc) + eps / v * weight_sum
        kind, tgt, valid, tw, sm = "prob", probs, None, None, None
        ce_denominator, n_kept = float(n), n
    else:
        tgt = target.to(device=device, dtype=torch.int64)
        valid = check_class_indices(tgt, v, ignore_index).reshape(n)
        tgt = tgt.reshape(n)
        safe = torch.where(valid, tgt, 0)
        wt = cw[safe] * valid if cw is not None else valid.to(acc)
        eps = label_smoothing
        tw = (1.0 - eps) * wt
        sm = (eps / v) * valid.to(acc)
        alpha = tw + sm * weight_sum
        kind = "index"
        ce_denominator, n_kept = float(wt.sum()), int(valid.sum())
        tgt = safe
    plan = _make_plan(n, v, d, input.dtype, acc, kind=kind, softcap=softcap is not None, max_memory=max_memory)
    problem = _Problem(
        kind=kind,
        n=n,
        v=v,
        acc=acc,
        target=tgt,
        valid=valid,
        class_weight=cw,
        weight_sum=weight_sum,
        tw=tw,
        sm=sm,
        alpha=alpha,
        ce_denominator=ce_denominator,
        n_kept=n_kept,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        reduction=reduction,
        max_memory=max_memory,
        plan=plan,
    )
    return x2, problem, batch


# --------------------------------------------------------------------------------------------
# Tiles: logits, their statistics, their gradient. All in place in preallocated scratch.
# --------------------------------------------------------------------------------------------


class _Scratch:
    """Flat buffers reused by every tile, so the loop allocates nothing of size n x v."""

    def __init__(self, rows: int, cols: int, dtype: torch.dtype, p: _Problem, device) -> None:
        size = rows * cols
        self.z = torch.empty(size, dtype=p.acc, device=device)
        self.low = torch.empty(size, dtype=dtype, device=device) if dtype != p.acc else None
        self.deriv = torch.empty(size, dtype=p.acc, device=device) if p.softcap is not None else None
        self.tq = torch.empty(size, dtype=p.acc, device=device) if p.kind == "prob" else None

    @staticmethod
    def view(buffer: torch.Tensor | None, n: int, v: int) -> torch.Tensor | None:
        """An ``n x v`` tile stored vocabulary-major (its transpose is contiguous).

        The logits product is then ``weight_block @ x_chunk.T``, which BLAS runs markedly faster
        than ``x_chunk @ weight_block.T`` when the chunk has few rows (measured: 156 against 111
        GFLOP/s for 128 x 2048 x 65536 float32 on two cores), and every tile of a pass shares
        the one layout, so elementwise ops between tiles stay contiguous.
        """
        return None if buffer is None else buffer[: n * v].view(v, n).T


def _logits(x_c, weight, bias, j0, j1, p: _Problem, s: _Scratch) -> torch.Tensor:
    """``softcap(x_c @ weight[j0:j1].T + bias[j0:j1])`` in the accumulation dtype, in ``s.z``."""
    n, v = x_c.shape[0], j1 - j0
    z = s.view(s.z, n, v)
    w_b = weight[j0:j1]
    if s.low is None:
        if bias is None:
            torch.mm(w_b, x_c.T, out=z.T)
        else:
            torch.addmm(bias[j0:j1].to(p.acc)[:, None], w_b, x_c.T, out=z.T)
    else:
        low = s.view(s.low, n, v)
        torch.mm(w_b, x_c.T, out=low.T)
        z.copy_(low)
        if bias is not None:
            z.add_(bias[j0:j1].to(p.acc))
    if p.softcap is not None:
        z.div_(p.softcap).tanh_()
        deriv = s.view(s.deriv, n, v)
        torch.mul(z, z, out=deriv)
        deriv.neg_().add_(1.0)
        z.mul_(p.softcap)
    return z


def _tile_stats(z, r0, j0, p: _Problem, stats: dict, s: _Scratch) -> None:
    """Add this tile's contribution to the online log-sum-exp and the target terms.

    Consumes the tile: on return ``z`` holds ``exp(z - shift)`` with ``shift`` the running row max
    (0 where that is not finite), which a one-block pass turns into probabilities by ``/ s``.
    """
    n, v = z.shape
    rows = slice(r0, r0 + n)
    if p.kind == "index":
        t = p.target[rows]
        inside = (t >= j0) & (t < j0 + v)
        if bool(inside.any()):
            local = (t - j0).clamp(0, v - 1)
            picked = z.gather(1, local[:, None])[:, 0]
            stats["zt"][rows] += torch.where(inside, picked, torch.zeros_like(picked))
        if p.label_smoothing > 0.0:
            stats["zs"][rows] += z @ p.class_weight[j0 : j0 + v] if p.class_weight is not None else z.sum(1)
    elif p.kind == "prob":
        tq = _smoothed_target(p, rows, j0, v, out=s.view(s.tq, n, v))
        stats["zs"][rows] += (tq.mul_(z)).sum(1)
    m_old = stats["m"][rows]
    m_new = torch.maximum(m_old, z.amax(1))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    old_shift = torch.where(torch.isfinite(m_old), m_old, torch.zeros_like(m_old))
    z.sub_(shift[:, None]).exp_()
    stats["s"][rows] = stats["s"][rows] * torch.exp(old_shift - shift) + z.sum(1)
    stats["m"][rows] = m_new


def _smoothed_target(p: _Problem, rows: slice, j0: int, v: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``w_j q_ij`` for a tile: the weighted, smoothed target distribution."""
    block = p.target[rows, j0 : j0 + v]
    n = block.shape[0]
    tq = torch.empty((n, v), dtype=p.acc, device=block.device) if out is None else out
    tq.copy_(block)
    eps = p.label_smoothing
    if eps > 0.0:
        tq.mul_(1.0 - eps).add_(eps / p.v)
    if p.class_weight is not None:
        tq.mul_(p.class_weight[j0 : j0 + v])
    return tq


def _tile_grad(z, r0, j0, lse_c, ce_scale_c, extra_c, p: _Problem, s: _Scratch, inv_s=None) -> torch.Tensor:
    """Overwrite the logits tile ``z`` with d(loss)/d(pre-softcap logits), scaled per row.

    With ``inv_s``, ``z`` already holds ``exp(z - shift)`` from :func:`_tile_stats` and the
    probabilities are ``z * inv_s``; otherwise they are ``exp(z - lse)``.
    """
    n, v = z.shape
    rows = slice(r0, r0 + n)
    coef = extra_c if p.kind == "lse" else ce_scale_c * p.alpha[rows] + extra_c
    if inv_s is None:
        z.sub_(lse_c[:, None]).exp_()  # now the softmax probabilities
    else:
        coef = coef * inv_s
    z.mul_(coef[:, None])
    if p.kind == "index":
        t = p.target[rows]
        hit = ((t >= j0) & (t < j0 + v) & p.valid[rows]).nonzero()[:, 0]
        if hit.numel():
            z[hit, t[hit] - j0] -= (ce_scale_c * p.tw[rows])[hit]
        if p.label_smoothing > 0.0:
            u = ce_scale_c * p.sm[rows]
            if p.class_weight is not None:
                z.addr_(u, p.class_weight[j0 : j0 + v], alpha=-1.0)
            else:
                z.sub_(u[:, None])
    elif p.kind == "prob":
        tq = _smoothed_target(p, rows, j0, v, out=s.view(s.tq, n, v))
        tq.mul_(ce_scale_c[:, None])
        z.sub_(tq)
    if p.softcap is not None:
        z.mul_(s.view(s.deriv, n, v))
    return z


# --------------------------------------------------------------------------------------------
# The passes.
# --------------------------------------------------------------------------------------------


def _new_stats(p: _Problem, device) -> dict:
    return {
        "m": torch.full((p.n,), -math.inf, dtype=p.acc, device=device),
        "s": torch.zeros(p.n, dtype=p.acc, device=device),
        "zt": torch.zeros(p.n, dtype=p.acc, device=device),
        "zs": torch.zeros(p.n, dtype=p.acc, device=device),
    }


def _finish_lse(stats: dict, rows: slice) -> torch.Tensor:
    m = stats["m"][rows]
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return shift + torch.log(stats["s"][rows])


class _Coefficients:
    """Per-token gradient scales: ``ce_scale`` on the cross-entropy part, ``q * lse + r`` extra."""

    def __init__(self, ce_scale: torch.Tensor, z_scale: torch.Tensor, lse_grad: torch.Tensor | None, p: _Problem):
        self.ce_scale = ce_scale
        self.q = z_scale * (2.0 * p.z_loss)
        self.lse_grad = lse_grad

    def at(self, rows: slice, lse_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        extra = self.q[rows] * lse_c
        if self.lse_grad is not None:
            extra = extra + self.lse_grad[rows]
        return self.ce_scale[rows], extra


def _token_pass(
    x2, weight, bias, p: _Problem, *, lse=None, coef: _Coefficients | None = None, want_dx=False, want_dw_db=False
):
    """Token-outer pass. Returns ``(stats or None, dx, dw, db)``.

    Without ``lse`` the statistics (log-sum-exp, picked and smoothed logits) are computed; with
    ``coef`` the gradients requested are accumulated. ``want_dw_db`` is used only where the weight
    gradient is accumulated in the input's own dtype (float32, float64).
    """
    device, dtype = x2.device, x2.dtype
    n, d = x2.shape
    plan = p.plan
    if not (want_dx or want_dw_db):
        coef = None  # no gradient wanted from this pass: no gradient tiles either
    stats = _new_stats(p, device) if lse is None else None
    dx = torch.empty_like(x2) if want_dx else None
    dw = torch.zeros(weight.shape, dtype=p.acc, device=device) if want_dw_db else None
    db = torch.zeros(p.v, dtype=p.acc, device=device) if (want_dw_db and bias is not None) else None
    if n == 0 or (stats is None and coef is None):
        return stats, dx, dw, db
    s = _Scratch(plan.rows, plan.cols, dtype, p, device)
    one_block = plan.cols >= p.v
    for r0 in range(0, n, plan.rows):
        r1 = min(n, r0 + plan.rows)
        rows = slice(r0, r1)
        x_c = x2[rows]
        if one_block:
            z = _logits(x_c, weight, bias, 0, p.v, p, s)
            inv_s = None
            if stats is not None:
                _tile_stats(z, r0, 0, p, stats, s)
                lse_c = _finish_lse(stats, rows)
                inv_s = 1.0 / stats["s"][rows]
            else:
                lse_c = lse[rows]
            if coef is not None:
                g = _tile_grad(z, r0, 0, lse_c, *coef.at(rows, lse_c), p, s, inv_s=inv_s)
                _apply_tile_grad(g, x_c, weight, 0, p, s, dx, rows, dw, db, accumulate=False)
            continue
        if stats is not None:
            for j0 in range(0, p.v, plan.cols):
                j1 = min(p.v, j0 + plan.cols)
                _tile_stats(_logits(x_c, weight, bias, j0, j1, p, s), r0, j0, p, stats, s)
            lse_c = _finish_lse(stats, rows)
        else:
            lse_c = lse[rows]
        if coef is None:
            continue
        ce_c, extra_c = coef.at(rows, lse_c)
        dx_acc = torch.zeros((r1 - r0, d), dtype=p.acc, device=device) if want_dx else None
        for j0 in range(0, p.v, plan.cols):
            j1 = min(p.v, j0 + plan.cols)
            g = _tile_grad(_logits(x_c, weight, bias, j0, j1, p, s), r0, j0, lse_c, ce_c, extra_c, p, s)
            _apply_tile_grad(g, x_c, weight, j0, p, s, dx_acc, slice(0, r1 - r0), dw, db, accumulate=True)
        if want_dx:
            dx[rows] = dx_acc
    return stats, dx, dw, db


def _apply_tile_grad(g, x_c, weight, j0, p, s, dx, rows, dw, db, *, accumulate):
    """Push a logit-gradient tile into ``dx`` (rows), ``dw`` and ``db`` (vocabulary block)."""
    n, v = g.shape
    w_b = weight[j0 : j0 + v]
    if s.low is not None:
        g_low = s.view(s.low, n, v)
        g_low.copy_(g)
        a = g_low
    else:
        a = g
    if dx is not None:
        if accumulate:
            # Vocabulary-tiled rows: float32 partial products, so nothing is rounded mid-sum.
            dx[rows].addmm_(g, w_b if s.low is None else w_b.to(p.acc))
        else:
            torch.mm(a, w_b, out=dx[rows])
    if dw is not None:
        dw[j0 : j0 + v].addmm_(g.T, x_c)
    if db is not None:
        db[j0 : j0 + v] += g.sum(0)


def _weight_pass(x2, weight, bias, p: _Problem, lse, coef: _Coefficients, *, want_db: bool):
    """Vocabulary-outer pass for low-precision input: ``(dw in input dtype, db in float32)``."""
    device, dtype = x2.device, x2.dtype
    n, d = x2.shape
    plan = p.plan
    dw = torch.empty_like(weight)
    db = torch.zeros(p.v, dtype=p.acc, device=device) if want_db else None
    if n == 0:
        dw.zero_()
        return dw, db
    s = _Scratch(plan.w_rows, plan.w_cols, dtype, p, device)
    one_chunk = plan.w_rows >= n
    acc = None if one_chunk else torch.empty((plan.w_cols, d), dtype=p.acc, device=device)
    for j0 in range(0, p.v, plan.w_cols):
        j1 = min(p.v, j0 + plan.w_cols)
        v = j1 - j0
        if not one_chunk:
            acc[:v].zero_()
        for r0 in range(0, n, plan.w_rows):
            r1 = min(n, r0 + plan.w_rows)
            rows = slice(r0, r1)
            x_c = x2[rows]
            lse_c = lse[rows]
            g = _tile_grad(_logits(x_c, weight, bias, j0, j1, p, s), r0, j0, lse_c, *coef.at(rows, lse_c), p, s)
            if one_chunk:
                g_low = s.view(s.low, r1 - r0, v)
                g_low.copy_(g)
                torch.mm(g_low.T, x_c, out=dw[j0:j1])
            else:
                # Token-chunked blocks (tight max_memory): float32 partial products.
                acc[:v].addmm_(g.T, x_c.to(p.acc))
            if db is not None:
                db[j0:j1] += g.sum(0)
        if not one_chunk:
            dw[j0:j1] = acc[:v]
    return dw, db


def _per_token_loss(stats: dict, lse: torch.Tensor, p: _Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cross-entropy part, z-loss part)`` per token, zero on ignored tokens."""
    if p.kind == "index":
        ce = p.tw * (lse - stats["zt"])
        if p.label_smoothing > 0.0:
            ce = ce + p.sm * (p.weight_sum * lse - stats["zs"])
        ce = torch.where(p.valid, ce, torch.zeros_like(ce))
        zl = torch.where(p.valid, p.z_loss * lse * lse, torch.zeros_like(lse))
    else:
        # sum_j w_j q_ij z_ij was accumulated in "zs" directly.
        ce = p.alpha * lse - stats["zs"]
        zl = p.z_loss * lse * lse
    return ce, zl


def _reduce(ce: torch.Tensor, zl: torch.Tensor, p: _Problem) -> torch.Tensor:
    if p.reduction == "none":
        return ce + zl if p.z_loss else ce
    if p.reduction == "sum":
        return ce.sum() + zl.sum() if p.z_loss else ce.sum()
    loss = ce.sum() / p.ce_denominator if p.ce_denominator else ce.sum() * math.nan
    if p.z_loss:
        loss = loss + (zl.sum() / p.n_kept if p.n_kept else zl.sum() * math.nan)
    return loss


def _scalar_scales(p: _Problem, g: torch.Tensor | float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token scales of the cross-entropy and z-loss parts for a scalar reduction."""
    if p.reduction == "sum":
        ce, z = 1.0, 1.0
    else:
        ce = 1.0 / p.ce_denominator if p.ce_denominator else (0.0 if p.n_kept == 0 else math.inf)
        z = 1.0 / p.n_kept if p.n_kept else 0.0
    keep = p.valid.to(p.acc) if p.kind == "index" else torch.ones(p.n, dtype=p.acc, device=device)
    return keep * (ce * g), keep * (z * g)


def _gradients(x2, weight, bias, p: _Problem, lse, coef: _Coefficients, needs: tuple[bool, bool, bool]):
    """``(dx, dw, db)`` in the dtypes autograd expects (None where not needed)."""
    want_dx, want_dw, want_db = needs
    want_db = want_db and bias is not None
    low = x2.dtype != p.acc
    _, dx, dw, db = _token_pass(
        x2, weight, bias, p, lse=lse, coef=coef, want_dx=want_dx, want_dw_db=(want_dw or want_db) and not low
    )
    if low and (want_dw or want_db):
        dw, db = _weight_pass(x2, weight, bias, p, lse, coef, want_db=want_db)
    return _finish_grads(dx, dw, db, weight, bias, needs)


def _finish_grads(dx, dw, db, weight, bias, needs):
    want_dx, want_dw, want_db = needs
    dw = dw.to(weight.dtype) if (want_dw and dw is not None) else None
    db = db.to(bias.dtype) if (want_db and db is not None and bias is not None) else None
    return (dx if want_dx else None), dw, db


# --------------------------------------------------------------------------------------------
# Autograd.
# --------------------------------------------------------------------------------------------


def _use_triton(x: torch.Tensor, backend: str, p: _Problem) -> bool:
    if backend == "torch":
        return False
    if backend == "triton":
        if not _triton_available():
            raise ValueError("backend='triton' needs the triton package: pip install 'softmaxkit[triton]'")
        from softmaxkit.torch import _triton_linear_ce as tl_impl

        tl_impl.check_supported(x, p.kind)
        return True
    return x.is_cuda and p.kind != "prob" and x.dtype != torch.float64 and _triton_available()


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


class _LinearCrossEntropy(Function):
    @staticmethod
    def forward(ctx, x2, weight, bias, p: _Problem, needs, triton_path):
        ctx.p, ctx.needs, ctx.triton_path = p, needs, triton_path
        scalar = p.reduction != "none"
        precompute = scalar and any(needs)
        if triton_path:
            from softmaxkit.torch import _triton_linear_ce as tl_impl

            stats = tl_impl.stats_pass(x2, weight, bias, p)
        else:
            stats = None
        low = x2.dtype != p.acc
        pre = None
        if precompute and not triton_path:
            # One token pass computes the statistics and the input gradient together (and, for
            # float32 / float64, the weight and bias gradients too); low-precision input gets its
            # weight and bias gradients from the vocabulary-outer pass below.
            ce_scale, z_scale = _scalar_scales(p, 1.0, x2.device)
            coef = _Coefficients(ce_scale, z_scale, None, p)
            stats, dx, dw, db = _token_pass(
                x2, weight, bias, p, coef=coef, want_dx=needs[0], want_dw_db=(needs[1] or needs[2]) and not low
            )
            if low and (needs[1] or needs[2]):
                lse = _finish_lse(stats, slice(None))
                dw, db = _weight_pass(x2, weight, bias, p, lse, coef, want_db=needs[2] and bias is not None)
            pre = _finish_grads(dx, dw, db, weight, bias, needs)
        elif stats is None:
            stats, _, _, _ = _token_pass(x2, weight, bias, p)
        lse = _finish_lse(stats, slice(None)) if "lse" not in stats else stats["lse"]
        ce, zl = _per_token_loss(stats, lse, p)
        loss = _reduce(ce, zl, p)
        if precompute and pre is None:
            ce_scale, z_scale = _scalar_scales(p, 1.0, x2.device)
            coef = _Coefficients(ce_scale, z_scale, None, p)
            pre = _run_gradients(x2, weight, bias, p, lse, coef, needs, triton_path)
        ctx.pre = pre
        ctx.save_for_backward(x2, weight, bias, lse)
        return loss.to(torch.float64 if p.acc == torch.float64 else torch.float32)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        x2, weight, bias, lse = ctx.saved_tensors
        p, needs = ctx.p, ctx.needs
        if ctx.pre is not None:
            dx, dw, db = ctx.pre
            ctx.pre = None  # hand the buffers to autograd without a copy
            if not bool(grad_loss == 1):
                dx = None if dx is None else dx * grad_loss.to(dx.dtype)
                dw = None if dw is None else (dw.to(p.acc) * grad_loss).to(dw.dtype)
                db = None if db is None else (db.to(p.acc) * grad_loss).to(db.dtype)
            return dx, dw, db, None, None, None
        g = grad_loss.to(p.acc)
        if p.reduction == "none":
            ce_scale, z_scale = g.reshape(p.n), g.reshape(p.n)
            if p.kind == "index":
                keep = p.valid.to(p.acc)
                ce_scale, z_scale = ce_scale * keep, z_scale * keep
        else:
            ce_scale, z_scale = _scalar_scales(p, g, x2.device)
        coef = _Coefficients(ce_scale, z_scale, None, p)
        dx, dw, db = _run_gradients(x2, weight, bias, p, lse, coef, needs, ctx.triton_path)
        return dx, dw, db, None, None, None


def _run_gradients(x2, weight, bias, p, lse, coef, needs, triton_path):
    if triton_path:
        from softmaxkit.torch import _triton_linear_ce as tl_impl

        return tl_impl.gradients(x2, weight, bias, p, lse, coef, needs)
    return _gradients(x2, weight, bias, p, lse, coef, needs)


class _LinearLogSumExp(Function):
    @staticmethod
    def forward(ctx, x2, weight, bias, p: _Problem, triton_path):
        ctx.p, ctx.triton_path = p, triton_path
        if triton_path:
            from softmaxkit.torch import _triton_linear_ce as tl_impl

            lse = tl_impl.stats_pass(x2, weight, bias, p)["lse"]
        else:
            stats, _, _, _ = _token_pass(x2, weight, bias, p)
            lse = _finish_lse(stats, slice(None))
        ctx.save_for_backward(x2, weight, bias, lse)
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse):
        x2, weight, bias, lse = ctx.saved_tensors
        p = ctx.p
        zeros = torch.zeros(p.n, dtype=p.acc, device=x2.device)
        coef = _Coefficients(zeros, zeros, grad_lse.to(p.acc).reshape(p.n), p)
        needs = tuple(ctx.needs_input_grad[:3])
        dx, dw, db = _run_gradients(x2, weight, bias, p, lse, coef, needs, ctx.triton_path)
        return dx, dw, db, None, None


# --------------------------------------------------------------------------------------------
# Public functions and the module shell.
# --------------------------------------------------------------------------------------------


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
) -> torch.Tensor:
    """Cross-entropy of the logits ``input @ weight.T + bias`` without materialising them.

    Equal to ``torch.nn.functional.cross_entropy(softcap(input @ weight.T + bias), target, ...)``
    plus ``z_loss`` times the mean squared log-sum-exp, for every shared option, with the math
    of the module docstring. Only chunks bounded by ``max_memory`` are ever allocated.

    Parameters
    ----------
    input : torch.Tensor, shape (..., d)
        Hidden states, float32, float64, bfloat16 or float16.
    weight : torch.Tensor, shape (V, d)
        Output projection (one row per class), same dtype and device as ``input``.
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
        PyTorch's ``weight=`` of ``cross_entropy`` (renamed: ``weight`` is the projection here).
    z_loss : float >= 0, default 0.0
        Coefficient of :math:`\\operatorname{lse}^2` per kept token.
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

    Returns
    -------
    torch.Tensor
        The loss in float32 (float64 for float64 input): a scalar, or of shape ``(...)`` for
        ``reduction="none"``. Gradients for ``input`` and ``weight`` come back in their dtype.

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
    backend = check_backend(backend)
    x2, p, batch = _prepare(
        input,
        weight,
        bias,
        target,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        class_weight=class_weight,
        z_loss=z_loss,
        softcap=softcap,
        max_memory=max_memory,
    )
    grad = torch.is_grad_enabled()
    needs = (
        grad and input.requires_grad,
        grad and weight.requires_grad,
        grad and bias is not None and bias.requires_grad,
    )
    loss = _LinearCrossEntropy.apply(x2, weight, bias, p, needs, _use_triton(input, backend, p))
    return loss.reshape(batch) if p.reduction == "none" else loss


def linear_logsumexp(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    softcap: float | None = None,
    max_memory: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Per-row :math:`\\operatorname{lse}_i = \\log \\sum_j e^{z_{ij}}` of the logits ``input @ weight.T + bias``.

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
    backend = check_backend(backend)
    dummy = (
        torch.zeros(input.shape[:-1], dtype=torch.int64, device=input.device)
        if isinstance(input, torch.Tensor) and input.ndim >= 1
        else None
    )
    x2, p, batch = _prepare(
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
    p = dataclasses.replace(p, kind="lse", target=None, valid=None, tw=None, sm=None, alpha=None)
    lse = _LinearLogSumExp.apply(x2, weight, bias, p, _use_triton(input, backend, p))
    return lse.reshape(batch)


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
