"""The autograd layer of the fused linear cross-entropy: the engine chosen once, the loss from its statistics.

:func:`select_engine` picks the PyTorch or the Triton engine for a call; the two ``Function`` classes
below only ever call ``engine.forward``, ``engine.gradients`` and ``engine.logsumexp``, and
turn the per-token statistics into the reduced loss, which is the same for both engines.

For ``reduction="mean"`` and ``"sum"`` the gradients are computed during the forward pass (when
autograd will need them) and scaled by the incoming gradient in backward; for ``"none"`` they are
recomputed in backward from the saved per-token log-sum-exp. The result is deterministic: the
same inputs, shapes and ``max_memory`` give the same bits run to run.
"""

from __future__ import annotations

import math
from types import ModuleType

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from softmaxkit.torch._linear_ce import _torch_engine
from softmaxkit.torch._linear_ce._plan import LogitStats, Problem, RowScales, RowStats


def select_engine(x: torch.Tensor, backend: str, p: Problem) -> ModuleType:
    """The engine module for ``backend``; "auto" is Triton for the CUDA tensors it covers, when installed."""
    if backend == "torch":
        return _torch_engine
    if backend == "auto":
        covered = x.is_cuda and p.kind != "prob" and x.dtype != torch.float64
        if not (covered and _triton_available()):
            return _torch_engine
    elif not _triton_available():
        raise ValueError("backend='triton' needs the triton package: pip install 'softmaxkit[triton]'")
    from softmaxkit.torch._linear_ce import _triton_engine

    if backend == "triton":
        _triton_engine.check_supported(x, p.kind)
    return _triton_engine


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _per_token_loss(stats: LogitStats, p: Problem) -> tuple[torch.Tensor, torch.Tensor]:
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


def _reduce(ce: torch.Tensor, zl: torch.Tensor, p: Problem) -> torch.Tensor:
    if p.reduction == "none":
        return ce + zl if p.z_loss else ce
    if p.reduction == "sum":
        return ce.sum() + zl.sum() if p.z_loss else ce.sum()
    loss = ce.sum() / p.ce_denominator if p.ce_denominator else ce.sum() * math.nan
    if p.z_loss:
        loss = loss + (zl.sum() / p.n_kept if p.n_kept else zl.sum() * math.nan)
    return loss


def _scalar_scales(p: Problem, g: torch.Tensor | float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token scales of the cross-entropy and z-loss parts for a scalar reduction.

    ``"mean"`` over a zero total weight divides by 0: the scale is ``NaN`` there, and the
    coefficients times it (:func:`~softmaxkit.torch._linear_ce._plan.scaled_coefs`) are 0 where the
    coefficients are, so every token of zero weight has a zero gradient (the policy of
    :func:`softmaxkit.torch.cross_entropy`, whose loss is ``NaN`` too).
    """
    if p.reduction == "sum":
        ce, z = 1.0, 1.0
    else:
        ce = 1.0 / p.ce_denominator if p.ce_denominator else math.nan
        z = 1.0 / p.n_kept if p.n_kept else 0.0
    keep = p.valid.to(p.acc) if p.kind == "index" else torch.ones(p.n, dtype=p.acc, device=device)
    return torch.where(keep == 0, 0.0, keep * (ce * g)), keep * (z * g)


class LinearCrossEntropy(Function):
    @staticmethod
    def forward(ctx, x2, weight, bias, p: Problem, needs, engine):
        ctx.p, ctx.needs, ctx.engine = p, needs, engine
        scales = None
        if p.reduction != "none" and any(needs):  # precompute the gradients at an upstream gradient of 1
            ce_scale, z_scale = _scalar_scales(p, 1.0, x2.device)
            scales = RowScales(ce_scale, z_scale, None, p)
        stats, ctx.pre = engine.forward(x2, weight, bias, p, scales, needs)
        ce, zl = _per_token_loss(stats, p)
        loss = _reduce(ce, zl, p)
        row = stats.row
        ctx.save_for_backward(x2, weight, bias, row.m, row.arg, row.rest)
        return loss.to(torch.float64 if p.acc == torch.float64 else torch.float32)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        x2, weight, bias, m, arg, rest = ctx.saved_tensors
        row = RowStats(m, arg, rest)
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
        scales = RowScales(ce_scale, z_scale, None, p)
        dx, dw, db = ctx.engine.gradients(x2, weight, bias, p, row, scales, needs)
        return dx, dw, db, None, None, None


class LinearLogSumExp(Function):
    @staticmethod
    def forward(ctx, x2, weight, bias, p: Problem, engine):
        ctx.p, ctx.engine = p, engine
        row = engine.logsumexp(x2, weight, bias, p)
        ctx.save_for_backward(x2, weight, bias, row.m, row.arg, row.rest)
        return row.lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse):
        x2, weight, bias, m, arg, rest = ctx.saved_tensors
        row = RowStats(m, arg, rest)
        p = ctx.p
        zeros = torch.zeros(p.n, dtype=p.acc, device=x2.device)
        scales = RowScales(zeros, zeros, grad_lse.to(p.acc).reshape(p.n), p)
        needs = tuple(ctx.needs_input_grad[:3])
        dx, dw, db = ctx.engine.gradients(x2, weight, bias, p, row, scales, needs)
        return dx, dw, db, None, None
