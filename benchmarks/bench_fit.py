"""Time to scikit-learn's optimum: SoftmaxRegression vs LogisticRegression(lbfgs) and SGDClassifier(log_loss).

Usage: ``python benchmarks/bench_fit.py [--quick] [--threads N] [--datasets a,b] [--cs 1,100]``

For each dataset (standardised ``letter``, ``pendigits``, ``satimage``, ``covtype`` from
``../shared/datasets`` and ``make_classification(200_000, 100, n_informative=50, n_classes=20,
random_state=0)``) and each ``C``:

1. the reference optimum ``f*`` is the objective ``L`` (see ``SoftmaxRegression``) of
   ``LogisticRegression(C=C, tol=1e-10, max_iter=100_000)``, with ``alpha = 1 / (C n)``;
2. for each method, fits with ``tol`` = 1e-3, 1e-4, ... (from scratch each time) until the
   objective is within 1e-6 (relative) of ``f*``; the first such ``tol`` is the one timed;
3. that fit is repeated (``--repeats``; the synthetic set uses fewer) and the median wall time is
   reported with the iterations, the relative gap ``(f - f*) / f*`` and the test accuracy.

The default run writes ``results/fit.{csv,json,md}``; any other selection (``--quick``,
``--datasets``, ...) writes ``results/fit-partial.*`` (not tracked by git), leaving the full table alone.

SGDClassifier is one-vs-rest (a different model): it cannot reach the multinomial optimum. It
runs once at its defaults with the same ``alpha``; its time and accuracy are shown for scale.

BLAS threads are limited to ``--threads`` (default 1) for every method alike: on a shared
machine multithreaded BLAS contends and the timings become noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy
import sklearn
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import softmaxkit
from softmaxkit.linear_model import SoftmaxRegression, _loss

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from _datasets import load_real_dataset  # noqa: E402  (the test suite's reader of ../shared/datasets)

DATASETS = HERE.parent.parent / "shared" / "datasets"
RESULTS = HERE / "results"
TARGET_GAP = 1e-6
TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)


def load_dataset(name: str, root: Path = DATASETS):
    """Standardised ``(X_train, X_test, y_train, y_test)`` (scaler fitted on the training part).

    The real datasets are read by the test suite's ``_datasets.load_real_dataset``, so the benchmark
    times exactly the problems whose optimum ``tests/test_sklearn_optimum.py`` checks.
    """
    if name != "synthetic":
        return load_real_dataset(name, root)
    X, y = make_classification(n_samples=200_000, n_features=100, n_informative=50, n_classes=20, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return (
        np.ascontiguousarray(scaler.transform(X_train)),
        np.ascontiguousarray(scaler.transform(X_test)),
        y_train,
        y_test,
    )


def objective(coef, intercept, X, codes, alpha):
    return _loss.loss(np.hstack([coef, intercept[:, None]]), X, codes, None, alpha)


def _timed_fit(make, X, y):
    model = make()
    start = time.perf_counter()
    model.fit(X, y)
    return model, time.perf_counter() - start


def _n_iter(model):
    return int(np.max(model.n_iter_))


def time_to_optimum(make, X, y, X_test, y_test, f_star, evaluate, repeats):
    """Climb the tol ladder until the gap is reached; then repeat that fit. Returns a result dict."""
    tried = []
    for tol in TOLS:
        model, seconds = _timed_fit(lambda: make(tol), X, y)
        gap = (evaluate(model) - f_star) / f_star
        tried.append((tol, seconds, gap))
        if gap <= TARGET_GAP:
            times = [seconds] + [_timed_fit(lambda: make(tol), X, y)[1] for _ in range(repeats - 1)]
            return {
                "tol": tol,
                "seconds": statistics.median(times),
                "seconds_min": min(times),
                "seconds_max": max(times),
                "repeats": len(times),
                "n_iter": _n_iter(model),
                "gap": gap,
                "test_accuracy": float(model.score(X_test, y_test)),
                "reached": True,
                "ladder": [{"tol": t, "seconds": s, "gap": g} for t, s, g in tried],
            }
    return {
        "tol": TOLS[-1],
        "seconds": tried[-1][1],
        "seconds_min": tried[-1][1],
        "seconds_max": tried[-1][1],
        "repeats": 1,
        "n_iter": _n_iter(model),
        "gap": tried[-1][2],
        "test_accuracy": float(model.score(X_test, y_test)),
        "reached": False,
        "ladder": [{"tol": t, "seconds": s, "gap": g} for t, s, g in tried],
    }


def run_case(name, C, data, repeats, solvers, backends=("numpy",)):
    X, X_test, y, y_test = data
    classes = np.unique(y)
    codes = np.searchsorted(classes, y)
    n = X.shape[0]
    alpha = 1.0 / (C * n)

    def evaluate(model):
        return objective(model.coef_, model.intercept_, X, codes, alpha)

    start = time.perf_counter()
    reference = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(X, y)
    reference_seconds = time.perf_counter() - start
    f_star = evaluate(reference)
    rows = []
    base = {
        "dataset": name,
        "C": C,
        "alpha": alpha,
        "n_train": n,
        "n_features": X.shape[1],
        "n_classes": len(classes),
        "f_star": f_star,
        "reference_seconds": reference_seconds,
    }

    def sklearn_lbfgs(tol):
        return LogisticRegression(C=C, tol=tol, max_iter=100_000)

    result = time_to_optimum(sklearn_lbfgs, X, y, X_test, y_test, f_star, evaluate, repeats)
    rows.append({**base, "method": "sklearn LogisticRegression(lbfgs)", **result})
    sklearn_seconds = result["seconds"]
    for backend in backends:
        for solver in solvers:

            def ours(tol, solver=solver, backend=backend):
                device = {"device": "cpu"} if backend == "torch" else {}
                return SoftmaxRegression(
                    alpha=alpha, solver=solver, tol=tol, max_iter=100_000, backend=backend, **device
                )

            result = time_to_optimum(ours, X, y, X_test, y_test, f_star, evaluate, repeats)
            label = solver if backend == "numpy" else f"{solver}, backend=torch cpu"
            rows.append(
                {
                    **base,
                    "method": f"softmaxkit SoftmaxRegression({label})",
                    **result,
                    "ratio_to_sklearn": result["seconds"] / sklearn_seconds,
                }
            )
    # on the large synthetic set one-vs-rest SGD takes minutes: capped at 10 epochs there (noted in fit.md)
    sgd_options = {"max_iter": 10} if name == "synthetic" else {}
    sgd, seconds = _timed_fit(lambda: SGDClassifier(loss="log_loss", alpha=alpha, random_state=0, **sgd_options), X, y)
    rows.append(
        {
            **base,
            "method": "sklearn SGDClassifier(log_loss, one-vs-rest)",
            "tol": sgd.tol,
            "seconds": seconds,
            "seconds_min": seconds,
            "seconds_max": seconds,
            "repeats": 1,
            "n_iter": _n_iter(sgd),
            "gap": (evaluate(sgd) - f_star) / f_star,
            "test_accuracy": float(sgd.score(X_test, y_test)),
            "reached": False,
            "ratio_to_sklearn": seconds / sklearn_seconds,
            "ladder": [],
        }
    )
    return rows


def machine_description(threads):
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("n/a",)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        "load_average_at_start": [round(v, 2) for v in load] if isinstance(load[0], float) else load,
        "blas_threads": threads,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "softmaxkit": softmaxkit.__version__,
        },
    }


def write_results(rows, info, args, stem="fit", out=RESULTS):
    out.mkdir(parents=True, exist_ok=True)
    fields = [
        "dataset",
        "C",
        "method",
        "tol",
        "seconds",
        "seconds_min",
        "seconds_max",
        "repeats",
        "n_iter",
        "gap",
        "test_accuracy",
        "reached",
        "ratio_to_sklearn",
        "f_star",
        "reference_seconds",
        "alpha",
        "n_train",
        "n_features",
        "n_classes",
    ]
    with open(out / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(out / f"{stem}.json", "w") as handle:
        json.dump({"info": info, "command": " ".join(sys.argv), "rows": rows}, handle, indent=1)
    lines = [
        "# Fit benchmark: time to scikit-learn's optimum",
        "",
        f"Command: `python benchmarks/bench_fit.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
        "",
        f"Date: {info['date']}. Machine: {info['machine']}; load average at start "
        f"{info['load_average_at_start']} (the machine is shared, so timings are noisy). "
        f"BLAS threads: {info['blas_threads']} for every method. Versions: "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + ".",
        "",
        "Target: the objective within 1e-6 (relative) of `LogisticRegression(tol=1e-10)`'s `f*`. Each method "
        "climbs the tol ladder 1e-3, 1e-4, ... from scratch and the first fit that reaches the target is timed "
        "(median over the repeats). `ratio` is the time over scikit-learn lbfgs's time (target: at most 0.5). "
        "SGDClassifier is one-vs-rest, a different model: it never reaches the multinomial optimum; it runs "
        "once at its defaults with the same alpha, for scale (on the synthetic set capped at 10 epochs, "
        "`max_iter=10`, to keep the whole run near 10 minutes).",
        "",
        "| dataset | C | method | tol | time (s) | ratio | iterations | gap (f - f*)/f* | test accuracy (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row.get("ratio_to_sklearn")
        lines.append(
            f"| {row['dataset']} | {row['C']:g} | {row['method']} | {row['tol']:g} | "
            f"{row['seconds']:.3f} [{row['seconds_min']:.3f}-{row['seconds_max']:.3f}, n={row['repeats']}] | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {row['n_iter']} | {row['gap']:.1e}"
            f"{'' if row['reached'] or 'SGD' in row['method'] else ' (not reached)'} | "
            f"{100 * row['test_accuracy']:.2f} |"
        )
    ours = [r for r in rows if r["method"].startswith("softmaxkit")]
    met = [r for r in ours if r["reached"] and r["ratio_to_sklearn"] <= 0.5]
    missed = [r for r in ours if r not in met]
    lines += [
        "",
        f"Target (at most 0.5x scikit-learn's time, at the same optimum) met in {len(met)} of {len(ours)} "
        "cases"
        + (
            "."
            if not missed
            else "; not met: "
            + "; ".join(
                f"{r['dataset']} C={r['C']:g} {r['method'].split('(')[1][:-1]} (ratio {r['ratio_to_sklearn']:.2f}"
                f"{'' if r['reached'] else ', gap not reached'})"
                for r in missed
            )
            + "."
        ),
    ]
    lines += [
        "",
        "Reference fits (`LogisticRegression(tol=1e-10)`): "
        + "; ".join(sorted({f"{r['dataset']} C={r['C']:g}: {r['reference_seconds']:.1f} s" for r in rows}))
        + ".",
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="letter,pendigits,satimage,covtype,synthetic")
    parser.add_argument("--cs", default="1,100", help="values of C (the synthetic set uses only the first)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for every method (default 1)")
    parser.add_argument("--solvers", default="newton-cg", help="ours to time, e.g. newton-cg,lbfgs")
    parser.add_argument("--backends", default="numpy,torch", help="ours: numpy and/or torch (the latter on the CPU)")
    parser.add_argument("--quick", action="store_true", help="pendigits, C=1, one repeat (a smoke run)")
    parser.add_argument("--render", action="store_true", help="rewrite fit.md from results/fit.json only")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads((RESULTS / "fit.json").read_text())
        sys.argv = saved["command"].split()
        write_results(saved["rows"], saved["info"], args)
        return 0
    # Only the default run writes results/fit.*; a subset (or --quick) writes results/fit-partial.*,
    # so trying one dataset never overwrites the full table.
    options = ("datasets", "cs", "repeats", "synthetic_repeats", "threads", "solvers", "backends", "quick")
    stem = "fit" if all(getattr(args, k) == parser.get_default(k) for k in options) else "fit-partial"
    if args.quick:
        args.datasets, args.cs, args.repeats = "pendigits", "1", 1
    names = [n for n in args.datasets.split(",") if n]
    if any(n != "synthetic" for n in names) and not DATASETS.is_dir():
        print(f"datasets not found at {DATASETS}; run with --datasets synthetic")
        return 2
    cs = [float(c) for c in args.cs.split(",")]
    solvers = [s for s in args.solvers.split(",") if s]
    backends = [b for b in args.backends.split(",") if b]
    if "torch" in backends:
        import torch

        torch.set_num_threads(args.threads)
    info = machine_description(args.threads)
    rows = []
    warnings.simplefilter("ignore", ConvergenceWarning)
    with threadpool_limits(args.threads):
        for name in names:
            data = load_dataset(name)
            for C in cs[:1] if name == "synthetic" else cs:
                repeats = args.synthetic_repeats if name == "synthetic" else args.repeats
                case_rows = run_case(name, C, data, repeats, solvers, backends)
                for row in case_rows:
                    print(
                        f"{name:10s} C={C:<5g} {row['method']:62s} tol={row['tol']:<6g} {row['seconds']:8.3f}s "
                        f"it={row['n_iter']:<6d} gap={row['gap']:.1e} acc={100 * row['test_accuracy']:.2f} "
                        f"ratio={row.get('ratio_to_sklearn', float('nan')):.2f}",
                        flush=True,
                    )
                rows += case_rows
                write_results(rows, info, args, stem, args.out)
    print(f"results written to {args.out / stem}.{{csv,json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
