"""The compiled row kernels (``softmaxkit._numpy._kernels``) against the NumPy reference path and the
float64 oracle: values, the non-finite policy, dtypes, layouts, gradients, the dispatch and threads.

Each kernel is compiled once per dtype (float32, float64) and cached on disk by numba, so these tests
use those two dtypes (float16 is computed in float32) and C-contiguous arrays only, never a new
signature per case.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _reference import (
    assert_close,
    cross_entropy_ref,
    log_softmax_ref,
    logsumexp_ref,
    max_relative_error,
    numerical_vjp,
    seed_of,
    softmax_ref,
)

import softmaxkit as sk
from softmaxkit._numpy import _engine
from softmaxkit._numpy._cross_entropy import _evaluate
from softmaxkit._numpy._softmax import _logsumexp, _softmax, _softmax_backward
from softmaxkit._numpy._weighted_rows import weighted_cross_entropy_rows

DTYPES = [np.float32, np.float64]
EPS = {np.float16: 2.0**-11, np.float32: 2.0**-24, np.float64: 2.0**-53}  # unit roundoff
INF, NAN = np.inf, np.nan

# Every non-finite pattern of the policy (softmaxkit._numpy._softmax), one row each, 7 classes.
PATTERN_ROWS = {
    "finite": [0.5, -1.0, 2.0, 0.0, 3.0, -2.0, 1.0],
    "minus-inf entries": [0.5, -INF, 2.0, -INF, 3.0, -2.0, 1.0],
    "all minus-inf": [-INF] * 7,
    "one plus-inf": [0.5, INF, 2.0, 0.0, 3.0, -2.0, 1.0],
    "two plus-inf": [INF, -1.0, 2.0, INF, 3.0, -INF, 1.0],
    "all plus-inf": [INF] * 7,
    "a nan": [0.5, -1.0, NAN, 0.0, 3.0, -2.0, 1.0],
    "all nan": [NAN] * 7,
    "nan and plus-inf": [INF, -1.0, NAN, 0.0, 3.0, -2.0, 1.0],
    "nan and minus-inf": [-INF, -INF, NAN, -INF, -INF, -INF, -INF],
    "plus-inf and minus-inf": [-INF, INF, -INF, -INF, -INF, -INF, -INF],
    "extreme finite": [1e30, -1e30, 3e29, 0.0, -1.0e38, 1e30, 2.0],
}
PATTERNS = np.array(list(PATTERN_ROWS.values()))
# The same rows with 33 more -inf entries: long rows take the row-by-row path, short ones the tiles.
WIDTHS = {"short": PATTERNS, "long": np.pad(PATTERNS, ((0, 0), (0, 33)), constant_values=-INF)}

# Row lengths around the kernels' vector widths and block size, one class, and a very long row.
SHAPES = [(3, 1), (5, 2), (7, 3), (4, 7), (6, 10), (3, 63), (2, 64), (3, 65), (2, 1000), (2, 100_003)]


def _logits(shape, dtype, *parts, scale=3.0):
    return (scale * np.random.default_rng(seed_of(shape, *parts)).standard_normal(shape)).astype(dtype)


def _no_less_accurate(kernel, numpy_path, oracle, dtype, *, what):
    """The kernel's error against the oracle is at most the NumPy path's, or a few units of rounding."""
    kernel_error = max_relative_error(kernel, oracle)
    allowed = max(max_relative_error(numpy_path, oracle), 8 * EPS[dtype])
    assert kernel_error <= allowed, f"{what}: kernel error {kernel_error:.2e} > {allowed:.2e} (NumPy path)"


# --------------------------------------------------------------------------- the exponential


@pytest.mark.parametrize("nonpositive", [False, True], ids=["full-range", "nonpositive"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_exponential_is_within_one_ulp_everywhere(dtype, nonpositive):
    from softmaxkit._numpy._kernels import exp_array

    low, high = (-104.0, 89.0) if dtype == np.float32 else (-746.0, 710.0)
    high = 0.0 if nonpositive else high
    t = np.concatenate([np.linspace(low, high, 200_001), np.random.default_rng(0).uniform(-20, 0, 100_000)])
    t = t.astype(dtype)
    out = np.empty_like(t)
    exp_array(t, out, nonpositive)
    with np.errstate(over="ignore"):  # the reference in a wider type (x86's 80-bit long double for float64)
        exact = np.exp(t.astype(np.float64 if dtype == np.float32 else np.longdouble))
        rounded = exact.astype(dtype)
    finite = np.isfinite(rounded)
    ulp = np.spacing(np.abs(rounded[finite]))
    # where long double is double (not x86), the reference is itself rounded: 1 ulp more
    reference_ulp = 1.0 if dtype == np.float32 or np.finfo(np.longdouble).eps < 1e-18 else 2.0
    assert np.max(np.abs(out[finite] - rounded[finite]) / ulp) <= reference_ulp  # subnormal results included
    assert np.array_equal(np.isinf(out), np.isinf(rounded))
    specials = np.array([-INF, NAN, 0.0, -0.0, -1e30, INF], dtype=dtype)[: 5 if nonpositive else 6]
    exp_array(specials, out[: specials.size], nonpositive)
    assert_close(out[: specials.size], np.array([0.0, NAN, 1.0, 1.0, 0.0, INF], dtype=dtype)[: specials.size], rtol=0)


def test_logarithm_of_the_sums_is_within_one_ulp():
    from softmaxkit._numpy._kernels import log_array

    s = np.concatenate([np.linspace(1.0, 3.0, 100_001), np.geomspace(1.0, 1e7, 100_001), [1.0, 2.0, NAN]])
    out = np.empty_like(s)
    log_array(s, out)
    exact = np.log(s.astype(np.longdouble)).astype(np.float64)  # x86's 80-bit long double
    finite = np.isfinite(exact)
    ulp = np.spacing(np.maximum(np.abs(exact[finite]), np.finfo(np.float64).tiny))
    reference_ulp = 1.0 if np.finfo(np.longdouble).eps < 1e-18 else 2.0
    assert np.max(np.abs(out[finite] - exact[finite]) / ulp) <= reference_ulp
    assert out[-3] == 0.0 and np.isnan(out[-1])


def test_log1p_of_the_rest_is_within_two_ulp():
    """``log1p(S')`` from the kernels' ``log`` (``log(u) S' / (u - 1)``, ``u = 1 + S'``), down to ``S' = 1e-300``."""
    from softmaxkit._numpy._kernels import log1p_array

    r = np.concatenate(
        [np.geomspace(1e-300, 1e-3, 50_001), np.linspace(1e-3, 3.0, 50_001), np.geomspace(3.0, 1e7, 1001)]
    )
    r = np.concatenate([r, [0.0, NAN]])
    out = np.empty_like(r)
    log1p_array(r, out)
    exact = np.log1p(r.astype(np.longdouble)).astype(np.float64)
    finite = np.isfinite(exact) & (exact > 0)
    ulp = np.spacing(np.abs(exact[finite]))
    reference_ulp = 2.0 if np.finfo(np.longdouble).eps < 1e-18 else 3.0
    assert np.max(np.abs(out[finite] - exact[finite]) / ulp) <= reference_ulp
    assert out[-2] == 0.0 and np.isnan(out[-1])


# --------------------------------------------------------------------------- softmax and friends


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_log_softmax_logsumexp_agree_with_the_reference(shape, dtype):
    x = _logits(shape, dtype, "forward")
    oracles = {
        "softmax": softmax_ref(x),
        "log_softmax": log_softmax_ref(x),
        "logsumexp": logsumexp_ref(x),
    }
    for name, oracle in oracles.items():
        if name == "logsumexp":
            kernel, numpy_path = (_logsumexp(x, -1, False, engine=e) for e in ("kernel", "numpy"))
        else:
            kernel, numpy_path = (_softmax(x, -1, log=name == "log_softmax", engine=e) for e in ("kernel", "numpy"))
        assert kernel.dtype == dtype and kernel.shape == oracle.shape
        assert_close(kernel, numpy_path, rtol=32 * EPS[dtype], what=f"{name} vs NumPy path")
        _no_less_accurate(kernel, numpy_path, oracle, dtype, what=name)
    probabilities = _softmax(x, -1, log=False, engine="kernel").astype(np.float64)
    assert np.max(np.abs(probabilities.sum(axis=-1) - 1)) <= 2 * shape[1] ** 0.5 * EPS[dtype] + 4 * EPS[dtype]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_patterns_follow_the_policy(dtype, width):
    """Kernel == NumPy path on every non-finite pattern: the same NaN/inf positions, the same values."""
    x = WIDTHS[width].astype(dtype)
    for log in (False, True):
        kernel, numpy_path = (_softmax(x, -1, log=log, engine=e) for e in ("kernel", "numpy"))
        assert_close(kernel, numpy_path, rtol=4 * EPS[dtype], what="log_softmax" if log else "softmax")
        g = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
        grads = [_softmax_backward(g, numpy_path, -1, log=log, engine=e) for e in ("kernel", "numpy")]
        assert_close(grads[0], grads[1], rtol=8 * EPS[dtype], what="backward")
    lse = [_logsumexp(x, -1, False, engine=e) for e in ("kernel", "numpy")]
    assert_close(lse[0], lse[1], rtol=4 * EPS[dtype], what="logsumexp")
    p = _softmax(x, -1, log=False, engine="kernel")[:, :7]
    assert np.array_equal(p[2], np.zeros(7)) and np.array_equal(p[4], [0.5, 0, 0, 0.5, 0, 0, 0])
    assert np.isnan(p[[6, 7, 8, 9]]).all() and lse[0][2] == -INF and lse[0][5] == INF


def test_float16_is_computed_in_float32_and_returned_in_float16():
    x = _logits((6, 700), np.float16, "half")
    for log in (False, True):
        kernel, numpy_path = (_softmax(x, -1, log=log, engine=e) for e in ("kernel", "numpy"))
        assert kernel.dtype == np.float16
        assert_close(kernel, numpy_path, rtol=EPS[np.float16])
    lse = _logsumexp(x, -1, True, engine="kernel")
    assert lse.dtype == np.float16 and lse.shape == (6, 1)
    assert_close(lse, logsumexp_ref(x, keepdims=True).astype(np.float16), rtol=EPS[np.float16])


def test_trailing_axes_and_layouts():
    """Trailing axes of a C-contiguous array take the kernels; other axes and layouts the NumPy path."""
    x = _logits((3, 4, 50), np.float64, "axes")
    assert_close(_logsumexp(x, (1, 2), False, engine="kernel"), logsumexp_ref(x.reshape(3, -1)), rtol=1e-14)
    assert_close(_logsumexp(x, None, True, engine="kernel"), logsumexp_ref(x, axis=None, keepdims=True), rtol=1e-14)
    assert_close(_softmax(x, 2, log=False, engine="kernel"), softmax_ref(x, axis=2), rtol=1e-14)
    for not_rows in (x.transpose(0, 2, 1), x[:, :, ::2]):
        with pytest.raises(ValueError, match="engine='kernel' needs"):
            _softmax(not_rows, -1, log=False, engine="kernel")
    with pytest.raises(ValueError, match="engine='kernel' needs"):
        _softmax(x, 1, log=False, engine="kernel")
    with pytest.raises(ValueError, match="engine must be one of"):
        _softmax(x, -1, log=False, engine="numba")


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_kernel_backward_passes_match_finite_differences(log):
    x = _logits((4, 9), np.float64, "fd", log)
    x[1, 2] = -INF  # a constant of the function: the other entries' gradients are still right
    g = np.random.default_rng(2).standard_normal(x.shape)

    def forward(a):
        return _softmax(a, -1, log=log, engine="kernel")

    finite = np.isfinite(x)
    numerical = numerical_vjp(lambda a: forward(np.where(finite, a, -INF)), np.where(finite, x, 0.0), g)
    analytic = _softmax_backward(g, forward(x), -1, log=log, engine="kernel")
    assert max_relative_error(analytic[finite], numerical[finite]) < 1e-9
    # at the -inf entry: 0 for softmax (probability 0); g for log_softmax (its output is x - lse)
    assert analytic[1, 2] == (g[1, 2] if log else 0)


# --------------------------------------------------------------------------- cross-entropy

CE_OPTIONS = list(itertools.product(["index", "prob"], [False, True], ["mean", "sum", "none"], [0.0, 0.1]))


@pytest.mark.parametrize("n_classes", [13, 40])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_agrees_with_the_reference_for_every_option(dtype, n_classes):
    n, c = 40, n_classes
    rng = np.random.default_rng(seed_of("ce", dtype))
    x = _logits((n, c), dtype, "ce", c)
    index = rng.integers(0, c, n)
    index[[3, 17]] = -100
    probabilities = rng.dirichlet(np.ones(c), n).astype(dtype)
    class_weight = rng.uniform(0.5, 2.0, c)
    class_weight[4] = 0.0
    for kind, weighted, reduction, smoothing in CE_OPTIONS:
        target = index if kind == "index" else probabilities
        options = dict(weight=class_weight if weighted else None, reduction=reduction, label_smoothing=smoothing)
        grad_output = 1.0 if reduction != "none" else rng.uniform(0.5, 1.5, n)
        results = {
            e: _evaluate(x, target, grad_output, **options, ignore_index=-100, want_loss=True, want_grad=True, engine=e)
            for e in ("kernel", "numpy")
        }
        case = f"{kind} weighted={weighted} {reduction} eps={smoothing}"
        oracle = cross_entropy_ref(x, target, **options)
        for i, what in enumerate(("loss", "gradient")):
            assert_close(results["kernel"][i], results["numpy"][i], rtol=16 * EPS[dtype], what=f"{what} {case}")
        _no_less_accurate(results["kernel"][0], results["numpy"][0], oracle, dtype, what=f"loss {case}")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_non_finite_patterns(dtype, width):
    x = WIDTHS[width].astype(dtype)
    n, c = x.shape
    index = np.array([1, 1, 0, 1, 0, 3, 2, 0, 2, 0, 1, 4])  # the target at +inf, at -inf, at NaN, ...
    index[0] = -100
    probabilities = np.random.default_rng(3).dirichlet(np.ones(c), n).astype(dtype)
    probabilities[1, [1, 3]] = 0  # zero probability on the -inf entries
    class_weight = np.linspace(0.5, 2.0, c)
    class_weight[1] = 0.0  # zero weight on -inf entries
    for kind, weighted, reduction, smoothing in CE_OPTIONS:
        target = index if kind == "index" else probabilities
        options = dict(weight=class_weight if weighted else None, reduction=reduction, label_smoothing=smoothing)
        results = [
            _evaluate(x, target, 1.0, **options, ignore_index=-100, want_loss=True, want_grad=True, engine=e)
            for e in ("kernel", "numpy")
        ]
        case = f"{kind} weighted={weighted} {reduction} eps={smoothing}"
        assert_close(results[0][0], results[1][0], rtol=16 * EPS[dtype], what=f"loss {case}")
        assert_close(results[0][1], results[1][1], rtol=16 * EPS[dtype], what=f"gradient {case}")


def test_cross_entropy_with_grad_float16_and_k_dim_input():
    x = _logits((3, 5, 4, 2), np.float16, "k-dim")
    target = np.random.default_rng(4).integers(0, 5, (3, 4, 2))
    for reduction in ("mean", "none"):
        kernel, numpy_path = (
            _evaluate(
                x,
                target,
                1.0,
                weight=None,
                ignore_index=-100,
                reduction=reduction,
                label_smoothing=0.0,
                want_loss=True,
                want_grad=True,
                engine=e,
            )
            for e in ("kernel", "numpy")
        )
        assert kernel[0].dtype == kernel[1].dtype == np.float16 and kernel[1].shape == x.shape
        assert_close(kernel[0], numpy_path[0], rtol=EPS[np.float16])
        assert_close(kernel[1], numpy_path[1], rtol=2 * EPS[np.float16])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_of_short_rows_across_tasks_and_edges_match_the_numpy_path(dtype):
    """Short rows run in transposed tiles of _TILE rows, _TASK_TILES tiles per parallel task: two tasks and a
    partial tile, the non-finite patterns at the tiles' first and last rows, confident and uncertain rows,
    class weights and smoothing, the gradient in place; the kernels equal the NumPy path."""
    from softmaxkit._numpy import _kernels

    tile, task = _kernels._TILE, _kernels._TASK_ROWS
    n, c = 2 * task + tile // 2 + 3, 10
    x = _logits((n, c), dtype, "tiles", scale=2.0)
    x[::3] *= 8  # confident rows: the top's probability past 1/2 (S' summed without it)
    edges = [0, tile - 1, tile, task - 1, task, task + tile + 1, 2 * task, n - 2, n - 1, 5, 900, 2000]
    padded = np.pad(PATTERNS, ((0, 0), (0, c - PATTERNS.shape[1])), constant_values=-INF)
    x[edges] = padded.astype(dtype)
    for log in (False, True):
        kernel, numpy_path = (_softmax(x, -1, log=log, engine=e) for e in ("kernel", "numpy"))
        assert_close(kernel, numpy_path, rtol=4 * EPS[dtype], what="log_softmax" if log else "softmax")
    rng = np.random.default_rng(seed_of("tiles", dtype))
    index = rng.integers(0, c, n)
    index[edges[::2]] = -100
    class_weight = rng.uniform(0.5, 2.0, c)
    for weighted, smoothing in itertools.product([False, True], [0.0, 0.1]):
        options = dict(weight=class_weight if weighted else None, reduction="none", label_smoothing=smoothing)
        grad_output = rng.uniform(0.5, 1.5, n)
        results = [
            _evaluate(x, index, grad_output, **options, ignore_index=-100, want_loss=True, want_grad=True, engine=e)
            for e in ("kernel", "numpy")
        ]
        case = f"weighted={weighted} eps={smoothing}"
        assert_close(results[0][0], results[1][0], rtol=16 * EPS[dtype], what=f"loss {case}")
        assert_close(results[0][1], results[1][1], rtol=16 * EPS[dtype], what=f"gradient {case}")
    finite = np.isfinite(x).all(axis=1)
    target, weights = index[finite] % c, rng.uniform(0, 1, int(finite.sum()))
    for smoothing in (0.0, 0.2):
        kernel, numpy_path = x[finite].copy(), x[finite].copy()
        totals = [
            weighted_cross_entropy_rows(z, target, weights, label_smoothing=smoothing, engine=e)
            for z, e in ((kernel, "kernel"), (numpy_path, "numpy"))
        ]
        assert totals[0] == pytest.approx(totals[1], rel=16 * EPS[dtype])
        assert_close(kernel, numpy_path, rtol=16 * EPS[dtype], what=f"weighted rows in place eps={smoothing}")
        # entry by entry at the top of the confident rows, where p_top A - a_top would cancel
        rows = np.arange(target.size)
        top = np.argmax(x[finite], axis=1)
        confident = softmax_ref(x[finite])[rows, top] > 0.9
        at_top = [g[rows, top][confident].astype(np.float64) for g in (kernel, numpy_path)]
        assert confident.sum() > 1000 and np.all(np.abs(at_top[0] - at_top[1]) <= 16 * EPS[dtype] * np.abs(at_top[1]))


# --------------------------------------------------------------------------- the linear model's kernel


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "weighted"])
def test_weighted_rows_equal_cross_entropy_with_grad_times_the_weights(weighted, smoothing, kind, dtype):
    n, c = 30, 6
    rng = np.random.default_rng(seed_of("weighted", weighted, smoothing, kind, dtype))
    z = _logits((n, c), dtype, "weighted", kind)
    z[0, 2] = -INF  # the target's logit: infinite loss, finite gradient
    z[1, 0] = INF
    z[2, :] = -INF  # fully masked: zero gradient
    z[3, 4] = NAN  # a NaN row: NaN loss and gradient, or nothing if its weight is 0
    z[4, 1] = NAN
    target = rng.integers(0, c, n) if kind == "index" else rng.dirichlet(np.ones(c), n).astype(dtype)
    if kind == "index":
        target[0], target[2] = 2, 0
    weights = rng.uniform(0, 1, n)
    weights[[4, 5]] = 0  # zero weight: absent, even with a NaN
    weights[3] = 0 if weighted else weights[3]
    weights /= weights.sum()
    per_row, grad = sk.cross_entropy_with_grad(z, target, reduction="none", label_smoothing=smoothing)
    w = weights if weighted else np.full(n, 1.0 / n)
    with np.errstate(invalid="ignore"):
        expected_grad = np.where(w[:, None] == 0, 0, grad * w[:, None].astype(dtype))
        terms = np.where(w == 0, 0, per_row.astype(np.float64) * w)
    if weighted:  # the expected value without the infinite row
        terms[0] = 0
    for engine in ("kernel", "numpy"):
        out = z.copy()
        total = weighted_cross_entropy_rows(
            out, target, weights if weighted else None, label_smoothing=smoothing, engine=engine
        )
        assert_close(out, expected_grad.astype(dtype), rtol=8 * EPS[dtype], what=f"gradient ({engine})")
        # unweighted, the NaN rows make the sum NaN; weighted, they are absent and the -inf target makes it inf
        assert total == INF if weighted else np.isnan(total)
        rest = z[5:].copy()
        finite_total = weighted_cross_entropy_rows(rest, target[5:], w[5:], label_smoothing=smoothing, engine=engine)
        assert finite_total == pytest.approx(float(np.sum(terms[5:])), rel=8 * EPS[dtype])


def test_weighted_rows_validate_their_input():
    z = np.zeros((3, 4))
    with pytest.raises(TypeError, match="z must be a 2-D float32 or float64 ndarray"):
        weighted_cross_entropy_rows(np.zeros((3, 4), dtype=np.float16), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="z must be C-contiguous and writeable"):
        weighted_cross_entropy_rows(np.zeros((4, 3)).T, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 4\)"):
        weighted_cross_entropy_rows(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="target must be 3 class indices or class probabilities"):
        weighted_cross_entropy_rows(z, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(3,\)"):
        weighted_cross_entropy_rows(z, np.array([0, 1, 2]), np.ones(2))


# --------------------------------------------------------------------------- dispatch and threads


def test_auto_takes_the_kernel_for_large_arrays_and_the_numpy_path_for_small_ones():
    large = _logits((_engine.MIN_KERNEL_SIZE // 64, 64), np.float32, "large")
    small = large[:8]
    assert np.array_equal(sk.softmax(large), _softmax(large, -1, log=False, engine="kernel"))
    assert np.array_equal(sk.softmax(small), _softmax(small, -1, log=False, engine="numpy"))
    # the two paths differ in the last bits somewhere, so the equalities above tell them apart
    assert not np.array_equal(_softmax(large, -1, log=False, engine="numpy"), sk.softmax(large))


def test_threads_follow_the_problem_size_and_numba_setting_is_restored():
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    x = _logits((4, 10), np.float64, "threads")
    _softmax(x, -1, log=False, engine="kernel")  # below PARALLEL_MIN_SIZE: one thread, then restored
    assert numba.get_num_threads() == before
    numba.set_num_threads(1)  # a user's lower setting is kept
    try:
        big = _logits((_engine.PARALLEL_MIN_SIZE // 100, 100), np.float64, "threads-big")
        _softmax(big, -1, log=False, engine="kernel")
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
