"""Features of a data file in batches, laid out as a saved model expects, for ``softmaxkit predict``.

Tables are streamed (pandas' chunked CSV reader, pyarrow's Parquet record batches), so a file
larger than memory can be labelled.  The formats: :mod:`softmaxkit.cli._formats`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softmaxkit.cli._formats import DataError, check_exists, detect_format, field_separator, one_line, short_list
from softmaxkit.cli._read import features_to_array, read_npz, read_svmlight, table_columns


@dataclass(frozen=True)
class FeatureLayout:
    """What a model expects of a data file: its feature names (or none) and its target column."""

    n_features: int
    feature_names: tuple[str, ...] | None = None
    target: str | None = None
    target_index: int | None = None


def _select_columns(columns: Sequence[str], layout: FeatureLayout, *, header: bool, source: str) -> list[str]:
    """The columns of a table, in the model's order, that hold the model's features."""
    columns = [str(c) for c in columns]
    d = layout.n_features
    if header and layout.feature_names is not None:
        missing = [n for n in layout.feature_names if n not in columns]
        if not missing:
            return list(layout.feature_names)
        if len(missing) < len(layout.feature_names):
            raise DataError(
                f"{source} lacks the model's feature columns {short_list(missing)} (the model expects {d} features)"
            )
        # Not one name matches: the table names its columns its own way; go by position.
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

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow.ArrowInvalid and friends
        raise DataError(f"cannot read {source} as parquet: {one_line(error)}") from None
    selected = _select_columns(parquet.schema_arrow.names, layout, header=True, source=source)
    row = 1
    for batch in parquet.iter_batches(batch_size=batch_size, columns=selected):
        frame = batch.to_pandas()[selected]
        yield features_to_array(frame, source=source, first_row=row)
        row += len(frame)


def _csv_batches(path: Path, layout: FeatureLayout, *, fmt: str, header: bool, source: str, batch_size: int):
    import pandas as pd

    options = dict(sep=field_separator(path, fmt), header=0 if header else None, skipinitialspace=True)
    columns = table_columns(path, header=header, fmt=fmt)
    selected = _select_columns(columns, layout, header=header, source=source)
    usecols = selected if header else [int(c) for c in selected]
    row = 1
    try:
        reader = pd.read_csv(path, usecols=usecols, chunksize=batch_size, **options)
        for chunk in reader:
            chunk.columns = [str(c) for c in chunk.columns]
            yield features_to_array(chunk[selected], source=source, first_row=row)
            row += len(chunk)
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path.name} as {fmt}: {one_line(error)}") from None
