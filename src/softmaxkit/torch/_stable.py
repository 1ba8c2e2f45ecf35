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
