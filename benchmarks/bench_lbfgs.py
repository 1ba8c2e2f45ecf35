"""The package's L-BFGS against SciPy's L-BFGS-B, on the same objective to the same stopping rule.

What ``minimize_lbfgs`` runs since it stopped calling SciPy: ``ours`` is
``softmaxkit.linear_model._solvers.minimize_lbfgs`` (the package's L-BFGS, ``_lbfgs.py``), ``scipy``
is SciPy's L-BFGS-B without bounds stopped by the same estimated relative gap from its callback
(``tests/_scipy_lbfgs.py``, what ``minimize_lbfgs`` was before). Both minimise the same
:class:`LinearLoss` from the same start to the same ``tol``; reported per case and BLAS thread setting
(``--threads``): wall and CPU time of the fit (medians of interleaved rounds), iterations, the time per
iteration besides the evaluations (the solver's own work), the objective reached, and the load.

Cases: news20 (sparse word counts, C = 1, ``tol`` 1e-6, 1,241,240 parameters), a sparse
``make_classification`` (20,000 x 5,000, 1 % dense, 10 classes), a sparse tf-idf-like set of 50
classes with sample weights, and dense ``letter`` and ``digits`` (``solver="lbfgs"``, where SciPy's
per-iteration work is small); ``--quick``: the tf-idf set at 2,000 x 5,000 and digits, one thread, one round.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse
from sklearn.datasets import make_classification
from threadpoolctl import threadpool_limits

from softmaxkit.linear_model import _fitting
from softmaxkit.linear_model._loss import LinearLoss
from softmaxkit.linear_model._solvers import minimize_lbfgs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import environment, measure, write_results  # noqa: E402
from _datasets import load_generated, load_news20, load_real_dataset  # noqa: E402
from _scipy_lbfgs import scipy_lbfgs  # noqa: E402

DATASETS = HERE.parent.parent / "shared" / "datasets"
CASES = ("news20", "sparse-classification", "tfidf-50-classes", "letter", "digits")


def _case(name, quick=False):
    """``(X, codes, sample_weight, C, tol)`` (``quick``: the tf-idf set at a quarter of its rows and features)."""
    if name == "news20":
        X, _, y, _ = load_news20(DATASETS)
        return X, np.unique(y, return_inverse=True)[1], None, 1.0, 1e-6
    if name == "sparse-classification":
        X, y = make_classification(20_000, 5_000, n_informative=200, n_classes=10, random_state=0)
        rng = np.random.default_rng(0)
        X = scipy.sparse.csr_matrix(X * (rng.uniform(size=X.shape) < 0.01))
        return X, y, None, 1.0, 1e-6
    if name == "tfidf-50-classes":
        rng = np.random.default_rng(1)
        n, d = (2_000, 5_000) if quick else (8_000, 20_000)
        counts = scipy.sparse.random(n, d, density=0.002, format="csr", random_state=1)
        counts.data = 1.0 + rng.poisson(1.0, counts.nnz)
        idf = np.log(counts.shape[0] / (1.0 + np.bincount(counts.indices, minlength=counts.shape[1])))
        X = scipy.sparse.csr_matrix(counts @ scipy.sparse.diags(idf))
        y = np.asarray((X @ rng.normal(size=(X.shape[1], 50))).argmax(axis=1)).ravel()
        return X, y, rng.uniform(0.5, 2.0, size=X.shape[0]), 10.0, 1e-6
    if name == "letter":
        X, _, y, _ = load_real_dataset("letter", DATASETS)
        return X, np.unique(y, return_inverse=True)[1], None, 1.0, 1e-8
    X, _, y, _ = load_generated("digits")
    return X, y, None, 1.0, 1e-8


def run_case(name, threads, repeats, quick=False):
    X, codes, weights, C, tol = _case(name, quick)
    k = int(codes.max()) + 1
    n = X.shape[0]
    loss = LinearLoss(X, codes, weights, 1.0 / (C * n), n_classes=k, fit_intercept=True, label_smoothing=0.0)
    x0 = _fitting.initial_theta(
        None, None, n_classes=k, n_features=X.shape[1], fit_intercept=True, target=codes, sample_weight=weights
    )
    evaluations = {"ours": [0, 0.0], "scipy": [0, 0.0]}  # count and seconds of the last fit
    results = {}

    def objective(which):
        def fun(x):
            start = time.perf_counter()
            f, g = loss.loss_gradient(x)
            evaluations[which][0] += 1
            evaluations[which][1] += time.perf_counter() - start
            return f, g.ravel()

        return fun

    def fit(which):
        evaluations[which][:] = [0, 0.0]
        start = time.perf_counter()
        if which == "ours":
            r = minimize_lbfgs(objective(which), x0, max_iter=5000, tol=tol)
            n_iter, f = r.n_iter, r.loss_curve[-1]
        else:
            n_iter, f, _ = scipy_lbfgs(objective(which), x0, max_iter=5000, tol=tol)
        wall = time.perf_counter() - start
        results[which] = (n_iter, f, (wall - evaluations[which][1]) / max(n_iter, 1), evaluations[which][0])

    load = os.getloadavg()[0]
    with threadpool_limits(threads) if threads else _nothing():
        timings = measure({w: (lambda w=w: fit(w)) for w in ("ours", "scipy")}, repeats=repeats, warmup=0)
    rows = []
    for which, timing in timings.items():
        n_iter, f, solver_s, n_eval = results[which]
        rows.append(
            {
                "case": name,
                "shape": f"{n} x {X.shape[1]} x {k}" + (" sparse" if scipy.sparse.issparse(X) else ""),
                "threads": threads or "default",
                "solver": which,
                "median_s": timing.median,
                "cpu_s": timing.cpu_median,
                "ratio": None,
                "iterations": n_iter,
                "evaluations": n_eval,
                "solver_ms_per_iter": 1e3 * solver_s,
                "objective": f,
                "tol": tol,
                "load": load,
            }
        )
    ours, theirs = rows
    ours["ratio"] = ours["median_s"] / theirs["median_s"]
    return rows


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--threads", default="1,default", help="BLAS thread settings: numbers and/or 'default'")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds")
    parser.add_argument("--quick", action="store_true", help="the small sparse set and digits, one thread, one round")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    suffix = "-quick" if args.quick else ("" if args.cases == ",".join(CASES) else "-partial")
    if args.quick:
        args.cases, args.threads, args.repeats = "tfidf-50-classes,digits", "1", 1
    names = [c for c in args.cases.split(",") if c]
    if any(n in ("news20", "letter") for n in names) and not DATASETS.is_dir():
        print(f"datasets not found at {DATASETS}; run with --cases sparse-classification,tfidf-50-classes,digits")
        return 2
    rows = []
    for name in names:
        for threads in [None if t == "default" else int(t) for t in args.threads.split(",")]:
            rows += run_case(name, threads, args.repeats, args.quick)
            for row in rows[-2:]:
                print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    columns = ["case", "shape", "threads", "solver", "median_s", "cpu_s", "ratio", "iterations", "evaluations"]
    columns += ["solver_ms_per_iter", "objective", "load"]
    notes = [
        "ours: the package's L-BFGS (minimize_lbfgs); scipy: SciPy's L-BFGS-B stopped by the same rule "
        "(tests/_scipy_lbfgs.py). ratio: ours / scipy (median wall time of interleaved rounds). "
        "solver_ms_per_iter: the fit's time besides its evaluations, per iteration.",
    ]
    write_results(
        f"lbfgs{suffix}",
        rows,
        environment(("softmaxkit", "numpy", "scipy", "numba")),
        title="L-BFGS: ours vs SciPy's L-BFGS-B",
        columns=columns,
        notes=notes,
        results_dir=args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
