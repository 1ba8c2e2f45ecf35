"""Time to scikit-learn's optimum, defaults against defaults, and peak memory: SoftmaxRegression vs LogisticRegression.

Usage: ``python benchmarks/bench_fit.py [--quick] [--datasets a,b] [--threads 1,default] [--solvers ...] [--extra]``

Cases (``--datasets``): the standardised ``letter``, ``pendigits``, ``satimage`` and ``covtype`` of
``../shared/datasets`` and scikit-learn's ``digits`` (C in ``--cs``, default 1 and 100); ``news20``
(sparse word counts, ``../shared/datasets/news20``, a stratified 75/25 split, C in ``--news20-cs``,
default 1 and 10); ``synthetic`` = ``make_classification(200_000, 100, n_informative=50, n_classes=20)`` and ``wide`` =
``make_classification(50_000, 500, n_informative=100, n_classes=10)`` (80/20 splits, standardised,
C = 1). ``--extra`` adds shapes the package was not tuned on (few features and many classes, many
features, an unstandardised set, a sparse one-hot set; see ``EXTRA``).

For each case and each BLAS thread setting (``--threads``: 1 and the library default, 2 on the
development machine):

1. ``f*`` is the objective ``L`` (see ``SoftmaxRegression``) of ``LogisticRegression(C=C, tol=1e-10,
   max_iter=100_000)``, with ``alpha = 1 / (C n)`` (computed once per case);
2. **time to the optimum**: each competitor climbs its tol ladder (1e-2, 1e-3, ..., from scratch
   each time) until its objective is within 1e-6 (relative) of ``f*``; then the competitors' chosen
   fits run in interleaved rounds (one fit of each per round, the ladder's last fit being the warm-up)
   and the median wall time is reported. Competitors: scikit-learn lbfgs (its tol ladder), the default
   ``SoftmaxRegression(alpha=...)`` (``solver="auto"``, its tol ladder) and each of ``--solvers``;
3. **defaults against defaults**: ``LogisticRegression(C=C)`` and ``SoftmaxRegression(alpha=1 / (C n))``
   at their default ``tol`` and ``max_iter``, interleaved: time, objective gap and test accuracy;
4. **peak memory** (one thread only): each default fit in a forked child process, its peak resident
   memory above what it started with (``getrusage`` ``ru_maxrss``), beside the size of ``X``.

Results: ``results/fit.{csv,json,md}`` (time to optimum), ``results/fit_defaults.*`` and
``results/fit_memory.*`` (the conventions of ``_common.write_results``); any other selection than
the default run (``--quick``, ``--datasets``, ...) writes ``*-partial.*`` instead, leaving the full
tables alone. The machine is shared: timings are noisy, so read the ratios of interleaved rounds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from softmaxkit.linear_model import SoftmaxRegression, _loss

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import environment, measure, write_results  # noqa: E402
from _datasets import GENERATED, REAL_DATASETS, load_generated, load_news20, load_real_dataset  # noqa: E402

DATASETS = HERE.parent.parent / "shared" / "datasets"
RESULTS = HERE / "results"
TARGET_GAP = 1e-6
TOLS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
DEFAULT_DATASETS = ("letter", "pendigits", "satimage", "covtype", "digits", "synthetic", "wide", "news20")
# Shapes beyond the benchmark's own (--extra): name -> (n_samples, n_features, n_informative, n_classes, how)
EXTRA = {
    "few-features-many-classes": (60_000, 8, 8, 50, "standardised"),
    "many-features": (5_000, 2_000, 200, 5, "standardised"),
    "unstandardised": (30_000, 40, 20, 8, "raw, feature scales 1e-3 to 1e3"),
    "sparse-onehot": (50_000, 2_000, 0, 12, "sparse one-hot of 20 categorical columns"),
}


def _extra_dataset(name):
    n, d, informative, k, _ = EXTRA[name]
    if name == "sparse-onehot":
        rng = np.random.default_rng(0)
        codes = rng.zipf(1.5, size=(n, 20)) % (d // 20)  # skewed category frequencies
        columns = (codes + np.arange(20) * (d // 20)).ravel()
        X = scipy.sparse.csr_matrix((np.ones(n * 20), (np.repeat(np.arange(n), 20), columns)), shape=(n, d))
        w = rng.normal(size=(d, k))
        y = np.argmax(X @ w + rng.gumbel(size=(n, k)), axis=1)
        return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    X, y = make_classification(n, d, n_informative=informative, n_redundant=0, n_classes=k, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    if name == "unstandardised":
        scales = np.logspace(-3, 3, d)
        return np.ascontiguousarray(X_train * scales), np.ascontiguousarray(X_test * scales), y_train, y_test
    scaler = StandardScaler().fit(X_train)
    return (
        np.ascontiguousarray(scaler.transform(X_train)),
        np.ascontiguousarray(scaler.transform(X_test)),
        y_train,
        y_test,
    )


def load_dataset(name: str, root: Path = DATASETS):
    """``(X_train, X_test, y_train, y_test)``: dense standardised, or sparse (news20, sparse-onehot)."""
    if name in REAL_DATASETS:
        return load_real_dataset(name, root)
    if name == "news20":
        return load_news20(root)
    if name == "digits" or name in GENERATED:
        return load_generated(name)
    if name in EXTRA:
        return _extra_dataset(name)
    raise ValueError(f"dataset must be one of {', '.join(DEFAULT_DATASETS + tuple(EXTRA))}, got {name!r}")


def case_cs(name: str, cs: list[float], news20_cs=(1.0, 10.0)) -> list[float]:
    if name == "news20":
        return list(news20_cs)
    if name in ("synthetic", "wide") or name in EXTRA:
        return cs[:1]
    return cs


def objective(model, X, codes, alpha) -> float:
    return _loss.loss(np.hstack([model.coef_, model.intercept_[:, None]]).astype(np.float64), X, codes, None, alpha)


def _fit(make, X, y):
    model = make()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    return model, time.perf_counter() - start


def climb(make, X, y, gap_of):
    """The first tol of :data:`TOLS` whose fit is within the target; ``(tol, model, gap, ladder)``."""
    ladder = []
    for tol in TOLS:
        model, seconds = _fit(lambda: make(tol), X, y)
        gap = gap_of(model)
        ladder.append({"tol": tol, "seconds": seconds, "gap": gap})
        if gap <= TARGET_GAP:
            return tol, model, gap, ladder
    return TOLS[-1], model, gap, ladder


def _competitors(C, alpha, solvers):
    """name -> make(tol) for the time-to-optimum race; the first is the reference scikit-learn fit."""
    makers = {"sklearn LogisticRegression(lbfgs)": lambda tol: LogisticRegression(C=C, tol=tol, max_iter=100_000)}
    makers["softmaxkit SoftmaxRegression() default (auto)"] = lambda tol: SoftmaxRegression(
        alpha=alpha, tol=tol, max_iter=100_000
    )
    for solver in solvers:
        label = solver if ":" not in solver else solver.replace(":", ", backend=") + " cpu"
        name, _, backend = solver.partition(":")
        device = {"backend": "torch", "device": "cpu"} if backend == "torch" else {}
        makers[f"softmaxkit SoftmaxRegression({label})"] = lambda tol, name=name, device=device: SoftmaxRegression(
            alpha=alpha, solver=name, tol=tol, max_iter=100_000, **device
        )
    return makers


def time_to_optimum(name, C, data, f_star, threads, repeats, solvers):
    X, X_test, y, y_test = data
    codes = np.searchsorted(np.unique(y), y)
    alpha = 1.0 / (C * X.shape[0])

    def gap_of(model):
        return (objective(model, X, codes, alpha) - f_star) / f_star

    chosen, rows = {}, []
    for method, make in _competitors(C, alpha, solvers).items():
        tol, model, gap, ladder = climb(make, X, y, gap_of)
        chosen[method] = lambda make=make, tol=tol: make(tol).fit(X, y)
        rows.append(
            {
                "dataset": name,
                "C": C,
                "threads": threads,
                "method": method,
                "tol": tol,
                "n_iter": int(np.max(model.n_iter_)),
                "gap": gap,
                "reached": gap <= TARGET_GAP,
                "test_accuracy": float(model.score(X_test, y_test)),
                "solver_used": getattr(model, "solver_", "lbfgs"),
                "ladder": ladder,
            }
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        timings = measure(chosen, repeats=repeats, warmup=0)  # the ladder's last fit was the warm-up
    reference = timings["sklearn LogisticRegression(lbfgs)"].median
    for row in rows:
        timing = timings[row["method"]]
        row.update(seconds=timing.median, seconds_min=timing.min, seconds_max=timing.max, repeats=timing.repeats)
        row["ratio_to_sklearn"] = timing.median / reference
    return rows


def defaults(name, C, data, f_star, threads, repeats):
    X, X_test, y, y_test = data
    codes = np.searchsorted(np.unique(y), y)
    alpha = 1.0 / (C * X.shape[0])
    makers = {
        "sklearn LogisticRegression()": lambda: LogisticRegression(C=C),
        "softmaxkit SoftmaxRegression()": lambda: SoftmaxRegression(alpha=alpha),
    }
    rows = []
    for method, make in makers.items():
        model, _ = _fit(make, X, y)  # (the warm-up)
        rows.append(
            {
                "dataset": name,
                "C": C,
                "threads": threads,
                "method": method,
                "tol": model.tol,
                "n_iter": int(np.max(model.n_iter_)),
                "gap": (objective(model, X, codes, alpha) - f_star) / f_star,
                "test_accuracy": float(model.score(X_test, y_test)),
                "solver_used": getattr(model, "solver_", "lbfgs"),
            }
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        timings = measure({m: lambda make=make: make().fit(X, y) for m, make in makers.items()}, repeats=repeats)
    reference = timings["sklearn LogisticRegression()"].median
    for row in rows:
        row.update(seconds=timings[row["method"]].median, ratio_to_sklearn=timings[row["method"]].median / reference)
    return rows


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_child(make, X, y, queue):
    start = _rss_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        make().fit(X, y)
    queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start)


def peak_memory(name, C, data):
    """Peak resident memory of each default fit above its start, in a forked child (one BLAS thread)."""
    X, _, y, _ = data
    alpha = 1.0 / (C * X.shape[0])
    x_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes if scipy.sparse.issparse(X) else X.nbytes
    context = multiprocessing.get_context("fork")
    rows = []
    makers = {
        "sklearn LogisticRegression()": lambda: LogisticRegression(C=C),
        "softmaxkit SoftmaxRegression()": lambda: SoftmaxRegression(alpha=alpha),
    }
    for method, make in makers.items():
        queue = context.Queue()
        child = context.Process(target=_peak_child, args=(make, X, y, queue))
        child.start()
        extra = queue.get()
        child.join()
        rows.append(
            {"dataset": name, "C": C, "method": method, "X_MiB": x_bytes / 2**20, "peak_extra_MiB": extra / 2**20}
        )
    sklearn_extra = rows[0]["peak_extra_MiB"]
    for row in rows:
        row["over_sklearn_in_X"] = (row["peak_extra_MiB"] - sklearn_extra) / max(row["X_MiB"], 1e-9)
    return rows


def _summary(rows, planned=(), key="ratio_to_sklearn"):
    """The target's tally over the cases that ran (``planned``: the ``(dataset, C)`` of the whole run)."""
    ours = [r for r in rows if r["method"].startswith("softmaxkit SoftmaxRegression() default")]
    met = [r for r in ours if r["reached"] and r[key] <= 0.5]
    missed = [r for r in ours if r not in met]
    ran = list(dict.fromkeys((r["dataset"], r["C"]) for r in rows))
    text = (
        f"target (default solver at most 0.5x scikit-learn's time, at the same optimum) met in {len(met)} of the "
        f"{len(ours)} (case, threads) rows that ran ({len(ran)} of {len(planned) or len(ran)} cases)"
    )
    if missed:
        text += "; not met: " + "; ".join(
            f"{r['dataset']} C={r['C']:g} threads={r['threads']} (ratio {r[key]:.2f}"
            f"{'' if r['reached'] else ', gap not reached'})"
            for r in missed
        )
    not_run = [case for case in planned if case not in ran]
    if not_run:
        text += "; NOT RUN (yet): " + ", ".join(f"{name} C={C:g}" for name, C in not_run)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    parser.add_argument("--cs", default="1,100", help="values of C for the dense real sets")
    parser.add_argument("--news20-cs", default="1,10", help="values of C for news20")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (heavy cases: 1)")
    parser.add_argument("--threads", default="1,default", help="BLAS thread settings: numbers and/or 'default'")
    parser.add_argument(
        "--solvers", default="newton-cg,lbfgs", help="ours beside the default, e.g. newton-cg,lbfgs,newton-cg:torch"
    )
    parser.add_argument("--extra", action="store_true", help="add the shapes of EXTRA (not tuned on)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory fits")
    parser.add_argument("--quick", action="store_true", help="pendigits, C=1, one thread, one round (a smoke run)")
    parser.add_argument("--backends", default="numpy", help="(kept for compatibility) numpy, or numpy,torch")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    options = (
        "datasets",
        "cs",
        "news20_cs",
        "repeats",
        "threads",
        "solvers",
        "extra",
        "no_memory",
        "quick",
        "backends",
    )
    suffix = "" if all(getattr(args, k) == parser.get_default(k) for k in options) else "-partial"
    if args.quick:
        args.datasets, args.cs, args.repeats, args.threads, args.no_memory = "pendigits", "1", 1, "1", True
    names = [n for n in args.datasets.split(",") if n] + (list(EXTRA) if args.extra else [])
    if any(n in REAL_DATASETS or n == "news20" for n in names) and not DATASETS.is_dir():
        print(f"datasets not found at {DATASETS}; run with --datasets digits,synthetic,wide")
        return 2
    cs = [float(c) for c in args.cs.split(",")]
    news20_cs = [float(c) for c in args.news20_cs.split(",")]
    solvers = [s for s in args.solvers.split(",") if s]
    if "torch" in args.backends.split(","):
        solvers += [f"{s}:torch" for s in solvers if ":" not in s]
    threads_settings = [None if t == "default" else int(t) for t in args.threads.split(",")]
    if any(":torch" in s for s in solvers):
        import torch

        torch.set_num_threads(1 if threads_settings == [1] else torch.get_num_threads())
    env = environment(("softmaxkit", "numpy", "scipy", "scikit-learn", "threadpoolctl", "numba"))
    planned = [(name, C) for name in names for C in case_cs(name, cs, news20_cs)]
    race, plain, memory = [], [], []
    for name in names:
        data = load_dataset(name)
        X, _, y, _ = data
        for C in case_cs(name, cs, news20_cs):
            codes = np.searchsorted(np.unique(y), y)
            alpha = 1.0 / (C * X.shape[0])
            with threadpool_limits(1), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                start = time.perf_counter()
                reference = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(X, y)
                print(f"{name} C={C:g}: reference fit {time.perf_counter() - start:.1f} s", flush=True)
            f_star = objective(reference, X, codes, alpha)
            heavy = X.shape[0] * X.shape[1] > 10**7 or scipy.sparse.issparse(X)
            repeats = 1 if heavy else args.repeats
            for threads in threads_settings:
                label = "default" if threads is None else str(threads)
                with threadpool_limits(threads):
                    rows = time_to_optimum(name, C, data, f_star, label, repeats, solvers)
                    rows_defaults = defaults(name, C, data, f_star, label, repeats)
                load = round(os.getloadavg()[0], 2)
                for row in rows + rows_defaults:
                    row["f_star"] = f_star
                    row["load_1m"] = load
                    print(
                        f"  threads={label:7s} {row['method']:50s} tol={row['tol']:<6g} {row['seconds']:8.3f}s "
                        f"it={row['n_iter']:<5d} gap={row['gap']:.1e} acc={100 * row['test_accuracy']:.2f} "
                        f"ratio={row['ratio_to_sklearn']:.2f}",
                        flush=True,
                    )
                race += rows
                plain += rows_defaults
            if not args.no_memory:
                with threadpool_limits(1):
                    memory += peak_memory(name, C, data)
                for row in memory[-2:]:
                    print(f"  memory {row['method']:50s} +{row['peak_extra_MiB']:.1f} MiB (X {row['X_MiB']:.1f} MiB)")
            _write(race, plain, memory, env, suffix, args, planned)
    print(_summary(race, planned))
    print(f"results written to {args.out}/fit{suffix}.* (and fit_defaults{suffix}.*, fit_memory{suffix}.*)")
    return 0


def _write(race, plain, memory, env, suffix, args, planned):
    command = f"python benchmarks/bench_fit.py {' '.join(sys.argv[1:])}".strip()
    done = len(dict.fromkeys((r["dataset"], r["C"]) for r in race))
    common = [
        f"command: `{command}`",
        f"cases done: {done} of {len(planned)}" + ("" if done == len(planned) else " (the run is incomplete)"),
        "machine shared with other jobs: read the ratios of interleaved rounds; load_1m is the 1-minute load"
        " average (`uptime`) when each case's fits were timed",
    ]
    write_results(
        f"fit{suffix}",
        race,
        env,
        title="Fit benchmark: time to scikit-learn's optimum (within 1e-6 of LogisticRegression(tol=1e-10))",
        columns=[
            "dataset",
            "C",
            "threads",
            "method",
            "solver_used",
            "tol",
            "seconds",
            "ratio_to_sklearn",
            "n_iter",
            "gap",
            "test_accuracy",
            "load_1m",
        ],
        notes=common + [_summary(race, planned)] if race else common,
        results_dir=args.out,
    )
    write_results(
        f"fit_defaults{suffix}",
        plain,
        env,
        title="Fit benchmark: defaults against defaults (LogisticRegression(C) vs SoftmaxRegression(alpha=1/(C n)))",
        columns=[
            "dataset",
            "C",
            "threads",
            "method",
            "solver_used",
            "tol",
            "seconds",
            "ratio_to_sklearn",
            "n_iter",
            "gap",
            "test_accuracy",
            "load_1m",
        ],
        notes=common,
        results_dir=args.out,
    )
    if memory:
        write_results(
            f"fit_memory{suffix}",
            memory,
            env,
            title="Fit benchmark: peak memory of the default fits (above the process's start, one BLAS thread)",
            columns=["dataset", "C", "method", "X_MiB", "peak_extra_MiB", "over_sklearn_in_X"],
            notes=common + ["over_sklearn_in_X: (ours - scikit-learn's) peak extra memory, in units of X's size"],
            results_dir=args.out,
        )


if __name__ == "__main__":
    sys.exit(main())
