"""Same optimum as scikit-learn's LogisticRegression on news20 (sparse word counts), with the default solver.

The criteria of ``tests/test_sklearn_optimum.py`` (objective within 1e-6 relative of
``LogisticRegression(tol=1e-10)``'s, test accuracy within 0.1 percentage points), on sparse input
fitted as it is (never densified). The always-run form: 1,000 training documents of news20's split
(``tests/_datasets.load_news20``) on the 3,000 words they use most, C = 1; the whole training set at C = 1 and
10 is marked ``slow``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from _datasets import load_news20
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from softmaxkit.linear_model import SoftmaxRegression, _loss

DATASETS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
pytestmark = pytest.mark.skipif(
    not (DATASETS_DIR / "news20" / "news20.svm.gz").is_file(), reason=f"needs {DATASETS_DIR}/news20"
)


@pytest.fixture(scope="module")
def news20():
    return load_news20(DATASETS_DIR)


def _check(X, X_test, y, y_test, C, tol):
    alpha = 1.0 / (C * X.shape[0])
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=100_000)
    with warnings.catch_warnings(), threadpool_limits(1):  # (two BLAS threads on busy cores: many times slower)
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X, y)
    ours = SoftmaxRegression(alpha=alpha, tol=tol, max_iter=5000).fit(X, y)
    assert ours.solver_ == "lbfgs"
    codes = np.searchsorted(ours.classes_, y)
    f_ref = _loss.loss(np.hstack([ref.coef_, ref.intercept_[:, None]]), X, codes, None, alpha)
    f_ours = _loss.loss(np.hstack([ours.coef_, ours.intercept_[:, None]]), X, codes, None, alpha)
    assert (f_ours - f_ref) / f_ref <= 1e-6, (f_ours, f_ref)
    assert abs(100 * ours.score(X_test, y_test) - 100 * ref.score(X_test, y_test)) <= 0.1


def test_news20_slice_same_optimum(news20):
    X, X_test, y, y_test = news20
    rows = np.random.default_rng(0).choice(X.shape[0], size=1000, replace=False)
    X, y = X[rows], y[rows]
    words = np.sort(np.argsort(np.bincount(X.indices, minlength=X.shape[1]))[-3000:])  # their 3,000 commonest
    _check(X[:, words], X_test[:, words], y, y_test, 1.0, 1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("C", [1.0, 10.0])
def test_news20_same_optimum(news20, C):
    _check(*news20, C, 1e-8)
