"""Sparse X: the same model, the same predictions and the same loss as dense X, without densifying.

Oracles: the dense fit of the same data (every solver is deterministic given the data and
``random_state``), the dense loss, gradient, Hessian and preconditioners, and tracemalloc's peak
of a fit whose data would take ten times more memory dense.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse
from sklearn.exceptions import ConvergenceWarning

from softmaxkit.linear_model import SoftmaxRegression, _loss, _preconditioners

FORMATS = {
    "csr_matrix": scipy.sparse.csr_matrix,
    "csc_matrix": scipy.sparse.csc_matrix,
    "csr_array": scipy.sparse.csr_array,
    "csc_array": scipy.sparse.csc_array,
}


def _sparse_problem(seed=0, n=300, d=40, k=4, density=0.15):
    """Non-negative sparse features (counts, as text gives) that determine the labels."""
    rng = np.random.default_rng(seed)
    X = scipy.sparse.random(n, d, density=density, format="csr", random_state=seed)
    X.data = np.floor(4 * X.data) + 1.0  # counts 1 to 4
    W = rng.normal(size=(d, k))
    y = np.argmax(X @ W + rng.gumbel(size=(n, k)), axis=1)
    return X, y


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "sgd", "adam"])
@pytest.mark.parametrize("weights", ["none", "sample", "class"])
def test_sparse_and_dense_give_the_same_model(solver, weights):
    X, y = _sparse_problem()
    dense = X.toarray()
    sw = np.random.default_rng(1).uniform(0.0, 2.0, size=len(y)) if weights == "sample" else None
    # full-batch solvers to machine precision (tol below rounding); sgd and adam for 30 epochs exactly (tol 0)
    stochastic = solver in ("sgd", "adam")
    params = {"solver": solver, "alpha": 1e-2, "random_state": 0, "max_iter": 30, "tol": 0.0 if stochastic else 1e-15}
    if weights == "class":
        params["class_weight"] = "balanced" if solver not in ("sgd", "adam") else {0: 2.0, 3: 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = SoftmaxRegression(**params).fit(dense, y, sample_weight=sw)
        for name, kind in FORMATS.items():
            model = SoftmaxRegression(**params).fit(kind(X), y, sample_weight=sw)
            np.testing.assert_allclose(model.coef_, reference.coef_, rtol=0, atol=1e-10, err_msg=name)
            np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=0, atol=1e-10, err_msg=name)
            assert model.n_iter_ == reference.n_iter_ or not stochastic
    assert np.abs(reference.coef_).max() > 0.1  # a model worth comparing


def test_predictions_on_sparse_equal_dense():
    X, y = _sparse_problem(seed=2)
    model = SoftmaxRegression(alpha=1e-2).fit(X, y)
    dense = X.toarray()
    for kind in FORMATS.values():
        Xs = kind(X)
        np.testing.assert_array_equal(model.predict(Xs), model.predict(dense))
        np.testing.assert_allclose(model.predict_proba(Xs), model.predict_proba(dense), rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(model.predict_log_proba(Xs), model.predict_log_proba(dense), rtol=1e-13)
        np.testing.assert_allclose(model.decision_function(Xs), model.decision_function(dense), rtol=1e-13)
        assert model.score(Xs, y) == model.score(dense, y)
    assert isinstance(model.predict_proba(X), np.ndarray)


def test_partial_fit_and_early_stopping_on_sparse_equal_dense():
    X, y = _sparse_problem(seed=3, n=400)
    dense = X.toarray()
    models = []
    for data in (dense, X):
        model = SoftmaxRegression(solver="sgd", random_state=4, alpha=1e-2)
        for chunk in np.array_split(np.arange(400), 4):
            model.partial_fit(data[chunk], y[chunk], classes=np.arange(4))
        stopped = SoftmaxRegression(solver="newton-cg", early_stopping=True, random_state=4, alpha=1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            stopped.fit(data, y)
        models.append((model, stopped))
    for ours, reference in zip(models[1], models[0]):
        np.testing.assert_allclose(ours.coef_, reference.coef_, rtol=0, atol=1e-12)
    assert models[1][1].validation_scores_ == models[0][1].validation_scores_


def test_float32_sparse():
    X, y = _sparse_problem(seed=5)
    model = SoftmaxRegression(dtype=np.float32, alpha=1e-2, tol=1e-7).fit(X, y)
    reference = SoftmaxRegression(dtype=np.float32, alpha=1e-2, tol=1e-7).fit(X.toarray(), y)
    assert model.coef_.dtype == np.float32 and model.predict_proba(X).dtype == np.float32
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X.toarray()), rtol=0, atol=1e-4)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_loss_gradient_hessian_and_preconditioners_on_sparse_equal_dense(rng, fit_intercept):
    X, y = _sparse_problem(seed=6, n=120, d=9, k=3, density=0.3)
    dense = X.toarray()
    sw = rng.uniform(0.0, 2.0, size=len(y))
    coef = rng.normal(size=(3, 9 + int(fit_intercept)))
    options = {"fit_intercept": fit_intercept, "label_smoothing": 0.1}
    f, g, H = _loss.loss_gradient_hessp(coef, X, y, sw, 0.3, **options)
    f_ref, g_ref, H_ref = _loss.loss_gradient_hessp(coef, dense, y, sw, 0.3, **options)
    assert f == pytest.approx(f_ref, rel=1e-14)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-15)
    v = rng.normal(size=coef.T.shape)
    np.testing.assert_allclose(H(v), H_ref(v), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(H.diagonal(), H_ref.diagonal(), rtol=1e-12)
    r = rng.normal(size=v.size)
    # (with an intercept the shared shift is a null direction of the whole Hessian: "full" is then ill-conditioned)
    for kind in _preconditioners.KINDS if not fit_intercept else ("diagonal", "block"):
        ours, reference = H.preconditioner(kind)(r), H_ref.preconditioner(kind)(r)
        np.testing.assert_allclose(ours, reference, rtol=1e-9, err_msg=kind)
    bound = _loss.curvature_bound(X, 0.3, fit_intercept=fit_intercept)
    assert bound == pytest.approx(_loss.curvature_bound(dense, 0.3, fit_intercept=fit_intercept), rel=1e-12)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "sgd"])
def test_a_sparse_fit_never_densifies_x(solver):
    """tracemalloc's peak of a fit (NumPy and SciPy allocate through it) stays below a tenth of dense X."""
    n, d, k = 20_000, 2_000, 5
    X = scipy.sparse.random(n, d, density=0.005, format="csr", random_state=0, dtype=np.float64)
    X.data[:] = 1.0
    y = np.random.default_rng(0).integers(0, k, size=n)
    dense_bytes = n * d * 8  # 320 MB
    sparse_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes  # 2.4 MB
    model = SoftmaxRegression(solver=solver, max_iter=3, alpha=1e-3, random_state=0)
    with warnings.catch_warnings():  # a first fit loads and compiles the row kernels (numba: about 30 MB, once)
        warnings.simplefilter("ignore", ConvergenceWarning)
        SoftmaxRegression(solver=solver, max_iter=1, alpha=1e-3, random_state=0).fit(X, y)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < dense_bytes / 10, (peak, dense_bytes)
    # what it does hold: a few copies of X's entries and of the n x k probabilities, not a dense block
    assert peak < 6 * sparse_bytes + 12 * n * k * 8 + 4 * d * k * 8, (peak, sparse_bytes)


def test_sparse_without_intercept_and_with_soft_labels():
    X, y = _sparse_problem(seed=7)
    proba = np.random.default_rng(8).dirichlet(np.ones(4), size=len(y))
    for params in ({"fit_intercept": False}, {"label_smoothing": 0.2}):
        model = SoftmaxRegression(alpha=0.1, solver="newton-cg", tol=1e-15, **params).fit(X, proba)
        reference = SoftmaxRegression(alpha=0.1, solver="newton-cg", tol=1e-15, **params).fit(X.toarray(), proba)
        np.testing.assert_allclose(model.coef_, reference.coef_, rtol=0, atol=1e-10)
