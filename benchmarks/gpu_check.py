"""GPU check: the CUDA parity tests, then fit timings on CUDA against the CPU backends, in one run.

Usage: ``python benchmarks/gpu_check.py [--skip-tests] [--max-iter 300] [--budget-s 150]``

1. Runs ``pytest -m cuda`` on the torch test files (ops, module, estimator backend): every test
   there must run and pass on the GPU (a skip counts as a failure here).
2. Fits ``SoftmaxRegression`` on ``make_classification(n_samples=200_000, n_features=100,
   n_informative=50, n_classes=20, random_state=0)`` (80 % train, standardised; ``alpha = 1 / n_train``,
   i.e. scikit-learn's ``C=1``), with the same ``tol`` for every method, on CUDA (torch backend,
   float32 and float64) and on the CPU (NumPy backend, torch backend on the CPU, scikit-learn's
   ``LogisticRegression``), and prints a table: wall time, iterations, the objective's relative gap
   to the best one found, test accuracy. CPU methods use their default thread counts.
   Fits are skipped once ``--budget-s`` seconds have gone (the whole script stays under 3 minutes).
3. Runs the data-parallel fit on NCCL (``bench_distributed.py --nccl-check``: one rank per CUDA
   device, the torch backend in float64 on each GPU), which must equal the single-process fit to
   1e-10 (a failure here fails the check).
4. Writes ``results/gpu_check.{csv,json,md}`` with the GPU, the machine and the versions.

Without CUDA it prints why and exits with status 2, unless ``--dry-run`` is given: then the fits
run on 5,000 samples with the CPU standing in for the GPU and the CUDA tests are not run, so that
the script's own logic is checked before GPU time is spent on it (``tests/test_benchmarks.py``
does this). Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import environment, write_results  # noqa: E402

TEST_FILES = ["tests/test_torch_ops.py", "tests/test_torch_model.py", "tests/test_torch_backend.py"]


def check_cuda() -> str | None:
    """``None`` when a CUDA device is usable, else the reason it is not."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (pip install 'softmaxkit[torch]')"
    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device"
    return None


def run_cuda_tests() -> tuple[bool, str]:
    """``pytest -m cuda`` on the torch test files; passes only when nothing failed or was skipped."""
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider", *TEST_FILES]
    print("$", " ".join(command[2:]), flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip()
    print(result.stdout[-4000:] if result.returncode else summary, flush=True)
    ok = result.returncode == 0 and "skipped" not in summary and "passed" in summary
    return ok, summary


def run_nccl_check(out: Path) -> tuple[bool, str]:
    """``bench_distributed.py --nccl-check``: whether the NCCL data-parallel fit equals the single-process one."""
    command = [sys.executable, str(HERE / "bench_distributed.py"), "--nccl-check", "--out", str(out)]
    print("$", " ".join(command[1:]), flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = result.stdout.strip().splitlines()
    summary = lines[-1] if lines else result.stderr.strip()[-2000:]
    print(summary, flush=True)
    return result.returncode == 0, summary


def make_data(n_samples: int = 200_000):
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(n_samples=n_samples, n_features=100, n_informative=50, n_classes=20, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def methods(alpha: float, tol: float, max_iter: int, n_train: int, gpu: str = "cuda"):
    """``(name, device, make_estimator)``: CUDA (``gpu``) first, then the CPU backends."""
    from sklearn.linear_model import LogisticRegression

    from softmaxkit.linear_model import SoftmaxRegression

    def ours(solver, backend="numpy", device=None, dtype=np.float64):
        return lambda: SoftmaxRegression(
            alpha=alpha, solver=solver, tol=tol, max_iter=max_iter, backend=backend, device=device, dtype=dtype
        )

    return [
        ("softmaxkit torch lbfgs float32", gpu, ours("lbfgs", "torch", gpu, np.float32)),
        ("softmaxkit torch lbfgs float64", gpu, ours("lbfgs", "torch", gpu)),
        ("softmaxkit torch newton-cg float64", gpu, ours("newton-cg", "torch", gpu)),
        (
            "sklearn LogisticRegression(lbfgs)",
            "cpu",
            lambda: LogisticRegression(C=1.0 / (alpha * n_train), tol=tol, max_iter=max_iter),
        ),
        ("softmaxkit numpy lbfgs float64", "cpu", ours("lbfgs")),
        ("softmaxkit numpy newton-cg float64", "cpu", ours("newton-cg")),
        ("softmaxkit torch lbfgs float64", "cpu", ours("lbfgs", "torch", "cpu")),
    ]


def time_fits(
    budget_s: float, tol: float, max_iter: int, start: float, *, gpu: str = "cuda", n_samples: int = 200_000
) -> list[dict]:
    from sklearn.exceptions import ConvergenceWarning

    from softmaxkit.linear_model import SoftmaxRegression, _loss

    X, X_test, y, y_test = make_data(n_samples)
    alpha = 1.0 / X.shape[0]
    classes = np.unique(y)
    codes = np.searchsorted(classes, y)
    warnings.simplefilter("ignore", ConvergenceWarning)
    # Warm-up: CUDA context, cuBLAS handles and kernels, outside the timings.
    SoftmaxRegression(backend="torch", device=gpu, max_iter=2).fit(X[:1000], y[:1000])
    rows = []
    for name, device, make in methods(alpha, tol, max_iter, X.shape[0], gpu):
        row = {"method": name, "device": device, "tol": tol}
        if time.perf_counter() - start > budget_s:
            row["note"] = "skipped: time budget spent"
            rows.append(row)
            print(f"{name:38s} {device:5s} skipped (time budget)", flush=True)
            continue
        model = make()
        t0 = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - t0
        coef = np.hstack([model.coef_, model.intercept_[:, None]]).astype(np.float64)
        n_iter = int(np.max(model.n_iter_))
        row.update(
            seconds=seconds,
            n_iter=n_iter,
            objective=float(_loss.loss(coef, X, codes, None, alpha)),
            test_accuracy=float(model.score(X_test, y_test)),
        )
        rows.append(row)
        print(
            f"{name:38s} {device:5s} {seconds:8.2f} s  {n_iter:4d} it  f={row['objective']:.10f}  "
            f"acc={100 * row['test_accuracy']:.2f}%",
            flush=True,
        )
    best = min(r["objective"] for r in rows if "objective" in r)
    cuda_f64 = next(
        (
            r["seconds"]
            for r in rows
            if r["method"] == "softmaxkit torch lbfgs float64" and r["device"] == gpu and "seconds" in r
        ),
        None,
    )
    for r in rows:
        if "objective" in r:
            r["gap"] = (r["objective"] - best) / best
            if cuda_f64:
                r["time_over_cuda_lbfgs_f64"] = r["seconds"] / cuda_f64
    return rows


def print_table(rows):
    columns = ["method", "device", "seconds", "n_iter", "gap", "test_accuracy", "time_over_cuda_lbfgs_f64"]
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, r.get("note", "") if c == "seconds" else "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-tests", action="store_true", help="only the timings")
    parser.add_argument("--tol", type=float, default=1e-4, help="the same tol for every method (default 1e-4)")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--budget-s", type=float, default=150.0, help="skip fits once this much time has gone")
    parser.add_argument(
        "--dry-run", action="store_true", help="no GPU: small fits with the CPU standing in for CUDA, no CUDA tests"
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.dry_run:
        gpu, n_samples, name, args.skip_tests = "cpu", 5_000, "gpu_check-dry-run", True
    else:
        reason = check_cuda()
        if reason is not None:
            print(f"gpu_check needs a CUDA device: {reason}. Run it on a GPU machine.", file=sys.stderr)
            return 2
        gpu, n_samples, name = "cuda", 200_000, "gpu_check"
    import torch

    tests_ok, summary = (True, "not run (--skip-tests)") if args.skip_tests else run_cuda_tests()
    nccl_ok, nccl_summary = (
        (True, "not run (--dry-run)") if args.dry_run else run_nccl_check(args.out or HERE / "results")
    )
    rows = time_fits(args.budget_s, args.tol, args.max_iter, start, gpu=gpu, n_samples=n_samples)
    print_table(rows)
    env = environment(("softmaxkit", "numpy", "scipy", "scikit-learn", "torch"))
    if gpu == "cuda":
        env["gpu"] = (
            f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch threads {torch.get_num_threads()}"
        )
    else:
        env["gpu"] = "no GPU (--dry-run: the CPU stands in)"
    out = args.out or HERE / "results"
    write_results(
        name,
        rows,
        env,
        title="GPU check: CUDA parity tests and fit timings",
        results_dir=out,
        columns=["method", "device", "seconds", "n_iter", "gap", "test_accuracy", "time_over_cuda_lbfgs_f64"],
        notes=[
            f"GPU: {env['gpu']}",
            f"pytest -m cuda on {', '.join(TEST_FILES)}: {summary}",
            f"data-parallel fit on NCCL (bench_distributed.py --nccl-check): {nccl_summary}",
            f"data: make_classification({n_samples:_}, 100, n_informative=50, n_classes=20, random_state=0), "
            f"80 % train, standardised; alpha = 1 / n_train (C=1); tol={args.tol} for every method; one fit each",
            "gap: (f - f_best) / f_best of the objective L of SoftmaxRegression, in float64",
        ],
    )
    print(f"\nCUDA tests: {summary}; total {time.perf_counter() - start:.0f} s; results in {out}")
    return 0 if tests_ok and nccl_ok else 1


if __name__ == "__main__":
    sys.exit(main())
