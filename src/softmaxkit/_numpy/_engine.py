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

# Below this many entries the NumPy path is used: it takes well under a millisecond there, and a
# process that only ever meets small arrays (the CLI's demo on the digits, the doctests) then never
# imports numba nor loads a kernel. The first kernel call of a process costs about 1 s with the
# kernels in numba's on-disk cache (numba's import, its threading layer, the cached code), and
# about 7 s per kernel and dtype the very first time, when numba compiles it (measured on the
# 2-core development machine under load 6: float32 softmax and cross_entropy_with_grad, 1e6
# entries); later calls cost what bench_numerics.py reports.
MIN_KERNEL_SIZE = 1 << 16

# Below this many entries (about 1 ms of one thread's work) a kernel runs on one thread, above it on
# numba's default (all the cores). A second thread saves at most half of that millisecond, and costs
# several when the cores are busy: measured on the 2-core development machine under the load of other
# jobs (load average 6), float32 softmax, median of 15 interleaved calls, 1 vs 2 threads:
#   entries   2^12    2^14    2^16    2^18    2^20    2^22
#   C = 10    0.08 vs 4.6 ms, 0.14 vs 4.6, 0.27 vs 5.1, 0.81 vs 5.0, 2.9 vs 7.1, 11.3 vs 14.2
#   C = 1000  0.08 vs 7.1 ms, 0.10 vs 5.5, 0.18 vs 6.4, 0.47 vs 6.3, 1.7 vs 2.3, 6.0 vs 7.0
# (the waits are the second thread's scheduling on busy cores, the "35x slower with two threads";
# on idle cores a second thread can at best halve the large cases: bench_numerics.py times 1 and 2).
PARALLEL_MIN_SIZE = 1 << 20

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
    """Call the kernel ``name`` of :mod:`._kernels`, on one thread or numba's, as ``n_entries`` warrants.

    The parallel kernel uses numba's threads (as many as ``numba.get_num_threads()``, so a user's lower
    setting is kept); the one-thread one starts none. No library's thread setting is changed.
    """
    kernel = getattr(_kernels(), name)
    (kernel if n_entries >= PARALLEL_MIN_SIZE else kernel.serial)(*args)
