"""softmaxkit.sources: every format's batches equal the whole file read at once; budget, re-iteration, errors.

References: pandas.read_csv (float_precision="round_trip", correctly rounded as pyarrow's parser),
pyarrow.parquet.read_table, np.load, sklearn.datasets.load_svmlight_file, np.mean/np.var in float64.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from softmaxkit.sources import (
    ArraySource,
    CsvSource,
    DataError,
    ParquetSource,
    RunningMoments,
    SvmlightSource,
    batch_nbytes,
    cache_source,
    collect_classes,
    feature_moments,
    open_source,
    plan_columns,
    resolve_target,
    summarize,
)

NEWS20 = Path("/work/shared/datasets/news20/news20.svm.gz")


def frame(n=1003, d=7, seed=0, labels="int"):
    rng = np.random.default_rng(seed)
    data = {f"f{j}": rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4) for j in range(d)}
    data["w"] = rng.uniform(0.1, 3.0, n)
    data["label"] = rng.integers(0, 5, n) if labels == "int" else rng.choice(["cat", "dog", "emu"], n)
    return pd.DataFrame(data)


def concat(batches):
    X = [b.X for b in batches]
    X = sp.vstack(X).tocsr() if sp.issparse(X[0]) else np.concatenate(X)
    y = None if batches[0].y is None else np.concatenate([b.y for b in batches])
    w = None if batches[0].sample_weight is None else np.concatenate([b.sample_weight for b in batches])
    return X, y, w


def assert_bitwise(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)) if a.dtype.kind == "f" else np.array_equal(a, b)


def read_csv(path, **options):
    """pandas' reader, correctly rounded: its default from pandas 3 on, float_precision="round_trip" before."""
    if int(pd.__version__.split(".")[0]) < 3:
        options["float_precision"] = "round_trip"
    return pd.read_csv(path, **options)


# --------------------------------------------------------------------------------------------
# CSV


@pytest.mark.parametrize("labels", ["int", "str"])
def test_csv_equals_pandas_round_trip(tmp_path, labels):
    df = frame(labels=labels)
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    expected = read_csv(path)
    max_bytes = 100 * (7 * 8 + 8 + 8)
    source = CsvSource(path, weight="w", max_bytes=max_bytes)
    batches = list(source)
    if labels == "int":
        assert [b.X.shape[0] for b in batches] == [100] * 10 + [3]
    else:  # 12-byte labels: the first batch of 100 rows is split to fit, the next ones are sized to fit
        assert [b.X.shape[0] for b in batches][:3] == [94, 6, 94]
    assert all(batch_nbytes(b) <= max_bytes for b in batches)
    X, y, w = concat(batches)
    assert_bitwise(X, expected[[f"f{j}" for j in range(7)]].to_numpy())
    assert_bitwise(w, expected["w"].to_numpy())
    assert np.array_equal(y, expected["label"].to_numpy().astype(y.dtype))
    assert y.dtype == (np.int64 if labels == "int" else np.dtype("<U3"))
    assert source.n_rows == 1003 and source.feature_names == tuple(f"f{j}" for j in range(7))
    again = concat(list(source))
    assert_bitwise(again[0], X) and np.array_equal(again[1], y)


def test_csv_gz_tsv_no_header_float32(tmp_path):
    df = frame(n=257, d=3)
    path = tmp_path / "t.tsv.gz"
    with gzip.open(path, "wt") as handle:
        df.to_csv(handle, index=False, header=False, sep="\t")
    source = open_source(path, header=False, target=4, features=[0, 1, 2], dtype=np.float32, max_bytes=1000)
    X, y, w = concat(list(source))
    assert w is None and source.feature_names is None and source.n_features == 3
    expected = read_csv(path, sep="\t", header=None)
    assert_bitwise(X, expected[[0, 1, 2]].to_numpy().astype(np.float32))
    assert np.array_equal(y, expected[4].to_numpy())


def test_csv_without_target_and_column_selection(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a, b ,c\n1,2,3\n4,5,6\n")
    source = CsvSource(path, target=None, features=["c", "a"])
    (batch,) = list(source)
    assert batch.y is None and batch.X.tolist() == [[3.0, 1.0], [6.0, 4.0]]


# --------------------------------------------------------------------------------------------
# Parquet


def test_parquet_file_and_folder_in_order(tmp_path):
    df = frame(n=900, labels="str")
    pq.write_table(pa.Table.from_pandas(df), tmp_path / "one.parquet", row_group_size=128)
    folder = tmp_path / "parts"
    (folder / "sub").mkdir(parents=True)
    # names that sort differently from their creation order, a nested file and one to skip
    parts = {"b.parquet": df.iloc[300:600], "a.parquet": df.iloc[:300], "sub/c.pq": df.iloc[600:]}
    for name, part in parts.items():
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / name, row_group_size=97)
    (folder / "_SUCCESS").write_text("")
    max_bytes = 64 * (7 * 8 + 8 + 8)
    for path in (tmp_path / "one.parquet", folder):
        source = ParquetSource(path, weight="w", max_bytes=max_bytes)
        assert source.n_rows == 900
        batches = list(source)
        assert all(batch_nbytes(b) <= max_bytes for b in batches)
        assert [b.X.shape[0] for b in batches][:3] == [60, 4, 60]  # string labels of 12 bytes: see the CSV test
        X, y, w = concat(batches)
        assert_bitwise(X, df[[f"f{j}" for j in range(7)]].to_numpy())
        assert_bitwise(w, df["w"].to_numpy())
        assert np.array_equal(y, df["label"].to_numpy().astype(str))
        assert np.array_equal(concat(list(source))[0], X)


def test_parquet_non_numeric_feature(tmp_path):
    pq.write_table(pa.table({"a": ["x", "y"], "label": [0, 1]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: non-numeric feature column 'a'"):
        ParquetSource(tmp_path / "t.parquet")


# --------------------------------------------------------------------------------------------
# npy and memmap


def test_npy_files_and_memmap(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1001, 13))
    y = rng.integers(0, 4, 1001)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    memmap = np.memmap(tmp_path / "X.bin", dtype=np.float64, mode="w+", shape=X.shape)
    memmap[:] = X
    memmap.flush()
    for source in (
        ArraySource(tmp_path / "X.npy", tmp_path / "y.npy", max_bytes=50 * (13 * 8 + 8)),
        ArraySource(np.memmap(tmp_path / "X.bin", dtype=np.float64, mode="r", shape=X.shape), y, max_bytes=5000),
    ):
        batches = list(source)
        assert all(batch_nbytes(b) <= source.max_bytes for b in batches)
        Xs, ys, _ = concat(batches)
        assert_bitwise(Xs, X) and np.array_equal(ys, y)
        assert source.n_rows == 1001
    Xs, _, _ = concat(list(ArraySource(X, dtype=np.float32)))
    assert_bitwise(Xs, X.astype(np.float32))


# --------------------------------------------------------------------------------------------
# svmlight


def test_svmlight_gz_equals_sklearn(tmp_path):
    rng = np.random.default_rng(2)
    X = sp.random(700, 300, density=0.05, format="csr", random_state=3)
    X.data = np.round(X.data * 100, 3)
    y = rng.integers(1, 6, 700)
    path = tmp_path / "t.svm.gz"
    with gzip.open(path, "wb") as handle:
        dump_svmlight_file(X, y, handle, zero_based=False, comment="made for the test")
    expected_X, expected_y = load_svmlight_file(str(path))
    max_bytes = 4096
    source = SvmlightSource(path, max_bytes=max_bytes)
    assert source.n_features == expected_X.shape[1]
    batches = list(source)
    assert len(batches) > 5 and all(batch_nbytes(b) <= max_bytes for b in batches)
    Xs, ys, _ = concat(batches)
    expected_X.sort_indices()
    assert Xs.shape == expected_X.shape and (Xs != expected_X).nnz == 0
    assert np.array_equal(ys, expected_y.astype(np.int64)) and source.n_rows == 700


@pytest.mark.skipif(not NEWS20.exists(), reason="news20 is not in /work/shared/datasets")
def test_svmlight_news20_slice(tmp_path):
    with gzip.open(NEWS20, "rb") as handle:
        lines = [next(handle) for _ in range(1500)]
    path = tmp_path / "news20_head.svm.gz"
    with gzip.open(path, "wb") as handle:
        handle.writelines(lines)
    expected_X, expected_y = load_svmlight_file(str(path), n_features=62061)
    source = SvmlightSource(path, n_features=62061, zero_based=False, max_bytes=1 << 16)
    batches = list(source)
    assert len(batches) > 3 and all(batch_nbytes(b) <= 1 << 16 for b in batches)
    Xs, ys, _ = concat(batches)
    expected_X.sort_indices()
    assert (Xs != expected_X).nnz == 0 and np.array_equal(ys, expected_y.astype(np.int64))


# --------------------------------------------------------------------------------------------
# statistics


def test_moments_exact_against_numpy():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((2003, 9)) * np.logspace(-3, 3, 9) + np.logspace(0, 6, 9)
    w = rng.uniform(0, 2, 2003)
    for weights in (None, w):
        moments = feature_moments(ArraySource(X, sample_weight=weights, max_bytes=97 * (9 * 8 + 8)))
        mean = np.average(X, axis=0, weights=weights)
        var = np.average((X - mean) ** 2, axis=0, weights=weights)
        np.testing.assert_allclose(moments.mean_, mean, rtol=1e-12, atol=0)
        np.testing.assert_allclose(moments.var_, var, rtol=1e-12, atol=0)
    halves = RunningMoments(9).update(X[:1000]).merge(RunningMoments(9).update(X[1000:]))
    np.testing.assert_allclose(halves.var_, X.var(axis=0), rtol=1e-12, atol=0)
    assert halves.n_rows_ == 2003


def test_moments_sparse_equal_dense():
    X = sp.random(1500, 40, density=0.1, format="csr", random_state=5) * 50 + sp.random(
        1500, 40, density=0.02, format="csr", random_state=6
    )
    w = np.random.default_rng(7).uniform(0.5, 1.5, 1500)
    dense = X.toarray()
    for weights in (None, w):
        moments = feature_moments(ArraySource(X, sample_weight=weights, max_bytes=20_000))
        mean = np.average(dense, axis=0, weights=weights)
        var = np.average((dense - mean) ** 2, axis=0, weights=weights)
        np.testing.assert_allclose(moments.mean_, mean, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(moments.var_, var, rtol=1e-12, atol=1e-300)


def test_classes_and_counts(tmp_path):
    df = frame(labels="str")
    df.to_csv(tmp_path / "t.csv", index=False)
    summary = summarize(CsvSource(tmp_path / "t.csv", max_bytes=2000))
    found, counts = np.unique(df["label"].to_numpy(), return_counts=True)
    assert summary.classes.tolist() == found.tolist() and summary.class_counts.tolist() == counts.tolist()
    assert summary.n_rows == len(df)
    assert collect_classes(ArraySource(np.ones((4, 1)), [3, 1, 3, 2])).tolist() == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# the cache


def test_cache_dense_and_sparse(tmp_path):
    df = frame(n=500, labels="str")
    df.to_csv(tmp_path / "t.csv", index=False)
    source = CsvSource(tmp_path / "t.csv", weight="w", max_bytes=3000)
    X, y, w = concat(list(source))
    with cache_source(source, dtype=np.float64) as cached:
        folder = cached.directory
        batches = list(cached)
        assert all(batch_nbytes(b) <= 3000 for b in batches)
        Xc, yc, wc = concat(batches)
        assert_bitwise(Xc, X) and np.array_equal(yc, y) and np.array_equal(wc, w)
        assert cached.classes.tolist() == sorted(set(y.tolist()))
    assert not folder.exists()
    with cache_source(source) as cached:  # float32 by default
        assert_bitwise(concat(list(cached))[0], X.astype(np.float32))
    X = sp.random(300, 50, density=0.1, format="csr", random_state=8)
    path = tmp_path / "s.svm"
    dump_svmlight_file(X, np.arange(300) % 3, str(path))
    svm = SvmlightSource(path, n_features=50, max_bytes=2000)
    with cache_source(svm, dtype=np.float64, max_bytes=1500) as cached:
        batches = list(cached)
        assert all(batch_nbytes(b) <= 1500 for b in batches)
        Xc, yc, _ = concat(batches)
        assert (Xc != concat(list(svm))[0]).nnz == 0 and yc.tolist() == (np.arange(300) % 3).tolist()


def test_cache_folder_is_reused_until_the_file_changes(tmp_path):
    path = tmp_path / "t.csv"
    frame(n=50).to_csv(path, index=False)
    source = CsvSource(path)
    cache_source(source, directory=tmp_path / "cache").close()
    manifest = (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns
    cached = cache_source(source, directory=tmp_path / "cache")
    assert (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns == manifest  # reused, not rewritten
    assert cached.n_rows == 50
    frame(n=60).to_csv(path, index=False)
    assert cache_source(CsvSource(path), directory=tmp_path / "cache").n_rows == 60


def test_interrupted_cache_leaves_no_manifest(tmp_path):
    path = tmp_path / "t.csv"
    df = frame(n=400)
    df.loc[350, "f2"] = np.nan
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="data row 351"):
        cache_source(CsvSource(path, max_bytes=1000), directory=tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


# --------------------------------------------------------------------------------------------
# the column rule and bad input


def test_column_rule_matches_the_cli():
    from softmaxkit.cli import _read

    for columns, target in ((["a", "b", "label"], None), (["0", "1", "2"], "0"), (["a", "b", "c"], -2)):
        assert resolve_target(columns, target, source="f") == _read.resolve_target(columns, target, source="f")
    for columns, bad in ((["a", "b"], "nope"), (["a", "b"], 7), (["a"], None)):
        with pytest.raises(ValueError) as ours:
            resolve_target(columns, bad, source="f.csv")
        with pytest.raises(ValueError) as theirs:
            _read.resolve_target(columns, bad, source="f.csv")
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(DataError, match="weight column must differ from the target column"):
        plan_columns(["a", "y"], target=-1, features=None, weight="y", source="f")


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        (
            "a,b,y\n1,2,0\n3,,1\n",
            {},
            r"t\.csv: feature column 'b' has 1 missing \(NaN\) values \(first at data row 2\)",
        ),
        ("a,b,y\n1,2,0\n3,x,1\n", {}, r"non-numeric feature column 'b' \(first non-number: 'x' at data row 2\)"),
        ("a,b,y\n1,2,0\n3,4,5,6\n", {}, r"every row must have 3 fields .* at data row 2 \(4 fields\)"),
        ("a,b,y\n1,2,0\n3,4\n", {}, r"every row must have 3 fields .* at data row 2 \(2 fields\)"),
        ("a,b,y\n1,2,0\n3,4,\n", {}, r"target column 'y' has 1 missing values \(first at data row 2\)"),
        ("a,b,y\n1,2,0.5\n", {}, r"target column 'y' holds numbers that are not whole \(0.5 at data row 1\)"),
        (
            "a,b,y\n1,2,cat\n",
            {"label_type": "int"},
            r"target column 'y' must hold whole numbers, got 'cat' at data row 1",
        ),
        (
            "a,b,y\n1,2,0\n",
            {"target": "label"},
            r"target column 'label' is not in t\.csv; its columns are 'a', 'b', 'y'",
        ),
        ("a,b,y\n1,-2,0\n", {"weight": "b"}, r"weight column 'b' must hold finite non-negative numbers, got -2.0"),
        ("a,b,y\n1,2,0\n", {"max_bytes": 8}, r"max_bytes must be at least one row of t\.csv \(24 bytes\), got 8"),
    ],
)
def test_csv_errors(tmp_path, text, options, message):
    with pytest.raises(DataError, match=message):
        list(CsvSource(write(tmp_path, text), **options))


def test_names_after_numbers_is_an_error_unless_str(tmp_path):
    path = write(tmp_path, "a,y\n" + "1,0\n" * 10 + "1,cat\n")
    with pytest.raises(DataError, match=r"holds names from data row 9 on .*label_type='str'"):
        list(CsvSource(path, max_bytes=8 * 16))
    y = concat(list(CsvSource(path, max_bytes=8 * 16, label_type="str")))[1]
    assert y.tolist() == ["0"] * 10 + ["cat"]


def test_svmlight_and_array_errors(tmp_path):
    path = tmp_path / "t.svm"
    path.write_bytes(b"1 1:2 3:4\n2 2:nan\n")
    with pytest.raises(DataError, match=r"t\.svm: feature 1 has a missing or infinite value \(nan\) at data row 2"):
        list(SvmlightSource(path))
    path.write_bytes(b"1 1:2 3:4\n2 2:x\n")
    with pytest.raises(DataError, match=r"cannot read t\.svm as svmlight at data row 2"):
        list(SvmlightSource(path, n_features=5, zero_based=False))
    path.write_bytes(b"1 1:2\n2 3:4\n")
    with pytest.raises(DataError, match=r"at data row 2: .*n_features was set to 2"):
        list(SvmlightSource(path, n_features=2, zero_based=False))
    X = np.ones((5, 2))
    X[3, 1] = np.inf
    with pytest.raises(DataError, match=r"feature column 1 has 1 infinite values \(first at data row 4\)"):
        list(ArraySource(X, max_bytes=32))
    with pytest.raises(DataError, match=r"y must be a 1-D array with one value per row of X \(5\), got shape \(4,\)"):
        ArraySource(X, np.zeros(4))
    with pytest.raises(DataError, match="does not exist"):
        CsvSource(tmp_path / "missing.csv")
    with pytest.raises(DataError, match=r"t\.csv has no data rows"):
        list(CsvSource(write(tmp_path, "a,b,y\n")))
    with pytest.raises(DataError, match=r"t\.csv is empty"):
        CsvSource(write(tmp_path, ""))
    assert repr(SvmlightSource(path)) == "SvmlightSource('t.svm', ? x ?, max_bytes=67108864)"


# --------------------------------------------------------------------------------------------
# memory, in a child process


CHILD = """
import json, resource, sys


def peak_bytes():
    # VmHWM: this process's own peak. ru_maxrss is carried over exec from the forking parent on Linux
    # (the pytest worker, hundreds of MB), so it would hide the child's growth; it is the fallback elsewhere.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


from softmaxkit.sources import CsvSource

small, large, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
# The fixed costs first: libraries, pyarrow's thread pools and the pandas it imports to convert columns
# (about 100 MB in all, whatever the budget); a batch of one row pays them.
next(iter(CsvSource(small, max_bytes=100)))
peaks = [peak_bytes()]
rows = largest = 0
for path in (small, large, large):
    for X, y, w in CsvSource(path, max_bytes=budget):
        rows += X.shape[0]
        largest = max(largest, X.nbytes + y.nbytes)
    peaks.append(peak_bytes())
print(json.dumps({"peaks": peaks, "rows": rows, "largest": largest}))
"""


def test_streaming_memory_is_bounded_by_the_budget(tmp_path):
    """Streaming a 31 MB CSV (22 MB as float64) under a 1 MiB budget: the child's peak RSS does not grow with the file.

    Measured (2 shared cores, pyarrow 26), growth of the peak over the reader's fixed costs: +4.7 MB
    at a 256 KiB budget, +6.6 MB at 1 MiB, +11 MB at 4 MiB, +29 MB at 16 MiB (about 4 MB + 1.6 x
    max_bytes: the batch being filled beside the one the caller holds); a file four times longer
    adds nothing. Reading the file whole with pandas adds ~80 MB.
    """
    rng = np.random.default_rng(9)
    n, d = 300_000, 8
    header = ",".join(f"f{j}" for j in range(d)) + ",y\n"
    with open(tmp_path / "large.csv", "w") as large, open(tmp_path / "small.csv", "w") as small:
        large.write(header)
        small.write(header)
        for start in range(0, n, 50_000):
            block = np.hstack([np.round(rng.standard_normal((50_000, d)), 10), rng.integers(0, 3, (50_000, 1))])
            for handle in (large, small) if start < n // 4 else (large,):
                np.savetxt(handle, block, fmt=["%.10f"] * d + ["%d"], delimiter=",")
    budget = 1 << 20
    assert (tmp_path / "large.csv").stat().st_size > 30 * budget
    command = [sys.executable, "-c", CHILD, str(tmp_path / "small.csv"), str(tmp_path / "large.csv"), str(budget)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    base, after_small, after_large, after_second = report["peaks"]
    assert report["rows"] == 100_000 + 2 * n and report["largest"] <= budget
    mib = 1 << 20
    assert after_large - after_small < 4 * mib, report  # four times the rows, (almost) no more memory
    assert after_second - base < 16 * mib, report  # measured 6.6 MB: a few MB of buffers + ~1.6 budgets


def test_import_is_light():
    """The core does not require pyarrow or pandas: importing the sources loads neither (nor scikit-learn)."""
    code = "import sys, softmaxkit.sources; print(sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.replace("'", '"')))
    assert "softmaxkit" in loaded and not loaded & {"pyarrow", "pandas", "sklearn", "torch"}


def test_sparse_arrays_fortran_npy_and_closed_cache(tmp_path):
    X = sp.random(400, 30, density=0.2, format="csr", random_state=10)
    batches = list(ArraySource(X, np.arange(400) % 2, max_bytes=3000))
    assert len(batches) > 3 and all(batch_nbytes(b) <= 3000 for b in batches)
    assert (concat(batches)[0] != X).nnz == 0
    dense = np.asfortranarray(np.arange(60.0).reshape(20, 3))
    np.save(tmp_path / "F.npy", dense)
    assert_bitwise(concat(list(ArraySource(tmp_path / "F.npy", max_bytes=48)))[0], np.ascontiguousarray(dense))
    cached = cache_source(ArraySource(dense, np.zeros(20)))
    cached.close()
    with pytest.raises(ValueError, match="is closed"):
        list(cached)
