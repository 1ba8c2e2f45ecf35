"""Which columns of a table are the target, the features and the weights; features and labels as arrays.

The one rule for choosing columns, shared by every table source and (later) the command line:

* the target by name, else by position (negative counts from the end); the default is the last
  column, ``None`` means no target (features to predict on);
* the weight column likewise, by name or position, or none;
* the features: the named (or numbered) columns in that order, or by default every other column.

Features must be finite numbers and labels whole numbers or names; anything else is a
:class:`~softmaxkit._sources._errors.DataError` naming the file, the column and the first bad row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from softmaxkit._sources._errors import DataError, short_list

LABEL_TYPES = ("infer", "int", "str")


@dataclass(frozen=True)
class ColumnPlan:
    """The columns chosen from a table: the target (or ``None``), the features in order, the weight (or ``None``)."""

    target: str | None
    features: tuple[str, ...]
    weight: str | None


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
    return resolve_column(columns, target, role="target", source=source)


def resolve_column(columns: Sequence[str], column: str | int, *, role: str, source: str) -> str:
    """The name of a column given by name, else by (possibly negative) position; ``role`` names it in messages.

    >>> resolve_column(["a", "w", "y"], 1, role="weight", source="f.csv")
    'w'
    """
    columns = [str(c) for c in columns]
    if isinstance(column, bool) or not isinstance(column, str | int | np.integer):
        raise TypeError(f"{role} column must be a column name or position, got {column!r}")
    text = str(column)
    if text in columns:
        return text
    if re.fullmatch(r"-?\d+", text):
        index = int(text)
        if -len(columns) <= index < len(columns):
            return columns[index]
    raise DataError(f"{role} column {text!r} is not in {source}; its columns are {short_list(columns)}")


def plan_columns(
    columns: Sequence[str],
    *,
    target: str | int | None,
    features: Sequence[str | int] | None,
    weight: str | int | None,
    source: str,
) -> ColumnPlan:
    """Choose the target, feature and weight columns of a table (see the module docstring).

    Examples
    --------
    >>> plan_columns(["a", "b", "w", "y"], target=-1, features=None, weight="w", source="f.csv")
    ColumnPlan(target='y', features=('a', 'b'), weight='w')
    >>> plan_columns(["a", "b", "c"], target=None, features=["c", 0], weight=None, source="f.csv")
    ColumnPlan(target=None, features=('c', 'a'), weight=None)
    """
    columns = [str(c) for c in columns]
    if len(set(columns)) != len(columns):
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"{source} must have distinct column names, got {short_list(repeated)} more than once")
    target_name = resolve_target(columns, target, source=source) if target is not None else None
    weight_name = resolve_column(columns, weight, role="weight", source=source) if weight is not None else None
    if weight_name is not None and weight_name == target_name:
        raise DataError(f"weight column must differ from the target column, got {weight_name!r} for both")
    taken = {target_name, weight_name}
    if features is None:
        chosen = [c for c in columns if c not in taken]
    else:
        if isinstance(features, str | int):
            raise TypeError(f"features must be a sequence of column names or positions, got {features!r}")
        chosen = [resolve_column(columns, f, role="feature", source=source) for f in features]
        clash = [c for c in chosen if c in taken]
        if clash:
            raise DataError(f"feature columns must not include the target or weight column, got {short_list(clash)}")
        if len(set(chosen)) != len(chosen):
            raise DataError(f"feature columns must be distinct, got {short_list(chosen)}")
    if not chosen:
        raise DataError(f"{source} must have at least one feature column, got none besides the target and weight")
    return ColumnPlan(target=target_name, features=tuple(chosen), weight=weight_name)


def check_finite(X: np.ndarray, names: Sequence[str] | None, *, source: str, first_row: int = 1) -> None:
    """A :class:`DataError` naming the first column and row of ``X`` with a NaN (else an infinity).

    ``first_row`` is the 1-based data row number of ``X``'s first row.
    """
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


def check_weights(w: np.ndarray, *, name: str, source: str, first_row: int = 1) -> None:
    """Sample weights must be finite and non-negative: a :class:`DataError` naming the first bad row."""
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: weight column {name!r} must hold finite non-negative numbers, got {float(w[first])!r} "
            f"at data row {first_row + first}"
        )


def to_labels(values: np.ndarray, *, name: str, source: str, first_row: int = 1, label_type: str = "infer"):
    """Target values as an int64 or str array; missing, infinite or fractional numeric labels are errors.

    The rule of the whole-file reader: numbers must be whole (returned as int64, or as their exact
    decimal names beyond 2**53, where int64 arithmetic on floats stops being exact), anything else is
    a name. ``label_type="int"`` refuses names, ``"str"`` takes every label as a name.

    >>> to_labels(np.array([1.0, 2.0]), name="y", source="f.csv")
    array([1, 2])
    >>> to_labels(np.array(["b", "a"], dtype=object), name="y", source="f.csv")
    array(['b', 'a'], dtype='<U1')
    """
    values = np.asarray(values)
    if values.dtype == object:
        missing = np.array([v is None or (isinstance(v, float) and v != v) for v in values], dtype=bool)
    elif np.issubdtype(values.dtype, np.floating):
        missing = np.isnan(values)
    else:
        missing = np.zeros(values.shape, dtype=bool)
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{source}: target column {name!r} has {int(missing.sum())} missing values "
            f"(first at data row {first_row + first})"
        )
    numeric = np.issubdtype(values.dtype, np.number) and not np.issubdtype(values.dtype, np.complexfloating)
    if label_type == "str" or not numeric:
        if label_type == "int":
            first = next(i for i, v in enumerate(values) if not isinstance(v, int | np.integer))
            raise DataError(
                f"{source}: target column {name!r} must hold whole numbers, got {str(values[first])!r} "
                f"at data row {first_row + first}"
            )
        if values.dtype == bool or label_type == "str" or values.dtype == object or values.dtype.kind in "US":
            return values.astype(str)
        raise DataError(f"{source}: target column {name!r} must hold numbers or names, got dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.integer):
        if values.dtype == np.uint64 and values.size and values.max() > np.iinfo(np.int64).max:
            return values.astype(str)
        return values.astype(np.int64)
    infinite = ~np.isfinite(values)
    if infinite.any():
        raise DataError(
            f"{source}: target column {name!r} has {int(infinite.sum())} infinite values "
            f"(first at data row {first_row + int(np.flatnonzero(infinite)[0])})"
        )
    whole = values == np.round(values)
    if not whole.all():
        first = int(np.flatnonzero(~whole)[0])
        raise DataError(
            f"{source}: target column {name!r} holds numbers that are not whole ({float(values[first])!r} at data "
            f"row {first_row + first}); class labels must be whole numbers or names"
        )
    if np.all(np.abs(values) <= 2.0**53):  # where every whole float is an exact int64
        return values.astype(np.int64)
    # Beyond: int64 ends at 2**63 and would wrap 1e19 and 3e19 onto one value; the exact integers as names.
    return np.array([str(int(v)) for v in values])
