"""partial_fit's averaged SGD (softmaxkit.linear_model._streaming): steps, state, sparse input, convergence.

Averaged SGD is the default stream method of models too large for the incremental Newton
(tests/test_stream_newton.py); here every model takes it (the fixture below).
"""

import numpy as np
import pytest
import scipy.sparse
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from softmaxkit.linear_model import SoftmaxRegression, _stream_newton, _stream_replay, _streaming
from softmaxkit.linear_model._loss import loss


@pytest.fixture(autouse=True)
def _averaged_sgd(monkeypatch):
    monkeypatch.setattr(_stream_newton, "MAX_PARAMETERS", 0)  # no model is small enough for the Newton
    monkeypatch.setattr(_stream_replay, "MEMORY_BYTES", 0)  # nor for the remembered rows


def _data(n=3000, seed=7):
    X, y = make_classification(
        n_samples=n, n_features=10, n_informative=6, n_classes=4, class_sep=0.8, random_state=seed
    )
    return StandardScaler().fit_transform(X), y


def _objective(model, X, y, alpha):
    return loss(np.hstack([model.coef_, model.intercept_[:, None]]), X, y, alpha=alpha)


def _stream(model, X, y, passes, batch=256, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(passes):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            rows = order[start : start + batch]
            model.partial_fit(X[rows], y[rows], classes=np.arange(4))
    return model


def test_default_partial_fit_converges_on_a_shuffled_stream():
    """Default settings, 256-row shuffled mini-batches, one call each: the averaged iterate gets within
    1e-2 (relative) of the exact optimum after 10 passes and keeps improving (measured: 6.8e-3, 5.0e-3 after 20)."""
    X, y = _data()
    alpha = 1e-4
    f_star = _objective(SoftmaxRegression(alpha=alpha, solver="newton-cg", tol=1e-12).fit(X, y), X, y, alpha)
    model = _stream(SoftmaxRegression(alpha=alpha), X, y, 10)
    gap_10 = (_objective(model, X, y, alpha) - f_star) / f_star
    assert gap_10 < 1e-2
    gap_20 = (_objective(_stream(model, X, y, 10, seed=1), X, y, alpha) - f_star) / f_star
    assert gap_20 < gap_10


def test_the_decaying_step_converges_where_a_constant_step_stalls(monkeypatch):
    """4 standardised features, 3 classes, 4000 rows: 470 steps of 256 rows in 30 passes, the step decaying
    after 200. Measured: gap 2.8e-2 after 10 passes, 1.2e-3 after 30; with the step kept constant 2.8e-2 and
    still 2.6e-2 (the constant-step average stops short of the optimum)."""
    X, y = make_classification(
        n_samples=4000, n_features=4, n_informative=3, n_redundant=0, n_classes=3, random_state=1
    )
    X = StandardScaler().fit_transform(X)
    alpha = 1e-4
    f_star = _objective(SoftmaxRegression(alpha=alpha, solver="newton-cg", tol=1e-12).fit(X, y), X, y, alpha)

    def gaps():
        model = SoftmaxRegression(alpha=alpha)
        rng = np.random.default_rng(0)
        out = []
        for done in range(1, 31):
            order = rng.permutation(len(y))
            for start in range(0, len(y), 256):
                rows = order[start : start + 256]
                model.partial_fit(X[rows], y[rows], classes=np.arange(3))
            if done in (10, 30):
                out.append((_objective(model, X, y, alpha) - f_star) / f_star)
        return out

    gap_10, gap_30 = gaps()
    assert gap_30 < 5e-3 and gap_30 < 0.2 * gap_10
    monkeypatch.setattr(_streaming, "DECAY_AFTER_SAMPLES", 10**12)  # never decays
    constant_10, constant_30 = gaps()
    assert constant_30 > 0.5 * constant_10 and constant_30 > 5 * gap_30


def test_the_step_follows_samples_seen_not_calls(monkeypatch):
    monkeypatch.setattr(_streaming, "DECAY_AFTER_SAMPLES", 200)
    X, y = _data(800)
    options = {"fit_intercept": False, "learning_rate": 0.5, "batch_size": 100}
    one = SoftmaxRegression(**options).partial_fit(X, y, classes=np.arange(4))
    many = SoftmaxRegression(**options)
    for start in range(0, 800, 100):
        many.partial_fit(X[start : start + 100], y[start : start + 100], classes=np.arange(4))
    np.testing.assert_allclose(many.coef_, one.coef_, rtol=1e-12, atol=1e-14)
    state = one._stream_state
    assert state.samples_seen == 800 and _streaming.step_size(state, 100) == 0.5 * 200 / 800
    # the steps after 0, 100 and 200 samples take the full step, then 200 / n of it
    rates = [
        _streaming.step_size(_streaming.StreamState(0.5, None, None, None, samples_seen=n), 100) for n in (0, 100, 400)
    ]
    assert rates == [0.5, 0.5, 0.25]


@pytest.mark.parametrize("sparse", [False, True])
def test_the_auto_step_is_bounded_by_the_noise_of_a_mini_batch(sparse):
    """Many features: the mean squared row norm R^2 (here about 401) is far above the curvature bound L, and
    the step is NOISE_PER_STEP * 2 |B| / R^2, proportional to the mini-batch's size; few features: c / L."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 400))
    X_few = X[:, :1]
    if sparse:
        X, X_few = scipy.sparse.csr_matrix(X), scipy.sparse.csr_matrix(X_few)
    x0 = np.zeros((401, 4))
    state = _streaming.new_stream_state("auto", X, 1e-4, True, x0, warm=False)
    r2 = float(np.square(X.toarray() if sparse else X).sum(axis=1).mean()) + 1.0
    assert 380 < r2 < 420
    np.testing.assert_allclose(_streaming.step_size(state, 256), 0.05 * 2 * 256 / r2, rtol=1e-12)
    np.testing.assert_allclose(_streaming.step_size(state, 128), 0.05 * 2 * 128 / r2, rtol=1e-12)
    assert _streaming.step_size(state, 256) < state.learning_rate  # c / L is the larger here
    few = _streaming.new_stream_state("auto", X_few, 1e-4, True, np.zeros((2, 4)), warm=False)
    curvature = _streaming._loss.curvature_bound(X_few, 1e-4)
    np.testing.assert_allclose(_streaming.step_size(few, 256), 4.0 / curvature, rtol=1e-9)


def test_steps_count_mini_batches_not_calls():
    X, y = _data(600)
    model = SoftmaxRegression().partial_fit(X[:300], y[:300], classes=np.arange(4))
    assert model._stream_state.step == 1 and model._stream_state.samples_seen == 300
    model.partial_fit(X[300:], y[300:])
    assert model._stream_state.step == 2 and model.n_iter_ == 2
    split = SoftmaxRegression(batch_size=100).partial_fit(X, y, classes=np.arange(4))
    assert split._stream_state.step == 6 and split._stream_state.samples_seen == 600


def test_one_call_of_two_batches_equals_two_calls():
    X, y = _data(512)
    # no intercept: the start (the intercept-only optimum) would be that of the first call's rows
    options = {"fit_intercept": False, "learning_rate": 0.5}  # "auto" is from the first call's rows
    one = SoftmaxRegression(batch_size=256, **options).partial_fit(X, y, classes=np.arange(4))
    two = SoftmaxRegression(**options).partial_fit(X[:256], y[:256], classes=np.arange(4))
    two.partial_fit(X[256:], y[256:])
    np.testing.assert_allclose(two.coef_, one.coef_, rtol=1e-12, atol=1e-14)


def test_sparse_mini_batches_equal_dense():
    X, y = _data(1000)
    X[np.abs(X) < 0.8] = 0.0
    dense = _stream(SoftmaxRegression(), X, y, 2)
    sparse = _stream(SoftmaxRegression(), scipy.sparse.csr_matrix(X), y, 2)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=1e-9, atol=1e-12)


def test_partial_fit_continues_from_fit():
    X, y = _data(1000)
    fitted = SoftmaxRegression(alpha=1e-2).fit(X, y)
    f_star = _objective(fitted, X, y, 1e-2)
    n_iter = fitted.n_iter_
    fitted.partial_fit(X[:256], y[:256])
    fresh = SoftmaxRegression(alpha=1e-2).partial_fit(X[:256], y[:256], classes=np.arange(4))
    assert fitted.n_iter_ == n_iter + 1
    assert _objective(fitted, X, y, 1e-2) - f_star < 0.1 * (_objective(fresh, X, y, 1e-2) - f_star)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_stochastic_solvers_keep_their_epoch_per_call(solver):
    X, y = _data(600)
    model = SoftmaxRegression(solver=solver, batch_size=100, random_state=0).partial_fit(X, y, classes=np.arange(4))
    assert model._stochastic_state.step == 6 and model._stream_state is None
