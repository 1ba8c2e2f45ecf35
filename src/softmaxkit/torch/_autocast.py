"""``torch.autocast`` as PyTorch's own ops honour it: the dtype an op computes in under autocast.

Autocast casts the inputs of some ops to float32 (on every device the losses ``cross_entropy`` and
``nll_loss``; on CUDA also ``softmax``, ``log_softmax`` and ``logsumexp``, which keep their dtype
on the CPU). Our ops compute low-precision input in float32 anyway (see :mod:`._stable`); what
autocast changes is the dtype they return, and so the precision of a loss: a bfloat16 loss is
off by up to 4e-3 relative, the float32 one by 1e-7.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_LOW = (torch.float16, torch.bfloat16)


def autocast_enabled(x: torch.Tensor) -> bool:
    device = x.device.type
    return torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)


def as_autocast_loss(x: torch.Tensor) -> torch.Tensor:
    """A loss's logits: float32 under autocast when they are float16 / bfloat16 (``torch.nn.functional``'s losses do so)."""
    return x.float() if x.dtype in _LOW and autocast_enabled(x) else x


def as_autocast_op(x: torch.Tensor, torch_op: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``x`` in the dtype ``torch_op`` (PyTorch's own op) would return for it under autocast, found on an empty tensor."""
    if x.dtype in _LOW and autocast_enabled(x):
        return x.to(torch_op(x.new_empty((0,))).dtype)
    return x
