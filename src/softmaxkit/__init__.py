"""softmaxkit: softmax, cross-entropy and softmax regression, exact, fast and at any scale.

The NumPy functions live at the package root; :mod:`softmaxkit.torch` (with the ``torch`` extra)
has the same functions on tensors. Importing :mod:`softmaxkit` never imports PyTorch or matplotlib.
"""

from softmaxkit._gradcheck import GradcheckResult, gradcheck
from softmaxkit._model_io import ModelFileError
from softmaxkit._numpy._cross_entropy import (
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_with_grad,
    nll_loss,
    nll_loss_backward,
)
from softmaxkit._numpy._softmax import (
    log_softmax,
    log_softmax_backward,
    logsumexp,
    softmax,
    softmax_backward,
)
from softmaxkit._version import __version__

__all__ = [
    "GradcheckResult",
    "ModelFileError",
    "SoftmaxRegression",
    "__version__",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_with_grad",
    "gradcheck",
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "nll_loss",
    "nll_loss_backward",
    "read_model_metadata",
    "softmax",
    "softmax_backward",
]


def __getattr__(name: str):
    # The estimator pulls in scikit-learn (seconds to import); load it on first use only.
    if name in ("SoftmaxRegression", "read_model_metadata"):
        from softmaxkit import linear_model

        return getattr(linear_model, name)
    raise AttributeError(f"module 'softmaxkit' has no attribute {name!r}")
