"""Exactness against a 50-digit oracle (issue 14): every function and its gradient, on the hard input families.

The oracle is mpmath at 50 digits (``_reference.exact_*``); for C = 100,000, where mpmath is too
slow, NumPy's extended precision (``_reference.longdouble_softmax_rows``, ~1e-19 relative). The
families (``_reference.hard_families``): logit gaps 0..700 (confident rows, ``1 - p_top`` down
to 1e-304), magnitudes up to 1e300 (float32: 1e37), tiny spreads, random rows; every
cross-entropy option (class weights, ``ignore_index``, label smoothing, probability targets,
each reduction) with the target at the top class on every other row.

The bound (issue 14, "What must show"), in ulp of the dtype (``eps`` = 2**-52 or 2**-23),
elementwise: 32, plus for an entry built from ``exp(x_j - max)`` the ``|x_j - max|`` ulp that
rounding that shift costs where it is inexact (``_reference.shift_allowance``: 0 on the gap,
magnitude and spread families, whose shifts are exact), plus the largest such cost of the row
for the quantities built from the row's sum of exponentials. An entry that is a genuine
difference of two terms (a gradient entry where a smoothed or probability target puts mass
near ``p A``, a VJP of a random upstream gradient) is measured against the magnitude of its
terms, which the oracle returns with it; for plain class indices (no smoothing) that
magnitude is within a factor 4 of the entry, and at a top target it is the entry itself.

float16 / bfloat16: no worse than the naive computation in float32 from the same input,
rounded once to the dtype (+1 ulp).

The NumPy functions are parametrised in too, on both of their paths: ``numpy`` (the public
functions; these small arrays take the NumPy reference path) and ``kernel`` (the compiled row
kernels, ``engine="kernel"``), and ``kernel_rows``: the kernels on the rows padded with ``-inf``
to 40 classes, past the short rows' tiles (the padding changes nothing but the code path; not for
label smoothing, which puts mass on every class).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from _reference import (
    exact_cross_entropy,
    exact_log_softmax_vjp,
    exact_softmax_rows,
    exact_softmax_vjp,
    hard_families,
    hard_targets,
    longdouble_softmax_rows,
    shift_allowance,
    ulp_error,
)

torch = pytest.importorskip("torch", reason="the torch side needs PyTorch (the torch extra)")
pytest.importorskip("mpmath", reason="the exact oracle needs mpmath (the test extra)")

import softmaxkit  # noqa: E402
import softmaxkit.torch as skt  # noqa: E402
from softmaxkit._numpy._cross_entropy import _evaluate  # noqa: E402
from softmaxkit._numpy._softmax import _logsumexp, _softmax, _softmax_backward  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BOUND = 32.0
DTYPES = {"float64": np.float64, "float32": np.float32}
FAMILIES = ("gaps", "magnitudes", "tiny_spreads", "random", "random_wide")
WIDE = 40  # kernel_rows: past the kernels' short rows (_kernels._SHORT_ROW = 32)


# --------------------------------------------------------------------------- the implementations


def _torch_value_and_vjp(fn, x, g):
    t = torch.tensor(x, requires_grad=True)
    out = fn(t)
    (grad,) = torch.autograd.grad(out, t, torch.as_tensor(g, dtype=t.dtype))
    return out.detach().numpy(), grad.numpy()


def _kernel_impls(pad: bool):
    """The NumPy functions' compiled kernels (``engine="kernel"``), on the rows padded to ``WIDE`` with ``pad``."""

    def widen(a, fill):
        return np.concatenate([a, np.full((len(a), WIDE - a.shape[1]), fill, a.dtype)], 1) if pad else a

    def narrow(a, like):
        return a[:, : like.shape[1]]

    def forward(x, log):
        return _softmax(widen(x, -np.inf), 1, log=log, engine="kernel")

    def vjp(x, g, log):
        out = forward(x, log)
        return narrow(out, x), narrow(_softmax_backward(widen(g, 0), out, 1, log=log, engine="kernel"), x)

    def cross_entropy(x, y, g, opts):
        opts = dict(opts)
        if "weight" in opts:
            opts["weight"] = widen(opts["weight"][None, :], 0)[0]
        if y.ndim == 2:
            y = widen(y, 0)
        options = {"ignore_index": -100, "weight": None, "label_smoothing": 0.0, **opts}
        kind = {"want_loss": True, "want_grad": True, "engine": "kernel"}
        loss, grad = _evaluate(widen(x, -np.inf), y, g, **options, **kind)
        return loss, narrow(grad, x)

    return {
        "log_softmax": lambda x, g: vjp(x, g, True),
        "softmax": lambda x, g: vjp(x, g, False),
        "logsumexp": lambda x, g: (
            _logsumexp(widen(x, -np.inf), 1, False, engine="kernel"),
            g[:, None] * narrow(forward(x, False), x),
        ),
        "cross_entropy": cross_entropy,
    }


IMPLEMENTATIONS = {
    "torch": {
        "log_softmax": lambda x, g: _torch_value_and_vjp(lambda t: skt.log_softmax(t, 1), x, g),
        "softmax": lambda x, g: _torch_value_and_vjp(lambda t: skt.softmax(t, 1), x, g),
        "logsumexp": lambda x, g: _torch_value_and_vjp(lambda t: skt.logsumexp(t, 1), x, g),
        "cross_entropy": lambda x, y, g, opts: _torch_value_and_vjp(
            lambda t: skt.cross_entropy(t, torch.as_tensor(y), **_torch_opts(opts, t.dtype)), x, g
        ),
    },
    "numpy": {
        "log_softmax": lambda x, g: (
            softmaxkit.log_softmax(x, 1),
            softmaxkit.log_softmax_backward(g, softmaxkit.log_softmax(x, 1), 1),
        ),
        "softmax": lambda x, g: (softmaxkit.softmax(x, 1), softmaxkit.softmax_backward(g, softmaxkit.softmax(x, 1), 1)),
        "logsumexp": lambda x, g: (softmaxkit.logsumexp(x, 1), g[:, None] * softmaxkit.softmax(x, 1)),
        "cross_entropy": lambda x, y, g, opts: (
            softmaxkit.cross_entropy(x, y, **opts),
            softmaxkit.cross_entropy_backward(x, y, g, **opts),
        ),
    },
    "kernel": _kernel_impls(pad=False),
    "kernel_rows": _kernel_impls(pad=True),
}


def _torch_opts(opts, dtype):
    return {k: torch.as_tensor(v, dtype=dtype) if k == "weight" else v for k, v in opts.items()}


def _case(impl, *values):
    """A parameter set named ``impl-values...``."""
    return pytest.param(impl, *values, id="-".join((impl,) + tuple(str(v) for v in values)))


# --------------------------------------------------------------------------- the oracle, cached


@functools.cache
def _family(name, dtype_name):
    x = hard_families(DTYPES[dtype_name])[name]
    entry, row = shift_allowance(x)
    return x, entry, row


@functools.cache
def _exact_rows(name, dtype_name):
    return exact_softmax_rows(_family(name, dtype_name)[0])


def _upstream(x, kind):
    """A random upstream gradient in (-1, 1), or one-hot at the top class (the NLL case)."""
    if kind == "onehot":
        g = np.zeros(x.shape)
        g[np.arange(len(x)), np.argmax(x, 1)] = 1.0
        return g.astype(x.dtype)
    return np.random.default_rng(x.shape[0] * 31 + x.shape[1]).uniform(-1, 1, x.shape).astype(x.dtype)


@functools.cache
def _exact_vjp(name, dtype_name, op, kind):
    x = _family(name, dtype_name)[0]
    oracle = exact_softmax_vjp if op == "softmax" else exact_log_softmax_vjp
    return oracle(x, _upstream(x, kind))


def _assert_within(errors, bound, what):
    worst = float(np.max(errors - bound))
    assert worst <= 0, (
        f"{what}: {float(np.max(errors)):.1f} ulp, over the bound by {worst:.1f} at {np.argmax(errors - bound)}"
    )


# --------------------------------------------------------------------------- softmax, log_softmax, logsumexp


def _forward_cases():
    for impl in IMPLEMENTATIONS:
        for dtype in DTYPES:
            for family in FAMILIES:
                for op in ("log_softmax", "softmax", "logsumexp"):
                    yield _case(impl, dtype, family, op)


@pytest.mark.parametrize(("impl", "dtype", "family", "op"), list(_forward_cases()))
def test_values_within_32_ulp_of_the_oracle(impl, dtype, family, op):
    x, entry, row = _family(family, dtype)
    exact = _exact_rows(family, dtype)[op]
    g = np.ones(len(x), dtype=x.dtype) if op == "logsumexp" else np.ones(x.shape, dtype=x.dtype)
    value, _ = IMPLEMENTATIONS[impl][op](x, g)
    assert value.dtype == x.dtype
    bound = BOUND + row[:, 0] if op == "logsumexp" else BOUND + row + (entry if op == "softmax" else 0)
    _assert_within(ulp_error(value, exact, x.dtype), bound, f"{op} value")


def _vjp_cases():
    for impl in IMPLEMENTATIONS:
        for dtype in DTYPES:
            for family in FAMILIES:
                for op in ("log_softmax", "softmax"):
                    for kind in ("random", "onehot"):
                        yield _case(impl, dtype, family, op, kind)


@pytest.mark.parametrize(("impl", "dtype", "family", "op", "kind"), list(_vjp_cases()))
def test_vjps_within_32_ulp_of_the_oracle(impl, dtype, family, op, kind):
    x, entry, row = _family(family, dtype)
    exact, scale = _exact_vjp(family, dtype, op, kind)
    _, grad = IMPLEMENTATIONS[impl][op](x, _upstream(x, kind))
    assert grad.dtype == x.dtype
    _assert_within(ulp_error(grad, exact, x.dtype, scale=scale), BOUND + entry + row, f"{op} VJP ({kind})")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_logsumexp_gradient_is_the_softmax_within_32_ulp(dtype, family):
    x, entry, row = _family(family, dtype)
    g = np.random.default_rng(3).uniform(0.5, 1.5, len(x)).astype(x.dtype)
    _, grad = IMPLEMENTATIONS["torch"]["logsumexp"](x, g)
    exact = g.astype(np.float64)[:, None] * _exact_rows(family, dtype)["softmax"]
    _assert_within(ulp_error(grad, exact, x.dtype), BOUND + 1 + entry + row, "logsumexp gradient")


def test_the_examples_of_the_issue():
    """The numbers quoted in issue 14, exactly."""
    x = torch.tensor([[0.0, -40.0]], dtype=torch.float64, requires_grad=True)
    lp = skt.log_softmax(x, 1)
    assert abs(lp[0, 0].item() + 4.248354255291589e-18) <= 4e-33
    loss = skt.cross_entropy(x, torch.tensor([0]))
    assert abs(loss.item() - 4.248354255291589e-18) <= 4e-33
    (grad,) = torch.autograd.grad(loss, x)
    assert grad[0, 0].item() == -grad[0, 1].item() != 0  # sums to zero
    x = torch.tensor([[1e300, 1e300, 1e300]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(skt.cross_entropy(x, torch.tensor([0])), x)
    assert torch.allclose(grad, torch.tensor([[-2 / 3, 1 / 3, 1 / 3]], dtype=torch.float64), rtol=1e-15, atol=0)


def test_float32_offset_logits_keep_torchs_accuracy():
    """float32 logits offset by 1000: the gradient is as accurate as at offset 0 (was 3e-5 relative)."""
    gen = torch.Generator().manual_seed(14)
    base = torch.randn(64, 10, generator=gen) * 2
    y = torch.randint(0, 10, (64,), generator=gen)
    errors = []
    for offset in (0.0, 1000.0):
        x32 = (base + offset).requires_grad_()
        (ours,) = torch.autograd.grad(skt.cross_entropy(x32, y), x32)
        x64 = x32.detach().double().requires_grad_()
        (exact,) = torch.autograd.grad(torch.nn.functional.cross_entropy(x64, y), x64)
        errors.append(((ours.double() - exact).abs().max() / exact.abs().max()).item())
    assert errors[1] <= 4 * errors[0] + 2**-23, errors


# --------------------------------------------------------------------------- cross_entropy, every option

CE_OPTIONS = {
    "plain": {},
    "weight": {"weight": "w"},
    "ignore": {"ignore_index": "ignore"},
    "ignore_class": {"ignore_index": 1},
    "smoothing": {"label_smoothing": 0.1},
    "weight_smoothing": {"weight": "w", "label_smoothing": 0.1},
    "probabilities": {"probabilities": True},
    "probabilities_weight_smoothing": {"probabilities": True, "weight": "w", "label_smoothing": 0.05},
}


def _ce_inputs(family, dtype, option):
    x, entry, row = _family(family, dtype)
    spec = dict(CE_OPTIONS[option])
    y = hard_targets(x)
    opts = {}
    if spec.pop("probabilities", False):
        # Mostly on the target class, a little on the others: confident rows stay confident.
        t = np.full(x.shape, 0.01 / (x.shape[1] - 1))
        t[np.arange(len(x)), y] = 0.99
        y = t.astype(x.dtype)
    for key, value in spec.items():
        if value == "w":
            opts[key] = (np.arange(x.shape[1]) % 3 + 0.5).astype(x.dtype)
        elif value == "ignore":
            y = y.copy()
            y[3::5] = -100
        else:
            opts[key] = value
    return x, entry, row, y, opts


@functools.cache
def _exact_ce(family, dtype, option, reduction):
    x, _, _, y, opts = _ce_inputs(family, dtype, option)
    return exact_cross_entropy(x, y, reduction=reduction, grad_output=_ce_upstream(x, reduction), **opts)


def _ce_upstream(x, reduction):
    if reduction != "none":
        return np.asarray(0.75, dtype=x.dtype)
    return np.random.default_rng(len(x)).uniform(0.5, 1.5, len(x)).astype(x.dtype)


def _ce_cases():
    for impl in IMPLEMENTATIONS:
        for dtype in DTYPES:
            for family in FAMILIES:
                for option in CE_OPTIONS:
                    if impl == "kernel_rows" and "smoothing" in option:
                        continue  # the padding's -inf classes would get smoothed mass
                    for reduction in ("mean", "sum", "none"):
                        yield _case(impl, dtype, family, option, reduction)


@pytest.mark.parametrize(("impl", "dtype", "family", "option", "reduction"), list(_ce_cases()))
def test_cross_entropy_within_32_ulp_of_the_oracle(impl, dtype, family, option, reduction):
    x, entry, row, y, opts = _ce_inputs(family, dtype, option)
    exact_loss, exact_grad, scale = _exact_ce(family, dtype, option, reduction)
    loss, grad = IMPLEMENTATIONS[impl]["cross_entropy"](
        x, y, _ce_upstream(x, reduction), dict(opts, reduction=reduction)
    )
    assert np.asarray(loss).dtype == x.dtype and grad.dtype == x.dtype
    loss_bound = BOUND + (row[:, 0] if reduction == "none" else row.max())
    _assert_within(ulp_error(loss, exact_loss, x.dtype), loss_bound, "loss")
    _assert_within(ulp_error(grad, exact_grad, x.dtype, scale=scale), BOUND + entry + row, "gradient")
    if y.dtype.kind == "i" and "label_smoothing" not in opts:
        # The entry at the target, elementwise (no smoothing: nothing there is a genuine difference).
        kept = np.flatnonzero(y != opts.get("ignore_index", -100))
        at_target = ulp_error(grad[kept, y[kept]], exact_grad[kept, y[kept]], x.dtype)
        _assert_within(at_target, BOUND + entry[kept, y[kept]] + row[kept, 0], "gradient at the target")


@pytest.mark.parametrize("engine", ["numpy", "kernel"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_weighted_rows_within_32_ulp_of_the_oracle(family, dtype, engine):
    """The estimator's loss kernel (sample-weighted cross-entropy, gradient in place) on both paths."""
    from softmaxkit._numpy._weighted_rows import weighted_cross_entropy_rows

    x, entry, row = _family(family, dtype)
    y = hard_targets(x)
    w = _ce_upstream(x, "none").astype(np.float64)
    exact_loss, exact_grad, scale = exact_cross_entropy(x, y, reduction="none", grad_output=w.astype(x.dtype))
    z = x.copy()
    total = weighted_cross_entropy_rows(z, y, w, engine=engine)
    exact_total = float(np.sum(exact_loss * w))
    assert abs(total - exact_total) <= (BOUND + row.max()) * np.finfo(x.dtype).eps * exact_total
    _assert_within(ulp_error(z, exact_grad, x.dtype, scale=scale), BOUND + entry + row, "weighted gradient")
    at_target = ulp_error(z[np.arange(len(x)), y], exact_grad[np.arange(len(x)), y], x.dtype)
    _assert_within(at_target, BOUND + entry[np.arange(len(x)), y] + row[:, 0], "weighted gradient at the target")


# --------------------------------------------------------------------------- linear_cross_entropy


LINEAR_OPTIONS = {
    "plain": {},
    "weight_smoothing": {"class_weight": "w", "label_smoothing": 0.1},
    "probabilities": {"probabilities": True},
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("option", LINEAR_OPTIONS)
@pytest.mark.parametrize("max_memory", [None, 64])
def test_linear_cross_entropy_within_32_ulp_of_the_oracle(dtype, family, option, max_memory):
    """Hidden states ``I_N`` and a weight ``Z.T`` give the logits ``Z`` exactly, and ``grad_weight = G.T``.

    So the fused loss is checked against the oracle on the logits; ``max_memory=64`` tiles the
    vocabulary one column at a time (the online statistics across tiles).
    """
    ce_option = {"plain": "plain", "weight_smoothing": "weight_smoothing", "probabilities": "probabilities"}[option]
    x, entry, row, y, opts = _ce_inputs(family, dtype, ce_option)
    exact_loss, exact_grad, scale = _exact_ce(family, dtype, ce_option, "none")
    tdtype = torch.float64 if x.dtype == np.float64 else torch.float32
    n = len(x)
    hidden = torch.eye(n, dtype=tdtype, requires_grad=True)
    weight = torch.tensor(x.T.copy(), requires_grad=True)
    if "weight" in opts:
        opts = {"class_weight": torch.as_tensor(opts.pop("weight"), dtype=tdtype), **opts}
    upstream = torch.as_tensor(_ce_upstream(x, "none"), dtype=tdtype)
    loss = skt.linear_cross_entropy(
        hidden, weight, torch.as_tensor(y), reduction="none", max_memory=max_memory, backend="torch", **opts
    )
    (grad_weight,) = torch.autograd.grad(loss, weight, upstream)
    _assert_within(ulp_error(loss.detach(), exact_loss, x.dtype), BOUND + row[:, 0], "fused loss")
    grad = grad_weight.T.numpy()
    _assert_within(ulp_error(grad, exact_grad, x.dtype, scale=scale), BOUND + entry + row, "fused gradient")


def test_linear_cross_entropy_zero_class_weights_give_zero_gradients():
    """Every kept target of class weight 0 with "mean": cross_entropy's documented zeros, not NaN."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.tensor([0, 0, -100, 0, 2, 2])
    cw = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    for max_memory in (None, 64):
        loss = skt.linear_cross_entropy(x, w, y, class_weight=cw, max_memory=max_memory)
        grads = torch.autograd.grad(loss, (x, w))
        reference = skt.cross_entropy(x @ w.T, y, weight=cw)
        assert loss.isnan() and reference.isnan()  # 0 / 0, as in PyTorch
        assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


@pytest.mark.parametrize("target_dtype", [torch.bfloat16, torch.float16])
def test_linear_cross_entropy_sums_low_precision_target_mass_in_float32(target_dtype):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(16, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(300, 8, dtype=torch.float64, generator=gen)
    t = torch.softmax(torch.randn(16, 300, dtype=torch.float64, generator=gen), 1).to(target_dtype)
    (ours,) = torch.autograd.grad(skt.linear_cross_entropy(x, w, t), x)
    x64 = x.detach().clone().requires_grad_()
    (exact,) = torch.autograd.grad(torch.nn.functional.cross_entropy(x64 @ w.T, t.double()), x64)
    assert ((ours - exact).abs().max() / exact.abs().max()).item() <= 1e-12


# --------------------------------------------------------------------------- C = 100,000


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_c_against_extended_precision(dtype):
    """C = 100,000 against ``np.longdouble``: mpmath would take minutes here."""
    rng = np.random.default_rng(100_000)
    x = (3 * rng.standard_normal((3, 100_000))).astype(DTYPES[dtype])
    x[0, 7] += 60  # one confident row
    exact = longdouble_softmax_rows(x)
    _, row = shift_allowance(x[:, :2000])  # the allowance of a sample of each row's entries
    bound = BOUND + 2 * row[:, 0]
    t = torch.tensor(x)
    for name, value in (("log_softmax", skt.log_softmax(t, 1)), ("softmax", skt.softmax(t, 1))):
        entry_bound = bound[:, None] + (np.abs(x - x.max(1, keepdims=True)) if name == "softmax" else 0)
        _assert_within(ulp_error(value, exact[name], x.dtype), entry_bound, name)
    _assert_within(ulp_error(skt.logsumexp(t, 1), exact["logsumexp"], x.dtype), bound, "logsumexp")
    softmax_sum = skt.softmax(t, 1).double().sum(1)
    assert float((softmax_sum - 1).abs().max()) <= 8 * np.finfo(x.dtype).eps
    y = np.argmax(x, 1)
    loss = skt.cross_entropy(t, torch.as_tensor(y), reduction="none")
    _assert_within(ulp_error(loss, -exact["log_softmax"][np.arange(3), y], x.dtype), bound, "loss")


# --------------------------------------------------------------------------- float16 and bfloat16


def _exact_value_and_vjp(op, x, g):
    """``(value, vjp, vjp scale)`` of ``op`` at the rows ``x`` for the upstream ``g``, from the oracle."""
    if op == "cross_entropy":
        loss, grad, scale = exact_cross_entropy(x, hard_targets(x), reduction="none", grad_output=g)
        return loss, grad, scale
    rows = exact_softmax_rows(x)
    if op == "logsumexp":
        grad = g[:, None] * rows["softmax"]
        return rows["logsumexp"], grad, np.abs(grad)
    grad, scale = (exact_softmax_vjp if op == "softmax" else exact_log_softmax_vjp)(x, g)
    return rows[op], grad, scale


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", ["log_softmax", "softmax", "logsumexp", "cross_entropy"])
@pytest.mark.parametrize("family", ["gaps", "random", "tiny_spreads"])
def test_half_precision_no_worse_than_float32_rounded_once(dtype, op, family):
    """Ours in the dtype against the naive float32 computation from the same input, rounded once to it."""
    xh = torch.tensor(hard_families(np.float64)[family]).to(dtype)
    x = xh.double().numpy()  # the exact values of the rounded input
    y = torch.as_tensor(hard_targets(x))
    ops = {
        "log_softmax": (lambda t: skt.log_softmax(t, 1), lambda t: torch.log_softmax(t, 1)),
        "softmax": (lambda t: skt.softmax(t, 1), lambda t: torch.softmax(t, 1)),
        "logsumexp": (lambda t: skt.logsumexp(t, 1), lambda t: torch.logsumexp(t, 1)),
        "cross_entropy": (
            lambda t: skt.cross_entropy(t, y, reduction="none"),
            lambda t: torch.nn.functional.cross_entropy(t, y, reduction="none"),
        ),
    }
    shape = x.shape if op in ("log_softmax", "softmax") else x.shape[:1]
    g = torch.as_tensor(np.random.default_rng(2).uniform(-1, 1, shape)).to(dtype)
    exact, exact_grad, scale = _exact_value_and_vjp(op, x, g.double().numpy())
    results = []
    for fn, x_in in zip(ops[op], (xh, xh.float())):  # ours in the dtype; naive float32 from the same input
        leaf = x_in.clone().requires_grad_()
        out = fn(leaf)
        (grad,) = torch.autograd.grad(out, leaf, g.to(out.dtype))
        assert fn is ops[op][1] or (out.dtype == dtype and grad.dtype == dtype)
        results.append(
            (ulp_error(out.to(dtype), exact, dtype), ulp_error(grad.to(dtype), exact_grad, dtype, scale=scale))
        )
    (ours_value, ours_grad), (naive_value, naive_grad) = results
    assert float(np.max(ours_value)) <= float(np.max(naive_value)) + 1.0, (np.max(ours_value), np.max(naive_value))
    assert float(np.max(ours_grad)) <= float(np.max(naive_grad)) + 1.0, (np.max(ours_grad), np.max(naive_grad))


# --------------------------------------------------------------------------- the accuracy benchmark


def test_bench_accuracy_quick(tmp_path):
    """``benchmarks/bench_accuracy.py --quick`` runs and reports softmaxkit (torch and NumPy) within the bound (the table cannot rot)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_accuracy.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "accuracy-quick.json").read_text())["rows"]
    assert {r["impl"] for r in rows} == {"softmaxkit.torch", "softmaxkit numpy", "torch", "scipy"}
    ours = [r for r in rows if r["impl"] in ("softmaxkit.torch", "softmaxkit numpy")]
    assert ours and all(r[q] <= BOUND for r in ours for q in ("log_softmax", "ce_loss", "ce_grad_at_target"))
    # ... where PyTorch loses all relative accuracy on the confident rows.
    assert max(r["log_softmax"] for r in rows if r["impl"] == "torch" and r["family"] == "gaps") > 1e15
