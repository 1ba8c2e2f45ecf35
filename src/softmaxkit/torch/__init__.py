"""PyTorch ops and modules with softmaxkit's semantics (needs the ``torch`` extra).

Functions (autograd ops, lean backward passes): :func:`softmax`, :func:`log_softmax`,
:func:`logsumexp`, :func:`cross_entropy`, :func:`nll_loss`. Modules (one-line shells):
:class:`Softmax`, :class:`LogSoftmax`, :class:`CrossEntropyLoss`, :class:`NLLLoss`, and the
lesson's model :class:`SoftmaxRegressionModule`. Fused with the output projection, never
materialising the logits: :func:`linear_cross_entropy` (and :class:`LinearCrossEntropyLoss`),
:func:`linear_logsumexp`, and the per-token :func:`linear_token_stats` (a :class:`TokenStats`).
:func:`vocab_parallel_linear_cross_entropy` is the same loss with the projection sharded by vocabulary
rows over a ``torch.distributed`` process group. :func:`resolve_device` turns "auto" into CUDA, else
MPS, else the CPU.
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("softmaxkit.torch needs PyTorch: pip install 'softmaxkit[torch]'") from error

from softmaxkit.torch._device import resolve_device
from softmaxkit.torch._linear_cross_entropy import LinearCrossEntropyLoss, linear_cross_entropy, linear_logsumexp
from softmaxkit.torch._linear_token_stats import TokenStats, linear_token_stats
from softmaxkit.torch._model import SoftmaxRegressionModule
from softmaxkit.torch._modules import CrossEntropyLoss, LogSoftmax, NLLLoss, Softmax
from softmaxkit.torch._ops import cross_entropy, nll_loss
from softmaxkit.torch._softmax_ops import log_softmax, logsumexp, softmax
from softmaxkit.torch._vocab_parallel import vocab_parallel_linear_cross_entropy

__all__ = [
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "LogSoftmax",
    "NLLLoss",
    "Softmax",
    "SoftmaxRegressionModule",
    "TokenStats",
    "cross_entropy",
    "linear_cross_entropy",
    "linear_logsumexp",
    "linear_token_stats",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "resolve_device",
    "softmax",
    "vocab_parallel_linear_cross_entropy",
]
