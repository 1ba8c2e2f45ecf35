"""Whole data files for the command line: a table, ``.npz`` or svmlight file in, a :class:`Dataset` out.

Every feature must be numeric and present: a non-numeric column or a missing value is a
:class:`~softmaxkit.cli._formats.DataError` naming the column, never a silent conversion.  The
target column may hold numbers or strings (class names).  The formats and their suffixes:
:mod:`softmaxkit.cli._formats`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def resolve_target(columns: Sequence[str], target: str | int | None, *, source: str) -> str:
    """The name of the target column: ``target`` by name, else by (possibly negative) position.

    ``None`` means the last column.

    Examples
    --------
    >>> resolve_target(["a", "b", "label"], None, source="f.csv")
    'label'
    >>> resolve_target(["0", "1", "2"], "0", source="f.csv")
    '0'
    >>> resolve_target(["a", "b", "c"], -2, source="f.csv")
    'b'
    """
    columns = [str(c) for c in columns]
    if len(columns) < 2:
        raise DataError(f"{source} must have at least two columns (features and a target), got {len(columns)}")
    if target is None:
        return columns[-1]
    text = str(target)
    if text in columns:
        return text
    if re.fullmatch(r"-?\d+", text):
        index = int(text)
        if -len(columns) <= index < len(columns):
            return columns[index]
    raise DataError(f"target column {text!r} is not in {source}; its columns are {short_list(columns)}")


def features_to_array(frame, *, source: str, first_row: int = 0) -> np.ndarray:
    """A pandas DataFrame of features as a float64 array; non-numeric or missing values are errors.

    ``first_row`` is the 1-based data row number of the frame's first row, for messages.
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
            "numbers (encode categories as numbers, e.g. one-hot columns, before training)"
        )
    X = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    check_finite(X, [str(c) for c in frame.columns], source=source, first_row=first_row)
    return np.ascontiguousarray(X)


def check_finite(X: np.ndarray, names: Sequence[str] | None, *, source: str, first_row: int = 1) -> None:
    finite = np.isfinite(X)
    if finite.all():
        return
    nan = np.isnan(X)
    bad = nan if nan.any() else ~finite
    column = int(np.flatnonzero(bad.any(axis=0))[0])
    rows = np.flatnonzero(bad[:, column])
    name = repr(names[column]) if names is not None else f"{column}"
    what = "missing (NaN) values" if nan.any() else "infinite values"
    raise DataError(
        f"{source}: feature column {name} has {rows.size} {what} "
        f"(first at data row {first_row + int(rows[0])}); fill or drop them before training"
    )


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
        return read_npz(path, source=source, require_y=True)
    if fmt == "svmlight":
        return read_svmlight(path, source=source, n_features=n_features)
    frame = _read_frame(path, fmt=fmt, header=header)
    if len(frame) == 0:
        raise DataError(f"{source} has no data rows")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    name = resolve_target(columns, target, source=source)
    features = frame.drop(columns=[name])
    X = features_to_array(features, source=source, first_row=1)
    y = labels(frame[name], name=name, source=source)
    return Dataset(
        X=X,
        y=y,
        feature_names=tuple(features.columns) if header or fmt == "parquet" else None,
        target=name,
        target_index=columns.index(name),
        name=source,
    )


def _read_frame(path: Path, *, fmt: str, header: bool):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with reading(path, fmt):
            return pq.read_table(path).to_pandas()
    import pandas as pd

    with strict_csv(path, fmt):
        return pd.read_csv(path, **csv_options(path, fmt, header=header))


def read_npz(path: Path, *, source: str, require_y: bool) -> Dataset:
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
    check_finite(X, None, source=source)
    if y is not None:
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise DataError(
                f"{source}: y must be a 1-D array with one label per row of X ({X.shape[0]}), got shape {y.shape}"
            )
        y = labels(y, name="y", source=source)
    return Dataset(X=X, y=y, feature_names=None, target="y" if y is not None else None, target_index=None, name=source)


def _check_finite_sparse(X, *, source: str) -> None:
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
        f"(first at data row {1 + row}); fill or drop them before training"
    )


def read_svmlight(path: Path, *, source: str, n_features: int | None = None) -> Dataset:
    from sklearn.datasets import load_svmlight_file

    try:
        X, y = load_svmlight_file(str(path), n_features=n_features)
    except (ValueError, OSError) as error:
        raise DataError(f"cannot read {source} as svmlight: {one_line(error)}") from None
    import scipy.sparse

    X = scipy.sparse.csr_matrix(X, dtype=np.float64)  # kept sparse to the model (news20: 7.4 GiB dense)
    _check_finite_sparse(X, source=source)
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
