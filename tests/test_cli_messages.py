"""The command line's messages point at the real mistake (issue 16, item 4): one test per case.

Each mistake is made on purpose and the message checked for what it blames and what it advises;
usage errors (exit 2) are in tests/test_cli.py::test_usage_errors_exit_2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_iris

from softmaxkit.cli import main
from softmaxkit.linear_model import SoftmaxRegression

IRIS = load_iris()
NAMES = [str(n) for n in IRIS.feature_names]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory):
    """A model trained on named columns (the bundled iris: four named features, target 'target')."""
    folder = tmp_path_factory.mktemp("iris-model")
    assert main(["train", "--dataset", "iris", "--quiet", "--no-plots", "--out", str(folder / "run")]) == 0
    return folder / "run" / "model.npz"


def write_table(path, header, rows, *, sep=","):
    lines = ([sep.join(header)] if header is not None else []) + [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def one_line_error(capsys, *args) -> str:
    """``main(args)`` fails with exit 1 and one line on stderr: that line."""
    assert main([str(a) for a in args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------------------------------
# evaluate on a file without the target column


def test_evaluate_without_the_target_column_says_so(iris_model, tmp_path, capsys):
    path = write_table(tmp_path / "features.csv", NAMES, IRIS.data[:20])
    line = one_line_error(capsys, "evaluate", iris_model, path)
    assert line.startswith("softmaxkit evaluate: error: features.csv has no target column")
    assert "model's target column 'target'" in line
    assert "lacks" not in line and NAMES[-1] not in line  # no feature column is blamed


def test_evaluate_headerless_without_the_target_column_says_so(iris_model, tmp_path, capsys):
    path = write_table(tmp_path / "features.csv", None, IRIS.data[:20])
    line = one_line_error(capsys, "evaluate", iris_model, path, "--no-header")
    assert "features.csv has no target column: its 4 columns are the model's features" in line


def test_evaluate_still_takes_the_last_column_when_there_is_one_more(iris_model, tmp_path, capsys):
    rows = np.column_stack([IRIS.data, IRIS.target])
    path = write_table(tmp_path / "labelled.csv", [*NAMES, "species"], rows)
    assert main(["evaluate", str(iris_model), str(path)]) == 0
    assert "target column 'species'" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# a missing value: the advice names what the data is read for


def test_a_missing_value_in_evaluate_is_not_about_training(iris_model, tmp_path, capsys):
    rows = [[*map(str, r), str(t)] for r, t in zip(IRIS.data[:6], IRIS.target[:6])]
    rows[3][1] = ""
    path = write_table(tmp_path / "holes.csv", [*NAMES, "target"], rows)
    line = one_line_error(capsys, "evaluate", iris_model, path)
    assert f"feature column {NAMES[1]!r} has 1 missing (NaN) values (first at data row 4)" in line
    assert line.endswith("fill or drop them before evaluating") and "training" not in line


def test_a_missing_value_in_predict_is_not_about_training(iris_model, tmp_path, capsys):
    rows = [list(map(str, r)) for r in IRIS.data[:6]]
    rows[2][0] = "nan"
    path = write_table(tmp_path / "holes.csv", NAMES, rows)
    line = one_line_error(capsys, "predict", iris_model, path)
    assert line.endswith("fill or drop them before predicting") and "training" not in line


def test_a_missing_value_in_train_still_says_training(tmp_path, capsys):
    path = write_table(tmp_path / "holes.csv", ["a", "b", "y"], [[1, 2, 0], [3, "", 1], [5, 6, 0], [7, 8, 1]])
    line = one_line_error(capsys, "train", path, "--quiet", "--no-plots", "--out", tmp_path / "run")
    assert line.endswith("fill or drop them before training")


# ------------------------------------------------------------------------------------------
# a file without a header read with one; a column named "0" against position 0


def letter_like(path, n=40):
    """Like letter-recognition.data: the class letter first, 16 small integers, no header row."""
    rng = np.random.default_rng(0)
    letters = np.array(list("ABC"))[rng.integers(0, 3, n)]
    values = rng.integers(0, 16, size=(n, 16))
    values[0, 7] = 0  # the first row (taken for a header) has a "0" away from position 0
    return write_table(path, None, [[c, *v] for c, v in zip(letters, values)])


def test_target_0_on_a_headerless_file_points_at_the_header(tmp_path, capsys):
    path = letter_like(tmp_path / "letters.data")
    line = one_line_error(capsys, "train", path, "--target", "0", "--quiet", "--out", tmp_path / "run")
    assert "--target '0' is ambiguous in letters.data" in line
    assert "looks like data: if the file has no header row, pass --no-header" in line
    assert "non-numeric" not in line


def test_a_non_numeric_first_row_taken_for_a_header_gets_the_hint(tmp_path, capsys):
    path = letter_like(tmp_path / "letters.data")
    first = path.read_text().splitlines()[0].split(",")
    line = one_line_error(capsys, "train", path, "--quiet", "--out", tmp_path / "run")
    assert f"non-numeric feature column {first[0]!r}" in line
    assert line.endswith("looks like data: if the file has no header row, pass --no-header")


def test_target_0_with_no_header_trains(tmp_path, capsys):
    path = letter_like(tmp_path / "letters.data")
    assert (
        main(
            ["train", str(path), "--no-header", "--target", "0", "--quiet", "--no-plots", "--out", str(tmp_path / "r")]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["dataset"]["classes"] == ["A", "B", "C"] and metrics["dataset"]["n_features"] == 16


def test_a_column_named_0_is_not_taken_for_position_0(tmp_path, capsys):
    rows = [[i % 2, i, (i * 7) % 5, i % 3] for i in range(30)]
    path = write_table(tmp_path / "named.csv", ["y", "a", "0", "b"], rows)
    line = one_line_error(capsys, "train", path, "--target", "0", "--quiet", "--out", tmp_path / "run")
    assert line.endswith(
        "--target '0' is ambiguous in named.csv: it names the column at position 2 and is the position of column 'y'"
    )
    assert "--no-header" not in line  # a header of names does not look like data
    assert main(["train", str(path), "--target", "y", "--quiet", "--no-plots", "--out", str(tmp_path / "r")]) == 0


def test_a_column_named_0_at_position_0_is_no_ambiguity(tmp_path):
    rows = [[i % 2, i, (i * 7) % 5] for i in range(30)]
    path = write_table(tmp_path / "named.csv", ["0", "a", "b"], rows)
    assert main(["train", str(path), "--target", "0", "--quiet", "--no-plots", "--out", str(tmp_path / "r")]) == 0


# ------------------------------------------------------------------------------------------
# the non-convergence note


@pytest.mark.parametrize("standardize", [True, False])
def test_the_convergence_note_advises_standardising_only_when_not_done(standardize, tmp_path, capsys):
    options = [] if standardize else ["--no-standardize"]
    argv = ["train", "--dataset", "digits", "--max-iter", "3", "--quiet", "--no-plots", *options]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert "did not converge in --max-iter 3 iterations; raise --max-iter or --tol" in notes[0]
    assert ("standardi" in notes[0]) is (not standardize), notes[0]


# ------------------------------------------------------------------------------------------
# a headerless file and a model of named columns


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_headerless_file_and_a_model_of_named_columns_get_a_warning(command, iris_model, tmp_path, capsys):
    rows = IRIS.data[:10] if command == "predict" else np.column_stack([IRIS.data[:10], IRIS.target[:10]])
    path = write_table(tmp_path / "plain.csv", None, rows)
    assert main([command, str(iris_model), str(path), "--no-header"]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1
    assert "plain.csv is read without a header row" in warning[0] and "4 named features" in warning[0]
    assert "by position" in warning[0]


def test_a_file_with_the_models_header_gets_no_warning(iris_model, tmp_path, capsys):
    path = write_table(tmp_path / "named.csv", NAMES, IRIS.data[:10])
    assert main(["predict", str(iris_model), str(path)]) == 0
    assert "warning" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# predict --out: the extension names the format


def test_predict_refuses_an_output_extension_it_cannot_write(iris_model, tmp_path, capsys):
    path = write_table(tmp_path / "named.csv", NAMES, IRIS.data[:10])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(iris_model), str(path), "--out", str(tmp_path / "x.xlsx")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot write predictions as .xlsx; name the file with one of .csv, .txt, .tsv, .parquet, .pq" in err
    assert not (tmp_path / "x.xlsx").exists()


@pytest.mark.parametrize(("name", "sep"), [("p.tsv", "\t"), ("p.txt", ","), ("p.CSV", ",")])
def test_predict_writes_the_format_its_extension_names(name, sep, iris_model, tmp_path, capsys):
    path = write_table(tmp_path / "named.csv", NAMES, IRIS.data[:10])
    assert main(["predict", str(iris_model), str(path), "--proba", "--out", str(tmp_path / name)]) == 0
    header = (tmp_path / name).read_text().splitlines()[0]
    assert header.split(sep) == ["prediction", "proba_0", "proba_1", "proba_2"]


def test_predict_writes_parquet_for_pq(iris_model, tmp_path):
    import pyarrow.parquet as pq

    path = write_table(tmp_path / "named.csv", NAMES, IRIS.data[:10])
    assert main(["predict", str(iris_model), str(path), "--out", str(tmp_path / "p.pq")]) == 0
    assert pq.read_table(tmp_path / "p.pq").column_names == ["prediction"]


# ------------------------------------------------------------------------------------------
# metrics in row chunks


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_metrics_in_row_chunks_equal_sklearns(capsys):
    """Scored 7 rows at a time (no N x C matrix beyond a chunk) the metrics are scikit-learn's on the whole."""
    from sklearn.datasets import load_digits
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

    from softmaxkit.cli._common import classification_metrics

    X, y = load_digits(return_X_y=True)
    model = SoftmaxRegression(max_iter=30).fit(X[:1000] / 16, y[:1000])
    keep = y[1000:] != 9  # a class of the model that the data never has: its recall divides by zero
    X_test, y_test = X[1000:][keep] / 16, y[1000:][keep]
    metrics = classification_metrics(model, X_test, y_test, source="test", max_bytes=7 * 10 * 8)
    predicted = model.predict(X_test)
    labels = model.classes_
    precision, recall, f1, support = precision_recall_fscore_support(
        y_test, predicted, labels=labels, zero_division=0.0
    )
    np.testing.assert_allclose([c["precision"] for c in metrics["per_class"]], precision, rtol=1e-12)
    np.testing.assert_allclose([c["recall"] for c in metrics["per_class"]], recall, rtol=1e-12)
    np.testing.assert_allclose([c["f1"] for c in metrics["per_class"]], f1, rtol=1e-12)
    assert [c["support"] for c in metrics["per_class"]] == support.tolist()
    assert metrics["confusion_matrix"] == confusion_matrix(y_test, predicted, labels=labels).tolist()
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == y_test), abs=1e-15)
    assert metrics["log_loss"] == pytest.approx(log_loss(y_test, model.predict_proba(X_test), labels=labels), rel=1e-9)
    whole = classification_metrics(model, X_test, y_test, source="test")  # one chunk
    assert whole["log_loss"] == pytest.approx(metrics["log_loss"], rel=1e-14)  # the sum's order differs
    assert {**whole, "log_loss": None} == {**metrics, "log_loss": None}
