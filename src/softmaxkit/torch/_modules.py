"""``nn.Module`` shells: each ``forward`` is one call into :mod:`softmaxkit.torch._ops`.

The math, the shapes and the non-finite policy are documented once, on the functions.
"""

from __future__ import annotations

import torch
from torch import nn

from softmaxkit.torch import _ops

__all__ = ["CrossEntropyLoss", "LogSoftmax", "NLLLoss", "Softmax"]


class Softmax(nn.Module):
    """:func:`softmaxkit.torch.softmax` along ``dim`` as a module.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import Softmax
    >>> Softmax(dim=0)(torch.tensor([0.0, 0.0]))
    tensor([0.5000, 0.5000])
    """

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _ops.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(nn.Module):
    """:func:`softmaxkit.torch.log_softmax` along ``dim`` as a module."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _ops.log_softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class _WeightedLoss(nn.Module):
    """Stores the options; ``weight`` is a buffer, so ``.to(device)`` moves it with the module."""

    def __init__(self, *, weight: torch.Tensor | None, ignore_index: int, reduction: str) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction


class CrossEntropyLoss(_WeightedLoss):
    """:func:`softmaxkit.torch.cross_entropy` with fixed options, as a module.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import CrossEntropyLoss
    >>> loss = CrossEntropyLoss(label_smoothing=0.1)
    >>> round(loss(torch.tensor([[2.0, 1.0, 0.1]]), torch.tensor([0])).item(), 4)
    0.5137
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _ops.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class NLLLoss(_WeightedLoss):
    """:func:`softmaxkit.torch.nll_loss` with fixed options, as a module."""

    def __init__(
        self, weight: torch.Tensor | None = None, *, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _ops.nll_loss(
            input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
