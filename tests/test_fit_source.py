"""SoftmaxRegression.fit(source): the streamed fit is the in-memory fit, in bounded memory.

The full-batch solvers must reach the in-memory optimum to 1e-8 relative (objective and
coefficients) from a CSV file and from a folder of Parquet files, with and without the float32
cache (whose result is the in-memory fit on the float32-rounded rows); the peak memory of a fit
on a file several times its budget is measured in a subprocess.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.exceptions import ConvergenceWarning

from softmaxkit.linear_model import SoftmaxRegression
from softmaxkit.linear_model._source_fit import RowSums, scan, streamed_objective
from softmaxkit.sources import ArraySource, CsvSource, ParquetSource, cache_source

N, D = 1203, 7  # odd sizes: batches of the budgets below do not divide them
EXACT = {"alpha": 1e-3, "tol": 1e-13, "max_iter": 500}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) * rng.uniform(0.5, 3.0, size=D)
    logits = X @ rng.normal(size=(D, 4))
    y = np.array(["ant", "bee", "cat", "dog"])[np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)]
    w = rng.uniform(0.2, 2.0, size=N)
    return X, y, w


def _write_csv(path, X, y, w):
    """A CSV whose values parse back exactly (``repr`` of each float: the shortest round-tripping digits)."""
    with open(path, "w") as stream:
        stream.write(",".join([*(f"f{j}" for j in range(D)), "weight", "label"]) + "\n")
        for row, weight, label in zip(X.tolist(), w.tolist(), y.tolist()):
            stream.write(",".join([*map(repr, row), repr(weight), label]) + "\n")


def _write_parquet_folder(folder, X, y, w=None, parts=3):
    folder.mkdir()
    bounds = np.linspace(0, len(y), parts + 1).astype(int)
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        columns = {f"f{j}": X[a:b, j] for j in range(D)}
        if w is not None:
            columns["weight"] = w[a:b]
        columns["label"] = y[a:b]
        pq.write_table(pa.table(columns), folder / f"part-{k}.parquet")


def _relative(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _assert_same_fit(streamed, in_memory):
    assert streamed.solver_ == in_memory.solver_
    np.testing.assert_array_equal(streamed.classes_, in_memory.classes_)
    assert abs(streamed.loss_curve_[-1] - in_memory.loss_curve_[-1]) <= 1e-8 * abs(in_memory.loss_curve_[-1])
    assert _relative(streamed.coef_, in_memory.coef_) <= 1e-8
    scale = max(np.max(np.abs(in_memory.intercept_)), np.max(np.abs(in_memory.coef_)))
    assert np.max(np.abs(streamed.intercept_ - in_memory.intercept_)) <= 1e-8 * scale


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    X, y, w = _data()
    folder = tmp_path_factory.mktemp("fit-source")
    _write_csv(folder / "train.csv", X, y, w)
    _write_parquet_folder(folder / "parts", X, y, w)
    return X, y, w, folder


def _source(kind, folder, *, weighted, max_bytes):
    options = {"target": "label", "weight": "weight" if weighted else None, "max_bytes": max_bytes}
    if not weighted:
        options["features"] = [f"f{j}" for j in range(D)]
    if kind == "csv":
        return CsvSource(folder / "train.csv", **options)
    return ParquetSource(folder / "parts", **options)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("cached", [False, True], ids=["direct", "float32-cache"])
def test_streamed_full_batch_fit_equals_in_memory_fit(files, solver, kind, cached):
    X, y, w, folder = files
    source = _source(kind, folder, weighted=False, max_bytes=100 * (8 * D + 8))  # about 12 batches
    rows = X
    if cached:
        source = cache_source(source, dtype=np.float32)
        rows = X.astype(np.float32).astype(np.float64)  # what the cache holds, as the float64 fit computes it
    streamed = SoftmaxRegression(solver=solver, **EXACT).fit(source)
    in_memory = SoftmaxRegression(solver=solver, **EXACT).fit(rows, y)
    _assert_same_fit(streamed, in_memory)
    assert streamed.n_features_in_ == D
    assert not hasattr(streamed, "feature_names_in_")  # predict takes arrays (a source's names are no DataFrame's)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_weights_and_balanced_class_weights_from_the_stream(files, solver):
    X, y, w, folder = files
    source = _source("parquet", folder, weighted=True, max_bytes=77 * (8 * D + 16))
    options = {"solver": solver, "class_weight": "balanced", **EXACT}
    streamed = SoftmaxRegression(**options).fit(source)
    in_memory = SoftmaxRegression(**options).fit(X, y, sample_weight=w)
    _assert_same_fit(streamed, in_memory)
    # a class_weight dict, no intercept, label smoothing
    options = {"solver": solver, "class_weight": {"bee": 3.0}, "fit_intercept": False, "label_smoothing": 0.1, **EXACT}
    _assert_same_fit(SoftmaxRegression(**options).fit(source), SoftmaxRegression(**options).fit(X, y, sample_weight=w))


def test_auto_solver_from_counts_and_one_batch_equals_many():
    X, y, _ = _data(1)
    one = SoftmaxRegression(**EXACT).fit(ArraySource(X, y))
    many = SoftmaxRegression(**EXACT).fit(ArraySource(X, y, max_bytes=64 * (8 * D + 8)))
    in_memory = SoftmaxRegression(**EXACT).fit(X, y)
    assert one.solver_ == many.solver_ == in_memory.solver_
    _assert_same_fit(many, in_memory)
    _assert_same_fit(one, in_memory)


def test_sparse_source_equals_in_memory_sparse_fit():
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    X = sp.random(900, 40, density=0.1, format="csr", random_state=4)
    y = rng.integers(0, 3, size=900)
    streamed = SoftmaxRegression(solver="lbfgs", **EXACT).fit(ArraySource(X, y, max_bytes=4096))
    _assert_same_fit(streamed, SoftmaxRegression(solver="lbfgs", **EXACT).fit(X, y))


def test_row_sums_are_unnormalised_and_the_objective_matches_the_loss():
    """The layer a data-parallel wrapper all-reduces: sums over rows, halves of the data summing to the whole."""
    X, y, w = _data(2)
    classes = np.unique(y)
    theta = np.random.default_rng(0).normal(size=(D + 1, 4)) * 0.1
    options = {"fit_intercept": True, "label_smoothing": 0.0, "dtype": np.float64}

    def sums(rows):
        return RowSums(
            ArraySource(X[rows], y[rows], sample_weight=w[rows], max_bytes=3000),
            classes,
            None,
            w[rows].sum(),
            **options,
        )

    whole, first, second = sums(slice(None)), sums(slice(0, 500)), sums(slice(500, None))
    f, g = whole.loss_gradient(theta)
    f1, g1 = first.loss_gradient(theta)
    f2, g2 = second.loss_gradient(theta)
    assert f == pytest.approx(f1 + f2, rel=1e-12)
    np.testing.assert_allclose(g, g1 + g2, rtol=1e-10, atol=1e-12)
    v = np.random.default_rng(1).normal(size=theta.shape)
    np.testing.assert_allclose(
        whole.hessp(theta, v), first.hessp(theta, v) + second.hessp(theta, v), rtol=1e-10, atol=1e-12
    )

    found = scan(whole.source)
    objective = streamed_objective(whole, 0.01, n_rows=found.n_rows, nnz=found.nnz, sample_bytes=1 << 20)
    from softmaxkit.linear_model import _loss

    codes = np.searchsorted(classes, y)
    reference = _loss.LinearLoss(X, codes, w, 0.01, n_classes=4, fit_intercept=True, label_smoothing=0.0)
    value, grad, H = reference.loss_gradient_hessp(theta)
    f, g, H_streamed = objective.loss_gradient_hessp(theta.ravel())
    assert f == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(g, grad.ravel(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(H_streamed(v.ravel()), H(v).ravel(), rtol=1e-11, atol=1e-14)
    for kind in ("diagonal", "block", "full"):  # the same preconditioners as in memory (all rows: none subsampled)
        r = np.random.default_rng(2).normal(size=theta.size)
        expected = H.preconditioner(kind)(r)
        # (the full Hessian is singular along the shared intercept shift but for a 1e-10 ridge: its solves reach
        # 1e10, and the rounding of the two sums of rows moves them by about 1e-7 of that)
        assert np.max(np.abs(H_streamed.preconditioner(kind)(r) - expected)) <= 1e-6 * np.max(np.abs(expected))


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_stochastic_solvers_by_passes_approach_the_optimum(solver):
    X, y, _ = _data(5)
    optimum = SoftmaxRegression(alpha=1e-2, tol=1e-12).fit(X, y)
    from softmaxkit.linear_model import _loss

    codes = np.searchsorted(optimum.classes_, y)

    def objective(model):
        coef = np.hstack([model.coef_, model.intercept_[:, None]])
        return _loss.loss(coef, X, codes, alpha=1e-2)

    options = {"solver": solver, "alpha": 1e-2, "max_iter": 40, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = SoftmaxRegression(**options).fit(ArraySource(X, y, max_bytes=300 * (8 * D + 8)))
        in_memory = SoftmaxRegression(**options).fit(X, y)
    gap = (objective(model) - objective(optimum)) / objective(optimum)
    reference = (objective(in_memory) - objective(optimum)) / objective(optimum)
    # measured: sgd 0.12 by passes against 0.15 in memory (both stop on n_iter_no_change), adam 8e-3 against 2.7e-2
    assert 0 <= gap <= 1.5 * reference
    assert model.n_iter_ == len(model.loss_curve_) <= 40


def test_errors_for_a_source():
    X, y, w = _data()
    source = ArraySource(X, y)
    with pytest.raises(ValueError, match="y and sample_weight must be None when X is a source"):
        SoftmaxRegression().fit(source, y)
    with pytest.raises(ValueError, match="early_stopping must be False when X is a source"):
        SoftmaxRegression(early_stopping=True).fit(source)
    with pytest.raises(ValueError, match="backend must be 'numpy' when X is a source"):
        SoftmaxRegression(backend="torch").fit(source)
    with pytest.raises(ValueError, match="source with a target column"):
        SoftmaxRegression().fit(ArraySource(X))
    with pytest.raises(ValueError, match="alpha"):
        SoftmaxRegression(alpha=-1.0).fit(source)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np
    from softmaxkit.linear_model import SoftmaxRegression
    from softmaxkit.sources import ArraySource, ParquetSource

    def peak():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    source = ParquetSource(sys.argv[1], target="label", max_bytes=int(sys.argv[2]))
    X, y = np.random.default_rng(0).normal(size=(500, 12)), np.arange(500) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SoftmaxRegression(solver=sys.argv[3], max_iter=2).fit(ArraySource(X, y))  # imports, kernels: the baseline
    next(iter(source))  # pyarrow's reader
    baseline = peak()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SoftmaxRegression(solver=sys.argv[3], max_iter=4, alpha=1e-3).fit(source)
    print(json.dumps({"baseline": baseline, "peak": peak(), "n_iter": model.n_iter_}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM of /proc/self/status")
def test_peak_memory_is_bounded_by_the_budget_not_the_file(tmp_path, solver="newton-cg"):
    """A 400,000 x 12 file (38 MiB of float64 features) fitted with 1 MiB batches: the peak grows by a few MiB."""
    rng = np.random.default_rng(0)
    n, d = 400_000, 12
    X = rng.normal(size=(n, d))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    table = pa.table({**{f"f{j}": X[:, j] for j in range(d)}, "label": y})
    # Row groups of 0.5 MiB: the Parquet reader holds one row group at a time, whatever the budget (groups of
    # 2 MiB measured +23 MiB here, groups of 0.5 MiB +5 MiB)
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=5_000)
    data_bytes = X.nbytes
    del X, y, table
    budget = 1 << 20
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "big.parquet"), str(budget), solver],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    grown = measured["peak"] - measured["baseline"]
    assert measured["n_iter"] >= 1
    # Measured: about 5 MiB over the baseline (the batch, the reader's row group, the loss's temporaries, the
    # preconditioner's sample), against the 38 MiB of the features alone in memory.
    assert grown < data_bytes / 4, f"peak grew by {grown / 2**20:.1f} MiB over the baseline"
    print(f"peak {measured['peak'] / 2**20:.1f} MiB, {grown / 2**20:.1f} MiB over the baseline")
