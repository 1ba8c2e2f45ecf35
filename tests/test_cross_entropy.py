"""cross_entropy, nll_loss and their gradients: parity with PyTorch float64, finite differences,
equivalent forms, edge cases and the lesson's numbers.

Parity grid (ids read as ``<shape>-<targets>-<weight>-<ignore>-<smoothing>-<reduction>``):
index targets 3 shapes x 2 weights x 3 ignore settings x 3 smoothings x 3 reductions = 162,
probability targets 3 x 2 x 3 x 3 = 54, nll_loss 3 x 2 x 3 x 3 = 54; each checks the value of
``cross_entropy`` (or ``nll_loss``) and the gradients of ``*_backward`` and ``cross_entropy_with_grad``.

Runs without PyTorch: the float64 formula checks run first in every test, and only the
torch-parity steps (after ``import_torch()``) are then skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
from _reference import (
    assert_close,
    compare_with_torch,
    cross_entropy_ref,
    import_torch,
    max_relative_error,
    nll_loss_ref,
    numerical_vjp,
    seed_of,
    torch_value_and_grad,
)

import softmaxkit as sk

N_CLASSES = 5
SHAPES = {"unbatched": (N_CLASSES,), "2d": (7, N_CLASSES), "kdim": (3, N_CLASSES, 2, 3)}
REDUCTIONS = ("none", "mean", "sum")
SMOOTHINGS = {"eps0": 0.0, "eps0.1": 0.1, "eps1": 1.0}
# ignore setting -> (ignore_index, value planted in the target, or None for no ignored entry)
IGNORES = {"noignore": (-100, None), "ignore-100": (-100, -100), "ignore1": (1, 1)}
WEIGHT = np.array([0.5, 2.0, 1.0, 0.25, 1.5])


def _batch_shape(shape):
    return () if len(shape) == 1 else shape[:1] + shape[2:]


def _index_target(rng, shape, planted):
    """Random class indices; with ``planted``, about a third of the entries (all when unbatched) get it."""
    target = rng.integers(0, N_CLASSES, size=_batch_shape(shape))
    if planted is not None:
        if target.ndim == 0:
            target = np.array(planted)
        else:
            target = np.where(rng.random(target.shape) < 0.35, planted, target)
            target.reshape(-1)[0] = planted  # at least one ignored entry
            target.reshape(-1)[-1] = 3  # and at least one counted
    return target


def _probability_target(rng, shape):
    class_axis = 0 if len(shape) == 1 else 1
    t = rng.random(shape) ** 3  # uneven, some nearly zero
    return t / t.sum(axis=class_axis, keepdims=True)


def _torch_options(torch, weight, ignore_index, reduction, label_smoothing):
    return dict(
        weight=None if weight is None else torch.from_numpy(weight),
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def _check_against_the_formula(x, target, options):
    """The value against the float64 formula; with_grad against cross_entropy and its backward."""
    value = sk.cross_entropy(x, target, **options)
    assert_close(value, cross_entropy_ref(x, target, **options), what="value vs formula")
    loss, grad_1 = sk.cross_entropy_with_grad(x, target, **options)
    assert_close(loss, value, rtol=0, what="with_grad loss")
    assert_close(grad_1, sk.cross_entropy_backward(x, target, 1.0, **options), rtol=0, what="with_grad gradient")


def _check_against_torch(x, target, options):
    """Value, backward and with_grad of ours vs torch float64."""
    torch = import_torch()
    F = torch.nn.functional
    t_options = _torch_options(torch, **options)
    t_target = torch.from_numpy(target.astype(np.int64) if target.dtype.kind == "i" else target)
    compare_with_torch(
        lambda a: sk.cross_entropy(a, target, **options),
        lambda t: F.cross_entropy(t, t_target, **t_options),
        x,
        backward=lambda g, a: sk.cross_entropy_backward(a, target, g, **options),
    )
    _, grad_1 = sk.cross_entropy_with_grad(x, target, **options)
    _, torch_grad_1 = torch_value_and_grad(lambda t: F.cross_entropy(t, t_target, **t_options), x, 1.0)
    assert_close(grad_1, torch_grad_1, what="with_grad gradient vs torch")


def _check_cross_entropy(x, target, options):
    _check_against_the_formula(x, target, options)
    _check_against_torch(x, target, options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", SMOOTHINGS, ids=str)
@pytest.mark.parametrize("ignore", IGNORES, ids=str)
@pytest.mark.parametrize("weighted", ["noweight", "weight"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_index_targets_match_torch(shape, weighted, ignore, smoothing, reduction):
    rng = np.random.default_rng(seed_of(shape, weighted, ignore, smoothing, reduction))
    x = 2.0 * rng.standard_normal(SHAPES[shape])
    ignore_index, planted = IGNORES[ignore]
    target = _index_target(rng, x.shape, planted)
    options = dict(
        weight=WEIGHT if weighted == "weight" else None,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=SMOOTHINGS[smoothing],
    )
    _check_cross_entropy(x, target, options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", SMOOTHINGS, ids=str)
@pytest.mark.parametrize("weighted", ["noweight", "weight"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_probability_targets_match_torch(shape, weighted, smoothing, reduction):
    rng = np.random.default_rng(seed_of("prob", shape, weighted, smoothing, reduction))
    x = 2.0 * rng.standard_normal(SHAPES[shape])
    target = _probability_target(rng, x.shape)
    options = dict(
        weight=WEIGHT if weighted == "weight" else None,
        ignore_index=-100,
        reduction=reduction,
        label_smoothing=SMOOTHINGS[smoothing],
    )
    _check_cross_entropy(x, target, options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore", IGNORES, ids=str)
@pytest.mark.parametrize("weighted", ["noweight", "weight"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nll_loss_matches_torch(shape, weighted, ignore, reduction):
    rng = np.random.default_rng(seed_of("nll", shape, weighted, ignore, reduction))
    x = 2.0 * rng.standard_normal(SHAPES[shape])  # nll_loss takes any input, not only log-probabilities
    ignore_index, planted = IGNORES[ignore]
    target = _index_target(rng, x.shape, planted)
    options = dict(weight=WEIGHT if weighted == "weight" else None, ignore_index=ignore_index, reduction=reduction)
    assert_close(sk.nll_loss(x, target, **options), nll_loss_ref(x, target, **options), what="value vs formula")
    torch = import_torch()
    t_options = dict(options, weight=None if options["weight"] is None else torch.from_numpy(WEIGHT))
    compare_with_torch(
        lambda a: sk.nll_loss(a, target, **options),
        lambda t: torch.nn.functional.nll_loss(t, torch.from_numpy(np.asarray(target, dtype=np.int64)), **t_options),
        x,
        backward=lambda g, a: sk.nll_loss_backward(a, target, g, **options),
    )


def test_parity_grid_has_at_least_200_configurations():
    index = len(SHAPES) * 2 * len(IGNORES) * len(SMOOTHINGS) * len(REDUCTIONS)
    probability = len(SHAPES) * 2 * len(SMOOTHINGS) * len(REDUCTIONS)
    nll = len(SHAPES) * 2 * len(IGNORES) * len(REDUCTIONS)
    assert index + probability + nll >= 200


# --------------------------------------------------------------------------- the lesson


def test_lesson_numbers_exactly():
    logits = np.array([2.0, 1.0, 0.1])
    probabilities = sk.softmax(logits)
    assert str(probabilities) == "[0.65900114 0.24243297 0.09856589]"
    # The lesson's formula -log p_0 gives the correctly rounded value, exactly as the lesson prints it.
    assert repr(float(-np.log(probabilities[0]))) == "0.4170300162778335"
    # cross_entropy computes logsumexp(x) - x_0 (never the log of an underflowed probability), like PyTorch:
    # within one ulp of the lesson's (correctly rounded) number and of PyTorch's float64 value (the last
    # bit of exp and log differs between NumPy releases: 1.24 rounds this one correctly, 2.x does not).
    loss = sk.cross_entropy(logits, np.array(0))
    assert abs(float(loss) - 0.4170300162778335) <= np.spacing(0.4170300162778335)
    assert str(sk.cross_entropy_backward(logits, np.array(0))) == "[-0.34099886  0.24243297  0.09856589]"
    loss_2, grad_2 = sk.cross_entropy_with_grad(logits[None, :], np.array([0]))
    assert float(loss_2) == float(loss)
    assert str(grad_2[0]) == "[-0.34099886  0.24243297  0.09856589]"
    np.testing.assert_allclose(grad_2[0], probabilities - [1, 0, 0], rtol=1e-14)
    torch = import_torch()
    torch_loss = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(0)).item()
    assert abs(float(loss) - torch_loss) <= np.spacing(torch_loss)


# --------------------------------------------------------------------------- finite differences


FD_CASES = {
    "2d-index-weight-smooth-mean": dict(
        shape=(4, 5), kind="index", weight=WEIGHT, reduction="mean", label_smoothing=0.1
    ),
    "kdim-index-ignore1-sum": dict(shape=(2, 5, 3), kind="index", ignore_index=1, reduction="sum"),
    "unbatched-index-none": dict(shape=(5,), kind="index", reduction="none"),
    "2d-prob-weight-smooth-none": dict(shape=(3, 5), kind="prob", weight=WEIGHT, reduction="none", label_smoothing=1.0),
    "kdim-prob-mean": dict(shape=(2, 5, 2), kind="prob", reduction="mean"),
}


@pytest.mark.parametrize("case", FD_CASES, ids=str)
def test_cross_entropy_backward_finite_differences(case):
    spec = dict(FD_CASES[case])
    shape, kind = spec.pop("shape"), spec.pop("kind")
    rng = np.random.default_rng(seed_of("fd", case))
    x = rng.standard_normal(shape)
    target = _index_target(rng, shape, spec.get("ignore_index")) if kind == "index" else _probability_target(rng, shape)
    result = sk.gradcheck(
        lambda a: sk.cross_entropy(a, target, **spec),
        lambda g, a: sk.cross_entropy_backward(a, target, g, **spec),
        x,
    )
    assert result.passed, result
    g = rng.uniform(0.5, 1.5, size=np.shape(sk.cross_entropy(x, target, **spec)))
    numerical = numerical_vjp(lambda a: sk.cross_entropy(a, target, **spec), x, g)
    assert max_relative_error(sk.cross_entropy_backward(x, target, g, **spec), numerical) < 1e-9
    # with_grad: its gradient is the gradient of its loss
    _, grad = sk.cross_entropy_with_grad(x, target, **spec)
    numerical_1 = numerical_vjp(lambda a: sk.cross_entropy_with_grad(a, target, **spec)[0], x, np.ones_like(g))
    assert max_relative_error(grad, numerical_1) < 1e-9


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_backward_finite_differences(reduction):
    rng = np.random.default_rng(seed_of("nll-fd", reduction))
    x = rng.standard_normal((4, 5, 2))
    target = _index_target(rng, x.shape, -100)
    options = dict(weight=WEIGHT, reduction=reduction)
    assert sk.gradcheck(
        lambda a: sk.nll_loss(a, target, **options), lambda g, a: sk.nll_loss_backward(a, target, g, **options), x
    )
    g = rng.uniform(0.5, 1.5, size=np.shape(sk.nll_loss(x, target, **options)))
    numerical = numerical_vjp(lambda a: sk.nll_loss(a, target, **options), x, g)
    assert max_relative_error(sk.nll_loss_backward(x, target, g, **options), numerical) < 1e-10


def test_gradcheck_catches_a_wrong_cross_entropy_gradient():
    x = np.random.default_rng(3).standard_normal((3, 4))
    target = np.array([0, 3, 1])
    wrong = lambda g, a: sk.cross_entropy_backward(a, target, g, label_smoothing=0.1)
    assert not sk.gradcheck(lambda a: sk.cross_entropy(a, target), wrong, x)


# --------------------------------------------------------------------------- equivalent forms


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0], ids=["eps0", "eps0.1", "eps1"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_index_targets_equal_one_hot_probabilities(reduction, smoothing):
    rng = np.random.default_rng(seed_of("onehot", reduction, smoothing))
    x = rng.standard_normal((6, N_CLASSES, 3))
    target = rng.integers(0, N_CLASSES, size=(6, 3))
    one_hot = np.moveaxis(np.eye(N_CLASSES)[target], -1, 1)
    options = dict(reduction=reduction, label_smoothing=smoothing)
    assert_close(sk.cross_entropy(x, one_hot, **options), sk.cross_entropy(x, target, **options), rtol=1e-14)
    assert_close(
        sk.cross_entropy_backward(x, one_hot, **options), sk.cross_entropy_backward(x, target, **options), rtol=1e-14
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_weighted_index_targets_equal_one_hot_up_to_the_mean_denominator(smoothing):
    """With weights the per-sample losses and the sum agree; the means differ only in what they divide by:
    sum_n w_{y_n} for index targets, N for probability targets."""
    rng = np.random.default_rng(seed_of("onehot-w", smoothing))
    x = rng.standard_normal((8, N_CLASSES))
    target = rng.integers(0, N_CLASSES, size=8)
    one_hot = np.eye(N_CLASSES)[target]
    options = dict(weight=WEIGHT, label_smoothing=smoothing)
    for reduction in ("none", "sum"):
        assert_close(
            sk.cross_entropy(x, one_hot, reduction=reduction, **options),
            sk.cross_entropy(x, target, reduction=reduction, **options),
            rtol=1e-14,
        )
    index_mean = sk.cross_entropy(x, target, **options)
    prob_mean = sk.cross_entropy(x, one_hot, **options)
    assert_close(np.asarray(index_mean * WEIGHT[target].sum()), prob_mean * len(target), rtol=1e-14)
    assert_close(
        sk.cross_entropy_backward(x, target, **options) * WEIGHT[target].sum(),
        sk.cross_entropy_backward(x, one_hot, **options) * len(target),
        rtol=1e-14,
    )


@pytest.mark.parametrize("weighted", ["noweight", "weight"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ignored_samples_equal_removed_samples(reduction, weighted):
    rng = np.random.default_rng(seed_of("mask", reduction, weighted))
    x = rng.standard_normal((10, N_CLASSES))
    target = rng.integers(0, N_CLASSES, size=10)
    keep = rng.random(10) < 0.6
    keep[:2] = [True, False]
    options = dict(weight=WEIGHT if weighted == "weight" else None, reduction=reduction, label_smoothing=0.1)
    masked_target = np.where(keep, target, -100)
    loss_masked = sk.cross_entropy(x, masked_target, **options)
    loss_sliced = sk.cross_entropy(x[keep], target[keep], **options)
    grad_masked = sk.cross_entropy_backward(x, masked_target, np.ones(10) if reduction == "none" else 1.0, **options)
    grad_sliced = sk.cross_entropy_backward(
        x[keep], target[keep], np.ones(keep.sum()) if reduction == "none" else 1.0, **options
    )
    if reduction == "none":
        assert_close(loss_masked[keep], loss_sliced, rtol=1e-14)
        assert np.all(loss_masked[~keep] == 0)
    else:
        assert_close(loss_masked, loss_sliced, rtol=1e-14)
    assert_close(grad_masked[keep], grad_sliced, rtol=1e-14)
    assert np.all(grad_masked[~keep] == 0)


def test_class_axis_is_axis_1_for_k_dim_input():
    """(N, C, d1, d2) equals the (N*d1*d2, C) rows obtained by moving the class axis last."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, N_CLASSES, 2, 4))
    target = rng.integers(0, N_CLASSES, size=(3, 2, 4))
    rows = np.moveaxis(x, 1, -1).reshape(-1, N_CLASSES)
    options = dict(weight=WEIGHT, label_smoothing=0.1)
    for reduction in ("mean", "sum"):
        assert_close(
            sk.cross_entropy(x, target, reduction=reduction, **options),
            sk.cross_entropy(rows, target.reshape(-1), reduction=reduction, **options),
            rtol=1e-13,
        )
    assert_close(
        sk.cross_entropy(x, target, reduction="none", **options),
        sk.cross_entropy(rows, target.reshape(-1), reduction="none", **options).reshape(3, 2, 4),
        rtol=1e-14,
    )
    grad_rows = sk.cross_entropy_backward(rows, target.reshape(-1), **options)
    assert_close(
        sk.cross_entropy_backward(x, target, **options),
        np.moveaxis(grad_rows.reshape(3, 2, 4, N_CLASSES), -1, 1),
        rtol=1e-14,
    )


def test_cross_entropy_is_nll_of_log_softmax():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, N_CLASSES, 2))
    target = _index_target(rng, x.shape, -100)
    for reduction in REDUCTIONS:
        assert_close(
            sk.cross_entropy(x, target, weight=WEIGHT, reduction=reduction),
            sk.nll_loss(sk.log_softmax(x, axis=1), target, weight=WEIGHT, reduction=reduction),
            rtol=1e-14,
        )


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch_matches_torch(reduction, kind):
    x = np.zeros((0, N_CLASSES))
    target = np.zeros(0, dtype=np.int64) if kind == "index" else np.zeros((0, N_CLASSES))
    grad_output = np.ones(0) if reduction == "none" else 1.0
    value = sk.cross_entropy(x, target, reduction=reduction)
    assert sk.cross_entropy_backward(x, target, grad_output, reduction=reduction).shape == (0, N_CLASSES)
    assert np.isnan(value) if reduction == "mean" else np.all(value == 0)
    loss, grad = sk.cross_entropy_with_grad(x, target, reduction=reduction)
    assert grad.shape == (0, N_CLASSES) and np.shape(loss) == np.shape(value)
    torch = import_torch()
    compare_with_torch(
        lambda a: sk.cross_entropy(a, target, reduction=reduction),
        lambda t: torch.nn.functional.cross_entropy(t, torch.from_numpy(target), reduction=reduction),
        x,
        backward=lambda g, a: sk.cross_entropy_backward(a, target, g, reduction=reduction),
        grad_output=grad_output,
    )


def test_empty_k_dim_batch():
    x = np.zeros((2, N_CLASSES, 0))
    target = np.zeros((2, 0), dtype=np.int64)
    assert np.isnan(sk.cross_entropy(x, target))
    assert sk.cross_entropy(x, target, reduction="sum") == 0
    assert sk.cross_entropy(x, target, reduction="none").shape == (2, 0)
    assert sk.cross_entropy_backward(x, target).shape == x.shape


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_ignored_matches_torch(reduction, smoothing):
    """mean is NaN (0/0, as in PyTorch), sum is 0, the gradient is zero, not NaN."""
    x = np.random.default_rng(5).standard_normal((4, N_CLASSES))
    target = np.full(4, -100)
    options = dict(weight=WEIGHT, reduction=reduction, label_smoothing=smoothing)
    value = sk.cross_entropy(x, target, **options)
    assert np.isnan(value) if reduction == "mean" else np.all(value == 0)
    assert np.all(sk.cross_entropy_backward(x, target, 0.5, **options) == 0)
    assert np.all(sk.cross_entropy_with_grad(x, target, **options)[1] == 0)
    assert np.all(sk.nll_loss_backward(x, target, reduction=reduction) == 0)
    torch = import_torch()
    t_options = _torch_options(torch, ignore_index=-100, **options)
    compare_with_torch(
        lambda a: sk.cross_entropy(a, target, **options),
        lambda t: torch.nn.functional.cross_entropy(t, torch.from_numpy(target), **t_options),
        x,
        backward=lambda g, a: sk.cross_entropy_backward(a, target, g, **options),
    )


def test_zero_weight_on_every_counted_class_is_like_all_ignored():
    """W = 0 through zero weights: the mean is NaN as in PyTorch; the gradient is zero, as for all-ignored
    targets (PyTorch gives NaN here but zeros when every target is ignored)."""
    x = np.random.default_rng(6).standard_normal((3, 3))
    target = np.array([0, 0, 2])
    weight = np.array([0.0, 1.0, 0.0])
    assert np.isnan(sk.cross_entropy(x, target, weight=weight))
    assert np.all(sk.cross_entropy_backward(x, target, weight=weight) == 0)
    assert np.all(sk.cross_entropy_with_grad(x, target, weight=weight)[1] == 0)
    cases = [dict(weight=weight, ignore_index=-100, reduction=r, label_smoothing=0.0) for r in ("sum", "none")]
    for options in cases:
        _check_against_the_formula(x, target, options)
    torch = import_torch()
    torch_loss = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(target), weight=torch.tensor(weight))
    assert torch_loss.isnan()
    for options in cases:
        _check_against_torch(x, target, options)


def test_minus_inf_target_logit_gives_inf_loss_and_finite_gradient():
    x = np.array([[-np.inf, 1.0, 2.0], [0.0, 1.0, 2.0]])
    target = np.array([0, 2])
    losses = sk.cross_entropy(x, target, reduction="none")
    assert losses[0] == np.inf
    assert_close(losses[1:], cross_entropy_ref(x[1:], target[1:], reduction="none"))
    grad = sk.cross_entropy_backward(x, target, reduction="sum")
    assert np.all(np.isfinite(grad))
    p = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    assert_close(grad[0], np.array([-1.0, p[0], p[1]]), rtol=1e-15)
    loss, grad_1 = sk.cross_entropy_with_grad(x, target, reduction="sum")
    assert loss == np.inf and np.all(np.isfinite(grad_1))


def test_minus_inf_non_target_logit_is_probability_zero():
    """A masked-out class contributes nothing: same loss as without the class, gradient exactly 0 there."""
    x = np.array([[1.0, -np.inf, 2.0, 0.5]])
    target = np.array([2])
    options = dict(label_smoothing=0.0)
    loss = sk.cross_entropy(x, target, **options)
    assert_close(loss, cross_entropy_ref(x[:, [0, 2, 3]], np.array([1])), rtol=1e-15)
    grad = sk.cross_entropy_backward(x, target)
    assert grad[0, 1] == 0
    assert_close(grad[:, [0, 2, 3]], sk.cross_entropy_backward(x[:, [0, 2, 3]], np.array([1])), rtol=1e-15)
    # zero probability target on a -inf logit contributes 0 (torch: NaN)
    t = np.array([[0.5, 0.0, 0.5, 0.0]])
    assert np.isfinite(sk.cross_entropy(x, t))
    assert np.all(np.isfinite(sk.cross_entropy_backward(x, t)))


def test_smoothing_with_minus_inf_logit_is_inf():
    x = np.array([[1.0, -np.inf, 2.0]])
    assert sk.cross_entropy(x, np.array([0]), label_smoothing=0.1) == np.inf
    assert np.all(np.isfinite(sk.cross_entropy_backward(x, np.array([0]), label_smoothing=0.1)))


def test_fully_masked_row_has_zero_gradient():
    x = np.array([[-np.inf, -np.inf, -np.inf], [1.0, 2.0, 3.0]])
    target = np.array([1, 0])
    losses = sk.cross_entropy(x, target, reduction="none")
    assert losses[0] == np.inf
    grad = sk.cross_entropy_backward(x, target, reduction="sum")
    assert np.all(grad[0] == 0)
    assert_close(grad[1:], sk.cross_entropy_backward(x[1:], target[1:], reduction="sum"), rtol=1e-15)


def test_plus_inf_logits_take_the_limit():
    x = np.array([[np.inf, 0.0, np.inf], [1.0, 2.0, 3.0]])
    losses = sk.cross_entropy(x, np.array([0, 1]), reduction="none")
    assert_close(losses[:1], np.array([np.log(2.0)]), rtol=1e-15)
    assert sk.cross_entropy(x[:1], np.array([1]), reduction="sum") == np.inf


def test_nan_row_gives_nan_only_in_that_row():
    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]])
    target = np.array([0, 1])
    losses = sk.cross_entropy(x, target, reduction="none")
    assert np.isnan(losses[0]) and np.isfinite(losses[1])
    grad = sk.cross_entropy_backward(x, target, reduction="sum")
    assert np.all(np.isnan(grad[0])) and np.all(np.isfinite(grad[1]))
    assert np.isnan(sk.cross_entropy(x, target))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_low_precision_dtype_is_kept_and_accurate(dtype, kind):
    rng = np.random.default_rng(seed_of("dtype", np.dtype(dtype).name, kind))
    x = (3 * rng.standard_normal((64, N_CLASSES, 3))).astype(dtype)
    target = (
        rng.integers(0, N_CLASSES, size=(64, 3)) if kind == "index" else _probability_target(rng, x.shape).astype(dtype)
    )
    options = dict(weight=WEIGHT.astype(dtype), label_smoothing=0.1)
    unit = np.finfo(dtype).eps
    for reduction in REDUCTIONS:
        value = sk.cross_entropy(x, target, reduction=reduction, **options)
        expected = cross_entropy_ref(x, target, reduction=reduction, weight=WEIGHT, label_smoothing=0.1)
        assert value.dtype == dtype
        assert max_relative_error(value, expected) <= 4 * unit
    loss, grad = sk.cross_entropy_with_grad(x, target, **options)
    assert loss.dtype == dtype and grad.dtype == dtype
    grad_64 = sk.cross_entropy_backward(
        x.astype(np.float64),
        target.astype(np.float64) if kind == "prob" else target,
        weight=WEIGHT,
        label_smoothing=0.1,
    )
    assert max_relative_error(grad, grad_64) <= 4 * unit


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_integer_and_boolean_logits_become_float64(dtype):
    x = np.array([[3, 0, 1], [1, 1, 0]]).astype(dtype)
    target = np.array([0, 2])
    loss = sk.cross_entropy(x, target)
    assert loss.dtype == np.float64
    assert_close(loss, cross_entropy_ref(x.astype(np.float64), target))
    assert sk.cross_entropy_backward(x, target).dtype == np.float64


def test_float32_target_probabilities_with_float64_logits():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, N_CLASSES))
    t = _probability_target(rng, x.shape).astype(np.float32)
    value = sk.cross_entropy(x, t)
    assert value.dtype == np.float64
    assert_close(value, cross_entropy_ref(x, t.astype(np.float64)))


def test_scalar_grad_output_broadcasts_for_reduction_none():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, N_CLASSES))
    target = rng.integers(0, N_CLASSES, 4)
    assert_close(
        sk.cross_entropy_backward(x, target, 2.0, reduction="none"),
        sk.cross_entropy_backward(x, target, np.full(4, 2.0), reduction="none"),
        rtol=0,
    )
    assert_close(
        sk.cross_entropy_backward(x, target, 2.0, reduction="sum"),
        2.0 * sk.cross_entropy_backward(x, target, reduction="sum"),
        rtol=1e-15,
    )


def test_inputs_are_not_modified():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, N_CLASSES))
    t = _probability_target(rng, x.shape)
    x0, t0 = x.copy(), t.copy()
    sk.cross_entropy_with_grad(x, t, label_smoothing=0.1, weight=WEIGHT)
    sk.cross_entropy_backward(x, t)
    assert np.array_equal(x, x0) and np.array_equal(t, t0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32, np.uint64])
def test_any_integer_target_dtype(dtype):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, N_CLASSES))
    target = rng.integers(0, N_CLASSES, 6)
    for ignore_index in (-100, 2):
        options = dict(weight=WEIGHT, ignore_index=ignore_index, label_smoothing=0.1)
        assert_close(sk.cross_entropy(x, target.astype(dtype), **options), cross_entropy_ref(x, target, **options))
        assert_close(
            sk.cross_entropy_backward(x, target.astype(dtype), **options),
            sk.cross_entropy_backward(x, target, **options),
            rtol=0,
        )


def test_non_contiguous_input():
    rng = np.random.default_rng(14)
    base = rng.standard_normal((N_CLASSES, 8, 3))
    x = np.transpose(base, (1, 0, 2))[::-2]  # (4, 5, 3), neither C- nor F-contiguous
    target = rng.integers(0, N_CLASSES, (4, 3))
    cases = [
        (x, dict(weight=WEIGHT, ignore_index=-100, reduction="none", label_smoothing=0.1)),
        (np.asfortranarray(x), dict(weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0)),
    ]
    for logits, options in cases:
        _check_against_the_formula(logits, target, options)
    for logits, options in cases:
        _check_against_torch(logits, target, options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_with_grad_passes_gradcheck(reduction):
    rng = np.random.default_rng(seed_of("with-grad", reduction))
    x = rng.standard_normal((3, N_CLASSES, 2))
    target = _index_target(rng, x.shape, 1)
    options = dict(weight=WEIGHT, ignore_index=1, label_smoothing=0.1, reduction=reduction)
    if reduction == "none":  # with_grad's gradient is that of the summed per-sample losses (upstream 1)

        def loss(a):
            return np.sum(sk.cross_entropy_with_grad(a, target, **options)[0])
    else:

        def loss(a):
            return sk.cross_entropy_with_grad(a, target, **options)[0]

    result = sk.gradcheck(loss, lambda g, a: g * sk.cross_entropy_with_grad(a, target, **options)[1], x)
    assert result.passed, result


def test_nan_rows_with_infinities_raise_no_warning():
    import warnings

    x = np.array([[np.inf, -np.inf, np.nan], [1.0, 1e30, np.nan], [0.5, 0.0, -0.5]], dtype=np.float32)
    target = np.array([1, 0, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses, grad = sk.cross_entropy_with_grad(x, target, reduction="none", label_smoothing=1.0, weight=WEIGHT[:3])
        probability_losses = sk.cross_entropy(x, np.full(x.shape, 1 / 3, dtype=np.float32), reduction="none")
    assert np.all(np.isnan(losses[:2])) and np.isfinite(losses[2])
    assert np.all(np.isnan(grad[:2])) and np.all(np.isfinite(grad[2]))
    assert np.all(np.isnan(probability_losses[:2])) and np.isfinite(probability_losses[2])


def test_plus_inf_logits_have_finite_gradients():
    x = np.array([[np.inf, 0.0, np.inf], [1.0, 2.0, 3.0]])
    target = np.array([0, 1])
    grad = sk.cross_entropy_backward(x, target, reduction="sum")
    assert np.all(np.isfinite(grad))
    assert_close(grad[0], np.array([-0.5, 0.0, 0.5]), rtol=1e-15)  # softmax minus one-hot


def test_zero_class_weight_on_minus_inf_logit_contributes_nothing_with_smoothing():
    """The smoothing term sums w_c log p_c over all classes: a -inf logit of weight 0 adds 0, not NaN."""
    x = np.array([[1.0, -np.inf, 2.0], [0.0, 0.5, -0.5]])
    target = np.array([2, 0])
    weight = np.array([1.0, 0.0, 2.0])
    losses = sk.cross_entropy(x, target, weight=weight, label_smoothing=0.1, reduction="none")
    assert np.all(np.isfinite(losses))
    # the formula with the -inf replaced by a finite -1e300: weight 0 times a huge log-probability is 0
    assert_close(
        losses,
        cross_entropy_ref(
            np.where(np.isinf(x), -1e300, x), target, weight=weight, label_smoothing=0.1, reduction="none"
        ),
        rtol=1e-14,
    )
    assert np.all(np.isfinite(sk.cross_entropy_backward(x, target, weight=weight, label_smoothing=0.1)))
