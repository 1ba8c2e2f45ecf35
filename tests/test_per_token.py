"""linear_token_stats: per-token log p(target), entropy and log-sum-exp against the materialised float64 computation."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import softmaxkit.torch as skt

pytestmark = pytest.mark.usefixtures("one_torch_thread")
F64 = torch.float64


def _problem(n=12, d=5, v=37, *, dtype=F64, seed=0, batch=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64) * 1.5
    w = torch.randn(v, d, generator=g, dtype=F64)
    b = torch.randn(v, generator=g, dtype=F64) * 0.3
    t = torch.randint(0, v, (n,), generator=g)
    t[::5] = -100
    if batch is not None:
        x, t = x.reshape(*batch, d), t.reshape(batch)
    return x.to(dtype), w.to(dtype), b.to(dtype), t


def naive(x, w, t, b=None, *, temperature=1.0, softcap=None, ignore_index=-100):
    """The materialised computation (in the inputs' dtype; float64 for the oracle)."""
    z = F.linear(x, w, b)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    z = z / temperature
    logp = F.log_softmax(z, -1)
    keep = t != ignore_index
    picked = logp.gather(-1, torch.where(keep, t, 0)[..., None])[..., 0]
    logprob = torch.where(keep, picked, 0.0)
    entropy = -(logp.exp() * logp).sum(-1)
    return logprob, entropy, torch.logsumexp(z, -1)


OPTIONS = {
    "plain": {},
    "temperature": {"temperature": 0.7},
    "hot-softcap-bias": {"temperature": 2.5, "softcap": 3.0, "bias": True},
    "tiled": {"temperature": 1.3, "max_memory": 64, "bias": True},
    "batched": {"batch": (3, 4), "temperature": 0.9},
    "ignore_index": {"ignore_index": 3},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_equals_the_naive_float64_computation(name):
    opts = dict(OPTIONS[name])
    x, w, b, t = _problem(batch=opts.pop("batch", None))
    bias = b.requires_grad_() if opts.pop("bias", False) else None
    if "ignore_index" in opts:
        t = torch.where(t == -100, opts["ignore_index"], t)
    x.requires_grad_(), w.requires_grad_()
    stats = skt.linear_token_stats(x, w, t, bias, **opts)
    ref_opts = {k: v for k, v in opts.items() if k != "max_memory"}
    want = naive(x, w, t, bias, **ref_opts)
    assert isinstance(stats, skt.TokenStats)
    for got, ref in zip(stats, want):
        assert got.shape == t.shape and got.dtype == F64
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-13)
    assert stats.entropy.grad_fn is None
    # Gradients of a weighted mix of the differentiable outputs.
    g = torch.Generator().manual_seed(1)
    c1, c2 = torch.randn(t.shape, generator=g, dtype=F64), torch.randn(t.shape, generator=g, dtype=F64)
    leaves = [a for a in (x, w, bias) if a is not None]
    ours = torch.autograd.grad((c1 * stats.logprob + c2 * stats.lse).sum(), leaves)
    theirs = torch.autograd.grad((c1 * want[0] + c2 * want[2]).sum(), leaves)
    for a, r in zip(ours, theirs):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
def test_low_precision_against_float64(dtype, rtol):
    x, w, b, t = _problem(64, 16, 300, dtype=dtype)
    stats = skt.linear_token_stats(x, w, t, b, temperature=0.8)
    # The oracle of the same (rounded) inputs; bfloat16 logits are rounded once more by the product.
    want = naive(x.double(), w.double(), t, b.double(), temperature=0.8)
    for got, ref in zip(stats, want):
        assert got.dtype == torch.float32
        scale = ref.abs().clamp(min=1.0)
        assert ((got.double() - ref).abs() / scale).max() < rtol


def test_confident_tokens_keep_relative_accuracy():
    """Entropy e^-g (g + 1) of a token whose top probability rounds to 1: the naive float64 sum loses it."""
    gaps = torch.tensor([5.0, 20.0, 40.0, 80.0], dtype=F64)
    x = torch.stack([gaps, torch.zeros_like(gaps)], 1)  # logits (g, 0) with w = identity
    w = torch.eye(2, dtype=F64)
    stats = skt.linear_token_stats(x, w, torch.ones(4, dtype=torch.int64))
    s = torch.exp(-gaps)
    exact_entropy = torch.log1p(s) + gaps * s / (1 + s)
    torch.testing.assert_close(stats.entropy, exact_entropy, rtol=1e-14, atol=0)
    torch.testing.assert_close(stats.logprob, -(gaps + torch.log1p(s)), rtol=1e-15, atol=0)
    naive_entropy = naive(x, w, torch.ones(4, dtype=torch.int64))[1]
    assert (naive_entropy[-1] - exact_entropy[-1]).abs() / exact_entropy[-1] > 1e-3  # the cancelling form


def test_ignored_tokens_have_zero_logprob_and_no_gradient():
    x, w, _, t = _problem()
    x.requires_grad_()
    stats = skt.linear_token_stats(x, w, t)
    ignored = t == -100
    assert torch.equal(stats.logprob[ignored], torch.zeros(int(ignored.sum()), dtype=F64))
    (gx,) = torch.autograd.grad(stats.logprob.sum(), x)
    assert torch.equal(gx[ignored], torch.zeros_like(gx[ignored]))
    assert torch.isfinite(stats.entropy[ignored]).all() and (stats.entropy[ignored] > 0).all()


def test_z_loss_for_logging_from_the_same_pass():
    """The documented identity: z_loss * mean(lse^2) over kept tokens is linear_cross_entropy's z-loss term."""
    x, w, b, t = _problem()
    stats = skt.linear_token_stats(x, w, t, b)
    kept = t != -100
    logged = 1e-3 * (stats.lse[kept] ** 2).mean()
    with_z = skt.linear_cross_entropy(x, w, t, b, z_loss=1e-3)
    without = skt.linear_cross_entropy(x, w, t, b)
    torch.testing.assert_close(with_z - without, logged, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(-stats.logprob[kept].mean(), without, rtol=1e-12, atol=0)


class _LargestTensor(TorchDispatchMode):
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
def test_never_an_n_by_v_tensor(dtype):
    n, d, v = 256, 8, 1024
    x, w, b, t = (a.requires_grad_() if a.is_floating_point() else a for a in _problem(n, d, v, dtype=dtype))
    with _LargestTensor() as mode:
        stats = skt.linear_token_stats(x, w, t, b, temperature=0.9, max_memory=64 * 1024)
        (stats.logprob.sum() + stats.lse.sum()).backward()
    assert mode.largest <= n * v // 8, mode.largest


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature must be > 0.0, got 0.0"),
        ({"temperature": float("nan")}, "temperature must be a finite real number"),
        ({"temperature": None}, "temperature must be a finite real number, got None"),
        ({"softcap": -1.0}, "softcap must be > 0.0"),
        ({"backend": "cuda"}, "backend must be one of"),
    ],
)
def test_bad_options(kwargs, message):
    x, w, _, t = _problem()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        skt.linear_token_stats(x, w, t, **kwargs)


def test_probability_targets_are_refused():
    x, w, _, _ = _problem()
    with pytest.raises(ValueError, match="target must hold integer class indices"):
        skt.linear_token_stats(x, w, torch.full((12, 37), 1 / 37, dtype=F64))


def test_every_combination_of_temperature_and_softcap_small():
    x, w, b, t = _problem(6, 3, 11)
    for temperature, softcap in itertools.product([0.5, 1.0, 4.0], [None, 2.0]):
        got = skt.linear_token_stats(x, w, t, b, temperature=temperature, softcap=softcap)
        for a, r in zip(got, naive(x, w, t, b, temperature=temperature, softcap=softcap)):
            torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-13)
