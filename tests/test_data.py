"""Dataset readers of the command line (softmaxkit.cli._formats, _read, _batches, _bundled): every format, every user error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from softmaxkit.cli._batches import FeatureLayout, iter_feature_batches
from softmaxkit.cli._bundled import BUNDLED_DATASETS, load_bundled
from softmaxkit.cli._formats import DataError, detect_format
from softmaxkit.cli._read import infer_image_shape, read_dataset, resolve_target, table_columns

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
LETTER = DATASETS / "letter" / "letter-recognition.data.gz"


def _letter_reference():
    """Parse the letter file with the standard library only (an independent reader)."""
    if not LETTER.exists():
        pytest.skip(f"letter dataset not found at {LETTER} (see the project's README)")
    with gzip.open(LETTER, "rt") as handle:
        rows = [line.strip().split(",") for line in handle if line.strip()]
    y = np.array([r[0] for r in rows])
    X = np.array([[float(v) for v in r[1:]] for r in rows])
    return X, y


@pytest.fixture
def table(tmp_path):
    """A small mixed table: three numeric features and a string label, with a header."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(23, 3)).round(6)
    y = np.array(["cat", "dog", "eel"])[rng.integers(0, 3, size=23)]
    path = tmp_path / "small.csv"
    lines = ["a,b,c,label"] + [f"{r[0]},{r[1]},{r[2]},{lab}" for r, lab in zip(X, y)]
    path.write_text("\n".join(lines) + "\n")
    return path, X, y


# ------------------------------------------------------------------------------------------
# bundled datasets


@pytest.mark.parametrize("name", sorted(BUNDLED_DATASETS))
def test_bundled_matches_sklearn(name):
    import sklearn.datasets

    reference = getattr(sklearn.datasets, f"load_{name}")()
    data = load_bundled(name)
    np.testing.assert_array_equal(data.X, reference.data)
    np.testing.assert_array_equal(data.y, reference.target)
    assert data.X.dtype == np.float64 and data.X.flags.c_contiguous
    assert data.feature_names == tuple(reference.feature_names)
    assert data.name == name


def test_bundled_digits_is_an_image_grid():
    data = load_bundled("digits")
    assert data.image_shape == (8, 8)
    assert data.X.shape == (1797, 64)
    assert infer_image_shape(64, data.feature_names) == (8, 8)


def test_bundled_unknown_name():
    with pytest.raises(DataError, match=r"dataset must be one of digits, iris, wine.*got 'mnist'"):
        load_bundled("mnist")


# ------------------------------------------------------------------------------------------
# formats and target columns


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.csv", "csv"),
        ("a.CSV.gz", "csv"),
        ("a.data.gz", "csv"),
        ("a.txt", "csv"),
        ("a.tsv", "tsv"),
        ("a.tab.bz2", "tsv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("a.npz", "npz"),
        ("a.svm", "svmlight"),
        ("a.libsvm", "svmlight"),
        ("a.svmlight", "svmlight"),
    ],
)
def test_detect_format(name, expected):
    assert detect_format(name) == expected


def test_detect_format_errors():
    with pytest.raises(DataError, match=r"cannot tell the format of x\.bin .*--format"):
        detect_format("x.bin")
    with pytest.raises(DataError, match=r"format must be one of csv, tsv, parquet, npz, svmlight, got 'xls'"):
        detect_format("x.csv", "xls")
    assert detect_format("x.bin", "parquet") == "parquet"


def test_resolve_target():
    columns = ["a", "b", "5", "label"]
    assert resolve_target(columns, None, source="s") == "label"
    assert resolve_target(columns, "b", source="s") == "b"
    assert resolve_target(columns, "5", source="s") == "5"  # a name wins over a position
    assert resolve_target(columns, 0, source="s") == "a"
    assert resolve_target(columns, "-1", source="s") == "label"
    with pytest.raises(DataError, match=r"target column 'species' is not in s; its columns are 'a', 'b', '5', 'label'"):
        resolve_target(columns, "species", source="s")
    with pytest.raises(DataError, match=r"target column '9' is not in s"):
        resolve_target(columns, 9, source="s")
    with pytest.raises(DataError, match=r"at least two columns"):
        resolve_target(["only"], None, source="s")


def test_read_csv_with_header(table):
    path, X, y = table
    data = read_dataset(path)
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)
    assert data.y.dtype.kind == "U"
    assert data.feature_names == ("a", "b", "c") and data.target == "label" and data.target_index == 3
    by_position = read_dataset(path, target="-1")
    np.testing.assert_array_equal(by_position.X, X)


def test_read_csv_string_feature_is_an_error(table):
    path, _, _ = table
    # With column 'a' as the target, the string column 'label' becomes a feature.
    with pytest.raises(
        DataError,
        match=r"small\.csv: non-numeric feature column 'label' \(first non-number: '\w+' at data row 1\); features must be numbers",
    ):
        read_dataset(path, target="a")


def test_read_tsv_and_integer_labels(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("x\ty\tclass\n1\t2\t0\n3\t4\t1\n5\t6\t2.0\n")
    data = read_dataset(path)
    np.testing.assert_array_equal(data.X, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(data.y, [0, 1, 2])
    assert data.y.dtype == np.int64  # integral floats become integer labels


def test_read_letter_without_header():
    X_ref, y_ref = _letter_reference()
    data = read_dataset(LETTER, header=False, target=0)
    assert data.X.shape == (20000, 16) and data.target == "0" and data.target_index == 0
    assert data.feature_names is None  # no header, no names
    np.testing.assert_array_equal(data.X, X_ref)
    np.testing.assert_array_equal(data.y, y_ref)
    assert len(np.unique(data.y)) == 26


def test_parquet_equals_csv(table, tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    path, X, y = table
    parquet = tmp_path / "small.parquet"
    pd.read_csv(path).to_parquet(parquet)
    data = read_dataset(parquet)
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)
    assert data.feature_names == ("a", "b", "c")


def test_npz(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(11, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=11)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    data = read_dataset(path)
    np.testing.assert_array_equal(data.X, X.astype(np.float64))
    np.testing.assert_array_equal(data.y, y)
    assert data.feature_names is None
    np.savez(tmp_path / "noy.npz", X=X)
    with pytest.raises(DataError, match=r"noy\.npz must hold arrays named X and y, got \['X'\]"):
        read_dataset(tmp_path / "noy.npz")
    np.savez(tmp_path / "cube.npz", X=np.zeros((2, 2, 2)), y=np.zeros(2))
    with pytest.raises(DataError, match=r"X must be a 2-D array .* got shape \(2, 2, 2\)"):
        read_dataset(tmp_path / "cube.npz")
    np.savez(tmp_path / "short.npz", X=X, y=y[:5])
    with pytest.raises(DataError, match=r"y must be a 1-D array with one label per row of X \(11\), got shape \(5,\)"):
        read_dataset(tmp_path / "short.npz")


def test_svmlight(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(2)
    X = rng.normal(size=(9, 5)) * (rng.random((9, 5)) < 0.5)
    y = rng.integers(0, 4, size=9)
    path = tmp_path / "d.svm"
    dump_svmlight_file(X, y, str(path))
    data = read_dataset(path)
    assert scipy.sparse.issparse(data.X)  # kept sparse, never densified
    np.testing.assert_allclose(data.X[:, : X.shape[1]].toarray(), X, rtol=1e-15)
    np.testing.assert_array_equal(data.y, y)


# ------------------------------------------------------------------------------------------
# user errors


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"data file .*nope\.csv does not exist"):
        read_dataset(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"is a directory"):
        read_dataset(tmp_path)


def test_missing_values_name_column_and_count(tmp_path):
    path = tmp_path / "holes.csv"
    path.write_text("a,b,y\n1,2,0\n3,,1\n5,,0\n7,8,1\n")
    with pytest.raises(
        DataError, match=r"holes\.csv: feature column 'b' has 2 missing \(NaN\) values \(first at data row 2\)"
    ):
        read_dataset(path)
    path.write_text("a,b,y\n1,2,0\n3,4,\n")
    with pytest.raises(DataError, match=r"target column 'y' has 1 missing values \(first at data row 2\)"):
        read_dataset(path)
    path.write_text("a,b,y\n1,inf,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"feature column 'b' has 1 infinite values"):
        read_dataset(path)


def test_non_numeric_columns_are_named(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("colour,size,shape,y\nred,1,round,0\nblue,2,square,1\n")
    with pytest.raises(
        DataError, match=r"non-numeric feature columns 'colour', 'shape' \(first non-number: 'red' at data row 1\)"
    ):
        read_dataset(path)
    path.write_text("a,b,y\n1,2,0\n3,4,1\n5,x7,0\n")
    with pytest.raises(DataError, match=r"non-numeric feature column 'b' \(first non-number: 'x7' at data row 3\)"):
        read_dataset(path)


def test_no_rows(tmp_path):
    (tmp_path / "empty.csv").write_text("a,b,y\n")
    with pytest.raises(DataError, match=r"empty\.csv has no data rows"):
        read_dataset(tmp_path / "empty.csv")


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(DataError, match=r"cannot read bad\.parquet as parquet"):
        read_dataset(path)


# ------------------------------------------------------------------------------------------
# batches for prediction


def _collect(path, layout, **options):
    batches = list(iter_feature_batches(path, layout, **options))
    if scipy.sparse.issparse(batches[0]):  # svmlight
        return batches, scipy.sparse.vstack(batches).toarray()
    return batches, np.concatenate(batches)


def test_csv_batches_stream_by_name(table):
    path, X, _ = table
    layout = FeatureLayout(n_features=3, feature_names=("c", "a", "b"), target="label")
    batches, whole = _collect(path, layout, batch_size=5)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(whole, X[:, [2, 0, 1]])  # the model's order, not the file's


def test_csv_batches_without_target_column(table, tmp_path):
    path, X, _ = table
    unlabeled = tmp_path / "unlabeled.csv"
    lines = ["a,b,c"] + [",".join(repr(float(v)) for v in r) for r in X]
    unlabeled.write_text("\n".join(lines) + "\n")
    _, whole = _collect(unlabeled, FeatureLayout(3, ("a", "b", "c"), "label", 3), batch_size=4)
    np.testing.assert_array_equal(whole, X)


def test_csv_batches_missing_feature_name(table):
    path, _, _ = table
    layout = FeatureLayout(n_features=3, feature_names=("a", "b", "zeta"), target="label")
    with pytest.raises(DataError, match=r"small\.csv lacks the model's feature columns 'zeta'"):
        list(iter_feature_batches(path, layout))


def test_batches_wrong_number_of_features(table, tmp_path):
    path, _, _ = table
    with pytest.raises(DataError, match=r"small\.csv has 4 columns, the model expects 64 features"):
        list(iter_feature_batches(path, FeatureLayout(64)))
    np.savez(tmp_path / "x.npz", X=np.zeros((3, 5)))
    with pytest.raises(DataError, match=r"x\.npz has 5 features, the model expects 4"):
        list(iter_feature_batches(tmp_path / "x.npz", FeatureLayout(4)))


def test_letter_batches_drop_the_target_by_position():
    X_ref, _ = _letter_reference()
    layout = FeatureLayout(n_features=16, feature_names=None, target="0", target_index=0)
    batches, whole = _collect(LETTER, layout, header=False, batch_size=6000)
    assert [len(b) for b in batches] == [6000, 6000, 6000, 2000]
    np.testing.assert_array_equal(whole, X_ref)


def test_parquet_batches(table, tmp_path):
    import pandas as pd

    path, X, _ = table
    parquet = tmp_path / "small.parquet"
    pd.read_csv(path).to_parquet(parquet, row_group_size=10)
    batches, whole = _collect(parquet, FeatureLayout(3, ("a", "b", "c"), "label"), batch_size=4)
    assert max(len(b) for b in batches) <= 4 and len(whole) == 23
    np.testing.assert_array_equal(whole, X)


def test_parquet_batches_report_missing_values_with_global_row(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0)})
    frame.loc[7, "b"] = np.nan
    frame.to_parquet(tmp_path / "h.parquet")
    with pytest.raises(DataError, match=r"feature column 'b' has 1 missing \(NaN\) values \(first at data row 8\)"):
        list(iter_feature_batches(tmp_path / "h.parquet", FeatureLayout(2, ("a", "b")), batch_size=3))


def test_svmlight_batches_use_the_model_width(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    X = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # last feature never set in the file
    dump_svmlight_file(X, [0, 1], str(tmp_path / "p.svm"))
    _, whole = _collect(tmp_path / "p.svm", FeatureLayout(3), batch_size=1)
    np.testing.assert_array_equal(whole, X)


def test_batch_size_must_be_positive(table):
    path, _, _ = table
    with pytest.raises(DataError, match=r"batch size must be a positive integer, got 0"):
        list(iter_feature_batches(path, FeatureLayout(3), batch_size=0))


def test_infer_image_shape():
    assert infer_image_shape(784, [f"pixel{i}" for i in range(784)]) == (28, 28)
    assert infer_image_shape(784, None) == (28, 28)
    assert infer_image_shape(16, None) is None  # letter: 16 = 4 x 4, but too small to be an image
    assert infer_image_shape(65, None) is None
    assert infer_image_shape(64, [f"f{i}" for i in range(63)] + ["age"]) is None


@pytest.mark.parametrize("suffix", [".csv.gz", ".parquet"])
def test_batches_stream_in_bounded_memory(tmp_path, suffix):
    """A file is never held whole: peak traced memory stays a fraction of the full float64 array."""
    import tracemalloc

    import pandas as pd

    rng = np.random.default_rng(5)
    n, d, batch = 80_000, 20, 4_000
    frame = pd.DataFrame(rng.integers(0, 1000, size=(n, d)), columns=[f"f{i}" for i in range(d)])
    path = tmp_path / f"big{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path, index=False, row_group_size=batch)
    else:
        frame.to_csv(path, index=False)
    expected_sum = float(frame.to_numpy().sum())
    del frame
    layout = FeatureLayout(d, tuple(f"f{i}" for i in range(d)))
    tracemalloc.start()
    try:
        rows, total = 0, 0.0
        for block in iter_feature_batches(path, layout, batch_size=batch):
            rows, total = rows + len(block), total + float(block.sum())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == n and total == expected_sum
    assert peak < 0.35 * n * d * 8, f"peak {peak / 1e6:.1f} MB for a {n * d * 8 / 1e6:.1f} MB array"


def test_table_columns(table, tmp_path):
    import pandas as pd

    path, _, _ = table
    assert table_columns(path) == ["a", "b", "c", "label"]
    assert table_columns(path, header=False) == ["0", "1", "2", "3"]
    pd.read_csv(path).to_parquet(tmp_path / "t.parquet")
    assert table_columns(tmp_path / "t.parquet") == ["a", "b", "c", "label"]
    np.savez(tmp_path / "t.npz", X=np.zeros((2, 2)), y=np.zeros(2))
    assert table_columns(tmp_path / "t.npz") == []
    with pytest.raises(DataError, match=r"does not exist"):
        table_columns(tmp_path / "missing.csv")


def test_svmlight_with_the_model_width(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    X = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    dump_svmlight_file(X, [0, 1], str(tmp_path / "p.svm"))
    assert read_dataset(tmp_path / "p.svm").n_features == 2  # the file cannot tell
    np.testing.assert_array_equal(read_dataset(tmp_path / "p.svm", n_features=3).X.toarray(), X)


# ------------------------------------------------------------------------------------------
# no silent wrong answers


def test_labels_are_exact():
    from softmaxkit.cli._read import labels

    small = labels(np.array([0.0, 2.0**53, -3.0]), name="y", source="f")
    assert small.dtype == np.int64 and small.tolist() == [0, 2**53, -3]
    big = labels(np.array([0.0, 1e19, 3e19]), name="y", source="f")  # int64 would wrap these onto one another
    assert big.tolist() == ["0", "10000000000000000000", "30000000000000000000"]
    assert labels(np.array([0, 2**63], dtype=np.uint64), name="y", source="f").tolist() == [0, 2**63]
    with pytest.raises(DataError, match=r"f: target column 'y' has 2 infinite values \(first at data row 2\)"):
        labels(np.array([1.0, np.inf, -np.inf]), name="y", source="f")
    with pytest.raises(DataError, match=r"holds numbers that are not whole \(2\.5 at data row 3\)"):
        labels(np.array([1.0, 2.0, 2.5]), name="y", source="f")


def test_batches_refuse_rows_with_extra_fields(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6,7\n")
    with pytest.raises(DataError, match=r"cannot read x\.csv as csv: .*Expected 3 fields"):
        list(iter_feature_batches(path, FeatureLayout(3, ("a", "b", "c"))))
    path.write_text("a,b,c\n1,2,3,9\n4,5,6,9\n")  # pandas alone would shift every value one column
    with pytest.raises(DataError, match=r"its rows have more fields than its header row has names"):
        list(iter_feature_batches(path, FeatureLayout(3, ("a", "b", "c"))))
    with pytest.raises(DataError, match=r"its rows have more fields than its header row has names"):
        read_dataset(path)


def test_batches_refuse_a_table_with_none_of_the_models_names(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("p,q,r\n1,2,3\n")
    with pytest.raises(
        DataError,
        match=r"x\.csv has none of the model's feature columns \(the model expects 'a', 'b', 'c'; the file has 'p', 'q', 'r'\)",
    ):
        list(iter_feature_batches(path, FeatureLayout(3, ("a", "b", "c"))))
    path.write_text("1,2,3\n")
    np.testing.assert_array_equal(
        np.concatenate(list(iter_feature_batches(path, FeatureLayout(3, ("a", "b", "c")), header=False))), [[1, 2, 3]]
    )


def test_a_header_only_table_yields_no_batches(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n")
    assert list(iter_feature_batches(path, FeatureLayout(3, ("a", "b", "c")))) == []
