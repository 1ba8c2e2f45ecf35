"""Features of a data file in batches, laid out as a saved model expects, for ``softmaxkit predict``.

Tables are streamed (pandas' chunked CSV reader, pyarrow's Parquet record batches), so a file
larger than memory can be labelled.  The formats: :mod:`softmaxkit.cli._formats`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softmaxkit.cli._formats import DataError, check_exists, csv_options, detect_format, reading, short_list, strict_csv
from softmaxkit.cli._read import features_to_array, read_npz, read_svmlight, table_columns


@dataclass(frozen=True)
class FeatureLayout:
    """What a model expects of a data file: its feature names (or none) and its target column."""

    n_features: int
    feature_names: tuple[str, ...] | None = None
    target: str | None = None
    target_index: int | None = None


def match_by_name(columns: Sequence[str], layout: FeatureLayout, *, source: str) -> list[str] | None:
    """The model's feature names when all are among a table's ``columns``; ``None`` when none is.

    The one rule for matching a table's named columns to a model trained on named columns (used by
    ``predict`` and ``evaluate``): every feature name must be there, and some missing is a
    :class:`DataError` naming them. When none is there the caller checks the column count and
    then raises :func:`no_shared_names`: never a silent fall-back to matching by position, which
    would label a different data set with as many columns without a word (and a warning on
    stderr is lost when the predictions go to a pipe). Matching by position stays available,
    explicitly: a file without a header row, read with ``--no-header``.
    """
    columns = [str(c) for c in columns]
    names = list(layout.feature_names)
    missing = [n for n in names if n not in columns]
    if not missing:
        return names
    if len(missing) < len(names):
        raise DataError(
            f"{source} lacks the model's feature columns {short_list(missing)} "
            f"(the model expects {layout.n_features} features)"
        )
    return None


def no_shared_names(columns: Sequence[str], layout: FeatureLayout, *, source: str) -> DataError:
    """The error for a table that has as many columns as the model needs but none of its feature names."""
    return DataError(
        f"{source} has none of the model's feature columns (the model expects "
        f"{short_list(layout.feature_names, 4)}; the file has {short_list(list(columns), 4)}): is it the data "
        "the model was trained for? Rename its columns to the model's feature names, or match them by "
        "position: a file without a header row, read with --no-header"
    )


def _select_columns(columns: Sequence[str], layout: FeatureLayout, *, header: bool, source: str) -> list[str]:
    """The columns of a table, in the model's order, that hold the model's features."""
    columns = [str(c) for c in columns]
    d = layout.n_features
    by_name = header and layout.feature_names is not None
    if by_name:
        matched = match_by_name(columns, layout, source=source)
        if matched is not None:
            return matched
    candidates = list(columns)
    if len(candidates) == d + 1:
        if header and layout.target in candidates:
            candidates.remove(layout.target)
        elif layout.target_index is not None and layout.target_index < len(candidates):
            del candidates[layout.target_index]
    if len(candidates) != d:
        raise DataError(
            f"{source} has {len(columns)} columns, the model expects {d} features (plus, optionally, the target column)"
        )
    if by_name:
        raise no_shared_names(columns, layout, source=source)
    return candidates


def iter_feature_batches(
    path: str | Path,
    layout: FeatureLayout,
    *,
    header: bool = True,
    fmt: str | None = None,
    batch_size: int = 65536,
) -> Iterator[np.ndarray]:
    """Yield the features of ``path`` as float64 arrays of at most ``batch_size`` rows.

    Tables are streamed (pandas' chunked CSV reader, pyarrow's Parquet record batches), so a
    file larger than memory works; ``.npz`` and svmlight files are loaded whole.  The model's
    features are picked by name when both sides have names, else by position after dropping
    the target column if the file has one.

    Raises
    ------
    DataError
        A missing file, a column layout that does not fit the model, non-numeric or missing values.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be a positive integer, got {batch_size}")
    path = Path(path)
    check_exists(path)
    fmt = detect_format(path, fmt)
    source = path.name
    if fmt in ("npz", "svmlight"):
        if fmt == "npz":
            data = read_npz(path, source=source, require_y=False)
        else:
            data = read_svmlight(path, source=source, n_features=layout.n_features)
        if data.n_features != layout.n_features:
            raise DataError(f"{source} has {data.n_features} features, the model expects {layout.n_features}")
        for start in range(0, data.X.shape[0], batch_size):
            yield data.X[start : start + batch_size]
        return
    if fmt == "parquet":
        yield from _parquet_batches(path, layout, source=source, batch_size=batch_size)
        return
    yield from _csv_batches(path, layout, fmt=fmt, header=header, source=source, batch_size=batch_size)


def _parquet_batches(path: Path, layout: FeatureLayout, *, source: str, batch_size: int):
    import pyarrow.parquet as pq

    with reading(path, "parquet"):
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    selected = _select_columns(names, layout, header=True, source=source)
    row = 1
    batches = parquet.iter_batches(batch_size=batch_size, columns=selected)
    while True:
        with reading(path, "parquet"):
            batch = next(batches, None)
        if batch is None:
            return
        if batch.num_rows:
            frame = batch.to_pandas()[selected]
            yield features_to_array(frame, source=source, first_row=row)
            row += len(frame)


def _csv_batches(path: Path, layout: FeatureLayout, *, fmt: str, header: bool, source: str, batch_size: int):
    import pandas as pd

    columns = table_columns(path, header=header, fmt=fmt)
    selected = _select_columns(columns, layout, header=header, source=source)
    row = 1
    # Every column is parsed (no usecols, with which pandas would drop a row's extra fields unseen),
    # and the reader is advanced inside strict_csv so each chunk is checked as it is read.
    with strict_csv(path, fmt):
        reader = pd.read_csv(path, chunksize=batch_size, **csv_options(path, fmt, header=header))
    try:
        while True:
            with strict_csv(path, fmt):
                chunk = next(reader, None)
            if chunk is None:
                return
            if len(chunk) == 0:  # a header-only file: no rows, reported by the caller as such
                continue
            chunk.columns = [str(c) for c in chunk.columns]
            yield features_to_array(chunk[selected], source=source, first_row=row)
            row += len(chunk)
    finally:
        reader.close()
