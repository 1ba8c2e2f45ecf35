"""Benchmark: softmax, log_softmax and cross-entropy with gradient on float32, softmaxkit vs the alternatives
and vs the memory bandwidth, on one thread and on the default number.

Usage (from the repository root)::

    python benchmarks/bench_numerics.py                # the full run: writes results/numerics.{csv,json,md}
    python benchmarks/bench_numerics.py --quick        # small shapes, 2 repeats: results/numerics-quick.*

Shapes (samples x classes), float32, logits ~ N(0, 1): 1,000,000 x 10, 100,000 x 1000, 4096 x 32768 (the
issue's three), and 10,000 x 3, 200,000 x 50, 500 x 200,000, so that nothing is tuned to three shapes.

Bandwidth reference: each kernel reads the N x C logits and writes an N x C result (the gradient, for
cross-entropy), so its reference is a copy of the same bytes, timed in the same interleaved rounds:
``copy`` is ``x.copy()`` (read x, write a fresh array of its size: what each of these functions does,
the fresh output's page faults included) and ``copyto`` is ``np.copyto`` into an array written before
(the bandwidth alone, the stricter reference). ``frac_of_copy`` and ``frac_of_copyto`` are the copy's
time over the kernel's: 1.0 means as fast as copying the bytes.

Threads: every case runs with ``--threads`` (default: 1, then the default of the machine), set for
numba (softmaxkit's kernels) and torch alike; NumPy and SciPy are single-threaded either way.

Implementations, each doing the same job on the same array:

* ``softmaxkit``: ``softmax``, ``log_softmax``, ``cross_entropy_with_grad`` (mean over index targets);
* ``naive numpy``: the lesson's NumPy: ``e = exp(x - max); e / sum(e)``, ``log`` of that softmax,
  and cross-entropy from a one-hot matrix, ``-sum(one_hot * log p) / N`` with gradient ``(p - one_hot) / N``;
* ``scipy.special``: ``softmax``, ``log_softmax``, and cross-entropy from ``logsumexp``
  (loss ``mean(lse - x_y)``, gradient ``(exp(x - lse) - one_hot) / N``);
* ``torch``: ``F.softmax``, ``F.log_softmax``, ``F.cross_entropy`` forward + backward on CPU, sharing the
  NumPy buffer (``torch.from_numpy``); PyTorch uses its intra-op thread pool (recorded), NumPy one thread.

Each case: one untimed warm-up round, then ``--repeats`` rounds in which the implementations and the
two copies run interleaved; the median, min and max wall time are reported with ``x_torch`` (torch's
time over ours: > 1 means faster than torch) and the ratio to scipy.special (< 1 means faster than
scipy). Before timing, every implementation's result is checked against softmaxkit's (relative 1e-4
in float32), so the timed code is known to compute the right thing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numba
import numpy as np
import scipy.special
import torch
import torch.nn.functional as F
from _common import RESULTS_DIR, copy_references, environment, measure, write_results

import softmaxkit as sk

FULL_SHAPES = [(1_000_000, 10), (100_000, 1000), (4096, 32768), (10_000, 3), (200_000, 50), (500, 200_000)]
QUICK_SHAPES = [(10_000, 10), (1000, 1000), (64, 32768)]
# The targets (float32, the default threads): a fraction of the copy at these class counts ...
BANDWIDTH_TARGET = {1000: 0.5, 32768: 0.5}
# ... and a speed-up over torch CPU at this one.
TORCH_TARGET = {10: 4.0}
OPERATIONS = ("softmax", "log_softmax", "cross_entropy+grad")
IMPLEMENTATIONS = ("softmaxkit", "naive numpy", "scipy.special", "torch")


def _naive_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _naive_cross_entropy_with_grad(x, y):
    n = x.shape[0]
    p = _naive_softmax(x)
    one_hot = np.zeros_like(x)
    one_hot[np.arange(n), y] = 1
    loss = -np.sum(one_hot * np.log(p)) / n
    return loss, (p - one_hot) / n


def _scipy_cross_entropy_with_grad(x, y):
    n = x.shape[0]
    rows = np.arange(n)
    lse = scipy.special.logsumexp(x, axis=1)
    loss = np.mean(lse - x[rows, y])
    grad = np.exp(x - lse[:, None])
    grad[rows, y] -= 1
    grad /= n
    return loss, grad


def _torch_cross_entropy_with_grad(x, y_torch):
    logits = torch.from_numpy(x).requires_grad_(True)
    loss = F.cross_entropy(logits, y_torch)
    loss.backward()
    return loss.detach().numpy(), logits.grad.numpy()


def candidates(operation: str, x: np.ndarray, y: np.ndarray) -> dict:
    x_torch, y_torch = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    if operation == "softmax":
        return {
            "softmaxkit": lambda: sk.softmax(x, axis=1),
            "naive numpy": lambda: _naive_softmax(x),
            "scipy.special": lambda: scipy.special.softmax(x, axis=1),
            "torch": lambda: F.softmax(x_torch, dim=1).numpy(),
        }
    if operation == "log_softmax":
        return {
            "softmaxkit": lambda: sk.log_softmax(x, axis=1),
            "naive numpy": lambda: np.log(_naive_softmax(x)),
            "scipy.special": lambda: scipy.special.log_softmax(x, axis=1),
            "torch": lambda: F.log_softmax(x_torch, dim=1).numpy(),
        }
    return {
        "softmaxkit": lambda: sk.cross_entropy_with_grad(x, y),
        "naive numpy": lambda: _naive_cross_entropy_with_grad(x, y),
        "scipy.special": lambda: _scipy_cross_entropy_with_grad(x, y),
        "torch": lambda: _torch_cross_entropy_with_grad(x, y_torch),
    }


def _check_agreement(operation: str, fns: dict) -> None:
    """Every implementation computes what softmaxkit computes (float32 tolerance)."""
    reference = fns["softmaxkit"]()
    for name, fn in fns.items():
        result = fn()
        pairs = zip(reference, result) if operation == "cross_entropy+grad" else [(reference, result)]
        for expected, got in pairs:
            expected, got = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
            finite = np.isfinite(expected)
            scale = max(np.max(np.abs(expected[finite]), initial=0.0), 1e-30)
            error = np.max(np.abs(got[finite] - expected[finite]), initial=0.0) / scale
            if not error <= 1e-4:
                raise AssertionError(f"{operation}: {name} disagrees with softmaxkit (relative error {error:.2e})")


def _set_threads(n: int) -> None:
    numba.set_num_threads(n)
    torch.set_num_threads(n)


def run(shapes, operations, thread_counts, *, repeats: int, warmup: int) -> list[dict]:
    rows = []
    for shape in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape, dtype=np.float32)
        y = rng.integers(0, shape[1], size=shape[0])
        copies = copy_references(x)
        for threads in thread_counts:
            _set_threads(threads)
            for operation in operations:
                fns = candidates(operation, x, y)
                _check_agreement(operation, fns)
                timings = measure({**fns, **copies}, repeats=repeats, warmup=warmup)
                copy, copyto = timings.pop("copy"), timings.pop("copyto")
                scipy_median, torch_median = timings["scipy.special"].median, timings["torch"].median
                for name, timing in timings.items():
                    rows.append(
                        {
                            "operation": operation,
                            "shape": f"{shape[0]} x {shape[1]}",
                            "classes": shape[1],
                            "threads": threads,
                            "implementation": name,
                            "median_ms": round(1e3 * timing.median, 2),
                            "min_ms": round(1e3 * timing.min, 2),
                            "max_ms": round(1e3 * timing.max, 2),
                            "frac_of_copy": round(copy.median / timing.median, 3),
                            "frac_of_copyto": round(copyto.median / timing.median, 3),
                            "x_torch": round(torch_median / timing.median, 2),
                            "ratio_to_scipy": round(timing.median / scipy_median, 3),
                            "copy_ms": round(1e3 * copy.median, 2),
                            "copyto_ms": round(1e3 * copyto.median, 2),
                            "copy_GB_per_s": round(2 * x.nbytes / copy.median / 1e9, 1),
                            "cpu_ms": round(1e3 * timing.cpu_median, 2),
                            "Melem_per_s": round(x.size / timing.median / 1e6, 1),
                            "repeats": timing.repeats,
                        }
                    )
                    r = rows[-1]
                    print(
                        f"{operation:>18}  {r['shape']:>16}  {threads} thr  {name:>13}  median {r['median_ms']:9.2f} ms"
                        f"  [{r['min_ms']:.2f}, {r['max_ms']:.2f}]  {r['frac_of_copy']:.2f} of copy"
                        f"  ({r['frac_of_copyto']:.2f} of copyto)  x{r['x_torch']:.2f} torch",
                        flush=True,
                    )
                del fns
    return rows


def targets(rows: list[dict], threads: int) -> list[str]:
    """The issue's targets for softmaxkit at ``threads``, each with its measured value and met or not."""
    lines = []
    for r in rows:
        if r["implementation"] != "softmaxkit" or r["threads"] != threads:
            continue
        if r["classes"] in BANDWIDTH_TARGET:
            goal = BANDWIDTH_TARGET[r["classes"]]
            got = r["frac_of_copy"]
            lines.append(
                f"target {r['operation']} {r['shape']}: >= {goal:.0%} of copy: {got:.0%} of copy "
                f"({r['frac_of_copyto']:.0%} of copyto): {'met' if got >= goal else 'NOT met'}"
            )
        if r["classes"] in TORCH_TARGET:
            goal = TORCH_TARGET[r["classes"]]
            lines.append(
                f"target {r['operation']} {r['shape']}: >= {goal:g}x torch: {r['x_torch']:.2f}x: "
                f"{'met' if r['x_torch'] >= goal else 'NOT met'}"
            )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes and 2 repeats; writes numerics-quick.*")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per case (default 1)")
    parser.add_argument("--operations", nargs="+", choices=OPERATIONS, default=list(OPERATIONS))
    parser.add_argument(
        "--shapes", nargs="+", default=None, metavar="NxC", help="shapes to run, e.g. 1000000x10 (a partial run)"
    )
    parser.add_argument(
        "--threads", nargs="+", type=int, default=None, help="thread counts to run (default: 1 and the default)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.shapes:
        shapes = [tuple(int(n) for n in shape.lower().split("x")) for shape in args.shapes]
    env = environment(("softmaxkit", "numpy", "scipy", "torch", "numba"))
    default_threads = numba.get_num_threads()
    env["torch_threads"] = torch.get_num_threads()
    env["numba_threads"] = default_threads
    env["numba_threading_layer_note"] = "numba's threading layer is reported after the first parallel kernel"
    thread_counts = args.threads or sorted({1, default_threads})
    rows = run(shapes, args.operations, thread_counts, repeats=repeats, warmup=args.warmup)
    _set_threads(default_threads)
    env["numba_threading_layer"] = numba.threading_layer()
    env["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    target_lines = targets(rows, max(thread_counts))
    for line in target_lines:
        print(line)
    notes = [
        f"1-minute load average at the end: {env['load_average_1m_end']} (2 logical CPUs shared with other work)",
        "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: as in the environment line (None = not set, nothing was unset); "
        "none of these kernels calls BLAS",
        f"float32 logits ~ N(0, 1); index targets; cross-entropy is the mean with its gradient; "
        f"{args.warmup} warm-up round(s), then {repeats} interleaved rounds; median, min and max wall time",
        f"threads: {thread_counts} for numba (softmaxkit's kernels, threading layer {env['numba_threading_layer']}) "
        f"and torch alike; NumPy and SciPy run these element-wise kernels on one thread",
        "frac_of_copy: time of x.copy() (the same bytes read and written, into a fresh array) over the "
        "implementation's; frac_of_copyto: the same with np.copyto into a preallocated array (bandwidth alone); "
        "x_torch: torch CPU's time over the implementation's (> 1: faster than torch); ratio_to_scipy: the "
        "implementation's over scipy.special's (< 1: faster); all from the same interleaved rounds, so that "
        "load from other processes hits them alike",
        *target_lines,
    ]
    name = "numerics-quick" if args.quick else "numerics-partial" if args.shapes else "numerics"
    paths = write_results(
        name,
        rows,
        env,
        title="softmax, log_softmax, cross-entropy + gradient (float32, CPU)",
        columns=[
            "operation",
            "shape",
            "threads",
            "implementation",
            "median_ms",
            "min_ms",
            "max_ms",
            "frac_of_copy",
            "frac_of_copyto",
            "x_torch",
            "ratio_to_scipy",
            "Melem_per_s",
        ],
        notes=notes,
        results_dir=args.out,
    )
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
