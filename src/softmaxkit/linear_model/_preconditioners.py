r"""Newton-CG's preconditioners for the Hessian of :mod:`._loss`, and what each costs to build.

Both backends use these functions (the torch backend on its host copy of the data), so each
preconditioner is written once. Vectors are flat, in the solvers' layout of :mod:`._loss`
(``theta``, feature-major). With :math:`\tilde x_i` the row :math:`x_i` with a 1 appended when
fitting an intercept and :math:`D_i = \mathrm{diag}(p_i) - p_i p_i^\top`, the Hessian is
:math:`H = \sum_i w_i D_i \otimes \tilde x_i \tilde x_i^\top + \alpha I_W`. The kinds, as
:class:`~._solvers.HessianOperator` names them, from the cheapest to the most exact:

* ``"diagonal"`` (Jacobi, :func:`jacobi`): divide by the Hessian's diagonal, which each backend
  computes where its data are;
* ``"block"`` (:func:`block`): a Cholesky factorisation of each class's diagonal block
  :math:`\sum_i w_i p_{ik} (1 - p_{ik}) \tilde x_i \tilde x_i^\top + \alpha I` (the couplings
  between classes dropped): ``n_classes * (n_features + 1)**2`` memory, for moderate numbers of
  features;
* ``"full"`` (:func:`full`): a Cholesky factorisation of the whole Hessian, ``n_params**2`` memory.

``block`` and ``full`` are formed from a fixed random subset of the rows (:func:`block_rows`,
:func:`full_rows`), rescaled. They pay near the optimum, where the Hessian changes little between
Newton iterations, so one factorisation serves several.

:func:`cost` is the cost model Newton-CG decides with, in Hessian-vector products; it is infinite
for a preconditioner whose matrix would take more memory than :func:`affordable` allows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse

__all__ = ["KINDS", "affordable", "block", "block_rows", "check_kind", "cost", "full", "full_rows", "jacobi"]

KINDS = ("diagonal", "block", "full")

# Rows densified and multiplied at a time: at most 2**22 numbers (32 MiB) of the full Hessian's Q or of X's rows,
# and at most the number of entries of X (at least 2**16), so that these temporaries stay within X's size (a
# 32 MiB Q made the peak memory of a fit on letter, X 2 MiB, 47 MiB against scikit-learn's 12 MiB).
_CHUNK_ELEMENTS = 2**22
_MIN_CHUNK_ELEMENTS = 2**16
# The rows a Hessian is estimated from, when subsampled, are drawn with this seed (fixed, so that a fit
# repeats bit for bit).
_ROW_SEED = 0
# A preconditioner's matrix may take up to max(this many numbers, the number of entries of X): 32 MiB, or
# about the memory of X itself (the peak memory of a fit stays within a small multiple of X's).
_MIN_MEMORY_ELEMENTS = 2**22


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


def block_rows(n_samples: int, size: int) -> int:
    """The rows :func:`block` forms the class blocks from: ``min(n, max(4 s, 160 n / s))``, ``s = n_features + 1``.

    Forming the ``C`` blocks from ``m`` rows costs about ``C m s^2`` operations against ``4 n s C``
    per Hessian-vector product: ``160 n / s`` rows keep it near 40 products (at least ``4 s``
    rows, so that each block is well estimated).
    """
    return min(n_samples, max(4 * size, 160 * n_samples // size))


def affordable(kind: str, *, n_features: int, n_classes: int, fit_intercept: bool, nnz: int) -> bool:
    """Whether the matrix of ``kind`` fits the memory rule (see :data:`_MIN_MEMORY_ELEMENTS`)."""
    size = n_features + int(fit_intercept)
    limit = max(_MIN_MEMORY_ELEMENTS, nnz)
    if check_kind(kind) == "diagonal":
        return True
    if kind == "block":
        return n_classes * size * size <= limit
    return 2 * (n_classes * size) ** 2 <= limit


# The cost model of cost(), in multiply-adds, fitted to the measured build times of the five dense sets below
# (one thread, median of 5 interleaved rounds, the 2-core development machine under load 9). A Hessian-vector
# product is its two products with X (2 nnz C) plus its passes over the n x C logits, which cost about as much as
# HESSP_ROW_WORK multiply-adds per entry; forming the class blocks of X~^T diag(.) X~ (one product and one
# scaled copy of X's rows per class) takes FORM_FACTOR times their multiply-adds. Measured build time / one
# product against the model (old model: products as 4 nnz C, the blocks as C m s^2):
#   digits 1437 x 64 x 10:   full 184 (model 198; old 114)     letter 16000 x 16 x 26: full 52 (61; old 64)
#   pendigits 7494 x 16 x 10: full 25 (28; old 27)              satimage 4435 x 36 x 6: full 29 (62; old 39)
#   covtype 11340 x 54 x 7:   full 58 (114; old 64)
# so that Newton-CG (which builds "full" once its cost is at most 6 times the last CG run) no longer builds
# digits' 650 x 650 factorisation (22 ms, a whole fit without it took 20 ms), and still builds the others'.
HESSP_ROW_WORK = 40
FORM_FACTOR = 2


def cost(kind: str, *, n_samples: int, n_features: int, n_classes: int, fit_intercept: bool, nnz=None) -> float:
    """The cost of building the preconditioner ``kind``, in Hessian-vector products (the model above).

    ``nnz`` is the number of stored entries of ``X`` (``n_samples * n_features`` when dense, the
    default). ``inf`` when the preconditioner's matrix is not :func:`affordable`.
    """
    nnz = n_samples * n_features if nnz is None else nnz
    if check_kind(kind) == "diagonal":
        return 0.5
    if not affordable(kind, n_features=n_features, n_classes=n_classes, fit_intercept=fit_intercept, nnz=nnz):
        return np.inf
    size = n_features + int(fit_intercept)
    hessp = 2.0 * max(nnz, n_samples) * n_classes + HESSP_ROW_WORK * n_samples * n_classes
    if kind == "block":
        rows = block_rows(n_samples, size)
        return (FORM_FACTOR * n_classes * rows * size**2 + n_classes * size**3 / 3) / hessp
    n_params = n_classes * size
    rows = full_rows(n_samples, n_params)
    return (FORM_FACTOR * n_classes * rows * size**2 + rows * n_params**2 / 2 + n_params**3 / 3) / hessp


def _sample(n_samples: int, max_rows: int | None) -> tuple[np.ndarray, float]:
    """``(rows, scale)``: all the rows, or a fixed random subset of ``max_rows`` and the factor ``n / max_rows``."""
    if max_rows is None or n_samples <= max_rows:
        return np.arange(n_samples), 1.0
    rows = np.sort(np.random.default_rng(_ROW_SEED).choice(n_samples, max_rows, replace=False))
    return rows, n_samples / max_rows


def _with_ones(X, rows: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """``X~[rows]`` as a dense float64 array (sparse rows densified, a column of ones appended)."""
    block = X[rows]
    block = block.toarray() if scipy.sparse.issparse(block) else np.asarray(block)
    block = block.astype(np.float64, copy=False)
    if fit_intercept:
        block = np.hstack([block, np.ones((len(rows), 1))])
    return block


def _chunk_rows(X, row_elements: int) -> int:
    """Rows per chunk for temporaries of ``row_elements`` numbers per row (see :data:`_CHUNK_ELEMENTS`)."""
    entries = X.nnz if scipy.sparse.issparse(X) else X.shape[0] * X.shape[1]
    budget = min(_CHUNK_ELEMENTS, max(_MIN_CHUNK_ELEMENTS, entries))
    return max(1, budget // row_elements)


def _ridge(size: int, alpha: float, fit_intercept: bool) -> np.ndarray:
    ridge = np.full(size, alpha)
    if fit_intercept:
        ridge[-1] = 0.0
    return ridge


def _factor(matrix: np.ndarray, ridge: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``r -> (matrix + diag(ridge))^-1 r`` by Cholesky (upper triangle read), ``1e-10`` of the mean diagonal added.

    Where rounding leaves the matrix indefinite along a null direction (the shared intercept shift, a
    feature that is zero everywhere), the extra ridge grows a thousandfold until the factorisation
    succeeds. ``matrix`` (Fortran order) is factorised in place: its strictly lower triangle keeps a
    copy of the upper one for those retries, so that no second matrix is made (on digits with
    ``C = 100``, 650 x 650, a fit's traced peak went from 9.9 to 6.7 MiB by releasing the kept
    factorisation before building the next, and to 4.4 MiB without this copy). LAPACK's
    ``potrf``/``potrs`` directly: SciPy's ``cho_solve`` wrapper costs about 0.3 ms per call in
    argument checks, more than the solve itself for the small factors of "block".
    """
    from scipy.linalg import lapack

    size = matrix.shape[0]
    matrix = np.asfortranarray(matrix)
    diagonal = np.arange(size)
    matrix[diagonal, diagonal] += ridge
    base = matrix[diagonal, diagonal].copy()
    scale = float(base.sum()) / size + 1e-300
    for column in range(size - 1):  # the lower triangle := the upper one (potrf reads and writes only the upper)
        matrix[column + 1 :, column] = matrix[column, column + 1 :]
    for attempt, relative in enumerate((1e-10, 1e-7, 1e-4, 1e-1)):
        if attempt:  # the upper triangle back from the lower one, for the next try
            for column in range(size - 1):
                matrix[column, column + 1 :] = matrix[column + 1 :, column]
        matrix[diagonal, diagonal] = base + relative * scale
        factor, info = lapack.dpotrf(matrix, lower=0, clean=0, overwrite_a=1)
        if info == 0:
            break
    else:
        raise np.linalg.LinAlgError(f"the preconditioner's matrix must be positive definite, got potrf info {info}")

    def solve(r: np.ndarray) -> np.ndarray:
        return lapack.dpotrs(factor, r, lower=0)[0]

    return solve


def block(
    X, curvature: np.ndarray, *, alpha: float, fit_intercept: bool, max_rows: int | None = -1
) -> Callable[[np.ndarray], np.ndarray]:
    r"""The inverse of the Hessian's class blocks, as a function on flat vectors (one Cholesky solve per class).

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    curvature : ndarray of shape (n_samples, n_classes)
        :math:`w_i p_{ik} (1 - p_{ik})`, the diagonal of each row's Hessian block at this point.
    alpha : float
        The L2 penalty on ``W`` (the intercept is not penalised).
    fit_intercept : bool
    max_rows : int or None, optional
        Form the blocks from a fixed random subset of this many rows (rescaled), when there are
        more; ``None``: from all of them; by default :func:`block_rows`.

    Each block gets a tiny ridge, ``1e-10`` times its mean diagonal entry.
    """
    n_samples, n_features = X.shape
    n_classes = curvature.shape[1]
    size = n_features + int(fit_intercept)
    if max_rows == -1:
        max_rows = block_rows(n_samples, size)
    rows, scale = _sample(n_samples, max_rows)
    blocks = np.zeros((n_classes, size, size))
    chunk = _chunk_rows(X, size)
    for start in range(0, len(rows), chunk):
        sel = rows[start : start + chunk]
        Xc = _with_ones(X, sel, fit_intercept)
        root = np.sqrt(np.maximum(curvature[sel].astype(np.float64) * scale, 0.0))
        for k in range(n_classes):
            Q = Xc * root[:, k : k + 1]
            blocks[k] += Q.T @ Q
    ridge = _ridge(size, alpha, fit_intercept)
    solves = [_factor(np.asfortranarray(blocks[k]), ridge) for k in range(n_classes)]

    def solve(r):
        R = np.asarray(r, dtype=np.float64).reshape(size, n_classes)
        out = np.empty_like(R)
        for k in range(n_classes):
            out[:, k] = solves[k](R[:, k])
        return out.ravel()

    return solve


def full(
    X,
    proba: np.ndarray | None,
    weighted_proba: np.ndarray,
    *,
    alpha: float,
    fit_intercept: bool,
    max_rows: int | None = -1,
    inverse_weights: np.ndarray | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    r"""The exact inverse of the Hessian at one point, as a function on flat vectors (a Cholesky solve).

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    proba : ndarray of shape (n_samples, n_classes), or None
        :math:`p_i`, the class probabilities at this point; None: computed chunk by chunk as
        ``weighted_proba * inverse_weights[:, None]`` (no ``n_samples x n_classes`` temporary).
    weighted_proba : ndarray of shape (n_samples, n_classes)
        :math:`w_i p_i`, with :math:`w_i` the normalised sample weights.
    alpha : float
        The L2 penalty on ``W`` (the intercept is not penalised).
    fit_intercept : bool
    max_rows : int or None, optional
        Form the Hessian from a fixed random subset of this many rows (rescaled), when there are
        more; ``None``: from all of them; by default :func:`full_rows`.
    inverse_weights : ndarray of shape (n_samples,), optional
        :math:`1 / w_i` (0 where :math:`w_i = 0`), when ``proba`` is None.

    The intercept direction that leaves the loss unchanged (all intercepts shifted together) gets a
    tiny ridge, ``1e-10`` times the mean diagonal entry.
    """
    from scipy.linalg.blas import dsyrk

    n_samples, n_features = X.shape
    n_classes = weighted_proba.shape[1]
    size = n_features + int(fit_intercept)
    n_params = n_classes * size
    if max_rows == -1:
        max_rows = full_rows(n_samples, n_params)
    rows, scale = _sample(n_samples, max_rows)
    hessian = np.zeros((n_params, n_params), order="F")
    chunk = _chunk_rows(X, n_params)
    for start in range(0, len(rows), chunk):
        sel = rows[start : start + chunk]
        Xc = _with_ones(X, sel, fit_intercept)
        wpc = weighted_proba[sel].astype(np.float64) * scale
        for k in range(n_classes):  # diag(p) part, block k
            block_k = slice(k * size, (k + 1) * size)
            hessian[block_k, block_k] += (Xc * wpc[:, k : k + 1]).T @ Xc
        # - p p^T part: Q^T Q with Q_i = sqrt(w_i) p_i (x) x_i (sqrt(w_i) p_i = sqrt(w_i p_i * p_i)), a rank-k update
        if proba is None:
            pc = weighted_proba[sel].astype(np.float64) * inverse_weights[sel, None]
        else:
            pc = proba[sel].astype(np.float64)
        root = np.sqrt(wpc * pc)
        Q = (root[:, :, None] * Xc[:, None, :]).reshape(len(sel), n_params)
        # subtracted in place, into the upper triangle (the Cholesky factorisation reads only that): no second
        # n_params^2 matrix (the factorisation's copy is the other one)
        hessian = dsyrk(-1.0, Q.T, beta=1.0, c=hessian, trans=0, lower=0, overwrite_c=1)
        del Q, root  # (before the next chunk's: one Q at a time)
    inverse = _factor(hessian, np.tile(_ridge(size, alpha, fit_intercept), n_classes))

    def solve(r):  # the factor is in class-major order, r and the result in the solvers' (feature-major) order
        r = np.asarray(r, dtype=np.float64).reshape(size, n_classes).T.ravel()
        return inverse(r).reshape(n_classes, size).T.ravel()

    return solve
