r"""The numerics of :mod:`softmaxkit.torch`'s ops, once: one stable-softmax helper and the non-finite policy.

The forms
---------
Every op works from three per-row quantities, never from ``exp(x - lse)`` or ``1 - p``:

* ``arg``, the position of the row maximum :math:`m = x_{arg}`;
* ``shifted`` :math:`= x - m` (one rounding per entry, whatever the magnitude of ``x``);
* ``rest`` :math:`= S' = \sum_{j \ne arg} e^{x_j - m}`, the sum of the exponentials without the
  top one (which is exactly 1), so that :math:`\sum_j e^{x_j - m} = 1 + S'` is never rounded.

Then :math:`\log p_j = (x_j - m) - \operatorname{log1p}(S')`, :math:`\operatorname{lse} = m +
\operatorname{log1p}(S')`, :math:`p_j = e^{x_j - m} / (1 + S')` and, at the top,
:math:`1 - p_{arg} = S' / (1 + S')`: each keeps full relative accuracy at any confidence (a
row whose top probability rounds to 1 still has an exact :math:`\log p_{top}`, loss and
gradient) and at any magnitude (``1e300`` logits give the same probabilities as ``0``). The
sums over classes are PyTorch's cascade (pairwise) sums in the compute dtype, float32 for float16
and bfloat16: exact to a few ulp at any C (PyTorch's fused ``log_softmax`` kernel sums
sequentially: 1e-4 relative error at C = 100,000 in float32).

The non-finite policy
---------------------
The package's (see :func:`softmaxkit.softmax`), applied by :func:`shift_logits`:

* a ``NaN`` anywhere in a row makes that row's outputs ``NaN``;
* a ``-inf`` logit has probability exactly 0 and a finite gradient;
* a row of only ``-inf`` (fully masked) has softmax 0, log-softmax ``-inf``, log-sum-exp ``-inf``
  and a zero gradient;
* ``+inf`` logits take the limit: the row's mass is shared equally by its ``+inf`` entries;
* a coefficient that is exactly 0 times a ``-inf`` log-probability contributes 0 (the ``0 log 0 = 0``
  convention, :func:`times` and :func:`row_dot`), so a zero class weight, a zero target
  probability or an ignored sample never turns a loss into ``NaN``.

PyTorch's own functions return ``NaN`` in all of these cases.

Traced and transformed calls
----------------------------
Some steps have a fast path that is taken after reading a value (``bool(mask.any())``: no
non-finite maximum, no ``NaN`` in a sum). Under ``torch.compile`` / ``torch.export`` and inside
``torch.func`` transforms a value cannot be read without a graph break (or at all, under
``vmap``), so there :func:`concrete` is false and :func:`may_hold` answers "yes": the general,
branch-free path runs, which gives the same values.

The fused kernels (below) are such a fast path: they fix up a data-dependent subset of rows, which
cannot be traced, so they run only in eager calls outside autograd recording (:func:`_fused`);
traced and transformed calls take the exact forms on every row.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

INF = float("inf")
_HALF = (torch.float16, torch.bfloat16)


class SoftmaxParts(NamedTuple):
    """What every softmax-like quantity of a row is built from (reduced dimension kept, size one)."""

    shifted: torch.Tensor  # x - m under the policy (0 / -inf in a row whose maximum is +inf)
    arg: torch.Tensor  # int64 position of the row maximum
    top: torch.Tensor  # the row maximum m itself (+inf, -inf or NaN in the policy's rows)
    rest: torch.Tensor  # S' = sum over j != arg of exp(shifted_j)


def concrete() -> bool:
    """Whether tensor values may be read here: not while tracing (compile, export) nor inside a ``torch.func`` transform."""
    return not torch.compiler.is_compiling() and torch._C._functorch.maybe_current_level() is None


def may_hold(mask: torch.Tensor) -> bool:
    """``bool(mask.any())`` where values can be read (:func:`concrete`); ``True`` (take the general path) elsewhere."""
    return not concrete() or bool(mask.any())


def max_index(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The position of each row's maximum along ``dim`` (kept), a NaN's where the row has one."""
    return x.detach().max(dim=dim, keepdim=True)[1]


def shift_logits(x: torch.Tensor, dim: int, arg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x - m, m)`` with ``m = x[arg]`` and the non-finite policy (see :func:`shift_by`).

    ``m`` is gathered from ``x`` (not detached): under ``create_graph=True`` the derivatives of
    ``x - m`` and of :func:`rest_sum` are those of the softmax, exactly.
    """
    m = x.gather(dim, arg)
    return shift_by(x, m), m


def shift_by(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x - m`` for the row maxima ``m`` (broadcast), under the non-finite policy.

    A row whose maximum is not finite is shifted by 0, and a row whose maximum is ``+inf``
    becomes 0 at its ``+inf`` entries and ``-inf`` elsewhere (its limit); ``NaN`` rows stay ``NaN``.
    """
    finite = torch.isfinite(m)
    if not may_hold(~finite):
        return x - m
    shifted = x - torch.where(finite, m, 0.0)
    top_rows = m == INF
    if may_hold(top_rows):
        shifted = torch.where(top_rows, torch.where(x == INF, 0.0, -INF), shifted)
    nan_rows = m.isnan()  # the maximum of a row with a NaN is NaN: NaN throughout, S' included
    if may_hold(nan_rows):
        shifted = torch.where(nan_rows, torch.nan, shifted)
    return shifted


def rest_sum(e: torch.Tensor, arg: torch.Tensor, dim: int) -> torch.Tensor:
    """``S' = sum_{j != arg} e_j`` along ``dim`` (kept), for ``e = exp(shifted)``, a temporary of the caller's.

    Outside autograd the top entry is zeroed in place for the sum and put back (no copy of
    ``e``); when the sum is being recorded (double backward), traced or under ``vmap`` (which has
    no batching rule for the in-place scatter) it is :func:`sum_except`.
    """
    if (torch.is_grad_enabled() and e.requires_grad) or not concrete():  # recorded, traced or batched
        return sum_except(e, arg, dim)
    top = e.gather(dim, arg)
    rest = e.scatter_(dim, arg, 0.0).sum(dim=dim, keepdim=True)
    e.scatter_(dim, arg, top)
    return rest


def sum_except(t: torch.Tensor, arg: torch.Tensor, dim: int) -> torch.Tensor:
    """``sum_{j != arg} t_j`` along ``dim`` (kept), out of place: the sum without the top entry, never ``sum - t_top``."""
    return t.scatter(dim, arg, 0.0).sum(dim=dim, keepdim=True)


def softmax_parts(x: torch.Tensor, dim: int) -> SoftmaxParts:
    """The one stable-softmax helper: :class:`SoftmaxParts` of ``x`` along ``dim``.

    Costs a max, a subtraction, an exp and a sum over ``x``; the exponentials are a temporary.
    """
    arg = max_index(x, dim)
    shifted, top = shift_logits(x, dim, arg)
    return SoftmaxParts(shifted, arg, top, rest_sum(shifted.exp(), arg, dim))


def normaliser(top: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """``sum_j exp(shifted_j) = 1 + S'``, or 1 for an all ``-inf`` row (``top = -inf``), whose exponentials are all 0."""
    return torch.where(top == -INF, 1.0, 1 + rest)


def top_complement(rest: torch.Tensor) -> torch.Tensor:
    """``1 - p_top = S' / (1 + S')``, exact at any confidence (0 for an all ``-inf`` row)."""
    return rest / (1 + rest)


def flat_dims(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``x`` with ``dims`` moved to the end and merged into one (for reductions over several axes)."""
    moved = x.movedim(dims, tuple(range(x.ndim - len(dims), x.ndim)))
    kept = moved.shape[: x.ndim - len(dims)]
    return moved.reshape(kept + (math.prod(moved.shape[x.ndim - len(dims) :]),))  # not -1: kept may hold a 0


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


def times(coef: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``coef * value`` with ``0 * inf = 0``."""
    return torch.where(coef == 0, 0.0, coef * value)


def row_dot(coef: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``sum_c coef_c value_c`` along the class axis 1 with ``0 * inf = 0``; the exact fix runs only where NaN appears."""
    out = (coef * value).sum(dim=1)
    if may_hold(out.isnan()):
        out = times(coef, value).sum(dim=1)
    return out


# --------------------------------------------------------------------------------------------
# The fast path: PyTorch's fused kernels for the bulk, the exact forms above on the rows that need them.
# --------------------------------------------------------------------------------------------

# Up to this many classes the fused kernels' sums (vector lanes, sequential within a lane) are accurate
# enough. Measured (float32, N(0, s^2) logits for s in 0.1, 1, 3, 10, 256 rows; float64 alike in its
# own eps) against extended precision, the relative error of torch.softmax's row sum is at most
# 3.4 eps at C = 1024, 12 at 8192, 14 at 16384, 19 at 32768 and 46 at 40000, 65 at 100,000; a
# non-confident row's log p_top (|log p_top| >= 0.5) inherits twice it: 26 ulp at 8192, within the
# bound of 32. Beyond it every row takes the exact forms (cascade sums).
FUSED_MAX_CLASSES = 8192
# Rows whose top log-probability is above this (p_top > 0.61) are confident: the fused kernels lose
# relative accuracy there (log p_top, 1 - p_top), so they are recomputed with the exact forms.
CONFIDENT_LOG_P = -0.5
CONFIDENT_P = math.exp(CONFIDENT_LOG_P)


def _fused(x: torch.Tensor, dim: int) -> bool:
    """Whether to take the fused kernels: up to :data:`FUSED_MAX_CLASSES`, not recorded, and eager (:func:`concrete`)."""
    return x.shape[dim] <= FUSED_MAX_CLASSES and not torch.is_grad_enabled() and concrete()


def _hard(top_log_p: torch.Tensor) -> torch.Tensor | None:
    """The rows (a mask, reduced dimension kept) that the fused kernels may get wrong, or None: confident,
    fully masked and non-finite rows (the fused kernels give NaN for the policy's rows)."""
    hard = ~((top_log_p <= CONFIDENT_LOG_P) & (top_log_p > -INF))
    return hard if bool(hard.any()) else None


def _rows(t: torch.Tensor, dim: int, hard: torch.Tensor) -> torch.Tensor:
    """The (k, C) rows of ``t`` along ``dim`` where ``hard`` (reduced dimension kept) holds."""
    return t.movedim(dim, -1)[hard.squeeze(dim)]


def _put_rows(t: torch.Tensor, dim: int, hard: torch.Tensor, value: torch.Tensor) -> None:
    t.movedim(dim, -1)[hard.squeeze(dim)] = value


def exact_log_softmax(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_softmax, arg, rest)`` by the exact forms: ``(x - m) - log1p(S')``."""
    parts = softmax_parts(x, dim)
    l1 = parts.rest.log1p()
    out = parts.shifted - l1 if torch.is_grad_enabled() else parts.shifted.sub_(l1)
    return out, parts.arg, parts.rest


def log_softmax_parts(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_softmax, arg, rest)`` of ``x`` along ``dim``, as :func:`exact_log_softmax` computes them.

    Outside autograd and up to :data:`FUSED_MAX_CLASSES`: ``torch.log_softmax`` for every row, then
    the exact forms on the rows :func:`_hard` selects (none for ordinary data); elsewhere
    ``S' = 1 / p_top - 1 = expm1(-log p_top)``, accurate where ``log p_top <= -0.5``.
    """
    if not _fused(x, dim):
        return exact_log_softmax(x, dim)
    out = torch.log_softmax(x, dim)
    top, arg = out.max(dim=dim, keepdim=True)
    rest = top.neg().expm1_()
    hard = _hard(top)
    if hard is not None:
        sub_out, sub_arg, sub_rest = exact_log_softmax(_rows(x, dim, hard), -1)
        _put_rows(out, dim, hard, sub_out)
        arg[hard], rest[hard] = sub_arg.squeeze(-1), sub_rest.squeeze(-1)
    return out, arg, rest


def exact_softmax(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax, arg)`` by the exact forms: ``exp(x - m) / (1 + S')``."""
    arg = max_index(x, dim)
    shifted, top = shift_logits(x, dim, arg)
    e = shifted.exp() if torch.is_grad_enabled() else shifted.exp_()
    return e / normaliser(top, rest_sum(e, arg, dim)), arg


def softmax_and_arg(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax, arg)`` of ``x`` along ``dim``: ``torch.softmax`` (exact to its sum, confident rows included:
    ``e_j / (1 + S')`` has no cancellation) up to :data:`FUSED_MAX_CLASSES` outside autograd, the exact
    forms for the policy's rows (where it gives NaN) and elsewhere."""
    if not _fused(x, dim):
        return exact_softmax(x, dim)
    p = torch.softmax(x, dim)
    top, arg = p.max(dim=dim, keepdim=True)
    hard = top.isnan()
    if bool(hard.any()):
        sub_p, sub_arg = exact_softmax(_rows(x, dim, hard), -1)
        _put_rows(p, dim, hard, sub_p)
        arg[hard] = sub_arg.squeeze(-1)
    return p, arg


def softmax_vjp(p: torch.Tensor, arg: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
    """``p_i (g_i - <g, p>)`` written with ``g - g_top``, so that the top entry is ``p_top sum_j (g_top - g_j) p_j``
    (no cancellation however confident the row); fused (``torch._softmax_backward_data``) when not recorded."""
    diff = g - g.gather(dim, arg)
    if _fused(p, dim):
        return torch._softmax_backward_data(diff, p, dim, p.dtype)
    return p * (diff - (diff * p).sum(dim=dim, keepdim=True))


def exact_log_softmax_vjp(
    lp: torch.Tensor, arg: torch.Tensor, rest: torch.Tensor, g: torch.Tensor, dim: int, complement_from_p: bool
) -> torch.Tensor:
    """``g - p sum_j g_j`` with the top entry ``g_top (1 - p_top) - p_top sum_{j != top} g_j``."""
    recorded = torch.is_grad_enabled()
    p = lp.exp()
    g_top = g.gather(dim, arg)
    g_rest = sum_except(g, arg, dim)
    grad_in = g - p * (g_top + g_rest)
    # 1 - p_top = S' / (1 + S') (when recording, the sum of the other probabilities: the same value,
    # and it depends on x).
    lp_top = lp.gather(dim, arg)
    complement = sum_except(p, arg, dim) if complement_from_p else top_complement(rest)
    at_top = g_top * complement - lp_top.exp() * g_rest
    grad_in = grad_in.scatter(dim, arg, at_top) if recorded else grad_in.scatter_(dim, arg, at_top)
    # An all -inf row has no probability mass to move: its gradient is zero.
    dead = lp_top == -INF
    if may_hold(dead):
        grad_in = torch.where(dead, 0.0, grad_in)
    return grad_in


def log_softmax_vjp(
    lp: torch.Tensor, arg: torch.Tensor, rest: torch.Tensor, g: torch.Tensor, dim: int, complement_from_p: bool
) -> torch.Tensor:
    """The log-softmax VJP (see :func:`exact_log_softmax_vjp`): fused ``torch._log_softmax_backward_data``
    when not recorded (up to :data:`FUSED_MAX_CLASSES`), the exact forms on the confident and masked rows."""
    if not _fused(lp, dim):
        return exact_log_softmax_vjp(lp, arg, rest, g, dim, complement_from_p)
    grad_in = torch._log_softmax_backward_data(g, lp, dim, lp.dtype)
    hard = _hard(lp.gather(dim, arg))
    if hard is not None:
        sub = exact_log_softmax_vjp(
            _rows(lp, dim, hard), arg[hard].unsqueeze(-1), rest[hard].unsqueeze(-1), _rows(g, dim, hard), -1, False
        )
        _put_rows(grad_in, dim, hard, sub)
    return grad_in


def logsumexp_parts(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, S')`` along ``dim`` (kept): ``m = amax``, ``S = sum exp(x - m)`` (a cascade sum, accurate at any C)
    and ``S' = S - 1`` where the row is not confident (``S >= e^0.5``: no cancellation); the exact
    forms on the other rows, when recorded and in traced or transformed calls."""
    if torch.is_grad_enabled() or not concrete():
        parts = softmax_parts(x, dim)
        return parts.top, parts.rest
    top = x.amax(dim=dim, keepdim=True)
    total = (x - top).exp_().sum(dim=dim, keepdim=True)
    rest = total - 1
    hard = ~((total >= 1 / CONFIDENT_P) & torch.isfinite(top))
    if bool(hard.any()):
        parts = softmax_parts(_rows(x, dim, hard), -1)
        top[hard], rest[hard] = parts.top.squeeze(-1), parts.rest.squeeze(-1)
    return top, rest


def log_softmax_terms(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a, b, arg, rest)`` with ``log p = a - b`` (``b`` per row, kept; ``a <= 0 <= b``), for the losses.

    The exact forms give ``a = x - m`` and ``b = log1p(S')``; the fused path (see :func:`log_softmax_parts`)
    ``a = log p`` and ``b = 0``. Either way ``-log p = b + (-a)`` is a sum of two non-negative terms.
    """
    if _fused(x, dim):
        out, arg, rest = log_softmax_parts(x, dim)
        return out, torch.zeros_like(rest), arg, rest
    parts = softmax_parts(x, dim)
    return parts.shifted, parts.rest.log1p(), parts.arg, parts.rest
