"""Global normalisation: ``denominator=`` makes accumulated micro-batch gradients the global mean's, exactly.

The recipe of ``docs/torch.md`` ("Global normalisation"), checked in float64 to 1e-12: the
gradients summed over 4 micro-batches (and over 2 data-parallel gloo ranks, all-reduced with a sum)
equal the gradient of one ``reduction="mean"`` call on the whole global batch, for
``cross_entropy``, ``nll_loss`` and ``linear_cross_entropy`` with class weights, ignored tokens,
label smoothing, z-loss and probability targets. Then the checks of the argument, and
``torch.compile(fullgraph=True)`` / ``torch.func.grad`` with it.
"""

from __future__ import annotations

import pytest
import torch
from _local_ranks import run_ranks

import softmaxkit.torch as skt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO, RANKS, ROWS, D, V = 4, 2, 9, 5, 11


def global_batch():
    """Inputs of ``RANKS * MICRO`` micro-batches of ``ROWS`` rows each, float64 (uneven counts of kept rows)."""
    g = torch.Generator().manual_seed(13)
    n = RANKS * MICRO * ROWS
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    w = torch.randn(V, D, generator=g, dtype=torch.float64)
    t = torch.randint(0, V, (n,), generator=g)
    t[torch.rand(n, generator=g) < 0.3] = -100
    t[:ROWS] = -100  # one micro-batch with nothing kept: its local mean would be NaN
    probs = torch.softmax(torch.randn(n, V, generator=g, dtype=torch.float64), 1)
    class_weight = torch.rand(V, generator=g, dtype=torch.float64) + 0.5
    return x, w, t, probs, class_weight


def losses(x, w, t, probs, class_weight, den=None, z_den=None):
    """Every loss of the recipe, for one (micro-)batch; ``den`` / ``z_den``: None (local mean) or the global ones."""
    kept = dict(index=den and den["index"], weighted=den and den["weighted"], rows=den and den["rows"])
    logits = x @ w.T
    return [
        skt.cross_entropy(logits, t, class_weight, label_smoothing=0.1, denominator=kept["weighted"]),
        skt.cross_entropy(logits, probs, label_smoothing=0.1, denominator=kept["rows"]),
        skt.nll_loss(skt.log_softmax(logits, dim=1), t, denominator=kept["index"]),
        skt.linear_cross_entropy(x, w, t, label_smoothing=0.1, z_loss=1e-2, denominator=kept["index"]),
        skt.linear_cross_entropy(
            x,
            w,
            t,
            class_weight=class_weight,
            z_loss=1e-2,
            denominator=kept["weighted"],
            z_loss_denominator=kept["index"],
        ),
        skt.linear_cross_entropy(x, w, probs, class_weight=class_weight, z_loss=1e-2, denominator=kept["rows"]),
    ]


def denominators(t, class_weight):
    """The local sums that, summed over every micro-batch and rank, are the global mean's denominators."""
    valid = t != -100
    weighted = torch.where(valid, class_weight[t.clamp(min=0)], 0.0).sum()
    return dict(index=valid.sum().double(), weighted=weighted, rows=torch.tensor(float(t.numel()), dtype=torch.float64))


def gradients(x, w, loss):
    return torch.autograd.grad(loss, (x, w), retain_graph=True)  # the losses share the logits


def one_batch_gradients():
    """The reference: each loss's gradient (input, weight) as one mean over the whole global batch."""
    x, w, t, probs, class_weight = global_batch()
    x, w = x.requires_grad_(True), w.requires_grad_(True)
    return [gradients(x, w, loss) for loss in losses(x, w, t, probs, class_weight)]


def accumulated(rank: int, world: int, reduce):
    """Each loss's gradients summed over this rank's micro-batches, then ``reduce``d over ranks."""
    x_all, w0, t_all, p_all, class_weight = global_batch()
    per_rank = MICRO * ROWS * (RANKS // world)
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    x_mine, t_mine, p_mine = x_all[rows], t_all[rows], p_all[rows]
    # Step 1 of the recipe: the global denominators, before any backward (one all-reduce in all).
    local = denominators(t_mine, class_weight)
    den = {k: reduce(v.clone()) for k, v in local.items()}
    w = w0.clone().requires_grad_(True)
    grads = None
    dx = []
    for mb in range(per_rank // ROWS):
        r = slice(mb * ROWS, (mb + 1) * ROWS)
        x = x_mine[r].clone().requires_grad_(True)
        step = [gradients(x, w, loss) for loss in losses(x, w, t_mine[r], p_mine[r], class_weight, den)]
        dx.append([g[0] for g in step])
        dw = [g[1] for g in step]
        grads = dw if grads is None else [a + b for a, b in zip(grads, dw)]
    return [torch.cat([mb[k] for mb in dx]) for k in range(len(grads))], [reduce(g) for g in grads]


def test_micro_batches_with_the_global_denominator_equal_the_one_batch_gradient():
    """One process, all 8 micro-batches (no ranks): exactly the one-batch gradients."""
    want = one_batch_gradients()
    dx, dw = accumulated(0, 1, lambda t: t)
    for k, (want_dx, want_dw) in enumerate(want):
        torch.testing.assert_close(dx[k], want_dx, rtol=1e-12, atol=1e-14, msg=f"loss {k}: input gradient")
        torch.testing.assert_close(dw[k], want_dw, rtol=1e-12, atol=1e-14, msg=f"loss {k}: weight gradient")


def test_the_local_means_would_not():
    """Without the global denominator the accumulated gradient is not the global mean's (the bug this fixes)."""
    x, w, t, probs, class_weight = global_batch()
    want = one_batch_gradients()[3][1]
    w = w.requires_grad_(True)
    got = sum(
        torch.autograd.grad(skt.linear_cross_entropy(x[r], w, t[r], label_smoothing=0.1, z_loss=1e-2), w)[0]
        for r in (slice(k * ROWS, (k + 1) * ROWS) for k in range(1, RANKS * MICRO))  # the empty one is NaN
    ) / (RANKS * MICRO)
    assert (got - want).abs().max() > 1e-3


def data_parallel(*, rank, world, out):
    def reduce(t):
        torch.distributed.all_reduce(t)
        return t

    return accumulated(rank, world, reduce)


def test_four_micro_batches_on_two_ranks_equal_the_one_batch_gradient(tmp_path):
    want = one_batch_gradients()
    ranks = run_ranks("test_global_normalizer:data_parallel", RANKS, tmp_path)
    for rank, (dx, dw) in enumerate(ranks):
        rows = slice(rank * MICRO * ROWS, (rank + 1) * MICRO * ROWS)
        for k, (want_dx, want_dw) in enumerate(want):
            torch.testing.assert_close(dx[k], want_dx[rows], rtol=1e-12, atol=1e-14, msg=f"rank {rank}, loss {k}: dx")
            torch.testing.assert_close(dw[k], want_dw, rtol=1e-12, atol=1e-14, msg=f"rank {rank}, loss {k}: dw")


# --------------------------------------------------------------------------------------------
# The argument.
# --------------------------------------------------------------------------------------------


def _calls():
    x, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor([0, 4, -100, 2])
    return {
        "cross_entropy": lambda **kw: skt.cross_entropy(x @ w.T, t, **kw),
        "nll_loss": lambda **kw: skt.nll_loss(skt.log_softmax(x @ w.T, dim=1), t, **kw),
        "linear_cross_entropy": lambda **kw: skt.linear_cross_entropy(x, w, t, **kw),
    }


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss", "linear_cross_entropy"])
@pytest.mark.parametrize(
    "bad",
    [0, -1.0, float("inf"), float("nan"), True, "3", torch.ones(1), torch.tensor(0.0), torch.tensor(-2), 1j],
    ids=repr,
)
def test_bad_denominators_are_refused(name, bad):
    with pytest.raises(ValueError, match=r"^denominator must be (a )?positive"):
        _calls()[name](denominator=bad)


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss", "linear_cross_entropy"])
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_a_denominator_needs_reduction_mean(name, reduction):
    with pytest.raises(ValueError, match=r"^denominator must be None unless reduction='mean', got 2.0 with reduction="):
        _calls()[name](denominator=2.0, reduction=reduction)


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss", "linear_cross_entropy"])
def test_the_local_denominator_given_explicitly_changes_nothing(name):
    call = _calls()[name]
    torch.testing.assert_close(call(denominator=torch.tensor(3)), call(), rtol=1e-15, atol=0)
    torch.testing.assert_close(call(denominator=6.0), call() / 2, rtol=1e-15, atol=0)


def test_linear_z_loss_with_class_weights_needs_its_own_denominator():
    x, w, t = torch.randn(4, 3), torch.randn(5, 3), torch.tensor([0, 4, -100, 2])
    kwargs = dict(class_weight=torch.rand(5), z_loss=1e-3, denominator=2.0)
    with pytest.raises(
        ValueError, match=r"^z_loss_denominator must be given with denominator, class_weight and z_loss"
    ):
        skt.linear_cross_entropy(x, w, t, **kwargs)
    skt.linear_cross_entropy(x, w, t, z_loss_denominator=3, **kwargs)  # given: accepted
    skt.linear_cross_entropy(x, w, t, class_weight=kwargs["class_weight"], denominator=2.0)  # no z-loss: accepted


def test_no_gradient_flows_to_a_denominator_tensor():
    x = torch.randn(4, 5, requires_grad=True)
    den = torch.tensor(7.0, requires_grad=True)
    skt.cross_entropy(x, torch.tensor([0, 1, 2, 3]), denominator=den).backward()
    assert x.grad is not None and den.grad is None


def test_fullgraph_compile_with_a_tensor_denominator_equals_eager():
    x, w = torch.randn(6, 3), torch.randn(7, 3, requires_grad=True)
    t = torch.tensor([0, 6, -100, 2, 2, 5])

    def step(x, w, t, den):
        return skt.linear_cross_entropy(x, w, t, denominator=den, z_loss=1e-3) + skt.cross_entropy(
            x @ w.T, t, denominator=den
        )

    den = torch.tensor(11.0)
    want = step(x, w, t, den)
    (want_grad,) = torch.autograd.grad(want, w)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(x, w, t, den)
    (got_grad,) = torch.autograd.grad(got, w)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)
    with pytest.raises(RuntimeError, match="denominator must be positive and finite"):
        compiled(x, w, t, torch.tensor(0.0))


def test_func_grad_with_a_denominator_equals_backward():
    x, w = torch.randn(6, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    t = torch.tensor([0, 6, -100, 2, 2, 5])
    den = torch.tensor(9.0, dtype=torch.float64)

    def loss(w):
        return skt.linear_cross_entropy(x, w, t, denominator=den) + skt.cross_entropy(x @ w.T, t, denominator=den)

    got = torch.func.grad(loss)(w)
    w = w.requires_grad_(True)
    (want,) = torch.autograd.grad(loss(w), w)
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-15)
