"""Fused passes over long float64 vectors for the L-BFGS two-loop recursion: ``x += a v`` and a dot product in one.

Private: :mod:`softmaxkit.linear_model._lbfgs` calls :func:`axpy_dot` about ``4 * memory`` times per
iteration. Each call is one pass over its vectors where NumPy needs two or three (``np.dot`` then
``x -= a * v`` with its temporary): on 1,241,240 parameters with 10 curvature pairs (news20, 20 classes),
one thread, the whole recursion took 35 ms against 41 ms with SciPy's BLAS ``ddot``/``daxpy`` and 58 ms
with NumPy. Vectors below :data:`MIN_FUSED_SIZE` entries take the NumPy path (microseconds either way),
so that a process that only fits small problems never imports numba.

numba is imported, and the kernel compiled (or loaded from its on-disk cache), on first use.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["MIN_FUSED_SIZE", "axpy_dot"]

# The NumPy path below this many entries (a two-loop recursion of 10 pairs on 2**16 parameters takes about a
# millisecond in NumPy; numba's import and its cached kernel's load cost about a second once per process).
MIN_FUSED_SIZE = 1 << 16


@functools.cache
def _kernel():
    from softmaxkit._numpy._vector_kernels import axpy_dot as kernel

    return kernel


def axpy_dot(x: np.ndarray, a: float, v: np.ndarray, w: np.ndarray | None = None) -> float:
    """``x += a * v`` in place, then return ``w . x`` (``w`` None: ``x . x``); 1-D float64 C-contiguous arrays.

    ``w`` may be ``x`` itself or ``v``. On vectors of at least :data:`MIN_FUSED_SIZE` entries one
    compiled pass; below, NumPy.
    """
    w = x if w is None else w
    if x.size < MIN_FUSED_SIZE:
        x += a * v
        return float(np.dot(w, x))
    return float(_kernel()(x, float(a), v, w))
