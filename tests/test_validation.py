"""Every bad input of issue 2, item 7, raises a clear error in one style ("<argument> must be ..., got ...").

Where PyTorch also rejects the input, ``compare_with_torch`` checks that it does; where softmaxkit is
stricter than PyTorch (negative weights, -1 never wrapping, ...) the test says so.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from _reference import compare_with_torch, import_torch

import softmaxkit as sk

X = np.random.default_rng(0).standard_normal((4, 3))
Y = np.array([0, 2, 1, 2])
LOSSES = {"cross_entropy": sk.cross_entropy, "nll_loss": sk.nll_loss}
BACKWARDS = {"cross_entropy": sk.cross_entropy_backward, "nll_loss": sk.nll_loss_backward}
ALL_LOSS_FORMS = {
    "cross_entropy": sk.cross_entropy,
    "cross_entropy_backward": sk.cross_entropy_backward,
    "cross_entropy_with_grad": sk.cross_entropy_with_grad,
    "nll_loss": sk.nll_loss,
    "nll_loss_backward": sk.nll_loss_backward,
}


def _ce_pair(target, **options):
    def theirs(t):  # called only after compare_with_torch has imported torch
        torch = import_torch()
        t_options = dict(options)
        if t_options.get("weight") is not None:
            t_options["weight"] = torch.as_tensor(np.asarray(t_options["weight"], dtype=np.float64))
        return torch.nn.functional.cross_entropy(t, torch.from_numpy(np.asarray(target)), **t_options)

    return lambda a: sk.cross_entropy(a, target, **options), theirs


# --------------------------------------------------------------------------- class indices


@pytest.mark.parametrize(
    "target,bad,position",
    [
        (np.array([0, 3, 1, 2]), 3, (1,)),
        (np.array([0, 1, 2, -1]), -1, (3,)),  # never wraps around to the last class
        (np.array([0, 1, -2, 2]), -2, (2,)),
        (np.array([0, 1, 2, 100]), 100, (3,)),
    ],
    ids=["C", "minus1", "minus2", "large"],
)
@pytest.mark.parametrize("name", ALL_LOSS_FORMS)
def test_class_index_outside_range(name, target, bad, position):
    message = re.escape(
        f"target must hold class indices in [0, 3) or ignore_index=-100, got {bad} at position {position}"
    )
    with pytest.raises(ValueError, match=message):
        ALL_LOSS_FORMS[name](X, target)
    if name == "cross_entropy":
        compare_with_torch(*_ce_pair(target), X, error=message)


def test_minus_one_is_fine_only_as_ignore_index():
    target = np.array([0, -1, 1, 2])
    assert np.isfinite(sk.cross_entropy(X, target, ignore_index=-1))
    with pytest.raises(ValueError, match=re.escape("ignore_index=5, got -1 at position (1,)")):
        sk.cross_entropy(X, target, ignore_index=5)


def test_class_index_outside_range_in_k_dim_and_unbatched_input():
    with pytest.raises(ValueError, match=re.escape("got 7 at position (1, 0)")):
        sk.cross_entropy(np.zeros((2, 3, 2)), np.array([[0, 1], [7, 2]]))
    with pytest.raises(
        ValueError,
        match=re.escape("target must hold class indices in [0, 3) or ignore_index=-100, got 3 at position ()"),
    ):
        sk.cross_entropy(np.zeros(3), np.array(3))


@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad"])
def test_non_integer_index_target(name):
    fn = ALL_LOSS_FORMS[name]
    with pytest.raises(
        TypeError,
        match=re.escape(
            "target must be integer class indices (or class probabilities of the input's shape (4, 3)), got floating values of shape (4,)"
        ),
    ):
        fn(X, Y.astype(np.float64))
    with pytest.raises(TypeError, match=r"target must be integer class indices .*got floating values of shape \(\)"):
        fn(X[0], np.array(1.0))
    compare_with_torch(*_ce_pair(Y.astype(np.float64)), X, error="target must be integer class indices")


@pytest.mark.parametrize("name", ["nll_loss", "nll_loss_backward"])
def test_nll_loss_takes_only_integer_targets(name):
    with pytest.raises(
        TypeError, match=re.escape("target must be integer class indices, got an array of shape (4,) and dtype float64")
    ):
        ALL_LOSS_FORMS[name](X, Y.astype(np.float64))
    with pytest.raises(TypeError, match=r"target must be integer class indices, got an array of shape \(4, 3\)"):
        ALL_LOSS_FORMS[name](X, np.full((4, 3), 1 / 3))


@pytest.mark.parametrize(
    "target", [np.array([True, False, True, True]), np.array(["a", "b", "c", "d"])], ids=["bool", "str"]
)
def test_target_of_another_kind(target):
    with pytest.raises(
        TypeError,
        match=r"target must be integer class indices or floating class probabilities, got an array of shape \(4,\) and dtype",
    ):
        sk.cross_entropy(X, target)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "target,message",
    [
        (
            np.array([0, 1, 2]),
            "target must have shape (4,) (the input's shape (4, 3) without the class axis 1) for class indices, got shape (3,)",
        ),
        (np.array([[0, 1, 2, 1]]), "got shape (1, 4)"),
        (np.array(1), "got shape ()"),
        (np.full((4, 2), 0.5), "target must have the input's shape (4, 3) for class probabilities, got shape (4, 2)"),
        (np.full((3, 4), 0.25), "got shape (3, 4)"),
    ],
    ids=["index-short", "index-2d", "index-0d", "prob-classes", "prob-transposed"],
)
def test_wrong_target_shape(target, message):
    compare_with_torch(
        *_ce_pair(target), X, error=re.escape(message), backward=lambda g, a: sk.cross_entropy_backward(a, target, g)
    )


def test_wrong_target_shape_k_dim():
    x = np.zeros((2, 3, 4))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "target must have shape (2, 4) (the input's shape (2, 3, 4) without the class axis 1) for class indices, got shape (2, 3)"
        ),
    ):
        sk.cross_entropy(x, np.zeros((2, 3), dtype=int))


@pytest.mark.parametrize(
    "weight,error,message",
    [
        (np.ones(2), ValueError, "weight must have shape (3,), one entry per class, got shape (2,)"),
        (np.ones((1, 3)), ValueError, "weight must have shape (3,), one entry per class, got shape (1, 3)"),
        (np.ones(4), ValueError, "got shape (4,)"),
        (np.array([1.0, -0.5, 1.0]), ValueError, "weight must be non-negative, got negative entries at [1]"),
        (np.array([1.0, np.nan, np.inf]), ValueError, "weight must be finite, got non-finite entries at [1, 2]"),
        (np.array(["a", "b", "c"]), TypeError, "weight must be a real array of shape (3,), got an array of shape (3,)"),
    ],
    ids=["short", "2d", "long", "negative", "nonfinite", "strings"],
)
@pytest.mark.parametrize("name", ALL_LOSS_FORMS)
def test_bad_weight(name, weight, error, message):
    with pytest.raises(error, match=re.escape(message)):
        ALL_LOSS_FORMS[name](X, Y, weight=weight)


def test_bad_weight_shape_is_rejected_by_torch_too():
    compare_with_torch(*_ce_pair(Y, weight=np.ones(2)), X, error=re.escape("weight must have shape (3,)"))


def test_negative_weight_is_stricter_than_torch():
    """PyTorch accepts negative weights (and returns a meaningless loss); softmaxkit refuses them."""
    compare_with_torch(
        *_ce_pair(Y, weight=np.array([1.0, -0.5, 1.0])), X, error="weight must be non-negative", torch_raises=False
    )
    torch = import_torch()
    torch.nn.functional.cross_entropy(
        torch.tensor(X), torch.tensor(Y), weight=torch.tensor([1.0, -0.5, 1.0], dtype=torch.float64)
    )


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("value", [-0.1, 1.5, np.nan, np.inf], ids=["negative", "above1", "nan", "inf"])
@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad"])
def test_label_smoothing_outside_unit_interval(name, value):
    with pytest.raises(ValueError, match=re.escape(f"label_smoothing must be in [0, 1], got {float(value)}")):
        ALL_LOSS_FORMS[name](X, Y, label_smoothing=value)


def test_label_smoothing_outside_unit_interval_torch_too():
    compare_with_torch(
        *_ce_pair(Y, label_smoothing=1.5), X, error=re.escape("label_smoothing must be in [0, 1], got 1.5")
    )


@pytest.mark.parametrize("value", ["0.1", None, True], ids=["str", "None", "bool"])
def test_label_smoothing_of_wrong_type(value):
    with pytest.raises(TypeError, match=re.escape(f"label_smoothing must be a real number, got {value!r}")):
        sk.cross_entropy(X, Y, label_smoothing=value)


@pytest.mark.parametrize("value", ["avg", "MEAN", None, "elementwise_mean"], ids=str)
@pytest.mark.parametrize("name", ALL_LOSS_FORMS)
def test_unknown_reduction(name, value):
    with pytest.raises(ValueError, match=re.escape(f"reduction must be one of ('none', 'mean', 'sum'), got {value!r}")):
        ALL_LOSS_FORMS[name](X, Y, reduction=value)


@pytest.mark.parametrize("value", [np.array(["mean"]), np.array(["mean", "sum"]), ["mean"]], ids=["one", "two", "list"])
def test_reduction_must_be_a_string(value):
    # Not compared elementwise (an array of "mean" was accepted, two entries an ambiguous truth value).
    with pytest.raises(ValueError, match=re.escape("reduction must be one of ('none', 'mean', 'sum'), got ")):
        sk.cross_entropy(X, Y, reduction=value)


def test_unknown_reduction_torch_too():
    compare_with_torch(*_ce_pair(Y, reduction="avg"), X, error=re.escape("reduction must be one of"))


@pytest.mark.parametrize("ignore_index", [0, 2, 5])
def test_ignore_index_with_probability_targets(ignore_index):
    target = np.full((4, 3), 1 / 3)
    message = re.escape(f"ignore_index must be negative (unused) with class-probability targets, got {ignore_index}")
    compare_with_torch(
        *_ce_pair(target, ignore_index=ignore_index),
        X,
        error=message,
        torch_raises=ignore_index < 3,
        backward=lambda g, a: sk.cross_entropy_backward(a, target, g, ignore_index=ignore_index),
    )


@pytest.mark.parametrize("value", [1.0, "1", None], ids=["float", "str", "None"])
def test_ignore_index_of_wrong_type(value):
    with pytest.raises(TypeError, match=re.escape(f"ignore_index must be an integer, got {value!r}")):
        sk.cross_entropy(X, Y, ignore_index=value)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        sk.cross_entropy(X, Y, None)  # weight given by position
    with pytest.raises(TypeError):
        sk.nll_loss(X, Y, None)


# --------------------------------------------------------------------------- input and axes


@pytest.mark.parametrize("name", ALL_LOSS_FORMS)
def test_input_without_classes(name):
    with pytest.raises(
        ValueError,
        match=re.escape("input must have the classes along axis 1 (or axis 0 when unbatched), got a 0-d array"),
    ):
        ALL_LOSS_FORMS[name](np.array(1.0), np.array(0))
    with pytest.raises(
        ValueError, match=re.escape("input must have at least one class along axis 1, got shape (2, 0)")
    ):
        ALL_LOSS_FORMS[name](np.zeros((2, 0)), np.zeros(2, dtype=int))


@pytest.mark.parametrize(
    "fn",
    [sk.softmax, sk.log_softmax, sk.logsumexp, sk.cross_entropy, lambda x: sk.cross_entropy(np.zeros((2, 3)), x)],
    ids=["softmax", "log_softmax", "logsumexp", "cross_entropy-input", "cross_entropy-target"],
)
@pytest.mark.parametrize(
    "value",
    [np.array([1 + 2j, 0j]), np.array(["a", "b"]), np.array([None, 1.0], dtype=object)],
    ids=["complex", "str", "object"],
)
def test_input_of_unsupported_dtype(fn, value):
    with pytest.raises(TypeError, match=r"(x|input|target) must be .*, got an array of shape \(2,\) and dtype"):
        fn(value) if fn is not sk.cross_entropy else fn(value, np.array(0))


@pytest.mark.parametrize("axis", [2, -3, 10])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_axis_out_of_range(name, axis):
    fn = getattr(sk, name)

    def theirs(t):  # called only after compare_with_torch has imported torch
        torch = import_torch()
        return getattr(torch, name)(t, dim=axis)

    compare_with_torch(
        lambda a: fn(a, axis=axis),
        theirs,
        X,
        error=re.escape(f"axis must be in [-2, 2) for an input with 2 dimensions, got {axis}"),
    )


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_backward_axis_out_of_range(name):
    with pytest.raises(ValueError, match=re.escape("axis must be in [-2, 2) for an input with 2 dimensions, got 2")):
        getattr(sk, name)(X, X, axis=2)


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_backward_axis_out_of_range_for_scalar_output(name):
    # A 0-d output has one axis, as in the forward pass: axis 0 and -1 are fine, 1 is not.
    for axis in (0, -1):
        assert getattr(sk, name)(np.float64(1.0), np.float64(0.0), axis=axis) == 0
    with pytest.raises(ValueError, match=re.escape("axis must be in [-1, 1) for an input with 1 dimensions, got 1")):
        getattr(sk, name)(np.float64(1.0), np.float64(0.0), axis=1)


# --------------------------------------------------------------------------- dates, durations, ragged lists


@pytest.mark.parametrize("dtype", ["m8[s]", "M8[D]"])
def test_dates_and_durations_are_not_numbers(dtype):
    # NumPy counts timedelta64 among the integers: without as_array they passed for logits and indices.
    values = np.array([0, 1], dtype=dtype)
    with pytest.raises(
        TypeError,
        match=re.escape(
            f"x must be a real floating, integer or boolean array, got an array of shape (2,) and dtype {values.dtype}"
        ),
    ):
        sk.softmax(values)
    with pytest.raises(
        TypeError,
        match=re.escape(
            f"target must be integer class indices or floating class probabilities, got an array of shape (2,) and dtype {values.dtype}"
        ),
    ):
        sk.cross_entropy(X[:2], values)
    with pytest.raises(TypeError, match=re.escape("target must be integer class indices, got")):
        sk.nll_loss(X[:2], values)
    with pytest.raises(TypeError, match=re.escape("weight must be a real array of shape (3,), got")):
        sk.cross_entropy(X, Y, weight=np.array([0, 1, 2], dtype=dtype))


@pytest.mark.parametrize("argument", ["x", "grad_output", "output"])
def test_ragged_lists_are_named(argument):
    ragged = [[1.0, 2.0], [3.0]]
    calls = {
        "x": lambda: sk.softmax(ragged),
        "grad_output": lambda: sk.softmax_backward(ragged, X[:2, :2]),
        "output": lambda: sk.log_softmax_backward(X[:2, :2], ragged),
    }
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{argument} must be an array or a nested sequence of equal lengths, got [[1.0, 2.0], [3.0]] ("
        ),
    ):
        calls[argument]()


@pytest.mark.parametrize("axis", [1, -2])
def test_axis_out_of_range_for_scalar_input(axis):
    for fn in (sk.softmax, sk.log_softmax, sk.logsumexp):
        with pytest.raises(
            ValueError, match=re.escape(f"axis must be in [-1, 1) for an input with 1 dimensions, got {axis}")
        ):
            fn(np.array(1.0), axis=axis)


@pytest.mark.parametrize(
    "axis,error,message",
    [
        ((0, 2), ValueError, "axis must be in [-2, 2) for an input with 2 dimensions, got 2"),
        ((0, -2), ValueError, "axis must not repeat an axis, got (0, -2)"),
        ((0, 0), ValueError, "axis must not repeat an axis, got (0, 0)"),
        (1.0, TypeError, "axis must be an integer, got 1.0"),
        ([0, 1], TypeError, "axis must be an integer, got [0, 1]"),
        (True, TypeError, "axis must be an integer, got True"),
    ],
    ids=["tuple-out-of-range", "tuple-repeat-negative", "tuple-repeat", "float", "list", "bool"],
)
def test_bad_logsumexp_axes(axis, error, message):
    with pytest.raises(error, match=re.escape(message)):
        sk.logsumexp(X, axis=axis)


@pytest.mark.parametrize("axis", [1.0, None, (0,)], ids=["float", "None", "tuple"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_axis_must_be_one_integer(name, axis):
    with pytest.raises(TypeError, match=re.escape(f"axis must be an integer, got {axis!r}")):
        getattr(sk, name)(X, axis=axis)


# --------------------------------------------------------------------------- backward arguments


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_backward_grad_output_shape(name):
    with pytest.raises(ValueError, match=re.escape("grad_output must have the shape of output (4, 3), got shape (4,)")):
        getattr(sk, name)(np.ones(4), X)


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_loss_backward_grad_output_shape(name):
    backward = BACKWARDS[name]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "grad_output must be a scalar or have the loss's shape (4,) with reduction='none', got shape (3,)"
        ),
    ):
        backward(X, Y, np.ones(3), reduction="none")
    with pytest.raises(
        ValueError, match=re.escape("grad_output must be a scalar with reduction='mean', got shape (4,)")
    ):
        backward(X, Y, np.ones(4))
    with pytest.raises(
        ValueError, match=re.escape("grad_output must be a scalar with reduction='sum', got shape (2,)")
    ):
        backward(X, Y, np.ones(2), reduction="sum")
    with pytest.raises(
        TypeError, match=re.escape("grad_output must be a real floating, integer or boolean array, got")
    ):
        backward(X, Y, "1")


def test_messages_share_one_style():
    """Every message starts with the argument's name and says what it got."""
    bad_calls = [
        lambda: sk.cross_entropy(X, np.array([0, 1, 2, 3])),
        lambda: sk.cross_entropy(X, Y, weight=-np.ones(3)),
        lambda: sk.cross_entropy(X, Y, label_smoothing=2.0),
        lambda: sk.cross_entropy(X, Y, reduction="x"),
        lambda: sk.softmax(X, axis=5),
        lambda: sk.cross_entropy(X, np.full((4, 3), 0.1), ignore_index=1),
        lambda: sk.cross_entropy(X, Y.astype(float)),
    ]
    for call in bad_calls:
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        assert re.fullmatch(r"[a-z_]+ must (be|have|hold|not) .*, got .+", str(info.value)), str(info.value)


def test_describe_names_arrays_and_tensors_by_shape_and_dtype():
    from softmaxkit._validation import _describe

    assert _describe(np.zeros((2, 3), dtype=np.float32)) == "an array of shape (2, 3) and dtype float32"
    assert _describe(np.float64(1.5)) == repr(np.float64(1.5))  # a NumPy scalar is a value, not an array
    assert _describe("x" * 100) == repr("x" * 100)[:57] + "..."
    torch = import_torch()
    assert _describe(torch.zeros(2, 3, dtype=torch.int64)) == "a tensor of shape (2, 3) and dtype torch.int64"
    assert _describe(torch.nn.Parameter(torch.zeros(4))) == "a tensor of shape (4,) and dtype torch.float32"
