"""The package's L-BFGS (``linear_model._lbfgs``) against SciPy's L-BFGS-B, and its fused two-loop recursion.

The reference is SciPy's L-BFGS-B without bounds (the same algorithm, up to its line search's
constants and its Cauchy-point formulation) stopped by the same rule from a callback, as
``minimize_lbfgs`` was before it ran our own L-BFGS: on the same problems both must take about as
many iterations to the same tol and reach the same objective.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from _scipy_lbfgs import scipy_lbfgs
from sklearn.datasets import make_classification

from softmaxkit._numpy import _vectors
from softmaxkit.linear_model import _lbfgs, _solvers
from softmaxkit.linear_model._loss import LinearLoss


def _problem(kind):
    if kind == "sparse-text":  # word-count-like: skewed column scales, many features, many classes
        rng = np.random.default_rng(3)
        X = scipy.sparse.random(
            500, 1000, density=0.02, format="csr", random_state=3, data_rvs=lambda k: 1.0 + rng.poisson(2.0, k)
        )
        y = np.asarray((X @ rng.normal(size=(1000, 5))).argmax(axis=1)).ravel()
        return X, y, 5, 1e-3
    X, y = make_classification(800, 40, n_informative=20, n_classes=6, random_state=0)
    return X, y, 6, 1e-3 if kind == "dense" else 1e-5


def _fun(loss):
    def fun(x):
        f, g = loss.loss_gradient(x)
        return f, g.ravel()

    return fun


@pytest.mark.parametrize("kind", ["dense", "dense-weakly-penalised", "sparse-text"])
@pytest.mark.parametrize("tol", [1e-4, 1e-8])
def test_as_many_iterations_as_scipys_lbfgsb_to_the_same_objective(kind, tol):
    X, y, k, alpha = _problem(kind)
    loss = LinearLoss(X, y, None, alpha, n_classes=k, fit_intercept=True, label_smoothing=0.0)
    x0 = np.zeros(loss.shape).ravel()
    ours = _solvers.minimize_lbfgs(_fun(loss), x0, max_iter=5000, tol=tol)
    n_iter, f, _ = scipy_lbfgs(_fun(loss), x0, max_iter=5000, tol=tol)
    assert ours.converged and ours.message == "estimated relative gap below tol"
    assert 0.8 * n_iter - 3 <= ours.n_iter <= 1.2 * n_iter + 3
    assert abs(ours.loss_curve[-1] - f) <= 10 * tol * f


def _pairs(rng, n, m):
    A = rng.normal(size=(n, n)) / np.sqrt(n)
    A = A @ A.T + 0.1 * np.eye(n)
    pairs = []
    for _ in range(m):
        s = rng.normal(size=n)
        pairs.append((s, A @ s))
    return pairs


@pytest.mark.parametrize("n", [50, _vectors.MIN_FUSED_SIZE + 3])  # the NumPy path and the compiled one
def test_the_fused_recursion_equals_the_plain_two_loop_recursion(n):
    rng = np.random.default_rng(n)
    pairs = _pairs(rng, 60, 7) if n < 60 else [(rng.normal(size=n), rng.normal(size=n)) for _ in range(7)]
    pairs = [(s, y if float(s @ y) > 0 else -y) for s, y in pairs]
    g = rng.normal(size=pairs[0][0].size)
    products = [_lbfgs._pair_products(s, y) for s, y in pairs]
    first = _lbfgs._first_loop(g, pairs, products)
    # the stopping estimate: g^T H g / 2 with the max-scaled initial matrix, from the first loop alone
    expected_gap = 0.5 * float(g @ _lbfgs._inverse_hessian_product(g, pairs))
    assert _lbfgs._estimated_gap(first, products) == pytest.approx(expected_gap, rel=1e-12)
    # the direction: the textbook two-loop recursion with the newest pair's scaling
    q, coefficients = g.copy(), []
    for s, y in reversed(pairs):
        a = float(s @ q) / float(s @ y)
        q -= a * y
        coefficients.append(a)
    s, y = pairs[-1]
    r = q * (float(s @ y) / float(y @ y))
    for (s, y), a in zip(pairs, reversed(coefficients)):
        r += s * (a - float(y @ r) / float(s @ y))
    direction = _lbfgs._direction(first, pairs, products)
    np.testing.assert_allclose(direction, -r, rtol=1e-11, atol=1e-11 * np.abs(r).max())


@pytest.mark.parametrize("n", [10, _vectors.MIN_FUSED_SIZE])
def test_axpy_dot(n):
    rng = np.random.default_rng(0)
    x, v, w = rng.normal(size=(3, n))
    expected_x = x + 0.75 * v
    got = x.copy()
    assert _vectors.axpy_dot(got, 0.75, v, w) == pytest.approx(float(w @ expected_x), rel=1e-12)
    # (a fused multiply-add: one rounding where NumPy has two)
    np.testing.assert_allclose(got, expected_x, rtol=0, atol=2 * np.finfo(float).eps * np.abs(0.75 * v).max())
    got = x.copy()
    assert _vectors.axpy_dot(got, -2.0, v) == pytest.approx(float(got @ got), rel=1e-12)


def test_a_state_without_products_resumes_as_the_run_did():
    X, y, k, alpha = _problem("dense")
    loss = LinearLoss(X, y, None, alpha, n_classes=k, fit_intercept=True, label_smoothing=0.0)
    fun = _fun(loss)
    saved = []
    whole = _lbfgs.minimize_lbfgs_resumable(
        fun, np.zeros(loss.shape).ravel(), max_iter=25, tol=0.0, on_iteration=lambda s: saved.append(s.products)
    )
    state = _lbfgs.start_lbfgs(fun, np.zeros(loss.shape).ravel())
    first = _lbfgs.minimize_lbfgs_resumable(fun, None, max_iter=12, tol=0.0, state=state)
    assert len(state.products) == len(state.pairs) > 0
    state.products = []  # as read from a checkpoint file: recomputed from the pairs
    resumed = _lbfgs.minimize_lbfgs_resumable(fun, None, max_iter=25, tol=0.0, state=state)
    assert first.n_iter == 12 and np.array_equal(resumed.x, whole.x) and resumed.loss_curve == whole.loss_curve
