r"""The global objective of a data-parallel fit, from each rank's local objective and one all-reduce per evaluation.

Rank :math:`r` holds the rows :math:`R_r` (the global rows ``offset .. offset + n_samples`` of the
concatenation in rank order), with weight sum :math:`S_r = \sum_{i \in R_r} s_i`; :math:`S = \sum_r S_r`.
Its local objective (any backend's :class:`~softmaxkit.linear_model._solvers.Objective`, built with
``alpha=0``) is the data term normalised by :math:`S_r`, so the objective of
:mod:`softmaxkit.linear_model._loss` is

.. math::

    L = \sum_r \frac{S_r}{S} L_r + \frac{\alpha}{2} \lVert W \rVert_F^2 ,

and so are its gradient and Hessian-vector products (the penalty's part added once, on every rank).
Each evaluation packs ``[L_r, g_r]`` (or one product) into one float64 vector and sums it over the
ranks: one collective per evaluation, whose result is the single-process one up to the rounding of
the sums. Any local objective with that contract can be wrapped, e.g. one whose callables stream
over a rank's files.

**Mini-batches.** The stochastic solvers draw batches of *global* row indices (the same
permutation on every rank, from the same seed); each rank evaluates the rows of the batch it holds
and the estimate of :func:`~softmaxkit.linear_model._loss.batch_loss_gradient`,
:math:`\frac{1}{|B|\,\bar s}\sum_{i \in B} s_i \mathrm{CE}_i + \text{penalty}`, is the sum of the
ranks' parts: the same batches, hence the same iterates, as a single process on the concatenated
rows, up to rounding.

**Newton-CG's preconditioner** is Jacobi on the global diagonal (one all-reduce when built); the
factorised ones of :mod:`~softmaxkit.linear_model._preconditioners` are formed from a random
subset of one process's rows and are not offered here (cost ``inf``), so a distributed Newton-CG
takes the path of a single-process one whose factorisations were unaffordable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from softmaxkit.linear_model import _preconditioners
from softmaxkit.linear_model._loss import l2_penalty
from softmaxkit.linear_model._solvers import Objective

__all__ = ["Shard", "global_curvature_bound", "global_objective"]


@dataclass(frozen=True)
class Shard:
    """Where a rank's rows sit in the global data: ``offset`` and ``n_samples`` rows of weight sum ``weight``.

    ``total_samples`` and ``total_weight`` are the global counterparts (the same on every rank).
    """

    offset: int
    n_samples: int
    weight: float
    total_samples: int
    total_weight: float

    @property
    def scale(self) -> float:
        """:math:`S_r / S`, this rank's share of the data term."""
        return self.weight / self.total_weight


class _GlobalHessian:
    """The global Hessian at one point: the ranks' local Hessians (``alpha=0``) summed with their shares, plus ``alpha``."""

    def __init__(self, local, comm, shard: Shard, penalty_diagonal: np.ndarray):
        self._local, self._comm, self._scale = local, comm, shard.scale
        self._penalty_diagonal = penalty_diagonal  # alpha on W, 0 on the intercept, flat

    def __call__(self, v):
        v = np.asarray(v, dtype=np.float64).ravel()
        part = self._scale * np.asarray(self._local(v), dtype=np.float64).ravel()
        return self._comm.sum(part) + self._penalty_diagonal * v

    def diagonal(self) -> np.ndarray:
        part = self._scale * np.asarray(self._local.diagonal(), dtype=np.float64).ravel()
        return self._comm.sum(part) + self._penalty_diagonal

    def preconditioner_cost(self, kind: str) -> float:
        return 0.5 if _preconditioners.check_kind(kind) == "diagonal" else np.inf

    def preconditioner(self, kind: str):
        if _preconditioners.check_kind(kind) != "diagonal":
            raise ValueError(f"kind must be 'diagonal' in a data-parallel fit, got {kind!r}")
        return _preconditioners.jacobi(self.diagonal())


def global_objective(
    local: Objective, comm, shard: Shard, *, alpha: float, n_features: int, shape: tuple[int, int], dtype
) -> Objective:
    """The solvers' :class:`Objective` of the whole data, from this rank's ``local`` one (built with ``alpha=0``).

    ``shape`` is ``theta``'s, ``(n_features + fit_intercept, n_classes)``; the penalty is computed
    in the working ``dtype``, as the single-process objectives compute it.
    """
    size = int(np.prod(shape))
    penalty_diagonal = np.zeros(shape)
    penalty_diagonal[:n_features] = alpha
    penalty_diagonal = penalty_diagonal.ravel()

    def penalty(x):
        f, g = l2_penalty(np.asarray(x, dtype=dtype).reshape(shape), alpha, n_features)
        return f, np.asarray(g, dtype=np.float64)

    def reduce(f_local, g_local, factor):
        packed = np.empty(1 + size)  # one collective: [f, g]
        packed[0] = factor * float(f_local)
        packed[1:] = factor * np.asarray(g_local, dtype=np.float64).ravel()
        total = comm.sum(packed)
        return float(total[0]), total[1:]

    def loss_gradient(x):
        f, g = reduce(*local.loss_gradient(x), shard.scale)
        p, pg = penalty(x)
        return f + p, g + pg

    def loss_gradient_hessp(x):
        f_local, g_local, H_local = local.loss_gradient_hessp(x)
        f, g = reduce(f_local, g_local, shard.scale)
        p, pg = penalty(x)
        return f + p, g + pg, _GlobalHessian(H_local, comm, shard, penalty_diagonal)

    mean_local = shard.weight / max(shard.n_samples, 1)
    mean_global = shard.total_weight / shard.total_samples
    stop = shard.offset + shard.n_samples

    def batch_loss_gradient(x, indices):
        indices = np.asarray(indices)
        mine = indices[(indices >= shard.offset) & (indices < stop)] - shard.offset
        if len(mine) and mean_local > 0:
            # the local estimate is sum_{B_r} s_i CE_i / (|B_r| mean_r): rescaled to / (|B| mean)
            factor = len(mine) * mean_local / (len(indices) * mean_global)
            f, g = reduce(*local.batch_loss_gradient(x, mine), factor)
        else:  # none of the batch here: this rank still takes part in the sum
            f, g = reduce(0.0, np.zeros(size), 0.0)
        p, pg = penalty(x)
        return f + p, g + pg

    return Objective(loss_gradient, loss_gradient_hessp, batch_loss_gradient)


def global_curvature_bound(X, comm, shard: Shard, alpha: float, *, fit_intercept: bool, max_rows: int = 5000) -> float:
    """:func:`~softmaxkit.linear_model._loss.curvature_bound` of the whole data: the same rows, power iteration summed.

    The single-process rule takes every ``n // max_rows``-th row of all ``n``; each rank takes those of
    its range, and each of the 50 power iterations sums ``X~^T X~ v`` over the ranks (one all-reduce).
    """
    step = max(1, shard.total_samples // max_rows)
    first = (-shard.offset) % step
    rows = X[first::step].astype(np.float64)
    if scipy.sparse.issparse(rows):
        rows = rows.tocsr()
    n_features = X.shape[1]
    n_rows = int(comm.sum(np.array([rows.shape[0]]))[0])
    size = n_features + int(fit_intercept)
    v = np.ones(size) / np.sqrt(size)
    top = 0.0
    for _ in range(50):
        u = rows @ v[:n_features]
        if fit_intercept:
            u = u + v[n_features]
        w = np.empty(size)
        w[:n_features] = rows.T @ u
        if fit_intercept:
            w[n_features] = u.sum()
        w = comm.sum(w) / n_rows
        top = float(np.linalg.norm(w))
        if top == 0.0:
            break
        v = w / top
    return 0.5 * top + alpha
