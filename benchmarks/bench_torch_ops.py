"""Benchmark: softmaxkit.torch's ops against torch's own and against the naive torch forms, on CPU.

Usage (from the repository root)::

    python benchmarks/bench_torch_ops.py            # the full run: writes results/torch_ops.{csv,json,md}
    python benchmarks/bench_torch_ops.py --quick    # small shapes, 2 repeats: results/torch_ops-quick.*

Shapes (rows x classes): 4096 x 8192, 1,000,000 x 10, 1000 x 100,000; float32 and float64, logits ~ N(0, 1);
1 and 2 threads; each op forward only (under ``torch.no_grad``) and forward + backward (upstream ones).

Implementations, each doing the same job on the same tensor:

* ``ours``: ``softmaxkit.torch`` (``softmax``, ``log_softmax``, ``logsumexp``, ``cross_entropy`` mean over
  index targets);
* ``torch``: ``torch.softmax``, ``torch.log_softmax``, ``torch.logsumexp``, ``F.cross_entropy``;
* ``naive``: the before-style forms in plain torch ops: ``exp(x - max) / sum``, ``(x - max) - log(sum)``,
  ``max + log(sum exp(x - max))``, and ``lse - x_y`` averaged (autograd through them).

One warm-up round, then ``--repeats`` interleaved rounds (``_common.measure``); median wall time and the
ratios ``ours / torch`` and ``ours / naive`` from the same rounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import RESULTS_DIR, environment, measure, write_results

import softmaxkit.torch as skt

FULL_SHAPES = [(4096, 8192), (1_000_000, 10), (1000, 100_000)]
QUICK_SHAPES = [(256, 512), (10_000, 10)]
OPERATIONS = ("softmax", "log_softmax", "logsumexp", "cross_entropy")


def _naive_softmax(x):
    e = (x - x.amax(1, keepdim=True)).exp()
    return e / e.sum(1, keepdim=True)


def _naive_log_softmax(x):
    shifted = x - x.amax(1, keepdim=True)
    return shifted - shifted.exp().sum(1, keepdim=True).log()


def _naive_logsumexp(x):
    m = x.amax(1, keepdim=True)
    return (m + (x - m).exp().sum(1, keepdim=True).log()).squeeze(1)


def implementations(operation: str, y: torch.Tensor) -> dict:
    if operation == "cross_entropy":
        return {
            "ours": lambda x: skt.cross_entropy(x, y),
            "torch": lambda x: F.cross_entropy(x, y),
            "naive": lambda x: (_naive_logsumexp(x) - x.gather(1, y[:, None]).squeeze(1)).mean(),
        }
    ours = {"softmax": skt.softmax, "log_softmax": skt.log_softmax, "logsumexp": skt.logsumexp}[operation]
    theirs = {"softmax": torch.softmax, "log_softmax": torch.log_softmax, "logsumexp": torch.logsumexp}[operation]
    naive = {"softmax": _naive_softmax, "log_softmax": _naive_log_softmax, "logsumexp": _naive_logsumexp}[operation]
    return {"ours": lambda x: ours(x, 1), "torch": lambda x: theirs(x, 1), "naive": naive}


def _forward(fn, x):
    def run():
        with torch.no_grad():
            return fn(x)

    return run


def _forward_backward(fn, x):
    def run():
        leaf = x.detach().requires_grad_()
        out = fn(leaf)
        out.backward(torch.ones_like(out))
        return leaf.grad

    return run


def run(shapes, dtypes, thread_counts, operations, *, repeats: int, warmup: int) -> list[dict]:
    rows = []
    for shape in shapes:
        gen = torch.Generator().manual_seed(0)
        base = torch.randn(shape, generator=gen)
        y = torch.randint(0, shape[1], (shape[0],), generator=gen)
        for dtype in dtypes:
            x = base.to(dtype)
            for threads in thread_counts:
                torch.set_num_threads(threads)
                for operation in operations:
                    fns = implementations(operation, y)
                    for mode, wrap in (("forward", _forward), ("forward+backward", _forward_backward)):
                        timings = measure({k: wrap(f, x) for k, f in fns.items()}, repeats=repeats, warmup=warmup)
                        ours = timings["ours"].median
                        row = {
                            "operation": operation,
                            "mode": mode,
                            "shape": f"{shape[0]} x {shape[1]}",
                            "dtype": str(dtype).removeprefix("torch."),
                            "threads": threads,
                            **{f"{k}_ms": round(1e3 * t.median, 2) for k, t in timings.items()},
                            "ours_over_torch": round(ours / timings["torch"].median, 3),
                            "ours_over_naive": round(ours / timings["naive"].median, 3),
                            "repeats": repeats,
                        }
                        rows.append(row)
                        print(
                            f"{operation:>13} {mode:>16} {row['shape']:>16} {row['dtype']:>7} {threads} thr  "
                            f"ours {row['ours_ms']:8.2f}  torch {row['torch_ms']:8.2f}  naive {row['naive_ms']:8.2f} ms",
                            flush=True,
                        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes and 2 repeats; writes torch_ops-quick.*")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per case (default 1)")
    parser.add_argument("--operations", nargs="+", choices=OPERATIONS, default=list(OPERATIONS))
    parser.add_argument("--shapes", nargs="+", default=None, metavar="NxC", help="shapes to run, e.g. 4096x8192")
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "float64"), default=["float32", "float64"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.shapes:
        shapes = [tuple(int(n) for n in s.lower().split("x")) for s in args.shapes]
    dtypes = [getattr(torch, d) for d in args.dtypes]
    env = environment()
    rows = run(shapes, dtypes, args.threads, args.operations, repeats=repeats, warmup=args.warmup)
    name = "torch_ops-quick" if args.quick else "torch_ops-partial" if args.shapes else "torch_ops"
    paths = write_results(
        name,
        rows,
        env,
        title="softmaxkit.torch ops vs torch and the naive torch forms (CPU)",
        columns=[
            "operation",
            "mode",
            "shape",
            "dtype",
            "threads",
            "ours_ms",
            "torch_ms",
            "naive_ms",
            "ours_over_torch",
            "ours_over_naive",
        ],
        notes=[
            f"logits ~ N(0, 1); {args.warmup} warm-up round(s), then {repeats} interleaved rounds; median wall time",
            "naive: the before-style forms in plain torch ops (see the script's docstring); 2 logical CPUs shared",
        ],
        results_dir=args.out,
    )
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
