"""Predictions in row chunks (linear_model/_predicting.py): the same values, and memory measured in bytes."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse

from softmaxkit.linear_model import SoftmaxRegression
from softmaxkit.linear_model._predicting import PREDICT_CHUNK_BYTES, TEMPORARIES_PER_CHUNK


def _many_class_model(n_classes, n_features=8, seed=0):
    """A fitted-looking model with ``n_classes`` classes (set by hand: fitting 10,000 classes is not the point)."""
    rng = np.random.default_rng(seed)
    model = SoftmaxRegression().fit(rng.normal(size=(30, n_features)), np.arange(30) % 3)
    model.classes_ = np.arange(n_classes)
    model.coef_ = rng.normal(size=(n_classes, n_features))
    model.intercept_ = rng.normal(size=n_classes)
    return model


def _peak_bytes(function):
    function()  # the compiled kernels' first load allocates about 30 MB, once
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_chunked_predictions_equal_the_whole_computation():
    model = _many_class_model(37)
    X = np.random.default_rng(1).normal(size=(1001, 8))
    logits = X @ model.coef_.T + model.intercept_
    np.testing.assert_allclose(model.decision_function(X), logits, rtol=1e-13, atol=1e-13)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(X), exp / exp.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(model.predict(X), np.argmax(logits, axis=1))
    chunks = list(model.iter_predict_proba(X, chunk_bytes=TEMPORARIES_PER_CHUNK * 8 * 37 * 100))  # 100 rows each
    assert [start for start, _ in chunks] == list(range(0, 1001, 100)) and len(chunks[-1][1]) == 1
    # a 1-row product may round differently (BLAS gemv instead of gemm)
    np.testing.assert_allclose(np.vstack([p for _, p in chunks]), model.predict_proba(X), rtol=1e-14, atol=1e-300)
    sparse = scipy.sparse.csr_matrix(np.where(np.abs(X) > 1, X, 0.0))
    np.testing.assert_allclose(model.predict_proba(sparse), model.predict_proba(sparse.toarray()), rtol=1e-12)


def test_predict_of_10000_classes_stays_within_the_budget():
    """5,000 rows x 10,000 classes: the logits would be 400 MB; predict and score keep to one chunk
    (PREDICT_CHUNK_BYTES = 32 MiB; measured peak 16 MiB)."""
    model = _many_class_model(10_000)
    X = np.random.default_rng(2).normal(size=(5_000, 8))
    y = model.predict(X[:100])
    assert _peak_bytes(lambda: model.predict(X)) < 1.1 * PREDICT_CHUNK_BYTES
    assert _peak_bytes(lambda: model.score(X[:100], y)) < 1.1 * PREDICT_CHUNK_BYTES
    assert model.score(X[:100], y) == 1.0


def test_predict_proba_holds_the_result_and_one_chunk():
    model = _many_class_model(10_000)
    X = np.random.default_rng(3).normal(size=(1_000, 8))
    result_bytes = 1_000 * 10_000 * 8
    assert _peak_bytes(lambda: model.predict_proba(X)) < result_bytes + 1.1 * PREDICT_CHUNK_BYTES

    def consume():
        for _, proba in model.iter_predict_proba(X, chunk_bytes=2**20):
            assert proba.shape[1] == 10_000

    # one chunk and its temporaries (1.24 MiB with numpy 1.24, 0.3 MiB with 2.4), never the 80 MB of N x C
    assert _peak_bytes(consume) < 1.5 * 2**20


@pytest.mark.parametrize("chunk_bytes", [0, -1, 1.5, "big"])
def test_iter_predict_proba_rejects_a_bad_budget(chunk_bytes):
    model = _many_class_model(3)
    with pytest.raises(ValueError, match="chunk_bytes must be a positive integer"):
        next(model.iter_predict_proba(np.zeros((2, 8)), chunk_bytes=chunk_bytes))
