"""The numerics of :mod:`softmaxkit.torch`'s ops, once: one stable-softmax helper and the non-finite policy.

Every op computes with :func:`log_softmax_and_lse` (or, in a backward pass that saved only the
log-sum-exp, with :func:`softmax_from_lse`), so the policy lives here. It is the package's
(see :func:`softmaxkit.softmax`):

* a ``NaN`` anywhere in a row makes that row's outputs ``NaN``;
* a ``-inf`` logit has probability exactly 0 and a finite gradient;
* a row of only ``-inf`` (fully masked) has softmax 0, log-softmax ``-inf``, log-sum-exp ``-inf``
  and a zero gradient;
* ``+inf`` logits take the limit: the row's mass is shared equally by its ``+inf`` entries;
* a coefficient that is exactly 0 times a ``-inf`` log-probability contributes 0 (the ``0 log 0 = 0``
  convention, :func:`times` and :func:`row_dot`), so a zero class weight, a zero target
  probability or an ignored sample never turns a loss into ``NaN``.

PyTorch's own functions return ``NaN`` in all of these cases.
"""

from __future__ import annotations

import torch

INF = float("inf")
_HALF = (torch.float16, torch.bfloat16)


def log_softmax_and_lse(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(log_softmax, lse)`` of ``x`` along ``dim``; ``lse`` keeps the reduced dimension.

    The one stable-softmax helper of :mod:`softmaxkit.torch`. With ``m`` the row maximum: rows with a finite
    ``m`` (the common case, ``-inf`` entries included) use PyTorch's fused ``log_softmax``, and
    ``lse = x[argmax] - log_softmax[argmax]`` (exactly ``m + log sum exp(x - m)``); otherwise a
    row whose maximum is ``+inf`` is replaced by its limit, 0 at its ``+inf`` entries and ``-inf``
    elsewhere, an all ``-inf`` row keeps ``-inf`` with ``lse = -inf``, and ``NaN`` propagates.
    The policy costs one O(N) test: the full-size fixes run only when a row needs them.
    """
    m, arg = x.detach().max(dim=dim, keepdim=True)
    finite = torch.isfinite(m)
    if bool(finite.all()):
        log_p = torch.log_softmax(x, dim)
        return log_p, x.gather(dim, arg) - log_p.gather(dim, arg)
    shifted = x - torch.where(finite, m, 0.0)
    top_rows = m == INF
    if bool(top_rows.any()):
        shifted = torch.where(top_rows, torch.where(x == INF, 0.0, -INF), shifted)
    s = shifted.exp().sum(dim=dim, keepdim=True)
    log_norm = torch.where(s == 0, 0.0, s.log())
    return shifted - log_norm, torch.where(finite, m + log_norm, m)


def flat_dims(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``x`` with ``dims`` moved to the end and merged into one (for reductions over several axes)."""
    moved = x.movedim(dims, tuple(range(x.ndim - len(dims), x.ndim)))
    return moved.reshape(moved.shape[: x.ndim - len(dims)] + (-1,))


def softmax_from_lse(x: torch.Tensor, lse: torch.Tensor, dim) -> torch.Tensor:
    """``exp(x - lse)`` under the same policy: what a backward pass that saved only ``lse`` needs."""
    p = torch.sub(x, lse).exp_()
    if bool(torch.isinf(lse).any()):
        top = x == INF
        share = top.to(x.dtype) / top.sum(dim=dim, keepdim=True).to(x.dtype)
        p = torch.where(lse == INF, share, p)
        p = torch.where(lse == -INF, 0.0, p)
    return p


def log_softmax_from_lse(x: torch.Tensor, lse: torch.Tensor, dim) -> torch.Tensor:
    """``x - lse`` under the same policy (``-inf`` for all ``-inf`` rows, ``log(1/k)`` or ``-inf`` for ``+inf`` rows)."""
    out = x - lse
    if bool(torch.isinf(lse).any()):
        out = torch.where(torch.isinf(lse), softmax_from_lse(x, lse, dim).log(), out)
    return out


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


def times(coef: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``coef * value`` with ``0 * inf = 0``."""
    return torch.where(coef == 0, 0.0, coef * value)


def row_dot(coef: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``sum_c coef_c value_c`` along the class axis 1 with ``0 * inf = 0``; the exact fix runs only where NaN appears."""
    out = (coef * value).sum(dim=1)
    if bool(out.isnan().any()):
        out = times(coef, value).sum(dim=1)
    return out
