"""Arrays as a source: in memory, ``np.memmap``, or ``.npy`` files opened memory-mapped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from softmaxkit._sources._base import (
    DEFAULT_MAX_BYTES,
    LABEL_BYTES,
    Batch,
    Source,
    check_dtype,
    check_max_bytes,
    rows_per_batch,
    split_to_budget,
)
from softmaxkit._sources._columns import check_finite, check_weights, to_labels
from softmaxkit._sources._errors import DataError, one_line
from softmaxkit._sources._raw import RawArray, npy_array


def _open(array, *, role: str):
    """An array as given, or a ``.npy`` file (a path) to be read by explicit reads (a :class:`RawArray`).

    Explicit reads keep a pass's memory at one batch (see :mod:`softmaxkit._sources._raw`); a file
    they cannot read (Fortran order) is opened memory-mapped instead.
    """
    if isinstance(array, str | Path):
        path = Path(array)
        if not path.is_file():
            raise DataError(f"{role} file {path} does not exist")
        try:
            raw = npy_array(path)
            return (raw if raw is not None else np.load(path, mmap_mode="r", allow_pickle=False)), path.name
        except (ValueError, OSError, EOFError) as error:
            raise DataError(f"cannot read {path.name} as npy: {one_line(error)}") from None
    import scipy.sparse as sp

    if sp.issparse(array):
        return sp.csr_matrix(array), role
    return np.asarray(array), role


class ArraySource(Source):
    """Rows of arrays in batches: ndarrays, ``np.memmap``, ``.npy`` files (memory-mapped) or a sparse ``X``.

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features), scipy sparse matrix, or path of a ``.npy`` file
        The features; a file is read one batch at a time (by explicit reads: the page cache holds
        the file, not the process). An ``np.memmap`` given here is read through its map, whose
        touched pages count in the process's resident memory.
    y : array-like of shape (n_rows,), path of a ``.npy`` file, or None
        The labels (whole numbers or names), or none.
    sample_weight : array-like of shape (n_rows,), path, or None
        Finite non-negative weights, or none.
    dtype : float32 or float64, default float64
        The dtype of the batches' ``X`` (a copy of the rows, cast).
    max_bytes : int, default 64 MiB
        The largest batch, in bytes of its arrays.

    Examples
    --------
    >>> source = ArraySource(np.arange(12.0).reshape(6, 2), [0, 1, 0, 1, 0, 1], max_bytes=3 * 24)
    >>> [X.shape[0] for X, y, w in source], source.n_rows
    ([3, 3], 6)
    """

    def __init__(self, X, y=None, *, sample_weight=None, dtype=np.float64, max_bytes: int = DEFAULT_MAX_BYTES):
        self.dtype = check_dtype(dtype)
        self.max_bytes = check_max_bytes(max_bytes)
        self._X, self.name = _open(X, role="X")
        self.sparse = hasattr(self._X, "indptr")
        if len(self._X.shape) != 2:
            raise DataError(f"{self.name}: X must be a 2-D array (samples x features), got shape {self._X.shape}")
        if not self.sparse and not (np.issubdtype(self._X.dtype, np.number) or self._X.dtype == np.bool_):
            raise DataError(f"{self.name}: X must be numeric, got dtype {self._X.dtype}")
        n = self._X.shape[0]
        self._y = self._vector(y, "y", n)
        self._w = self._vector(sample_weight, "sample_weight", n)
        if self.sparse:
            self.batch_rows = None
        else:
            row_bytes = self._X.shape[1] * self.dtype.itemsize
            row_bytes += (LABEL_BYTES if self._y is not None else 0) + (8 if self._w is not None else 0)
            self.batch_rows = rows_per_batch(row_bytes, self.max_bytes, source=self.name)

    def _vector(self, values, role: str, n: int):
        if values is None:
            return None
        array, _ = _open(values, role=role)
        if len(array.shape) != 1 or array.shape[0] != n:
            raise DataError(
                f"{self.name}: {role} must be a 1-D array with one value per row of X ({n}), got shape {array.shape}"
            )
        return array

    @property
    def n_features(self) -> int:
        return int(self._X.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self._X.shape[0])

    @property
    def has_target(self) -> bool:
        return self._y is not None

    @property
    def has_weights(self) -> bool:
        return self._w is not None

    def iter_batches(self) -> Iterator[Batch]:
        if self.sparse:
            yield from self._sparse_batches()
            return
        with contextlib.ExitStack() as stack:
            parts = [p for p in (self._X, self._y, self._w) if isinstance(p, RawArray)]
            handles = {id(p): stack.enter_context(open(p.path, "rb")) for p in parts}

            def rows(part, start, stop):
                if isinstance(part, RawArray):
                    return part.read(handles[id(part)], start, stop)
                return part[start:stop]

            for start in range(0, self.n_rows, self.batch_rows):
                stop = min(start + self.batch_rows, self.n_rows)
                X = np.array(rows(self._X, start, stop), dtype=self.dtype, order="C")
                check_finite(X, None, source=self.name, first_row=start + 1)
                yield self._batch(X, start, stop, rows)

    def _batch(self, X, start: int, stop: int, rows=lambda part, start, stop: part[start:stop]) -> Batch:
        y = w = None
        if self._y is not None:
            y = to_labels(np.asarray(rows(self._y, start, stop)), name="y", source=self.name, first_row=start + 1)
        if self._w is not None:
            w = np.array(rows(self._w, start, stop), dtype=np.float64)
            check_weights(w, name="sample_weight", source=self.name, first_row=start + 1)
        return Batch(X, y, w)

    def _sparse_batches(self) -> Iterator[Batch]:
        """Row ranges of the CSR matrix that fit the budget (its rows' non-zeros counted)."""
        X = self._X
        per_row = np.diff(X.indptr) * (self.dtype.itemsize + X.indices.itemsize) + X.indptr.itemsize
        per_row += (LABEL_BYTES if self._y is not None else 0) + (8 if self._w is not None else 0)
        cumulative = np.concatenate([[0], np.cumsum(per_row)])
        start = 0
        while start < self.n_rows:
            stop = int(np.searchsorted(cumulative, cumulative[start] + self.max_bytes - X.indptr.itemsize, "right")) - 1
            stop = max(stop, start + 1)
            part = X[start:stop].astype(self.dtype)
            if not np.isfinite(part.data).all():
                bad = int(np.flatnonzero(~np.isfinite(part.data))[0])
                row = start + int(np.searchsorted(part.indptr, bad, side="right"))
                raise DataError(f"{self.name}: X has a missing or infinite value at row {row}")
            yield from split_to_budget(self._batch(part, start, stop), self.max_bytes, source=self.name)
            start = stop
