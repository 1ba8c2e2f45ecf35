"""The model file of :class:`~softmaxkit.linear_model.SoftmaxRegression`: its fields, and every check on reading them.

:func:`write_model` builds the record (the parameters, the fitted arrays, the training summary
and the user's metadata) and :func:`read_model` rebuilds the estimator from it, checking every
field; the file format itself (an ``.npz`` of plain arrays plus JSON, written atomically) is
:mod:`softmaxkit._model_io`'s.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils.validation import check_is_fitted

from softmaxkit._model_io import ModelFileError, load_model_file, save_model_file
from softmaxkit.linear_model._objective import check_dtype
from softmaxkit.linear_model._solvers import SOLVERS

__all__ = ["check_metadata", "read_model", "write_model"]


def write_model(model, path, *, overwrite=False, metadata=None) -> None:
    """Write the fitted ``model`` to ``path`` (see ``SoftmaxRegression.save``)."""
    check_is_fitted(model)
    if metadata is not None:
        check_metadata(metadata)
    params = model.get_params()
    if params["dtype"] is not None:
        params["dtype"] = np.dtype(params["dtype"]).name
    if not (params["random_state"] is None or isinstance(params["random_state"], numbers.Integral)):
        params["random_state"] = None  # a RandomState object is not kept
    if isinstance(params["class_weight"], dict):
        params["class_weight"] = [
            [k.item() if isinstance(k, np.generic) else k, float(v)] for k, v in params["class_weight"].items()
        ]
    arrays = {"coef": model.coef_, "intercept": model.intercept_}
    record = {
        "estimator": type(model).__name__,
        "params": params,
        "n_features_in": int(model.n_features_in_),
        "n_iter": int(model.n_iter_),
        "loss_curve": [float(v) for v in model.loss_curve_],
        "solver": getattr(model, "solver_", None),
        "extra_metadata": {} if metadata is None else metadata,
    }
    arrays["classes"], record["classes_object"] = _to_plain(model.classes_, "classes_")
    if hasattr(model, "feature_names_in_"):
        arrays["feature_names"], _ = _to_plain(model.feature_names_in_, "feature_names_in_")
    save_model_file(path, arrays, record, overwrite=overwrite)


# How deep metadata may nest: far beyond any real record, far below the recursion limit that JSON's
# reader and writer run into (about 1000 levels; a record nested deeper would not load).
MAX_METADATA_DEPTH = 100


def check_metadata(metadata) -> None:
    """``metadata`` must read back as it was given: a dict, string keys at every depth, no tuples, nested at most 100 deep.

    JSON would store ``{1: 2}`` as ``{"1": 2}`` and a tuple as a list, and read back something else
    without a word. What JSON cannot hold at all (objects, NaN, cycles) is refused when the record
    is written.
    """
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    pending, seen = [(metadata, "metadata", 1)], set()
    while pending:  # iterative: a deep structure is no RecursionError here
        value, where, depth = pending.pop()
        if not isinstance(value, (dict, list, tuple)):
            continue
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata must be nested at most {MAX_METADATA_DEPTH} deep, got more at {where[:80]}...")
        if id(value) in seen:  # a cycle, which the JSON writer refuses
            continue
        seen.add(id(value))
        if isinstance(value, tuple):
            raise ValueError(
                f"metadata must hold lists, not tuples (JSON reads them back as lists), got one at {where}"
            )
        if isinstance(value, list):
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
            continue
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"metadata must have string keys (JSON's) at every depth, got the key {key!r} in {where}"
                )
            pending.append((item, f"{where}[{key!r}]", depth + 1))


def read_model(cls, path):
    """A ``cls`` estimator rebuilt from the file ``path``, every field checked (see ``SoftmaxRegression.load``).

    Every way the record or the arrays can be wrong is a :class:`~softmaxkit.ModelFileError`, as
    for the file itself (:func:`softmaxkit._model_io.load_model_file`).
    """
    arrays, meta = load_model_file(path, estimator=cls.__name__)
    where = f"model file {str(path)!r}"
    try:
        params = dict(meta["params"])
        if isinstance(params.get("class_weight"), list):
            params["class_weight"] = {k: v for k, v in params["class_weight"]}
        if isinstance(params.get("dtype"), str):
            params["dtype"] = np.dtype(params["dtype"]).type
        model = cls()
        model.set_params(**params)
        # dtype=None: whatever the fit computed in (float32 on a GPU), read from the file.
        dtype = model._check_params() or check_dtype(arrays["coef"].dtype)
        n_features = meta["n_features_in"]
        coef, intercept, classes = arrays["coef"], arrays["intercept"], arrays["classes"]
        n_iter, curve, extra = meta["n_iter"], meta["loss_curve"], meta["extra_metadata"]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelFileError(f"{where} has invalid metadata: {error!r}") from None
    n_classes = classes.shape[0] if classes.ndim == 1 else -1
    if not (_is_int(n_features) and n_features >= 1):
        raise ModelFileError(f"{where} has an invalid n_features_in {_short(n_features)}")
    if n_classes < 2:
        raise ModelFileError(f"{where} must hold at least two classes, got shape {classes.shape}")
    if coef.shape != (n_classes, n_features) or coef.dtype != dtype:
        raise ModelFileError(
            f"{where} must hold coef of shape {(n_classes, n_features)} and dtype {dtype}, "
            f"got shape {coef.shape} and dtype {coef.dtype}"
        )
    if intercept.shape != (n_classes,) or intercept.dtype != dtype:
        raise ModelFileError(
            f"{where} must hold intercept of shape ({n_classes},) and dtype {dtype}, "
            f"got shape {intercept.shape} and dtype {intercept.dtype}"
        )
    if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
        raise ModelFileError(f"{where} holds non-finite coefficients")
    if len(np.unique(classes)) != n_classes:
        raise ModelFileError(f"{where} holds repeated classes")
    if not (_is_int(n_iter) and n_iter >= 0):
        raise ModelFileError(f"{where} has an invalid n_iter {_short(n_iter)}")
    loss_curve = _floats(curve)
    if loss_curve is None:
        raise ModelFileError(f"{where} has an invalid loss_curve (a list of numbers expected): {_short(curve)}")
    if not isinstance(extra, dict):
        raise ModelFileError(f"{where} has an invalid extra_metadata (a dict expected): {_short(extra)}")
    if not isinstance(meta.get("classes_object", False), bool):
        raise ModelFileError(f"{where} has an invalid classes_object {_short(meta['classes_object'])}")
    model.classes_ = classes.astype(object) if meta.get("classes_object") else classes
    model.coef_, model.intercept_ = coef, intercept
    model.n_features_in_ = n_features
    if "feature_names" in arrays:
        names = arrays["feature_names"]
        if names.shape != (n_features,) or names.dtype.kind != "U":
            raise ModelFileError(f"{where} holds feature names of shape {names.shape}, expected ({n_features},)")
        model.feature_names_in_ = names.astype(object)
    model.n_iter_, model.loss_curve_ = n_iter, loss_curve
    solver = meta.get("solver")  # the solver that ran (files written before solver="auto" have none)
    if solver is not None:
        if solver not in SOLVERS:
            raise ModelFileError(f"{where} names an unknown solver {solver!r}")
        model.solver_ = solver
    model.saved_metadata_ = extra
    return model


def _floats(values) -> list[float] | None:
    """``values`` as a list of floats if it is a list of numbers (not booleans, not beyond float), else None."""
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    try:
        return [float(v) for v in values]
    except OverflowError:  # an integer beyond float's range
        return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _to_plain(values, name):
    """A numeric or fixed-width-string copy of ``values`` and whether it was an object array."""
    values = np.asarray(values)
    if values.dtype.kind in "biuf" or values.dtype.kind == "U":
        return values, False
    if values.dtype == object and all(isinstance(v, str) for v in values):
        return values.astype(str), True
    raise ValueError(f"{name} must hold numbers or strings to be saved, got dtype {values.dtype}")
