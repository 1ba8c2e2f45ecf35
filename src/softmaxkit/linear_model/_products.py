r"""The two products of every evaluation of :mod:`._loss` with ``X``, block by block, in the layout BLAS runs fastest.

For a block of rows :math:`X_b` (dense, C-contiguous, or CSR) and the coefficients in the solvers'
layout (``Wt``, shape ``(n_features, n_classes)``): :func:`logits` is :math:`Z_b = X_b W^\top + b`
and :func:`add_product` adds :math:`X_b^\top G_b` (and the column sums of :math:`G_b`, the intercept's
part). :func:`block_rows` is how many rows a dense block holds.

Dense blocks hold about 2**16 numbers of ``X`` and of the logits together (512 KiB in float64), so
that a block and its logits stay in a core's L2 cache while the second product reads them; with
many features (at least :data:`TRANSPOSED_MIN_FEATURES`) both products run in the transposed form,
``Z_b^T = W X_b^T`` and ``G_b^T X_b``, whose results have ``n_classes`` (few) rows: OpenBLAS runs
that shape at up to twice the speed of ``X_b @ Wt`` there (and no faster with few features).
Measured (one thread, each product over all the blocks, median of 7 interleaved rounds, the 2-core
development machine under load 8-9; the former layout: blocks of ``2**17 / n_features`` rows, the
plain form):

=====================  ==================  ==================  ==================
n x d x C              former              small blocks        small, transposed
=====================  ==================  ==================  ==================
(logits, X^T G) in ms
40,000 x 500 x 10      104, 129            101, 129            70, 65
10,000 x 1000 x 5      41, 48              37, 48              31, 26 to 31
20,000 x 300 x 10      27, 35              24, 26              19 to 24, 24
160,000 x 100 x 20     93, 88              100, 95             92, 74 to 82
50,000 x 50 x 10       11.7, 11.5          7.1, 11.0           11.2 to 11.7, 10.7
3,000 x 200 x 10       0.57, 0.67          0.31, 0.35          0.35 to 0.42, 0.39
16,000 x 16 x 26       0.48, 0.60          0.38, 0.44          0.34 to 0.56, 0.35
7,494 x 16 x 10        0.11, 0.15          0.06, 0.06          0.06 to 0.12, 0.05
11,340 x 54 x 7        0.30, 0.33          0.30, 0.32          0.31 to 0.37, 0.38
1,437 x 64 x 10        0.037, 0.039        0.037, 0.039        0.038 to 0.059, 0.04
=====================  ==================  ==================  ==================

(A range: the transposed product written into the logits' transpose directly, or into a small
buffer then copied; NumPy's matmul into a transposed output is the slower of the two at 500 features.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK_ELEMENTS", "MIN_BLOCK_ROWS", "TRANSPOSED_MIN_FEATURES", "add_product", "block_rows", "logits"]

# Numbers of X and of the logits in one dense block (see the module docstring), and the fewest rows of a block.
BLOCK_ELEMENTS = 2**16
MIN_BLOCK_ROWS = 256
# Features from which both dense products run in the transposed form (see the module docstring).
TRANSPOSED_MIN_FEATURES = 256


def block_rows(n_samples: int, n_features: int, n_classes: int, *, sparse: bool) -> int:
    """Rows per block: all of them for sparse ``X``; else ``BLOCK_ELEMENTS / (n_features + n_classes)``, at least 256."""
    if sparse:
        return max(n_samples, 1)
    return max(MIN_BLOCK_ROWS, BLOCK_ELEMENTS // max(n_features + n_classes, 1))


def logits(Xb, Wt: np.ndarray, b, out: np.ndarray | None, *, sparse: bool) -> np.ndarray:
    """``Xb @ Wt + b`` (``b`` None: no intercept), into ``out`` (C-contiguous ``(rows, n_classes)``) if given."""
    if sparse:
        z = Xb @ Wt
        if out is not None:
            out[...] = z
            z = out
    else:
        z = np.empty((Xb.shape[0], Wt.shape[1]), dtype=Wt.dtype) if out is None else out
        if Xb.shape[1] >= TRANSPOSED_MIN_FEATURES:
            z[...] = (Wt.T @ Xb.T).T
        else:
            np.matmul(Xb, Wt, out=z)
    if b is not None:
        z += b
    return z


def add_product(out: np.ndarray, Xb, rows: np.ndarray, *, whole: bool, fit_intercept: bool, ones, Xt=None) -> None:
    """``out[:n_features] += Xb.T @ rows`` and, with an intercept, ``out[-1] += rows.sum(0)``.

    ``whole``: ``Xb`` is all of ``X`` and ``out`` is zero (the product is written, not added);
    ``ones`` a vector of at least ``len(rows)`` ones (the column sums as a product: NumPy's sum over
    axis 0 is 10x slower here); ``Xt``, for sparse ``X``, its transpose in CSR (used when ``whole``).
    """
    d = out.shape[0] - int(fit_intercept)
    if Xt is not None or not isinstance(Xb, np.ndarray):
        out[:d] += (Xt if whole and Xt is not None else Xb.T) @ rows
    elif d >= TRANSPOSED_MIN_FEATURES:
        product = (rows.T @ Xb).T
        if whole:
            out[:d] = product
        else:
            out[:d] += product
    elif whole:
        np.matmul(Xb.T, rows, out=out[:d])
    else:
        out[:d] += Xb.T @ rows
    if fit_intercept:
        out[d] += ones[: rows.shape[0]] @ rows
