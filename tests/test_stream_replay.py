"""partial_fit's remembered rows with L-BFGS (softmaxkit.linear_model._stream_replay), the stream method of
models too large for the incremental Newton: passes over a finite set reach fit's optimum; weights, soft labels,
duplicates, sparse and float32 input, warm starts, the memory bound and the switch to averaged SGD.

Every test here makes the Newton unaffordable (MAX_PARAMETERS = 0), so that small problems take this method.
"""

import numpy as np
import pytest
import scipy.sparse
from _streams import CLASSES, objective, passes, reference, relative_gap, traced_growth
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from softmaxkit.linear_model import SoftmaxRegression, _stream_newton, _stream_replay, _streaming


@pytest.fixture(autouse=True)
def _no_newton(monkeypatch):
    monkeypatch.setattr(_stream_newton, "MAX_PARAMETERS", 0)


def _data(n=400, n_features=8, seed=0):
    X, y = make_classification(
        n_samples=n, n_features=n_features, n_informative=4, n_redundant=0, n_classes=3, random_state=seed
    )
    return StandardScaler().fit_transform(X), y


def test_passes_over_a_finite_set_reach_fits_optimum():
    X, y = _data()
    fitted = reference(alpha=1e-3).fit(X, y)
    whole = passes(SoftmaxRegression(alpha=1e-3), X, y, 40, batch=len(y))
    assert isinstance(whole._stream_state, _stream_replay.ReplayStream)
    scale = np.abs(fitted.coef_).max()
    np.testing.assert_allclose(whole.coef_, fitted.coef_, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(whole.intercept_, fitted.intercept_, rtol=0, atol=1e-6 * scale)
    stream = passes(SoftmaxRegression(alpha=1e-3), X, y, 20)
    assert 0 <= relative_gap(stream, fitted, X, y, alpha=1e-3) < 2e-6  # measured 5.3e-7 (1.7e-6 after 10 passes)


def test_weights_soft_labels_and_smoothing_give_fits_optimum():
    X, y = _data(300, seed=1)
    rng = np.random.default_rng(2)
    weights = rng.uniform(0.2, 5.0, len(y))
    options = {"alpha": 1e-3, "label_smoothing": 0.1, "class_weight": {0: 2.0, 1: 1.0, 2: 0.5}}
    stream = passes(SoftmaxRegression(**options), X, y, 20, sample_weight=weights)
    fitted = reference(**options).fit(X, y, sample_weight=weights)
    class_weights = np.array([2.0, 1.0, 0.5])[y] * weights
    assert (
        0 <= relative_gap(stream, fitted, X, y, class_weights, alpha=1e-3, label_smoothing=0.1) < 2e-7
    )  # measured 4.9e-8
    soft = rng.dirichlet(np.ones(3), len(y))
    stream = passes(SoftmaxRegression(alpha=1e-3), X, soft, 20)
    assert 0 <= relative_gap(stream, reference(alpha=1e-3).fit(X, soft), X, soft, alpha=1e-3) < 1e-8


def test_duplicate_rows_count_as_often_as_they_come():
    X, y = _data(300, seed=4)
    X, y = np.vstack([X, X[:40], X[:10]]), np.concatenate([y, y[:40], y[:10]])
    stream = passes(SoftmaxRegression(alpha=1e-3), X, y, 20, batch=100)
    assert 0 <= relative_gap(stream, reference(alpha=1e-3).fit(X, y), X, y, alpha=1e-3) < 1.5e-6  # measured 3.9e-7
    state = stream._stream_state
    assert len(state.slots) == 300 and state.counts[: len(state.slots)].max() == 20 * 3


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_sparse_mini_batches_and_float32_equal_dense(fit_intercept):
    """The same stream, dense or sparse (stored zeros and unsorted indices included), gives the same model."""
    X, y = _data(300, seed=6)
    X[np.abs(X) < 0.7] = 0.0
    options = {"alpha": 1e-3, "fit_intercept": fit_intercept}
    dense = passes(SoftmaxRegression(**options), X, y, 4)
    sparse = passes(SoftmaxRegression(**options), scipy.sparse.csr_matrix(X), y, 4)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=1e-9, atol=1e-11)
    stored = scipy.sparse.csr_matrix(X)
    stored.data[::7] = 0.0  # stored zeros: the same samples
    assert len(passes(SoftmaxRegression(**options), stored, y, 2)._stream_state.slots) == 300
    single = passes(SoftmaxRegression(dtype=np.float32, **options), X.astype(np.float32), y, 20)
    assert single.coef_.dtype == np.float32
    assert (
        0 <= relative_gap(single, reference(**options).fit(X, y), X, y, alpha=1e-3, fit_intercept=fit_intercept) < 1e-5
    )


def test_partial_fit_continues_from_fit():
    """A fitted model is a prior of WARM_START_ROWS samples: one batch of new rows moves it a little."""
    X, y = _data(1000)
    fitted = SoftmaxRegression(alpha=1e-2).fit(X, y)
    f_star = objective(fitted, X, y, alpha=1e-2)
    fitted.partial_fit(X[:64], y[:64])
    assert isinstance(fitted._stream_state, _stream_replay.ReplayStream)
    fresh = SoftmaxRegression(alpha=1e-2).partial_fit(X[:64], y[:64], classes=CLASSES)
    f_warm, f_fresh = objective(fitted, X, y, alpha=1e-2), objective(fresh, X, y, alpha=1e-2)
    assert 0 <= f_warm - f_star < 0.01 * (f_fresh - f_star)


def test_a_full_memory_turns_the_stream_into_averaged_sgd(monkeypatch):
    """With room for the L-BFGS state and about 150 of 400 samples, the stream goes on as averaged SGD from the
    model it had, and its memory is freed."""
    X, y = _data()
    fixed = _stream_replay._fixed_bytes(9 * 3)
    per_row = 2 * 8 * 8 + 8 + _stream_replay._ROW_OVERHEAD_BYTES
    monkeypatch.setattr(_stream_replay, "MEMORY_BYTES", fixed + 150 * per_row)
    model = SoftmaxRegression(alpha=1e-3).partial_fit(X[:128], y[:128], classes=CLASSES)
    state = model._stream_state
    assert state.fallback is None and len(state.slots) == 128
    before = model.coef_.copy()
    model.partial_fit(X[128:256], y[128:256])
    assert isinstance(state.fallback, _streaming.StreamState) and not state.slots and state.rows is None
    assert state.fallback.samples_seen == 256
    assert np.abs(model.coef_ - before).max() < 0.5 * np.abs(before).max()  # from the model it had
    passes(model, X, y, 10)
    assert 0 <= relative_gap(model, reference(alpha=1e-3).fit(X, y), X, y, alpha=1e-3) < 5e-3  # measured 1.8e-3


def test_the_memory_stays_within_its_budget(monkeypatch):
    """20,000 distinct sparse samples with room for about a third: the traced memory grows by the budget, not more."""
    budget = 2**20 + _stream_replay._fixed_bytes(41 * 3)
    monkeypatch.setattr(_stream_replay, "MEMORY_BYTES", budget)
    rng = np.random.default_rng(0)
    X = scipy.sparse.random(20_000, 40, density=0.1, format="csr", random_state=1)
    y = rng.integers(0, 3, 20_000)
    model = SoftmaxRegression().partial_fit(X[:500], y[:500], classes=CLASSES)
    peak, grown = traced_growth(model, X, y, start=500, batch=500)
    assert model._stream_state.fallback is not None  # the memory did fill up
    assert peak < 1.1 * budget and grown < 0.1 * budget


def test_bad_weights_and_parameters_leave_the_stream_as_it_was():
    X, y = _data(200)
    model = SoftmaxRegression().partial_fit(X[:100], y[:100], classes=CLASSES)
    state = model._stream_state
    counts, coef = state.counts.copy(), model.coef_.copy()
    with pytest.raises(ValueError, match="finite sum over the stream"):
        model.partial_fit(X, y, sample_weight=np.r_[np.ones(100), np.full(100, 1e307)])
    np.testing.assert_array_equal(state.counts, counts)
    np.testing.assert_array_equal(model.coef_, coef)
    model.set_params(fit_intercept=False)
    with pytest.raises(ValueError, match="fit_intercept must stay True"):
        model.partial_fit(X, y)


def test_zero_weight_rows_are_not_remembered():
    X, y = _data(200)
    weights = np.r_[np.zeros(50), np.ones(150)]
    model = SoftmaxRegression().partial_fit(X, y, classes=CLASSES, sample_weight=weights)
    assert len(model._stream_state.slots) == 150


def test_the_method_follows_the_size_of_the_model():
    assert _stream_replay.affordable(n_features=62_061, n_classes=20, fit_intercept=True)  # news20
    assert not _stream_replay.affordable(n_features=200_000, n_classes=20, fit_intercept=True)
    X, y = _data(300)
    state = SoftmaxRegression().partial_fit(X, y, classes=CLASSES)._stream_state
    assert isinstance(state, _stream_replay.ReplayStream)
    state = SoftmaxRegression(learning_rate=0.1).partial_fit(X, y, classes=CLASSES)._stream_state
    assert isinstance(state, _streaming.StreamState)


def test_float32_streams_take_weights_of_any_scale():
    """The memory's weights (counts times weights, float64) are scaled before the float32 loss sees them: weights
    of 1e36 give the model weights of 1 give (unscaled, they overflowed float32: a gap of 0.79)."""
    X, y = _data(300, seed=8)
    X32 = X.astype(np.float32)
    ones = passes(SoftmaxRegression(alpha=1e-3, dtype=np.float32), X32, y, 6)
    huge = passes(SoftmaxRegression(alpha=1e-3, dtype=np.float32), X32, y, 6, sample_weight=np.full(300, 1e36))
    np.testing.assert_allclose(huge.coef_, ones.coef_, rtol=1e-4, atol=1e-5)


def test_dense_and_sparse_calls_are_the_same_samples():
    """Calls are brought to the first call's format: the same rows, dense or sparse, are the same samples."""
    X, y = _data(200, seed=9)
    X[np.abs(X) < 0.5] = 0.0
    for first, then in [(X, scipy.sparse.csr_matrix(X)), (scipy.sparse.csr_matrix(X), X)]:
        model = SoftmaxRegression().partial_fit(first, y, classes=CLASSES).partial_fit(then, y)
        state = model._stream_state
        assert len(state.slots) == 200 and state.counts[:200].min() == 2


def test_rows_too_large_for_any_step_are_refused_before_the_stream_changes():
    X, y = _data(200)
    model = SoftmaxRegression().partial_fit(X[:100], y[:100], classes=CLASSES)
    state = model._stream_state
    counts, coef = state.counts.copy(), model.coef_.copy()
    huge = X[100:].copy()
    huge[:5] *= 1e300
    with pytest.raises(ValueError, match="squared norm is finite"):
        model.partial_fit(huge, y[100:])
    np.testing.assert_array_equal(state.counts, counts)
    np.testing.assert_array_equal(model.coef_, coef)
    assert len(state.slots) == 100


@pytest.mark.parametrize("newton", [False, True])
def test_class_weight_and_label_smoothing_stay_fixed_while_a_stream_goes_on(monkeypatch, newton):
    """A sample is remembered with its weight and target: a change of either would count it twice."""
    if newton:
        monkeypatch.setattr(_stream_newton, "MAX_PARAMETERS", 1024)
    X, y = _data(200)
    model = SoftmaxRegression(class_weight={0: 2.0, 1: 1.0, 2: 1.0}).partial_fit(X, y, classes=CLASSES)
    method = _stream_newton.NewtonStream if newton else _stream_replay.ReplayStream
    assert isinstance(model._stream_state, method)
    model.set_params(class_weight={0: 1.0, 1: 1.0, 2: 2.0})
    with pytest.raises(ValueError, match="class_weight must stay"):
        model.partial_fit(X, y)
    model.set_params(class_weight={0: 2.0, 1: 1.0, 2: 1.0}, label_smoothing=0.2)
    with pytest.raises(ValueError, match=r"label_smoothing must stay 0\.0"):
        model.partial_fit(X, y)
    model.set_params(label_smoothing=0.0, alpha=1e-2)  # alpha may change
    model.partial_fit(X, y)


def test_a_warm_start_counts_its_prior_in_the_memory(monkeypatch):
    """The prior's rows are the memory's first rows, counted in its bytes: a warm stream of dense rows stays within
    the budget (its prior was a second, uncounted copy: 1.66 times the budget)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3000, 40)), rng.integers(0, 3, 3000)
    budget = _stream_replay._fixed_bytes(41 * 3) + 2**20
    monkeypatch.setattr(_stream_replay, "MEMORY_BYTES", budget)
    model = SoftmaxRegression(alpha=1e-2).fit(X[:300], y[:300])
    model.partial_fit(X[:256], y[:256])
    state = model._stream_state
    assert state.fallback is None and state.n_rows == 2 * 256 and state.prior_linear is not None
    peak, _ = traced_growth(model, X, y, start=256, batch=256)
    assert state.fallback is not None and peak < 1.1 * budget
