"""Autograd as PyTorch's tools use it: double backward, reentrant backward, torch.func transforms.

* ``gradcheck`` (whose reentrancy check runs backward twice over one graph) for every reduction of
  the losses and the fused linear cross-entropy; ``gradgradcheck`` for the row ops and the losses.
* ``linear_cross_entropy`` / ``linear_logsumexp`` under ``create_graph=True`` (a gradient penalty) or
  nested ``torch.func`` gradients raise at once: their backward is not differentiable, and the
  gradient they used to return silently made the penalty a constant.
* ``torch.func``: per-sample gradients by ``vmap(grad(...))`` equal a loop of single-sample
  gradients; ``jacrev`` equals ``torch.autograd.functional.jacobian``; ``grad`` of the fused loss
  equals its ``backward``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call, grad, jacrev, vmap

import softmaxkit.torch as skt

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REDUCTIONS = ["mean", "sum", "none"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _logits(n=4, c=5, seed=0):
    return torch.randn(n, c, generator=_gen(seed), dtype=torch.float64, requires_grad=True)


def _linear_problem(n=6, d=3, v=7, seed=0):
    g = _gen(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, v, (n,), generator=g)
    t[1] = -100
    return x, w, b, t


# --------------------------------------------------------------------------- reentrant backward


LOSS_OPTIONS = {
    "plain": {},
    "weighted-smoothed": {
        "weight": torch.tensor([0.5, 2.0, 1.0, 0.0, 1.5], dtype=torch.float64),
        "label_smoothing": 0.2,
    },
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", list(LOSS_OPTIONS), ids=str)
def test_losses_gradcheck_every_reduction(reduction, options):
    x = _logits()
    t = torch.tensor([0, 4, -100, 2])
    kw = LOSS_OPTIONS[options]
    assert gradcheck(lambda a: skt.cross_entropy(a, t, reduction=reduction, **kw), (x,))
    nll_kw = {k: v for k, v in kw.items() if k != "label_smoothing"}
    assert gradcheck(lambda a: skt.nll_loss(a, t, reduction=reduction, **nll_kw), (x,))
    probs = torch.softmax(torch.randn(4, 5, generator=_gen(3), dtype=torch.float64), 1)
    assert gradcheck(lambda a: skt.cross_entropy(a, probs, reduction=reduction, **kw), (x,))


LINEAR_OPTIONS = {
    "plain": {},
    "smoothed-zloss-softcap": {"label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 3.0},
    "tiled": {"max_memory": 64, "class_weight": torch.linspace(0.5, 2.0, 7, dtype=torch.float64)},
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", list(LINEAR_OPTIONS), ids=str)
def test_linear_cross_entropy_gradcheck_every_reduction(reduction, options):
    x, w, b, t = _linear_problem()
    kw = LINEAR_OPTIONS[options]
    assert gradcheck(lambda x_, w_, b_: skt.linear_cross_entropy(x_, w_, t, b_, reduction=reduction, **kw), (x, w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_cross_entropy_backward_twice_gives_the_same_bits(dtype, reduction):
    """The first backward hands over the gradients computed in forward; a second one recomputes them, bit for bit."""
    x, w, b, t = (
        a.detach().to(dtype).requires_grad_() if a.is_floating_point() else a for a in _linear_problem(40, 8, 300)
    )
    loss = skt.linear_cross_entropy(x, w, t, b, reduction=reduction, label_smoothing=0.1, max_memory=4096)
    first = torch.autograd.grad(loss, (x, w, b), retain_graph=True)
    second = torch.autograd.grad(loss, (x, w, b), retain_graph=True)
    third = torch.autograd.grad(loss, (x, w, b), torch.tensor(2.0))
    for a, s, t3 in zip(first, second, third):
        assert torch.equal(a, s)
        assert torch.allclose(t3.float(), 2 * a.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=0)


# --------------------------------------------------------------------------- double backward


ROW_OPS = {
    "softmax": lambda a: skt.softmax(a, 1),
    "log_softmax": lambda a: skt.log_softmax(a, 1),
    "logsumexp": lambda a: skt.logsumexp(a, 1),
    "logsumexp-all": lambda a: skt.logsumexp(a, None),
    "cross_entropy": lambda a: skt.cross_entropy(a, torch.tensor([0, 4, -100, 2]), label_smoothing=0.1),
    "cross_entropy-probs": lambda a: skt.cross_entropy(a, torch.full((4, 5), 0.2, dtype=torch.float64)),
    "nll_loss": lambda a: skt.nll_loss(a, torch.tensor([0, 4, -100, 2]), reduction="sum"),
}


@pytest.mark.parametrize("name", list(ROW_OPS))
def test_double_backward_of_the_row_ops(name):
    x = _logits()
    assert gradgradcheck(ROW_OPS[name], (x,))


def test_double_backward_matches_the_naive_gradient_penalty():
    """``loss + ||dL/dx||^2`` differentiated through our backward equals the same through PyTorch's."""
    t = torch.tensor([0, 4, 1, 2])

    def objective(ce, x):
        (gx,) = torch.autograd.grad(ce(x), x, create_graph=True)
        return ce(x) + 10 * gx.pow(2).sum()

    ours = _logits()
    objective(lambda a: skt.cross_entropy(skt.log_softmax(a, 1) * 1.5, t), ours).backward()
    theirs = _logits()
    objective(lambda a: F.cross_entropy(F.log_softmax(a, 1) * 1.5, t), theirs).backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_linear_cross_entropy_refuses_create_graph(reduction):
    """The issue's gradient penalty: an immediate error, not a gradient without grad_fn."""
    x, w, b, t = _linear_problem()
    loss = skt.linear_cross_entropy(x, w, t, b, reduction=reduction).sum()
    with pytest.raises(RuntimeError, match="linear_cross_entropy does not support double backward"):
        torch.autograd.grad(loss, (x, w), create_graph=True)
    lse = skt.linear_logsumexp(x, w, b).sum()
    with pytest.raises(RuntimeError, match="linear_logsumexp does not support double backward"):
        torch.autograd.grad(lse, x, create_graph=True)


def test_linear_cross_entropy_refuses_nested_torch_func_gradients():
    x, w, _, t = _linear_problem()
    loss = lambda x_: skt.linear_cross_entropy(x_, w.detach(), t)
    with pytest.raises(RuntimeError, match="does not support double backward"):
        grad(lambda x_: grad(loss)(x_).sum())(x.detach())


# --------------------------------------------------------------------------- torch.func


class _Tiny(torch.nn.Module):
    """A linear layer, then one of the ops reduced to a scalar per call."""

    def __init__(self, head):
        super().__init__()
        self.lin = torch.nn.Linear(3, 5, dtype=torch.float64)
        self.head = head

    def forward(self, x, t):
        return self.head(self.lin(x), t)


HEADS = {
    "softmax": lambda z, t: (skt.softmax(z, 1) * torch.arange(5.0, dtype=z.dtype)).sum(),
    "log_softmax": lambda z, t: -skt.log_softmax(z, 1).gather(1, t[:, None].clamp(min=0)).sum(),
    "logsumexp": lambda z, t: skt.logsumexp(z, 1).sum(),
    "cross_entropy": lambda z, t: skt.cross_entropy(
        z, t, torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=z.dtype), label_smoothing=0.1
    ),
    "cross_entropy-probs": lambda z, t: skt.cross_entropy(z, torch.softmax(z.detach() * 0 + t[:, None].to(z.dtype), 1)),
    "nll_loss": lambda z, t: skt.nll_loss(skt.log_softmax(z, 1), t),
}


@pytest.mark.parametrize("name", list(HEADS))
def test_per_sample_gradients_equal_a_loop(name):
    torch.manual_seed(0)
    model = _Tiny(HEADS[name])
    x = torch.randn(6, 3, generator=_gen(1), dtype=torch.float64)
    t = torch.tensor([0, 4, 1, 2, 3, 0])
    params = {k: p.detach() for k, p in model.named_parameters()}

    def one(p, xi, ti):
        return functional_call(model, p, (xi[None], ti[None]))

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))(params, x, t)
    for i in range(len(x)):
        model.zero_grad()
        model(x[i : i + 1], t[i : i + 1]).backward()
        for k, p in model.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "cross_entropy", "nll_loss"])
def test_jacrev_equals_the_autograd_jacobian(name):
    fn = ROW_OPS[name]
    x = _logits().detach()
    torch.testing.assert_close(jacrev(fn)(x), torch.autograd.functional.jacobian(fn, x), rtol=1e-12, atol=1e-14)


def test_hessian_of_log_softmax_by_nested_jacrev():
    """Second derivatives through torch.func (double backward inside the transforms) equal PyTorch's."""
    x = _logits(2, 4).detach()
    ours = jacrev(jacrev(lambda a: skt.log_softmax(a, 1)[:, 0].sum()))(x)
    theirs = jacrev(jacrev(lambda a: F.log_softmax(a, 1)[:, 0].sum()))(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_vmap_of_the_row_ops_equals_the_batched_call():
    x = torch.randn(3, 4, 5, generator=_gen(2), dtype=torch.float64)
    x[1, 2] = float("-inf")  # a fully masked row: the general (branch-free) path under vmap
    x[2, 0, 1] = float("inf")
    torch.testing.assert_close(vmap(lambda a: skt.softmax(a, 1))(x), skt.softmax(x, 2), equal_nan=True)
    torch.testing.assert_close(vmap(lambda a: skt.log_softmax(a, 1))(x), skt.log_softmax(x, 2), equal_nan=True)
    torch.testing.assert_close(vmap(lambda a: skt.logsumexp(a, 1))(x), skt.logsumexp(x, 2), equal_nan=True)


def test_vmap_checks_the_class_indices_of_every_sample():
    z = torch.randn(3, 2, 5, dtype=torch.float64)
    t = torch.tensor([[0, 1], [2, 3], [4, 7]])
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 5\) or ignore_index=-100, got 7"):
        vmap(lambda a, b: skt.cross_entropy(a, b))(z, t)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_func_grad_of_linear_cross_entropy_equals_backward(reduction):
    x, w, b, t = _linear_problem()

    def loss(params):
        return skt.linear_cross_entropy(params[0], params[1], t, params[2], reduction=reduction, z_loss=1e-3).sum()

    got = grad(loss)([a.detach() for a in (x, w, b)])
    loss([x, w, b]).backward()
    for g, a in zip(got, (x, w, b)):
        torch.testing.assert_close(g, a.grad, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "cross_entropy"])
def test_fused_kernels_only_where_values_can_be_read(monkeypatch, name):
    # Eager calls take PyTorch's fused kernels for the bulk of the rows (and so does a Function's
    # forward under torch.func.grad, which sees plain tensors); under vmap the branch-free exact forms
    # run, as the fused path's fix-ups gather a data-dependent subset of rows. Same gradients.
    calls = []
    for kernel in ("softmax", "log_softmax", "_softmax_backward_data", "_log_softmax_backward_data"):
        original = getattr(torch, kernel)
        monkeypatch.setattr(torch, kernel, lambda *a, _f=original, _k=kernel, **kw: calls.append(_k) or _f(*a, **kw))
    g = _gen(3)
    x = torch.randn(16, 10, generator=g)
    target = torch.randint(0, 10, (16,), generator=g)
    weights = torch.randn(16, 10, generator=g)

    def loss(x, target, weights):
        if name == "cross_entropy":
            return skt.cross_entropy(x, target, reduction="sum")
        return (getattr(skt, name)(x, dim=-1) * weights).sum()

    eager_x = x.clone().requires_grad_()
    loss(eager_x, target, weights).backward()
    assert calls, "the eager call did not take the fused kernels"
    calls.clear()
    per_sample = vmap(grad(loss))(x.unsqueeze(1), target.unsqueeze(1), weights.unsqueeze(1)).squeeze(1)
    assert calls == []
    torch.testing.assert_close(per_sample, eager_x.grad, rtol=1e-5, atol=1e-6)
