"""What the partial_fit stream tests share: shuffled passes of mini-batch calls, fit's objective at a model, the
relative gap between two models, and the tight reference fit."""

import numpy as np

from softmaxkit.linear_model import SoftmaxRegression
from softmaxkit.linear_model._loss import loss

CLASSES = np.arange(3)


def passes(model, X, y, n_passes, *, classes=CLASSES, batch=64, seed=0, sample_weight=None):
    """``model`` after ``n_passes`` shuffled passes over ``X, y``, one ``partial_fit`` call per ``batch`` rows."""
    rng = np.random.default_rng(seed)
    for _ in range(n_passes):
        order = rng.permutation(X.shape[0])
        for start in range(0, X.shape[0], batch):
            rows = order[start : start + batch]
            weights = None if sample_weight is None else sample_weight[rows]
            model.partial_fit(X[rows], y[rows], classes=classes, sample_weight=weights)
    return model


def objective(model, X, y, sample_weight=None, *, fit_intercept=True, **options):
    """fit's objective of ``X, y`` at ``model``'s coefficients, in float64."""
    theta = np.hstack([model.coef_, model.intercept_[:, None]]) if fit_intercept else model.coef_
    return loss(theta.astype(np.float64), X, y, sample_weight, fit_intercept=fit_intercept, **options)


def relative_gap(stream, fitted, X, y, sample_weight=None, **options):
    """The relative gap of ``stream``'s objective to ``fitted``'s, on fit's objective of ``X, y``."""
    best = objective(fitted, X, y, sample_weight, **options)
    return (objective(stream, X, y, sample_weight, **options) - best) / best


def reference(**options):
    """The tight full-batch fit the streams are compared with."""
    return SoftmaxRegression(solver="newton-cg", tol=1e-13, max_iter=500, **options)


def traced_growth(model, X, y, *, start: int, batch: int) -> tuple[int, int]:
    """``(peak, held)``: the traced memory's peak growth over ``partial_fit`` calls of ``batch`` rows from ``start``
    on while the stream still remembers its samples (before it turns to averaged SGD), and its growth at the end."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        peak = 0
        for first in range(start, X.shape[0], batch):
            model.partial_fit(X[first : first + batch], y[first : first + batch])
            if model._stream_state.fallback is None:
                peak = max(peak, tracemalloc.get_traced_memory()[1] - before)
        return peak, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
