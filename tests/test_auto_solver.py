"""``solver="auto"``'s run (``_solvers.minimize_auto``): L-BFGS while it converges fast, else Newton-CG from its point.

The switch is decided from L-BFGS's measured progress (``predicted_iterations``), so these tests
pin it on problems whose conditioning is known: a well-conditioned one stays with L-BFGS (and then
is exactly L-BFGS's run), an ill-conditioned one (feature scales 1e-3 to 1e3) goes to Newton-CG;
both reach the optimum of the other solver.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification

from softmaxkit.linear_model import SoftmaxRegression, _solvers
from softmaxkit.linear_model._auto import probes_lbfgs
from softmaxkit.linear_model._loss import loss
from softmaxkit.linear_model._objective import numpy_objective


def _objective(kind, alpha=1e-3, n_samples=600, n_features=12):
    X, y = make_classification(
        n_samples, n_features, n_informative=8, n_redundant=0, n_classes=4, class_sep=0.5, random_state=0
    )
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    if kind == "unstandardised":
        X = X * np.logspace(-3, 3, X.shape[1])
    options = {"n_classes": 4, "fit_intercept": True, "label_smoothing": 0.0, "dtype": np.float64}
    objective = numpy_objective(np.ascontiguousarray(X), y, None, alpha, **options)
    x0 = np.zeros((n_features + 1) * 4)
    return X, y, objective, x0


def test_predicted_iterations():
    tol = 1e-6
    assert _solvers.predicted_iterations([1e-1, 1e-2], tol) == 0.0  # too few to read a rate
    # a tenfold decrease per iteration, 1e-4 left above tol: 2 more (up to rounding)
    assert _solvers.predicted_iterations([1e-1, 1e-2, 1e-3, 1e-4], tol) == pytest.approx(2.0)
    assert _solvers.predicted_iterations([0.5, 0.4, 0.45, 0.5], tol) == np.inf  # no progress over the window
    # the rate is read over the last PROBE_WINDOW iterations only: a slow tail after a fast start
    gaps = [1e-1, 1e-6] + [1e-3 * 0.9**k for k in range(_solvers.PROBE_WINDOW + 1)]
    assert _solvers.predicted_iterations(gaps, tol) == pytest.approx(np.log(gaps[-1] / tol) / -np.log(0.9))
    assert _solvers.predicted_iterations([np.inf, 1e-2, 1e-3, 1e-4], tol) == 0.0  # a missing estimate: no verdict
    # tol 0: predicted to the objective's rounding (1e-15), not to infinity
    assert np.isfinite(_solvers.predicted_iterations([1e-1, 1e-2, 1e-3, 1e-4], 0.0))


def test_well_conditioned_stays_lbfgs_and_is_exactly_its_run():
    _, _, objective, x0 = _objective("standardised")
    tol = 1e-5
    auto = _solvers.minimize_auto(objective.loss_gradient, objective.loss_gradient_hessp, x0, max_iter=500, tol=tol)
    plain = _solvers.minimize_lbfgs(objective.loss_gradient, x0, max_iter=500, tol=_solvers.LBFGS_TOL_FACTOR * tol)
    assert auto.solver == "lbfgs" and auto.converged
    np.testing.assert_array_equal(auto.x, plain.x)
    assert auto.loss_curve == plain.loss_curve and auto.n_iter == plain.n_iter


@pytest.mark.parametrize("tol", [1e-4, 1e-10])
def test_ill_conditioned_switches_to_newton_and_reaches_its_optimum(tol):
    _, _, objective, x0 = _objective("unstandardised")
    auto = _solvers.minimize_auto(objective.loss_gradient, objective.loss_gradient_hessp, x0, max_iter=500, tol=tol)
    newton = _solvers.minimize_newton_cg(objective.loss_gradient_hessp, x0, max_iter=500, tol=1e-13)
    assert auto.solver == "newton-cg" and auto.converged
    assert len(auto.loss_curve) == auto.n_iter
    f_star = newton.loss_curve[-1]
    assert auto.loss_curve[-1] - f_star <= tol * abs(f_star)
    lbfgs = _solvers.minimize_lbfgs(objective.loss_gradient, x0, max_iter=4 * auto.n_iter, tol=tol)
    assert not lbfgs.converged  # L-BFGS alone crawls here: it was left after a few iterations


def test_max_iter_counts_both_phases():
    _, _, objective, x0 = _objective("unstandardised")
    auto = _solvers.minimize_auto(objective.loss_gradient, objective.loss_gradient_hessp, x0, max_iter=5, tol=1e-12)
    assert auto.n_iter == 5 and len(auto.loss_curve) == 5 and not auto.converged


def test_the_estimator_records_the_solver_that_finished():
    shape = {"n_samples": 20_000, "n_features": 50}  # a pass of 20,000 x 50 x 4 = PROBE_PASS multiply-adds
    assert probes_lbfgs(nnz=20_000 * 50, n_classes=4) and not probes_lbfgs(nnz=20_000 * 50 - 1, n_classes=4)
    X, y, _, _ = _objective("standardised", **shape)
    assert SoftmaxRegression(alpha=1e-3).fit(X, y).solver_ == "lbfgs"
    X_raw, y_raw, _, _ = _objective("unstandardised", **shape)
    model = SoftmaxRegression(alpha=1e-3).fit(X_raw, y_raw)
    assert model.solver_ == "newton-cg"
    # the same optimum as newton-cg alone, to the default tol (a relative gap bound)
    alone = SoftmaxRegression(alpha=1e-3, solver="newton-cg", tol=1e-13).fit(X_raw, y_raw)

    def objective(m):
        return loss(np.hstack([m.coef_, m.intercept_[:, None]]), X_raw, y_raw, None, 1e-3)

    assert objective(model) - objective(alone) <= model.tol * objective(alone)
    # below PROBE_PASS: Newton-CG from the start, as choose_solver says
    assert SoftmaxRegression(alpha=1e-3).fit(X[:2_000], y[:2_000]).solver_ == "newton-cg"


def test_a_checkpointed_auto_fit_runs_newton_cg(tmp_path):
    X, y, _, _ = _objective("standardised", n_samples=20_000, n_features=50)
    model = SoftmaxRegression(alpha=1e-3).fit(X, y, checkpoint=tmp_path / "fit.ckpt")
    assert model.solver_ == "newton-cg"  # a checkpoint saves one solver's state: the rule of choose_solver
