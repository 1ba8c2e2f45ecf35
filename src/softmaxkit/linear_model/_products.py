r"""The two products of every evaluation of :mod:`._loss` with ``X``, block by block, in the layout BLAS runs fastest.

For a block of rows :math:`X_b` (dense, C-contiguous, or CSR) and the coefficients in the solvers'
layout (``Wt``, shape ``(n_features, n_classes)``): :func:`logits` is :math:`Z_b = X_b W^\top + b`
and :func:`add_product` adds :math:`X_b^\top G_b` (and the column sums of :math:`G_b`, the intercept's
part). :func:`block_rows` is how many rows a dense block holds.

Dense blocks are multiplied in the transposed form, ``Z_b^T = W X_b^T`` and ``G_b^T X_b``: both
results have ``n_classes`` (few) rows, and OpenBLAS runs that shape at up to three times the speed
of ``X_b @ Wt``, whose result has ``n_classes`` (few) columns. Measured (one thread, both products
of a pass, median of 9-15 interleaved rounds, the 2-core development machine under load 5-9; blocks
of 2**17 numbers of X, the former layout, against the transposed form in blocks of 2**16):

=====================  =========  ===========
n x d x C              X @ Wt     transposed
=====================  =========  ===========
40,000 x 500 x 10      77 ms      39 ms
100,000 x 20 x 10      8.2 ms     3.0 ms
50,000 x 50 x 10       8.6 ms     2.7 ms
20,000 x 100 x 20      8.7 ms     4.6 ms
7,494 x 16 x 10        0.26 ms    0.11 ms
3,000 x 200 x 10       1.07 ms    0.47 ms
16,000 x 16 x 26       1.05 ms    0.89 ms
15,120 x 54 x 7        0.63 ms    0.65 ms
1,437 x 64 x 10        0.07 ms    0.07 ms
=====================  =========  ===========

The smaller blocks (2**16 numbers of X and the logits together, 512 KiB in float64) keep a block
and its logits in a core's L2 cache while the second product reads them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK_ELEMENTS", "MIN_BLOCK_ROWS", "add_product", "block_rows", "logits"]

# Numbers of X and of the logits in one dense block (see the module docstring), and the fewest rows of a block.
BLOCK_ELEMENTS = 2**16
MIN_BLOCK_ROWS = 256


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
        np.matmul(Wt.T, Xb.T, out=z.T)
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
    elif whole:
        np.matmul(rows.T, Xb, out=out[:d].T)
    else:
        out[:d] += (rows.T @ Xb).T
    if fit_intercept:
        out[d] += ones[: rows.shape[0]] @ rows
