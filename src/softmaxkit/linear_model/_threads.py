"""How many BLAS threads a fit uses: one for small problems and on a machine with no idle core.

:func:`blas_threads` is the rule and :func:`limit_blas_threads` applies it (with threadpoolctl,
for the duration of a fit). The rule only ever lowers the number of threads: a limit the caller
set (``threadpoolctl.threadpool_limits``, ``OMP_NUM_THREADS``) is never raised.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["SMALL_PASS", "blas_threads", "limit_blas_threads"]

# Multiply-adds of one pass over the data (nnz(X) * n_classes) below which a fit uses one BLAS thread.
# Measured (newton-cg fits, median of 5 interleaved rounds, 2-core machine under load): two threads against
# one took 2.2x (digits, 1.2e6 per pass), 6.0x (pendigits, 1.2e6), 6.2x (satimage, 9.6e5), 5.7x (covtype,
# 4.3e6), 3.2x (letter, 6.7e6) and 8.6x (make_classification 20000 x 50 x 10, 1e7) the time: the
# products of one block of rows are too small for a second thread to pay for its synchronisation.
SMALL_PASS = 10_000_000

_controller = None


def blas_threads(*, nnz: int, n_classes: int, load: float | None = None, cpus: int | None = None) -> int | None:
    """One thread for a small pass (``nnz * n_classes < SMALL_PASS``) or a busy machine, else None (unchanged).

    A machine is busy when its 1-minute load average (``load``, default ``os.getloadavg()``) is at
    least its number of CPUs (``cpus``, default ``os.cpu_count()``) minus one half: then no core is
    idle, and a second BLAS thread only contends with its own process and the others (measured on
    the machine above: 5.7x and 13.4x the time with two threads at 5e7 and 2e8 multiply-adds per
    pass, load 7-9).
    """
    if nnz * n_classes < SMALL_PASS:
        return 1
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cpus = os.cpu_count() or 1 if cpus is None else cpus
    return 1 if load >= cpus - 0.5 else None


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
