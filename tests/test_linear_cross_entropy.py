"""softmaxkit.torch.linear_cross_entropy / linear_logsumexp / LinearCrossEntropyLoss (issue 6).

The oracle (``_reference.linear_cross_entropy_ref``) is the naive computation replayed in PyTorch
float64 with autograd: materialise the
logits ``x @ W.T + b``, softcap them, ``F.cross_entropy`` them, add the z-loss. Every option and
every chunking regime (one vocabulary block; the vocabulary tiled with an online log-sum-exp;
the weight-gradient pass split over tokens) is compared on values and the three gradients.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from _reference import assert_close, cast_value_and_grads, frobenius_error, linear_cross_entropy_ref, max_relative_error
from torch.utils._python_dispatch import TorchDispatchMode

from softmaxkit.torch._linear_ce import _autograd, _torch_engine
from softmaxkit.torch._linear_ce._autograd import select_engine
from softmaxkit.torch._linear_ce._plan import (
    DEFAULT_MAX_MEMORY,
    DEFAULT_MAX_MEMORY_CUDA,
    check_max_memory,
    make_plan,
    make_problem,
)
from softmaxkit.torch._linear_cross_entropy import LinearCrossEntropyLoss, linear_cross_entropy, linear_logsumexp

F64 = torch.float64


# --------------------------------------------------------------------------- inputs


def make(n, d, v, *, dtype=F64, seed=0, prob=False, ignore_every=5, batch=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    w = torch.randn(v, d, generator=g, dtype=F64) / d**0.5 * 2
    b = torch.randn(v, generator=g, dtype=F64) * 0.3
    cw = torch.rand(v, generator=g, dtype=F64) + 0.1
    if prob:
        t = torch.softmax(torch.randn(n, v, generator=g, dtype=F64) * 2, -1)
    else:
        t = torch.randint(0, v, (n,), generator=g)
        if ignore_every:
            t[::ignore_every] = -100
    gn = torch.rand(n, generator=g, dtype=F64) + 0.5
    return x.to(dtype), w.to(dtype), b.to(dtype), cw, t, gn


def tile_budget(v, rows, per_element=8):
    """A max_memory that forces the vocabulary to be tiled (fewer than 32 full rows fit)."""
    return rows * v * per_element // 3


# --------------------------------------------------------------------------- float64 parity


OPTIONS = list(
    itertools.product(
        ["mean", "sum", "none"],  # reduction
        [0.0, 0.15],  # label_smoothing
        [False, True],  # class weights
        [0.0, 1e-2],  # z_loss
        [None, 2.5],  # softcap
        [False, True],  # bias
        ["index", "prob"],  # target kind
    )
)


@pytest.mark.parametrize("budget", ["default", "tiled-vocab", "one-row"])
def test_float64_parity_every_option_small(budget):
    """Every combination of options, on every chunking regime, to 1e-10 relative."""
    n, d, v = 37, 13, 51
    max_memory = {"default": None, "tiled-vocab": tile_budget(v, 32), "one-row": 256 * 8}[budget]
    worst = 0.0
    # Every combination on the default plan; every third one (all options still covered) when tiled.
    for case, (reduction, ls, use_cw, zl, cap, use_b, kind) in enumerate(OPTIONS):
        if budget != "default" and case % 3:
            continue
        x, w, b, cw, t, gn = make(n, d, v, seed=case, prob=kind == "prob")
        b = b if use_b else None
        cw = cw if use_cw else None
        g = gn if reduction == "none" else torch.tensor(1.7, dtype=F64)
        opts = dict(reduction=reduction, label_smoothing=ls, class_weight=cw, z_loss=zl, softcap=cap)
        ref = cast_value_and_grads(
            lambda x_, w_, b_: linear_cross_entropy_ref(x_, w_, t, b_, **opts), (x, w, b), None, g
        )
        got = cast_value_and_grads(
            lambda x_, w_, b_: linear_cross_entropy(x_, w_, t, b_, max_memory=max_memory, **opts), (x, w, b), None, g
        )
        where = f"for {opts}, bias={use_b}, kind={kind}"
        for name, a, r in zip(("loss", "dx", "dw", "db"), got, ref):
            assert_close(a, r, rtol=1e-10, what=f"{name} {where}")
            if r is not None:  # an absent bias has no gradient on either side
                worst = max(worst, max_relative_error(a, r))
    assert worst > 0.0  # the comparison really ran on non-trivial numbers


@pytest.mark.parametrize(
    "reduction, ls, use_cw, zl, cap, kind, max_memory",
    [
        ("mean", 0.0, False, 0.0, None, "index", None),
        ("mean", 0.1, True, 1e-3, 30.0, "index", None),
        ("sum", 0.2, True, 0.0, None, "index", 20_000),
        ("none", 0.1, True, 1e-3, 15.0, "index", 20_000),
        ("none", 0.0, False, 0.0, None, "index", 3_000),
        ("mean", 0.1, True, 1e-3, 30.0, "prob", 50_000),
        ("none", 0.0, False, 0.0, None, "prob", None),
    ],
)
def test_float64_parity_odd_shapes(reduction, ls, use_cw, zl, cap, kind, max_memory):
    x, w, b, cw, t, gn = make(252, 123, 507, prob=kind == "prob", ignore_every=7)
    cw = cw if use_cw else None
    g = gn[: x.shape[0]] if reduction == "none" else torch.tensor(1.0, dtype=F64)
    opts = dict(reduction=reduction, label_smoothing=ls, class_weight=cw, z_loss=zl, softcap=cap)
    ref = cast_value_and_grads(lambda x_, w_, b_: linear_cross_entropy_ref(x_, w_, t, b_, **opts), (x, w, b), None, g)
    got = cast_value_and_grads(
        lambda x_, w_, b_: linear_cross_entropy(x_, w_, t, b_, max_memory=max_memory, **opts), (x, w, b), None, g
    )
    for name, a, r in zip(("loss", "dx", "dw", "db"), got, ref):
        assert_close(a, r, rtol=1e-10, what=name)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_float64_parity_aligned_tiles_with_remainders(reduction):
    """Rows in chunks of 32 + remainder, vocabulary in aligned 512-column tiles + remainder."""
    n, d, v, max_memory = 90, 11, 1030, 153_600
    plan = make_plan(n, v, d, F64, F64, kind="index", softcap=False, max_memory=max_memory)
    assert (plan.rows, plan.cols) == (32, 512) and n % plan.rows and v % plan.cols  # what is exercised
    x, w, b, cw, t, gn = make(n, d, v, ignore_every=7)
    g = gn if reduction == "none" else torch.tensor(1.0, dtype=F64)
    opts = dict(reduction=reduction, label_smoothing=0.1, class_weight=cw, z_loss=1e-3)
    ref = cast_value_and_grads(lambda x_, w_, b_: linear_cross_entropy_ref(x_, w_, t, b_, **opts), (x, w, b), None, g)
    got = cast_value_and_grads(
        lambda x_, w_, b_: linear_cross_entropy(x_, w_, t, b_, max_memory=max_memory, **opts), (x, w, b), None, g
    )
    for name, a, r in zip(("loss", "dx", "dw", "db"), got, ref):
        assert_close(a, r, rtol=1e-10, what=name)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ls", [0.0, 0.3])
def test_all_ignored_batch(reduction, ls):
    x, w, b, cw, t, gn = make(9, 5, 11)
    t[:] = -100
    g = gn if reduction == "none" else torch.tensor(1.0, dtype=F64)
    for class_weight in (None, cw):
        opts = dict(reduction=reduction, label_smoothing=ls, class_weight=class_weight, z_loss=1e-2)
        ref = cast_value_and_grads(
            lambda x_, w_, b_: linear_cross_entropy_ref(x_, w_, t, b_, **opts), (x, w, b), None, g
        )
        got = cast_value_and_grads(lambda x_, w_, b_: linear_cross_entropy(x_, w_, t, b_, **opts), (x, w, b), None, g)
        for name, a, r in zip(("loss", "dx", "dw", "db"), got, ref):
            assert_close(a, r, rtol=0, what=name)
        if reduction == "mean":
            assert torch.isnan(got[0])  # 0 / 0, as PyTorch
        assert all(torch.count_nonzero(grad) == 0 for grad in got[1:])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_single_token_and_unbatched(reduction):
    x, w, b, cw, t, gn = make(1, 7, 19, ignore_every=0)
    g = gn if reduction == "none" else torch.tensor(1.0, dtype=F64)
    opts = dict(reduction=reduction, label_smoothing=0.1, class_weight=cw, softcap=4.0)
    ref = cast_value_and_grads(lambda x_, w_, b_: linear_cross_entropy_ref(x_, w_, t, b_, **opts), (x, w, b), None, g)
    got = cast_value_and_grads(lambda x_, w_, b_: linear_cross_entropy(x_, w_, t, b_, **opts), (x, w, b), None, g)
    for name, a, r in zip(("loss", "dx", "dw", "db"), got, ref):
        assert_close(a, r, rtol=1e-12, what=name)
    # Unbatched: input (d,), target () -- the shape of F.cross_entropy's unbatched form.
    g0 = g[0] if reduction == "none" else g
    ref = cast_value_and_grads(
        lambda x_, w_, b_: linear_cross_entropy_ref(x_[0], w_, t[0], b_, **opts), (x, w, b), None, g0
    )
    got = cast_value_and_grads(
        lambda x_, w_, b_: linear_cross_entropy(x_[0], w_, t[0], b_, **opts), (x, w, b), None, g0
    )
    assert got[0].shape == ref[0].shape == ()
    for name, a, r in zip(("loss", "dx", "dw", "db"), got, ref):
        assert_close(a, r, rtol=1e-12, what=name)


def test_leading_batch_dimensions_and_empty_batch():
    x, w, b, cw, t, gn = make(24, 6, 17)
    x3, t3 = x.reshape(2, 3, 4, 6), t.reshape(2, 3, 4)
    got = linear_cross_entropy(x3, w, t3, b, reduction="none")
    assert got.shape == (2, 3, 4)
    assert_close(got.reshape(-1), linear_cross_entropy_ref(x, w, t, b, reduction="none"), rtol=1e-12)
    empty = linear_cross_entropy(x[:0], w, t[:0], b, reduction="none")
    assert empty.shape == (0,)
    assert torch.isnan(linear_cross_entropy(x[:0], w, t[:0], b))
    assert linear_cross_entropy(x[:0], w, t[:0], b, reduction="sum").item() == 0.0


def test_gradient_scale_and_second_backward():
    """``(3 * loss).backward()`` scales the precomputed gradients; retain_graph recomputes them."""
    x, w, b, cw, t, gn = make(40, 8, 29)
    ref = cast_value_and_grads(
        lambda x_, w_, b_: 3.0 * linear_cross_entropy_ref(x_, w_, t, b_, z_loss=1e-2), (x, w, b), None, 1.0
    )
    got = cast_value_and_grads(
        lambda x_, w_, b_: 3.0 * linear_cross_entropy(x_, w_, t, b_, z_loss=1e-2), (x, w, b), None, 1.0
    )
    for name, a, r in zip(("loss", "dx", "dw", "db"), got, ref):
        assert_close(a, r, rtol=1e-12, what=name)
    xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
    loss = linear_cross_entropy(xl, wl, t, label_smoothing=0.1)
    first = torch.autograd.grad(loss, (xl, wl), retain_graph=True)
    second = torch.autograd.grad(loss, (xl, wl))
    for name, a, r in zip(("dx", "dw"), second, first):
        assert_close(a, r, rtol=1e-13, what=name)


def test_only_some_inputs_require_grad():
    x, w, b, cw, t, gn = make(16, 5, 23)
    xl = x.clone().requires_grad_()
    linear_cross_entropy(xl, w, t, b, reduction="none").sum().backward()
    ref = x.clone().requires_grad_()
    linear_cross_entropy_ref(ref, w, t, b, reduction="none").sum().backward()
    assert_close(xl.grad, ref.grad, rtol=1e-12, what="dx")
    with torch.no_grad():
        assert_close(linear_cross_entropy(x, w, t, b), linear_cross_entropy_ref(x, w, t, b), rtol=1e-12)


# --------------------------------------------------------------------------- low precision


def _errors(fn, ref, x, w, b, g):
    """Errors of ``fn`` in x's dtype against ``ref``, the same computation in float64."""
    got = cast_value_and_grads(fn, (x, w, b), None, g)  # checks each gradient has its input's dtype
    return [frobenius_error(a, r) for a, r in zip(got, ref)], got


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(
    "opts, max_memory",
    [
        (dict(reduction="mean"), None),
        (dict(reduction="mean", label_smoothing=0.1, softcap=30.0), 40_000),
        (dict(reduction="none", label_smoothing=0.1), 3_000),
        (dict(reduction="sum", z_loss=1e-3), None),
    ],
)
def test_low_precision_no_worse_than_naive(dtype, opts, max_memory):
    """Value and gradients no worse than the naive computation in the same dtype (vs float64)."""
    x, w, b, cw, t, gn = make(252, 123, 507, dtype=dtype, ignore_every=7)
    g = gn if opts["reduction"] == "none" else torch.tensor(1.0, dtype=F64)

    def ours(x_, w_, b_):
        return linear_cross_entropy(x_, w_, t, b_, max_memory=max_memory, **opts)

    def theirs(x_, w_, b_):
        return linear_cross_entropy_ref(x_, w_, t, b_, **opts)

    ref = cast_value_and_grads(theirs, (x, w, b), F64, g)
    ours_err, got = _errors(ours, ref, x, w, b, g)
    naive_err, _ = _errors(theirs, ref, x, w, b, g)
    assert got[0].dtype == F64  # (converted) -- the raw loss dtype is checked below
    assert linear_cross_entropy(x, w, t, b, **opts).dtype == torch.float32
    slack = 1.0 if dtype != torch.float32 else 2.0  # float32: both at the rounding level
    for name, o, n in zip(("loss", "dx", "dw", "db"), ours_err, naive_err):
        assert o <= slack * n + 1e-7, f"{name}: ours {o:.2e} vs naive {n:.2e}"


# --------------------------------------------------------------------------- linear_logsumexp, module


@pytest.mark.parametrize("softcap, max_memory", [(None, None), (3.0, 2_000), (None, 300)])
def test_linear_logsumexp_value_and_gradients(softcap, max_memory):
    x, w, b, cw, t, gn = make(33, 9, 41)

    def ref(x_, w_, b_):
        z = F.linear(x_, w_, b_)
        return torch.logsumexp(softcap * torch.tanh(z / softcap) if softcap else z, -1)

    r = cast_value_and_grads(ref, (x, w, b), None, gn)
    got = cast_value_and_grads(
        lambda x_, w_, b_: linear_logsumexp(x_, w_, b_, softcap=softcap, max_memory=max_memory), (x, w, b), None, gn
    )
    for name, a, e in zip(("value", "dx", "dw", "db"), got, r):
        assert_close(a, e, rtol=1e-12, what=name)
    low = linear_logsumexp(x.to(torch.bfloat16), w.to(torch.bfloat16), b.to(torch.bfloat16))
    assert low.dtype == torch.float32 and low.shape == (33,)


def test_module_shell_matches_function():
    x, w, b, cw, t, gn = make(20, 6, 13)
    module = LinearCrossEntropyLoss(label_smoothing=0.2, class_weight=cw, z_loss=1e-3, softcap=5.0, reduction="sum")
    expected = linear_cross_entropy(
        x, w, t, b, label_smoothing=0.2, class_weight=cw, z_loss=1e-3, softcap=5.0, reduction="sum"
    )
    assert torch.equal(module(x, w, t, b), expected)
    assert "class_weight" in dict(module.named_buffers())


# --------------------------------------------------------------------------- memory is behaviour


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel())
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_never_an_n_by_v_tensor(dtype, reduction):
    """No op inside forward + backward returns a tensor of N*V elements (nor anywhere near it)."""
    n, d, v = 256, 8, 1024
    x, w, b, cw, t, gn = make(n, d, v, dtype=dtype)
    max_memory = 64 * 1024
    xl, wl, bl = x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    with _LargestTensor() as mode:
        loss = linear_cross_entropy(
            xl, wl, t, bl, reduction=reduction, label_smoothing=0.1, softcap=20.0, max_memory=max_memory
        )
        loss.sum().backward()
    assert mode.largest <= max(v * d, n * d, max_memory // 4), mode.largest
    assert mode.largest < n * v // 8


class _MatmulWork(TorchDispatchMode):
    """Counts the multiply-adds of the matrix products (mm, addmm) run inside the mode."""

    def __init__(self):
        super().__init__()
        self.multiply_adds = 0

    _OTHER_PRODUCTS: ClassVar[dict] = {
        torch.ops.aten.bmm,
        torch.ops.aten.baddbmm,
        torch.ops.aten.mv,
        torch.ops.aten.addmv,
        torch.ops.aten.addmv_,
        torch.ops.aten.matmul,
        torch.ops.aten.addbmm,
        torch.ops.aten.einsum,
    }

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            a, b = args[-2:] if packet is not torch.ops.aten.mm else args[:2]
            self.multiply_adds += a.shape[0] * a.shape[1] * b.shape[1]
        assert packet not in self._OTHER_PRODUCTS, f"a product this count does not see: {func}"
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype, products", [(torch.float32, 3), (torch.bfloat16, 4)])
@pytest.mark.parametrize("max_memory", [None, 20_000])
@pytest.mark.parametrize("input_grad", [True, False])
def test_number_of_products(dtype, products, max_memory, input_grad):
    """Forward + backward cost 3 N V d multiply-adds in float32 (as naive) and 4 in bfloat16.

    The work, not a timer: the products are nearly all of the time on the CPU. With a vocabulary
    tiled by a small ``max_memory`` the token pass recomputes each tile's logits once more. When
    the input needs no gradient, its product is skipped (and in bfloat16 the token pass only
    computes the statistics, so tiling costs nothing more there).
    """
    n, d, v = 256, 64, 2048
    x, w, b, cw, t, gn = make(n, d, v, dtype=dtype)
    xl, wl = x.requires_grad_(input_grad), w.requires_grad_()
    with _MatmulWork() as work:
        linear_cross_entropy(xl, wl, t, max_memory=max_memory).backward()
    tiled = max_memory is not None and (input_grad or dtype == torch.float32)
    assert work.multiply_adds == (products - (not input_grad) + tiled) * n * v * d


class _LargestScratch(TorchDispatchMode):
    """Records the bytes of the largest fresh tensor an op returns, except the given shapes.

    Views are not allocations and are skipped; so are the shapes of the inputs, their gradients
    and the per-token statistics, which every implementation holds whatever ``max_memory`` is.
    """

    def __init__(self, exempt_shapes):
        super().__init__()
        self.exempt = {tuple(shape) for shape in exempt_shapes}
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        given = {a.untyped_storage().data_ptr() for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)}
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(item, torch.Tensor) or tuple(item.shape) in self.exempt:
                continue
            if item.untyped_storage().data_ptr() not in given:  # a view or an out= argument is no allocation
                self.largest = max(self.largest, item.numel() * item.element_size())
        return out


@pytest.mark.parametrize(
    "n, d, v, dtype, max_memory, reduction",
    [
        (64, 512, 20_000, torch.bfloat16, 2**20, "mean"),  # vocabulary tiles: weight blocks go float32
        (64, 512, 20_000, torch.bfloat16, 2**20, "none"),
        (4096, 512, 1024, torch.bfloat16, 2**18, "mean"),  # weight pass over token chunks
        (64, 512, 20_000, torch.float32, 2**20, "mean"),
        (300, 64, 5000, torch.float64, 2**16, "none"),
        (1024, 1024, 128, torch.float32, 2**19, "mean"),  # one block of all rows, d >> V
    ],
)
def test_no_scratch_tensor_exceeds_max_memory(n, d, v, dtype, max_memory, reduction):
    """Every intermediate of forward + backward fits ``max_memory``, the d-wide helpers included."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, d, generator=g) * 0.5).to(dtype).requires_grad_()
    w = (torch.randn(v, d, generator=g) / d**0.5).to(dtype).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g)
    with _LargestScratch([(n, d), (v, d), (n,), (v,), ()]) as mode:
        linear_cross_entropy(x, w, t, reduction=reduction, max_memory=max_memory).sum().backward()
    assert 0 < mode.largest <= max_memory, (mode.largest, max_memory)


@pytest.mark.parametrize(
    "n, v, d, dtype, kind, softcap, max_memory",
    [
        (4096, 32768, 1024, torch.float32, "index", False, 32 * 2**20),
        (4096, 32768, 1024, torch.bfloat16, "index", True, 32 * 2**20),
        (37, 51, 13, torch.float64, "prob", True, 600),
        (5, 100_000, 64, torch.float32, "index", False, 10_000),
        (100_000, 7, 16, torch.float16, "prob", False, 1_000),
        (64, 20_000, 512, torch.bfloat16, "index", False, 2**20),
    ],
)
def test_plan_respects_max_memory(n, v, d, dtype, kind, softcap, max_memory):
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    plan = make_plan(n, v, d, dtype, acc, kind=kind, softcap=softcap, max_memory=max_memory)
    low = dtype != acc
    per = acc.itemsize * (1 + softcap + (kind == "prob")) + (dtype.itemsize if low else 0)
    row = d * acc.itemsize
    token_pass = plan.rows * plan.cols * per
    if plan.cols < v and low:  # vocabulary tiles: a weight block in float32
        token_pass += plan.cols * row
    weight_pass = plan.w_rows * plan.w_cols * per
    if plan.w_rows < n:  # token chunks: a token chunk in float32
        weight_pass += plan.w_rows * row
    assert token_pass <= max_memory
    assert not low or weight_pass <= max_memory
    assert 1 <= plan.rows <= n and 1 <= plan.cols <= v and 1 <= plan.w_rows <= n and 1 <= plan.w_cols <= v


@pytest.mark.parametrize(
    "n, v, dtype, max_memory, expected",
    [
        (8192, 65536, torch.bfloat16, 32 * 2**20, (64, 65536, 8192, 512)),  # 85 rows and 682 columns fit
        (8192, 65536, torch.float32, 3 * 2**20, (32, 24576, 8192, 96)),  # 24576 = 96 * 256; 96 < 256 kept
        (300, 5000, torch.float32, 2**20, (52, 5000, 300, 768)),  # 52 < 64 kept; 873 columns fit
    ],
)
def test_plan_chunks_are_aligned(n, v, dtype, max_memory, expected):
    """Chunks are rounded down to multiples of 64 rows / 256 columns (never up: the bound holds)."""
    plan = make_plan(n, v, 1, dtype, torch.float32, kind="index", softcap=False, max_memory=max_memory)
    assert (plan.rows, plan.cols, plan.w_rows, plan.w_cols) == expected


def test_default_max_memory_grows_with_the_weight():
    cpu = torch.device("cpu")

    def default(weight_bytes, n, v, device=cpu):
        return check_max_memory(None, device, weight_bytes=weight_bytes, logits_elements=n * v)

    assert default(1000, 10, 10) == DEFAULT_MAX_MEMORY
    assert default(65536 * 2048 * 4, 8192, 65536) == 65536 * 2048  # a quarter of the weight
    assert default(256_000 * 4096 * 4, 512, 256_000) == 512 * 256_000 // 2  # an eighth of the logits
    assert default(100_000 * 512 * 4, 16, 100_000) == DEFAULT_MAX_MEMORY  # the floor beats the cap
    assert default(10, 10, 10, torch.device("cuda")) == DEFAULT_MAX_MEMORY_CUDA
    assert check_max_memory(12345, cpu, weight_bytes=2**40, logits_elements=2**40) == 12345  # explicit wins
    # and linear_cross_entropy passes the real sizes: a 256 MiB weight (never touched) gets 64 MiB
    x, w, t = torch.empty(4096, 1024), torch.empty(65536, 1024), torch.zeros(4096, dtype=torch.int64)
    _, problem, _ = make_problem(
        x,
        w,
        None,
        t,
        ignore_index=-100,
        reduction="mean",
        label_smoothing=0.0,
        class_weight=None,
        z_loss=0.0,
        softcap=None,
        max_memory=None,
    )
    assert problem.max_memory == 65536 * 1024


# --------------------------------------------------------------------------- determinism, errors


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_autograd_sees_only_the_engine_interface(reduction, monkeypatch):
    """The engine is chosen once per pass; the implementations call nothing but its forward / gradients / logsumexp."""

    class Recording:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            def call(*args):
                self.calls.append(name)
                return getattr(_torch_engine, name)(*args)

            return call

    x, w, b, cw, t, gn = make(9, 4, 11, dtype=torch.bfloat16)
    options = dict(ignore_index=-100, reduction=reduction, label_smoothing=0.1, class_weight=cw, z_loss=1e-2)
    assert select_engine(x, "auto", make_problem(x, w, b, t, softcap=None, max_memory=None, **options)[1]) is (
        _torch_engine
    )  # CPU tensors: the PyTorch engine
    g = gn if reduction == "none" else torch.tensor(1.5)

    def through(engine):
        monkeypatch.setattr(_autograd, "select_engine", lambda *args: engine)
        leaves = [a.detach().clone().requires_grad_() for a in (x, w, b)]
        loss = linear_cross_entropy(leaves[0], leaves[1], t, leaves[2], **options)
        loss.backward(g.to(loss.dtype) if reduction == "none" else g)
        return [loss.detach()] + [a.grad for a in leaves]

    recording = Recording()
    assert all(torch.equal(r, o) for r, o in zip(through(recording), through(_torch_engine)))
    # Scalar reductions compute the gradients in the forward pass; "none" in backward.
    assert recording.calls == (["forward"] if reduction == "mean" else ["forward", "gradients"])

    recording = Recording()
    monkeypatch.setattr(_autograd, "select_engine", lambda *args: recording)
    leaf = x.detach().clone().requires_grad_()
    linear_logsumexp(leaf, w, b, softcap=2.0).sum().backward()
    assert recording.calls == ["logsumexp", "gradients"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic_bits(dtype):
    x, w, b, cw, t, gn = make(100, 16, 300, dtype=dtype)
    runs = [
        cast_value_and_grads(
            lambda x_, w_, b_: linear_cross_entropy(x_, w_, t, b_, label_smoothing=0.1, max_memory=20_000),
            (x, w, b),
            None,
            1.0,
        )
        for _ in range(2)
    ]
    for a, r in zip(*runs):
        assert torch.equal(a, r)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(reduction="avg"), "reduction must be one of"),
        (dict(label_smoothing=1.5), "label_smoothing must be in"),
        (dict(z_loss=-1.0), "z_loss must be >= 0"),
        (dict(softcap=0.0), "softcap must be > 0"),
        (dict(max_memory=10), "max_memory must be None or an integer"),
        (dict(backend="cuda"), "backend must be one of"),
        (dict(class_weight=torch.ones(3)), "class_weight must be None or a floating tensor of shape"),
    ],
)
def test_option_errors(kwargs, match):
    x, w, b, cw, t, gn = make(4, 3, 5)
    with pytest.raises((ValueError, TypeError), match=match):
        linear_cross_entropy(x, w, t, b, **kwargs)


def test_shape_and_target_errors():
    x, w, b, cw, t, gn = make(4, 3, 5, ignore_every=0)
    with pytest.raises(ValueError, match=r"weight must be a tensor of shape \(V, 3\)"):
        linear_cross_entropy(x, w[:, :2], t)
    with pytest.raises(ValueError, match="weight must have the input's dtype"):
        linear_cross_entropy(x, w.float(), t)
    with pytest.raises(ValueError, match=r"bias must be None or a tensor of shape \(5,\)"):
        linear_cross_entropy(x, w, t, b[:4])
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 5\)"):
        linear_cross_entropy(x, w, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(ValueError, match=r"got -1 at position \(1, 0\)$"):  # the position in the target's shape
        linear_cross_entropy(x.reshape(2, 2, 3), w, torch.tensor([[0, 1], [-1, 2]]))
    with pytest.raises(ValueError, match="target must be class indices of shape"):
        linear_cross_entropy(x, w, t[:3])
    with pytest.raises(ValueError, match="target must not require grad"):
        linear_cross_entropy(x, w, torch.rand(4, 5, dtype=F64, requires_grad=True))
    with pytest.raises(ValueError, match="input must be a floating tensor"):
        linear_cross_entropy(torch.ones(4, 3, dtype=torch.int64), w, t)
