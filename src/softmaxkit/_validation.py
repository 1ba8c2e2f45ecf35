"""Input checks shared by every public function.

Every message has one shape: ``"<argument> must be <what>, got <what was given>"``,
so a user can find the offending argument without reading a traceback.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

REDUCTIONS = ("none", "mean", "sum")


def _describe(value: Any) -> str:
    """A short, readable description of ``value`` for an error message.

    Arrays and tensors (anything with a ``shape`` and a ``dtype``, told apart by duck typing so
    that this module never imports torch) are described by their shape and dtype; NumPy scalars
    and everything else by a repr cut to 60 characters.
    """
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None and not isinstance(value, np.generic):
        kind = "a tensor" if type(value).__module__.split(".")[0] == "torch" else "an array"
        return f"{kind} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_array(x: Any, *, name: str, what: str) -> np.ndarray:
    """``np.asarray(x)``, refusing the two things NumPy gets wrong for an argument ``name``.

    A ragged nested sequence (``[[1, 2], [3]]``) is a ``ValueError`` that names ``name`` (NumPy's own
    says "inhomogeneous shape" and names nothing). Dates and durations (``datetime64``,
    ``timedelta64``) are a ``TypeError`` saying that ``name`` must be ``what``: NumPy counts
    ``timedelta64`` among the integers (``np.issubdtype(np.timedelta64, np.integer)`` is True), so
    every later dtype check would take them for numbers.
    """
    try:
        array = np.asarray(x)
    except ValueError as error:
        raise ValueError(
            f"{name} must be an array or a nested sequence of equal lengths, got {_describe(x)} ({error})"
        ) from None
    if array.dtype.kind in "mM":
        raise TypeError(f"{name} must be {what}, got {_describe(array)}")
    return array


def as_float_array(x: Any, *, name: str) -> tuple[np.ndarray, np.dtype]:
    """Return ``(work, out_dtype)``: ``x`` as a floating array to compute with, and the dtype to return.

    float16, float32 and float64 keep their dtype in the output; float16 is computed in float32.
    Integer and boolean input is promoted to float64, as NumPy's own ``np.exp`` does.
    Anything else (complex, strings, objects, dates and durations) is a ``TypeError``.
    """
    what = "a real floating, integer or boolean array"
    array = as_array(x, name=name, what=what)
    dtype = array.dtype
    if dtype == np.float16:
        return array.astype(np.float32), dtype
    if dtype in (np.float32, np.float64):
        return array, dtype
    if dtype.kind in "biu":
        return array.astype(np.float64), np.dtype(np.float64)
    raise TypeError(f"{name} must be {what}, got {_describe(array)}")


def normalize_axis(axis: Any, ndim: int) -> int:
    """Return ``axis`` as a non-negative int, or raise a clear ``ValueError``/``TypeError``."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer, got {_describe(axis)}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim}) for an input with {ndim} dimensions, got {axis}")
    return axis % ndim


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` as a sorted tuple of distinct non-negative axes (``None`` means all of them)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, tuple):
        axes = tuple(normalize_axis(a, ndim) for a in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"axis must not repeat an axis, got {axis}")
        return tuple(sorted(axes))
    return (normalize_axis(axis, ndim),)


def check_reduction(reduction: Any) -> str:
    # A string first: ``in`` would compare an array elementwise (accepted, or an ambiguous truth value).
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {_describe(reduction)}")
    return reduction


def check_label_smoothing(label_smoothing: Any) -> float:
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a real number, got {_describe(label_smoothing)}")
    value = float(label_smoothing)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {value}")
    return value


def check_ignore_index(ignore_index: Any) -> int:
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an integer, got {_describe(ignore_index)}")
    return int(ignore_index)


def check_class_weight(weight: Any, n_classes: int, dtype: np.dtype) -> np.ndarray | None:
    """Validate a per-class weight vector of shape ``(n_classes,)``: finite and non-negative."""
    if weight is None:
        return None
    what = f"a real array of shape ({n_classes},)"
    array = as_array(weight, name="weight", what=what)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"weight must be {what}, got {_describe(array)}")
    if array.shape != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},), one entry per class, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"weight must be finite, got non-finite entries at {np.flatnonzero(~np.isfinite(array)).tolist()}"
        )
    if np.any(array < 0):
        raise ValueError(f"weight must be non-negative, got negative entries at {np.flatnonzero(array < 0).tolist()}")
    return array.astype(dtype, copy=False)


def check_class_indices(target: np.ndarray, n_classes: int, ignore_index: int) -> np.ndarray:
    """Return a boolean mask of the entries that count (``target != ignore_index``).

    Every other entry must be a class index in ``[0, n_classes)``; ``-1`` never wraps around.
    """
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= n_classes))
    if np.any(bad):
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        raise class_index_error(int(target[position]), position, n_classes, ignore_index)
    return valid


def class_index_error(value: int, position: tuple[int, ...], n_classes: int, ignore_index: int) -> ValueError:
    """The error of a class index outside ``[0, n_classes)``: one wording for arrays and tensors."""
    return ValueError(
        f"target must hold class indices in [0, {n_classes}) or ignore_index={ignore_index}, "
        f"got {value} at position {position}"
    )
