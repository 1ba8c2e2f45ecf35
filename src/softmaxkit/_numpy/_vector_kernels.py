"""The compiled kernel of :mod:`softmaxkit._numpy._vectors` (numba; imported on first use, cached on disk)."""

from __future__ import annotations

from numba import njit


# "reassoc" lets the dot product vectorise (its sum in another order, the same for a given binary)
@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def axpy_dot(x, a, v, w):
    """``x += a v``, then ``w . x``: one pass."""
    total = 0.0
    for j in range(x.size):
        x[j] += a * v[j]
        total += w[j] * x[j]
    return total
