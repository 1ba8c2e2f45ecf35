"""The shapes behind ``solver="auto"``'s rule: time to scikit-learn's optimum on small and mid-size dense problems.

Usage: ``python benchmarks/bench_auto.py [--quick] [--cases a,b] [--threads 1,default] [--repeats 5]``

``bench_fit.py`` times the benchmark's named data sets; this script sweeps the shapes that the rule of
``softmaxkit.linear_model._auto`` must generalise to: scikit-learn's ``iris``, ``wine``,
``breast_cancer`` (binary) and ``digits``, and ``make_classification`` with 5 to 200 features, 3 to 50
classes and 500 to 50,000 rows, standardised (80/20 splits, as ``tests/_datasets.py`` splits
``digits``), and ill-conditioned sets (the same, unstandardised: feature scales 1e-3 to 1e3). For
each case (``C = 1``; ``alpha = 1 / (C n)``, ``2 / (C n)`` for two classes, where scikit-learn fits one
weight vector) and each BLAS thread setting, the protocol of ``bench_fit.py``'s ``time_to_optimum``: the
objective ``f*`` of ``LogisticRegression(tol=1e-10)``;
each competitor (scikit-learn lbfgs, the default ``SoftmaxRegression()``, and newton-cg and lbfgs)
climbs its tol ladder until it is within 1e-6 (relative) of ``f*``; then the chosen fits run in
interleaved rounds and the medians are compared. The 1-minute load average (``uptime``) is recorded
with each case: the development machine is shared, so read the ratios of interleaved rounds.

Results: ``results/auto.{csv,json,md}`` (``auto-quick.*`` for ``--quick``, ``auto-partial.*`` for
any other selection).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import environment, measure, write_results  # noqa: E402
from bench_fit import _competitors, climb  # noqa: E402

from softmaxkit.linear_model import _loss  # noqa: E402

RESULTS = HERE / "results"
# name -> (n_samples, n_features, n_informative, n_classes, standardised); None: a scikit-learn toy set
CASES = {
    "iris": None,
    "wine": None,
    "breast_cancer": None,
    "digits": None,
    "mc-500x5x3": (500, 5, 3, 3, True),
    "mc-2000x20x5": (2_000, 20, 10, 5, True),
    "mc-5000x50x10": (5_000, 50, 20, 10, True),
    "mc-20000x10x3": (20_000, 10, 5, 3, True),
    "mc-10000x100x20": (10_000, 100, 40, 20, True),
    "mc-50000x20x50": (50_000, 20, 15, 50, True),
    "mc-3000x200x10": (3_000, 200, 50, 10, True),
    "mc-50000x50x10": (50_000, 50, 25, 10, True),
    "raw-5000x20x5": (5_000, 20, 10, 5, False),
    "raw-20000x40x8": (20_000, 40, 20, 8, False),
}
QUICK = ("iris", "mc-500x5x3")


def load_case(name: str):
    """``(X_train, X_test, y_train, y_test)`` of one of :data:`CASES`, C-contiguous float64."""
    if CASES[name] is None:
        from sklearn import datasets

        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        standardised = True
    else:
        from sklearn.datasets import make_classification

        n, d, informative, k, standardised = CASES[name]
        X, y = make_classification(n, d, n_informative=informative, n_redundant=0, n_classes=k, random_state=0)
        if not standardised:
            X = X * np.logspace(-3, 3, d)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    if standardised:
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    return np.ascontiguousarray(X_train), np.ascontiguousarray(X_test), y_train, y_test


def _theta(model, n_classes):
    """``[coef | intercept]`` of the multinomial objective; scikit-learn's binary ``w`` is ``(-w / 2, w / 2)``."""
    coef = np.hstack([model.coef_, np.reshape(model.intercept_, (-1, 1))]).astype(np.float64)
    if n_classes == 2 and coef.shape[0] == 1:
        coef = np.vstack([-coef / 2, coef / 2])
    return coef


def time_to_optimum(name, data, threads, repeats, solvers):
    """``bench_fit.py``'s race on one case at ``C = 1`` (two classes: ``alpha = 2 / n``, the same optimum)."""
    X, _, y, _ = data
    codes = np.searchsorted(np.unique(y), y)
    n_classes = len(np.unique(y))
    alpha = (2.0 if n_classes == 2 else 1.0) / X.shape[0]

    def objective(model):
        return _loss.loss(_theta(model, n_classes), X, codes, None, alpha)

    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f_star = objective(LogisticRegression(C=1.0, tol=1e-10, max_iter=100_000).fit(X, y))
    rows, chosen = [], {}
    with threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for method, make in _competitors(1.0, alpha, solvers).items():
            tol, model, gap, _ = climb(make, X, y, lambda m: (objective(m) - f_star) / f_star)
            chosen[method] = lambda make=make, tol=tol: make(tol).fit(X, y)
            solver_used = getattr(model, "solver_", "lbfgs")
            rows.append(
                {
                    "dataset": name,
                    "threads": threads,
                    "method": method,
                    "solver_used": solver_used,
                    "tol": tol,
                    "n_iter": int(np.max(model.n_iter_)),
                    "gap": gap,
                    "reached": gap <= 1e-6,
                }
            )
        timings = measure(chosen, repeats=repeats, warmup=0)  # (the ladder's last fit was the warm-up)
    reference = timings["sklearn LogisticRegression(lbfgs)"].median
    for row in rows:
        timing = timings[row["method"]]
        row.update(seconds=timing.median, seconds_min=timing.min, seconds_max=timing.max, f_star=f_star)
        row["ratio_to_sklearn"] = timing.median / reference
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"some of {', '.join(CASES)}")
    parser.add_argument("--threads", default="1,default", help="BLAS thread settings: numbers and/or 'default'")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--solvers", default="newton-cg,lbfgs", help="ours beside the default")
    parser.add_argument("--quick", action="store_true", help=f"{', '.join(QUICK)}; one thread, one round")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.threads, args.repeats = ",".join(QUICK), "1", 1
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"--cases must be some of {', '.join(CASES)}, got {', '.join(unknown)}")
    default_run = all(getattr(args, k) == parser.get_default(k) for k in ("cases", "threads", "repeats", "solvers"))
    suffix = "-quick" if args.quick else "" if default_run else "-partial"
    solvers = [s for s in args.solvers.split(",") if s]
    threads_settings = [None if t == "default" else int(t) for t in args.threads.split(",")]
    env = environment(("softmaxkit", "numpy", "scipy", "scikit-learn", "threadpoolctl", "numba"))
    rows = []
    for name in names:
        data = load_case(name)
        X, _, y, _ = data
        for threads in threads_settings:
            label = "default" if threads is None else str(threads)
            case_rows = time_to_optimum(name, data, threads, args.repeats, solvers)
            load = round(os.getloadavg()[0], 2)
            for row in case_rows:
                row["threads"] = label
                row.update(shape=f"{X.shape[0]}x{X.shape[1]}x{len(np.unique(y))}", load_1m=load)
                print(
                    f"{name:16s} threads={label:7s} {row['method']:46s} {row['solver_used']:9s} tol={row['tol']:<6g} "
                    f"{1e3 * row['seconds']:9.2f} ms ratio={row['ratio_to_sklearn']:.2f} it={row['n_iter']} "
                    f"gap={row['gap']:.1e} load={load}",
                    flush=True,
                )
            rows += case_rows
        ours = [r for r in rows if r["method"].endswith("default (auto)")]
        met = sum(r["reached"] and r["ratio_to_sklearn"] <= 0.5 for r in ours)
        notes = [
            f"command: `python benchmarks/bench_auto.py {' '.join(sys.argv[1:] if argv is None else argv)}`".strip(),
            f"cases done: {names.index(name) + 1} of {len(names)}"
            + ("" if name == names[-1] else " (the run is incomplete)"),
            f"the default at most 0.5x scikit-learn's time (at the optimum) in {met} of {len(ours)} rows",
            "load_1m: the 1-minute load average when each case's fits were timed (a shared 2-core machine)",
        ]
        write_results(
            f"auto{suffix}",
            rows,
            env,
            title="solver='auto' on small and mid-size dense problems: time to scikit-learn's optimum (1e-6)",
            columns=[
                "dataset",
                "shape",
                "threads",
                "method",
                "solver_used",
                "tol",
                "seconds",
                "ratio_to_sklearn",
                "n_iter",
                "gap",
                "load_1m",
            ],
            notes=notes,
            results_dir=args.out,
        )
    print(f"results written to {args.out}/auto{suffix}.*; {time.strftime('%H:%M:%S')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
