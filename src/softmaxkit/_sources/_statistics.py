r"""Statistics gathered in one streaming pass: the set of labels and the features' mean and variance.

The moments use the pairwise update of Chan, Golub and LeVeque (1979) in float64: each batch's
weighted mean :math:`\bar x_B` and sum of squared deviations :math:`M_B` are computed about the
batch's own mean, then merged with the running ones,

.. math::

    W = W_A + W_B, \quad \delta = \bar x_B - \bar x_A, \quad
    \bar x = \bar x_A + \delta \, W_B / W, \quad
    M = M_A + M_B + \delta^2 \, W_A W_B / W,

and the variance is :math:`M / W` (the population variance, as :class:`sklearn.preprocessing.StandardScaler`).
Sparse batches are never densified: the implicit zeros of a column add :math:`(W_B - W_{nz}) \bar x_B^2`
to :math:`M_B`. (Whether to centre sparse data is the caller's choice: standardising sparse
features divides by the scale only, so that zeros stay zeros.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class RunningMoments:
    """Per-feature weighted mean and variance of rows seen so far (see the module docstring).

    Attributes
    ----------
    n_features : int
    weight_sum_ : float
        The total weight seen (the number of rows without weights).
    n_rows_ : int
        The number of rows seen.
    mean_ : ndarray of shape (n_features,), float64
    var_ : ndarray of shape (n_features,), float64
        The population variance ``M / W``.

    Examples
    --------
    >>> X = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 60.0]])
    >>> moments = RunningMoments(2).update(X[:1]).update(X[1:])
    >>> bool(np.allclose(moments.mean_, X.mean(axis=0)) and np.allclose(moments.var_, X.var(axis=0)))
    True
    """

    def __init__(self, n_features: int):
        self.n_features = int(n_features)
        self.weight_sum_ = 0.0
        self.n_rows_ = 0
        self.mean_ = np.zeros(self.n_features)
        self._m2 = np.zeros(self.n_features)

    @property
    def var_(self) -> np.ndarray:
        if self.weight_sum_ == 0:
            return np.full(self.n_features, np.nan)
        return self._m2 / self.weight_sum_

    def update(self, X, sample_weight=None) -> RunningMoments:
        """Add the rows of ``X`` (dense or sparse), weighted by ``sample_weight`` (default 1 each)."""
        n = X.shape[0]
        if X.shape[1] != self.n_features:
            raise ValueError(f"X must have {self.n_features} columns, got {X.shape[1]}")
        if n == 0:
            return self
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        total = float(n) if w is None else float(w.sum())
        if total == 0:
            self.n_rows_ += n
            return self
        if hasattr(X, "indptr"):
            mean, m2 = _sparse_moments(X, w, total)
        else:
            X = np.asarray(X, dtype=np.float64)
            mean = (X.sum(axis=0) if w is None else w @ X) / total
            deviation = X - mean
            m2 = np.einsum("ij,ij->j", deviation, deviation) if w is None else w @ (deviation * deviation)
        self._merge(total, mean, m2)
        self.n_rows_ += n
        return self

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Add the rows another accumulator has seen (the same update, for results of parallel passes)."""
        if other.n_features != self.n_features:
            raise ValueError(f"other must have {self.n_features} features, got {other.n_features}")
        if other.weight_sum_:
            self._merge(other.weight_sum_, other.mean_, other._m2)
        self.n_rows_ += other.n_rows_
        return self

    def _merge(self, total: float, mean: np.ndarray, m2: np.ndarray) -> None:
        before = self.weight_sum_
        combined = before + total
        delta = mean - self.mean_
        self.mean_ = self.mean_ + delta * (total / combined)
        self._m2 = self._m2 + m2 + delta * delta * (before * total / combined)
        self.weight_sum_ = combined


def _sparse_moments(X, w: np.ndarray | None, total: float) -> tuple[np.ndarray, np.ndarray]:
    """A CSR batch's weighted column means and sums of squared deviations, implicit zeros included."""
    X = X.tocsr()
    d = X.shape[1]
    data = X.data.astype(np.float64)
    row_weight = None if w is None else np.repeat(w, np.diff(X.indptr))
    mean = np.bincount(X.indices, weights=data if row_weight is None else data * row_weight, minlength=d) / total
    deviation = data - mean[X.indices]
    squared = deviation * deviation if row_weight is None else deviation * deviation * row_weight
    nonzero_weight = np.bincount(X.indices, weights=row_weight, minlength=d).astype(np.float64)
    m2 = np.bincount(X.indices, weights=squared, minlength=d) + (total - nonzero_weight) * mean * mean
    return mean, m2


class LabelCounts:
    """The sorted set of labels seen so far and each one's row count.

    >>> counts = LabelCounts().update(np.array([2, 0, 2])).update(np.array([1, 2]))
    >>> counts.classes_.tolist(), counts.counts_.tolist()
    ([0, 1, 2], [1, 1, 3])
    """

    def __init__(self):
        self.classes_: np.ndarray | None = None
        self.counts_: np.ndarray | None = None

    def update(self, y: np.ndarray) -> LabelCounts:
        found, counts = np.unique(y, return_counts=True)
        if self.classes_ is None:
            self.classes_, self.counts_ = found, counts.astype(np.int64)
            return self
        merged = np.union1d(self.classes_, found)
        total = np.zeros(merged.shape[0], dtype=np.int64)
        total[np.searchsorted(merged, self.classes_)] += self.counts_
        total[np.searchsorted(merged, found)] += counts
        self.classes_, self.counts_ = merged, total
        return self


@dataclass(frozen=True)
class SourceSummary:
    """What one pass over a source found: its rows, its labels (``None`` without a target) and moments."""

    n_rows: int
    classes: np.ndarray | None
    class_counts: np.ndarray | None
    moments: RunningMoments | None


def summarize(source, *, moments: bool = True) -> SourceSummary:
    """One pass over ``source``: the row count, the sorted labels with their counts, and (optionally) the moments.

    The moments are weighted by the source's sample weights where it has them.
    """
    running = RunningMoments(source.n_features) if moments else None
    labels = LabelCounts() if source.has_target else None
    rows = 0
    for X, y, w in source.iter_batches():
        rows += X.shape[0]
        if labels is not None:
            labels.update(y)
        if running is not None:
            running.update(X, w)
    return SourceSummary(
        n_rows=rows,
        classes=None if labels is None else labels.classes_,
        class_counts=None if labels is None else labels.counts_,
        moments=running,
    )


def collect_classes(source) -> np.ndarray:
    """The sorted labels of ``source``, in one pass (for an estimator's ``classes_``)."""
    if not source.has_target:
        raise ValueError(f"source must have a target column to collect classes, got {source!r}")
    return summarize(source, moments=False).classes


def feature_moments(source) -> RunningMoments:
    """The features' (weighted) mean and variance over ``source``, in one pass."""
    return summarize(source, moments=True).moments
