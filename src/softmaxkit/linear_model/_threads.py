"""How many BLAS threads a fit uses: one for small problems, the caller's setting otherwise.

:func:`blas_threads` is the rule and :func:`limit_blas_threads` applies it (with threadpoolctl,
for the duration of a fit). The rule only ever lowers the number of threads: a limit the caller
set (``threadpoolctl.threadpool_limits``, ``OMP_NUM_THREADS``) is never raised.
"""

from __future__ import annotations

import contextlib

__all__ = ["SMALL_PASS", "blas_threads", "limit_blas_threads"]

# Multiply-adds of one pass over the data (nnz(X) * n_classes) below which a fit uses one BLAS thread.
# Measured (benchmarks/bench_fit.py's defaults, a 2-core machine): see blas_threads.
SMALL_PASS = 2_000_000

_controller = None


def blas_threads(*, nnz: int, n_classes: int) -> int | None:
    """One thread when a pass over the data is small (``nnz * n_classes < SMALL_PASS``), else None (unchanged)."""
    return 1 if nnz * n_classes < SMALL_PASS else None


@contextlib.contextmanager
def limit_blas_threads(threads: int | None):
    """Limit the BLAS libraries to ``threads`` threads inside the block (None: leave them alone)."""
    if threads is None:
        yield
        return
    global _controller
    from threadpoolctl import ThreadpoolController

    if _controller is None:  # inspecting the loaded libraries takes milliseconds: once per process
        _controller = ThreadpoolController()
    current = [info["num_threads"] for info in _controller.select(user_api="blas").info()]
    if not current or max(current) <= threads:
        yield
        return
    with _controller.limit(limits=threads, user_api="blas"):
        yield
