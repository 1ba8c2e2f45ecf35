"""The autograd layer of the fused linear cross-entropy: the engine chosen once, the loss from its statistics.

:func:`select_engine` picks the PyTorch or the Triton engine for a call; the implementations below
only ever call ``engine.forward``, ``engine.gradients`` and ``engine.logsumexp``, and turn the
per-token statistics into the reduced loss, which is the same for both engines.

For ``reduction="mean"`` and ``"sum"`` the gradients are computed during the forward pass (when
autograd will need them) and scaled by the incoming gradient in backward; for ``"none"`` they are
recomputed in backward from the saved per-token statistics. The result is deterministic: the
same inputs, shapes and ``max_memory`` give the same bits run to run.

Why in the forward pass: it saves the second sweep over the vocabulary (the logits recomputed).
Measured with ``benchmarks/bench_linear_ce.py --modes`` (N, d, V = 2048, 512, 16384 on two shared
cores, CPU seconds): a training step costs 0.90 s (float32) and 0.96 s (bfloat16) so, against
1.21 s and 1.12 s when backward recomputes the logits. The price is paid by a forward under grad
mode that is never backpropagated: 0.86 s and 0.97 s where the no-grad forward costs 0.37 s and
0.32 s. Evaluation belongs under ``torch.no_grad()`` or ``torch.inference_mode()``.

How PyTorch sees it
-------------------
:class:`LinearCrossEntropy` and :class:`LinearLogSumExp` are new-style ``autograd.Function``\\ s
(``setup_context``), so ``torch.func.grad`` composes with them. Their work (chunk loops whose
sizes depend on the data, value checks, engines that cannot be traced) runs in plain Python in
eager calls, and behind registered custom ops (``torch.ops.softmaxkit.*``, with fake
implementations that give only shapes and dtypes) while ``torch.compile`` or ``torch.export``
traces a call, so the graph holds one opaque node per pass and no break. Traced, the gradients are
computed in the forward pass as in eager calls, and saved for backward.

Double backward is not supported: a backward recorded for differentiation (``create_graph=True``,
or a second ``torch.func`` gradient transform) raises at once, instead of returning a gradient
that autograd would treat as a constant.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import NamedTuple

import torch
from torch.autograd import Function

from softmaxkit.torch._function import signature_once
from softmaxkit.torch._linear_ce import _torch_engine
from softmaxkit.torch._linear_ce._plan import Problem, RowScales, RowStats, make_lse_problem, make_problem
from softmaxkit.torch._linear_ce._reduction import (
    LOCAL,
    Denominators,
    loss_dtype,
    per_token_loss,
    reduce_loss,
    scalar_scales,
)


class Options(NamedTuple):
    """The non-tensor options of a linear cross-entropy, checked by the caller."""

    ignore_index: int
    reduction: str
    label_smoothing: float
    z_loss: float
    softcap: float | None
    max_memory: int | None
    backend: str
    temperature: float = 1.0
    entropy: bool = False


def select_engine(x: torch.Tensor, backend: str, p: Problem) -> ModuleType:
    """The engine module for ``backend``; "auto" is Triton for the CUDA tensors it covers, when installed."""
    if backend == "torch":
        return _torch_engine
    torch_only = p.temperature != 1.0 or p.entropy  # the Triton kernels know neither
    if backend == "auto":
        covered = x.is_cuda and p.kind != "prob" and x.dtype != torch.float64 and not torch_only
        if not (covered and _triton_available()):
            return _torch_engine
    elif torch_only:
        raise ValueError(
            "backend='triton' does not support a temperature or the entropy; use backend='torch' or 'auto'"
        )
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


def _nothing(t: torch.Tensor) -> torch.Tensor:
    """What stands for a gradient not computed (custom ops return no ``None``)."""
    return t.new_empty(0)


def _problem(input, weight, bias, target, class_weight, o: Options) -> tuple[torch.Tensor, Problem]:
    x2, p, _ = make_problem(
        input,
        weight,
        bias,
        target,
        ignore_index=o.ignore_index,
        reduction=o.reduction,
        label_smoothing=o.label_smoothing,
        class_weight=class_weight,
        z_loss=o.z_loss,
        softcap=o.softcap,
        max_memory=o.max_memory,
        temperature=o.temperature,
        entropy=o.entropy,
    )
    return x2, p


# --------------------------------------------------------------------------------------------
# The implementations: plain Python over real tensors (what the custom ops run, too).
# --------------------------------------------------------------------------------------------


def ce_forward(input, weight, bias, target, class_weight, o: Options, needs, dens: Denominators = LOCAL):
    """``(loss, m, arg, rest, dx, dw, db)``; the gradients (at an upstream gradient of 1) only for a
    scalar reduction and where ``needs`` asks, else empty."""
    x2, p = _problem(input, weight, bias, target, class_weight, o)
    engine = select_engine(input, o.backend, p)
    scales = None
    if p.reduction != "none" and any(needs):  # precompute the gradients at an upstream gradient of 1
        ce_scale, z_scale = scalar_scales(p, 1.0, x2.device, dens)
        scales = RowScales(ce_scale, z_scale, None, p)
    stats, pre = engine.forward(x2, weight, bias, p, scales, needs)
    ce, zl = per_token_loss(stats, p)
    loss = reduce_loss(ce, zl, p, dens).to(loss_dtype(input.dtype))
    if p.reduction == "none":
        loss = loss.reshape(input.shape[:-1])
    dx, dw, db = pre if pre is not None else (None, None, None)
    dx = _nothing(input) if dx is None else dx.reshape(input.shape)
    dw = _nothing(weight) if dw is None else dw
    db = _nothing(weight) if db is None else db
    row = stats.row
    return loss, row.m, row.arg, row.rest, dx, dw, db


def ce_backward(
    input,
    weight,
    bias,
    target,
    class_weight,
    o: Options,
    m,
    arg,
    rest,
    grad_loss,
    needs,
    dens: Denominators = LOCAL,
):
    """``(dx, dw, db)`` for the upstream ``grad_loss`` from the forward's statistics (empty where not needed)."""
    x2, p = _problem(input, weight, bias, target, class_weight, o)
    engine = select_engine(input, o.backend, p)
    g = grad_loss.to(p.acc)
    if p.reduction == "none":
        ce_scale = z_scale = g.reshape(p.n)
        if p.kind == "index":
            keep = p.valid.to(p.acc)
            ce_scale, z_scale = ce_scale * keep, z_scale * keep
    else:
        ce_scale, z_scale = scalar_scales(p, g, x2.device, dens)
    scales = RowScales(ce_scale, z_scale, None, p)
    dx, dw, db = engine.gradients(x2, weight, bias, p, RowStats(m, arg, rest), scales, tuple(needs))
    return _filled(input, weight, dx, dw, db)


def _filled(input, weight, dx, dw, db):
    dx = _nothing(input) if dx is None else dx.reshape(input.shape)
    return dx, (_nothing(weight) if dw is None else dw), (_nothing(weight) if db is None else db)


def lse_forward(input, weight, bias, softcap, max_memory, backend):
    """``(lse, m, arg, rest)``: the per-row log-sum-exp, of shape ``input.shape[:-1]``, and its statistics."""
    x2, p, batch = make_lse_problem(input, weight, bias, softcap=softcap, max_memory=max_memory)
    row = select_engine(input, backend, p).logsumexp(x2, weight, bias, p)
    return row.lse.reshape(batch), row.m, row.arg, row.rest


def lse_backward(input, weight, bias, softcap, max_memory, backend, m, arg, rest, grad_lse, needs):
    x2, p, _ = make_lse_problem(input, weight, bias, softcap=softcap, max_memory=max_memory)
    zeros = torch.zeros(p.n, dtype=p.acc, device=x2.device)
    scales = RowScales(zeros, zeros, grad_lse.to(p.acc).reshape(p.n), p)
    engine = select_engine(input, backend, p)
    return _filled(input, weight, *engine.gradients(x2, weight, bias, p, RowStats(m, arg, rest), scales, tuple(needs)))


# --------------------------------------------------------------------------------------------
# The custom ops: what a traced graph holds (register_fake gives their shapes).
# --------------------------------------------------------------------------------------------


def _stat_shapes(input: torch.Tensor):
    n = math.prod(input.shape[:-1])
    acc = loss_dtype(input.dtype)
    return (
        input.new_empty(n, dtype=acc),
        input.new_empty(n, dtype=torch.int64),
        input.new_empty(n, dtype=acc),
    )


def _grad_shapes(input, weight, bias, needs):
    dx = torch.empty_like(input) if needs[0] else _nothing(input)
    dw = torch.empty_like(weight) if needs[1] else _nothing(weight)
    db = torch.empty_like(bias) if needs[2] and bias is not None else _nothing(weight)
    return dx, dw, db


@torch.library.custom_op("softmaxkit::linear_cross_entropy", mutates_args=())
def _ce_forward_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    max_memory: int | None,
    backend: str,
    temperature: float,
    entropy: bool,
    needs: list[bool],
    denominator: torch.Tensor | None,
    z_loss_denominator: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    o = Options(ignore_index, reduction, label_smoothing, z_loss, softcap, max_memory, backend, temperature, entropy)
    return ce_forward(
        input, weight, bias, target, class_weight, o, needs, Denominators(denominator, z_loss_denominator)
    )


@_ce_forward_op.register_fake
def _(input, weight, bias, target, class_weight, ignore_index, reduction, *options_and_needs):
    needs = options_and_needs[-3] if reduction != "none" else [False] * 3
    loss = input.new_empty(input.shape[:-1] if reduction == "none" else (), dtype=loss_dtype(input.dtype))
    return (loss, *_stat_shapes(input), *_grad_shapes(input, weight, bias, needs))


@torch.library.custom_op("softmaxkit::linear_cross_entropy_backward", mutates_args=())
def _ce_backward_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    max_memory: int | None,
    backend: str,
    temperature: float,
    entropy: bool,
    m: torch.Tensor,
    arg: torch.Tensor,
    rest: torch.Tensor,
    grad_loss: torch.Tensor,
    needs: list[bool],
    denominator: torch.Tensor | None,
    z_loss_denominator: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    o = Options(ignore_index, reduction, label_smoothing, z_loss, softcap, max_memory, backend, temperature, entropy)
    dens = Denominators(denominator, z_loss_denominator)
    return ce_backward(input, weight, bias, target, class_weight, o, m, arg, rest, grad_loss, needs, dens)


@_ce_backward_op.register_fake
def _(input, weight, bias, target, class_weight, *options_stats_grad_and_needs):
    return _grad_shapes(input, weight, bias, options_stats_grad_and_needs[-3])


@torch.library.custom_op("softmaxkit::linear_logsumexp", mutates_args=())
def _lse_forward_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    softcap: float | None,
    max_memory: int | None,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return lse_forward(input, weight, bias, softcap, max_memory, backend)


@_lse_forward_op.register_fake
def _(input, weight, bias, softcap, max_memory, backend):
    return (input.new_empty(input.shape[:-1], dtype=loss_dtype(input.dtype)), *_stat_shapes(input))


@torch.library.custom_op("softmaxkit::linear_logsumexp_backward", mutates_args=())
def _lse_backward_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    softcap: float | None,
    max_memory: int | None,
    backend: str,
    m: torch.Tensor,
    arg: torch.Tensor,
    rest: torch.Tensor,
    grad_lse: torch.Tensor,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return lse_backward(input, weight, bias, softcap, max_memory, backend, m, arg, rest, grad_lse, needs)


@_lse_backward_op.register_fake
def _(input, weight, bias, softcap, max_memory, backend, m, arg, rest, grad_lse, needs):
    return _grad_shapes(input, weight, bias, needs)


# --------------------------------------------------------------------------------------------
# The autograd Functions.
# --------------------------------------------------------------------------------------------


def refuse_double_backward(name: str) -> None:
    """Raise where this backward is itself being differentiated: ``create_graph=True``, or nested ``torch.func`` gradients.

    One ``torch.func.grad`` level runs backward with grad mode on (to allow nesting); that alone is allowed.
    """
    if not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    levels = [i for i in retrieve_all_functorch_interpreters() if i.key() in (TransformType.Grad, TransformType.Jvp)]
    if len(levels) == 1:
        return
    raise RuntimeError(
        f"{name} does not support double backward (create_graph=True or nested torch.func gradients): "
        "its backward pass is not differentiable; compute the gradient penalty on the materialised logits "
        "(torch.nn.functional.cross_entropy(input @ weight.T, target)) instead"
    )


def _none_if_empty(grads, needs):
    return tuple(g if need else None for g, need in zip(grads, needs))


@signature_once
class LinearCrossEntropy(Function):
    """``apply(input, weight, bias, target, class_weight, options, needs, denominator, z_loss_denominator)``
    ``-> (loss, m, arg, rest, dx, dw, db)``.

    Only the loss is differentiable; the rest are the statistics and precomputed gradients for backward.
    The two denominators are 0-d tensors or None (see :class:`Denominators`).
    """

    @staticmethod
    def forward(input, weight, bias, target, class_weight, options: Options, needs, den, z_den):
        if torch.compiler.is_compiling():  # traced: one opaque node
            # An exported program is for inference: no gradients in its forward.
            needs = [False] * 3 if torch.compiler.is_exporting() else list(needs)
            return torch.ops.softmaxkit.linear_cross_entropy(
                input, weight, bias, target, class_weight, *options, needs, den, z_den
            )
        return ce_forward(input, weight, bias, target, class_weight, options, needs, Denominators(den, z_den))

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, target, class_weight, options, needs, den, z_den = inputs
        _, m, arg, rest, dx, dw, db = output
        ctx.mark_non_differentiable(m, arg, rest, dx, dw, db)
        ctx.options = options
        ctx.precomputed = options.reduction != "none" and any(needs) and bool(dx.numel() or dw.numel() or db.numel())
        ctx.traced = torch.compiler.is_compiling()
        # Eager, the precomputed gradients stay out of the saved tensors so that the first backward
        # hands them to autograd without a copy; traced, the graph must see them saved.
        ctx.pre = (dx, dw, db) if ctx.precomputed and not ctx.traced else None
        saved = (dx, dw, db) if ctx.precomputed and ctx.traced else ()
        ctx.save_for_backward(input, weight, bias, target, class_weight, m, arg, rest, den, z_den, *saved)

    @staticmethod
    def backward(ctx, grad_loss, *_):
        refuse_double_backward("linear_cross_entropy")
        input, weight, bias, target, class_weight, m, arg, rest, den, z_den, *saved = ctx.saved_tensors
        dens = Denominators(den, z_den)
        needs = tuple(ctx.needs_input_grad[:3])
        if ctx.precomputed and (saved or ctx.pre is not None):
            dx, dw, db = saved or ctx.pre
            ctx.pre = None  # hand the buffers to autograd without a copy (a second backward recomputes them)
            if ctx.traced or not bool(grad_loss == 1):
                acc = m.dtype
                dx = dx * grad_loss.to(dx.dtype) if needs[0] else dx
                dw = (dw.to(acc) * grad_loss).to(dw.dtype) if needs[1] else dw
                db = (db.to(acc) * grad_loss).to(db.dtype) if needs[2] and bias is not None else db
            return (*_none_if_empty((dx, dw, db), needs), None, None, None, None, None, None)
        with torch.no_grad():
            if torch.compiler.is_compiling():
                grads = torch.ops.softmaxkit.linear_cross_entropy_backward(
                    input, weight, bias, target, class_weight, *ctx.options, m, arg, rest, grad_loss, list(needs), *dens
                )
            else:
                grads = ce_backward(
                    input, weight, bias, target, class_weight, ctx.options, m, arg, rest, grad_loss, needs, dens
                )
        return (*_none_if_empty(grads, needs), None, None, None, None, None, None)


@signature_once
class LinearLogSumExp(Function):
    """``apply(input, weight, bias, softcap, max_memory, backend) -> (lse, m, arg, rest)``; only ``lse`` is differentiable."""

    @staticmethod
    def forward(input, weight, bias, softcap, max_memory, backend):
        if torch.compiler.is_compiling():
            return torch.ops.softmaxkit.linear_logsumexp(input, weight, bias, softcap, max_memory, backend)
        return lse_forward(input, weight, bias, softcap, max_memory, backend)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, softcap, max_memory, backend = inputs
        _, m, arg, rest = output
        ctx.mark_non_differentiable(m, arg, rest)
        ctx.options = (softcap, max_memory, backend)
        ctx.save_for_backward(input, weight, bias, m, arg, rest)

    @staticmethod
    def backward(ctx, grad_lse, *_):
        refuse_double_backward("linear_logsumexp")
        input, weight, bias, m, arg, rest = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        with torch.no_grad():
            if torch.compiler.is_compiling():
                grads = torch.ops.softmaxkit.linear_logsumexp_backward(
                    input, weight, bias, *ctx.options, m, arg, rest, grad_lse, list(needs)
                )
            else:
                grads = lse_backward(input, weight, bias, *ctx.options, m, arg, rest, grad_lse, needs)
        return (*_none_if_empty(grads, needs), None, None, None)


# --------------------------------------------------------------------------------------------
# Per-token statistics: log p(target), entropy, log-sum-exp, in one pass.
# --------------------------------------------------------------------------------------------


def stats_forward(input, weight, bias, target, o: Options):
    """``(logprob, entropy, lse, m, arg, rest)`` per token (the first three of shape ``input.shape[:-1]``)."""
    x2, p = _problem(input, weight, bias, target, None, o)
    stats, _ = select_engine(input, o.backend, p).forward(x2, weight, bias, p, None, (False, False, False))
    ce, _ = per_token_loss(stats, p)
    row = stats.row
    logprob = torch.where(p.valid, -ce, torch.zeros_like(ce))
    entropy = torch.log1p(row.rest) + stats.ent / (1 + row.rest)
    batch = input.shape[:-1]
    return logprob.reshape(batch), entropy.reshape(batch), row.lse.reshape(batch), row.m, row.arg, row.rest


def stats_backward(input, weight, bias, target, o: Options, m, arg, rest, grad_logprob, grad_lse, needs):
    """``(dx, dw, db)`` of ``sum(grad_logprob * logprob + grad_lse * lse)`` (empty where not needed)."""
    x2, p = _problem(input, weight, bias, target, None, o._replace(entropy=False))
    keep = p.valid.to(p.acc)
    ce_scale = torch.where(keep == 0, 0.0, -grad_logprob.to(p.acc).reshape(p.n) * keep)
    scales = RowScales(ce_scale, torch.zeros_like(ce_scale), grad_lse.to(p.acc).reshape(p.n), p)
    engine = select_engine(input, o.backend, p)
    return _filled(input, weight, *engine.gradients(x2, weight, bias, p, RowStats(m, arg, rest), scales, tuple(needs)))


@torch.library.custom_op("softmaxkit::linear_token_stats", mutates_args=())
def _stats_forward_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    ignore_index: int,
    softcap: float | None,
    max_memory: int | None,
    backend: str,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    o = _stats_options(ignore_index, softcap, max_memory, backend, temperature)
    return stats_forward(input, weight, bias, target, o)


@_stats_forward_op.register_fake
def _(input, weight, bias, target, ignore_index, softcap, max_memory, backend, temperature):
    per_token = [input.new_empty(input.shape[:-1], dtype=loss_dtype(input.dtype)) for _ in range(3)]
    return (*per_token, *_stat_shapes(input))


@torch.library.custom_op("softmaxkit::linear_token_stats_backward", mutates_args=())
def _stats_backward_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    ignore_index: int,
    softcap: float | None,
    max_memory: int | None,
    backend: str,
    temperature: float,
    m: torch.Tensor,
    arg: torch.Tensor,
    rest: torch.Tensor,
    grad_logprob: torch.Tensor,
    grad_lse: torch.Tensor,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    o = _stats_options(ignore_index, softcap, max_memory, backend, temperature)
    return stats_backward(input, weight, bias, target, o, m, arg, rest, grad_logprob, grad_lse, needs)


@_stats_backward_op.register_fake
def _(input, weight, bias, target, *options_stats_grads_and_needs):
    return _grad_shapes(input, weight, bias, options_stats_grads_and_needs[-1])


def _stats_options(ignore_index, softcap, max_memory, backend, temperature) -> Options:
    """The :class:`Options` of the per-token statistics: no reduction, smoothing, class weights or z-loss."""
    return Options(ignore_index, "none", 0.0, 0.0, softcap, max_memory, backend, temperature, True)


@signature_once
class LinearTokenStats(Function):
    """``apply(input, weight, bias, target, ignore_index, softcap, max_memory, backend, temperature)``
    ``-> (logprob, entropy, lse, m, arg, rest)``; ``logprob`` and ``lse`` are differentiable."""

    @staticmethod
    def forward(input, weight, bias, target, ignore_index, softcap, max_memory, backend, temperature):
        if torch.compiler.is_compiling():
            return torch.ops.softmaxkit.linear_token_stats(
                input, weight, bias, target, ignore_index, softcap, max_memory, backend, temperature
            )
        o = _stats_options(ignore_index, softcap, max_memory, backend, temperature)
        return stats_forward(input, weight, bias, target, o)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, target, *options = inputs
        _, entropy, _, m, arg, rest = output
        ctx.mark_non_differentiable(entropy, m, arg, rest)
        ctx.options = tuple(options)
        ctx.save_for_backward(input, weight, bias, target, m, arg, rest)

    @staticmethod
    def backward(ctx, grad_logprob, _grad_entropy, grad_lse, *_):
        refuse_double_backward("linear_token_stats")
        input, weight, bias, target, m, arg, rest = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        with torch.no_grad():
            if torch.compiler.is_compiling():
                grads = torch.ops.softmaxkit.linear_token_stats_backward(
                    input, weight, bias, target, *ctx.options, m, arg, rest, grad_logprob, grad_lse, list(needs)
                )
            else:
                o = _stats_options(*ctx.options)
                grads = stats_backward(input, weight, bias, target, o, m, arg, rest, grad_logprob, grad_lse, needs)
        return (*_none_if_empty(grads, needs), None, None, None, None, None, None)
