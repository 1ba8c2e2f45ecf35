"""The backends of :class:`~softmaxkit.linear_model.SoftmaxRegression`: the one place that dispatches on ``backend``.

:func:`make_objective` builds the solvers' :class:`~._solvers.Objective` (callables on flat float64
NumPy vectors) for the objective of :mod:`._loss`, computed with NumPy (:func:`numpy_objective`,
here) or with torch on a device (:func:`._torch_backend.torch_objective`, imported only when asked
for, so that importing softmaxkit never imports torch). :func:`check_device` and
:func:`default_dtype` are the other two backend-dependent rules. A new backend adds a branch to each
of the three and an objective with the same contract.
"""

from __future__ import annotations

import numpy as np

from softmaxkit.linear_model import _loss
from softmaxkit.linear_model._solvers import Objective

__all__ = [
    "BACKENDS",
    "check_device",
    "check_dtype",
    "default_dtype",
    "make_objective",
    "numpy_objective",
]

BACKENDS = ("numpy", "torch")


def check_dtype(dtype) -> np.dtype:
    """``dtype`` as a NumPy dtype, which must be float32 or float64 (the precisions every backend computes in)."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved not in (np.dtype(np.float32), np.dtype(np.float64)):  # dtype('f8') == None
        raise ValueError(f"dtype must be numpy.float64 or numpy.float32, got {dtype!r}")
    return resolved


def check_device(backend: str, device) -> None:
    """The ``device`` rule of each backend: a name or None for "torch" (resolved at fit), None for "numpy"."""
    if backend == "torch":
        if not (device is None or isinstance(device, str)):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or None with backend='torch', got {device!r}"
            )
    elif device is not None:
        raise ValueError(f"device must be None with backend='{backend}', got {device!r}")


def default_dtype(backend: str, device) -> np.dtype:
    """The precision a fit computes in when ``dtype`` is None: float32 on a GPU (torch), float64 elsewhere."""
    if backend == "torch":
        from softmaxkit.torch._device import default_dtype as device_default_dtype

        return device_default_dtype(device)
    return np.dtype(np.float64)


def numpy_objective(X, target, sample_weight, alpha, *, n_classes, fit_intercept, label_smoothing, dtype) -> Objective:
    """The solvers' callables for the objective of :mod:`._loss`, computed with NumPy in ``dtype``.

    ``X`` is dense or sparse (CSR) in ``dtype``; the :class:`~._loss.LinearLoss` is built once, so
    the solver loop validates nothing.
    """
    options = {"n_classes": n_classes, "fit_intercept": fit_intercept, "label_smoothing": label_smoothing}
    problem = _loss.LinearLoss(X, target, sample_weight, alpha, **options)

    def loss_gradient(x):
        f, g = problem.loss_gradient(x)
        return f, g.ravel()

    def loss_gradient_hessp(x):
        f, g, H = problem.loss_gradient_hessp(x)
        return f, g.ravel(), H

    mean_weight = None if sample_weight is None else float(np.mean(sample_weight, dtype=np.float64))

    def batch_loss_gradient(x, indices):
        theta = np.asarray(x, dtype=dtype).reshape(problem.shape)

        def subset_loss_gradient(rows, weights):
            subset = _loss.LinearLoss(problem.X[rows], target[rows], weights, alpha, **options)
            f, g = subset.loss_gradient(theta)
            return f, g.ravel()

        return _loss.batch_loss_gradient(
            subset_loss_gradient, theta, indices, sample_weight, mean_weight, alpha=alpha, n_features=X.shape[1]
        )

    return Objective(loss_gradient, loss_gradient_hessp, batch_loss_gradient)


def make_objective(backend, device, X, target, sample_weight, alpha, **options) -> Objective:
    """The solvers' callables for ``backend``; ``options`` are :func:`numpy_objective`'s keyword arguments."""
    check_device(backend, device)
    options["dtype"] = check_dtype(options["dtype"])
    if backend == "numpy":
        return numpy_objective(X, target, sample_weight, alpha, **options)
    if backend == "torch":  # imported here, so that importing softmaxkit never imports torch
        from softmaxkit.linear_model._torch_backend import torch_objective

        return torch_objective(X, target, sample_weight, alpha, device=device, **options)
    raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
