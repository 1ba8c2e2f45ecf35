"""softmaxkit.torch ops: parity with torch.nn.functional (float64 values and gradients), gradcheck,
the non-finite policy against the NumPy functions, dtypes, errors, and the bytes the backward saves.

Oracles: ``torch.nn.functional`` in float64 for finite input (its semantics are the spec), the
package's NumPy functions for non-finite input (the policy is the spec), and explicit values.
Relative error is measured against the largest finite reference entry: ``max|a - b| <= rtol * max|b|``.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from _reference import RTOL, assert_close, seed_of

torch = pytest.importorskip("torch", reason="softmaxkit.torch needs PyTorch (the torch extra)")
import torch.nn.functional as F  # noqa: E402

import softmaxkit  # noqa: E402
import softmaxkit.torch as skt  # noqa: E402

INF, NAN = math.inf, math.nan
C = 5
SHAPES = {"unbatched": (C,), "2d": (7, C), "3d": (4, C, 3), "4d": (2, C, 3, 2)}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------
# The oracle helpers.
# ------------------------------------------------------------------------------------------------


def upstream(out, generator):
    """A random upstream gradient of ``out``'s shape (a scalar for reduced losses)."""
    return torch.rand(out.shape, dtype=out.dtype, generator=generator) + 0.5


def value_and_grads(fn, inputs, grad_out):
    out = fn(*inputs)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(out, wrt, grad_out, allow_unused=False)
    return out, grads


def compare_with_reference(ours, reference, inputs, generator, rtol=RTOL):
    """Run both on the same inputs with the same upstream gradient; compare value and every gradient."""
    ref_out = reference(*inputs)
    grad_out = upstream(ref_out, generator)
    out, grads = value_and_grads(ours, inputs, grad_out)
    ref_out, ref_grads = value_and_grads(reference, inputs, grad_out)
    assert_close(out, ref_out, rtol=rtol, what="value")
    for g, r in zip(grads, ref_grads):
        assert_close(g, r, rtol=rtol, what="gradient")
    return out, grads


def make_logits(shape, generator, dtype=torch.float64):
    return (3 * torch.randn(shape, dtype=torch.float64, generator=generator)).to(dtype).requires_grad_()


def make_index_target(shape, mode, generator):
    """Class indices for ``shape``; ``mode`` says how ignore_index is exercised."""
    batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
    target = torch.randint(0, C, batch, generator=generator)
    kwargs = {}
    if mode == "-100":  # the default ignore_index, present in the target
        if target.ndim:
            target.view(-1)[::3] = -100
        else:
            target = torch.tensor(-100)
    elif mode == "class":  # a valid class as ignore_index, present in the target
        kwargs["ignore_index"] = 1
        if target.ndim:
            target.view(-1)[::2] = 1
        else:
            target = torch.tensor(1)
    return target, kwargs


def make_probability_target(shape, generator):
    class_axis = 0 if len(shape) == 1 else 1
    t = torch.softmax(torch.randn(shape, dtype=torch.float64, generator=generator), dim=class_axis)
    return t.requires_grad_()


# ------------------------------------------------------------------------------------------------
# Parity with torch.nn.functional in float64: values and gradients, >= 200 option combinations.
# ------------------------------------------------------------------------------------------------

INDEX_CASES = list(
    itertools.product(
        SHAPES, ["none-w", "weight"], [0.0, 0.1, 1.0], ["absent", "-100", "class"], ["mean", "sum", "none"]
    )
)
PROBABILITY_CASES = list(
    itertools.product(SHAPES, ["none-w", "weight"], [0.0, 0.1, 1.0], ["absent", "negative"], ["mean", "sum", "none"])
)


def test_the_sweep_has_at_least_200_combinations():
    assert len(INDEX_CASES) + len(PROBABILITY_CASES) >= 200


@pytest.mark.parametrize(("shape", "weighting", "eps", "ignore", "reduction"), INDEX_CASES)
def test_cross_entropy_index_targets_match_torch(shape, weighting, eps, ignore, reduction):
    gen = torch.Generator().manual_seed(seed_of(shape, weighting, eps, ignore, reduction))
    x = make_logits(SHAPES[shape], gen)
    target, kwargs = make_index_target(SHAPES[shape], ignore, gen)
    if weighting == "weight":
        kwargs["weight"] = torch.rand(C, dtype=torch.float64, generator=gen) + 0.1
    options = dict(kwargs, reduction=reduction, label_smoothing=eps)
    all_ignored = bool((target == options.get("ignore_index", -100)).all())
    if all_ignored:
        # Our documented difference: every ignored sample has a zero gradient (torch: NaN with smoothing).
        out = skt.cross_entropy(x, target, **options)
        ref = F.cross_entropy(x, target, **options)
        assert_close(out, ref)
        (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
        assert torch.equal(grad, torch.zeros_like(x))
        (ref_grad,) = torch.autograd.grad(ref, x, torch.ones_like(ref))
        assert bool(((ref_grad == 0) | ref_grad.isnan()).all())
        return
    compare_with_reference(
        lambda x: skt.cross_entropy(x, target, **options),
        lambda x: F.cross_entropy(x, target, **options),
        (x,),
        gen,
    )


@pytest.mark.parametrize(("shape", "weighting", "eps", "ignore", "reduction"), PROBABILITY_CASES)
def test_cross_entropy_probability_targets_match_torch(shape, weighting, eps, ignore, reduction):
    gen = torch.Generator().manual_seed(seed_of(shape, weighting, eps, ignore, reduction))
    x = make_logits(SHAPES[shape], gen)
    target = make_probability_target(SHAPES[shape], gen)
    options = {"reduction": reduction, "label_smoothing": eps}
    if ignore == "negative":  # allowed and unused with probability targets, as in torch
        options["ignore_index"] = -1
    if weighting == "weight":
        options["weight"] = torch.rand(C, dtype=torch.float64, generator=gen) + 0.1
    # Gradients with respect to both the logits and the probability target.
    compare_with_reference(
        lambda x, t: skt.cross_entropy(x, t, **options),
        lambda x, t: F.cross_entropy(x, t, **options),
        (x, target),
        gen,
    )


@pytest.mark.parametrize(
    ("shape", "weighting", "ignore", "reduction"),
    list(itertools.product(SHAPES, ["none-w", "weight"], ["absent", "-100", "class"], ["mean", "sum", "none"])),
)
def test_nll_loss_matches_torch(shape, weighting, ignore, reduction):
    gen = torch.Generator().manual_seed(seed_of(shape, weighting, ignore, reduction))
    class_axis = 0 if shape == "unbatched" else 1
    log_p = torch.log_softmax(3 * torch.randn(SHAPES[shape], dtype=torch.float64, generator=gen), class_axis)
    log_p.requires_grad_()
    target, kwargs = make_index_target(SHAPES[shape], ignore, gen)
    if weighting == "weight":
        kwargs["weight"] = torch.rand(C, dtype=torch.float64, generator=gen) + 0.1
    options = dict(kwargs, reduction=reduction)
    compare_with_reference(
        lambda x: skt.nll_loss(x, target, **options), lambda x: F.nll_loss(x, target, **options), (log_p,), gen
    )


SOFTMAX_CASES = [(shape, dim) for shape in SHAPES.values() for dim in range(-len(shape), len(shape))]


@pytest.mark.parametrize(("shape", "dim"), SOFTMAX_CASES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax_match_torch(name, shape, dim):
    gen = torch.Generator().manual_seed(len(shape) * 10 + dim)
    x = make_logits(shape, gen)
    compare_with_reference(lambda x: getattr(skt, name)(x, dim), lambda x: getattr(torch, name)(x, dim), (x,), gen)


@pytest.mark.parametrize(
    ("dim", "keepdim"),
    [(d, k) for d in [0, 1, -1, 2, (0, 2), (1, 2), (0, 1, 2), None] for k in (False, True)],
)
def test_logsumexp_matches_torch(dim, keepdim):
    gen = torch.Generator().manual_seed(7)
    x = make_logits((4, 5, 3), gen)
    reference_dim = tuple(range(3)) if dim is None else dim
    compare_with_reference(
        lambda x: skt.logsumexp(x, dim, keepdim=keepdim),
        lambda x: torch.logsumexp(x, reference_dim, keepdim=keepdim),
        (x,),
        gen,
    )


def test_large_logits_stay_exact():
    x = torch.tensor([[1000.0, 0.0, -1000.0], [-5000.0, -5001.0, -4999.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2, 0])
    gen = torch.Generator().manual_seed(0)
    compare_with_reference(lambda x: skt.cross_entropy(x, y), lambda x: F.cross_entropy(x, y), (x,), gen)
    compare_with_reference(lambda x: skt.log_softmax(x), lambda x: F.log_softmax(x, -1), (x,), gen)


# ------------------------------------------------------------------------------------------------
# torch.autograd.gradcheck for every op (float64).
# ------------------------------------------------------------------------------------------------


def _gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gradcheck_softmax_log_softmax(dim):
    gen = torch.Generator().manual_seed(1)
    x = make_logits((3, 4, 2), gen)
    _gradcheck(lambda x: skt.softmax(x, dim), x)
    _gradcheck(lambda x: skt.log_softmax(x, dim), x)


@pytest.mark.parametrize(("dim", "keepdim"), [(-1, False), ((0, 2), True), (None, False)])
def test_gradcheck_logsumexp(dim, keepdim):
    x = make_logits((3, 4, 2), torch.Generator().manual_seed(2))
    _gradcheck(lambda x: skt.logsumexp(x, dim, keepdim=keepdim), x)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", ["unbatched", "2d", "4d"])
def test_gradcheck_cross_entropy(shape, reduction):
    gen = torch.Generator().manual_seed(3)
    x = make_logits(SHAPES[shape], gen)
    target, kwargs = make_index_target(SHAPES[shape], "class" if shape != "unbatched" else "absent", gen)
    weight = torch.rand(C, dtype=torch.float64, generator=gen) + 0.1
    _gradcheck(
        lambda x: skt.cross_entropy(x, target, weight=weight, reduction=reduction, label_smoothing=0.2, **kwargs), x
    )
    probabilities = make_probability_target(SHAPES[shape], gen)
    _gradcheck(
        lambda x, t: skt.cross_entropy(x, t, weight=weight, reduction=reduction, label_smoothing=0.2),
        x,
        probabilities,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_nll_loss(reduction):
    gen = torch.Generator().manual_seed(4)
    x = make_logits((4, C, 3), gen)
    target, kwargs = make_index_target((4, C, 3), "-100", gen)
    weight = torch.rand(C, dtype=torch.float64, generator=gen) + 0.1
    _gradcheck(lambda x: skt.nll_loss(x, target, weight=weight, reduction=reduction, **kwargs), x)


def test_gradcheck_with_minus_inf_logits_is_finite():
    x = torch.tensor([[0.3, -INF, 1.2, -0.5], [2.0, 1.0, -INF, -INF]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1])
    for fn in (
        lambda x: skt.cross_entropy(x, y, label_smoothing=0.0),
        lambda x: skt.softmax(x),
        lambda x: skt.logsumexp(x),
    ):
        (grad,) = torch.autograd.grad(fn(x).sum(), x)
        assert bool(torch.isfinite(grad).all())
    # Finite differences see -inf +- eps = -inf, so gradcheck compares the finite entries exactly.
    _gradcheck(lambda x: skt.cross_entropy(x, y), x)
    _gradcheck(lambda x: skt.softmax(x), x)


def test_gradgradcheck_every_op():
    """The backward passes are differentiable: double backward (create_graph=True) is correct."""
    gen = torch.Generator().manual_seed(5)
    x = make_logits((3, 4, 2), gen)
    y = torch.tensor([[0, 3], [-100, 1], [2, 2]])
    t = make_probability_target((3, 4, 2), gen)
    w = torch.rand(4, dtype=torch.float64, generator=gen) + 0.1
    checks = [
        (lambda x: skt.softmax(x, 1), (x,)),
        (lambda x: skt.log_softmax(x, 1), (x,)),
        (lambda x: skt.logsumexp(x, (1, 2)), (x,)),
        (lambda x: skt.cross_entropy(x, y, weight=w, label_smoothing=0.2, reduction="none"), (x,)),
        (lambda x, t: skt.cross_entropy(x, t, weight=w, label_smoothing=0.2), (x, t)),
        (lambda x: skt.nll_loss(x, y, weight=w), (x,)),
    ]
    for fn, inputs in checks:
        assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Non-finite input: the package's policy, equal to the NumPy functions.
# ------------------------------------------------------------------------------------------------

NONFINITE_ROWS = [
    [1.0, -INF, 2.0, 0.5],  # a -inf logit: probability 0, finite gradient
    [-INF, -INF, -INF, -INF],  # fully masked row
    [INF, 1.0, INF, 0.0],  # two +inf entries share the mass
    [INF, 1.0, 2.0, -INF],  # one +inf entry takes it all
    [NAN, 1.0, 2.0, 0.0],  # NaN row
    [0.5, 0.2, 0.1, -1.0],  # ordinary
    [-INF, 3.0, -INF, -INF],  # one finite entry
]


def nonfinite_logits():
    return torch.tensor(NONFINITE_ROWS, dtype=torch.float64)


class _QuietNumpy:
    """The package's NumPy functions as a reference, with floating-point warnings silenced
    (they are the reference here; their own tests police their warnings)."""

    def __getattr__(self, name):
        fn = getattr(softmaxkit, name)

        def call(*args, **kwargs):
            with np.errstate(all="ignore"):
                return fn(*args, **kwargs)

        return call


@pytest.fixture
def numpy_side():
    if not hasattr(softmaxkit, "cross_entropy_backward"):
        pytest.skip("softmaxkit's NumPy functions are not importable in this checkout")
    return _QuietNumpy()


def test_policy_explicit_values():
    x = nonfinite_logits().requires_grad_()
    p = skt.softmax(x)
    expected = torch.tensor(
        [
            [math.exp(1) / (math.exp(1) + math.exp(2) + math.exp(0.5)), 0.0, 0, 0],
            [0.0, 0, 0, 0],
            [0.5, 0, 0.5, 0],
            [1.0, 0, 0, 0],
            [NAN] * 4,
            [0, 0, 0, 0],
            [0, 1.0, 0, 0],
        ],
        dtype=torch.float64,
    )
    assert torch.equal(p[[1, 2, 3, 6]], expected[[1, 2, 3, 6]])
    assert bool(p[4].isnan().all()) and not bool(p[[0, 1, 2, 3, 5, 6]].isnan().any())
    assert p[0, 1] == 0
    log_p = skt.log_softmax(x)
    assert bool((log_p[1] == -INF).all()) and log_p[6, 1] == 0 and log_p[2, 0] == -math.log(2)
    lse = skt.logsumexp(x)
    assert lse[1] == -INF and lse[2] == INF and lse[3] == INF and lse[4].isnan() and lse[6] == 3.0
    # Gradients: zero on the fully masked row, finite everywhere but the NaN row.
    for out in (p, log_p, lse):
        (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
        assert torch.equal(grad[1], torch.zeros(4, dtype=torch.float64))
        assert bool(torch.isfinite(grad[[0, 1, 2, 3, 5, 6]]).all()) and bool(grad[4].isnan().all())
    # Cross-entropy: a -inf target logit gives +inf with a finite gradient; a masked row a zero gradient.
    y = torch.tensor([1, 1, 0, 3, 0, 0, 1])
    losses = skt.cross_entropy(x, y, reduction="none")
    assert losses[0] == INF and losses[1] == INF and losses[2] == math.log(2) and losses[3] == INF
    assert losses[4].isnan() and losses[6] == 0
    (grad,) = torch.autograd.grad(losses, x, torch.ones_like(losses))
    assert torch.equal(grad[1], torch.zeros(4, dtype=torch.float64))
    assert bool(torch.isfinite(grad[[0, 2, 3, 5, 6]]).all())
    # A zero weight on a -inf logit contributes 0, not NaN.
    w = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert skt.cross_entropy(x[:1], y[:1], weight=w, reduction="none")[0] == 0


def _numpy_grad(np_fn, *args, **kwargs):
    return torch.from_numpy(np.asarray(np_fn(*args, **kwargs)))


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("axis", [0, 1])
def test_nonfinite_softmax_ops_equal_numpy(numpy_side, op, axis):
    x = nonfinite_logits()
    x = (x if axis == 1 else x.T.contiguous()).requires_grad_()
    out = getattr(skt, op)(x, axis)
    expected = getattr(numpy_side, op)(x.detach().numpy(), axis=axis)
    assert_close(out, torch.from_numpy(np.asarray(expected)))
    g = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
    (grad,) = torch.autograd.grad(out, x, g)
    if op == "softmax":
        ref = _numpy_grad(numpy_side.softmax_backward, g.numpy(), expected, axis=axis)
    elif op == "log_softmax":
        ref = _numpy_grad(numpy_side.log_softmax_backward, g.numpy(), expected, axis=axis)
    else:  # d lse / dx = softmax
        ref = torch.from_numpy(numpy_side.softmax(x.detach().numpy(), axis=axis)) * g.unsqueeze(axis)
    assert_close(grad, ref)


NONFINITE_CE_CASES = list(
    itertools.product(["index", "probability"], [None, "zeros"], [0.0, 0.1, 1.0], ["mean", "sum", "none"])
)


@pytest.mark.parametrize(("kind", "weighting", "eps", "reduction"), NONFINITE_CE_CASES)
def test_nonfinite_cross_entropy_equals_numpy(numpy_side, kind, weighting, eps, reduction):
    x = nonfinite_logits()
    if reduction != "none":
        x = x[[0, 1, 2, 3, 5, 6]]  # keep a reduced loss finite where it can be
    x = x.requires_grad_()
    if kind == "index":
        # targets on a -inf logit, on +inf logits, an ignored NaN-free row, an ordinary one
        y = torch.tensor([1, 2, 0, 3, -100, 0, 1][: x.shape[0]])
    else:
        y = torch.tensor([[0.0, 0.0, 0.7, 0.3]] * x.shape[0], dtype=torch.float64)  # zeros on -inf logits
    weight = None if weighting is None else torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    options = {"weight": weight, "reduction": reduction, "label_smoothing": eps}
    np_options = dict(options, weight=None if weight is None else weight.numpy())
    loss = skt.cross_entropy(x, y, **options)
    expected = numpy_side.cross_entropy(x.detach().numpy(), y.numpy(), **np_options)
    assert_close(loss, torch.from_numpy(np.asarray(expected)))
    g = torch.linspace(0.5, 1.5, loss.numel(), dtype=torch.float64).reshape(loss.shape)
    (grad,) = torch.autograd.grad(loss, x, g)
    ref = numpy_side.cross_entropy_backward(x.detach().numpy(), y.numpy(), g.numpy(), **np_options)
    assert_close(grad, torch.from_numpy(ref))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nonfinite_nll_loss_equals_numpy(numpy_side, reduction):
    log_p = torch.tensor(
        [[-INF, -0.1, -3.0], [-0.5, -INF, -1.0], [NAN, -1.0, -1.0], [-INF, -INF, -INF]], dtype=torch.float64
    )
    y = torch.tensor([1, 1, -100, 0])
    weight = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    log_p.requires_grad_()
    loss = skt.nll_loss(log_p, y, weight=weight, reduction=reduction)
    expected = numpy_side.nll_loss(log_p.detach().numpy(), y.numpy(), weight=weight.numpy(), reduction=reduction)
    assert_close(loss, torch.from_numpy(np.asarray(expected)))
    g = torch.ones_like(loss)
    (grad,) = torch.autograd.grad(loss, log_p, g)
    ref = numpy_side.nll_loss_backward(
        log_p.detach().numpy(), y.numpy(), g.numpy(), weight=weight.numpy(), reduction=reduction
    )
    assert_close(grad, torch.from_numpy(ref))


def test_all_ignored_and_zero_weight_equal_numpy(numpy_side):
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9)).requires_grad_()
    for y, weight, eps in [
        (torch.full((4,), -100), None, 0.0),
        (torch.full((4,), -100), None, 0.3),
        (torch.zeros(4, dtype=torch.long), torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), 0.0),
        (torch.zeros(4, dtype=torch.long), torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), 0.3),
    ]:
        for reduction in ("mean", "sum", "none"):
            options = {"weight": weight, "reduction": reduction, "label_smoothing": eps}
            np_options = dict(options, weight=None if weight is None else weight.numpy())
            loss = skt.cross_entropy(x, y, **options)
            assert_close(
                loss,
                torch.from_numpy(np.asarray(numpy_side.cross_entropy(x.detach().numpy(), y.numpy(), **np_options))),
            )
            (grad,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
            ref = numpy_side.cross_entropy_backward(x.detach().numpy(), y.numpy(), np.ones(loss.shape), **np_options)
            assert_close(grad, torch.from_numpy(ref))


# ------------------------------------------------------------------------------------------------
# Equivalent forms.
# ------------------------------------------------------------------------------------------------


def test_index_targets_equal_one_hot_probabilities():
    gen = torch.Generator().manual_seed(11)
    x = make_logits((6, C, 2), gen)
    y = torch.randint(0, C, (6, 2), generator=gen)
    one_hot = F.one_hot(y, C).movedim(-1, 1).to(torch.float64)
    weight = torch.rand(C, dtype=torch.float64, generator=gen)
    for eps in (0.0, 0.25):
        # "sum" agrees with weights; "mean" differs by design (W vs the sample count), so unweighted.
        a = skt.cross_entropy(x, y, weight=weight, reduction="sum", label_smoothing=eps)
        b = skt.cross_entropy(x, one_hot, weight=weight, reduction="sum", label_smoothing=eps)
        assert_close(a, b)
        assert_close(skt.cross_entropy(x, y, label_smoothing=eps), skt.cross_entropy(x, one_hot, label_smoothing=eps))
        ga = torch.autograd.grad(a, x)[0]
        gb = torch.autograd.grad(b, x)[0]
        assert_close(ga, gb)


def test_ignore_mask_equals_slicing():
    gen = torch.Generator().manual_seed(12)
    x = make_logits((9, C), gen)
    y = torch.randint(0, C, (9,), generator=gen)
    keep = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    weight = torch.rand(C, dtype=torch.float64, generator=gen) + 0.1
    for reduction in ("mean", "sum"):
        masked = skt.cross_entropy(
            x, torch.where(keep, y, -100), weight=weight, reduction=reduction, label_smoothing=0.1
        )
        sliced = skt.cross_entropy(x[keep], y[keep], weight=weight, reduction=reduction, label_smoothing=0.1)
        assert_close(masked, sliced)
        g_masked = torch.autograd.grad(masked, x)[0]
        g_sliced = torch.autograd.grad(sliced, x)[0]
        assert_close(g_masked, g_sliced)  # zero on the ignored rows in both
        assert torch.equal(g_masked[~keep], torch.zeros_like(g_masked[~keep]))


def test_k_dim_equals_flattened_rows():
    gen = torch.Generator().manual_seed(13)
    x = make_logits((3, C, 4, 2), gen)
    y = torch.randint(0, C, (3, 4, 2), generator=gen)
    rows = x.movedim(1, -1).reshape(-1, C)
    for reduction in ("mean", "sum"):
        assert_close(
            skt.cross_entropy(x, y, reduction=reduction, label_smoothing=0.1),
            skt.cross_entropy(rows, y.reshape(-1), reduction=reduction, label_smoothing=0.1),
        )
    assert_close(
        skt.cross_entropy(x, y, reduction="none").reshape(-1), skt.cross_entropy(rows, y.reshape(-1), reduction="none")
    )


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_dim_equals_movedim(name):
    x = make_logits((3, 4, 5), torch.Generator().manual_seed(14))
    fn = getattr(skt, name)
    assert_close(fn(x, 1), fn(x.movedim(1, -1), -1).movedim(-1, 1), rtol=1e-15)


def test_modules_are_the_functions():
    gen = torch.Generator().manual_seed(15)
    x = make_logits((5, C), gen)
    y = torch.randint(0, C, (5,), generator=gen)
    weight = torch.rand(C, dtype=torch.float64, generator=gen)
    module = skt.CrossEntropyLoss(weight=weight, ignore_index=2, reduction="sum", label_smoothing=0.3)
    assert torch.equal(
        module(x, y), skt.cross_entropy(x, y, weight=weight, ignore_index=2, reduction="sum", label_smoothing=0.3)
    )
    assert "weight" in dict(module.named_buffers())
    log_p = skt.LogSoftmax(dim=1)(x)
    assert torch.equal(log_p, skt.log_softmax(x, 1))
    assert torch.equal(skt.Softmax(dim=0)(x), skt.softmax(x, 0))
    assert torch.equal(
        skt.NLLLoss(weight=weight, reduction="none")(log_p, y), skt.nll_loss(log_p, y, weight=weight, reduction="none")
    )
    assert torch.equal(skt.CrossEntropyLoss(weight)(x, y), module.__class__(weight=weight)(x, y))  # weight positional
    with pytest.raises(TypeError):
        skt.CrossEntropyLoss(weight, 2)  # the other options are keyword-only


def test_lesson_numbers():
    x = torch.tensor([2.0, 1.0, 0.1], dtype=torch.float64, requires_grad=True)
    assert_close(skt.softmax(x), torch.tensor([0.65900114, 0.24243297, 0.09856589], dtype=torch.float64), rtol=1e-7)
    loss = skt.cross_entropy(x, torch.tensor(0))
    assert abs(loss.item() - 0.4170300162778335) <= 1e-15
    loss.backward()
    assert_close(x.grad, torch.tensor([-0.34099886, 0.24243297, 0.09856589], dtype=torch.float64), rtol=1e-7)


# ------------------------------------------------------------------------------------------------
# dtypes and edge cases.
# ------------------------------------------------------------------------------------------------


HALF_OPS = {
    "cross_entropy": (
        lambda x, y: skt.cross_entropy(x, y, label_smoothing=0.1, reduction="none"),
        lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1, reduction="none"),
    ),
    "softmax": (lambda x, y: skt.softmax(x, 1), lambda x, y: torch.softmax(x, 1)),
    "log_softmax": (lambda x, y: skt.log_softmax(x, 1), lambda x, y: torch.log_softmax(x, 1)),
    "logsumexp": (lambda x, y: skt.logsumexp(x, 1), lambda x, y: torch.logsumexp(x, 1)),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", HALF_OPS)
def test_half_precision_is_computed_in_float32(dtype, op):
    ours, theirs = HALF_OPS[op]
    gen = torch.Generator().manual_seed(16)
    x = (3 * torch.randn(64, C, 4, dtype=torch.float64, generator=gen)).to(dtype)
    y = torch.randint(0, C, (64, 4), generator=gen)
    # The forward is the float32 computation, rounded once.
    assert torch.equal(ours(x, y), ours(x.float(), y).to(dtype))
    # Values and gradients are no worse than PyTorch's own same-dtype ops, both against float64
    # on the same (half-rounded) input, up to one rounding of the result.
    x64 = x.double().requires_grad_()
    reference = theirs(x64, y)
    upstream64 = torch.rand(reference.shape, dtype=torch.float64, generator=gen) + 0.5
    (grad64,) = torch.autograd.grad(reference, x64, upstream64)
    errors = []
    for fn in (ours, theirs):
        xh = x.clone().requires_grad_()
        out = fn(xh, y)
        (grad,) = torch.autograd.grad(out, xh, upstream64.to(dtype))
        assert out.dtype == dtype and grad.dtype == dtype
        errors.append(
            [
                ((out.double() - reference).abs().max() / reference.abs().max()).item(),
                ((grad.double() - grad64).abs().max() / grad64.abs().max()).item(),
            ]
        )
    unit_roundoff = 2.0**-11 if dtype == torch.float16 else 2.0**-8
    for ours_error, torch_error in zip(*errors):
        assert ours_error <= 1.1 * torch_error + unit_roundoff, errors


def test_float32_matches_torch_float32():
    gen = torch.Generator().manual_seed(17)
    x = make_logits((64, 33), gen, dtype=torch.float32)
    y = torch.randint(0, 33, (64,), generator=gen)
    compare_with_reference(
        lambda x: skt.cross_entropy(x, y, label_smoothing=0.1),
        lambda x: F.cross_entropy(x, y, label_smoothing=0.1),
        (x,),
        gen,
        rtol=1e-5,
    )


def test_integer_input_is_promoted_to_the_default_dtype():
    x = torch.tensor([[1, 2, 3]])
    assert skt.softmax(x).dtype == torch.get_default_dtype()
    assert_close(skt.log_softmax(x), torch.log_softmax(x.to(torch.get_default_dtype()), -1))
    assert skt.cross_entropy(x, torch.tensor([2])).dtype == torch.get_default_dtype()


def test_empty_batch_matches_torch():
    x = torch.zeros(0, C, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(0, dtype=torch.long)
    for reduction in ("mean", "sum", "none"):
        for eps in (0.0, 0.1):
            out = skt.cross_entropy(x, y, reduction=reduction, label_smoothing=eps)
            assert_close(out, F.cross_entropy(x, y, reduction=reduction, label_smoothing=eps))
            (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
            assert grad.shape == (0, C)
    assert skt.softmax(torch.zeros(3, 0)).shape == (3, 0)
    assert torch.equal(skt.logsumexp(torch.zeros(3, 0)), torch.full((3,), -INF))
    assert skt.logsumexp(torch.zeros(0, 3), 0, keepdim=True).shape == (1, 3)


def test_scalar_and_single_class_inputs():
    assert skt.softmax(torch.tensor(3.0)).item() == 1.0
    assert skt.log_softmax(torch.tensor(3.0)).item() == 0.0
    assert skt.logsumexp(torch.tensor(3.0)).item() == 3.0
    x = torch.randn(4, 1, dtype=torch.float64, requires_grad=True)
    loss = skt.cross_entropy(x, torch.zeros(4, dtype=torch.long))
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.equal(grad, torch.zeros_like(x))


# ------------------------------------------------------------------------------------------------
# Errors: clear, and worded as on the NumPy side.
# ------------------------------------------------------------------------------------------------

X = torch.zeros(3, 4)
Y = torch.tensor([0, 1, 2])
BAD_LOSS_INPUTS = [
    (
        "label 4 of 4 classes",
        dict(input=X, target=torch.tensor([0, 4, 1])),
        ValueError,
        r"class indices in \[0, 4\).*got 4 at position \(1,\)",
    ),
    ("label -1 never wraps", dict(input=X, target=torch.tensor([0, -1, 1])), ValueError, r"got -1 at position \(1,\)"),
    (
        "K-dim bad label",
        dict(input=torch.zeros(2, 4, 3), target=torch.tensor([[0, 1, 2], [3, 9, 0]])),
        ValueError,
        r"got 9 at position \(1, 1\)",
    ),
    ("unbatched bad label", dict(input=torch.zeros(4), target=torch.tensor(7)), ValueError, r"got 7 at position \(\)"),
    ("target shape", dict(input=X, target=torch.tensor([0, 1])), ValueError, r"target must have shape \(3,\)"),
    (
        "bool target",
        dict(input=X, target=torch.tensor([True, False, True])),
        TypeError,
        r"target must be integer class indices",
    ),
    (
        "probability shape",
        dict(input=X, target=torch.zeros(3, 5)),
        ValueError,
        r"target must have the input's shape \(3, 4\)",
    ),
    (
        "probability ignore",
        dict(input=X, target=torch.zeros(3, 4), ignore_index=1),
        ValueError,
        r"ignore_index must be negative",
    ),
    ("weight shape", dict(input=X, target=Y, weight=torch.ones(3)), ValueError, r"weight must have shape \(4,\)"),
    (
        "negative weight",
        dict(input=X, target=Y, weight=torch.tensor([1.0, -1.0, 1.0, 1.0])),
        ValueError,
        r"weight must be non-negative.*\[1\]",
    ),
    (
        "nan weight",
        dict(input=X, target=Y, weight=torch.tensor([1.0, NAN, 1.0, 1.0])),
        ValueError,
        r"weight must be finite",
    ),
    (
        "smoothing",
        dict(input=X, target=Y, label_smoothing=1.5),
        ValueError,
        r"label_smoothing must be in \[0, 1\], got 1.5",
    ),
    ("reduction", dict(input=X, target=Y, reduction="avg"), ValueError, r"reduction must be one of"),
    ("ignore_index type", dict(input=X, target=Y, ignore_index=1.5), TypeError, r"ignore_index must be an integer"),
    (
        "0-d input",
        dict(input=torch.tensor(1.0), target=torch.tensor(0)),
        ValueError,
        r"input must have the classes along axis 1",
    ),
    ("no classes", dict(input=torch.zeros(3, 0), target=Y), ValueError, r"input must have at least one class"),
    (
        "complex input",
        dict(input=torch.zeros(3, 4, dtype=torch.complex64), target=Y),
        TypeError,
        r"input must be a real",
    ),
    ("not a tensor", dict(input=np.zeros((3, 4)), target=Y), TypeError, r"input must be a torch.Tensor"),
]


@pytest.mark.parametrize(
    ("case", "arguments", "error", "message"), BAD_LOSS_INPUTS, ids=[c[0] for c in BAD_LOSS_INPUTS]
)
def test_cross_entropy_errors(case, arguments, error, message):
    arguments = dict(arguments)
    with pytest.raises(error, match=message):
        skt.cross_entropy(arguments.pop("input"), arguments.pop("target"), **arguments)


@pytest.mark.parametrize(
    "case",
    [
        "label 4 of 4 classes",
        "label -1 never wraps",
        "K-dim bad label",
        "target shape",
        "probability shape",
        "probability ignore",
        "weight shape",
        "negative weight",
        "smoothing",
        "reduction",
        "no classes",
    ],
)
def test_error_messages_are_the_numpy_ones(numpy_side, case):
    arguments = dict(next(c[1] for c in BAD_LOSS_INPUTS if c[0] == case))
    with pytest.raises((ValueError, TypeError)) as ours:
        skt.cross_entropy(arguments.pop("input"), arguments.pop("target"), **arguments)
    arguments = {
        k: v.numpy() if isinstance(v, torch.Tensor) else v
        for k, v in next(c[1] for c in BAD_LOSS_INPUTS if c[0] == case).items()
    }
    with pytest.raises((ValueError, TypeError)) as theirs:
        numpy_side.cross_entropy(arguments.pop("input"), arguments.pop("target"), **arguments)
    assert str(ours.value) == str(theirs.value)


def test_nll_loss_and_softmax_errors():
    with pytest.raises(TypeError, match="target must be integer class indices, got"):
        skt.nll_loss(X, torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"got 4 at position \(0,\)"):
        skt.nll_loss(X, torch.tensor([4, 0, 0]))
    with pytest.raises(ValueError, match=r"dim must be in \[-2, 2\) for an input with 2 dimensions, got 2"):
        skt.softmax(X, 2)
    with pytest.raises(TypeError, match="dim must be an integer"):
        skt.log_softmax(X, 1.0)
    with pytest.raises(ValueError, match="dim must not repeat"):
        skt.logsumexp(X, (1, -1))
    with pytest.raises(TypeError, match="input must be a real"):
        skt.softmax(torch.zeros(2, dtype=torch.complex64))


# ------------------------------------------------------------------------------------------------
# Issue 11: ignore_index compared as int64, meta tensors, zero-size dimensions.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_ignore_index_is_compared_as_int64_whatever_the_target_dtype(fn, dtype):
    n_classes = 200 if dtype == torch.uint8 else 100
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(4, n_classes, dtype=torch.float64, generator=gen)
    labels = [156, 0, 1, 99] if dtype == torch.uint8 else [0, 1, 99, 50]
    y = torch.tensor(labels, dtype=dtype)
    op, reference = getattr(skt, fn), getattr(F, fn)
    # The default -100 ignores nothing (in uint8 it would be 156), and ignore_index values beyond the
    # dtype's range (256, 65536, 2**32) never match a class-0 target.
    for ignore_index in (-100, 256, 65536, 2**32):
        out = op(x, y, reduction="none", ignore_index=ignore_index)
        assert_close(out, reference(x, y.long(), reduction="none"), what=f"ignore_index={ignore_index}")
    # ... and an ignore_index the dtype holds still ignores.
    out = op(x, y, reduction="none", ignore_index=labels[1])
    assert_close(out, reference(x, y.long(), reduction="none", ignore_index=labels[1]))
    assert out[1] == 0


def test_ignore_index_beyond_int64_is_a_clear_error():
    for ignore_index in (2**63, -(2**63) - 1, 2**70):
        for call in (
            lambda: skt.cross_entropy(X, Y, ignore_index=ignore_index),
            lambda: skt.nll_loss(X, Y.to(torch.uint8), ignore_index=ignore_index),
            lambda: skt.linear_cross_entropy(X, torch.zeros(4, 4), Y, ignore_index=ignore_index),
        ):
            with pytest.raises(ValueError, match=r"ignore_index must be an integer in the int64 range"):
                call()
    assert_close(skt.cross_entropy(X, Y, ignore_index=2**63 - 1), F.cross_entropy(X, Y))


def test_meta_tensors_are_a_clear_error():
    meta = torch.zeros(3, 4, device="meta")
    calls = {
        "softmax": lambda: skt.softmax(meta),
        "log_softmax": lambda: skt.log_softmax(meta),
        "logsumexp": lambda: skt.logsumexp(meta),
        "cross_entropy": lambda: skt.cross_entropy(meta, torch.zeros(3, dtype=torch.long)),
        "cross_entropy target": lambda: skt.cross_entropy(X, Y.to("meta")),
        "nll_loss": lambda: skt.nll_loss(meta, torch.zeros(3, dtype=torch.long)),
        "linear_cross_entropy": lambda: skt.linear_cross_entropy(meta, meta, torch.zeros(3, dtype=torch.long)),
    }
    for call in calls.values():
        with pytest.raises(ValueError, match=r"must be a tensor with data on a real device, got a tensor on the meta"):
            call()


def test_zero_size_dimensions_give_torchs_results():
    cases = [
        (lambda x: skt.logsumexp(x, (0, 2)), lambda x: torch.logsumexp(x, (0, 2)), (3, 0, 2)),
        (lambda x: skt.logsumexp(x, 0), lambda x: torch.logsumexp(x, 0), (3, 0)),
        (lambda x: skt.softmax(x, 0), lambda x: torch.softmax(x, 0), (3, 0, 4)),
        (lambda x: skt.log_softmax(x, 1), lambda x: torch.log_softmax(x, 1), (0, 3)),
        (
            lambda x: skt.cross_entropy(x, torch.zeros(2, 0, dtype=torch.long), reduction="none"),
            lambda x: F.cross_entropy(x, torch.zeros(2, 0, dtype=torch.long), reduction="none"),
            (2, 3, 0),
        ),
    ]
    for ours, theirs, shape in cases:
        x = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        out = ours(x)
        assert_close(out, theirs(x))
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.shape == shape
    # A zero-size feature dimension of the fused loss: the logits are the bias.
    x = torch.zeros(2, 0, dtype=torch.float64, requires_grad=True)
    w = torch.zeros(4, 0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3])
    for reduction in ("mean", "none"):
        out = skt.linear_cross_entropy(x, w, y, b, reduction=reduction)
        expected = F.cross_entropy(F.linear(x, w, b), y, reduction=reduction)
        assert_close(out, expected)
        (grad_b,) = torch.autograd.grad(out.sum(), b)
        assert_close(grad_b, torch.autograd.grad(expected.sum(), b)[0])
    assert_close(skt.linear_logsumexp(x, w, b), torch.logsumexp(b, 0).expand(2))


# ------------------------------------------------------------------------------------------------
# Memory: what the backward saves.
# ------------------------------------------------------------------------------------------------


def saved_bytes(fn, *inputs):
    """Bytes of the tensors autograd saves for ``fn(*inputs)``, excluding the storage of ``inputs``."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    own = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
    extra = sum(t.untyped_storage().nbytes() for t in saved if t.untyped_storage().data_ptr() not in own)
    return extra, out


@pytest.mark.parametrize("kind", ["index", "probability"])
def test_cross_entropy_backward_saves_o_of_n_bytes(kind):
    n = 512
    measured = {}
    for n_classes in (8, 4096):
        gen = torch.Generator().manual_seed(n_classes)
        x = make_logits((n, n_classes), gen)
        if kind == "index":
            y = torch.randint(0, n_classes, (n,), generator=gen)
        else:
            y = torch.softmax(torch.randn(n, n_classes, dtype=torch.float64, generator=gen), 1)
        weight = torch.rand(n_classes, dtype=torch.float64, generator=gen)
        extra, loss = saved_bytes(lambda x, y, w: skt.cross_entropy(x, y, weight=w, label_smoothing=0.1), x, y, weight)
        measured[n_classes] = extra
        # Beyond the caller's own tensors: per row the maximum's position (int64) and the sum of the
        # other exponentials (float64), and a 0-d denominator.
        assert extra <= n * (8 + 8) + 64, extra
        # ... and the backward still works from that.
        (grad,) = torch.autograd.grad(loss, x)
        assert_close(grad, torch.autograd.grad(F.cross_entropy(x, y, weight=weight, label_smoothing=0.1), x)[0])
    assert measured[8] == measured[4096]  # independent of C
    # The measurement can see an N x C tensor: torch's own cross_entropy saves its log-softmax.
    torch_extra, _ = saved_bytes(lambda x, y: F.cross_entropy(x, y), x, y)
    assert torch_extra >= n * 4096 * 8


def test_k_dim_cross_entropy_and_logsumexp_save_o_of_n_bytes():
    gen = torch.Generator().manual_seed(21)
    x = make_logits((8, 1000, 16), gen)
    y = torch.randint(0, 1000, (8, 16), generator=gen)
    extra, _ = saved_bytes(lambda x, y: skt.cross_entropy(x, y, reduction="none"), x, y)
    assert extra <= 8 * 16 * (8 + 8) + 64  # per row: the maximum's position and S'
    extra, _ = saved_bytes(lambda x: skt.logsumexp(x, 1), x)
    assert extra <= 8 * 16 * (8 + 8)  # per row: the maximum and S'
    extra, _ = saved_bytes(lambda x, y: skt.nll_loss(x, y), x, y)
    assert extra <= 64


# ------------------------------------------------------------------------------------------------
# Packaging.
# ------------------------------------------------------------------------------------------------


def test_import_without_torch_is_a_clear_error():
    # A finder that refuses torch, as on a machine without it (sys.modules['torch'] = None would
    # confuse libraries that probe sys.modules for torch).
    code = (
        "import importlib.abc, sys\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import softmaxkit\n"
        "try:\n"
        "    import softmaxkit.torch\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "softmaxkit.torch needs PyTorch: pip install 'softmaxkit[torch]'"


# ------------------------------------------------------------------------------------------------
# CUDA (skipped with a reason where there is none).
# ------------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize(("shape", "weighting", "eps", "ignore", "reduction"), INDEX_CASES[::7])
def test_cuda_index_targets_match_torch(shape, weighting, eps, ignore, reduction):
    gen = torch.Generator().manual_seed(31)
    x = make_logits(SHAPES[shape], gen).detach().cuda().requires_grad_()
    target, kwargs = make_index_target(SHAPES[shape], ignore, gen)
    target = target.cuda()
    if bool((target == kwargs.get("ignore_index", -100)).all()):
        target = torch.zeros_like(target)
    if weighting == "weight":
        kwargs["weight"] = (torch.rand(C, dtype=torch.float64, generator=gen) + 0.1).cuda()
    options = dict(kwargs, reduction=reduction, label_smoothing=eps)
    out = skt.cross_entropy(x, target, **options)
    ref = F.cross_entropy(x, target, **options)
    assert out.device == x.device
    assert_close(out, ref)
    g = torch.ones_like(out)
    assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_equals_cpu(dtype):
    gen = torch.Generator().manual_seed(32)
    x = make_logits((64, 40), gen, dtype=dtype).detach()
    x[3, :] = -INF
    x[5, 2] = INF
    x.requires_grad_()
    y = torch.randint(0, 40, (64,), generator=gen)
    xc = x.detach().cuda().requires_grad_()
    for fn in (lambda x, y: skt.cross_entropy(x, y, label_smoothing=0.1), lambda x, y: skt.logsumexp(x, 1)):
        cpu, gpu = fn(x, y), fn(xc, y.cuda())
        assert_close(gpu.cpu(), cpu, rtol=1e-5 if dtype == torch.float32 else 1e-2)
        g_cpu = torch.autograd.grad(cpu.sum(), x)[0]
        g_gpu = torch.autograd.grad(gpu.sum(), xc)[0]
        assert_close(g_gpu.cpu(), g_cpu, rtol=1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.cuda
def test_cuda_cross_entropy_saves_o_of_n_bytes_and_checks_devices():
    x = torch.randn(256, 8192, device="cuda", requires_grad=True)
    y = torch.randint(0, 8192, (256,), device="cuda")
    extra, _ = saved_bytes(lambda x, y: skt.cross_entropy(x, y), x, y)
    assert extra <= 256 * 4 + 64
    with pytest.raises(ValueError, match="target must be on the input's device"):
        skt.cross_entropy(x, y.cpu())
