"""The data-parallel fit of sources: each rank streams its own :mod:`softmaxkit.sources` source.

:func:`softmaxkit.linear_model._source_fit.fit_source` runs unchanged but for the three steps of
:class:`AcrossRanks`: the first pass's facts (rows, stored entries, classes and their weights) are
those of every rank's source together; each pass of :class:`~softmaxkit.linear_model._source_fit.RowSums`
(loss and gradient; with the Hessian's diagonal; a Hessian-vector product) is all-reduced in float64,
one collective per pass; and the final point is rank 0's, broadcast. The objective every rank's
solver sees is then the same, bit for bit, and so are its steps. Newton-CG is preconditioned by the
(global) Hessian diagonal only: its factorised preconditioners sample rows, which each rank would
do from its own source.
"""

from __future__ import annotations

import numpy as np

from softmaxkit._distributed._communicator import Communicator, collectively
from softmaxkit.linear_model._source_fit import RowSums, SourceScan, scan

__all__ = ["AcrossRanks"]


class AcrossRanks:
    """The hooks of ``fit_source(..., across=...)`` over the ranks of ``comm``."""

    def __init__(self, comm: Communicator):
        self.comm = comm

    def scan(self, source) -> SourceScan:
        """:func:`~softmaxkit.linear_model._source_fit.scan` of every rank's source (a refusal on any rank raises on all)."""
        found = collectively(self.comm, lambda: scan(source))
        parts = self.comm.gather((found.n_rows, found.nnz, found.classes, found.weight_per_class))
        classes = collectively(self.comm, lambda: np.unique(np.concatenate([p[2] for p in parts])))
        weights = np.zeros(len(classes))
        for _, _, labels, per_class in parts:  # in rank order: the same sums on every rank
            weights[np.searchsorted(classes, labels)] += per_class
        return SourceScan(sum(p[0] for p in parts), sum(p[1] for p in parts), classes, weights)

    def sums(self, local: RowSums) -> RowSums:
        """``local`` with every pass summed over the ranks."""
        return _SummedRowSums(local, self.comm)

    def final(self, x) -> np.ndarray:
        return self.comm.broadcast(np.asarray(x, dtype=np.float64))


class _SummedRowSums(RowSums):
    """A rank's :class:`RowSums` whose passes return the sums over every rank's rows (one all-reduce each)."""

    def __init__(self, local: RowSums, comm: Communicator):
        self.__dict__.update(local.__dict__)  # the same source, classes, weights and shapes
        self._comm = comm

    def _summed(self, *parts):
        flat = self._comm.sum(np.concatenate([np.ravel(np.asarray(p, dtype=np.float64)) for p in parts]))
        out, start = [], 0
        for p in parts:
            size = np.size(p)
            out.append(flat[start : start + size].reshape(np.shape(p)))
            start += size
        return out

    def loss_gradient(self, theta):
        value, grad = self._summed(*super().loss_gradient(theta))
        return float(value), grad

    def loss_gradient_diagonal(self, theta):
        value, grad, diagonal = self._summed(*super().loss_gradient_diagonal(theta))
        return float(value), grad, diagonal

    def hessp(self, theta, v):
        return self._summed(super().hessp(theta, v))[0]

    def sample(self, rows):
        raise NotImplementedError("a data-parallel fit of sources has no row sample (Jacobi preconditioning only)")
