"""The vocabulary-parallel linear cross-entropy: each rank's shard through the PyTorch engine, one exchange of statistics.

The public function and its semantics are :func:`softmaxkit.torch.vocab_parallel_linear_cross_entropy`;
this module computes them with the pieces of the single-process op, unchanged:

1. The layout (one ``all_gather`` of two float64 numbers per rank: the shard's row count and its
   summed class weight) gives every rank the offsets of the contiguous, rank-ordered shards,
   :math:`V` and the total class weight.
2. Each rank builds the :class:`~softmaxkit.torch._linear_ce._plan.Problem` of its shard (its
   rows of ``weight``, its target indices shifted to local columns, ``-1`` where the target lives
   on another rank) and runs the PyTorch engine's statistics pass over its columns only: per token
   its block's maximum ``m_r``, ``S'_r``, the target logit (0 off the shard) and ``D_r``.
3. One ``all_gather`` of those per-token statistics (``k <= 6`` float64 numbers per token and
   rank) lets every rank combine them in rank order, the same bits on every rank:
   ``m = max_r m_r``; with the owner ``o`` (the first rank holding ``m``),
   ``S' = S'_o + sum_{r != o} (1 + S'_r) e^{m_r - m}``; ``z_t = sum_r z_{t,r}``;
   ``D = sum_r D_r + A_r (m - m_r)`` (``A_r`` the shard's coefficient mass). Every term is
   non-negative, so the combined statistics keep the single-process accuracy; an all-gather rather
   than all-reduces (max, then sums) because it is one collective, deterministic, and it carries
   the owner's top column, which the exact gradient at the top needs.
4. The loss is the single-process reduction of these global statistics and coefficients.
5. Backward runs the engine's gradient pass over the shard with the global statistics (the logits
   of the shard recomputed: the statistics had to be global first) and all-reduces the input
   gradient (one ``all_reduce`` of N x d in the accumulation dtype); the weight and bias gradients
   are the shard's own.

Collectives per training step: two in forward (the first tiny), one in backward. Every rank
holds its shard, its gradients, O(N) statistics times the world size, and the engine's chunks of
at most ``max_memory`` bytes: never N x V, never the whole weight.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.distributed as dist

from softmaxkit.torch._checks import check_class_indices
from softmaxkit.torch._linear_ce import _torch_engine
from softmaxkit.torch._linear_ce._autograd import Options, refuse_double_backward
from softmaxkit.torch._linear_ce._plan import LogitStats, Problem, RowScales, RowStats, make_problem, target_mass
from softmaxkit.torch._linear_ce._reduction import Denominators, loss_dtype, per_token_loss, reduce_loss, scalar_scales

__all__ = ["Layout", "VocabParallelLinearCrossEntropy", "shard_layout"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where this rank's rows sit in the vocabulary, and the vocabulary's totals."""

    rank: int
    sizes: tuple[int, ...]  # rows per rank, in rank order
    class_weight_sums: tuple[float, ...]  # summed class weight per rank (the row count without class weights)

    @property
    def offsets(self) -> tuple[int, ...]:
        out, at = [], 0
        for size in self.sizes:
            out.append(at)
            at += size
        return tuple(out)

    @property
    def start(self) -> int:
        return self.offsets[self.rank]

    @property
    def vocab(self) -> int:
        return sum(self.sizes)

    @property
    def total_weight(self) -> float:
        return math.fsum(self.class_weight_sums)  # the same float on every rank


def shard_layout(weight: torch.Tensor, class_weight: torch.Tensor | None, group) -> Layout:
    """The collective of step 1: every rank's row count and summed class weight (float64)."""
    v = weight.shape[0]
    w = float(class_weight.detach().double().sum()) if class_weight is not None else float(v)
    mine = torch.tensor([float(v), w], dtype=torch.float64, device=weight.device)
    world = dist.get_world_size(group)
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine, group=group)
    pairs = torch.stack(gathered).cpu().tolist()
    return Layout(dist.get_rank(group), tuple(int(s) for s, _ in pairs), tuple(c for _, c in pairs))


def _local_problem(x, weight, bias, target, class_weight, o: Options, layout: Layout):
    """``(x2, problem of the shard, on)``: the shard's problem with local targets (``-1`` off the shard)
    and the whole vocabulary's ``V`` in its formulas; ``on`` marks the tokens whose target is here."""
    v_here = weight.shape[0]
    probabilities = target.is_floating_point()
    if probabilities:
        local_target, on = target, None
    else:
        t = target.to(device=x.device, dtype=torch.int64)
        valid = check_class_indices(t, layout.vocab, o.ignore_index)
        shifted = t - layout.start
        on = valid & (shifted >= 0) & (shifted < v_here)
        local_target = torch.where(on, shifted, -1)
    x2, p, _ = make_problem(
        x,
        weight,
        bias,
        local_target,
        ignore_index=-1 if not probabilities else o.ignore_index,
        reduction=o.reduction,
        label_smoothing=o.label_smoothing,
        class_weight=class_weight,
        z_loss=o.z_loss,
        softcap=o.softcap,
        max_memory=o.max_memory,
    )
    p = dataclasses.replace(p, vocab_total=layout.vocab, total_weight=layout.total_weight)
    if not probabilities:
        on = on.reshape(p.n)
        p = dataclasses.replace(p, target=torch.where(on, local_target.reshape(p.n), -1), valid=valid.reshape(p.n))
    return x2, p, on


def _gather_stats(stats: LogitStats, p: Problem, on, layout: Layout, group) -> torch.Tensor:
    """The collective of step 3: ``(world, N, k)`` float64 per-token statistics of every shard."""
    arg = torch.where(stats.row.arg >= 0, stats.row.arg + layout.start, -1)
    columns = [stats.row.m, stats.row.rest, arg, stats.zt, stats.zs]
    if p.kind == "prob":
        # A_r: the shard's coefficient mass, (1 - eps) sum_c w_c t_c + eps / V sum_c w_c.
        mass = target_mass(p.target, p.class_weight, p.acc, p.max_memory)
        eps = p.label_smoothing
        columns.append((1.0 - eps) * mass + eps / p.vocab * layout.class_weight_sums[layout.rank])
    elif p.class_weight is not None:  # w_y of the tokens whose target is here
        columns.append(torch.where(on, p.class_weight[p.target.clamp(min=0)], 0.0))
    mine = torch.stack([c.to(torch.float64) for c in columns], dim=1)
    gathered = [torch.empty_like(mine) for _ in range(len(layout.sizes))]
    dist.all_gather(gathered, mine, group=group)
    return torch.stack(gathered)


def _combine(g: torch.Tensor, p: Problem, layout: Layout):
    """Step 3's combination, in rank order (identical on every rank): ``(LogitStats, owner, coefficients)``."""
    m_all, rest_all, arg_all, zt_all, zs_all = g[..., 0], g[..., 1], g[..., 2], g[..., 3], g[..., 4]
    m = m_all.amax(0)
    owner = m_all.argmax(0)
    is_owner = torch.arange(g.shape[0], device=g.device)[:, None] == owner[None, :]
    scale = torch.exp(m_all - m)
    rest = torch.where(is_owner, rest_all, (1.0 + rest_all) * scale).sum(0)
    arg = arg_all.gather(0, owner[None, :])[0].to(torch.int64)
    zt = zt_all.sum(0)
    if p.kind == "prob":
        mass = g[..., 5]
    elif p.label_smoothing > 0.0:
        mass = torch.tensor(layout.class_weight_sums, dtype=torch.float64, device=g.device)[:, None].expand_as(m_all)
    else:
        mass = None
    gap = (m - m_all) if mass is None else torch.where(mass == 0, 0.0, mass * (m - m_all))
    zs = (zs_all + gap).sum(0) if mass is not None else zs_all.sum(0)
    acc = p.acc
    stats = LogitStats(RowStats(m.to(acc), arg, rest.to(acc)), zt.to(acc), zs.to(acc))
    extra = None
    if p.kind == "prob":
        extra = (mass.sum(0).to(acc), torch.where(is_owner, 0.0, mass).sum(0).to(acc))
    elif p.class_weight is not None:
        extra = g[..., 5].sum(0).to(acc)  # w_y of every token (0 where ignored)
    return stats, owner, extra


def _global_problem(p: Problem, extra) -> Problem:
    """The shard's problem with the whole vocabulary's per-token coefficients (those of :func:`make_problem`)."""
    if p.kind == "prob":
        total_coef, rest_extra = extra
        return dataclasses.replace(p, total_coef=total_coef, rest_coef_extra=rest_extra)
    valid = p.valid
    target_weight = extra if extra is not None else valid.to(p.acc)
    eps = p.label_smoothing
    target_coef = (1.0 - eps) * target_weight
    smooth_coef = (eps / p.vocab) * valid.to(p.acc)
    return dataclasses.replace(
        p,
        target_coef=target_coef,
        smooth_coef=smooth_coef,
        total_coef=target_coef + smooth_coef * p.total_weight,
        ce_denominator=float(target_weight.sum()),
        n_kept=int(valid.sum()),
    )


def forward(input, weight, bias, target, class_weight, o: Options, dens: Denominators, group):
    """``(loss, saved)``: the loss (the same on every rank) and what backward needs."""
    layout = shard_layout(weight, class_weight, group)
    x2, p, on = _local_problem(input, weight, bias, target, class_weight, o, layout)
    local, _ = _torch_engine.forward(x2, weight, bias, p, None, (False, False, False))
    stats, owner, extra = _combine(_gather_stats(local, p, on, layout, group), p, layout)
    p = _global_problem(p, extra)
    ce, zl = per_token_loss(stats, p)
    loss = reduce_loss(ce, zl, p, dens).to(loss_dtype(input.dtype))
    if p.reduction == "none":
        loss = loss.reshape(input.shape[:-1])
    here = owner == layout.rank
    arg_here = torch.where(here & (stats.row.arg >= 0), stats.row.arg - layout.start, -1)
    return loss, (x2, p, RowStats(stats.row.m, arg_here, stats.row.rest))


def backward(input, weight, bias, saved, dens: Denominators, grad_loss, needs, group):
    """``(dx, dw, db)``: the whole input gradient (all-reduced) and this shard's weight and bias gradients."""
    x2, p, row = saved
    g = grad_loss.to(p.acc)
    if p.reduction == "none":
        ce_scale = z_scale = g.reshape(p.n)
        if p.kind == "index":
            keep = p.valid.to(p.acc)
            ce_scale, z_scale = ce_scale * keep, z_scale * keep
    else:
        ce_scale, z_scale = scalar_scales(p, g, x2.device, dens)
    scales = RowScales(ce_scale, z_scale, None, p)
    dx, dw, db = _torch_engine.gradients(x2, weight, bias, p, row, scales, needs)
    if needs[0]:
        total = dx.to(p.acc)  # summed across ranks in the accumulation dtype, rounded once
        dist.all_reduce(total, group=group)
        dx = total.to(input.dtype).reshape(input.shape)
    return dx, dw, db


class VocabParallelLinearCrossEntropy(torch.autograd.Function):
    """``apply(input, weight, bias, target, class_weight, options, denominator, z_loss_denominator, group) -> loss``.

    Eager only (its collectives and data-dependent chunk loops are not traceable): the public
    function runs it under :func:`torch.compiler.disable`.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, target, class_weight, options: Options, den, z_den, group):
        dens = Denominators(den, z_den)
        loss, saved = forward(input, weight, bias, target, class_weight, options, dens, group)
        ctx.saved, ctx.dens, ctx.group = saved, dens, group
        ctx.save_for_backward(input, weight, bias)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        refuse_double_backward("vocab_parallel_linear_cross_entropy")
        input, weight, bias = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        with torch.no_grad():
            dx, dw, db = backward(input, weight, bias, ctx.saved, ctx.dens, grad_loss, needs, ctx.group)
        return dx, dw, db, None, None, None, None, None, None
