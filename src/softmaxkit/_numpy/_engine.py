"""Where the compiled kernels run and where the NumPy reference path does: decided here, once.

The NumPy functions of the package have two implementations with one specification: the NumPy
path (:func:`softmaxkit._numpy._softmax.stable_exp` and the array code around it), which is the
reference the tests check everything against, and the compiled row kernels of
:mod:`softmaxkit._numpy._kernels` (numba), one fused, multi-threaded pass per row. A function
asks :func:`use_kernel` which one to run, with ``engine``:

* ``"auto"`` (what the public functions pass): the kernels wherever they apply (float32 or
  float64 data whose reduced axes are the trailing ones of a C-contiguous array, a free ``(M, C)``
  view) and the problem has at least :data:`MIN_KERNEL_SIZE` entries; else the NumPy path;
* ``"numpy"``: the NumPy path;
* ``"kernel"``: the kernels, or a ``ValueError`` where they do not apply (for the tests).

numba is imported, and each kernel compiled (or loaded from its on-disk cache), on first use, never
at ``import softmaxkit``.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import numpy as np

ENGINES = ("auto", "numpy", "kernel")

# Below this many entries the NumPy path is used: it takes under 0.1 ms there, and a process that
# only ever meets small arrays (the CLI's demo on the digits, the doctests) then never imports numba
# (0.3 s) nor loads the compiled kernels from their cache (0.4 s for the first, a few ms for each
# further one; measured on the 2-core development machine). Above it the kernels are faster per
# call (see benchmarks/bench_numerics.py).
MIN_KERNEL_SIZE = 1 << 16

# Below this many entries a kernel runs on one thread: starting the second costs more than it saves.
# Measured on the 2-core machine (float32 softmax, 1 vs 2 numba threads): see PARALLEL_MIN_SIZE's
# measurement in benchmarks/README.md ("Threads").
PARALLEL_MIN_SIZE = 1 << 17

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return engine


def as_rows(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray | None:
    """``array`` as ``(M, C)`` rows over the (normalised, non-negative) ``axes``, or None.

    A view, never a copy: it exists where the kernels can read ``array`` as it is, that is a
    float32/float64 C-contiguous array reduced over its trailing axes.
    """
    n_axes = len(axes)
    if (
        array.dtype not in _KERNEL_DTYPES
        or not array.flags.c_contiguous
        or array.size == 0
        or n_axes == 0
        or sorted(axes) != list(range(array.ndim - n_axes, array.ndim))
    ):
        return None
    return array.reshape(-1, math.prod(array.shape[array.ndim - n_axes :]))


def use_kernel(engine: str, rows: np.ndarray | None) -> bool:
    """Whether to run the kernels on ``rows`` (from :func:`as_rows`; None where they cannot)."""
    if check_engine(engine) == "numpy":
        return False
    if engine == "kernel":
        if rows is None:
            raise ValueError(
                "engine='kernel' needs float32/float64 rows along the trailing axes of a C-contiguous array"
            )
        return True
    return rows is not None and rows.size >= MIN_KERNEL_SIZE


@functools.cache
def _kernels() -> ModuleType:
    from softmaxkit._numpy import _kernels

    return _kernels


def run(name: str, *args, n_entries: int) -> None:
    """Call the kernel ``name`` of :mod:`._kernels`, on as many numba threads as ``n_entries`` warrants.

    The thread count is numba's own (``numba.set_num_threads`` from the calling thread, restored after
    the call), at most what it was: a user's lower setting is kept, no other library's is touched.
    """
    kernel = getattr(_kernels(), name)
    if n_entries >= PARALLEL_MIN_SIZE:
        kernel(*args)
        return
    import numba

    previous = numba.get_num_threads()
    if previous == 1:
        kernel(*args)
        return
    numba.set_num_threads(1)
    try:
        kernel(*args)
    finally:
        numba.set_num_threads(previous)
