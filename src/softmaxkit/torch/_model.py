"""The lesson's PyTorch model: softmax regression as one linear layer that returns logits."""

from __future__ import annotations

import numbers

import torch
from torch import nn

from softmaxkit.torch import _ops
from softmaxkit.torch._checks import check_tensor

__all__ = ["SoftmaxRegressionModule"]


def _check_size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class SoftmaxRegressionModule(nn.Module):
    r"""Softmax regression: a linear layer whose forward returns the logits.

    .. math:: z = x W^\top + b, \qquad P(y = k \mid x) = \operatorname{softmax}(z)_k

    Train ``forward``'s logits with :func:`softmaxkit.torch.cross_entropy` (or
    :class:`~softmaxkit.torch.CrossEntropyLoss`); :meth:`predict_proba` and :meth:`predict` are the
    inference methods and run without recording gradients.

    Parameters
    ----------
    n_features : int
        Length of one sample.
    n_classes : int
        Number of classes.
    bias : bool, default True
        Learn an intercept :math:`b`.
    device, dtype : optional
        Where and in what precision the parameters live (as for ``torch.nn.Linear``).

    Attributes
    ----------
    linear : torch.nn.Linear
        ``linear.weight`` is :math:`W`, of shape ``(n_classes, n_features)``; ``linear.bias`` is :math:`b`.

    Examples
    --------
    >>> import torch
    >>> from softmaxkit.torch import SoftmaxRegressionModule, cross_entropy
    >>> _ = torch.manual_seed(0)
    >>> model = SoftmaxRegressionModule(3, 3)
    >>> x, y = torch.tensor([[2.0, 1.0, 0.1]]), torch.tensor([0])
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> for epoch in range(100):
    ...     optimizer.zero_grad()
    ...     loss = cross_entropy(model(x), y)
    ...     loss.backward()
    ...     optimizer.step()
    >>> model.predict(x)
    tensor([0])
    >>> bool(model.predict_proba(x)[0, 0] > 0.9)
    True
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        *,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.n_features = _check_size(n_features, "n_features")
        self.n_classes = _check_size(n_classes, "n_classes")
        self.linear = nn.Linear(self.n_features, self.n_classes, bias=bias, device=device, dtype=dtype)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        x = check_tensor(x, "x")
        if x.ndim == 0 or x.shape[-1] != self.n_features:
            raise ValueError(
                f"x must have n_features={self.n_features} entries in its last dimension, got shape {tuple(x.shape)}"
            )
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``x @ W.T + b``, of shape ``x.shape[:-1] + (n_classes,)``."""
        return self.linear(self._check_input(x))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``softmax(forward(x))`` over the last dimension."""
        return _ops.softmax(self.forward(x), -1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class (the first one on ties), as int64 indices of shape ``x.shape[:-1]``."""
        return self.forward(x).argmax(dim=-1)

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, n_classes={self.n_classes}"
