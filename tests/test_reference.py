"""The test suite's comparison helpers (tests/_reference.py) can fail: every check they promise bites.

NumPy first; the tensor cases need PyTorch and are skipped, with the reason, without it.
"""

from __future__ import annotations

import numpy as np
import pytest
from _reference import assert_close, frobenius_error, import_torch, max_relative_error, seed_of


def test_max_relative_error_is_relative_to_the_largest_finite_reference_entry():
    assert max_relative_error([1.0, 10.0, np.inf], [1.0, 10.5, np.inf]) == pytest.approx(0.5 / 10.5, rel=1e-15)
    assert max_relative_error([np.nan, 2.0], [np.nan, 2.0]) == 0.0
    assert max_relative_error([np.inf], [np.inf]) == 0.0  # nothing finite to compare
    # A zero reference: the error is divided by the smallest normal number, so any difference fails.
    assert max_relative_error([1e-300], [0.0]) == 1e-300 / np.finfo(np.float64).tiny


def test_frobenius_error():
    expected = np.array([[3.0, 0.0], [0.0, 4.0]])
    assert frobenius_error(expected + [[0.0, 0.5], [0.0, 0.0]], expected) == pytest.approx(0.1, rel=1e-15)
    assert frobenius_error(expected, expected) == 0.0


def test_assert_close_passes_within_rtol_and_fails_beyond():
    expected = np.array([1.0, -2.0, 4.0])
    assert_close(expected * (1 + 1e-13), expected)
    assert_close(expected + [0.0, 0.0, 4e-6], expected, rtol=1e-6)
    with pytest.raises(AssertionError, match=r"relative error 1\.000e-06 > 1e-12"):
        assert_close(expected + [0.0, 0.0, 4e-6], expected)
    with pytest.raises(AssertionError, match="relative error"):
        assert_close(np.nextafter(expected, np.inf), expected, rtol=0)


@pytest.mark.parametrize(
    "actual, message",
    [
        ([np.nan, 1.0], "NaN pattern differs"),
        ([np.inf, 1.0], r"\+inf pattern differs"),
        ([1.0, -np.inf], "-inf pattern differs"),
    ],
)
def test_assert_close_compares_the_non_finite_pattern_exactly(actual, message):
    with pytest.raises(AssertionError, match=message):
        assert_close(np.array(actual), np.array([1.0, 1.0]), rtol=np.inf)
    assert_close(np.array([np.nan, np.inf, -np.inf]), np.array([np.nan, np.inf, -np.inf]), rtol=0)


def test_assert_close_checks_type_shape_and_dtype():
    with pytest.raises(AssertionError, match="expected an ndarray, got float"):
        assert_close(1.0, np.array(1.0))
    with pytest.raises(AssertionError, match="expected an ndarray, got float64"):
        assert_close(np.float64(1.0), np.array(1.0))  # a NumPy scalar is not the array the API promises
    with pytest.raises(AssertionError, match=r"shape \(2,\) != \(1, 2\)"):
        assert_close(np.ones(2), np.ones((1, 2)))
    with pytest.raises(AssertionError, match="dtype float32 != float64"):
        assert_close(np.ones(2, dtype=np.float32), np.ones(2))  # default: the reference's dtype
    assert_close(np.ones(2, dtype=np.float32), np.ones(2), dtype=np.float32)
    with pytest.raises(AssertionError, match="gradient: dtype float64 != float32"):
        assert_close(np.ones(2), np.ones(2), dtype=np.float32, what="gradient")
    assert_close(None, None)  # neither side has it (the gradient of an absent bias)
    with pytest.raises(AssertionError):
        assert_close(np.ones(1), None)


def test_seed_of_is_fixed_by_the_parameters():
    assert (
        seed_of("softmax", (3, 4), 1) == seed_of("softmax", (3, 4), 1) == 3117791663
    )  # pinned: the same draws on every run
    assert seed_of("softmax", (3, 4), 1) != seed_of("softmax", (3, 4), -1)


def test_assert_close_on_tensors():
    torch = import_torch()
    expected = torch.tensor([1.0, -2.0, float("inf")], dtype=torch.float64)
    assert_close(expected.clone(), expected, rtol=0)
    with pytest.raises(AssertionError, match="expected a tensor, got ndarray"):
        assert_close(expected.numpy(), expected)
    with pytest.raises(AssertionError, match=r"dtype torch\.float32 != torch\.float64"):
        assert_close(expected.float(), expected)
    assert_close(expected.float(), expected, dtype=torch.float32, rtol=1e-7)
    with pytest.raises(AssertionError, match=r"\+inf pattern differs"):
        assert_close(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64), expected, rtol=np.inf)
    with pytest.raises(AssertionError, match="relative error"):
        assert_close(torch.tensor([1.0, -2.1, float("inf")], dtype=torch.float64), expected)
    bfloat = torch.tensor([1.0, 3.0], dtype=torch.bfloat16)  # no NumPy dtype: compared in float64
    assert_close(bfloat, bfloat, rtol=0)
    assert max_relative_error(bfloat, torch.tensor([1.0, 2.0])) == 0.5
    assert frobenius_error(torch.tensor([3.0, 4.5]), np.array([3.0, 4.0])) == pytest.approx(0.1)
