"""softmaxkit.torch as a PyTorch user expects it: autocast dtypes, positional weight, dtype=, reprs, __all__."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

import softmaxkit.torch as skt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- autocast


def _bf16_logits(n=64, c=33):
    return (3 * torch.randn(n, c, generator=_gen())).bfloat16().requires_grad_()


LOSSES = {
    "cross_entropy": (skt.cross_entropy, F.cross_entropy, {"label_smoothing": 0.1}),
    "nll_loss": (lambda z, t, **kw: skt.nll_loss(z, t), lambda z, t, **kw: F.nll_loss(z, t), {}),
}


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_losses_under_autocast_are_float32_as_torch(name, low):
    ours_fn, torch_fn, kw = LOSSES[name]
    z = _bf16_logits().detach().to(low).requires_grad_()
    t = torch.randint(0, 33, (64,), generator=_gen(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = ours_fn(z, t, **kw), torch_fn(z, t, **kw)
    assert ours.dtype == theirs.dtype == torch.float32
    exact = torch_fn(z.double(), t, **kw)
    assert abs(ours.double() - exact) / exact < 1e-6  # the bfloat16 loss was off by ~1e-3
    assert abs(theirs.double() - exact) / exact < 1e-6
    ours.backward()
    assert z.grad.dtype == low


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda z: skt.softmax(z, 1), lambda z: F.softmax(z, 1)),
        (lambda z: skt.log_softmax(z, 1), lambda z: F.log_softmax(z, 1)),
        (lambda z: skt.logsumexp(z, 1), lambda z: torch.logsumexp(z, 1)),
    ],
)
def test_row_ops_under_autocast_have_torchs_dtype(ours, theirs):
    z = _bf16_logits().detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours(z).dtype == theirs(z).dtype
        assert ours(z.float()).dtype == theirs(z.float()).dtype == torch.float32  # float32 input is not cast down


def test_linear_cross_entropy_under_autocast_as_torch():
    """Under autocast the product is bfloat16 (as F.linear's), the loss float32, the weight's gradient float32."""
    g = _gen(2)
    x = torch.randn(40, 16, generator=g, requires_grad=True)
    w = (torch.randn(300, 16, generator=g) / 4).requires_grad_()
    t = torch.randint(0, 300, (40,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = skt.linear_cross_entropy(x, w, t)
        reference = F.cross_entropy(F.linear(x, w), t)
    assert loss.dtype == reference.dtype == torch.float32
    assert abs(loss - reference) / reference < 2e-3  # bfloat16 logits: both round them, maybe differently
    exact = F.cross_entropy(x.double() @ w.double().T, t)
    assert abs(loss.double() - exact) / exact < 1e-2
    loss.backward()
    assert x.grad.dtype == w.grad.dtype == torch.float32


def test_linear_cross_entropy_low_precision_input_with_a_float32_weight():
    """Mixed precision's master weights: the product in the input's dtype, float32 loss, gradients in each dtype."""
    g = _gen(3)
    x = torch.randn(40, 16, generator=g).bfloat16().requires_grad_()
    w = (torch.randn(300, 16, generator=g) / 4).requires_grad_()
    b = torch.randn(300, generator=g).requires_grad_()
    t = torch.randint(0, 300, (40,), generator=g)
    loss = skt.linear_cross_entropy(x, w, t, b)
    assert loss.dtype == torch.float32
    same = skt.linear_cross_entropy(x, w.detach().bfloat16(), t, b.detach())  # the bias is added in float32
    torch.testing.assert_close(loss, same, rtol=1e-6, atol=0)  # the same computation as an all-bfloat16 call
    loss.backward()
    assert (x.grad.dtype, w.grad.dtype, b.grad.dtype) == (torch.bfloat16, torch.float32, torch.float32)
    reference = F.cross_entropy(F.linear(x.float(), w.bfloat16().float(), b), t)
    assert abs(loss - reference) / reference < 1e-2
    with pytest.raises(ValueError, match="weight must have the input's dtype"):
        skt.linear_cross_entropy(x.half(), w.bfloat16(), t)  # two low precisions: refused, as before


# --------------------------------------------------------------------------- signatures and reprs


def test_weight_is_positional_as_in_torch():
    z = torch.randn(5, 4, generator=_gen(4), dtype=torch.float64)
    t = torch.tensor([0, 3, 1, 2, 2])
    w = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(skt.cross_entropy(z, t, w), F.cross_entropy(z, t, w), rtol=1e-12, atol=0)
    torch.testing.assert_close(skt.nll_loss(z, t, w), F.nll_loss(z, t, w), rtol=1e-12, atol=0)
    torch.testing.assert_close(skt.CrossEntropyLoss(w)(z, t), torch.nn.CrossEntropyLoss(w)(z, t), rtol=1e-12, atol=0)
    torch.testing.assert_close(skt.NLLLoss(w)(z, t), torch.nn.NLLLoss(w)(z, t), rtol=1e-12, atol=0)
    assert inspect.signature(skt.cross_entropy).parameters["reduction"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("fn, torch_fn", [(skt.softmax, torch.softmax), (skt.log_softmax, torch.log_softmax)])
def test_dtype_argument(fn, torch_fn):
    z = torch.randn(3, 4, generator=_gen(5)).requires_grad_()
    ours = fn(z, 1, dtype=torch.float64)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, torch_fn(z, 1, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    ours.sum().backward()
    assert z.grad.dtype == torch.float32
    assert fn(z.double(), 1, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(TypeError, match=r"dtype must be None or a floating torch\.dtype, got torch\.int64"):
        fn(z, 1, dtype=torch.int64)


def test_module_reprs_show_their_options():
    assert repr(skt.LinearCrossEntropyLoss(z_loss=1e-4)) == "LinearCrossEntropyLoss(z_loss=0.0001)"
    assert repr(skt.LinearCrossEntropyLoss()) == "LinearCrossEntropyLoss()"
    shown = repr(skt.LinearCrossEntropyLoss(reduction="sum", softcap=30.0, class_weight=torch.ones(7)))
    assert shown == "LinearCrossEntropyLoss(reduction='sum', softcap=30.0, class_weight=<tensor of shape (7,)>)"
    assert "label_smoothing=0.1" in repr(skt.CrossEntropyLoss(label_smoothing=0.1))
    assert repr(skt.NLLLoss(reduction="sum")) == "NLLLoss(ignore_index=-100, reduction='sum')"
    assert repr(skt.LogSoftmax(0)) == "LogSoftmax(dim=0)"


def test_all_lists_every_public_name():
    public = {n for n, v in vars(skt).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert public == set(skt.__all__)
    assert "resolve_device" in skt.__all__
