r"""Vocabulary-parallel linear cross-entropy: the output projection sharded by rows over a process group.

For heads too large for one device (tensor parallelism): rank :math:`r` of ``group`` holds the rows
:math:`[o_r, o_r + V_r)` of the projection (and of the bias and class weights), with
:math:`o_r = \sum_{q < r} V_q`: contiguous ranges in rank order, as Megatron-LM's vocab-parallel
cross-entropy lays them out, here of any sizes (uneven shards; each at least one row). Every rank
passes the same hidden states and the same (global) class-index targets; a target outside the
rank's range contributes its logit from the rank that holds it. The loss is exactly
:func:`~softmaxkit.torch.linear_cross_entropy`'s on the whole vocabulary (see there for the math),
the same value on every rank.

The gradients are those of that loss: each rank receives the gradient of its own weight and bias
shard, and the *whole* gradient of ``input`` (already all-reduced over the group: do not reduce it
again). No rank ever holds N x V numbers or the whole weight; the collectives, their count and
their sizes are in :mod:`softmaxkit.torch._linear_ce._vocab_parallel`.

Why a function of its own, not an argument of :func:`~softmaxkit.torch.linear_cross_entropy`: its
arguments mean other things (``weight``, ``bias``, ``class_weight`` and probability targets are
the rank's shards, of ``V_r`` columns; the class indices are global), it speaks to the other ranks
(every rank must call it, in the same order, with the same tokens), and it runs eagerly, while
the single-process op stays free of collectives and traceable by ``torch.compile``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from softmaxkit._validation import _describe, check_label_smoothing, check_reduction
from softmaxkit.torch._checks import (
    check_finite_real,
    check_ignore_index64,
    check_linear_class_weight,
    check_linear_target,
)
from softmaxkit.torch._linear_ce._autograd import Options
from softmaxkit.torch._linear_ce._plan import check_max_memory_option
from softmaxkit.torch._linear_ce._vocab_parallel import VocabParallelLinearCrossEntropy
from softmaxkit.torch._linear_cross_entropy import amp_operands, resolve_denominators

__all__ = ["vocab_parallel_linear_cross_entropy"]


@torch.compiler.disable
def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    group: dist.ProcessGroup | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    class_weight: torch.Tensor | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    max_memory: int | None = None,
    denominator: float | torch.Tensor | None = None,
    z_loss_denominator: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r""":func:`~softmaxkit.torch.linear_cross_entropy` with ``weight`` sharded by vocabulary rows over ``group``.

    Every rank of ``group`` calls it with its shard; see the module docstring for the layout and
    the options' meaning per rank. Works with any backend (gloo on CPU tensors, NCCL on CUDA);
    computed by the PyTorch engine, eagerly (``torch.compile`` runs it outside the graph).

    Parameters
    ----------
    input : torch.Tensor, shape (..., d)
        The hidden states, the same on every rank.
    weight : torch.Tensor, shape (V_r, d)
        This rank's rows of the projection.
    target : torch.Tensor
        Global class indices of shape ``(...)``, the same on every rank; or this rank's columns of
        class probabilities, shape ``(..., V_r)``.
    bias : torch.Tensor, shape (V_r,), optional
        This rank's entries of the bias.
    group : torch.distributed.ProcessGroup, optional
        The ranks that share the vocabulary; default: the whole world.
    ignore_index, reduction, label_smoothing, z_loss, softcap, max_memory, denominator, z_loss_denominator
        As in :func:`~softmaxkit.torch.linear_cross_entropy` (over the whole vocabulary).
    class_weight : torch.Tensor, shape (V_r,), optional
        This rank's entries of the class weights.

    Returns
    -------
    torch.Tensor
        The loss of the whole vocabulary, as :func:`~softmaxkit.torch.linear_cross_entropy`'s.

    Examples
    --------
    Within one process (a group of one rank) it is :func:`~softmaxkit.torch.linear_cross_entropy`:

    >>> import tempfile, torch, torch.distributed as dist
    >>> from softmaxkit.torch import linear_cross_entropy, vocab_parallel_linear_cross_entropy
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=0, world_size=1)
    ...     x, w = torch.randn(5, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    ...     t = torch.tensor([0, 6, -100, 2, 2])
    ...     same = torch.allclose(vocab_parallel_linear_cross_entropy(x, w, t), linear_cross_entropy(x, w, t))
    ...     dist.destroy_process_group()
    >>> same
    True
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "vocab_parallel_linear_cross_entropy needs an initialised process group "
            "(torch.distributed.init_process_group, or torchrun), got none"
        )
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise ValueError(f"group must be None or a torch.distributed.ProcessGroup, got {_describe(group)}")
    input, weight, bias = amp_operands(input, weight, bias)
    options = Options(
        check_ignore_index64(ignore_index),
        check_reduction(reduction),
        check_label_smoothing(label_smoothing),
        check_finite_real(z_loss, "z_loss", low=0.0),
        check_finite_real(softcap, "softcap", low=0.0, allow_none=True),
        check_max_memory_option(max_memory),
        "torch",
    )
    probabilities = check_linear_target(target, tuple(input.shape[:-1]), weight.shape[0])
    check_linear_class_weight(class_weight, weight.shape[0])
    den, z_den = resolve_denominators(
        denominator, z_loss_denominator, options, weighted=class_weight is not None and not probabilities
    )
    return VocabParallelLinearCrossEntropy.apply(input, weight, bias, target, class_weight, options, den, z_den, group)
