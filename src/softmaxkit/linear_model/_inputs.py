"""What :class:`~softmaxkit.linear_model.SoftmaxRegression` takes in, as the loss takes it.

The targets (labels of any kind, or rows of class probabilities) become class indices or a
probability matrix over the sorted classes; the sample weights and the ``class_weight`` parameter
become the one weight per sample :math:`s_i` of :mod:`._loss`; early stopping holds out a
validation split. Every bad input is a ``ValueError`` naming the argument.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets

from softmaxkit.linear_model._loss import class_counts

__all__ = [
    "check_classes",
    "check_finite_nonnegative",
    "check_sample_weight",
    "class_weights",
    "combine_weights",
    "encode_target",
    "split_validation",
]


def check_finite_nonnegative(values, name, detail):
    """The one rule for weights and probabilities: finite and non-negative (``detail`` goes into the message)."""
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite{detail}, got non-finite values")
    if values.size and values.min() < 0:
        raise ValueError(f"{name} must be non-negative{detail}, got a minimum of {values.min()}")


def check_classes(classes) -> np.ndarray:
    """``partial_fit``'s ``classes`` (required on the first call): at least two distinct labels, sorted."""
    if classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit, got None")
    classes = np.asarray(classes)
    if classes.ndim != 1:
        raise ValueError(f"classes must be 1-D, got shape {classes.shape}")
    if len(np.unique(classes)) < 2 or len(np.unique(classes)) != len(classes):
        raise ValueError(f"classes must hold at least two distinct classes, got {classes.tolist()}")
    return np.sort(classes)


def encode_target(y, n_samples, dtype, *, classes=None, estimator_name: str):
    """``(classes, target, hard_labels)``: the classes, ``y`` as class indices or probabilities, labels to stratify by.

    ``classes`` given (sorted): the labels must come from them; else they are ``y``'s (``arange(n_classes)`` for
    class probabilities).
    """
    if y is None:
        raise ValueError(f"{estimator_name} requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected; it is used as class labels.",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y[:, 0]
    if y.shape[:1] != (n_samples,):
        raise ValueError(f"y must have {n_samples} rows (one per sample of X), got shape {y.shape}")
    if y.ndim == 2:  # soft labels
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
            raise ValueError(f"y must hold numbers when 2-D (class probabilities), got dtype {y.dtype}")
        proba = np.asarray(y, dtype=dtype)
        n_classes = proba.shape[1]
        if classes is None:
            classes = np.arange(n_classes)
        elif len(classes) != n_classes:
            raise ValueError(f"y must have one column per class ({len(classes)} classes), got {n_classes} columns")
        if n_classes < 2:
            raise ValueError(f"y must contain at least two classes, got {n_classes} column")
        check_finite_nonnegative(proba, "y", " (class probabilities)")
        sums = proba.sum(axis=1, dtype=np.float64)
        bad = np.abs(sums - 1.0) > 1e-6 * max(1, n_classes) if dtype == np.float64 else np.abs(sums - 1.0) > 1e-4
        if bad.any():
            raise ValueError(f"y must have rows that sum to 1 (class probabilities), got a row sum of {sums[bad][0]!r}")
        return np.asarray(classes), proba, np.argmax(proba, axis=1)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D labels or 2-D class probabilities, got shape {y.shape}")
    check_classification_targets(y)
    if classes is None:
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"y must contain at least two classes, got 1 class: {classes.tolist()}")
    codes = np.searchsorted(classes, y)
    codes = np.minimum(codes, len(classes) - 1)
    unknown = classes[codes] != y
    if np.any(unknown):
        raise ValueError(
            f"y must only hold labels from classes {np.asarray(classes).tolist()}, "
            f"got {np.unique(np.asarray(y)[unknown]).tolist()}"
        )
    codes = codes.astype(np.intp)
    return classes, codes, codes


def check_sample_weight(sample_weight, n_samples, dtype):
    """``sample_weight`` as a finite, non-negative ``(n_samples,)`` array in ``dtype`` (a scalar repeated), or None."""
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight)
    if sw.ndim == 0:
        sw = np.full(n_samples, float(sw))
    if sw.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got shape {sw.shape}")
    if not (np.issubdtype(sw.dtype, np.number) or sw.dtype == bool):
        raise ValueError(f"sample_weight must hold numbers, got dtype {sw.dtype}")
    sw = sw.astype(dtype)
    check_finite_nonnegative(sw, "sample_weight", "")
    return sw


def class_weights(class_weight, target, sw, n_classes, dtype, classes, *, allow_balanced=True):
    """The weight of each class, ``(n_classes,)``, for the ``class_weight`` parameter (None: None).

    "balanced" is ``sum_i sw_i / (n_classes * sum_{i: y_i = k} sw_i)`` (scikit-learn's rule; 1 for a class
    that does not occur); a dict maps labels of ``classes`` to weights (1 for the others).
    """
    cw = class_weight
    if cw is None:
        return None
    if isinstance(cw, str):
        if not allow_balanced:
            raise ValueError("class_weight must be None or a dict with partial_fit, got 'balanced'")
        counts = class_counts(target, sw, n_classes)
        with np.errstate(divide="ignore"):
            result = counts.sum() / (n_classes * counts)
        result[counts == 0] = 1.0
        return result.astype(dtype)
    result = np.ones(n_classes, dtype=dtype)
    class_list = list(np.asarray(classes).tolist())
    for label, weight in cw.items():
        key = label.item() if isinstance(label, np.generic) else label
        if key not in class_list:
            raise ValueError(f"class_weight must only name classes from {class_list}, got the label {label!r}")
        if not (isinstance(weight, numbers.Real) and np.isfinite(weight) and weight >= 0):
            raise ValueError(f"class_weight must map labels to finite non-negative numbers, got {weight!r}")
        result[class_list.index(key)] = weight
    return result


def combine_weights(target, sw, cw, dtype):
    """The sample weights ``s_i = sw_i cw[y_i]`` (``sw_i sum_k y_ik cw_k`` for probabilities); ``sw`` if no ``cw``."""
    if cw is None:
        return sw
    per_sample = cw[target] if target.ndim == 1 else target @ cw
    s = per_sample if sw is None else sw * per_sample
    return s.astype(dtype, copy=False)


def split_validation(X, target, hard, s, validation_fraction, rng):
    """``(X, X_val, target, t_val, s, s_val)``: ``validation_fraction`` held out, stratified by ``hard`` if possible."""
    indices = np.arange(X.shape[0])
    stratify = hard if np.bincount(hard).min(initial=2) >= 2 and len(np.unique(hard)) > 1 else None
    try:
        train, val = train_test_split(indices, test_size=validation_fraction, random_state=rng, stratify=stratify)
    except ValueError:
        train, val = train_test_split(indices, test_size=validation_fraction, random_state=rng)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"validation_fraction={validation_fraction} leaves no training or no validation samples out of {X.shape[0]}"
        )
    s_train = None if s is None else s[train]
    s_val = None if s is None else s[val]
    if s_train is not None and not s_train.sum() > 0:
        raise ValueError("sample_weight must have a positive sum on the training split, got all weights zero")
    return X[train], X[val], target[train], target[val], s_train, s_val
