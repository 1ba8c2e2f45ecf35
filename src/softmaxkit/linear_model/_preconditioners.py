r"""Newton-CG's preconditioners for the Hessian of :mod:`._loss`, and what each costs to build.

Both backends use these functions (the torch backend on its host copy of the data), so each
preconditioner is written once. The kinds, as :class:`~._solvers.HessianOperator` names them:

* ``"diagonal"`` (Jacobi, :func:`jacobi`): divide by the Hessian's diagonal, which each backend
  computes where its data are;
* ``"full"`` (:func:`full`): a Cholesky factorisation of the Hessian formed explicitly,
  :math:`\sum_i w_i (\mathrm{diag}(p_i) - p_i p_i^\top) \otimes \tilde x_i \tilde x_i^\top + \alpha I_W`
  with :math:`\tilde x_i` the row :math:`x_i` with a 1 appended when fitting an intercept
  (``n_params**2`` memory), from at most :func:`full_rows` rows. Worth it near the optimum, where
  the Hessian changes little between Newton iterations, so one factorisation serves several.

:func:`cost` is the cost model Newton-CG decides with, in Hessian-vector products.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["KINDS", "check_kind", "cost", "full", "full_rows", "jacobi"]

KINDS = ("diagonal", "full")

# Rows of the full Hessian's rank-k update per chunk: 2**22 numbers (32 MiB) of Q at a time.
_CHUNK_ELEMENTS = 2**22
# The rows the full Hessian is estimated from, when subsampled, are drawn with this seed (fixed, so
# that a fit repeats bit for bit).
_ROW_SEED = 0


def check_kind(kind) -> str:
    """``kind`` if it names a preconditioner of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    return kind


def jacobi(diagonal) -> Callable[[np.ndarray], np.ndarray]:
    """``r -> r / diag(H)`` on flat float64 vectors, for the Hessian's ``diagonal`` (any shape).

    The diagonal is floored at ``1e-12`` times its largest entry, so that an entry that is zero
    (a feature that is zero on every row, without a penalty) gives a large finite scale, not a
    division by zero.
    """
    diag = np.asarray(diagonal, dtype=np.float64).ravel()
    diag = np.maximum(diag, 1e-12 * max(float(diag.max()), 1e-300))
    return lambda r: np.asarray(r, dtype=np.float64).ravel() / diag


def full_rows(n_samples: int, n_params: int) -> int:
    """The rows :func:`full` forms the Hessian from: ``min(n, max(2 P, 480 n / P))``.

    Forming the Hessian from ``m`` rows costs about ``m P^2 / 2`` operations against ``4 n P`` per
    Hessian-vector product (``P = n_params``): ``480 n / P`` rows keep it near 60 products.
    """
    return min(n_samples, max(2 * n_params, 480 * n_samples // n_params))


def cost(kind: str, *, n_samples: int, n_features: int, n_classes: int, fit_intercept: bool) -> float:
    """The cost of building the preconditioner ``kind``, in Hessian-vector products (a flop estimate)."""
    if check_kind(kind) == "diagonal":
        return 0.5
    size = n_features + int(fit_intercept)
    n_params = n_classes * size
    return size / 4.0 + full_rows(n_samples, n_params) * n_params / (8.0 * n_samples)


def full(
    X: np.ndarray,
    proba: np.ndarray,
    weighted_proba: np.ndarray,
    weights: np.ndarray | None,
    *,
    alpha: float,
    fit_intercept: bool,
    max_rows: int | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    r"""The exact inverse of the Hessian at one point, as a function on flat vectors (a Cholesky solve).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    proba : ndarray of shape (n_samples, n_classes)
        :math:`p_i`, the class probabilities at this point.
    weighted_proba : ndarray of shape (n_samples, n_classes)
        :math:`w_i p_i`.
    weights : ndarray of shape (n_samples,) or None
        The normalised sample weights :math:`w_i` (``None``: ``1 / n_samples`` each).
    alpha : float
        The L2 penalty on ``W`` (the intercept is not penalised).
    fit_intercept : bool
    max_rows : int, optional
        Form the Hessian from a fixed random subset of this many rows (rescaled), when there are
        more; by default from all of them.

    The intercept direction that leaves the loss unchanged (all intercepts shifted together) gets a
    tiny ridge, ``1e-10`` times the mean diagonal entry.
    """
    import scipy.linalg
    from scipy.linalg.blas import dsyrk

    n_samples, n_features = X.shape
    n_classes = proba.shape[1]
    scale = 1.0
    rows = None
    if max_rows is not None and n_samples > max_rows:
        rows = np.sort(np.random.default_rng(_ROW_SEED).choice(n_samples, max_rows, replace=False))
        scale = n_samples / max_rows
    size = n_features + int(fit_intercept)
    n_params = n_classes * size
    hessian = np.zeros((n_params, n_params), order="F")
    outer = np.zeros((n_params, n_params), order="F")
    chunk = max(1, _CHUNK_ELEMENTS // n_params)
    index = np.arange(n_samples) if rows is None else rows
    for start in range(0, len(index), chunk):
        sel = index[start : start + chunk]
        Xc = X[sel].astype(np.float64, copy=False)
        if fit_intercept:
            Xc = np.hstack([Xc, np.ones((len(sel), 1))])
        pc = proba[sel].astype(np.float64, copy=False)
        wpc = weighted_proba[sel].astype(np.float64, copy=False) * scale
        for k in range(n_classes):  # diag(p) part, block k
            block = slice(k * size, (k + 1) * size)
            hessian[block, block] += (Xc * wpc[:, k : k + 1]).T @ Xc
        # - p p^T part: Q^T Q with Q_i = sqrt(w_i) p_i (x) x_i, via a symmetric rank-k update
        wc = np.full(len(sel), 1.0 / n_samples) if weights is None else weights[sel].astype(np.float64)
        root_w = np.sqrt(wc * scale)[:, None]
        Q = ((root_w * pc)[:, :, None] * Xc[:, None, :]).reshape(len(sel), n_params)
        outer = dsyrk(1.0, Q.T, beta=1.0, c=outer, trans=0, lower=0, overwrite_c=1)
    hessian -= outer  # upper triangles (the Cholesky factorisation reads only those)
    diagonal = np.arange(n_params)
    ridge = np.full(size, alpha)
    if fit_intercept:
        ridge[-1] = 0.0
    hessian[diagonal, diagonal] += np.tile(ridge, n_classes)
    hessian[diagonal, diagonal] += 1e-10 * (np.trace(hessian) / n_params + 1e-300)
    factor = scipy.linalg.cho_factor(hessian, lower=False, overwrite_a=True, check_finite=False)

    def solve(r):
        return scipy.linalg.cho_solve(factor, np.asarray(r, dtype=np.float64).ravel(), check_finite=False)

    return solve
