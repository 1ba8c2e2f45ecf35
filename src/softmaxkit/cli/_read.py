"""Whole data files for the command line: a table, ``.npz`` or svmlight file in, a :class:`Dataset` out.

Every feature must be numeric and present: a non-numeric column or a missing value is a
:class:`~softmaxkit.cli._formats.DataError` naming the column, never a silent conversion.  The
target column may hold numbers or strings (class names).  The formats and their suffixes:
:mod:`softmaxkit.cli._formats`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softmaxkit._sources._columns import check_finite as _check_finite
from softmaxkit._sources._columns import resolve_target
from softmaxkit.cli._formats import (
    DataError,
    check_exists,
    csv_options,
    detect_format,
    one_line,
    reading,
    short_list,
    strict_csv,
)


@dataclass(frozen=True)
class Dataset:
    """Features and labels read from a file or a bundled dataset.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features), float64
    y : ndarray of shape (n_samples,) or None
        Class labels (integers or strings); ``None`` when the source has no target.
    feature_names : tuple of str or None
        Column names of the features, ``None`` when the source has no names
        (``.npz``, svmlight, or a table read without a header).
    target : str or None
        Name of the target column (its position as a string for a table without a header).
    target_index : int or None
        Position of the target among the source's columns (tables only).
    name : str
        A short name for messages and metadata: the file name or the bundled dataset's name.
    image_shape : tuple of int or None
        ``(height, width)`` when the features are the pixels of an image (bundled digits: 8 x 8).
    """

    X: np.ndarray
    y: np.ndarray | None
    feature_names: tuple[str, ...] | None
    target: str | None
    target_index: int | None
    name: str
    image_shape: tuple[int, int] | None = None

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


# --------------------------------------------------------------------------------------------
# columns


def features_to_array(frame, *, source: str, first_row: int = 0, task: str = "training") -> np.ndarray:
    """A pandas DataFrame of features as a float64 array; non-numeric or missing values are errors.

    ``first_row`` is the 1-based data row number of the frame's first row, for messages; ``task``
    (``"training"``, ``"evaluating"``, ``"predicting"``) what the values are read for.
    """
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    bad = [str(c) for c in frame.columns if not (is_numeric_dtype(frame[c]) or is_bool_dtype(frame[c]))]
    if bad:
        import pandas as pd

        noun = "column" if len(bad) == 1 else "columns"
        column = frame[frame.columns[[str(c) for c in frame.columns].index(bad[0])]]
        numbers = pd.to_numeric(column, errors="coerce")
        offending = np.flatnonzero(numbers.isna().to_numpy() & column.notna().to_numpy())
        example = ""
        if offending.size:
            example = (
                f" (first non-number: {str(column.iloc[offending[0]])!r} at data row {first_row + int(offending[0])})"
            )
        raise DataError(
            f"{source}: non-numeric feature {noun} {short_list(bad)}{example}; features must be "
            f"numbers (encode categories as numbers, e.g. one-hot columns, before {task})"
        )
    X = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    check_finite(X, [str(c) for c in frame.columns], source=source, first_row=first_row, task=task)
    return np.ascontiguousarray(X)


def check_finite(
    X: np.ndarray, names: Sequence[str] | None, *, source: str, first_row: int = 1, task: str = "training"
) -> None:
    """The sources' finite check (:func:`softmaxkit._sources._columns.check_finite`), its advice for ``task``."""
    try:
        _check_finite(X, names, source=source, first_row=first_row)
    except DataError as error:
        if task == "training":
            raise
        raise DataError(str(error).replace("before training", f"before {task}")) from None


def labels(values, *, name: str, source: str) -> np.ndarray:
    """Target values as an int or str array (numbers must be whole); missing or infinite labels are an error."""
    import pandas as pd

    series = pd.Series(values)
    missing = series.isna().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0]) + 1
        raise DataError(
            f"{source}: target column {name!r} has {int(missing.sum())} missing values (first at data row {first})"
        )
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if is_bool_dtype(series) or not is_numeric_dtype(series):
        return series.astype(str).to_numpy(dtype=str)
    array = series.to_numpy()
    if np.issubdtype(array.dtype, np.floating):
        infinite = ~np.isfinite(array)
        if infinite.any():
            raise DataError(
                f"{source}: target column {name!r} has {int(infinite.sum())} infinite values "
                f"(first at data row {int(np.flatnonzero(infinite)[0]) + 1})"
            )
        whole = array == np.round(array)
        if not whole.all():
            first = int(np.flatnonzero(~whole)[0])
            raise DataError(
                f"{source}: target column {name!r} holds numbers that are not whole ({float(array[first])!r} at data "
                f"row {first + 1}); class labels must be whole numbers or names"
            )
        if np.all(np.abs(array) <= 2.0**53):  # where every whole float is an exact int64
            return array.astype(np.int64)
        # Beyond: int64 ends at 2**63 and would wrap 1e19 and 3e19 onto one value. The exact
        # integers instead, as names, as pandas itself gives integers written beyond int64.
        return np.array([str(int(v)) for v in array])
    return array


# --------------------------------------------------------------------------------------------
# whole-file reading


def read_dataset(
    path: str | Path,
    *,
    target: str | int | None = None,
    header: bool = True,
    fmt: str | None = None,
    n_features: int | None = None,
    task: str = "training",
    show_progress: bool = False,
) -> Dataset:
    """Read a labelled dataset: features ``X`` and labels ``y``.

    Parameters
    ----------
    path : str or Path
        A csv/tsv table (optionally compressed), Parquet, ``.npz`` with ``X`` and ``y``, or svmlight.
    target : str or int, optional
        The target column of a table, by name or position (negative counts from the end);
        default the last column.  Ignored for ``.npz`` and svmlight, which store labels apart.
    header : bool, default True
        Whether a csv/tsv table starts with a header row.  Without one, columns are named by
        their 0-based position (``"0"``, ``"1"``, ...).
    fmt : str, optional
        One of :data:`FORMATS`; default from the suffix.
    n_features : int, optional
        For svmlight only: the number of features (a sparse file does not say when its last
        features are all zero); default the largest index in the file.
    task : str, default "training"
        What the data is read for (``"training"``, ``"evaluating"``), for the advice in messages.
    show_progress : bool, default False
        Show the progress of reading a csv/tsv file on stderr (see :mod:`softmaxkit._progress`).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        A missing file, an unknown format or target column, non-numeric features or missing values.
    """
    path = Path(path)
    check_exists(path)
    fmt = detect_format(path, fmt)
    source = path.name
    if fmt == "npz":
        return read_npz(path, source=source, require_y=True, task=task)
    if fmt == "svmlight":
        return read_svmlight(path, source=source, n_features=n_features, task=task)
    frame = _read_frame(path, fmt=fmt, header=header, show_progress=show_progress)
    if len(frame) == 0:
        raise DataError(f"{source} has no data rows")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    named = header or fmt == "parquet"
    hint = header_hint(columns) if header and fmt != "parquet" else ""
    try:
        if named:
            check_unambiguous_target(columns, target, source=source)
        name = resolve_target(columns, target, source=source)
        features = frame.drop(columns=[name])
        X = features_to_array(features, source=source, first_row=1, task=task)
        y = labels(frame[name], name=name, source=source)
    except DataError as error:
        if not hint:
            raise
        raise DataError(f"{error}; {hint}") from None
    return Dataset(
        X=X,
        y=y,
        feature_names=tuple(features.columns) if named else None,
        target=name,
        target_index=columns.index(name),
        name=source,
    )


def header_looks_like_data(columns: Sequence[str]) -> bool:
    """Whether most of a header row's names are numbers (as the first row of a file without a header is).

    >>> header_looks_like_data(["T", "2", "8", "3"]), header_looks_like_data(["a", "b", "1"])
    (True, False)
    """
    numbers = 0
    for name in columns:
        try:
            float(name)
        except ValueError:
            continue
        numbers += 1
    return numbers * 2 > len(columns)


def header_hint(columns: Sequence[str]) -> str:
    """The advice for a file whose header row looks like data ('' if it does not)."""
    if not header_looks_like_data(columns):
        return ""
    shown = ", ".join(str(c) for c in columns[:6]) + (", ..." if len(columns) > 6 else "")
    return f"its header row ({shown}) looks like data: if the file has no header row, pass --no-header"


def check_unambiguous_target(columns: Sequence[str], target: str | int | None, *, source: str) -> None:
    """A :class:`DataError` when a numeric ``target`` is both a column's name and another column's position.

    ``resolve_target`` takes the name first; a header row of numbers (a file without a header read
    with one) makes ``--target 0`` name some column "0" rather than the first column, silently.

    >>> check_unambiguous_target(["y", "1", "b"], "1", source="f.csv")  # "1" is column 1 either way
    >>> check_unambiguous_target(["a", "0", "b"], "0", source="f.csv")
    Traceback (most recent call last):
    softmaxkit._sources._errors.DataError: --target '0' is ambiguous in f.csv: it names the column at position 1 and is the position of column 'a'
    """
    if target is None:
        return
    text = str(target)
    if text not in columns or not re.fullmatch(r"-?\d+", text):
        return
    index = int(text)
    if not -len(columns) <= index < len(columns) or columns[index] == text:
        return
    raise DataError(
        f"--target {text!r} is ambiguous in {source}: it names the column at position {columns.index(text)} and is "
        f"the position of column {columns[index]!r}"
    )


def _read_frame(path: Path, *, fmt: str, header: bool, show_progress: bool = False):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with reading(path, fmt):
            return pq.read_table(path).to_pandas()
    import pandas as pd

    options = csv_options(path, fmt, header=header)
    compression = _COMPRESSION.get(path.suffix.lower(), "zip" if path.suffix.lower() == ".zip" else None)
    if not show_progress or compression == "zip":  # a zip archive is read by seeking, not in order
        with strict_csv(path, fmt):
            return pd.read_csv(path, **options)
    from softmaxkit._progress import progress

    display = progress(total=path.stat().st_size, desc=f"reading {path.name}", unit="B", unit_scale=True, summary=False)
    with display, strict_csv(path, fmt), _CountingFile(path, display.update) as handle:
        return pd.read_csv(handle, compression=compression, **options)


_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz"}


class _CountingFile(io.FileIO):
    """A file read in binary that reports the bytes read (of the file as stored: compressed if it is)."""

    def __init__(self, path: Path, on_read):
        super().__init__(path, "rb")
        self.on_read = on_read

    def read(self, size=-1):
        data = super().read(size)
        self.on_read(len(data))
        return data

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.on_read(n or 0)
        return n


def read_npz(path: Path, *, source: str, require_y: bool, task: str = "training") -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if "X" not in keys or (require_y and "y" not in keys):
                need = "X and y" if require_y else "X"
                raise DataError(f"{source} must hold arrays named {need}, got {sorted(keys) or 'no arrays'}")
            X = archive["X"]
            y = archive["y"] if "y" in keys else None
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"cannot read {source} as npz: {one_line(error)}") from None
    if X.ndim != 2:
        raise DataError(f"{source}: X must be a 2-D array (samples x features), got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise DataError(f"{source}: X must be numeric, got dtype {X.dtype}")
    if require_y and X.shape[0] == 0:
        raise DataError(f"{source} has no data rows")
    X = np.ascontiguousarray(X, dtype=np.float64)
    check_finite(X, None, source=source, task=task)
    if y is not None:
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise DataError(
                f"{source}: y must be a 1-D array with one label per row of X ({X.shape[0]}), got shape {y.shape}"
            )
        y = labels(y, name="y", source=source)
    return Dataset(X=X, y=y, feature_names=None, target="y" if y is not None else None, target_index=None, name=source)


def _check_finite_sparse(X, *, source: str, task: str = "training") -> None:
    """:func:`check_finite` for CSR ``X``, on its stored entries (the others are 0)."""
    bad = ~np.isfinite(X.data)
    if not bad.any():
        return
    nan = np.isnan(X.data)
    bad = nan if nan.any() else bad
    first = int(np.flatnonzero(bad)[0])
    column = int(X.indices[first])
    count = int(np.count_nonzero(bad & (X.indices == column)))
    row = int(np.searchsorted(X.indptr, first, side="right")) - 1
    what = "missing (NaN) values" if nan.any() else "infinite values"
    raise DataError(
        f"{source}: feature column {column} has {count} {what} "
        f"(first at data row {1 + row}); fill or drop them before {task}"
    )


def read_svmlight(path: Path, *, source: str, n_features: int | None = None, task: str = "training") -> Dataset:
    from sklearn.datasets import load_svmlight_file

    try:
        X, y = load_svmlight_file(str(path), n_features=n_features)
    except (ValueError, OSError) as error:
        raise DataError(f"cannot read {source} as svmlight: {one_line(error)}") from None
    if X.shape[0] == 0:
        raise DataError(f"{source} has no data rows")
    import scipy.sparse

    X = scipy.sparse.csr_matrix(X, dtype=np.float64)  # kept sparse to the model (news20: 7.4 GiB dense)
    _check_finite_sparse(X, source=source, task=task)
    return Dataset(
        X=X,
        y=labels(y, name="label", source=source),
        feature_names=None,
        target="label",
        target_index=None,
        name=source,
    )


def table_columns(path: str | Path, *, header: bool = True, fmt: str | None = None) -> list[str]:
    """The column names of a csv/tsv/Parquet table (positions as strings without a header).

    ``.npz`` and svmlight files have no columns: the answer is ``[]``.
    """
    path = Path(path)
    check_exists(path)
    fmt = detect_format(path, fmt)
    if fmt in ("npz", "svmlight"):
        return []
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with reading(path, fmt):
            return [str(c) for c in pq.read_schema(path).names]
    import pandas as pd

    with strict_csv(path, fmt):
        head = pd.read_csv(path, nrows=0 if header else 1, **csv_options(path, fmt, header=header))
    return [str(c) for c in head.columns]


def infer_image_shape(n_features: int, feature_names: Sequence[str] | None) -> tuple[int, int] | None:
    """``(s, s)`` when the features look like the pixels of a square image, else ``None``.

    That is: at least 64 features, a perfect square count, and names (if any) that differ only
    in their digits, like ``pixel0 ... pixel783`` or ``pixel_0_0 ... pixel_7_7``.

    Examples
    --------
    >>> infer_image_shape(64, [f"pixel_{i}_{j}" for i in range(8) for j in range(8)])
    (8, 8)
    >>> infer_image_shape(16, None) is None, infer_image_shape(100, ["a"] * 99 + ["b"]) is None
    (True, True)
    """
    side = math.isqrt(n_features)
    if n_features < 64 or side * side != n_features:
        return None
    if feature_names is not None:
        stems = {re.sub(r"\d+", "#", str(n)) for n in feature_names}
        if len(stems) != 1:
            return None
    return (side, side)
