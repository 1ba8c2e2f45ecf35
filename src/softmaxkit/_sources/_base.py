"""What every data source is: batches ``(X, y, sample_weight)`` under a memory budget, pass after pass.

The protocol the estimator and the command line rely on (:class:`Source`):

* ``iter_batches()`` starts a new pass over the data each time it is called (``iter(source)`` is
  the same); the batches of two passes are identical;
* every batch is a :class:`Batch` ``(X, y, sample_weight)``: ``X`` of shape (n, n_features) in
  ``dtype`` (a C-contiguous ndarray, or a ``scipy.sparse.csr_matrix`` when ``sparse``), ``y`` of
  shape (n,) (int64 or str labels; ``None`` when the source has no target) and ``sample_weight`` of
  shape (n,) float64 (``None`` when it has no weight column). Always three fields, so that the
  type of a batch never depends on an option;
* ``batch_nbytes(batch) <= max_bytes`` for every batch: the budget bounds one batch, not the file
  (the reader's own buffers come on top: about one more batch of text or Arrow columns);
* what is known cheaply is exposed without a pass: ``n_features``, ``feature_names`` (or ``None``),
  ``n_rows`` (``None`` until a pass has counted them, for text files), ``name`` (for messages).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from softmaxkit._sources._errors import DataError

# 64 MiB: per-batch overhead (a Python call per batch, Arrow's per-block work) is then far below the
# parsing itself (measured in benchmarks/bench_sources.py), and a batch still fits a cache many times over.
DEFAULT_MAX_BYTES = 1 << 26
LABEL_BYTES = 8  # an int64 label; string labels are measured batch by batch (see split_to_budget)


class Batch(NamedTuple):
    """One batch of rows: features ``X``, labels ``y`` (or ``None``) and ``sample_weight`` (or ``None``)."""

    X: object
    y: np.ndarray | None
    sample_weight: np.ndarray | None


def batch_nbytes(batch: Batch) -> int:
    """The bytes a batch holds: its arrays' ``nbytes`` (data, indices and indptr for sparse ``X``)."""
    X = batch.X
    total = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes if hasattr(X, "indptr") else X.nbytes
    for part in (batch.y, batch.sample_weight):
        if part is not None:
            total += part.nbytes
    return int(total)


def check_max_bytes(max_bytes) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int | np.integer) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    return int(max_bytes)


def check_dtype(dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved


def rows_per_batch(row_bytes: int, max_bytes: int, *, source: str) -> int:
    """How many rows of ``row_bytes`` each fit in ``max_bytes``; an error if not even one does."""
    rows = max_bytes // max(row_bytes, 1)
    if rows < 1:
        raise DataError(f"max_bytes must be at least one row of {source} ({row_bytes} bytes), got {max_bytes}")
    return int(rows)


def split_to_budget(batch: Batch, max_bytes: int, *, source: str, first_row: int = 1) -> Iterator[Batch]:
    """``batch`` itself when it fits ``max_bytes``, else consecutive row slices of it that each fit.

    Dense batches are sized to the budget before they are read; this catches what a row width
    cannot predict (long string labels, sparse rows of many non-zeros).
    """
    total = batch_nbytes(batch)
    if total <= max_bytes:
        yield batch
        return
    n = batch.X.shape[0]
    if hasattr(batch.X, "indptr"):
        indptr = batch.X.indptr
        per_row = np.diff(indptr) * (batch.X.data.itemsize + batch.X.indices.itemsize) + batch.X.indptr.itemsize
    else:
        per_row = np.full(n, batch.X.nbytes // max(n, 1), dtype=np.int64)
    for part in (batch.y, batch.sample_weight):
        if part is not None:
            per_row = per_row + part.itemsize
    fixed = batch.X.indptr.itemsize if hasattr(batch.X, "indptr") else 0  # indptr has n + 1 entries
    start = 0
    cumulative = np.concatenate([[0], np.cumsum(per_row)])
    while start < n:
        # the last stop with cumulative[stop] - cumulative[start] + fixed <= max_bytes
        stop = int(np.searchsorted(cumulative, cumulative[start] + max_bytes - fixed, side="right")) - 1
        if stop <= start:
            raise DataError(
                f"max_bytes must be at least one row of {source} ({int(per_row[start]) + fixed} bytes at data row "
                f"{first_row + start}), got {max_bytes}"
            )
        yield Batch(
            batch.X[start:stop],
            None if batch.y is None else batch.y[start:stop],
            None if batch.sample_weight is None else batch.sample_weight[start:stop],
        )
        start = stop


class Source(abc.ABC):
    """A re-iterable data source (see the module docstring for the protocol)."""

    name: str
    dtype: np.dtype
    max_bytes: int
    sparse: bool = False

    @property
    @abc.abstractmethod
    def n_features(self) -> int:
        """The number of feature columns."""

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """The feature columns' names, ``None`` where the format has none."""
        return None

    @property
    def n_rows(self) -> int | None:
        """The number of rows, ``None`` while unknown (a text file before its first full pass)."""
        return None

    @property
    def has_target(self) -> bool:
        return True

    @property
    def has_weights(self) -> bool:
        return False

    @abc.abstractmethod
    def iter_batches(self) -> Iterator[Batch]:
        """A new pass over the data: every row once, in the file's order, in batches of at most ``max_bytes``."""

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_batches()

    def __repr__(self) -> str:
        rows = self.n_rows if self.n_rows is not None else "?"
        return f"{type(self).__name__}({self.name!r}, {rows} x {self.n_features}, max_bytes={self.max_bytes})"
