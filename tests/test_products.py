"""The two products of ``linear_model._products`` (both forms, block by block) against plain NumPy in float64."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from softmaxkit.linear_model import _loss, _products


@pytest.mark.parametrize("n_features", [7, _products.TRANSPOSED_MIN_FEATURES + 44])  # the plain and transposed form
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocked_products_equal_numpy(n_features, fit_intercept, dtype):
    rng = np.random.default_rng(0)
    n_classes = 5
    n_samples = 3 * _products.block_rows(10**6, n_features, n_classes, sparse=False) + 17  # 4 blocks, the last short
    X = rng.normal(size=(n_samples, n_features)).astype(dtype)
    theta = rng.normal(size=(n_features + int(fit_intercept), n_classes)).astype(dtype)
    G = rng.normal(size=(n_samples, n_classes)).astype(dtype)
    problem = _loss.LinearLoss(X, np.zeros(n_samples, dtype=np.intp), None, 0.0, n_classes=n_classes,
                               fit_intercept=fit_intercept, label_smoothing=0.0)  # fmt: skip
    assert len(list(problem.blocks())) == 4
    Wt, b = problem.split(theta)
    X64, W64 = X.astype(np.float64), theta[:n_features].astype(np.float64)
    expected_z = X64 @ W64 + (0.0 if b is None else b.astype(np.float64))
    expected_g = X64.T @ G.astype(np.float64)
    out = np.zeros(theta.shape, dtype=dtype)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for start, stop in problem.blocks():
        z = problem.logits(Wt, b, start, stop, out=np.empty((stop - start, n_classes), dtype=dtype))
        assert z.dtype == dtype
        np.testing.assert_allclose(z, expected_z[start:stop], rtol=rtol, atol=rtol * 10)
        problem.add_product(out, G[start:stop], start, stop)
    np.testing.assert_allclose(out[:n_features], expected_g, rtol=rtol, atol=rtol * 100)
    if fit_intercept:
        np.testing.assert_allclose(out[n_features], G.astype(np.float64).sum(0), rtol=rtol, atol=rtol * 100)
    whole = np.zeros(theta.shape, dtype=dtype)  # one block: the product written, not added
    _products.add_product(whole, X, G, whole=True, fit_intercept=fit_intercept, ones=np.ones(n_samples, dtype))
    np.testing.assert_allclose(whole, out, rtol=rtol, atol=rtol * 100)


def test_block_rows_hold_2_16_numbers_of_X_and_the_logits():
    assert _products.block_rows(10**6, 54, 10, sparse=False) == 2**16 // 64
    assert _products.block_rows(10**6, 2_000, 10, sparse=False) == _products.MIN_BLOCK_ROWS
    assert _products.block_rows(500, 54, 10, sparse=True) == 500  # sparse: one block
    X = scipy.sparse.random(40, 300, density=0.1, format="csr", random_state=0)
    Wt = np.random.default_rng(1).normal(size=(300, 3))
    np.testing.assert_allclose(_products.logits(X, Wt, None, None, sparse=True), X.toarray() @ Wt, rtol=1e-12)
