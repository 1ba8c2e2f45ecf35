"""The steps of :meth:`SoftmaxRegression.fit <softmaxkit.linear_model.SoftmaxRegression.fit>` that are not
the estimator's business: which solver runs, from where, with which step sizes, and the way back to
``coef_`` and ``intercept_``. Plain functions of the estimator's parameters.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from softmaxkit.linear_model import _loss, _solvers
from softmaxkit.linear_model._auto import choose_solver, probes_lbfgs

__all__ = [
    "auto_learning_rate",
    "coef_from_theta",
    "epoch_options",
    "initial_theta",
    "nnz",
    "resolve_solver",
    "run_full_batch",
]


def nnz(X) -> int:
    """Stored entries of ``X`` (all of them when dense)."""
    return int(X.nnz) if scipy.sparse.issparse(X) else int(np.prod(X.shape))


def resolve_solver(solver: str, X, n_classes: int, fit_intercept: bool) -> str:
    """``solver``, with "auto" replaced by the rule of :func:`._auto.choose_solver`; "auto" stays where that
    rule allows Newton-CG and :func:`._auto.probes_lbfgs` (:func:`run_full_batch` then runs
    :func:`._solvers.minimize_auto`)."""
    if solver != "auto":
        return solver
    n_samples, n_features = X.shape
    entries = nnz(X)
    chosen = choose_solver(
        n_samples=n_samples, n_features=n_features, n_classes=n_classes, nnz=entries, fit_intercept=fit_intercept
    )
    return "auto" if chosen == "newton-cg" and probes_lbfgs(nnz=entries, n_classes=n_classes) else chosen


def initial_theta(coef, intercept, *, n_classes, n_features, fit_intercept, target, sample_weight) -> np.ndarray:
    """The start in the solvers' layout (``theta`` of :mod:`._loss`, flat float64).

    The previous fit's ``coef`` and ``intercept`` when given (warm start), else zero weights and
    the intercept-only optimum (:func:`._loss.intercept_only`).
    """
    if coef is not None:
        theta = coef.T
        if fit_intercept:
            theta = np.vstack([theta, intercept[None, :]])
        return np.asarray(theta, dtype=np.float64).ravel()
    theta = np.zeros((n_features + int(fit_intercept), n_classes))
    if fit_intercept:
        theta[n_features] = _loss.intercept_only(target, sample_weight, n_classes)
    return theta.ravel()


def coef_from_theta(x, *, n_classes, n_features, fit_intercept, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(coef_, intercept_)`` from the solvers' flat ``theta``; the intercepts centred (they sum to 0)."""
    theta = np.asarray(x, dtype=np.float64).reshape(n_features + int(fit_intercept), n_classes)
    coef = np.ascontiguousarray(theta[:n_features].T, dtype=dtype)
    if fit_intercept:
        b = theta[n_features]
        return coef, (b - b.mean()).astype(dtype)
    return coef, np.zeros(n_classes, dtype=dtype)


def auto_learning_rate(learning_rate, solver: str, X, alpha: float, fit_intercept: bool) -> float:
    """The initial step of sgd and adam: ``learning_rate``, or for "auto" 1e-2 (adam) and ``1 / L`` (sgd)."""
    if learning_rate != "auto":
        return float(learning_rate)
    if solver == "adam":
        return 1e-2
    # 1 / L, L a bound on the objective's curvature (+ 1e-12: finite for zero data and alpha=0)
    return 1.0 / (_loss.curvature_bound(X, alpha, fit_intercept=fit_intercept) + 1e-12)


def epoch_options(batch_size, n_samples: int, learning_rate: float, schedule: str, momentum: float) -> dict:
    """The keyword arguments of :func:`._solvers.stochastic_epoch`; "auto" batches are ``min(256, max(8, n / 10))``."""
    if batch_size == "auto":
        batch = min(256, max(8, n_samples // 10), n_samples)
    else:
        batch = min(batch_size, n_samples)
    return {"batch_size": batch, "learning_rate": learning_rate, "schedule": schedule, "momentum": float(momentum)}


def run_full_batch(
    solver: str, objective, x0, *, max_iter: int, tol: float, callback, run=None
) -> _solvers.SolverResult:
    """lbfgs, newton-cg or "auto" (:func:`._solvers.minimize_auto`) on the backend's :class:`~._solvers.Objective`;
    resumed and saved by the checkpoint ``run`` (a :class:`._checkpoint.CheckpointRun`) when given ("auto" is then
    newton-cg: a checkpoint saves one solver's state). The result's ``solver`` is the solver that finished."""
    options = {"max_iter": max_iter, "tol": tol, "callback": callback}
    if run is not None:
        solver = "newton-cg" if solver == "auto" else solver
        result = run.run_full_batch(solver, objective, x0, **options)
    elif solver == "auto":
        result = _solvers.minimize_auto(objective.loss_gradient, objective.loss_gradient_hessp, x0, **options)
    elif solver == "lbfgs":
        result = _solvers.minimize_lbfgs(objective.loss_gradient, x0, **options)
    else:
        result = _solvers.minimize_newton_cg(objective.loss_gradient_hessp, x0, **options)
    result.solver = result.solver or solver
    return result
