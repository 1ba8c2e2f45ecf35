"""``SoftmaxRegression.predict_log_proba`` of the dominant class against the 50-digit oracle (issue 14).

On a well-separated problem, at points far from the decision boundaries (the training points scaled
by 6: the logit gaps grow from 9..63 to 54..380), the dominant class's probability rounds to 1 and ``log p`` is far below
one ulp of 1 (-1e-30 and smaller): the naive ``log(sum exp)`` gives 0.0 there. The estimator's
log-probabilities are :func:`softmaxkit.log_softmax` of its logits, so they inherit its
cancellation-free form; the oracle is evaluated on those very logits (``_all(X, "logits")``, the input of
``predict_log_proba``: a logit one ulp off would move ``log p_top`` by up to ``|gap|`` ulp).

The bound is issue 14's: 32 ulp, plus for a quantity built from ``exp(x_j - max)`` (``log p_top =
-log1p(S')`` is) the ``|x_j - max|`` ulp that rounding the shift costs where it is inexact
(``_reference.shift_allowance``; the shift is not compensated).
"""

from __future__ import annotations

import numpy as np
import pytest
from _reference import exact_softmax_rows, shift_allowance, ulp_error

from softmaxkit.linear_model import SoftmaxRegression

pytest.importorskip("mpmath", reason="the exact oracle needs mpmath (the test extra)")

BOUND = 32.0


def _separated(n_classes, seed):
    """Clusters 12 apart in 3-D (unit spread), 20 samples per class: most rows are confident."""
    rng = np.random.default_rng(seed)
    centres = 12.0 * rng.standard_normal((n_classes, 3))
    X = np.concatenate([c + rng.standard_normal((20, 3)) for c in centres])
    y = np.repeat(np.arange(n_classes), 20)
    return X, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_classes", [2, 5])
def test_dominant_class_is_finite_and_within_32_ulp_of_the_oracle(n_classes, dtype):
    X, y = _separated(n_classes, seed=n_classes)
    model = SoftmaxRegression(alpha=1e-4, dtype=dtype, max_iter=200).fit(X, y)
    X = 6.0 * X  # far from the boundaries: confident predictions
    log_proba = model.predict_log_proba(X)
    assert log_proba.dtype == dtype
    logits = model._all(
        X, "logits"
    )  # the (n, C) logits predict_log_proba works from (decision_function is 1-D for two classes)
    exact = exact_softmax_rows(logits)["log_softmax"]
    rows = np.arange(len(X))
    top = np.argmax(logits, axis=1)
    dominant, exact_dominant = log_proba[rows, top], exact[rows, top]
    # The case of the issue: the dominant class's log-probability is below one ulp of 1 for many rows
    # (where log(1 + S') rounds to 0) ...
    tiny = np.abs(exact_dominant) < np.finfo(dtype).eps
    assert tiny.sum() >= len(X) // 2, np.abs(exact_dominant).max()
    representable = np.abs(exact_dominant) >= np.finfo(dtype).smallest_subnormal
    assert representable.sum() >= len(X) // 4
    # ... and yet it is finite, negative and within 32 ulp of the exact value wherever that is representable.
    assert np.all(np.isfinite(dominant))
    assert np.all(dominant[representable] < 0)
    _, row_allowance = shift_allowance(logits)
    bound = BOUND + row_allowance[:, 0][representable]
    errors = ulp_error(dominant[representable], exact_dominant[representable], dtype)
    assert np.all(errors <= bound), (float(np.max(errors - bound)), int(np.argmax(errors - bound)))
    # Every entry: log p_c = (x_c - max) - log1p(S'), within the same bound.
    assert np.all(ulp_error(log_proba, exact, dtype) <= BOUND + row_allowance)
