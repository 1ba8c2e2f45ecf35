"""solver="auto"'s choice on synthetic shapes, and the BLAS thread rule: both pinned, both applied by fit.

The rules are measured in ``benchmarks/bench_fit.py`` (see their docstrings); these tests pin what
they decide, so that a change of rule is a visible change of these tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from threadpoolctl import threadpool_info, threadpool_limits

from softmaxkit.linear_model import SoftmaxRegression, _threads
from softmaxkit.linear_model._auto import choose_solver


@pytest.mark.parametrize(
    "shape, expected",
    [
        # (n_samples, n_features, n_classes, nnz): dense sets where the whole Hessian (P^2 numbers) fits
        ((7_494, 16, 10, 7_494 * 16), "newton-cg"),  # pendigits
        ((160_000, 100, 20, 160_000 * 100), "newton-cg"),  # 2 x 2020^2 = 8.2e6 <= nnz 1.6e7
        # the class blocks (C (d + 1)^2 numbers) fit, the whole Hessian does not
        ((40_000, 500, 10, 40_000 * 500), "newton-cg"),  # 2.5e6 <= 2e7; 2 x 5010^2 = 5e7 > 2e7
        # neither fits: L-BFGS
        ((5_000, 2_000, 5, 5_000 * 2_000), "lbfgs"),  # blocks 2e7 > max(2**22, 1e7)
        ((11_951, 62_061, 20, 950_000), "lbfgs"),  # news20: sparse text
        ((50_000, 2_000, 12, 1_000_000), "lbfgs"),  # sparse one-hot: 12 x 2001^2 = 4.8e7 > 2**22
        # small problems always fit the 2**22-number floor
        ((200, 500, 3, 200 * 500), "newton-cg"),  # 3 x 501^2 = 7.5e5
    ],
)
def test_auto_chooses_by_shape(shape, expected):
    n_samples, n_features, n_classes, nnz = shape
    chosen = choose_solver(n_samples=n_samples, n_features=n_features, n_classes=n_classes, nnz=nnz)
    assert chosen == expected


def test_fit_records_what_auto_chose():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    dense = SoftmaxRegression().fit(rng.normal(size=(300, 5)), y)
    assert dense.solver_ == "newton-cg"
    wide = scipy.sparse.random(300, 3_000, density=0.002, format="csr", random_state=0)  # 3 x 3001^2 > 2**22
    assert SoftmaxRegression().fit(wide, y).solver_ == "lbfgs"
    assert SoftmaxRegression(solver="sgd", random_state=0).fit(wide, y).solver_ == "sgd"  # an explicit choice stays


def test_thread_rule():
    small = _threads.SMALL_PASS - 1
    assert _threads.blas_threads(nnz=small, n_classes=1, load=0.0, cpus=2) == 1
    assert _threads.blas_threads(nnz=_threads.SMALL_PASS, n_classes=1, load=0.0, cpus=2) is None
    assert _threads.blas_threads(nnz=10**9, n_classes=10, load=1.4, cpus=2) is None  # a core idle: unchanged
    assert _threads.blas_threads(nnz=10**9, n_classes=10, load=1.5, cpus=2) == 1  # none idle: one thread


def _blas_threads():
    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_the_limit_lowers_and_never_raises():
    with threadpool_limits(2, user_api="blas"):
        with _threads.limit_blas_threads(1):
            assert _blas_threads() == 1
        assert _blas_threads() == 2
        with _threads.limit_blas_threads(None):
            assert _blas_threads() == 2
    with threadpool_limits(1, user_api="blas"):
        with _threads.limit_blas_threads(4):
            assert _blas_threads() == 1  # the caller's limit stays


def test_a_small_fit_runs_on_one_blas_thread(monkeypatch):
    seen = []
    original = _threads.limit_blas_threads

    def recording(threads):
        seen.append(threads)
        return original(threads)

    monkeypatch.setattr("softmaxkit.linear_model._softmax_regression.limit_blas_threads", recording)
    rng = np.random.default_rng(1)
    SoftmaxRegression().fit(rng.normal(size=(100, 4)), rng.integers(0, 3, size=100))
    assert seen == [1]
