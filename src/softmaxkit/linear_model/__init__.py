"""Linear models on the softmax cross-entropy: :class:`SoftmaxRegression` and its model files."""

from softmaxkit._model_io import ModelFileError, read_model_metadata
from softmaxkit.linear_model._checkpoint import Checkpoint, CheckpointError
from softmaxkit.linear_model._softmax_regression import SoftmaxRegression

__all__ = ["Checkpoint", "CheckpointError", "ModelFileError", "SoftmaxRegression", "read_model_metadata"]
