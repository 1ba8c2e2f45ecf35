"""Benchmark: softmax, log_softmax and cross-entropy with gradient on float32, softmaxkit vs the alternatives.

Usage (from the repository root)::

    python benchmarks/bench_numerics.py                # the full run: writes results/numerics.{csv,json,md}
    python benchmarks/bench_numerics.py --quick        # small shapes, 2 repeats: results/numerics-quick.*

Shapes (samples x classes): 1,000,000 x 10, 100,000 x 1000 and 4096 x 32768, float32, logits ~ N(0, 1).

Implementations, each doing the same job on the same array:

* ``softmaxkit``: ``softmax``, ``log_softmax``, ``cross_entropy_with_grad`` (mean over index targets);
* ``naive numpy``: the lesson's NumPy: ``e = exp(x - max); e / sum(e)``, ``log`` of that softmax,
  and cross-entropy from a one-hot matrix, ``-sum(one_hot * log p) / N`` with gradient ``(p - one_hot) / N``;
* ``scipy.special``: ``softmax``, ``log_softmax``, and cross-entropy from ``logsumexp``
  (loss ``mean(lse - x_y)``, gradient ``(exp(x - lse) - one_hot) / N``);
* ``torch``: ``F.softmax``, ``F.log_softmax``, ``F.cross_entropy`` forward + backward on CPU, sharing the
  NumPy buffer (``torch.from_numpy``); PyTorch uses its intra-op thread pool (recorded), NumPy one thread.

Each case: one untimed warm-up round, then ``--repeats`` rounds in which the implementations run
interleaved; the median, min and max wall time are reported with the ratio to scipy.special
(< 1 means faster than scipy). Before timing, every implementation's result is checked against
softmaxkit's (relative 1e-4 in float32), so the timed code is known to compute the right thing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import scipy.special
import torch
import torch.nn.functional as F
from _common import RESULTS_DIR, environment, measure, write_results

import softmaxkit as sk

FULL_SHAPES = [(1_000_000, 10), (100_000, 1000), (4096, 32768)]
QUICK_SHAPES = [(10_000, 10), (1000, 1000), (64, 32768)]
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


def run(shapes, operations, *, repeats: int, warmup: int) -> list[dict]:
    rows = []
    for shape in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape, dtype=np.float32)
        y = rng.integers(0, shape[1], size=shape[0])
        for operation in operations:
            fns = candidates(operation, x, y)
            _check_agreement(operation, fns)
            timings = measure(fns, repeats=repeats, warmup=warmup)
            scipy_median = timings["scipy.special"].median
            for name, timing in timings.items():
                rows.append(
                    {
                        "operation": operation,
                        "shape": f"{shape[0]} x {shape[1]}",
                        "implementation": name,
                        "median_ms": round(1e3 * timing.median, 2),
                        "min_ms": round(1e3 * timing.min, 2),
                        "max_ms": round(1e3 * timing.max, 2),
                        "ratio_to_scipy": round(timing.median / scipy_median, 3),
                        "min_ratio_to_scipy": round(timing.min / timings["scipy.special"].min, 3),
                        "cpu_ms": round(1e3 * timing.cpu_median, 2),
                        "cpu_ratio_to_scipy": round(timing.cpu_median / timings["scipy.special"].cpu_median, 3),
                        "Melem_per_s": round(x.size / timing.median / 1e6, 1),
                        "repeats": timing.repeats,
                    }
                )
                print(
                    f"{operation:>18}  {rows[-1]['shape']:>16}  {name:>13}  median {rows[-1]['median_ms']:9.2f} ms"
                    f"  [{rows[-1]['min_ms']:.2f}, {rows[-1]['max_ms']:.2f}]  x{rows[-1]['ratio_to_scipy']:.2f} of scipy"
                    f"  (cpu {rows[-1]['cpu_ms']:.2f} ms, x{rows[-1]['cpu_ratio_to_scipy']:.2f})",
                    flush=True,
                )
            del fns
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes and 2 repeats; writes numerics-quick.*")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per case (default 1)")
    parser.add_argument("--operations", nargs="+", choices=OPERATIONS, default=list(OPERATIONS))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    env = environment()
    env["torch_threads"] = torch.get_num_threads()
    rows = run(shapes, args.operations, repeats=repeats, warmup=args.warmup)
    env["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    notes = [
        f"1-minute load average at the end: {env['load_average_1m_end']} (2 logical CPUs shared with other work)",
        "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: as in the environment line (None = not set, nothing was unset); "
        "none of these kernels calls BLAS",
        f"float32 logits ~ N(0, 1); index targets; cross-entropy is the mean with its gradient; "
        f"{args.warmup} warm-up round(s), then {repeats} interleaved rounds; median, min and max wall time",
        f"torch CPU uses {env['torch_threads']} intra-op threads; NumPy and SciPy run these element-wise kernels on one thread",
        "ratio_to_scipy (wall time) < 1: faster than scipy.special; the machine is shared, so wall times carry "
        "noise of 10-30 %; cpu_ms is the median CPU time of the process (all threads: torch's include its "
        "second thread), steadier under load for the single-threaded NumPy/SciPy code; min_ratio_to_scipy "
        "compares the fastest rounds, the least disturbed by other work (on this machine the large arrays' "
        "rounds vary up to 5x with the kernel's page handling for other processes)",
    ]
    name = "numerics-quick" if args.quick else "numerics"
    paths = write_results(
        name,
        rows,
        env,
        title="softmax, log_softmax, cross-entropy + gradient (float32, CPU)",
        columns=[
            "operation",
            "shape",
            "implementation",
            "median_ms",
            "min_ms",
            "max_ms",
            "ratio_to_scipy",
            "min_ratio_to_scipy",
            "cpu_ms",
            "cpu_ratio_to_scipy",
            "Melem_per_s",
        ],
        notes=notes,
        results_dir=args.out,
    )
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
