"""partial_fit's incremental Newton (softmaxkit.linear_model._stream_newton): passes over a finite set reach
fit's optimum; duplicates, weights, soft labels, sparse input, warm starts, the memory bound and the switch
to averaged SGD.

A call with the whole set is a Newton step on fit's objective, so those streams must equal fit's optimum to
the reference's own accuracy. Mini-batch passes weigh each sample by the times it came, which within a pass
differs by one between the samples already seen and the others: they converge to the optimum as that
difference fades, and are checked by the relative gap of the objective (averaged SGD: 1e-2 to 1e-3 there).
"""

import numpy as np
import pytest
import scipy.sparse
from _streams import CLASSES, objective, passes, reference, relative_gap
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from softmaxkit.linear_model import SoftmaxRegression, _stream_newton, _stream_replay, _streaming


def _data(n=600, n_features=5, seed=0):
    X, y = make_classification(
        n_samples=n, n_features=n_features, n_informative=3, n_redundant=0, n_classes=3, random_state=seed
    )
    return StandardScaler().fit_transform(X), y


def _assert_same_model(stream, fitted, rtol=1e-7):
    scale = np.abs(fitted.coef_).max()
    np.testing.assert_allclose(stream.coef_, fitted.coef_, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(stream.intercept_, fitted.intercept_, rtol=0, atol=rtol * scale)


def test_passes_over_a_finite_set_reach_fits_optimum():
    X, y = _data()
    fitted = reference(alpha=1e-3).fit(X, y)
    whole = passes(SoftmaxRegression(alpha=1e-3), X, y, 12, batch=len(y))
    assert isinstance(whole._stream_state, _stream_newton.NewtonStream)
    _assert_same_model(whole, fitted)
    stream = passes(SoftmaxRegression(alpha=1e-3), X, y, 15)
    assert 0 <= relative_gap(stream, fitted, X, y, alpha=1e-3) < 1e-9


def test_raw_features_need_no_standardising():
    """Newton's steps do not depend on the features' scales: scales 1e-6 to 1e6 and offsets of 100 converge
    as fast (averaged SGD's gap stays above 0.1 here; one pinning scale for every feature left 4.5e-4)."""
    X, y = _data()
    X = X * np.logspace(-6, 6, X.shape[1]) + 100.0
    stream = passes(SoftmaxRegression(alpha=1e-3), X, y, 20)
    assert 0 <= relative_gap(stream, reference(alpha=1e-3).fit(X, y), X, y, alpha=1e-3) < 1e-9


def test_weights_soft_labels_and_smoothing_give_fits_optimum():
    X, y = _data(400, seed=1)
    rng = np.random.default_rng(2)
    weights = rng.uniform(0.2, 5.0, len(y))
    options = {"alpha": 1e-3, "label_smoothing": 0.1, "class_weight": {0: 2.0, 1: 1.0, 2: 0.5}}
    stream = passes(SoftmaxRegression(**options), X, y, 10, batch=len(y), sample_weight=weights)
    _assert_same_model(stream, reference(**options).fit(X, y, sample_weight=weights))
    soft = rng.dirichlet(np.ones(3), len(y))
    stream = passes(SoftmaxRegression(alpha=1e-3), X, soft, 10, batch=len(y))
    _assert_same_model(stream, reference(alpha=1e-3).fit(X, soft))
    stream = passes(SoftmaxRegression(alpha=1e-3), X, soft, 15)
    assert 0 <= relative_gap(stream, reference(alpha=1e-3).fit(X, soft), X, soft, alpha=1e-3) < 1e-9


def test_weights_of_different_calls_are_weighed_against_each_other():
    """The calls' weights are not rescaled per call: the second half weighted 3 equals fit with those weights."""
    X, y = _data(400, seed=3)
    weights = np.where(np.arange(len(y)) < 200, 1.0, 3.0)
    order = np.concatenate([np.arange(200), np.arange(200, 400)])  # each call all 1s or all 3s
    stream = SoftmaxRegression(alpha=1e-3)
    for _ in range(20):
        for start in range(0, 400, 50):
            rows = order[start : start + 50]
            stream.partial_fit(X[rows], y[rows], classes=CLASSES, sample_weight=weights[rows])
    fitted = reference(alpha=1e-3).fit(X, y, sample_weight=weights)
    assert 0 <= relative_gap(stream, fitted, X, y, weights, alpha=1e-3) < 1e-9
    rescaled = reference(alpha=1e-3).fit(X, y)  # what per-call rescaling would have reached
    assert relative_gap(rescaled, fitted, X, y, weights, alpha=1e-3) > 1e-3


def test_duplicate_rows_count_as_often_as_they_come():
    """A row twice in the data counts twice, whether its copies share a mini-batch or not."""
    X, y = _data(300, seed=4)
    X, y = np.vstack([X, X[:40], X[:10]]), np.concatenate([y, y[:40], y[:10]])
    stream = passes(SoftmaxRegression(alpha=1e-3), X, y, 15, batch=100)
    assert 0 <= relative_gap(stream, reference(alpha=1e-3).fit(X, y), X, y, alpha=1e-3) < 1e-9
    memory = stream._stream_state.memory
    assert len(memory.slots) == 300 and memory.counts[: len(memory.slots)].max() == 15 * 3


def test_the_same_features_with_another_label_are_another_sample():
    X, y = _data(200, seed=5)
    X, y = np.vstack([X, X[:30]]), np.concatenate([y, (y[:30] + 1) % 3])
    stream = passes(SoftmaxRegression(alpha=1e-2), X, y, 15)
    assert len(stream._stream_state.memory.slots) == 230
    assert 0 <= relative_gap(stream, reference(alpha=1e-2).fit(X, y), X, y, alpha=1e-2) < 1e-9


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_sparse_mini_batches_and_float32_equal_dense(fit_intercept):
    X, y = _data(300, seed=6)
    X[np.abs(X) < 0.7] = 0.0
    options = {"alpha": 1e-3, "fit_intercept": fit_intercept}
    dense = passes(SoftmaxRegression(**options), X, y, 3)
    sparse = passes(SoftmaxRegression(**options), scipy.sparse.csr_matrix(X), y, 3)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=1e-10, atol=1e-12)
    single = passes(SoftmaxRegression(dtype=np.float32, **options), X.astype(np.float32), y, 8, batch=len(y))
    assert single.coef_.dtype == np.float32
    _assert_same_model(single, reference(**options).fit(X, y), rtol=1e-6)


def test_a_stream_cut_into_other_calls_reaches_the_same_optimum():
    X, y = _data(500, seed=7)
    coarse = passes(SoftmaxRegression(alpha=1e-3), X, y, 15, batch=250)
    fine = passes(SoftmaxRegression(alpha=1e-3, batch_size=50), X, y, 15, batch=250)
    assert fine._stream_state.step == 5 * coarse._stream_state.step
    fitted = reference(alpha=1e-3).fit(X, y)
    assert (
        0 <= relative_gap(coarse, fitted, X, y, alpha=1e-3) < 1e-9
        and 0 <= relative_gap(fine, fitted, X, y, alpha=1e-3) < 1e-9
    )


def test_a_full_memory_turns_the_stream_into_averaged_sgd(monkeypatch):
    """With room for 100 samples of 600, the first batch that does not fit goes on as averaged SGD from the
    Newton's model, the memory freed. (Keeping the models of the samples it could not replace left the stream at
    1.4e-2 after 10 passes, against averaged SGD's 2.3e-3 from scratch.)"""
    X, y = _data()
    monkeypatch.setattr(_stream_newton, "ROW_MEMORY_BYTES", 100 * (8 * 3 + _stream_newton._ROW_OVERHEAD_BYTES))
    model = SoftmaxRegression(alpha=1e-3).partial_fit(X[:64], y[:64], classes=CLASSES)
    state = model._stream_state
    before = model.coef_.copy()
    model.partial_fit(X[64:128], y[64:128])  # 128 > 100 samples: this batch is averaged SGD's
    assert isinstance(state.fallback, _streaming.StreamState) and state.fallback.samples_seen == 128
    assert len(state.memory.slots) == 0 and state.hessian.size == 0
    assert np.abs(model.coef_ - before).max() < 0.5 * np.abs(before).max()  # from the model it had
    passes(model, X, y, 10)
    assert 0 <= relative_gap(model, reference(alpha=1e-3).fit(X, y), X, y, alpha=1e-3) < 4e-3  # measured 1.2e-3


def test_the_memory_of_the_samples_stays_within_its_budget(monkeypatch):
    """30,000 distinct samples with room for a third of them: the traced memory grows by the budget (and the
    transient of its arrays' last doubling), not more, and is freed when the stream turns to averaged SGD."""
    import tracemalloc

    budget = 2**20
    monkeypatch.setattr(_stream_newton, "ROW_MEMORY_BYTES", budget)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30_000, 5)), rng.integers(0, 3, 30_000)
    model = SoftmaxRegression().partial_fit(X[:500], y[:500], classes=CLASSES)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(500, 30_000, 500):
            model.partial_fit(X[start : start + 500], y[start : start + 500])
        grown, peak = (m - before for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert model._stream_state.fallback is not None
    assert peak < 1.5 * budget and grown < 0.1 * budget  # peak measured 1.31


def test_partial_fit_continues_from_fit():
    """A fitted model is a prior of WARM_START_ROWS samples: one batch of new rows moves it a little."""
    X, y = _data(1000)
    fitted = SoftmaxRegression(alpha=1e-2).fit(X, y)
    f_star = objective(fitted, X, y, alpha=1e-2)
    fitted.partial_fit(X[:64], y[:64])
    fresh = SoftmaxRegression(alpha=1e-2).partial_fit(X[:64], y[:64], classes=CLASSES)
    f_warm, f_fresh = objective(fitted, X, y, alpha=1e-2), objective(fresh, X, y, alpha=1e-2)
    assert f_warm - f_star < 0.01 * (f_fresh - f_star)


def test_the_method_follows_the_size_of_the_model_and_the_learning_rate():
    X, y = _data(300)
    assert isinstance(SoftmaxRegression().partial_fit(X, y, classes=CLASSES)._stream_state, _stream_newton.NewtonStream)
    wide = np.random.default_rng(0).standard_normal((300, 400))
    state = SoftmaxRegression().partial_fit(wide, y, classes=CLASSES)._stream_state
    assert isinstance(state, _stream_replay.ReplayStream)  # K = 401 * 3 > MAX_PARAMETERS
    state = SoftmaxRegression(learning_rate=0.1).partial_fit(X, y, classes=CLASSES)._stream_state
    assert isinstance(state, _streaming.StreamState)
    assert _stream_newton.affordable(n_features=340, n_classes=3, fit_intercept=True)
    assert not _stream_newton.affordable(n_features=341, n_classes=3, fit_intercept=True)


def test_a_failed_step_leaves_the_stream_as_it_was():
    """Weights whose sum overflows are refused, and the sums, the memory and the model are those before: the
    same calls then give the model of a stream that never saw the bad one."""
    X, y = _data(200)
    model = SoftmaxRegression().partial_fit(X[:100], y[:100], classes=CLASSES)
    state = model._stream_state
    before = (state.hessian.copy(), state.rhs.copy(), state.memory.counts.copy(), state.memory.logits.copy())
    with pytest.raises(ValueError, match="finite sum over the stream"):
        model.partial_fit(X, y, sample_weight=np.r_[np.ones(100), np.full(100, 1e307)])
    after = (state.hessian, state.rhs, state.memory.counts, state.memory.logits)
    for was, now in zip(before, after):
        np.testing.assert_array_equal(now, was)
    assert len(state.memory.slots) == 100  # the new samples' slots given back
    model.partial_fit(X, y)
    clean = SoftmaxRegression().partial_fit(X[:100], y[:100], classes=CLASSES).partial_fit(X, y)
    np.testing.assert_allclose(model.coef_, clean.coef_, rtol=1e-12, atol=1e-14)


def test_a_large_sparse_call_allocates_a_bounded_amount(monkeypatch):
    """A call of 8,000 sparse rows (one step) sums its models in chunks: its traced peak is about that of 2,000
    rows, the memory of the 6,000 samples more besides (one piece would take 16 MB at 8,000 rows)."""
    import tracemalloc

    monkeypatch.setattr(_stream_newton, "_CHUNK_NUMBERS", 2**16)
    rng = np.random.default_rng(0)
    X = scipy.sparse.random(8000, 40, density=0.05, format="csr", random_state=1)
    y = rng.integers(0, 3, 8000)

    def peak(n):
        tracemalloc.start()
        try:
            SoftmaxRegression().partial_fit(X[:n], y[:n], classes=CLASSES)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    per_sample = 8 * 3 + _stream_newton._ROW_OVERHEAD_BYTES
    assert peak(8000) - peak(2000) < 2 * 6000 * per_sample  # (the memory's arrays grow by doubling)


def test_parameters_set_between_calls():
    """A new alpha applies from the next call (the sums hold no penalty); a new fit_intercept is refused."""
    X, y = _data(300)
    model = passes(SoftmaxRegression(alpha=1e-3), X, y, 3, batch=len(y))
    model.set_params(alpha=1.0)
    passes(model, X, y, 10, batch=len(y))
    _assert_same_model(model, reference(alpha=1.0).fit(X, y))
    model.set_params(fit_intercept=False)
    with pytest.raises(ValueError, match="fit_intercept must stay True"):
        model.partial_fit(X, y)


def test_negative_zero_is_the_same_sample():
    X, y = _data(100)
    X[:, 0] = 0.0
    model = SoftmaxRegression().partial_fit(X, y, classes=CLASSES)
    model.partial_fit(np.where(X == 0.0, -0.0, X), y)
    assert len(model._stream_state.memory.slots) == 100


def test_zero_weight_rows_are_not_remembered():
    X, y = _data(200)
    weights = np.r_[np.zeros(50), np.ones(150)]
    model = SoftmaxRegression().partial_fit(X, y, classes=CLASSES, sample_weight=weights)
    assert len(model._stream_state.memory.slots) == 150
