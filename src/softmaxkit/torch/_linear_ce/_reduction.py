"""The loss from the engines' per-token statistics: its terms, its reduction, and the per-token scales of its gradient.

Shared by the single-process op (:mod:`~softmaxkit.torch._linear_ce._autograd`) and the
vocabulary-parallel one (:mod:`~softmaxkit.torch._linear_ce._vocab_parallel`), whose statistics are
combined across ranks first. :class:`Denominators` carries what ``reduction="mean"`` divides by
when the caller gives it (global normalisation).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from softmaxkit.torch._linear_ce._plan import LogitStats, Problem

__all__ = ["LOCAL", "Denominators", "loss_dtype", "per_token_loss", "reduce_loss", "scalar_scales"]


def per_token_loss(stats: LogitStats, p: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cross-entropy part, z-loss part)`` per token, zero on ignored tokens.

    With ``m``, ``S'`` and ``D`` of :class:`~softmaxkit.torch._linear_ce._plan.LogitStats`,
    ``lse - z_t = log1p(S') + (m - z_t)`` and ``sum_c a_c (lse - z_c) = A log1p(S') + D``: sums of
    non-negative terms, so a confident token's loss keeps full relative accuracy (``lse - z_t``
    would round to 0) and large logits cost nothing.
    """
    l1 = torch.log1p(stats.row.rest)
    if p.kind == "index":
        ce = p.target_coef * (l1 + (stats.row.m - stats.zt))
        if p.label_smoothing > 0.0:
            ce = ce + p.smooth_coef * (p.total_weight * l1 + stats.zs)
        ce = torch.where(p.valid, ce, torch.zeros_like(ce))
        lse = stats.row.lse
        zl = torch.where(p.valid, p.z_loss * lse * lse, torch.zeros_like(lse))
    else:
        ce = p.total_coef * l1 + stats.zs
        lse = stats.row.lse
        zl = p.z_loss * lse * lse
    return ce, zl


class Denominators(NamedTuple):
    """What ``reduction="mean"`` divides by, when the caller gives it (global normalisation): 0-d tensors or None.

    ``ce`` replaces the cross-entropy part's :math:`W` (the summed class weight of the kept tokens,
    ``N`` for probability targets), ``z`` the z-loss part's count of kept tokens; None keeps the
    local value of the call's own tokens.
    """

    ce: torch.Tensor | None = None
    z: torch.Tensor | None = None

    def resolve(self, p: Problem, device) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """``(ce, z)`` denominators: the given ones in ``p.acc`` on ``device``, else the problem's own."""
        ce = p.ce_denominator if self.ce is None else self.ce.to(device=device, dtype=p.acc)
        z = p.n_kept if self.z is None else self.z.to(device=device, dtype=p.acc)
        return ce, z


#: The default: each call's own denominators.
LOCAL = Denominators()


def _divide(total: torch.Tensor, denominator: torch.Tensor | float) -> torch.Tensor:
    """``total / denominator``; a local zero denominator gives NaN (as PyTorch), a given one is positive."""
    if isinstance(denominator, torch.Tensor):
        return total / denominator
    return total / denominator if denominator else total * math.nan


def _inverse(denominator: torch.Tensor | float, zero: float) -> torch.Tensor | float:
    if isinstance(denominator, torch.Tensor):
        return 1.0 / denominator
    return 1.0 / denominator if denominator else zero


def reduce_loss(ce: torch.Tensor, zl: torch.Tensor, p: Problem, dens: Denominators = LOCAL) -> torch.Tensor:
    if p.reduction == "none":
        return ce + zl if p.z_loss else ce
    if p.reduction == "sum":
        return ce.sum() + zl.sum() if p.z_loss else ce.sum()
    ce_den, z_den = dens.resolve(p, ce.device)
    loss = _divide(ce.sum(), ce_den)
    if p.z_loss:
        loss = loss + _divide(zl.sum(), z_den)
    return loss


def scalar_scales(
    p: Problem, g: torch.Tensor | float, device, dens: Denominators = LOCAL
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token scales of the cross-entropy and z-loss parts for a scalar reduction.

    ``"mean"`` over a zero total weight divides by 0: the scale is ``NaN`` there, and the
    coefficients times it (:func:`~softmaxkit.torch._linear_ce._plan.scaled_coefs`) are 0 where the
    coefficients are, so every token of zero weight has a zero gradient (the policy of
    :func:`softmaxkit.torch.cross_entropy`, whose loss is ``NaN`` too).
    """
    if p.reduction == "sum":
        ce, z = 1.0, 1.0
    else:
        ce_den, z_den = dens.resolve(p, device)
        ce, z = _inverse(ce_den, math.nan), _inverse(z_den, 0.0)
    keep = p.valid.to(p.acc) if p.kind == "index" else torch.ones(p.n, dtype=p.acc, device=device)
    return torch.where(keep == 0, 0.0, keep * (ce * g)), keep * (z * g)


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32
