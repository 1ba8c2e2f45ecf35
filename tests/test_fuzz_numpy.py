"""Property-based tests of the NumPy functions: every valid call agrees with an independent oracle,
every invalid one raises ValueError/TypeError naming the argument.

The oracles (``tests/_reference.py``): the float64 formulas for finite input, the README's table of
non-finite values for any input, PyTorch float64 autograd for the backward passes, and the
fourth-order finite differences for gradcheck's verdict. Inputs: every dtype (float16/32/64,
integers, booleans), 0 to 3 dimensions with sides 0 to 5, any valid axis, weights with zeros,
``ignore_index`` anywhere, label smoothing in [0, 1], the three reductions. Budgets: the hypothesis
profile (conftest.py); a failing example is printed with the seed to replay it.

Invalid inputs include dates, durations, ragged lists and array-valued options; the defects of
issue 11 that they found have each a regression test at the end of the file.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from _reference import (
    assert_close,
    cross_entropy_ref,
    import_torch,
    log_softmax_policy_ref,
    log_softmax_ref,
    logsumexp_policy_ref,
    logsumexp_ref,
    nll_loss_ref,
    numerical_vjp,
    softmax_policy_ref,
    softmax_ref,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxkit as sk

FLOATS = [np.float16, np.float32, np.float64]
INTEGERS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_]
# Relative error (to the largest reference magnitude) of a result in each output dtype: a few
# roundings of that dtype (float16 is computed in float32 and rounded once: 2**-11 = 4.9e-4).
RTOL = {np.dtype(np.float16): 2e-3, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def assert_matches(actual, expected, *, dtype, scale: float = 1.0, what: str = "value") -> None:
    """``actual`` is ``expected``: type, shape, ``dtype`` and NaN/inf pattern exactly, values to the
    rounding of ``dtype`` (``RTOL``) measured against ``max(scale, |expected|)``.

    ``scale`` is the size of what went in: a result near 0 computed from large inputs, like
    ``logsumexp([-6, 0]) = 0.0025`` in float32, carries an absolute error of a rounding of ``|x|``
    (the naive same-dtype computation has it too), and a sum of ``n`` terms ``n`` of them.
    """
    dtype = np.dtype(dtype)
    expected = np.asarray(expected).astype(dtype)
    assert_close(actual, expected, rtol=np.inf, what=what)  # everything but the values
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    finite = np.isfinite(e)
    if not finite.any():
        return
    scale = max(scale, float(np.max(np.abs(e[finite]))))
    error = float(np.max(np.abs(a[finite] - e[finite]))) / scale
    assert error <= RTOL[dtype], f"{what}: error {error:.3e} of the scale {scale:.3g} > {RTOL[dtype]:.0e}"


def size_of(*arrays) -> float:
    """``max(1, |a|)`` over the finite entries of ``arrays``: the scale of a problem's inputs."""
    values = [np.abs(np.asarray(a, dtype=np.float64)) for a in arrays]
    return max([1.0] + [float(np.max(v[np.isfinite(v)], initial=0.0)) for v in values])


def out_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def elements(dtype, *, bound: float = 30.0, non_finite: bool = False):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return st.booleans()
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return st.integers(max(info.min, -30), min(info.max, 30))
    finite = st.floats(-bound, bound, width=8 * dtype.itemsize)
    if not non_finite:
        return finite
    return st.one_of(finite, st.sampled_from([np.inf, -np.inf, np.nan]), finite)


SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)


@st.composite
def arrays(draw, *, dtypes=FLOATS + INTEGERS, shape=SHAPES, non_finite=False, bound=30.0):
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(shape) if not isinstance(shape, tuple) else shape
    return draw(hnp.arrays(dtype, shape, elements=elements(dtype, bound=bound, non_finite=non_finite)))


def axes_of(x):
    n = max(x.ndim, 1)
    return st.integers(-n, n - 1)


def names(message: str, argument: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?!\w)", message) is not None


class Call:
    """A call with one bad argument, printed readably when hypothesis reports it."""

    def __init__(self, function, *args, **kwargs):
        self.function, self.args, self.kwargs = function, args, kwargs

    def __call__(self):
        return self.function(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        shown = [_short(a) for a in self.args] + [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        return f"{getattr(self.function, '__name__', self.function)}({', '.join(shown)})"


def _short(value) -> str:
    if isinstance(value, np.ndarray) and value.size > 6:
        return f"array(shape={value.shape}, dtype={value.dtype})"
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def assert_refused(call, argument: str):
    """``call()`` raises ValueError or TypeError, and its message names ``argument``."""
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert names(str(info.value), argument), f"{argument!r} not named in: {info.value}"


# --------------------------------------------------------------------------- softmax, log_softmax, logsumexp


@given(data=st.data())
def test_softmax_and_log_softmax_match_the_float64_formula(data):
    x = data.draw(arrays())
    axis = data.draw(axes_of(x))
    reference_x = x.reshape(1) if x.ndim == 0 else x
    for ours, formula in ((sk.softmax, softmax_ref), (sk.log_softmax, log_softmax_ref)):
        value = ours(x, axis=axis)
        if x.size == 0:
            expected = np.empty(x.shape)
        else:
            expected = formula(reference_x, axis=axis).reshape(x.shape)
        assert_matches(value, expected, dtype=out_dtype(x.dtype), scale=size_of(x), what=ours.__name__)
    if x.size:
        p = sk.softmax(x, axis=axis).astype(np.float64)
        np.testing.assert_allclose(p.sum(axis=axis if x.ndim else None), 1.0, rtol=10 * RTOL[out_dtype(x.dtype)])


@given(data=st.data())
def test_the_non_finite_policy_of_the_readme(data):
    x = data.draw(arrays(dtypes=FLOATS, non_finite=True))
    axis = data.draw(axes_of(x))
    for ours, policy in ((sk.softmax, softmax_policy_ref), (sk.log_softmax, log_softmax_policy_ref)):
        expected = policy(x, axis=axis if x.ndim else -1)
        assert_matches(ours(x, axis=axis), expected, dtype=x.dtype, scale=size_of(x), what=ours.__name__)
    keepdims = data.draw(st.booleans())
    expected = logsumexp_policy_ref(x, axis=axis if x.ndim else None, keepdims=keepdims and x.ndim > 0)
    value = sk.logsumexp(x, axis=axis, keepdims=keepdims)
    assert_matches(value, expected, dtype=x.dtype, scale=size_of(x), what="logsumexp")


@st.composite
def lse_axes(draw, x):
    if x.ndim == 0:
        return draw(st.sampled_from([None, -1, 0, (0,), ()]))
    single = st.integers(-x.ndim, x.ndim - 1)
    several = st.lists(st.integers(0, x.ndim - 1), unique=True).map(lambda a: tuple(a))
    return draw(st.one_of(st.none(), single, several))


@given(data=st.data())
def test_logsumexp_matches_the_float64_formula(data):
    x = data.draw(arrays())
    axis = data.draw(lse_axes(x))
    keepdims = data.draw(st.booleans())
    value = sk.logsumexp(x, axis=axis, keepdims=keepdims)
    if x.ndim == 0 or axis == ():
        expected = x.astype(np.float64)
    elif x.size == 0 or any(x.shape[a] == 0 for a in (range(x.ndim) if axis is None else np.atleast_1d(axis))):
        expected = logsumexp_policy_ref(x, axis=axis, keepdims=keepdims)  # an empty reduction: -inf
    else:
        expected = logsumexp_ref(x, axis=axis, keepdims=keepdims)
    assert_matches(value, expected, dtype=out_dtype(x.dtype), scale=size_of(x))


@given(data=st.data())
def test_softmax_backward_passes_match_torch_autograd(data):
    torch = import_torch()
    x = data.draw(arrays(dtypes=[np.float64], shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)))
    axis = data.draw(axes_of(x))
    g = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(-3, 3)))
    tx = torch.tensor(x, requires_grad=True)
    for ours, backward, theirs in (
        (sk.softmax, sk.softmax_backward, torch.softmax),
        (sk.log_softmax, sk.log_softmax_backward, torch.log_softmax),
    ):
        (expected,) = torch.autograd.grad(theirs(tx, dim=axis), tx, torch.tensor(g))
        value = backward(g, ours(x, axis=axis), axis=axis)
        assert_matches(value, expected.numpy(), dtype=np.float64, scale=size_of(g), what=backward.__name__)


# --------------------------------------------------------------------------- cross_entropy, nll_loss


@st.composite
def problems(draw, *, probabilities: bool = True):
    """A valid cross-entropy problem: ``(input, target, options)``."""
    n_classes = draw(st.integers(1, 5))
    layout = draw(st.sampled_from(["unbatched", "batched", "spatial"]))
    n = draw(st.integers(0, 5))
    shape = {"unbatched": (n_classes,), "batched": (n, n_classes), "spatial": (n, n_classes, draw(st.integers(1, 3)))}[
        layout
    ]
    x = draw(arrays(dtypes=FLOATS + INTEGERS[:4], shape=shape))
    batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
    options = {
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "weight": draw(
            st.none() | hnp.arrays(np.float64, (n_classes,), elements=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
        ),
    }
    if probabilities and draw(st.booleans()):
        target = draw(
            hnp.arrays(draw(st.sampled_from([np.float32, np.float64])), shape, elements=st.floats(0, 1, width=32))
        )
        options["ignore_index"] = draw(st.integers(-300, -1))
    else:
        ignore_index = draw(st.integers(-300, 300))
        values = st.one_of(st.integers(0, n_classes - 1), st.just(ignore_index))
        dtype = draw(st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16]))
        assume(np.iinfo(dtype).min <= ignore_index <= np.iinfo(dtype).max)
        target = draw(hnp.arrays(dtype, batch, elements=values))
        options["ignore_index"] = ignore_index
    return x, target, options


def _loss_scale(x, options) -> float:
    """The size of the logits times the number of per-sample terms a reduction adds up."""
    n_terms = x.size // x.shape[0 if x.ndim == 1 else 1] if x.size else 1
    return size_of(x) * (n_terms if options["reduction"] != "none" else 1)


@given(problem=problems(), label_smoothing=st.sampled_from([0.0, 1.0]) | st.floats(0, 1))
def test_cross_entropy_matches_the_float64_formula(problem, label_smoothing):
    x, target, options = problem
    value = sk.cross_entropy(x, target, label_smoothing=label_smoothing, **options)
    expected = cross_entropy_ref(x, target, label_smoothing=label_smoothing, **options)
    assert_matches(value, expected, dtype=out_dtype(x.dtype), scale=_loss_scale(x, options))


@given(problem=problems(probabilities=False))
def test_nll_loss_matches_the_float64_formula(problem):
    x, target, options = problem
    value = sk.nll_loss(x, target, **options)
    expected = nll_loss_ref(x, target, **options)
    assert_matches(value, expected, dtype=out_dtype(x.dtype), scale=_loss_scale(x, options))


def _denominator_is_zero(x, target, options) -> bool:
    """A "mean" that divides by 0 (W = 0 or no samples), where PyTorch's gradient is NaN by design."""
    if options["reduction"] != "mean":
        return False
    if np.issubdtype(target.dtype, np.floating):
        return x.size == 0
    t = target.reshape(-1)
    kept = t[t != options["ignore_index"]].astype(np.intp)
    w = np.ones(x.shape[0 if x.ndim == 1 else 1]) if options["weight"] is None else options["weight"]
    return float(np.sum(w[kept])) == 0.0


@given(problem=problems(), label_smoothing=st.floats(0, 1), upstream=st.floats(-3, 3))
def test_cross_entropy_backward_matches_torch_autograd(problem, label_smoothing, upstream):
    torch = import_torch()
    x, target, options = problem
    x = x.astype(np.float64)
    assume(not _denominator_is_zero(x, target, options))
    tx = torch.tensor(x, requires_grad=True)
    weight = None if options["weight"] is None else torch.tensor(options["weight"])
    tt = torch.tensor(target.astype(np.int64) if target.dtype.kind in "iu" else target.astype(np.float64))
    loss = torch.nn.functional.cross_entropy(
        tx,
        tt,
        weight=weight,
        ignore_index=options["ignore_index"],
        reduction=options["reduction"],
        label_smoothing=label_smoothing,
    )
    g = np.full(loss.shape, upstream)
    (expected,) = torch.autograd.grad(loss, tx, torch.tensor(g), allow_unused=True)
    expected = np.zeros_like(x) if expected is None else expected.numpy()
    ours = sk.cross_entropy_backward(x, target, g, label_smoothing=label_smoothing, **options)
    assert_matches(ours, expected, dtype=np.float64, scale=size_of(g, options["weight"]), what="gradient")
    value, grad = sk.cross_entropy_with_grad(x, target, label_smoothing=label_smoothing, **options)
    np.testing.assert_array_equal(value, sk.cross_entropy(x, target, label_smoothing=label_smoothing, **options))
    np.testing.assert_array_equal(
        grad, sk.cross_entropy_backward(x, target, 1.0, label_smoothing=label_smoothing, **options)
    )


@given(problem=problems(probabilities=False), upstream=st.floats(-3, 3))
def test_nll_loss_backward_matches_torch_autograd(problem, upstream):
    torch = import_torch()
    x, target, options = problem
    x = x.astype(np.float64)
    assume(not _denominator_is_zero(x, target, options))
    tx = torch.tensor(x, requires_grad=True)
    weight = None if options["weight"] is None else torch.tensor(options["weight"])
    loss = torch.nn.functional.nll_loss(
        tx, torch.tensor(target.astype(np.int64)), weight=weight, ignore_index=options["ignore_index"],
        reduction=options["reduction"],
    )  # fmt: skip
    g = np.full(loss.shape, upstream)
    (expected,) = torch.autograd.grad(loss, tx, torch.tensor(g), allow_unused=True)
    expected = np.zeros_like(x) if expected is None else expected.numpy()
    value = sk.nll_loss_backward(x, target, g, **options)
    assert_matches(value, expected, dtype=np.float64, scale=size_of(g, options["weight"]))


# --------------------------------------------------------------------------- gradcheck


@given(x=arrays(dtypes=[np.float64], shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=4), bound=5.0))
def test_gradcheck_passes_a_true_gradient_and_fails_a_wrong_one(x):
    def backward(g, a):
        return sk.softmax_backward(g, sk.softmax(a))

    result = sk.gradcheck(sk.softmax, backward, x)
    assert result.passed and bool(result)
    # The oracle of the verdict: a fourth-order central difference, independent of gradcheck.
    g = np.random.default_rng(0).standard_normal(x.shape)
    np.testing.assert_allclose(backward(g, x), numerical_vjp(sk.softmax, x, g), atol=1e-8)
    wrong = sk.gradcheck(sk.softmax, lambda g, a: backward(g, a) + 1e-3, x)
    assert not wrong.passed and wrong.max_abs_error >= 1e-3 * 0.99
    assert 0 <= wrong.worst_input < 1 and len(wrong.worst_index) == x.ndim


# --------------------------------------------------------------------------- invalid input

NOT_ARRAYS = st.sampled_from(
    [
        None,
        "abc",
        b"xy",
        {"a": 1},
        object(),
        np.array(["a", "b"]),
        np.array([1j, 2.0]),
        np.array([1, None], dtype=object),
    ]
    + [np.array(["2020-01-01"], dtype="M8[D]"), np.array([1, 0], dtype="m8[s]"), [[1.0, 2.0], [3.0]]]
)
NOT_INTEGERS = st.one_of(st.floats(allow_nan=True), st.booleans(), st.text(max_size=2), st.just(None), st.just([0]))
BAD_REDUCTIONS = st.one_of(
    st.text(max_size=5).filter(lambda r: r not in ("none", "mean", "sum")),
    st.none(),
    st.integers(),
    st.sampled_from([np.array(["mean"]), np.array(["mean", "sum"]), ["mean"]]),
)
BAD_SMOOTHING = st.one_of(
    st.floats(allow_nan=True).filter(lambda v: not 0 <= v <= 1), st.booleans(), st.text(max_size=2), st.none()
)


@st.composite
def bad_softmax_calls(draw):
    """``(call, argument)`` of softmax, log_softmax, logsumexp or a backward pass with one bad argument."""
    x = draw(arrays(dtypes=[np.float64], shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)))
    function = draw(
        st.sampled_from([sk.softmax, sk.log_softmax, sk.logsumexp, sk.softmax_backward, sk.log_softmax_backward])
    )
    what = draw(
        st.sampled_from(
            ["x", "axis"]
            if function in (sk.softmax, sk.log_softmax, sk.logsumexp)
            else ["grad_output", "output", "shape", "axis"]
        )
    )
    out_of_range = st.one_of(st.integers(x.ndim, 1000), st.integers(-1000, -x.ndim - 1))
    if what == "axis":
        bad = draw(
            st.one_of(out_of_range, NOT_INTEGERS.filter(lambda a: a is not None or function is not sk.logsumexp))
        )
        if function is sk.logsumexp and draw(st.booleans()):
            bad = draw(st.sampled_from([(0, 0), (0, x.ndim), [0], (0.5,)]))
    else:
        bad = draw(NOT_ARRAYS)
    if function in (sk.softmax, sk.log_softmax, sk.logsumexp):
        if what == "x":
            return Call(function, bad, axis=-1), "x"
        return Call(function, x, axis=bad), "axis"
    if what == "shape":
        return Call(function, np.ones(x.shape + (2,)), x), "grad_output"
    if what == "axis":
        return Call(function, x, x, axis=bad), "axis"
    if what == "grad_output":
        return Call(function, bad, x), "grad_output"
    return Call(function, x, bad), "output"


@given(case=bad_softmax_calls())
def test_bad_softmax_arguments_are_named(case):
    call, argument = case
    assert_refused(call, argument)


@st.composite
def bad_loss_calls(draw):
    x, target, options = draw(problems(probabilities=False))
    assume(x.ndim >= 1 and x.size > 0)  # an empty batch has no target entry to be wrong
    function = draw(
        st.sampled_from(
            ["cross_entropy", "nll_loss", "cross_entropy_backward", "nll_loss_backward", "cross_entropy_with_grad"]
        )
    )
    n_classes = x.shape[0 if x.ndim == 1 else 1]
    argument = draw(
        st.sampled_from(["input", "target", "weight", "reduction", "ignore_index", "label_smoothing", "grad_output"])
    )
    if argument == "label_smoothing" and not function.startswith("cross_entropy"):
        argument = "reduction"
    if argument == "grad_output" and not function.endswith("backward"):
        argument = "weight"
    args = {"input": x, "target": target}
    kwargs = dict(options)
    if argument == "input":
        args["input"] = draw(st.one_of(NOT_ARRAYS, st.just(np.float64(1.0)), st.just(np.zeros((2, 0)))))
    elif argument == "target":
        batch = x.shape[:1] + x.shape[2:] if x.ndim > 1 else ()
        wrong = st.one_of(
            st.just(np.full(batch, n_classes, dtype=np.int64)),  # one past the last class
            st.just(np.full(batch, -1, dtype=np.int64)),  # -1 never wraps around
            st.just(np.zeros(batch + (1, 1), dtype=np.int64)),
            st.just(np.zeros(batch, dtype=np.float64) + 0.0),  # class indices stored as floats
            NOT_ARRAYS,
            st.just(np.zeros(batch, dtype=bool)),
        )
        args["target"] = draw(wrong)
        kwargs["ignore_index"] = -100
    elif argument == "weight":
        kwargs["weight"] = draw(
            st.one_of(
                st.just(np.ones(n_classes + 1)),
                st.just(-np.ones(n_classes)),
                st.just(np.full(n_classes, np.nan)),
                st.just(np.full(n_classes, np.inf)),
                NOT_ARRAYS,
            )
        )
    elif argument == "reduction":
        kwargs["reduction"] = draw(BAD_REDUCTIONS)
    elif argument == "ignore_index":
        kwargs["ignore_index"] = draw(NOT_INTEGERS.filter(lambda v: not isinstance(v, bool) or True))
    elif argument == "label_smoothing":
        kwargs["label_smoothing"] = draw(BAD_SMOOTHING)
    call_args = [args["input"], args["target"]]
    if function.endswith("backward"):
        grad = 1.0
        if argument == "grad_output":
            grad = draw(st.one_of(NOT_ARRAYS, st.just(np.ones((7, 7)))))
            kwargs["reduction"] = (
                "none" if isinstance(grad, np.ndarray) and grad.shape == (7, 7) else kwargs["reduction"]
            )
        call_args.append(grad)
    return Call(getattr(sk, function), *call_args, **kwargs), argument


@given(case=bad_loss_calls())
def test_bad_loss_arguments_are_named(case):
    call, argument = case
    assert_refused(call, argument)


@st.composite
def bad_gradcheck_calls(draw):
    x = np.array([[0.5, -1.0, 2.0]])
    good = {"fn": sk.softmax, "backward": lambda g, a: sk.softmax_backward(g, sk.softmax(a))}
    argument = draw(
        st.sampled_from(
            ["fn", "backward", "wrt", "eps", "atol", "rtol", "seed", "inputs[0]", "fn_output", "backward_output"]
        )
    )
    kwargs = {}
    fn, backward, inputs = good["fn"], good["backward"], (x,)
    if argument == "fn":
        fn = draw(st.sampled_from([None, 3, "softmax"]))
    elif argument == "backward":
        backward = draw(st.sampled_from([None, 3, "g"]))
    elif argument == "wrt":
        kwargs["wrt"] = draw(st.sampled_from(["a", 0, [0.5], [True], [], [1], [-1], [0, 0], None]))
    elif argument in ("eps", "atol", "rtol"):
        bad = [np.nan, np.inf, -1.0, "a", None, True] + ([0.0] if argument == "eps" else [])
        kwargs[argument] = draw(st.sampled_from(bad))
    elif argument == "seed":
        kwargs["seed"] = draw(st.sampled_from(["a", -1, 1.5, None, True]))
    elif argument == "inputs[0]":
        inputs = (draw(NOT_ARRAYS),)
    elif argument == "fn_output":
        output = draw(st.sampled_from(["a", None, np.array([1j])]))
        fn = lambda a: output
        argument = "fn"
    else:
        gradient = draw(st.sampled_from([None, "a", 3 + 0j, np.array(["x"])]))
        backward = lambda g, a: gradient
        argument = "backward"
    return Call(sk.gradcheck, fn, backward, *inputs, **kwargs), argument


@given(case=bad_gradcheck_calls())
def test_bad_gradcheck_arguments_are_named(case):
    call, argument = case
    assert_refused(call, argument)


# --------------------------------------------------------------------------- the defects of issue 11, part 2


@pytest.mark.parametrize("function", ["softmax", "cross_entropy target", "cross_entropy weight"])
def test_timedelta_arrays_are_refused(function):
    x = np.array([[1.0, 2.0]])
    seconds = np.array([1, 0], dtype="m8[s]")
    calls = {
        "softmax": (lambda: sk.softmax(seconds), "x"),
        "cross_entropy target": (lambda: sk.cross_entropy(x, seconds[:1]), "target"),
        "cross_entropy weight": (lambda: sk.cross_entropy(x, np.array([0]), weight=seconds), "weight"),
    }
    call, argument = calls[function]
    assert_refused(call, argument)


@pytest.mark.parametrize("argument", ["x", "input", "target", "weight"])
def test_ragged_lists_are_named(argument):
    ragged = [[1.0, 2.0], [3.0]]
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    calls = {
        "x": lambda: sk.softmax(ragged),
        "input": lambda: sk.cross_entropy(ragged, np.array([0, 1])),
        "target": lambda: sk.cross_entropy(x, [[0], [1, 0]]),
        "weight": lambda: sk.cross_entropy(x, np.array([0, 1]), weight=ragged),
    }
    assert_refused(calls[argument], argument)


@pytest.mark.parametrize("reduction", [np.array(["mean"]), np.array(["mean", "sum"])], ids=["one", "two"])
def test_array_valued_reduction_is_refused(reduction):
    assert_refused(lambda: sk.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction=reduction), "reduction")


@pytest.mark.parametrize("backward", [sk.softmax_backward, sk.log_softmax_backward])
def test_zero_dimensional_backward_checks_the_axis(backward):
    assert_refused(lambda: backward(np.float64(1.0), np.float64(0.0), axis=3), "axis")
