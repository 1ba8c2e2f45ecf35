"""Parquet: a file or a folder of files, streamed through pyarrow's dataset API in the files' order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from softmaxkit._sources._arrow import LabelKind, RowLimit, assemble_batches, numeric_type
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
from softmaxkit._sources._errors import DataError, one_line, short_list

_SUFFIXES = (".parquet", ".pq")


def parquet_files(path: Path) -> list[Path]:
    """``path`` itself, or the Parquet files under the folder ``path`` sorted by their relative path.

    Names starting with ``.`` or ``_`` (``_SUCCESS``, ``_metadata``, hidden files) are skipped,
    as pyarrow's dataset discovery skips them.
    """
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_dir():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in _SUFFIXES
        and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"{path} must hold Parquet files (*.parquet, *.pq), got none")
    return files


class ParquetSource(Source):
    """Rows of a Parquet file, or of a folder of Parquet files read one after another, in batches.

    Parameters
    ----------
    path : str or Path
        A Parquet file, or a folder whose ``*.parquet``/``*.pq`` files (sorted by relative path,
        recursively) hold one table with the same columns.
    target, features, weight, dtype, max_bytes, label_type
        As in :class:`~softmaxkit.sources.CsvSource`.

    Notes
    -----
    ``n_rows`` is known at once (from the files' metadata). Row groups are read one at a time: the
    memory beside the batches is about two row groups' columns (pyarrow writes up to 1,048,576 rows
    per group by default; write smaller groups, ``row_group_size=``, to read under a small budget).
    """

    def __init__(
        self,
        path,
        *,
        target: str | int | None = -1,
        features: Sequence[str | int] | None = None,
        weight: str | int | None = None,
        dtype=np.float64,
        max_bytes: int = DEFAULT_MAX_BYTES,
        label_type: str = "infer",
    ):
        import pyarrow as pa
        import pyarrow.dataset as ds

        self.path = Path(path)
        self.name = self.path.name
        self.dtype = check_dtype(dtype)
        self.max_bytes = check_max_bytes(max_bytes)
        if label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {', '.join(LABEL_TYPES)}, got {label_type!r}")
        self.label_type = label_type
        self.files = parquet_files(self.path)
        try:
            self._dataset = ds.dataset([str(f) for f in self.files], format="parquet")
            self._n_rows = int(self._dataset.count_rows())
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(f"cannot read {self.name} as parquet: {one_line(error)}") from None
        schema = self._dataset.schema
        self.columns = [str(c) for c in schema.names]
        self.plan = plan_columns(self.columns, target=target, features=features, weight=weight, source=self.name)
        numbers = list(self.plan.features) + ([self.plan.weight] if self.plan.weight else [])
        bad = [c for c in numbers if not numeric_type(schema.field(c).type)]
        if bad:
            noun = "column" if len(bad) == 1 else "columns"
            raise DataError(
                f"{self.name}: non-numeric feature {noun} {short_list(bad)} (type {schema.field(bad[0]).type}); "
                "features must be numbers (encode categories as numbers, e.g. one-hot columns, before training)"
            )
        row_bytes = len(self.plan.features) * self.dtype.itemsize
        row_bytes += (LABEL_BYTES if self.plan.target else 0) + (8 if self.plan.weight else 0)
        self.batch_rows = rows_per_batch(row_bytes, self.max_bytes, source=self.name)

    @property
    def n_features(self) -> int:
        return len(self.plan.features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.plan.features

    @property
    def n_rows(self) -> int:
        return self._n_rows

    @property
    def has_target(self) -> bool:
        return self.plan.target is not None

    @property
    def has_weights(self) -> bool:
        return self.plan.weight is not None

    def _row_groups(self, columns: list[str]) -> Iterator:
        """The record batches of one row group after another, in the files' order, one group in memory at a time.

        Through the dataset's fragments, row group by row group, without pre-buffering: the dataset's
        own scanner (``to_batches``, even with ``batch_readahead=1``) read far ahead, measured on
        400,000 x 51 float64 in row groups of 65,536: +303 MB of peak memory against +122 MB here.
        """
        import pyarrow.dataset as ds

        options = ds.ParquetFragmentScanOptions(pre_buffer=False)
        for fragment in self._dataset.get_fragments():
            for group in fragment.split_by_row_group():
                table = group.to_table(columns=columns, fragment_scan_options=options)
                yield from table.to_batches()
                del table

    def iter_batches(self) -> Iterator[Batch]:
        import pyarrow as pa

        plan = self.plan
        wanted = [c for c in self.columns if c in {*plan.features, plan.target, plan.weight}]
        kind = LabelKind(self.label_type)
        limit = RowLimit(self.batch_rows, self.max_bytes)
        row = 1
        scanned = self._row_groups(wanted)
        try:
            for batch in assemble_batches(scanned, plan, limit=limit, dtype=self.dtype, source=self.name, kind=kind):
                yield from split_to_budget(batch, self.max_bytes, source=self.name, first_row=row)
                row += batch.X.shape[0]
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(f"cannot read {self.name} as parquet near data row {row}: {one_line(error)}") from None
        if row == 1:
            raise DataError(f"{self.name} has no data rows")
