"""Benchmark: learning from a stream -- ``partial_fit`` on shuffled 256-row mini-batches, one call each, defaults.

Usage (from the repository root)::

    python benchmarks/bench_stream.py            # writes results/stream.{csv,json,md}
    python benchmarks/bench_stream.py --quick    # pendigits, 1 and 3 passes: results/stream-quick.*

For each dataset (the standardised ``letter``, ``pendigits``, ``satimage`` and ``covtype`` of
``../shared/datasets`` and the sparse word counts of ``news20``, split as in ``tests/_datasets.py``),
every pass visits the training rows in a fresh seeded permutation, 256 rows per ``partial_fit``
call, the same stream for every method. The dense sets are standardised with the mean and standard
deviation of their training part: what a user of ``partial_fit`` gets from a first pass over the stream
for the statistics (``StandardScaler().partial_fit`` on each batch, or ``softmaxkit.sources.feature_moments``),
since averaged SGD does not rescale features itself (measured with averaged SGD as the default: raw covtype
1.2 / 1.1 after 10 / 30 passes, make_classification with scales 1e-3 to 1e3 and offsets up to 100 0.34 / 0.29,
raw digits 48 / 31; the incremental Newton does not depend on the scales). news20's word counts are not rescaled (counts are what text models see). The
methods:

* ``softmaxkit SoftmaxRegression()``: the default estimator (the incremental Newton of
  ``softmaxkit.linear_model._stream_newton`` on the four dense sets; on news20, whose 1.2 million parameters are
  too many for it, L-BFGS on the remembered rows, ``softmaxkit.linear_model._stream_replay``);
* ``sklearn SGDClassifier(loss="log_loss")``: one-vs-rest logistic regression, default settings;
* ``sklearn MLPClassifier(hidden_layer_sizes=())``: a softmax layer trained by Adam, defaults.

After 1, 3, 10 and 30 passes (``--passes``): the relative gap ``(L - L*) / L*`` of the multinomial
objective of ``SoftmaxRegression`` (default ``alpha=1e-4``) at each method's coefficients, ``L*``
its full-batch optimum (newton-cg, or lbfgs on news20, at ``tol=1e-10``), and the test accuracy
(beside the optimum's). The other two methods minimise other objectives (one-vs-rest; MLP's
penalty is ``alpha / (2 n_batch)``), so their gap says how far their model is from this optimum,
not how well they solve their own problem. Seconds are the wall time of the ``partial_fit`` calls.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import environment, write_results  # noqa: E402
from _datasets import REAL_DATASETS, load_news20, load_real_dataset  # noqa: E402

DATASETS = HERE.parent.parent / "shared" / "datasets"
RESULTS = HERE / "results"
ALPHA = 1e-4  # SoftmaxRegression's default
BATCH = 256


def _load(name):
    if name == "news20":
        return load_news20(DATASETS)
    return load_real_dataset(name, DATASETS)


def _objective(coef, intercept, X, codes):
    from softmaxkit.linear_model._loss import loss

    return loss(np.hstack([coef, intercept[:, None]]), X, codes, alpha=ALPHA)


def _methods(classes):
    from sklearn.linear_model import SGDClassifier
    from sklearn.neural_network import MLPClassifier

    from softmaxkit.linear_model import SoftmaxRegression

    def mlp_coef(model):
        return model.coefs_[0].T, model.intercepts_[0]

    return {
        "softmaxkit SoftmaxRegression()": (SoftmaxRegression(), lambda m: (m.coef_, m.intercept_)),
        'sklearn SGDClassifier(loss="log_loss")': (
            SGDClassifier(loss="log_loss", random_state=0),
            lambda m: (m.coef_, m.intercept_),
        ),
        "sklearn MLPClassifier(hidden_layer_sizes=())": (
            MLPClassifier(hidden_layer_sizes=(), random_state=0),
            mlp_coef,
        ),
    }


def run_dataset(name, passes):
    from softmaxkit.linear_model import SoftmaxRegression

    X, X_test, y, y_test = _load(name)
    classes = np.unique(y)
    codes = np.searchsorted(classes, y)
    solver = "lbfgs" if name == "news20" else "newton-cg"
    start = time.perf_counter()
    optimum = SoftmaxRegression(solver=solver, tol=1e-10, max_iter=10_000).fit(X, y)
    optimum_s = time.perf_counter() - start
    f_star = _objective(optimum.coef_, optimum.intercept_, X, codes)
    optimum_accuracy = optimum.score(X_test, y_test)
    print(f"{name}: {X.shape[0]} x {X.shape[1]}, {len(classes)} classes, L* = {f_star:.6g} ({optimum_s:.1f} s)")
    rows = []
    for method, (model, coef_of) in _methods(classes).items():
        rng = np.random.default_rng(0)
        seconds = 0.0
        for done in range(1, max(passes) + 1):
            order = rng.permutation(X.shape[0])
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLP's and SGD's convergence warnings mean nothing here
                for first in range(0, len(order), BATCH):
                    rows_ = order[first : first + BATCH]
                    model.partial_fit(X[rows_], y[rows_], classes=classes)
            seconds += time.perf_counter() - start
            if done in passes:
                coef, intercept = coef_of(model)
                gap = (_objective(np.asarray(coef), np.asarray(intercept), X, codes) - f_star) / f_star
                row = {
                    "dataset": name,
                    "method": method,
                    "passes": done,
                    "gap": float(gap),
                    "test_accuracy": float(model.score(X_test, y_test)),
                    "optimum_accuracy": float(optimum_accuracy),
                    "seconds": seconds,
                    "n_train": int(X.shape[0]),
                    "n_features": int(X.shape[1]),
                    "n_classes": len(classes),
                }
                rows.append(row)
                print(
                    f"  {method:48s} {done:3d} passes: gap {gap:.3g}, accuracy {row['test_accuracy']:.4f}", flush=True
                )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join([*REAL_DATASETS, "news20"]))
    parser.add_argument("--passes", default="1,3,10,30", help="passes after which to measure (default 1,3,10,30)")
    parser.add_argument("--quick", action="store_true", help="pendigits, 1 and 3 passes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.passes = "pendigits", "1,3"
    names = [n for n in args.datasets.split(",") if n]
    unknown = sorted(set(names) - {*REAL_DATASETS, "news20"})
    if unknown:
        parser.error(f"--datasets must name {', '.join([*REAL_DATASETS, 'news20'])}, got {', '.join(unknown)}")
    passes = sorted({int(p) for p in args.passes.split(",") if p})
    if not passes or passes[0] < 1:
        parser.error(f"--passes must be positive integers, got {args.passes!r}")
    if not DATASETS.is_dir():
        parser.error(f"datasets not found at {DATASETS}")
    env = environment(("softmaxkit", "numpy", "scipy", "scikit-learn"))
    rows = [row for name in names for row in run_dataset(name, passes)]
    name = "stream-quick" if args.quick else "stream"
    write_results(
        name,
        rows,
        env,
        title="partial_fit on a shuffled stream of 256-row mini-batches (defaults)",
        columns=["dataset", "method", "passes", "gap", "test_accuracy", "optimum_accuracy", "seconds"],
        notes=[
            "gap: (L - L*) / L* of SoftmaxRegression's objective (alpha=1e-4) at each method's coefficients",
            "target for SoftmaxRegression(): gap <= 1e-2 after 10 passes and <= 1e-3 after 30",
        ],
        results_dir=args.out,
    )
    print(f"results written to {args.out}/{name}.*")


if __name__ == "__main__":
    main()
