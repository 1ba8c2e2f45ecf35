"""CSV and TSV tables (optionally .gz/.bz2 compressed) streamed through pyarrow's ``open_csv`` reader."""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from softmaxkit._sources._arrow import LabelKind, RowLimit, assemble_batches
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
from softmaxkit._sources._columns import LABEL_TYPES, plan_columns
from softmaxkit._sources._errors import DataError, one_line

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_SAMPLE_BYTES = 1 << 16  # the head of the file, from which the column names and the longest row are read
_BLOCK_MIN, _BLOCK_MAX = 1 << 16, 1 << 20  # the bounds of pyarrow's block of text (see CsvSource.__init__)


def open_text(path: Path):
    """``path`` opened for reading text, decompressed by its suffix (``.gz``, ``.bz2``, ``.xz``)."""
    return _OPENERS.get(path.suffix.lower(), open)(path, "rt", newline="")


def check_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if path.is_dir():
        raise DataError(f"data file {path} is a directory, not a file")
    return path


class CsvSource(Source):
    """Rows of a CSV (or TSV) file in batches, streamed: the file is never read whole.

    Parameters
    ----------
    path : str or Path
        The table; ``.gz``, ``.bz2`` or ``.xz`` is decompressed on the fly.
    target : str or int or None, default -1
        The target column by name or position (negative counts from the end); ``None``: no target
        (the batches' ``y`` is ``None``).
    features : sequence of str or int, optional
        The feature columns in order; default every column but the target and the weight.
    weight : str or int, optional
        A column of sample weights (finite, non-negative).
    header : bool, default True
        Whether the first row names the columns; without one they are named ``"0"``, ``"1"``, ...
    delimiter : str, default ","
        The field separator (``"\\t"`` for TSV).
    dtype : float32 or float64, default float64
        The dtype of the features ``X``.
    max_bytes : int, default 64 MiB
        The largest batch, in bytes of its arrays; rows per batch = ``max_bytes // row width``.
    label_type : {"infer", "int", "str"}, default "infer"
        How labels are read: whole numbers as int64 and anything else as names ("infer"; a stream
        cannot look ahead, so names after whole numbers are an error that suggests "str"), whole
        numbers only ("int"), or every label as its text ("str").

    Notes
    -----
    Values are parsed by pyarrow (correctly rounded, as ``pandas.read_csv(float_precision=
    "round_trip")``); empty fields and ``NA``/``NaN``/``null`` are missing values, which are an
    error in features, labels and weights alike. Batches have exactly the same number of rows,
    the last one fewer. Memory: one batch plus about one block of text and its Arrow columns.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = pathlib.Path(folder.name) / "t.csv"
    >>> _ = path.write_text("a,b,label\\n1,2,cat\\n3,4,dog\\n5,6,cat\\n")
    >>> source = CsvSource(path, max_bytes=64)
    >>> source.feature_names, source.n_features
    (('a', 'b'), 2)
    >>> [(X.shape, y.tolist()) for X, y, _ in source]
    [((2, 2), ['cat', 'dog']), ((1, 2), ['cat'])]
    """

    def __init__(
        self,
        path,
        *,
        target: str | int | None = -1,
        features: Sequence[str | int] | None = None,
        weight: str | int | None = None,
        header: bool = True,
        delimiter: str = ",",
        dtype=np.float64,
        max_bytes: int = DEFAULT_MAX_BYTES,
        label_type: str = "infer",
    ):
        self.path = check_file(path)
        self.name = self.path.name
        self.dtype = check_dtype(dtype)
        self.max_bytes = check_max_bytes(max_bytes)
        if label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {', '.join(LABEL_TYPES)}, got {label_type!r}")
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {delimiter!r}")
        self.label_type = label_type
        self.header = bool(header)
        self.delimiter = delimiter
        self.columns, longest_row = self._head()
        self.plan = plan_columns(self.columns, target=target, features=features, weight=weight, source=self.name)
        row_bytes = len(self.plan.features) * self.dtype.itemsize
        row_bytes += (LABEL_BYTES if self.plan.target else 0) + (8 if self.plan.weight else 0)
        self.batch_rows = rows_per_batch(row_bytes, self.max_bytes, source=self.name)
        # Blocks of text of max_bytes / 16, within [64 KiB, 1 MiB]: pyarrow's reader holds ~30 blocks' worth of
        # buffers at its peak (measured: 1 MiB blocks, 29 MiB; 100 kB, 3 MiB), so that stays near 2 budgets,
        # while large blocks parse wide rows faster (50 columns: 1 MiB blocks 2.4e5 rows/s, 64 KiB 1.1e5;
        # benchmarks/bench_sources.py). assemble_batches joins the blocks into batches. A block must hold
        # a whole row: at least 16 times the longest row of the head of the file.
        self._block_size = int(max(16 * longest_row, min(_BLOCK_MAX, max(_BLOCK_MIN, self.max_bytes // 16))))
        self._n_rows: int | None = None

    @property
    def n_features(self) -> int:
        return len(self.plan.features)

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        return self.plan.features if self.header else None

    @property
    def n_rows(self) -> int | None:
        return self._n_rows

    @property
    def has_target(self) -> bool:
        return self.plan.target is not None

    @property
    def has_weights(self) -> bool:
        return self.plan.weight is not None

    def _head(self) -> tuple[list[str], int]:
        """The column names and the longest row in bytes, from the head of the file."""
        try:
            with open_text(self.path) as handle:
                sample = handle.read(_SAMPLE_BYTES)
        except (OSError, EOFError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read {self.name} as csv: {one_line(error)}") from None
        lines = sample.splitlines()
        if not lines or not lines[0].strip():
            raise DataError(f"{self.name} is empty: it must start with a header row or a data row")
        first = next(csv.reader([lines[0]], delimiter=self.delimiter, skipinitialspace=True))
        columns = [c for c in first] if self.header else [str(i) for i in range(len(first))]
        body = lines[1:] if self.header else lines
        if len(body) > 1 and len(sample) == _SAMPLE_BYTES:
            body = body[:-1]  # the last line of a cut sample is partial
        return columns, max(len(line.encode()) + 1 for line in [lines[0], *body])

    def _reader(self, *, column_types: dict, include: Sequence[str]):
        import pyarrow.csv as pacsv

        return pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(
                column_names=self.columns,
                skip_rows=1 if self.header else 0,
                block_size=self._block_size,
                use_threads=False,
            ),
            parse_options=pacsv.ParseOptions(delimiter=self.delimiter),
            convert_options=pacsv.ConvertOptions(column_types=column_types, include_columns=list(include)),
        )

    def iter_batches(self) -> Iterator[Batch]:
        import pyarrow as pa

        plan = self.plan
        numeric = list(plan.features) + ([plan.weight] if plan.weight else [])
        types = {name: pa.float64() for name in numeric}
        if plan.target is not None:
            types[plan.target] = pa.string()
        include = [c for c in self.columns if c in types]
        kind = LabelKind(self.label_type)
        limit = RowLimit(self.batch_rows, self.max_bytes)
        row = 1
        try:
            reader = self._reader(column_types=types, include=include)
            for batch in assemble_batches(reader, plan, limit=limit, dtype=self.dtype, source=self.name, kind=kind):
                yield from split_to_budget(batch, self.max_bytes, source=self.name, first_row=row)
                row += batch.X.shape[0]
        except pa.ArrowInvalid as error:
            raise self._explain(error, first_row=row) from None
        except (OSError, EOFError) as error:
            raise DataError(f"cannot read {self.name} as csv: {one_line(error)}") from None
        if row == 1:
            raise DataError(f"{self.name} has no data rows")
        self._n_rows = row - 1

    def _explain(self, error, *, first_row: int) -> DataError:
        """A pyarrow parse or conversion error as a :class:`DataError` naming the column and data row."""
        text = one_line(error)
        conversion = re.search(
            r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to \w+: invalid value '(.*)'", text
        )
        if conversion:
            column = self.columns[int(conversion.group(1))]
            row, value = self._locate_non_number(column, first_row)
            role = "weight" if column == self.plan.weight else "feature"
            return DataError(
                f"{self.name}: non-numeric {role} column {column!r} (first non-number: {value!r} at data row {row}); "
                f"{role}s must be numbers (encode categories as numbers, e.g. one-hot columns, before training)"
            )
        if "straddling" in text:
            return DataError(
                f"cannot read {self.name} as csv: a row from data row {first_row} on is longer than "
                f"{self._block_size} bytes, 16 times the longest of the file's first rows: {text}"
            )
        if "Expected" in text and "columns, got" in text:
            found = self._locate_ragged_row()
            where = f" at data row {found[0]} ({found[1]} fields)" if found else ""
            return DataError(
                f"{self.name}: every row must have {len(self.columns)} fields like the "
                f"{'header' if self.header else 'first row'}, got a row of another length{where}; "
                "check the delimiter and the header"
            )
        return DataError(f"cannot read {self.name} as csv: {text}")

    def _locate_non_number(self, column: str, first_row: int) -> tuple[int | str, str]:
        """The data row and text of the first value of ``column`` that is not a number (error path: a new pass)."""
        import pyarrow as pa

        reader = self._reader(column_types={column: pa.string()}, include=[column])
        row = 1
        for batch in reader:
            for value in batch.column(0).to_pylist():
                if value is not None:
                    try:
                        float(value)
                    except ValueError:
                        return row, value.strip()
                row += 1
        return f">= {first_row}", "?"

    def _locate_ragged_row(self) -> tuple[int, int] | None:
        """The first data row (and its field count) whose number of fields differs from the header's."""
        with open_text(self.path) as handle:
            rows = csv.reader(handle, delimiter=self.delimiter)
            if self.header:
                next(rows, None)
            for number, fields in enumerate(rows, start=1):
                if fields and len(fields) != len(self.columns):
                    return number, len(fields)
        return None
