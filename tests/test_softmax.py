"""softmax, log_softmax, logsumexp and the two backward passes: parity with the float64 formulas and
PyTorch float64, finite differences, axis == moveaxis, the non-finite policy, dtypes, edge cases.

Runs without PyTorch: only the torch-parity steps (after ``import_torch()``) are then skipped."""

from __future__ import annotations

import numpy as np
import pytest
from _reference import (
    assert_close,
    compare_with_torch,
    import_torch,
    log_softmax_ref,
    logsumexp_ref,
    max_relative_error,
    numerical_vjp,
    seed_of,
    softmax_ref,
)

import softmaxkit as sk

SHAPES = {"1d": (7,), "2d": (4, 7), "3d": (3, 4, 5), "4d": (2, 3, 4, 5)}
AXIS_CASES = [(name, axis) for name, shape in SHAPES.items() for axis in range(-len(shape), len(shape))]
LSE_AXES = {
    "1d": [0, -1, None, (0,)],
    "2d": [0, 1, -1, None, (0, 1), (1, 0)],
    "3d": [0, 2, None, (0, 2), (-1, 1), (0, 1, 2)],
    "4d": [1, -2, None, (1, 3), (0, 2, 3)],
}
LSE_CASES = [(name, axis) for name, axes in LSE_AXES.items() for axis in axes]


def _x(*parts, shape):
    return 3.0 * np.random.default_rng(seed_of(*parts)).standard_normal(shape)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("shape,axis", AXIS_CASES, ids=[f"{s}-axis{a}" for s, a in AXIS_CASES])
def test_softmax_matches_torch(shape, axis):
    x = _x("softmax", shape, axis, shape=SHAPES[shape])
    assert_close(sk.softmax(x, axis=axis), softmax_ref(x, axis=axis), what="value vs formula")
    F = import_torch().nn.functional
    compare_with_torch(
        lambda a: sk.softmax(a, axis=axis),
        lambda t: F.softmax(t, dim=axis),
        x,
        backward=lambda g, a: sk.softmax_backward(g, sk.softmax(a, axis=axis), axis=axis),
    )


@pytest.mark.parametrize("shape,axis", AXIS_CASES, ids=[f"{s}-axis{a}" for s, a in AXIS_CASES])
def test_log_softmax_matches_torch(shape, axis):
    x = _x("log_softmax", shape, axis, shape=SHAPES[shape])
    assert_close(sk.log_softmax(x, axis=axis), log_softmax_ref(x, axis=axis), what="value vs formula")
    F = import_torch().nn.functional
    compare_with_torch(
        lambda a: sk.log_softmax(a, axis=axis),
        lambda t: F.log_softmax(t, dim=axis),
        x,
        backward=lambda g, a: sk.log_softmax_backward(g, sk.log_softmax(a, axis=axis), axis=axis),
    )


@pytest.mark.parametrize("keepdims", [False, True], ids=["dropdims", "keepdims"])
@pytest.mark.parametrize("shape,axis", LSE_CASES, ids=[f"{s}-axis{a}".replace(" ", "") for s, a in LSE_CASES])
def test_logsumexp_matches_torch(shape, axis, keepdims):
    x = _x("logsumexp", shape, axis, shape=SHAPES[shape])
    value = sk.logsumexp(x, axis=axis, keepdims=keepdims)
    assert_close(value, logsumexp_ref(x, axis=axis, keepdims=keepdims), what="value vs formula")
    torch = import_torch()
    dims = tuple(range(x.ndim)) if axis is None else axis

    def theirs(t):
        return torch.logsumexp(t, dim=dims, keepdim=keepdims)

    compare_with_torch(lambda a: sk.logsumexp(a, axis=axis, keepdims=keepdims), theirs, x)


def test_large_logits_do_not_overflow():
    x = np.array([[1000.0, 999.0, -1000.0], [-1000.0, -1001.0, -1002.0]])
    assert_close(sk.softmax(x), softmax_ref(x), rtol=1e-15)
    assert_close(sk.log_softmax(x), log_softmax_ref(x), rtol=1e-15)
    assert_close(sk.logsumexp(x), logsumexp_ref(x), rtol=1e-15)
    # log_softmax stays finite where log(softmax) underflows
    with np.errstate(divide="ignore"):
        assert np.isneginf(np.log(sk.softmax(np.array([0.0, 1000.0])))[0])
    assert sk.log_softmax(np.array([0.0, 1000.0]))[0] == -1000.0


# --------------------------------------------------------------------------- finite differences


BACKWARDS = {
    "softmax": (sk.softmax, sk.softmax_backward),
    "log_softmax": (sk.log_softmax, sk.log_softmax_backward),
}


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("name", BACKWARDS)
def test_backward_finite_differences(name, axis):
    forward, backward = BACKWARDS[name]
    x = _x("fd", name, axis, shape=(3, 4, 2))
    result = sk.gradcheck(
        lambda a: forward(a, axis=axis), lambda g, a: backward(g, forward(a, axis=axis), axis=axis), x
    )
    assert result.passed, result
    g = np.random.default_rng(1).standard_normal(x.shape)
    numerical = numerical_vjp(lambda a: forward(a, axis=axis), x, g)
    assert max_relative_error(backward(g, forward(x, axis=axis), axis=axis), numerical) < 1e-9


@pytest.mark.parametrize("name", BACKWARDS)
def test_backward_finite_differences_with_a_minus_inf_logit(name):
    """A -inf logit is a constant of the function: the gradient of every other entry is still right."""
    forward, backward = BACKWARDS[name]
    x = np.array([[0.5, -np.inf, 1.0, -0.3], [2.0, 1.0, -1.0, 0.0]])
    finite = np.isfinite(x)
    g = np.random.default_rng(2).standard_normal(x.shape)
    out = forward(x)
    grad = backward(g, out)
    assert np.all(np.isfinite(grad))
    # d softmax_1 / dx = 0 there; log_softmax_1 = x_1 - logsumexp(x) has d/dx_1 = 1 - p_1 = 1 (as in torch)
    assert grad[0, 1] == (0 if name == "softmax" else g[0, 1])

    def on_finite(values):
        y = x.copy()
        y[finite] = values
        result = forward(y)
        return np.where(np.isfinite(result), result, 0)

    g_finite = np.where(np.isfinite(out), g, 0)  # the -inf output is left out of the numerical sum
    numerical = numerical_vjp(on_finite, x[finite], g_finite)
    assert max_relative_error(backward(g_finite, out)[finite], numerical) < 1e-9


# --------------------------------------------------------------------------- equivalent forms


@pytest.mark.parametrize("axis", [0, 1, 2, -2])
def test_axis_equals_moveaxis(axis):
    x = _x("moveaxis", axis, shape=(3, 4, 5))
    g = np.random.default_rng(3).standard_normal(x.shape)
    last = np.moveaxis(x, axis, -1)
    g_last = np.moveaxis(g, axis, -1)
    for forward, backward in BACKWARDS.values():
        assert_close(forward(x, axis=axis), np.moveaxis(forward(last), -1, axis), rtol=0)
        assert_close(
            backward(g, forward(x, axis=axis), axis=axis),
            np.moveaxis(backward(g_last, forward(last)), -1, axis),
            rtol=1e-15,
        )
    assert_close(sk.logsumexp(x, axis=axis), sk.logsumexp(last, axis=-1), rtol=0)
    assert_close(sk.logsumexp(x, axis=axis, keepdims=True), np.expand_dims(sk.logsumexp(last), axis), rtol=0)


def test_tuple_axes_equal_flattened_axes():
    x = _x("tuple", shape=(3, 4, 5))
    flat = np.moveaxis(x, 1, -1).reshape(3 * 5, 4)  # axes (0, 2) first
    assert_close(sk.logsumexp(x, axis=(0, 2)), sk.logsumexp(flat, axis=0), rtol=1e-14)
    assert_close(sk.logsumexp(x, axis=None), sk.logsumexp(x.reshape(-1)), rtol=1e-15)


def test_softmax_is_exp_of_log_softmax_and_logsumexp_consistent():
    x = _x("consistent", shape=(5, 6))
    assert_close(np.exp(sk.log_softmax(x)), sk.softmax(x), rtol=1e-15)
    assert_close(sk.log_softmax(x), x - sk.logsumexp(x, keepdims=True), rtol=1e-15)
    assert_close(sk.softmax(x).sum(axis=-1), np.ones(5), rtol=1e-15)


# --------------------------------------------------------------------------- non-finite policy


def test_minus_inf_entry_has_probability_zero():
    x = np.array([[1.0, -np.inf, 2.0], [0.0, 0.0, -np.inf]])
    p = sk.softmax(x)
    assert p[0, 1] == 0 and p[1, 2] == 0
    assert_close(p[:, [0, 2]][:1], softmax_ref(x[:1, [0, 2]]), rtol=1e-15)
    assert_close(p[1:, :2], np.array([[0.5, 0.5]]), rtol=0)
    log_p = sk.log_softmax(x)
    assert log_p[0, 1] == -np.inf and log_p[1, 2] == -np.inf
    assert_close(log_p[1:, :2], np.log([[0.5, 0.5]]), rtol=1e-15)
    assert_close(sk.logsumexp(x), logsumexp_ref(np.array([[1.0, 2.0], [0.0, 0.0]])), rtol=1e-15)


def test_fully_masked_row():
    x = np.array([[-np.inf, -np.inf, -np.inf], [1.0, 2.0, 3.0]])
    p, log_p, lse = sk.softmax(x), sk.log_softmax(x), sk.logsumexp(x)
    assert np.array_equal(p[0], np.zeros(3))
    assert np.all(np.isneginf(log_p[0]))
    assert lse[0] == -np.inf
    assert_close(p[1:], softmax_ref(x[1:]), rtol=1e-15)
    g = np.ones_like(x)
    assert np.array_equal(sk.softmax_backward(g, p)[0], np.zeros(3))
    assert np.array_equal(sk.log_softmax_backward(g, log_p)[0], np.zeros(3))
    assert sk.logsumexp(np.full((2, 3), -np.inf), axis=None) == -np.inf


@pytest.mark.parametrize(
    "row,expected",
    [
        ([np.inf, 0.0, 1.0], [1.0, 0.0, 0.0]),
        ([np.inf, -np.inf, np.inf, 5.0], [0.5, 0.0, 0.5, 0.0]),
        ([np.inf, np.inf, np.inf], [1 / 3, 1 / 3, 1 / 3]),
    ],
    ids=["one", "two-with-minus-inf", "all"],
)
def test_plus_inf_entries_share_the_mass(row, expected):
    x = np.array([row, [1.0] * len(row)])
    p = sk.softmax(x)
    assert_close(p[0], np.array(expected), rtol=1e-15)
    assert_close(p[1], np.full(len(row), 1 / len(row)), rtol=1e-15)
    with np.errstate(divide="ignore"):
        assert_close(sk.log_softmax(x)[0], np.log(expected), rtol=1e-15)
    assert sk.logsumexp(x)[0] == np.inf
    assert np.isfinite(sk.logsumexp(x)[1])


def test_nan_makes_only_its_row_nan():
    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0], [np.nan, -np.inf, np.inf]])
    for out in (sk.softmax(x), sk.log_softmax(x)):
        assert np.all(np.isnan(out[0])) and np.all(np.isnan(out[2]))
        assert np.all(np.isfinite(out[1]))
    lse = sk.logsumexp(x)
    assert np.isnan(lse[0]) and np.isnan(lse[2]) and np.isfinite(lse[1])
    g = np.ones_like(x)
    grad = sk.softmax_backward(g, sk.softmax(x))
    assert np.all(np.isnan(grad[0])) and np.all(np.isfinite(grad[1]))


def test_finite_rows_agree_with_torch_next_to_non_finite_rows():
    x = np.array([[-np.inf, -np.inf], [np.nan, 1.0], [0.3, -0.2], [np.inf, 1.0]])
    ours = sk.softmax(x)
    assert_close(ours[2:3], softmax_ref(x[2:3]), what="finite row vs formula")
    torch = import_torch()
    theirs = torch.nn.functional.softmax(torch.tensor(x), dim=-1).numpy()
    assert_close(ours[2:3], theirs[2:3])
    assert np.all(np.isnan(theirs[0])) and np.all(np.isnan(ours[1])) and np.all(np.isnan(theirs[1]))


# --------------------------------------------------------------------------- dtypes and edge cases


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_dtype_is_kept_and_accurate(dtype):
    x = (4 * np.random.default_rng(4).standard_normal((50, 33))).astype(dtype)
    x64 = x.astype(np.float64)
    unit = np.finfo(dtype).eps
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        naive = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)  # same dtype, no shift
    for ours, reference, naive_error in (
        (sk.softmax(x), softmax_ref(x64), max_relative_error(naive, softmax_ref(x64))),
        (sk.log_softmax(x), log_softmax_ref(x64), None),
        (sk.logsumexp(x), logsumexp_ref(x64), None),
    ):
        assert ours.dtype == dtype
        error = max_relative_error(ours, reference)
        assert error <= 2 * unit
        if naive_error is not None and np.isfinite(naive_error):  # float16's naive exp overflows: NaN
            # the shift by the maximum rounds once more than the naive formula: allow a factor 2
            assert error <= 2 * naive_error
    g = np.ones_like(x)
    assert sk.softmax_backward(g, sk.softmax(x)).dtype == dtype
    assert sk.log_softmax_backward(g, sk.log_softmax(x)).dtype == dtype


def test_float16_large_logits_computed_in_float32():
    x = np.array([60000.0, 59990.0, 0.0], dtype=np.float16)  # exp would overflow float16 without the shift
    p = sk.softmax(x)
    assert p.dtype == np.float16
    assert_close(p, softmax_ref(x.astype(np.float64)).astype(np.float16), rtol=np.finfo(np.float16).eps)


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint8, np.bool_])
def test_integer_and_boolean_input_becomes_float64(dtype):
    x = np.array([[1, 0, 1], [0, 0, 1]]).astype(dtype)
    x64 = x.astype(np.float64)
    assert_close(sk.softmax(x), softmax_ref(x64), dtype=np.float64)
    assert_close(sk.log_softmax(x), log_softmax_ref(x64), dtype=np.float64)
    assert_close(sk.logsumexp(x), logsumexp_ref(x64), dtype=np.float64)


def test_python_lists_are_accepted():
    assert_close(sk.softmax([2.0, 1.0, 0.1]), softmax_ref([2.0, 1.0, 0.1]), rtol=1e-15)


@pytest.mark.parametrize("shape,axis", [((0, 3), -1), ((0, 3), 0), ((3, 0), -1), ((2, 0, 4), 1)])
def test_empty_arrays(shape, axis):
    x = np.zeros(shape)
    for forward, backward in BACKWARDS.values():
        out = forward(x, axis=axis)
        assert out.shape == shape and out.dtype == np.float64
        assert backward(np.zeros(shape), out, axis=axis).shape == shape
    lse = sk.logsumexp(x, axis=axis)
    with np.errstate(divide="ignore"):
        expected = np.log(np.sum(np.exp(x), axis=axis))  # the textbook formula: log(0) = -inf over an empty axis
    assert_close(lse, expected)
    assert_close(sk.logsumexp(x, axis=axis, keepdims=True), np.expand_dims(expected, axis))
    assert sk.softmax(x.astype(np.float32), axis=axis).dtype == np.float32
    torch = import_torch()
    assert_close(lse, torch.logsumexp(torch.zeros(shape, dtype=torch.float64), dim=axis).numpy(), what="vs torch")


def test_scalar_input():
    for value in (np.float64(3.0), np.array(3.0), 3.0):
        assert_close(sk.softmax(value), np.array(1.0))
        assert_close(sk.log_softmax(value), np.array(0.0))
        assert_close(sk.logsumexp(value), np.array(3.0))
    assert sk.softmax(np.float32(3.0)).dtype == np.float32
    assert_close(sk.softmax_backward(np.array(2.0), np.array(1.0)), np.array(0.0))
    assert_close(sk.log_softmax_backward(np.array(2.0), np.array(0.0)), np.array(0.0))
    torch = import_torch()
    expected = torch.nn.functional.softmax(torch.tensor(3.0, dtype=torch.float64), dim=0).numpy()
    assert_close(sk.softmax(np.array(3.0), axis=0), expected, what="vs torch")


def test_inputs_are_not_modified():
    x = _x("inplace", shape=(3, 4))
    g = np.ones_like(x)
    x0 = x.copy()
    p = sk.softmax(x)
    p0 = p.copy()
    sk.log_softmax(x)
    sk.logsumexp(x)
    sk.softmax_backward(g, p)
    sk.log_softmax_backward(g, np.log(p))
    assert np.array_equal(x, x0) and np.array_equal(p, p0) and np.array_equal(g, np.ones_like(x))


def test_extreme_finite_logits_and_nan_rows_raise_no_warning():
    """x - max below the dtype's range is -inf (probability 0, as in torch); a NaN row with huge entries
    is NaN without overflow warnings."""
    import warnings

    x = np.array([[3e38, -3e38, 0.0], [1.0, 1e30, np.nan], [np.inf, -np.inf, np.nan]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p, log_p, lse = sk.softmax(x), sk.log_softmax(x), sk.logsumexp(x)
        sk.softmax_backward(np.ones_like(x), p)
        sk.log_softmax_backward(np.ones_like(x), log_p)
    assert_close(log_p[:1], np.array([[0.0, -np.inf, -3e38]], dtype=np.float32), rtol=0)
    assert_close(p[:1], np.array([[1.0, 0.0, 0.0]], dtype=np.float32), rtol=0)
    assert np.all(np.isnan(p[1:])) and np.all(np.isnan(log_p[1:])) and np.all(np.isnan(lse[1:]))
    torch = import_torch()
    expected = torch.nn.functional.log_softmax(torch.from_numpy(x[:1]), dim=-1).numpy()
    assert_close(log_p[:1], expected, dtype=np.float32, what="vs torch")


def test_plus_inf_rows_have_finite_gradients():
    x = np.array([[np.inf, 0.0, np.inf], [0.5, -0.5, 2.0]])
    g = np.array([[1.0, 2.0, -1.0], [0.5, 0.5, 0.5]])
    p, log_p = sk.softmax(x), sk.log_softmax(x)
    assert_close(log_p[0], np.array([-np.log(2), -np.inf, -np.log(2)]), rtol=1e-15)
    softmax_grad = sk.softmax_backward(g, p)
    log_softmax_grad = sk.log_softmax_backward(g, log_p)
    assert np.all(np.isfinite(softmax_grad)) and np.all(np.isfinite(log_softmax_grad))
    # p = (1/2, 0, 1/2): p_i (g_i - sum_j g_j p_j)
    assert_close(softmax_grad[0], np.array([0.5 * (1.0 - 0.0), 0.0, 0.5 * (-1.0 - 0.0)]), rtol=1e-15)
    assert_close(log_softmax_grad[0], g[0] - np.array([0.5, 0.0, 0.5]) * g[0].sum(), rtol=1e-15)


@pytest.mark.parametrize("n_classes", [1, 2, 31, 32, 33, 40])
def test_short_and_long_rows_and_layouts_agree(n_classes):
    """Short rows take a segmented-reduction path: same values as the general one, NaN/inf rows included."""
    x = _x("rows", n_classes, shape=(6, n_classes))
    x[1, 0] = np.nan
    x[2, :] = -np.inf
    x[3, -1] = np.inf
    x[4, 0] = -np.inf
    fortran = np.asfortranarray(x)  # takes the general path
    for fn in (sk.softmax, sk.log_softmax, sk.logsumexp):
        fast, general = fn(x), fn(fortran)
        assert_close(fast, general, rtol=1e-15)
    finite = [0, 5]
    assert_close(sk.softmax(x)[finite], softmax_ref(x[finite]), rtol=1e-15)
    assert_close(sk.logsumexp(x)[finite], logsumexp_ref(x[finite]), rtol=1e-15)
