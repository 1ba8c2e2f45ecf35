"""svmlight / LIBSVM text (optionally .gz, .bz2, .xz) as sparse CSR batches, read in line-aligned byte blocks.

scikit-learn's :func:`~sklearn.datasets.load_svmlight_file` parses a whole file; here it parses one
block of whole lines at a time (its compiled parser, given an in-memory stream), so a file of any size
streams in memory bounded by the budget.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from softmaxkit._sources._base import (
    DEFAULT_MAX_BYTES,
    Batch,
    Source,
    check_dtype,
    check_max_bytes,
    split_to_budget,
)
from softmaxkit._sources._columns import to_labels
from softmaxkit._sources._csv import check_file
from softmaxkit._sources._errors import DataError, one_line

_BINARY_OPENERS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}
# A non-zero is at least 4 bytes of text ("1:1 ") and 12 parsed (a float64 and an int32 index): a block of
# max_bytes / 4 bytes of text parses to at most ~max_bytes (split_to_budget cuts what exceeds it).
_TEXT_PER_BUDGET = 4


def open_binary(path: Path):
    """``path`` opened for reading bytes, decompressed by its suffix."""
    module = _BINARY_OPENERS.get(path.suffix.lower())
    if module is None:
        return open(path, "rb")
    return __import__(module).open(path, "rb")


def line_blocks(path: Path, block_bytes: int) -> Iterator[bytes]:
    """The bytes of ``path`` in blocks of whole lines, each about ``block_bytes`` (more for one longer line)."""
    with open_binary(path) as handle:
        pending = b""
        while True:
            chunk = handle.read(block_bytes)
            if not chunk:
                if pending:
                    yield pending
                return
            pending += chunk
            cut = pending.rfind(b"\n")
            if cut < 0:
                continue
            yield pending[: cut + 1]
            pending = pending[cut + 1 :]


class SvmlightSource(Source):
    """Rows of an svmlight/LIBSVM file as sparse batches (``scipy.sparse.csr_matrix``), streamed.

    Parameters
    ----------
    path : str or Path
        The file (``label index:value ...`` per line; ``#`` comments); ``.gz``, ``.bz2`` and ``.xz``
        are decompressed on the fly.
    n_features : int, optional
        The number of features (a sparse file does not say when its last features are all zero);
        default the largest index in the file.
    zero_based : bool or "auto", default "auto"
        Whether indices start at 0; "auto", as scikit-learn: one-based unless some index is 0.
    dtype : float32 or float64, default float64
        The dtype of the values.
    max_bytes : int, default 64 MiB
        The largest batch, in bytes of its arrays (values, indices, indptr, labels).

    Notes
    -----
    With ``n_features`` or ``zero_based`` left to the file, the first use reads the file once to
    find its largest and smallest index (and counts its rows); give both to skip that pass.
    The batches equal the rows of :func:`sklearn.datasets.load_svmlight_file` on the whole file.
    """

    sparse = True

    def __init__(
        self,
        path,
        *,
        n_features: int | None = None,
        zero_based: bool | str = "auto",
        dtype=np.float64,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self.path = check_file(path)
        self.name = self.path.name
        self.dtype = check_dtype(dtype)
        self.max_bytes = check_max_bytes(max_bytes)
        if zero_based not in (True, False, "auto"):
            raise ValueError(f"zero_based must be True, False or 'auto', got {zero_based!r}")
        if n_features is not None and (
            isinstance(n_features, bool) or not isinstance(n_features, int | np.integer) or n_features < 1
        ):
            raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
        self._n_features = None if n_features is None else int(n_features)
        self._zero_based = zero_based
        self._n_rows: int | None = None
        self._block_bytes = max(self.max_bytes // _TEXT_PER_BUDGET, 1 << 10)

    def _scan(self) -> None:
        """One pass for the largest and smallest index, and the row count (see Notes)."""
        largest, smallest, rows = -1, None, 0
        for block in self._blocks():
            X, _ = self._parse(block, zero_based=True, n_features=None, first_row=rows + 1)
            rows += X.shape[0]
            if X.nnz:
                largest = max(largest, int(X.indices.max()))
                low = int(X.indices.min())
                smallest = low if smallest is None else min(smallest, low)
        if rows == 0:
            raise DataError(f"{self.name} has no data rows")
        if self._zero_based == "auto":
            self._zero_based = smallest is None or smallest == 0
        if self._n_features is None:
            self._n_features = max(largest + (1 if self._zero_based else 0), 1)
        self._n_rows = rows

    @property
    def n_features(self) -> int:
        if self._n_features is None or self._zero_based == "auto":
            self._scan()
        return self._n_features

    @property
    def n_rows(self) -> int | None:
        return self._n_rows

    def __repr__(self) -> str:  # without the scan that n_features may need
        rows = self._n_rows if self._n_rows is not None else "?"
        features = self._n_features if self._n_features is not None else "?"
        return f"SvmlightSource({self.name!r}, {rows} x {features}, max_bytes={self.max_bytes})"

    def _blocks(self) -> Iterator[bytes]:
        try:
            yield from line_blocks(self.path, self._block_bytes)
        except (OSError, EOFError) as error:
            raise DataError(f"cannot read {self.name} as svmlight: {one_line(error)}") from None

    def _parse(self, block: bytes, *, zero_based: bool, n_features: int | None, first_row: int):
        from sklearn.datasets import load_svmlight_file

        try:
            X, y = load_svmlight_file(io.BytesIO(block), n_features=n_features, zero_based=zero_based, dtype=self.dtype)
        except ValueError as error:
            raise DataError(
                f"cannot read {self.name} as svmlight{self._locate(block, zero_based, n_features, first_row)}: "
                f"{one_line(error)}"
            ) from None
        return X, y

    def _locate(self, block: bytes, zero_based: bool, n_features: int | None, first_row: int) -> str:
        """`` at data row R`` for the first line of ``block`` that fails to parse alone (error path)."""
        from sklearn.datasets import load_svmlight_file

        row = first_row
        for line in block.splitlines():
            if not _is_data_line(line):
                continue
            try:
                load_svmlight_file(io.BytesIO(line + b"\n"), n_features=n_features, zero_based=zero_based)
            except ValueError:
                return f" at data row {row}"
            row += 1
        return ""

    def iter_batches(self) -> Iterator[Batch]:
        n_features = self.n_features  # scans the file first if the file must say
        rows = 0
        for block in self._blocks():
            first_row = rows + 1
            X, y = self._parse(block, zero_based=self._zero_based, n_features=n_features, first_row=first_row)
            if X.shape[0] == 0:
                continue
            if not np.isfinite(X.data).all():
                bad = int(np.flatnonzero(~np.isfinite(X.data))[0])
                row = first_row + int(np.searchsorted(X.indptr, bad, side="right")) - 1
                raise DataError(
                    f"{self.name}: feature {int(X.indices[bad])} has a missing or infinite value "
                    f"({float(X.data[bad])!r}) at data row {row}; fill or drop it before training"
                )
            X.sort_indices()
            labels = to_labels(y, name="label", source=self.name, first_row=first_row)
            yield from split_to_budget(Batch(X, labels, None), self.max_bytes, source=self.name, first_row=first_row)
            rows += X.shape[0]
        self._n_rows = rows


def _is_data_line(line: bytes) -> bool:
    text = line.split(b"#", 1)[0].strip()
    return bool(text)
