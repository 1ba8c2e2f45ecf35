"""vocab_parallel_linear_cross_entropy on 2 and 3 local gloo ranks equals the single-process float64 op.

Every rank builds the same full problem from a seed and keeps only its shard of the projection
(uneven shards: ``SHARDS``); the parent compares each rank's loss, input gradient and weight / bias
shard gradients with :func:`softmaxkit.torch.linear_cross_entropy` on the whole vocabulary (itself
checked against the materialised float64 oracle in ``test_linear_cross_entropy.py``), for every
option, to 1e-10. The memory test measures, per rank, the largest tensor any op allocates (a
``TorchDispatchMode`` sees every op's outputs) and the peak resident bytes of a forward + backward
(``VmHWM``, as ``test_linear_ce_memory.py``), against the N x V logits and the whole weight.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _local_ranks import RankFailure, run_ranks

import softmaxkit.torch as skt

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

N, D, V = 24, 6, 17
#: Rows of the projection per rank: uneven, every rank at least one.
SHARDS = {1: (17,), 2: (5, 12), 3: (3, 9, 5)}

#: One entry per option (and the combinations that share code paths); "scale" makes confident tokens.
CASES = {
    "plain": dict(),
    "bias-ignore-smoothing": dict(bias=True, ignored=True, label_smoothing=0.1),
    "class-weight-smoothing-zloss": dict(class_weight=True, label_smoothing=0.2, z_loss=1e-2, ignored=True),
    "softcap-zloss-sum": dict(softcap=3.0, z_loss=1e-3, reduction="sum", bias=True),
    "none-class-weight": dict(reduction="none", class_weight=True, ignored=True, label_smoothing=0.1),
    "probabilities": dict(probabilities=True, bias=True, label_smoothing=0.1, class_weight=True, z_loss=1e-2),
    "probabilities-none-softcap": dict(probabilities=True, reduction="none", softcap=2.0),
    "confident": dict(scale=25.0, label_smoothing=0.1, class_weight=True),
    "confident-probabilities": dict(scale=25.0, probabilities=True, sharp=True),
    "denominators": dict(class_weight=True, z_loss=1e-2, denominator=37.5, z_loss_denominator=12.0, ignored=True),
    "tiny-max-memory": dict(max_memory=256, label_smoothing=0.1, class_weight=True, bias=True),
    "batch-shape-positive-ignore-index": dict(batch=(4, 6), ignore_index=3),
}


def case_inputs(name: str) -> dict:
    """The full problem of a case, float64, the same in every process."""
    c = CASES[name]
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.randn(V, D, generator=g, dtype=torch.float64) * c.get("scale", 1.0) / math.sqrt(D)
    out = dict(input=x, weight=w, bias=torch.randn(V, generator=g, dtype=torch.float64) if c.get("bias") else None)
    if c.get("probabilities"):
        logits = torch.randn(N, V, generator=g, dtype=torch.float64) * (30.0 if c.get("sharp") else 1.0)
        out["target"] = torch.softmax(logits, 1)
    else:
        t = torch.randint(0, V, (N,), generator=g)
        if c.get("ignored"):
            t[::5] = -100
        if "ignore_index" in c:
            t[1] = t[7] = c["ignore_index"]
        out["target"] = t
    if "batch" in c:
        out["input"] = out["input"].reshape(*c["batch"], D)
        out["target"] = out["target"].reshape(c["batch"])
    out["class_weight"] = torch.rand(V, generator=g, dtype=torch.float64) + 0.25 if c.get("class_weight") else None
    out["upstream"] = torch.randn(out["target"].shape[: out["input"].ndim - 1], generator=g, dtype=torch.float64)
    keys = ("ignore_index", "reduction", "label_smoothing", "z_loss", "softcap", "max_memory")
    out["options"] = {k: c[k] for k in (*keys, "denominator", "z_loss_denominator") if k in c}
    return out


def _loss_and_grads(loss_fn, inputs, weight, bias, upstream, reduction):
    x = inputs["input"].clone().requires_grad_(True)
    weight = weight.clone().requires_grad_(True)
    bias = None if bias is None else bias.clone().requires_grad_(True)
    loss = loss_fn(x, weight, bias)
    loss.backward(upstream if reduction == "none" else None)
    return dict(loss=loss.detach(), dx=x.grad, dw=weight.grad, db=None if bias is None else bias.grad)


def shard(tensor, rank, world, dim=0):
    if tensor is None:
        return None
    sizes = SHARDS[world]
    start = sum(sizes[:rank])
    return tensor.narrow(dim, start, sizes[rank])


def every_case(*, rank, world, out):
    """Rank ``rank``'s results for every case: loss and gradients of its shard."""
    results = {}
    for name in CASES:
        f = case_inputs(name)
        target = shard(f["target"], rank, world, dim=-1) if f["target"].is_floating_point() else f["target"]
        reduction = f["options"].get("reduction", "mean")

        def loss_fn(x, w, b, f=f, target=target):
            return skt.vocab_parallel_linear_cross_entropy(
                x, w, target, b, class_weight=shard(f["class_weight"], rank, world), **f["options"]
            )

        w, b = shard(f["weight"], rank, world), shard(f["bias"], rank, world)
        results[name] = _loss_and_grads(loss_fn, f, w, b, f["upstream"], reduction)
    return results


def single_process(name):
    f = case_inputs(name)
    reduction = f["options"].get("reduction", "mean")

    def loss_fn(x, w, b):
        return skt.linear_cross_entropy(x, w, f["target"], b, class_weight=f["class_weight"], **f["options"])

    return _loss_and_grads(loss_fn, f, f["weight"], f["bias"], f["upstream"], reduction)


def everything(*, rank, world, out):
    """What one launch of ``world`` ranks checks (starting ranks costs seconds: one launch per world size)."""
    results = dict(cases=every_case(rank=rank, world=world, out=out))
    if world == 1:
        results["messages"] = bad_arguments(rank=rank, world=world, out=out)
    elif Path("/proc/self/clear_refs").exists():
        results["memory"] = peak_memory(rank=rank, world=world, out=out)
    return results


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """``launched(world)``: every rank's results of :func:`everything`, launched once per world size."""
    cache = {}

    def get(world):
        if world not in cache:
            cache[world] = run_ranks("test_vocab_parallel:everything", world, tmp_path_factory.mktemp(f"world{world}"))
        return cache[world]

    return get


def _close(got, want, what):
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("world", [2, 3])
def test_equals_the_single_process_op_for_every_option(world, launched):
    ranks = launched(world)
    for name in CASES:
        want = single_process(name)
        for rank, results in enumerate(ranks):
            got = results["cases"][name]
            where = f"{name}, rank {rank} of {world}"
            _close(got["loss"], want["loss"], f"{where}: loss")
            _close(got["dx"], want["dx"], f"{where}: input gradient")
            _close(got["dw"], shard(want["dw"], rank, world), f"{where}: weight shard gradient")
            if want["db"] is not None:
                _close(got["db"], shard(want["db"], rank, world), f"{where}: bias shard gradient")


def test_the_cases_are_not_trivial():
    """The cases exercise what they say: ignored tokens, confident tops (on some rank), a positive ignore_index."""
    confident = case_inputs("confident")
    logits = confident["input"] @ confident["weight"].T
    assert (torch.softmax(logits, 1).amax(1) > 0.99).float().mean() > 0.5
    assert (case_inputs("bias-ignore-smoothing")["target"] == -100).sum() >= 4
    assert (case_inputs("batch-shape-positive-ignore-index")["target"] == 3).sum() >= 2


def test_one_rank_is_the_single_process_op(launched):
    """A group of one (what the docstring shows): every option."""
    (results,) = launched(1)
    for name in CASES:
        want = single_process(name)
        for key in ("loss", "dx", "dw", "db"):
            if want[key] is not None:
                _close(results["cases"][name][key], want[key], f"{name}: {key}")


# --------------------------------------------------------------------------------------------
# Memory per rank.
# --------------------------------------------------------------------------------------------

MEM_N, MEM_D, MEM_V = 512, 64, 24576
MEM_MAX_MEMORY = 2**18


class LargestAllocation(torch.utils._python_dispatch.TorchDispatchMode):
    """The largest tensor (in elements) that any op returns while the mode is active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes() // max(1, t.element_size()))
        return out


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def peak_memory(*, rank, world, out):
    """One forward + backward on this rank's shard only (the whole weight never exists here)."""
    sizes = [MEM_V // world + (1 if r < MEM_V % world else 0) for r in range(world)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(MEM_N, MEM_D, generator=g, requires_grad=True)
    t = torch.randint(0, MEM_V, (MEM_N,), generator=g)
    w = (torch.randn(sizes[rank], MEM_D, generator=torch.Generator().manual_seed(rank + 1)) / 8).requires_grad_(True)

    def step():
        x.grad = w.grad = None
        skt.vocab_parallel_linear_cross_entropy(x, w, t, label_smoothing=0.1, max_memory=MEM_MAX_MEMORY).backward()

    step()  # warm-up: library code and allocator state are not the computation's memory
    torch.distributed.barrier()
    x.grad = w.grad = None
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kib("VmRSS")
    step()
    peak = (_rss_kib("VmHWM") - before) * 1024
    # A second step for the largest tensor: the Python mode holds references that make autograd copy
    # the weight gradient into .grad instead of taking it, so it must not run during the peak's step.
    with LargestAllocation() as mode:
        step()
    return dict(largest=mode.largest, peak_extra_bytes=peak, shard_rows=sizes[rank])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from /proc (Linux)")
@pytest.mark.parametrize("world", [2, 3])
def test_peak_memory_per_rank_holds_no_n_by_v_and_no_whole_weight(world, launched):
    ranks = [results["memory"] for results in launched(world)]
    logits, whole_weight = MEM_N * MEM_V, MEM_V * MEM_D
    for rank, r in enumerate(ranks):
        # Elements: the shard's weight gradient is the largest tensor, never N x V or V x d.
        assert r["largest"] <= r["shard_rows"] * MEM_D, (rank, r)
        assert r["largest"] < min(logits, whole_weight) / (world - 0.5)
        # Bytes: the shard's gradient, the input gradient, O(N) statistics and the chunks of max_memory;
        # below the whole weight (float32) and far below the logits.
        budget = 4 * (r["shard_rows"] * MEM_D + 2 * MEM_N * MEM_D) + 2 * MEM_MAX_MEMORY + 2**20
        assert r["peak_extra_bytes"] <= budget, (rank, r, budget)
        assert r["peak_extra_bytes"] < 4 * whole_weight, (rank, r)
        print(f"world {world} rank {rank}: largest tensor {r['largest']} elements, peak {r['peak_extra_bytes']} bytes")


# --------------------------------------------------------------------------------------------
# A hung rank, and the arguments.
# --------------------------------------------------------------------------------------------


def one_rank_never_calls(*, rank, world, out):
    """Rank 1 hangs (it never takes part); rank 0's first collective must time out (the group's timeout is short)."""
    if rank == 1:
        time.sleep(600)
    x, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    return skt.vocab_parallel_linear_cross_entropy(x, w, torch.tensor([0, 1, 2, 3]))


def test_a_hung_rank_times_out_and_never_hangs_the_suite(tmp_path):
    start = time.monotonic()
    with pytest.raises(RankFailure) as failure:
        run_ranks("test_vocab_parallel:one_rank_never_calls", 2, tmp_path, deadline=120.0, collective_timeout=2.0)
    assert failure.value.hung == [1], str(failure.value)  # killed once rank 0 had failed
    assert 0 in failure.value.failed, str(failure.value)  # its collective raised
    assert time.monotonic() - start < 60


def test_needs_a_process_group():
    if torch.distributed.is_initialized():  # pragma: no cover - the suite never initialises one in-process
        pytest.skip("a process group is initialised in this process")
    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        skt.vocab_parallel_linear_cross_entropy(torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1]))


def bad_arguments(*, rank, world, out):
    """The single-process op's checks, on the shard's shapes; the message of each."""
    x, w = torch.randn(4, 3), torch.randn(2, 3)
    messages = {}
    for what, kwargs in {
        "class_weight": dict(class_weight=torch.ones(3)),
        "target": dict(target=torch.rand(4, 3)),
        "denominator": dict(denominator=0.0),
        "reduction": dict(reduction="sum", denominator=2.0),
        "index": dict(target=torch.tensor([0, 1, 2, 9])),
        "group": dict(group="world"),
    }.items():
        kwargs.setdefault("target", torch.tensor([0, 1, 2, 3]))
        try:
            skt.vocab_parallel_linear_cross_entropy(x, w, kwargs.pop("target"), **kwargs)
        except (ValueError, TypeError) as error:
            messages[what] = str(error)
    return messages


def test_bad_arguments_get_the_single_process_messages(launched):
    (results,) = launched(1)
    messages = results["messages"]
    assert messages["class_weight"].startswith("class_weight must be None or a floating tensor of shape (2,)")
    assert messages["target"].startswith("target must be class indices of shape (4,) or probabilities of shape (4, 2)")
    assert messages["denominator"] == "denominator must be a positive finite number or a 0-d real tensor, got 0.0"
    assert messages["reduction"].startswith("denominator must be None unless reduction='mean'")
    assert "[0, 2)" in messages["index"]  # the whole vocabulary of this one-rank group: V = 2
    assert messages["group"].startswith("group must be None or a torch.distributed.ProcessGroup")


def test_bench_vocab_parallel_quick(tmp_path):
    """The benchmark's quick form runs and writes its table (tests/test_benchmarks.py does this for the others)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_vocab_parallel.py"
    args = [sys.executable, str(script), "--quick", "--worlds", "2", "--repeats", "1", "--out", str(tmp_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "vocab_parallel-quick.json").read_text())["rows"]
    assert [(r["world"], r["rank"], r["shard_rows"]) for r in rows] == [(2, 0, 2048), (2, 1, 2048)]
    assert all(r["median_s"] > 0 and r["peak_extra_bytes"] > 0 for r in rows)
