"""Predictions in row chunks: nothing of ``n_samples x n_classes`` is allocated beyond the array returned.

Every prediction method of :class:`~softmaxkit.linear_model.SoftmaxRegression` computes the logits
``X[rows] @ coef_.T + intercept_`` for a chunk of rows at a time, reduces or transforms the chunk
(argmax, softmax, log-softmax), and writes it into its output: ``predict`` returns ``n_samples``
labels with at most one chunk of logits alive, ``predict_proba`` one ``n_samples x n_classes``
array (the result) and one chunk of temporaries. The chunk holds
``max(1, PREDICT_CHUNK_BYTES // (TEMPORARIES_PER_CHUNK * itemsize * n_classes))`` rows.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator

import numpy as np

from softmaxkit._numpy._softmax import log_softmax, softmax

__all__ = [
    "PREDICT_CHUNK_BYTES",
    "TEMPORARIES_PER_CHUNK",
    "chunk_rows",
    "iter_chunks",
    "logits_of",
    "predicted",
    "transformed",
]

# The memory of one chunk's temporaries, in bytes: 32 MiB keeps a chunk of float64 logits of
# 1,000 classes at 1,048 rows, large enough that the matrix product runs at BLAS speed.
PREDICT_CHUNK_BYTES = 32 * 2**20
# Chunk-sized arrays alive at once, counted with room: the logits and the (log-)softmax's result and
# temporaries. Measured with tracemalloc (tests/test_streaming_predict.py, after the compiled
# kernels' first load, which allocates about 30 MB once): (log_)softmax of r x 10,000 float64 peaks
# at 1.0 times its result for r >= 26 rows, 2.0 (softmax) and 4.3 (log_softmax) for 2-8 rows.
TEMPORARIES_PER_CHUNK = 4


def chunk_rows(n_classes: int, itemsize: int, budget: int = PREDICT_CHUNK_BYTES) -> int:
    """Rows per chunk so that :data:`TEMPORARIES_PER_CHUNK` arrays of ``rows x n_classes`` fit in ``budget`` bytes."""
    if not (isinstance(budget, numbers.Integral) and budget > 0):
        raise ValueError(f"chunk_bytes must be a positive integer, got {budget!r}")
    return max(1, int(budget) // (TEMPORARIES_PER_CHUNK * itemsize * max(n_classes, 1)))


def logits_of(X, coef: np.ndarray, intercept: np.ndarray) -> Callable[[int, int], np.ndarray]:
    """``logits(start, stop)``: ``X[start:stop] @ coef.T + intercept`` (``X`` dense or CSR)."""
    coef_t = coef.T
    return lambda start, stop: X[start:stop] @ coef_t + intercept


def iter_chunks(
    logits: Callable[[int, int], np.ndarray], n_samples: int, rows: int, transform: Callable[[np.ndarray], np.ndarray]
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, transform(logits(start, stop)))`` for consecutive chunks of ``rows`` rows."""
    for start in range(0, n_samples, rows):
        yield start, transform(logits(start, min(start + rows, n_samples)))


def transformed(logits, n_samples: int, n_classes: int, dtype, rows: int, kind: str) -> np.ndarray:
    """The ``n_samples x n_classes`` logits (``kind="logits"``), probabilities ("proba") or log-probabilities ("log_proba")."""
    transform = {
        "logits": lambda z: z,
        "proba": lambda z: softmax(z, axis=1),
        "log_proba": lambda z: log_softmax(z, axis=1),
    }
    out = np.empty((n_samples, n_classes), dtype=dtype)
    for start, chunk in iter_chunks(logits, n_samples, rows, transform[kind]):
        out[start : start + len(chunk)] = chunk
    return out


def predicted(logits, n_samples: int, rows: int) -> np.ndarray:
    """The index of the largest logit of each row (the first one on ties)."""
    out = np.empty(n_samples, dtype=np.intp)
    for start, chunk in iter_chunks(logits, n_samples, rows, lambda z: np.argmax(z, axis=1)):
        out[start : start + len(chunk)] = chunk
    return out
