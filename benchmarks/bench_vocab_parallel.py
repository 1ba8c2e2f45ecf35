"""Benchmark: vocab_parallel_linear_cross_entropy on 1 and 2 local gloo ranks (CPU), time and bytes per rank.

Usage (from the repository root)::

    python benchmarks/bench_vocab_parallel.py           # N, d, V = 2048, 512, 32768 float32: results/vocab_parallel.*
    python benchmarks/bench_vocab_parallel.py --quick   # 256, 64, 4096: results/vocab_parallel-quick.*

Each rank is its own process (one intra-op thread) holding only its rows of the head (uneven when V
does not divide: ``tensor_split``), the same hidden states and targets. Per rank: the median wall
time of a training step (forward + backward, label smoothing 0.1, default ``max_memory``) after a
warm-up, over ``--repeats`` steps started together (a barrier before each); the peak extra resident
bytes of one step (``VmHWM`` reset through ``/proc/self/clear_refs``, freed buffers of 64 KiB or more
returned to the kernel: ``MALLOC_MMAP_THRESHOLD_``); and the bytes its collectives move, from their
shapes. The world-1 row also times the single-process ``linear_cross_entropy`` on the same problem
(three ``N V d`` products per step against the vocab-parallel op's four).

Informational: on this machine the ranks share two cores with everything else, so two ranks cannot
be twice as fast; what the numbers show is the per-rank work and memory falling with the shard.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import RESULTS_DIR, environment, write_results  # noqa: E402

FULL = dict(n=2048, d=512, v=32768)
QUICK = dict(n=256, d=64, v=4096)


def _kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def worker(rank: int, world: int, init: str, out: Path, n: int, d: int, v: int, repeats: int) -> None:
    import torch
    import torch.distributed as dist

    import softmaxkit.torch as skt

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=600)
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, requires_grad=True)
    t = torch.randint(0, v, (n,), generator=g)
    rows = torch.arange(v).tensor_split(world)[rank]
    w = (torch.randn(len(rows), d, generator=torch.Generator().manual_seed(rank + 1)) / d**0.5).requires_grad_(True)

    def vocab_parallel():
        skt.vocab_parallel_linear_cross_entropy(x, w, t, label_smoothing=0.1).backward()

    def single():
        skt.linear_cross_entropy(x, w, t, label_smoothing=0.1).backward()

    def timed(step):
        step()  # warm-up
        times = []
        for _ in range(repeats):
            x.grad = w.grad = None
            dist.barrier()
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def peak(step):
        x.grad = w.grad = None
        Path("/proc/self/clear_refs").write_text("5")
        before = _kib("VmRSS")
        step()
        return (_kib("VmHWM") - before) * 1024

    result = dict(
        world=world,
        rank=rank,
        n=n,
        d=d,
        v=v,
        shard_rows=len(rows),
        impl="vocab_parallel",
        median_s=timed(vocab_parallel),
        peak_extra_bytes=peak(vocab_parallel),
        # all-gather of 2 float64 per rank; all-gather of 5 float64 per token and rank (index targets, smoothing);
        # all-reduce of the N x d float32 input gradient (a ring moves about 2 (world - 1) / world of it per rank).
        collective_bytes=16 * world + 40 * n * world + int(4 * n * d * 2 * (world - 1) / world),
        weight_shard_bytes=w.numel() * 4,
        logits_bytes=n * v * 4,
    )
    results = [result]
    if world == 1:
        results.append(dict(result, impl="linear_cross_entropy", median_s=timed(single), peak_extra_bytes=peak(single)))
        results[-1]["collective_bytes"] = 0
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def launch(world: int, size: dict, repeats: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536")
        args = [str(world), str(out / "rendezvous"), str(out), str(size["n"]), str(size["d"]), str(size["v"])]
        children = [
            subprocess.Popen([sys.executable, __file__, "--worker", str(r), *args, str(repeats)], env=env)
            for r in range(world)
        ]
        codes = [c.wait(timeout=1800) for c in children]
        if any(codes):
            raise SystemExit(f"a rank failed: exit codes {codes}")
        return [row for r in range(world) for row in json.loads((out / f"rank{r}.json").read_text())]


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--worker":
        rank, world, init, out, n, d, v, repeats = argv[1:9]
        worker(int(rank), int(world), init, Path(out), int(n), int(d), int(v), int(repeats))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats; writes vocab_parallel-quick.*")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per rank (default 5, quick 2)")
    parser.add_argument("--worlds", nargs="+", type=int, default=[1, 2], help="rank counts (default 1 2)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    repeats = args.repeats or (2 if args.quick else 5)
    env = environment()
    rows = [row for world in args.worlds for row in launch(world, size, repeats)]
    name = "vocab_parallel-quick" if args.quick else "vocab_parallel"
    columns = ["world", "rank", "impl", "shard_rows", "median_s", "peak_extra_bytes", "collective_bytes"]
    notes = [
        f"N, d, V = {size['n']}, {size['d']}, {size['v']}, float32, label smoothing 0.1, one thread per rank",
        "peak_extra_bytes: VmHWM minus RSS before one step (gradients included, inputs excluded)",
        "collective_bytes: per rank and step, from the collectives' shapes",
    ]
    paths = write_results(
        name, rows, env, title="vocab_parallel_linear_cross_entropy", columns=columns, notes=notes, results_dir=args.out
    )
    print(paths["md"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
