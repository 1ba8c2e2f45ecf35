"""Benchmark: fused linear cross-entropy (forward + backward) on the CPU, softmaxkit vs the alternatives.

Usage (from the repository root)::

    python benchmarks/bench_linear_ce.py            # the full run: writes results/linear_ce.{csv,json,md}
    python benchmarks/bench_linear_ce.py --quick    # small shapes, for a smoke test: results/linear_ce-quick.*
    python benchmarks/bench_linear_ce.py --impls naive,softmaxkit   # a subset: results/linear_ce-partial.*

Cases: (N, d, V) = (4096, 1024, 32768) and (8192, 2048, 65536), float32 and bfloat16, index targets,
``reduction="mean"``, no bias; ``x ~ N(0, 0.5^2)``, ``W ~ N(0, 1/d)``. Implementations:

* ``naive``: ``F.cross_entropy(F.linear(x, W), t)``, materialising the N x V logits;
* ``torch_chunked``: PyTorch's own ``F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())``
  (its chunked path with the "auto" choices: on CPU float32 falls back to ``compact`` /
  ``aspect_ratio:2``, bfloat16 uses ``accurate`` / ``aspect_ratio``);
* ``softmaxkit``: ``softmaxkit.torch.linear_cross_entropy`` with its default ``max_memory`` (32 MiB, or a quarter of the weight's bytes when larger, at most an eighth of the float32 logits);
* ``cce_torch``: Cut Cross-Entropy's pure-PyTorch path (``impl="torch_compile"``), when importable.

Every (shape, dtype, implementation) runs in its own process (``--child``), so no case inherits
another's heap or caches. A child first runs once on a tiny problem (paging in code, compiling for
``cce_torch``), and where ``repeats > 1`` once more at full size (discarded), then ``repeats`` full
forward + backward passes with fresh ``.grad`` slots; it reports
the median, min and max wall time and the peak extra resident memory of the last pass (``VmHWM`` after
``echo 5 > /proc/self/clear_refs``, minus the RSS before; every buffer of 64 KiB or more is its own
mapping, ``MALLOC_MMAP_THRESHOLD_=65536``, so freed memory is really gone). Errors: relative error of
the loss, and relative Frobenius error of ``grad_input`` and ``grad_weight``, against the naive
computation in float64 on the same (rounded) inputs; computed for the smaller shape only (the float64
reference of the larger one costs minutes on this machine). The larger shape runs once per
implementation (no repeats) to keep the whole benchmark within about 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
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

FULL = [((4096, 1024, 32768), 3, True), ((8192, 2048, 65536), 1, False)]  # (shape, repeats, errors?)
QUICK = [((512, 128, 4096), 2, True)]
DTYPES = ("float32", "bfloat16")
IMPLS = ("naive", "torch_chunked", "softmaxkit", "cce_torch")


# --------------------------------------------------------------------------- child process


def _rss() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
    return rss, hwm


def _inputs(n, d, v, dtype, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g) * 0.5).to(dtype)
    w = (torch.randn(v, d, generator=g) / d**0.5).to(dtype)
    t = torch.randint(0, v, (n,), generator=g)
    return x, w, t


def _implementation(name):
    import torch
    import torch.nn.functional as F

    if name == "naive":
        return lambda x, w, t: F.cross_entropy(F.linear(x, w), t)
    if name == "torch_chunked":
        options = torch.nn.LinearCrossEntropyOptions()
        return lambda x, w, t: F.linear_cross_entropy(x, w, t, options=options)
    if name == "softmaxkit":
        from softmaxkit.torch._linear_cross_entropy import linear_cross_entropy

        return lambda x, w, t: linear_cross_entropy(x, w, t)
    if name == "cce_torch":
        from cut_cross_entropy import linear_cross_entropy as cce

        return lambda x, w, t: cce(x, w, t, impl="torch_compile")
    if name == "reference":
        return lambda x, w, t: F.cross_entropy(F.linear(x.double(), w.double()), t)
    raise ValueError(f"implementation must be one of {IMPLS}, got {name!r}")


def child(impl, n, d, v, dtype_name, repeats, ref_path, out_path):
    import gc

    import torch

    dtype = getattr(torch, dtype_name)
    fn = _implementation(impl)
    x, w, t = _inputs(n, d, v, dtype)
    if impl == "reference":
        xl, wl = x.double().requires_grad_(), w.double().requires_grad_()
        loss = torch.nn.functional.cross_entropy(xl @ wl.T, t)
        loss.backward()
        torch.save({"loss": loss.detach(), "dx": xl.grad, "dw": wl.grad}, ref_path)
        return
    tiny = [a[:16].clone().requires_grad_() for a in (x, w)]
    fn(tiny[0], tiny[1], t[:16] % 16).backward()  # warm-up: page in code, compile (cce_torch)
    del tiny
    x.requires_grad_()
    w.requires_grad_()
    times, peaks = [], []
    # With repeats, one more full-size pass first, discarded: torch.compile (cce_torch) and PyTorch's
    # chunked path specialise on the full shape at their first call.
    for index in range(repeats + (repeats > 1)):
        x.grad = w.grad = None
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")
        before, _ = _rss()
        start = time.perf_counter()
        loss = fn(x, w, t)
        loss.backward()
        if index or repeats == 1:
            times.append(time.perf_counter() - start)
            peaks.append(_rss()[1] - before)
    row = {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
        "peak_extra_MiB": peaks[-1] / 2**20,
        "loss_dtype": str(loss.dtype).replace("torch.", ""),
    }
    if ref_path:
        ref = torch.load(ref_path)

        def err(a, r):
            return ((a.double() - r).norm() / r.norm()).item()

        row.update(
            loss_rel_err=abs(loss.double().item() - ref["loss"].item()) / abs(ref["loss"].item()),
            dx_rel_err=err(x.grad, ref["dx"]),
            dw_rel_err=err(w.grad, ref["dw"]),
        )
    Path(out_path).write_text(json.dumps(row))


# --------------------------------------------------------------------------- parent


def _available(impl: str) -> bool:
    if impl != "cce_torch":
        return True
    try:
        import cut_cross_entropy  # noqa: F401
    except ImportError:
        return False
    return True


def _run_child(impl, shape, dtype, repeats, ref_path, tmp: Path) -> dict:
    out = tmp / f"{impl}-{dtype}-{'x'.join(map(str, shape))}.json"
    args = [sys.executable, __file__, "--child", impl, *map(str, shape), dtype, str(repeats), ref_path or "", str(out)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    print(f"  {impl:14s} {dtype:9s} {shape}: {time.perf_counter() - start:.0f} s in the child", flush=True)
    return json.loads(out.read_text()) if out.exists() else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke test")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"a comma-separated subset of {','.join(IMPLS)}")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results (default results/)")
    parser.add_argument("--child", nargs=8, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        impl, n, d, v, dtype, repeats, ref_path, out = args.child
        child(impl, int(n), int(d), int(v), dtype, int(repeats), ref_path or None, out)
        return 0

    from _common import RESULTS_DIR, environment, write_results

    impls = [name for name in args.impls.split(",") if name]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        parser.error(f"--impls: unknown {', '.join(unknown)}; choose from {', '.join(IMPLS)}")
    cases = QUICK if args.quick else FULL
    env = environment(("softmaxkit", "torch", "triton", "cut-cross-entropy"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_linear_ce-") as tmp_name:
        tmp = Path(tmp_name)
        for shape, repeats, with_errors in cases:
            for dtype in DTYPES:
                ref_path = None
                if with_errors:
                    ref_path = str(tmp / f"ref-{dtype}.pt")
                    result = _run_child("reference", shape, dtype, 1, ref_path, tmp)
                    if "error" in result:
                        print("reference failed:", result["error"])
                        ref_path = None
                case_rows = []
                for impl in impls:
                    if not _available(impl):
                        case_rows.append({"impl": impl, "error": "not importable"})
                        continue
                    case_rows.append({"impl": impl, **_run_child(impl, shape, dtype, repeats, ref_path, tmp)})
                naive = next((r for r in case_rows if r["impl"] == "naive" and "median_s" in r), None)
                chunked = next((r for r in case_rows if r["impl"] == "torch_chunked" and "median_s" in r), None)
                for row in case_rows:
                    row.update(N=shape[0], d=shape[1], V=shape[2], dtype=dtype)
                    if "median_s" in row and naive:
                        row["time_vs_naive"] = row["median_s"] / naive["median_s"]
                        row["memory_vs_naive"] = row["peak_extra_MiB"] / naive["peak_extra_MiB"]
                    if "median_s" in row and chunked:
                        row["time_vs_torch_chunked"] = row["median_s"] / chunked["median_s"]
                    rows.append(row)
    columns = [
        "N",
        "d",
        "V",
        "dtype",
        "impl",
        "median_s",
        "min_s",
        "max_s",
        "repeats",
        "peak_extra_MiB",
        "time_vs_naive",
        "time_vs_torch_chunked",
        "memory_vs_naive",
        "loss_rel_err",
        "dx_rel_err",
        "dw_rel_err",
        "error",
    ]
    notes = [
        "forward + backward of the mean cross-entropy of x @ W.T (no bias), index targets; each case in its own process",
        "time: wall seconds per forward + backward (median of `repeats`, after a warm-up on a tiny problem and,"
        " where repeats > 1, one discarded full-size pass; the larger shape's single pass includes any"
        " first-call cost such as torch.compile specialising cce_torch)",
        "peak_extra_MiB: peak resident memory above the inputs during the last pass, gradients included",
        "errors: relative error (loss) and relative Frobenius error (gradients) vs float64 naive on the same inputs;"
        " only for the smaller shape",
        "the machine is shared with other jobs (see the load average): expect 10-50 % timing noise",
    ]
    full = not args.quick and impls == list(IMPLS)
    write_results(
        "linear_ce" if full else "linear_ce-quick" if args.quick else "linear_ce-partial",
        rows,
        env,
        results_dir=args.out or RESULTS_DIR,
        title="Fused linear cross-entropy, forward + backward on the CPU",
        columns=columns,
        notes=notes,
    )
    return 0


# --------------------------------------------------------------------------- modes: compiled, forward-only


MODES_FULL = [((2048, 512, 16384), 5)]  # (shape, repeats): an eighth of the first full case's work
MODES_QUICK = [((256, 64, 2048), 3)]
MODES = (
    "train_eager",  # forward + backward, eager: the gradients computed in the forward pass (scalar reductions)
    "train_lazy",  # the alternative: forward saves statistics only, backward recomputes the logits
    "train_compiled",  # forward + backward of torch.compile(fullgraph=True) (after a warm-up call)
    "forward_no_grad",  # forward under torch.no_grad()
    "forward_grad_unused",  # forward under grad mode, never backpropagated (an evaluation loop without no_grad)
)


def _mode_step(mode, fn, lazy_fn, x, w, t):
    import torch

    if mode == "forward_no_grad":
        with torch.no_grad():
            return fn(x, w, t)
    if mode == "forward_grad_unused":
        return fn(x, w, t)
    loss = (lazy_fn if mode == "train_lazy" else fn)(x, w, t)
    loss.backward()
    return loss


def modes_child(mode, n, d, v, dtype_name, repeats):  # pragma: no cover - runs in its own process
    import torch

    from softmaxkit.torch import linear_cross_entropy

    def fn(x_, w_, t_):
        return linear_cross_entropy(x_, w_, t_)

    def lazy_fn(x_, w_, t_):
        # reduction="none" keeps only the per-token statistics; its backward recomputes the logits.
        return linear_cross_entropy(x_, w_, t_, reduction="none").sum() / t_.numel()

    if mode == "train_compiled":
        fn = torch.compile(fn, fullgraph=True)
    x, w, t = _inputs(n, d, v, getattr(torch, dtype_name))
    x.requires_grad_()
    w.requires_grad_()
    compile_s = None
    start = time.perf_counter()
    _mode_step(mode, fn, lazy_fn, x, w, t)  # warm-up at full size (and compilation)
    if mode == "train_compiled":
        compile_s = time.perf_counter() - start
    times, cpu = [], []
    for _ in range(repeats):
        x.grad = w.grad = None
        start, start_cpu = time.perf_counter(), time.process_time()
        _mode_step(mode, fn, lazy_fn, x, w, t)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "cpu_s": statistics.median(cpu),
        "compile_s": compile_s,
    }


def modes_main(argv) -> int:
    """``--modes``: softmaxkit's linear_cross_entropy eager, lazy, compiled and forward-only, one process per case."""
    parser = argparse.ArgumentParser(
        description="linear_cross_entropy: training step eager / lazy / compiled, forward only"
    )
    parser.add_argument("--modes", action="store_true", help="this benchmark (results/linear_ce_modes.*)")
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results (default results/)")
    parser.add_argument("--mode-child", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode_child:
        mode, n, d, v, dtype, repeats = args.mode_child
        print(json.dumps(modes_child(mode, int(n), int(d), int(v), dtype, int(repeats))))
        return 0

    from _common import RESULTS_DIR, environment, write_results

    rows = []
    for shape, repeats in MODES_QUICK if args.quick else MODES_FULL:
        for dtype in DTYPES:
            case = []
            for mode in MODES:
                child_args = [sys.executable, __file__, "--modes", "--mode-child", mode, *map(str, shape), dtype]
                done = subprocess.run([*child_args, str(repeats)], capture_output=True, text=True)
                if done.returncode != 0:
                    case.append({"mode": mode, "error": (done.stderr.strip().splitlines() or ["failed"])[-1][:200]})
                    continue
                case.append({"mode": mode, **json.loads(done.stdout.strip().splitlines()[-1])})
                print(f"  {mode:20s} {dtype:9s} {shape}: {case[-1]['median_s']:.3f} s, cpu {case[-1]['cpu_s']:.3f} s")
            base = {r["mode"]: r["cpu_s"] for r in case if "cpu_s" in r}
            for row in case:
                row.update(N=shape[0], d=shape[1], V=shape[2], dtype=dtype, repeats=repeats)
                if "cpu_s" in row and "train_eager" in base:
                    row["cpu_vs_train_eager"] = row["cpu_s"] / base["train_eager"]
                if "cpu_s" in row and "forward_no_grad" in base:
                    row["cpu_vs_forward_no_grad"] = row["cpu_s"] / base["forward_no_grad"]
                rows.append(row)
    columns = ["N", "d", "V", "dtype", "mode", "median_s", "min_s", "max_s", "cpu_s", "repeats"]
    columns += ["cpu_vs_train_eager", "cpu_vs_forward_no_grad", "compile_s", "error"]
    notes = [
        "softmaxkit.torch.linear_cross_entropy, mean reduction, index targets, no bias; each mode in its own process",
        "train_eager: forward + backward as shipped (gradients computed in the forward pass under grad mode);"
        " train_lazy: the alternative (reduction='none' then sum / N: statistics in forward, logits recomputed in backward)",
        "train_compiled: torch.compile(fullgraph=True) of the call (one custom op per pass); compile_s is the first call",
        "forward_grad_unused: a forward under grad mode that is never backpropagated (it pays for the gradients)",
        "time: median wall seconds of `repeats` after a full-size warm-up; cpu_s: median CPU seconds of the process"
        " (all its threads), which the shared machine's load disturbs less than wall time; the ratios use cpu_s",
    ]
    write_results(
        "linear_ce_modes-quick" if args.quick else "linear_ce_modes",
        rows,
        environment(("softmaxkit", "torch")),
        results_dir=args.out or RESULTS_DIR,
        title="linear_cross_entropy: eager, lazy and compiled training steps; forward only",
        columns=columns,
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(modes_main(sys.argv[1:]) if "--modes" in sys.argv[1:] else main())
