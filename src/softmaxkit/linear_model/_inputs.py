"""What :class:`~softmaxkit.linear_model.SoftmaxRegression` takes in, as the loss takes it.

``X`` goes through scikit-learn's ``validate_data`` (:func:`validate_X`, which makes its messages
name ``X``); the targets (labels of any kind, or rows of class probabilities) become class indices
or a probability matrix over the sorted classes; the sample weights and the ``class_weight``
parameter become the one weight per sample :math:`s_i` of :mod:`._loss` (:func:`sample_weights`);
early stopping holds out a validation split. Every bad input is a ``ValueError`` or ``TypeError``
naming the argument.
"""

from __future__ import annotations

import numbers
import re
import warnings

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from softmaxkit._validation import _describe, as_array
from softmaxkit.linear_model._loss import class_counts

__all__ = [
    "check_classes",
    "check_finite_nonnegative",
    "check_sample_weight",
    "class_weights",
    "combine_weights",
    "encode_target",
    "sample_weights",
    "split_validation",
    "validate_X",
]

_LABELS = "class labels (numbers, strings or booleans)"


def _names(message: str, argument: str) -> bool:
    """Whether ``message`` names ``argument`` as a word (``X`` in "Input X contains NaN", not in "XY")."""
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?!\w)", message) is not None


# --------------------------------------------------------------------------- X


def _describe_X(X) -> str:
    if isinstance(X, (np.ndarray, np.generic)):
        return _describe(np.asarray(X))
    if not hasattr(X, "shape"):
        return _describe(X)
    dtype = getattr(X, "dtype", None)
    return f"a {type(X).__name__} of shape {tuple(X.shape)}" + ("" if dtype is None else f" and dtype {dtype}")


def _refuse_dates(X) -> None:
    """Dates and durations are not features: scikit-learn would convert them to counts of their unit."""
    if hasattr(X, "dtype"):
        if getattr(X.dtype, "kind", None) in ("m", "M"):
            raise TypeError(f"X must hold real numbers, got {_describe_X(X)}")
        return
    for dtype in getattr(X, "dtypes", []):  # a DataFrame's columns
        if getattr(dtype, "kind", None) in ("m", "M"):
            raise TypeError(f"X must hold real numbers, got {_describe_X(X)} with a column of dtype {dtype}")


# What X must be, by the words of scikit-learn's (or NumPy's) refusal. Loose on purpose: the words
# differ between releases (1.6: "Found array with dim 3. SoftmaxRegression expected <= 2."; 1.9:
# "Found array with dim 3, while dim <= 2 is required by SoftmaxRegression.").
_X_RULES = (
    (r"Expected 2D array|2-dimensional container|Found array with dim", "2-D, of shape (n_samples, n_features)"),
    (r"Found array with 0 sample", "non-empty (at least 1 sample)"),
    (r"Found array with 0 feature", "non-empty (at least 1 feature)"),
    (r"Complex data", "real"),
    (r"could not convert|argument must be a string or a", "numeric"),
    (r"feature names", "a table with the feature names seen in fit"),
)


def _prefixed_X_message(message: str, X) -> str:
    """``"X must be <what>, got <X>: <message>"``, scikit-learn's message kept whole.

    Kept whole because scikit-learn's estimator checks look for its words ("Complex data not
    supported", "Reshape your data", "0 feature(s) (shape=(n, 0)) while a minimum of 1 is required").
    """
    what = next((what for pattern, what in _X_RULES if re.search(pattern, message)), "a 2-D array of finite numbers")
    return f"X must be {what}, got {_describe_X(X)}: {message}"


def validate_X(estimator, X, **options):
    """scikit-learn's ``validate_data(estimator, X, **options)``, every refusal a message that names ``X``.

    Dates and durations are refused first (scikit-learn takes them for numbers); a list or tuple
    becomes an array through :func:`softmaxkit._validation.as_array` (a ragged one is named); a
    refusal by scikit-learn that does not name ``X`` ("Expected 2D array", "Found array with 0
    sample(s)", NumPy's "could not convert string to float", ...) gets a prefix that does
    (:func:`_prefixed_X_message`), the same exception type.
    """
    _refuse_dates(X)
    if isinstance(X, (list, tuple)):
        X = as_array(X, name="X", what="a 2-D array of real numbers")
    try:
        return validate_data(estimator, X, **options)
    except (TypeError, ValueError) as error:
        message = str(error)
        if _names(message, "X"):
            raise
        kind = ValueError if isinstance(error, ValueError) else TypeError
        raise kind(_prefixed_X_message(message, X)) from None


# --------------------------------------------------------------------------- targets


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
    classes = as_array(classes, name="classes", what=_LABELS)
    if classes.ndim != 1:
        raise ValueError(f"classes must be 1-D, got shape {classes.shape}")
    try:
        unique = np.unique(classes)
    except TypeError:  # labels that do not compare, like [0, 1, None]
        raise TypeError(
            f"classes must hold labels of one kind that sort (all numbers or all strings), got {_describe(classes.tolist())}"
        ) from None
    if len(unique) < 2 or len(unique) != len(classes):
        raise ValueError(f"classes must hold at least two distinct classes, got {classes.tolist()}")
    return unique


def encode_target(y, n_samples, dtype, *, classes=None, estimator_name: str):
    """``(classes, target, hard_labels)``: the classes, ``y`` as class indices or probabilities, labels to stratify by.

    ``classes`` given (sorted): the labels must come from them; else they are ``y``'s (``arange(n_classes)`` for
    class probabilities).
    """
    if y is None:
        raise ValueError(f"{estimator_name} requires y to be passed, but the target y is None")
    y = as_array(y, name="y", what=f"{_LABELS} or rows of class probabilities")
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
        if y.dtype.kind not in "biuf":
            raise TypeError(f"y must hold real numbers when 2-D (class probabilities), got dtype {y.dtype}")
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
    try:
        check_classification_targets(y)
    except (TypeError, ValueError) as error:
        if _names(str(error), "y"):
            raise
        # scikit-learn's words stay ("Unknown label type: continuous", which its estimator checks expect).
        first_line = str(error).split("\n", 1)[0].strip()
        raise type(error)(
            f"y must be {_LABELS} or rows of class probabilities, got {_describe(y)}: {first_line}"
        ) from None
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


def check_sample_weight(sample_weight, n_samples):
    """``sample_weight`` as a finite, non-negative float64 ``(n_samples,)`` array (a scalar repeated), or None."""
    if sample_weight is None:
        return None
    what = "real numbers, one per sample (or one for all)"
    sw = as_array(sample_weight, name="sample_weight", what=what)
    if sw.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be {what}, got {_describe(sw)}")
    sw = sw.astype(np.float64)
    if sw.ndim == 0:
        sw = np.full(n_samples, sw)
    if sw.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got shape {sw.shape}")
    check_finite_nonnegative(sw, "sample_weight", "")
    return sw


def class_weights(class_weight, target, sw, n_classes, classes, *, allow_balanced=True):
    """The weight of each class, float64 ``(n_classes,)``, for the ``class_weight`` parameter (None: None).

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
        return result
    result = np.ones(n_classes)
    class_list = list(np.asarray(classes).tolist())
    for label, weight in cw.items():
        key = label.item() if isinstance(label, np.generic) else label
        if key not in class_list:
            raise ValueError(f"class_weight must only name classes from {class_list}, got the label {label!r}")
        if not (isinstance(weight, numbers.Real) and np.isfinite(weight) and weight >= 0):
            raise ValueError(f"class_weight must map labels to finite non-negative numbers, got {weight!r}")
        result[class_list.index(key)] = weight
    return result


def combine_weights(target, sw, cw):
    """The sample weights ``s_i = sw_i cw[y_i]`` (``sw_i sum_k y_ik cw_k`` for probabilities), float64; None if neither."""
    if cw is None:
        return sw
    cw = _scaled_to_largest(cw)  # only ratios matter: no product overflows
    per_sample = cw[target] if target.ndim == 1 else target.astype(np.float64) @ cw
    return per_sample if sw is None else sw * per_sample


def sample_weights(sample_weight, class_weight, target, classes, dtype, *, allow_balanced=True, scaled=True):
    r"""The weights :math:`s_i` of :mod:`._loss` in ``dtype`` (None: all equal), from ``sample_weight`` and ``class_weight``.

    Only their ratios matter (the objective divides by :math:`\sum_i s_i`), so they are computed in
    float64 and divided by the largest before the cast to ``dtype``: weights of 1e307, whose sum
    overflows, and weights of 1e-46, which are 0 in float32, both mean "all equal". Weights that are
    all 0 (after the class weights) are a ``ValueError``. ``scaled=False`` leaves them on the
    caller's scale (a stream weighs the samples of its calls against each other).
    """
    sw = check_sample_weight(sample_weight, len(target))
    if sw is not None and scaled:
        sw = _scaled_to_largest(sw)  # before the "balanced" sums of class_weights
    cw = class_weights(class_weight, target, sw, len(classes), classes, allow_balanced=allow_balanced)
    s = combine_weights(target, sw, cw)
    if s is None:
        return None
    if not s.max(initial=0) > 0:
        raise ValueError("sample_weight must have a positive sum, got all weights zero (after class weights)")
    return (_scaled_to_largest(s) if scaled else s).astype(dtype)


def _scaled_to_largest(weights: np.ndarray) -> np.ndarray:
    largest = weights.max(initial=0)
    return weights / largest if largest > 0 else weights


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
