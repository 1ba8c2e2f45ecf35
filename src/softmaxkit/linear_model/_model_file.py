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

from softmaxkit._model_io import load_model_file, save_model_file
from softmaxkit.linear_model._objective import check_dtype
from softmaxkit.linear_model._solvers import SOLVERS

__all__ = ["read_model", "write_model"]


def write_model(model, path, *, overwrite=False, metadata=None) -> None:
    """Write the fitted ``model`` to ``path`` (see ``SoftmaxRegression.save``)."""
    check_is_fitted(model)
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
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    save_model_file(path, arrays, record, overwrite=overwrite)


def read_model(cls, path):
    """A ``cls`` estimator rebuilt from the file ``path``, every field checked (see ``SoftmaxRegression.load``)."""
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
        raise ValueError(f"{where} has invalid metadata: {error!r}") from None
    n_classes = classes.shape[0] if classes.ndim == 1 else -1
    if not (isinstance(n_features, int) and n_features >= 1):
        raise ValueError(f"{where} has an invalid n_features_in {n_features!r}")
    if n_classes < 2:
        raise ValueError(f"{where} must hold at least two classes, got shape {classes.shape}")
    if coef.shape != (n_classes, n_features) or coef.dtype != dtype:
        raise ValueError(
            f"{where} must hold coef of shape {(n_classes, n_features)} and dtype {dtype}, "
            f"got shape {coef.shape} and dtype {coef.dtype}"
        )
    if intercept.shape != (n_classes,) or intercept.dtype != dtype:
        raise ValueError(
            f"{where} must hold intercept of shape ({n_classes},) and dtype {dtype}, "
            f"got shape {intercept.shape} and dtype {intercept.dtype}"
        )
    if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
        raise ValueError(f"{where} holds non-finite coefficients")
    if len(np.unique(classes)) != n_classes:
        raise ValueError(f"{where} holds repeated classes")
    if not isinstance(extra, dict) or not isinstance(curve, list) or not isinstance(n_iter, int):
        raise ValueError(f"{where} has invalid metadata fields")
    model.classes_ = classes.astype(object) if meta.get("classes_object") else classes
    model.coef_, model.intercept_ = coef, intercept
    model.n_features_in_ = n_features
    if "feature_names" in arrays:
        names = arrays["feature_names"]
        if names.shape != (n_features,) or names.dtype.kind != "U":
            raise ValueError(f"{where} holds feature names of shape {names.shape}, expected ({n_features},)")
        model.feature_names_in_ = names.astype(object)
    model.n_iter_, model.loss_curve_ = n_iter, [float(v) for v in curve]
    solver = meta.get("solver")  # the solver that ran (files written before solver="auto" have none)
    if solver is not None:
        if solver not in SOLVERS:
            raise ValueError(f"{where} names an unknown solver {solver!r}")
        model.solver_ = solver
    model.saved_metadata_ = extra
    return model


def _to_plain(values, name):
    """A numeric or fixed-width-string copy of ``values`` and whether it was an object array."""
    values = np.asarray(values)
    if values.dtype.kind in "biuf" or values.dtype.kind == "U":
        return values, False
    if values.dtype == object and all(isinstance(v, str) for v in values):
        return values.astype(str), True
    raise ValueError(f"{name} must hold numbers or strings to be saved, got dtype {values.dtype}")
