"""GPU check and benchmark of the fused linear cross-entropy: one short script (a few minutes) for a CUDA machine.

Usage (from the repository root, on a machine with a CUDA GPU)::

    python benchmarks/gpu_linear_ce.py              # parity, then timings: results/linear_ce_gpu.{csv,json,md}
    python benchmarks/gpu_linear_ce.py --parity     # only the parity checks (seconds)
    TRITON_INTERPRET=1 python benchmarks/gpu_linear_ce.py --dry-run --out /tmp/x   # no GPU: see below

1. Parity on CUDA, odd shape (N, d, V) = (252, 123, 507): ``softmaxkit.torch.linear_cross_entropy``
   through the Triton kernels and through the pure-PyTorch path, with every option (label smoothing,
   class weights, z-loss, softcap, bias, reductions), against the naive computation in float64; in
   bfloat16 against the naive bfloat16 computation (both measured against float64). Exit status 1
   when a check fails.
2. Time (median of 3 after a warm-up, CUDA events) and peak allocated memory
   (``torch.cuda.max_memory_allocated`` above the inputs) of forward + backward at
   (8192, 2304, 256000) and (32768, 4096, 128256) in bfloat16, mean over index targets, for: naive
   PyTorch, PyTorch's ``F.linear_cross_entropy`` chunked path, softmaxkit (Triton path and PyTorch
   path), and, when installed, Cut Cross-Entropy (``impl="cce"``) and Liger-Kernel's fused linear
   cross-entropy. An implementation that runs out of memory is recorded as such.

Without a CUDA device the script stops at once with exit status 2 and says so, unless
``--dry-run`` is given: then every step runs on the CPU at tiny sizes (the Triton kernels under
Triton's interpreter when ``TRITON_INTERPRET=1`` is set, else the PyTorch path only), wall-clock
timing and no memory figures, so that the script's own logic is checked before GPU time is spent
on it (``tests/test_benchmarks.py`` does this). Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SHAPES = [(8192, 2304, 256000), (32768, 4096, 128256)]
DRY_RUN_SHAPES = [(64, 32, 1000)]


def _require_cuda():
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_linear_ce.py needs a CUDA device: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}). Run it on a GPU machine.",
            file=sys.stderr,
        )
        sys.exit(2)
    return torch


def _triton_backends(dev: str) -> tuple[str, ...]:
    """The softmaxkit backends to check: Triton on CUDA, or on the CPU under the interpreter."""
    if dev == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return ("triton", "torch")
    return ("torch",)


def parity(torch, dev: str = "cuda") -> list[dict]:
    # The test suite's float64 oracle of the materialised computation, and its helpers.
    sys.path.insert(0, str(HERE.parent / "tests"))
    from _reference import cast_value_and_grads, frobenius_error, linear_cross_entropy_ref

    from softmaxkit.torch import linear_cross_entropy

    f64 = torch.float64
    g = torch.Generator(device="cpu").manual_seed(0)
    n, d, v = (252, 123, 507) if dev == "cuda" else (37, 13, 101)
    x = torch.randn(n, d, generator=g, dtype=f64).to(dev)
    w = (torch.randn(v, d, generator=g, dtype=f64) / d**0.5 * 2).to(dev)
    b = (torch.randn(v, generator=g, dtype=f64) * 0.3).to(dev)
    cw = (torch.rand(v, generator=g, dtype=f64) + 0.1).to(dev)
    t = torch.randint(0, v, (n,), generator=g).to(dev)
    t[::7] = -100
    gn = (torch.rand(n, generator=g, dtype=f64) + 0.5).to(dev)

    def naive(x_, w_, b_, **opts):
        return linear_cross_entropy_ref(x_, w_, t, b_, **opts)

    def run(fn, dtype, grad_out):
        return cast_value_and_grads(fn, (x, w, b), dtype, grad_out)

    err = frobenius_error

    rows = []
    option_sets = [dict(), dict(label_smoothing=0.1, class_weight=cw, z_loss=1e-3, softcap=30.0)]
    for dtype_name in ("float32", "bfloat16"):
        dtype = getattr(torch, dtype_name)
        for reduction in ("mean", "sum", "none"):
            for k, extra in enumerate(option_sets):
                opts = dict(reduction=reduction, **extra)
                grad_out = gn if reduction == "none" else torch.tensor(1.0, dtype=f64, device=dev)
                ref = run(lambda a, c, e: naive(a, c, e, **opts), f64, grad_out)
                same = run(lambda a, c, e: naive(a, c, e, **opts), dtype, grad_out)
                for backend in _triton_backends(dev):
                    ours = run(
                        lambda a, c, e: linear_cross_entropy(a, c, t, e, backend=backend, **opts), dtype, grad_out
                    )
                    for name, o, r, s in zip(("loss", "dx", "dw", "db"), ours, ref, same):
                        e_ours, e_naive = err(o, r), err(s, r)
                        bound = 1e-5 if dtype == torch.float32 else max(1.5 * e_naive, 1e-3)
                        rows.append(
                            dict(
                                dtype=dtype_name,
                                reduction=reduction,
                                options=k,
                                backend=backend,
                                what=name,
                                ours=e_ours,
                                naive=e_naive,
                                ok=e_ours <= bound,
                            )
                        )
    return rows


def _timed(torch, fn, x, w, t, repeats=3):
    """(median ms, peak extra MiB) of forward + backward, or raises torch.cuda.OutOfMemoryError."""
    if not x.is_cuda:  # --dry-run: wall time, no memory figure
        times = []
        for index in range(repeats + 1):
            x.grad = w.grad = None
            start = time.perf_counter()
            fn(x, w, t).backward()
            if index:
                times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), float("nan")
    times = []
    peak = 0
    for index in range(repeats + 1):
        x.grad = w.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x, w, t).backward()
        end.record()
        torch.cuda.synchronize()
        if index:
            times.append(start.elapsed_time(end))
            peak = max(peak, torch.cuda.max_memory_allocated() - base)
    return statistics.median(times), peak / 2**20


def implementations(torch, dev: str = "cuda"):
    import torch.nn.functional as F

    from softmaxkit.torch import linear_cross_entropy

    impls = {
        "naive": lambda x, w, t: F.cross_entropy(F.linear(x, w), t),
        "torch_chunked": lambda x, w, t: F.linear_cross_entropy(x, w, t, options=torch.nn.LinearCrossEntropyOptions()),
    }
    for backend in _triton_backends(dev):
        impls[f"softmaxkit_{backend}"] = lambda x, w, t, backend=backend: linear_cross_entropy(x, w, t, backend=backend)
    if dev != "cuda":
        return impls  # Cut Cross-Entropy's and Liger's kernels are CUDA-only
    try:
        from cut_cross_entropy import linear_cross_entropy as cce

        impls["cce"] = lambda x, w, t: cce(x, w, t, impl="cce")
    except ImportError:
        pass
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        impls["liger"] = lambda x, w, t: liger(w, x, t)
    except ImportError:
        pass
    return impls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parity", action="store_true", help="only the parity checks")
    parser.add_argument(
        "--dry-run", action="store_true", help="no GPU: every step on the CPU at tiny sizes, to check the script itself"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    if args.dry_run:
        import torch

        dev, shapes, name = "cpu", DRY_RUN_SHAPES, "linear_ce_gpu-dry-run"
    else:
        torch = _require_cuda()
        dev, shapes, name = "cuda", SHAPES, "linear_ce_gpu"
    from _common import RESULTS_DIR, environment, write_results

    checks = parity(torch, dev)
    failed = [c for c in checks if not c["ok"]]
    print(f"parity: {len(checks) - len(failed)}/{len(checks)} checks passed", flush=True)
    for c in failed:
        print("  FAILED", c)
    if args.parity:
        return 1 if failed else 0

    rows = []
    for n, d, v in shapes:
        g = torch.Generator(device="cpu").manual_seed(0)
        x = (torch.randn(n, d, generator=g) * 0.5).to(dev, torch.bfloat16).requires_grad_()
        w = (torch.randn(v, d, generator=g) / d**0.5).to(dev, torch.bfloat16).requires_grad_()
        t = torch.randint(0, v, (n,), generator=g).to(dev)
        for impl, fn in implementations(torch, dev).items():
            row = dict(N=n, d=d, V=v, dtype="bfloat16", impl=impl)
            try:
                row["median_ms"], row["peak_extra_MiB"] = _timed(torch, fn, x, w, t)
            except torch.cuda.OutOfMemoryError:
                row["error"] = "out of memory"
            except Exception as error:
                row["error"] = f"{type(error).__name__}: {str(error)[:120]}"
            x.grad = w.grad = None
            if dev == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            print(row, flush=True)
        naive = {r["impl"]: r for r in rows if r["N"] == n and "median_ms" in r}.get("naive")
        for r in rows:
            if r["N"] == n and naive and "median_ms" in r:
                r["time_vs_naive"] = r["median_ms"] / naive["median_ms"]
                r["memory_vs_naive"] = r["peak_extra_MiB"] / naive["peak_extra_MiB"]
        del x, w, t
        if dev == "cuda":
            torch.cuda.empty_cache()
    env = environment(("softmaxkit", "torch", "triton", "cut-cross-entropy", "liger-kernel"))
    env["gpu"] = torch.cuda.get_device_name() if dev == "cuda" else "no GPU (--dry-run on the CPU)"
    write_results(
        name,
        rows,
        env,
        title=f"Fused linear cross-entropy on {env['gpu']} (bfloat16)",
        results_dir=args.out or RESULTS_DIR,
        columns=["N", "d", "V", "impl", "median_ms", "peak_extra_MiB", "time_vs_naive", "memory_vs_naive", "error"],
        notes=[
            f"parity on CUDA: {len(checks) - len(failed)}/{len(checks)} checks passed",
            "forward + backward of the mean cross-entropy, index targets; median of 3 after a warm-up",
        ],
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
