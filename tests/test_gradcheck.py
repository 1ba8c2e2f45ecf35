"""softmaxkit.gradcheck: it passes right gradients, catches wrong ones, and reports where."""

from __future__ import annotations

import numpy as np
import pytest
from _reference import max_relative_error, numerical_vjp

import softmaxkit as sk


def _square(x):
    return x**2


def _square_backward(g, x):
    return 2 * x * g


def test_passes_a_correct_gradient():
    x = np.linspace(-1, 1, 7).reshape(7)
    result = sk.gradcheck(_square, _square_backward, x)
    assert result.passed and bool(result)
    assert result.max_abs_error < 1e-8
    assert result.max_rel_error < 1e-6


def test_catches_a_wrong_gradient_and_reports_where():
    x = np.array([[0.5, -1.0], [2.0, 0.25]])

    def almost(g, a):
        grad = 2 * a * g
        grad[1, 0] += 1e-3  # one wrong entry
        return grad

    result = sk.gradcheck(_square, almost, x)
    assert not result.passed and not bool(result)
    assert result.worst_input == 0
    assert result.worst_index == (1, 0)
    assert abs(result.max_abs_error - 1e-3) < 1e-8
    assert abs(result.analytic - result.numerical - 1e-3) < 1e-8


def test_catches_a_missing_factor():
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert not sk.gradcheck(sk.softmax, lambda g, a: g * sk.softmax(a), x)
    assert not sk.gradcheck(sk.log_softmax, lambda g, a: sk.log_softmax_backward(g, sk.log_softmax(a)) * 1.001, x)


def test_numerical_gradient_agrees_with_an_independent_stencil():
    """gradcheck's central difference and the suite's own fourth-order stencil see the same gradient."""
    x = np.random.default_rng(1).standard_normal((3, 5))
    upstream = np.random.default_rng(0).standard_normal(x.shape)  # gradcheck's upstream for seed 0
    exact = sk.softmax_backward(upstream, sk.softmax(x))
    result = sk.gradcheck(sk.softmax, lambda g, a: sk.softmax_backward(g, sk.softmax(a)), x, seed=0)
    assert result.passed and result.max_abs_error < 1e-9
    assert max_relative_error(exact, numerical_vjp(sk.softmax, x, upstream)) < 1e-10


def test_several_inputs_with_wrt():
    x, y = np.array([1.0, 2.0]), np.array([3.0, -1.0])

    def product(a, b):
        return a * b

    result = sk.gradcheck(product, lambda g, a, b: (g * b, g * a), x, y, wrt=(0, 1))
    assert result.passed
    wrong = sk.gradcheck(product, lambda g, a, b: (g * b, g * b), x, y, wrt=(0, 1))
    assert not wrong.passed and wrong.worst_input == 1
    only_second = sk.gradcheck(product, lambda g, a, b: g * a, x, y, wrt=(1,))
    assert only_second.passed


def test_non_differentiated_inputs_pass_through_unchanged():
    target = np.array([0, 2])
    x = np.random.default_rng(2).standard_normal((2, 3))
    result = sk.gradcheck(
        lambda a, t: sk.cross_entropy(a, t), lambda g, a, t: sk.cross_entropy_backward(a, t, g), x, target
    )
    assert result.passed


def test_integer_input_is_differentiated_in_float64():
    x = np.array([1, 2, 3])
    assert sk.gradcheck(_square, _square_backward, x).passed


def test_non_finite_outputs_are_left_out():
    x = np.array([[0.0, -np.inf, 1.0], [0.5, 0.25, -0.5]])
    result = sk.gradcheck(
        sk.log_softmax, lambda g, a: sk.log_softmax_backward(np.where(np.isfinite(a), g, 0), sk.log_softmax(a)), x
    )
    assert result.passed, result


def test_seed_changes_the_upstream_gradient_deterministically():
    x = np.random.default_rng(3).standard_normal(4)
    backward = lambda g, a: sk.softmax_backward(g, sk.softmax(a))
    first = sk.gradcheck(sk.softmax, backward, x, seed=1)
    again = sk.gradcheck(sk.softmax, backward, x, seed=1)
    other = sk.gradcheck(sk.softmax, backward, x, seed=2)
    assert first == again
    assert first.max_abs_error != other.max_abs_error or first.analytic != other.analytic


def test_tolerances_decide():
    x = np.array([1.0, 2.0])
    off = lambda g, a: 2 * a * g + 1e-6
    assert not sk.gradcheck(_square, off, x, atol=1e-7, rtol=0)
    assert sk.gradcheck(_square, off, x, atol=1e-5, rtol=0)


def test_a_nan_gradient_fails():
    x = np.array([1.0, 2.0])
    result = sk.gradcheck(_square, lambda g, a: np.full_like(a, np.nan), x)
    assert not result.passed
    assert result.max_abs_error == np.inf


def test_scalar_output():
    x = np.array([0.3, -0.2, 0.9])
    assert sk.gradcheck(sk.logsumexp, lambda g, a: g * sk.softmax(a), x).passed


@pytest.mark.parametrize(
    "wrt,message",
    [
        ((), "wrt must list positions in [0, 1), got ()"),
        ((1,), "wrt must list positions in [0, 1), got (1,)"),
        ((-1,), "got (-1,)"),
    ],
    ids=["empty", "beyond", "negative"],
)
def test_bad_wrt(wrt, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        sk.gradcheck(_square, _square_backward, np.ones(2), wrt=wrt)


def test_backward_of_wrong_shape_or_count():
    with pytest.raises(
        ValueError, match=r"backward must return a gradient of shape \(2,\) for input 0, got shape \(3,\)"
    ):
        sk.gradcheck(_square, lambda g, a: np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match=r"backward must return 1 gradient\(s\), one per entry of wrt, got 2"):
        sk.gradcheck(_square, lambda g, a: (g, g), np.ones(2))


def test_the_point_is_not_modified():
    x = np.array([0.1, 0.2, 0.3])
    x0 = x.copy()
    sk.gradcheck(_square, _square_backward, x)
    assert np.array_equal(x, x0)
