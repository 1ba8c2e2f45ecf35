"""The softmaxkit command line, end to end: subprocesses on real data, checked by content.

Accuracy floors (test split, default estimator, standardised features): digits >= 0.93,
letter >= 0.74 (a linear model reaches about 0.77 on letter; the best non-linear models ~0.97).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from softmaxkit.cli import main
from softmaxkit.cli._train import fold_standardization, standardization
from softmaxkit.linear_model import SoftmaxRegression

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
LETTER = DATASETS / "letter" / "letter-recognition.data.gz"
DIGITS_FLOOR = 0.93
LETTER_FLOOR = 0.74


# One BLAS thread per subprocess: the tests share a small machine, where threads only contend.
SINGLE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """The same for the in-process runs."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def softmaxkit(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    """Run ``python -m softmaxkit.cli ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "softmaxkit.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=SINGLE_THREAD,
    )


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, decoded by matplotlib."""
    from matplotlib.image import imread

    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image.shape[1], image.shape[0]


def assert_one_line_error(result: subprocess.CompletedProcess, command: str, *phrases: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"softmaxkit {command}: error: "), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


def letter_or_skip() -> Path:
    if not LETTER.exists():
        pytest.skip(f"letter dataset not found at {LETTER} (see the project's README)")
    return LETTER


def check_metrics_document(metrics: dict, *, n_classes: int, n_features: int) -> None:
    for part in ("train", "test"):
        section = metrics[part]
        assert set(section) >= {"n_samples", "accuracy", "log_loss", "per_class", "confusion_matrix"}
        assert len(section["per_class"]) == n_classes
        matrix = np.array(section["confusion_matrix"])
        assert matrix.shape == (n_classes, n_classes) and matrix.sum() == section["n_samples"]
        assert section["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum(), abs=1e-12)
        assert [c["support"] for c in section["per_class"]] == matrix.sum(axis=1).tolist()
        assert 0 < section["log_loss"] < np.log(n_classes)
    assert metrics["dataset"]["n_features"] == n_features
    assert metrics["dataset"]["n_classes"] == n_classes
    assert metrics["fit_time_s"] > 0 and metrics["n_iter"] >= 1
    assert len(metrics["loss_curve"]) >= 1 and metrics["standardized"] is True
    assert metrics["files"] == {
        "model": "model.npz",
        "report": "report.html",
        "plots": ["loss_curve.png", "confusion_matrix.png", "weights.png"],
    }


# ------------------------------------------------------------------------------------------
# the bundled default: digits


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    result = softmaxkit("train", "--out", folder / "run", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "run", result


def test_train_default_digits(digits_run):
    out, result = digits_run
    metrics = json.loads((out / "metrics.json").read_text())
    check_metrics_document(metrics, n_classes=10, n_features=64)
    assert metrics["dataset"]["name"] == "digits"
    assert metrics["split"] == {"test": None, "test_size": 0.2, "seed": 0, "n_train": 1437, "n_test": 360}
    assert metrics["test"]["accuracy"] >= DIGITS_FLOOR
    assert metrics["train"]["accuracy"] >= metrics["test"]["accuracy"]
    # The printed table shows the same numbers and says where everything is.
    stdout = result.stdout
    assert f"test       360    {metrics['test']['accuracy']:.4f}    {metrics['test']['log_loss']:.4f}" in stdout
    assert f"train     1437    {metrics['train']['accuracy']:.4f}" in stdout
    assert f"model    {out / 'model.npz'}" in stdout
    assert "plots    " in stdout and str(out / "weights.png") in stdout
    assert "SoftmaxRegression[newton-cg]" in result.stderr  # the progress bar (solver="auto" chose newton-cg)
    # The plots decode, with their documented sizes (digits: 10 classes as 8 x 8 images).
    assert png_size(out / "loss_curve.png") == (800, 500)
    assert png_size(out / "confusion_matrix.png") == (700, 700)
    assert png_size(out / "weights.png") == (1000, 460)
    assert not list(out.glob(".*"))  # no temporary files left


def test_saved_model_equals_scaler_plus_model_pipeline(digits_run):
    """The folded model on raw features == StandardScaler + a model fitted on standardised features."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    out, _ = digits_run
    model = SoftmaxRegression.load(out / "model.npz")
    metadata = model.saved_metadata_
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_train)
    assert metadata["standardized"] is True
    np.testing.assert_allclose(metadata["mean"], scaler.mean_, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(metadata["scale"], scaler.scale_, rtol=1e-13)
    reference = SoftmaxRegression(random_state=0).fit(scaler.transform(X_train), y_train)
    # Both fits stop at the default tol (an estimated relative gap of 1e-5) from inputs that differ in
    # rounding: their probabilities agree to 6e-7 (measured), far from a wrong fold (1e-2 and more).
    np.testing.assert_allclose(
        model.predict_proba(X_test), reference.predict_proba(scaler.transform(X_test)), rtol=0, atol=1e-5
    )
    np.testing.assert_array_equal(model.predict(X), reference.predict(scaler.transform(X)))
    assert metadata["feature_names"][:2] == ["pixel_0_0", "pixel_0_1"] and metadata["image_shape"] == [8, 8]


def test_fold_standardization_matches_pipeline_on_random_data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 7)) * rng.uniform(0.01, 100, size=7) + rng.normal(size=7) * 50
    X[:, 3] = 4.0  # a constant column: scale 1, as scikit-learn's StandardScaler does
    y = rng.integers(0, 4, size=200)
    mean, scale = standardization(X)
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    np.testing.assert_allclose(mean, scaler.mean_, rtol=1e-14)
    np.testing.assert_allclose(scale, scaler.scale_, rtol=1e-14)
    model = SoftmaxRegression(alpha=1e-2).fit(scaler.transform(X), y)
    folded = copy.deepcopy(model)
    folded.coef_, folded.intercept_ = fold_standardization(model.coef_, model.intercept_, mean, scale)
    np.testing.assert_allclose(
        folded.decision_function(X), model.decision_function(scaler.transform(X)), rtol=1e-10, atol=1e-10
    )


def test_out_folder_is_never_overwritten(digits_run):
    out, _ = digits_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = softmaxkit("train", "--dataset", "iris", "--out", out, "--quiet")
    assert_one_line_error(result, "train", f"--out {out} already holds an earlier run", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_evaluate_digits_csv_against_sklearn(digits_run, tmp_path):
    """evaluate on a CSV export (columns shuffled: matched by name) == scikit-learn's metrics."""
    from sklearn.datasets import load_digits
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

    out, _ = digits_run
    bunch = load_digits(as_frame=True)
    frame = bunch.frame.sample(frac=1.0, axis=1, random_state=1).iloc[:500]
    frame.to_csv(tmp_path / "digits.csv", index=False)
    result = softmaxkit("evaluate", out / "model.npz", tmp_path / "digits.csv", "--out", tmp_path / "eval")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    model = SoftmaxRegression.load(out / "model.npz")
    X, y = bunch.data.iloc[:500].to_numpy(), bunch.target.iloc[:500].to_numpy()
    proba = model.predict_proba(X)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, model.predict(X)), abs=1e-15)
    assert metrics["log_loss"] == pytest.approx(log_loss(y, proba, labels=model.classes_), rel=1e-9)
    precision, recall, f1, _ = precision_recall_fscore_support(y, model.predict(X), zero_division=0.0)
    np.testing.assert_allclose([c["f1"] for c in metrics["per_class"]], f1, rtol=1e-12)
    np.testing.assert_allclose([c["recall"] for c in metrics["per_class"]], recall, rtol=1e-12)
    assert f"accuracy  {metrics['accuracy']:.4f}" in result.stdout
    assert "(rows: true, columns: predicted)" in result.stdout  # 10 classes: the matrix is printed
    assert png_size(tmp_path / "eval" / "confusion_matrix.png") == (700, 700)


def test_evaluate_falls_back_to_the_last_column(digits_run, tmp_path, capsys):
    """The model's target column ('target') is absent: the last column ('label') is the target."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    header = ",".join([f"pixel_{i}_{j}" for i in range(8) for j in range(8)] + ["label"])
    rows = [",".join(str(int(v)) for v in row) + f",{label}" for row, label in zip(X[:50], y[:50])]
    (tmp_path / "d.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    assert main(["evaluate", str(digits_run[0]), str(tmp_path / "d.csv")]) == 0
    out = capsys.readouterr().out
    model = SoftmaxRegression.load(digits_run[0] / "model.npz")
    assert "d.csv: 50 samples, target column 'label'" in out
    assert f"accuracy  {np.mean(model.predict(X[:50]) == y[:50]):.4f}" in out


# ------------------------------------------------------------------------------------------
# letter: the gzip CSV without a header, and a Parquet conversion of it


def test_train_letter_gzip_csv_without_header(tmp_path):
    letter = letter_or_skip()
    result = softmaxkit("train", letter, "--no-header", "--target", "0", "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    check_metrics_document(metrics, n_classes=26, n_features=16)
    assert metrics["dataset"]["classes"] == [chr(ord("A") + k) for k in range(26)]
    assert metrics["split"]["n_train"] == 16000 and metrics["split"]["n_test"] == 4000
    assert metrics["test"]["accuracy"] >= LETTER_FLOOR
    assert png_size(tmp_path / "run" / "weights.png") == (1000, 600)  # 16 features: a heatmap
    # predict on the same file (it still holds the label column, which is dropped by position)
    predicted = softmaxkit("predict", tmp_path / "run" / "model.npz", letter, "--no-header", "--batch-size", "3000")
    assert predicted.returncode == 0, predicted.stderr
    labels = predicted.stdout.split()
    assert labels[0] == "prediction" and len(labels) == 20001
    from softmaxkit.cli._read import read_dataset

    data = read_dataset(letter, header=False, target=0)
    model = SoftmaxRegression.load(tmp_path / "run" / "model.npz")
    np.testing.assert_array_equal(np.array(labels[1:]), model.predict(data.X))
    assert np.mean(np.array(labels[1:]) == data.y) >= LETTER_FLOOR


@pytest.fixture(scope="module")
def letter_parquet(tmp_path_factory):
    """letter as Parquet with named columns, in its customary split (16000 train, 4000 test)."""
    letter = letter_or_skip()
    import pandas as pd

    frame = pd.read_csv(letter, header=None)
    frame.columns = ["letter"] + [f"f{k}" for k in range(1, 17)]
    folder = tmp_path_factory.mktemp("letter")
    frame.iloc[:16000].to_parquet(folder / "train.parquet", index=False)
    frame.iloc[16000:].to_parquet(folder / "test.parquet", index=False)
    result = softmaxkit(
        "train",
        folder / "train.parquet",
        "--target",
        "letter",
        "--test",
        folder / "test.parquet",
        "--out",
        folder / "run",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    return folder, frame


def test_train_letter_parquet(letter_parquet):
    folder, _ = letter_parquet
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    check_metrics_document(metrics, n_classes=26, n_features=16)
    assert metrics["split"]["test"].endswith("test.parquet") and metrics["split"]["n_test"] == 4000
    assert metrics["test"]["accuracy"] >= LETTER_FLOOR
    for name, size in [
        ("loss_curve.png", (800, 500)),
        ("confusion_matrix.png", (700, 700)),
        ("weights.png", (1000, 600)),
    ]:
        assert png_size(folder / "run" / name) == size


def test_evaluate_letter_parquet_matches_training_report(letter_parquet):
    folder, _ = letter_parquet
    result = softmaxkit("evaluate", folder / "run", folder / "test.parquet")  # a run folder works too
    assert result.returncode == 0, result.stderr
    metrics = json.loads((folder / "run" / "metrics.json").read_text())["test"]
    assert f"accuracy  {metrics['accuracy']:.4f}" in result.stdout
    assert f"log-loss  {metrics['log_loss']:.4f}" in result.stdout
    assert "test.parquet: 4000 samples, target column 'letter'" in result.stdout
    assert "pass --out DIR for the confusion matrix" in result.stdout  # 26 classes: not printed


def test_predict_letter_parquet_in_batches(letter_parquet, tmp_path):
    import pandas as pd

    folder, frame = letter_parquet
    out = tmp_path / "predictions.parquet"
    result = softmaxkit(
        "predict",
        folder / "run" / "model.npz",
        folder / "test.parquet",
        "--proba",
        "--batch-size",
        "1000",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote 4000 predictions to {out}" in result.stderr
    predictions = pd.read_parquet(out)
    model = SoftmaxRegression.load(folder / "run" / "model.npz")
    X = frame.iloc[16000:, 1:].to_numpy(dtype=np.float64)
    assert list(predictions.columns) == ["prediction"] + [f"proba_{c}" for c in model.classes_]
    proba = predictions.iloc[:, 1:].to_numpy()
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(predictions["prediction"].to_numpy(), model.predict(X))
    accuracy = np.mean(predictions["prediction"].to_numpy() == frame.iloc[16000:, 0].to_numpy())
    assert accuracy >= LETTER_FLOOR
    # A CSV without the label and with its columns in another order gives the same labels.
    features = frame.iloc[16000:, 1:]
    features[features.columns[::-1]].to_csv(tmp_path / "new.csv", index=False)
    assert (
        main(
            [
                "predict",
                str(folder / "run" / "model.npz"),
                str(tmp_path / "new.csv"),
                "--out",
                str(tmp_path / "new.tsv"),
            ]
        )
        == 0
    )
    assert pd.read_csv(tmp_path / "new.tsv", sep="\t")["prediction"].tolist() == predictions["prediction"].tolist()


# ------------------------------------------------------------------------------------------
# bad inputs: one line, non-zero exit, the problem named


@pytest.fixture
def bad_tables(tmp_path):
    (tmp_path / "strings.csv").write_text("colour,size,y\nred,1,0\nblue,2,1\nred,3,0\nblue,4,1\n")
    (tmp_path / "holes.csv").write_text("a,b,y\n1,2,0\n3,,1\n5,6,0\n7,8,1\n")
    (tmp_path / "ok.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    return tmp_path


def test_error_missing_file(tmp_path):
    result = softmaxkit("train", tmp_path / "nope.csv")
    assert_one_line_error(result, "train", "nope.csv does not exist")


def test_error_unknown_target_column(bad_tables):
    result = softmaxkit("train", bad_tables / "ok.csv", "--target", "species")
    assert_one_line_error(result, "train", "target column 'species' is not in ok.csv", "'a', 'b', 'y'")


def test_error_non_numeric_column(bad_tables):
    result = softmaxkit("train", bad_tables / "strings.csv")
    assert_one_line_error(result, "train", "non-numeric feature column 'colour'")


def test_error_nan_values(bad_tables):
    result = softmaxkit("train", bad_tables / "holes.csv")
    assert_one_line_error(result, "train", "feature column 'b' has 1 missing (NaN) values", "row 2")


def in_process_error(capsys, *args) -> str:
    """Run ``main(args)`` here; it must fail with exit 1 and one line on stderr, which is returned."""
    assert main([str(a) for a in args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_error_model_file_not_ours(digits_run, tmp_path, capsys):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((digits_run[0] / "model.npz").read_bytes()[:3000])
    np.savez(tmp_path / "x.npz", X=np.zeros((2, 64)))
    result = softmaxkit("predict", truncated, tmp_path / "x.npz")
    assert_one_line_error(result, "predict", "truncated.npz", "not a softmaxkit model file")
    np.savez(tmp_path / "foreign.npz", coef=np.zeros((3, 4)))
    (tmp_path / "notes.txt").write_text("hello")
    for model in ("foreign.npz", "notes.txt"):
        line = in_process_error(capsys, "evaluate", tmp_path / model, tmp_path / "x.npz")
        assert line.startswith("softmaxkit evaluate: error: ") and model in line
        assert "not a softmaxkit model file" in line
    line = in_process_error(capsys, "predict", tmp_path / "missing.npz", tmp_path / "x.npz")
    assert line.endswith("model file " + str(tmp_path / "missing.npz") + " does not exist")


def test_error_predict_wrong_number_of_features(digits_run, tmp_path, capsys):
    model = digits_run[0] / "model.npz"
    np.savez(tmp_path / "narrow.npz", X=np.zeros((5, 10)))
    assert_one_line_error(
        softmaxkit("predict", model, tmp_path / "narrow.npz"),
        "predict",
        "narrow.npz has 10 features, the model expects 64",
    )
    (tmp_path / "narrow.csv").write_text("a,b,c\n1,2,3\n")
    assert in_process_error(capsys, "predict", model, tmp_path / "narrow.csv").endswith(
        "narrow.csv has 3 columns, the model expects 64 features (plus, optionally, the target column)"
    )
    (tmp_path / "partly.csv").write_text("pixel_0_0,pixel_0_1,b\n1,2,3\n")
    assert "partly.csv lacks the model's feature columns 'pixel_0_2', 'pixel_0_3'" in in_process_error(
        capsys, "predict", model, tmp_path / "partly.csv"
    )
    np.savez(tmp_path / "labelled.npz", X=np.zeros((5, 10)), y=np.arange(5))
    assert "labelled.npz has 10 feature columns besides the target, the model expects 64" in in_process_error(
        capsys, "evaluate", model, tmp_path / "labelled.npz"
    )


# ------------------------------------------------------------------------------------------
# nothing lost: interrupted runs, existing files


def test_ctrl_c_during_training_leaves_nothing(tmp_path):
    """SIGINT while fitting: exit 130, one line, no model file and no temporary file anywhere."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 30))
    np.savez(tmp_path / "big.npz", X=X, y=(X[:, 0] > 0).astype(int) + (X[:, 1] > 0))
    out = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softmaxkit.cli",
            "train",
            str(tmp_path / "big.npz"),
            "--out",
            str(out),
            "--solver",
            "sgd",
            "--max-iter",
            "100000",
            "--n-iter-no-change",
            "100000",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=SINGLE_THREAD,
    )
    try:
        first = process.stdout.readline()  # printed just before fitting starts
        assert first.startswith("training on"), first
        time.sleep(1.0)
        assert process.poll() is None, "training ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["softmaxkit: interrupted; no partial model or output file was left behind"]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npz"]


def test_interrupt_while_saving_leaves_no_model(tmp_path, monkeypatch):
    """Ctrl-C in the middle of writing the model file: no model.npz, no temporary file."""
    out = tmp_path / "run"

    def interrupted_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    assert main(["train", "--dataset", "iris", "--out", str(out), "--quiet"]) == 130
    assert list(out.iterdir()) == []


def test_overwrite_replaces_only_this_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "iris", "--out", str(out), "--quiet", "--no-plots"]) == 0
    (out / "my-notes.txt").write_text("keep me")
    first = json.loads((out / "metrics.json").read_text())
    assert main(["train", "--dataset", "iris", "--out", str(out), "--quiet", "--no-plots", "--alpha", "0.5"]) == 1
    assert "already holds an earlier run" in capsys.readouterr().err
    assert (
        main(
            ["train", "--dataset", "iris", "--out", str(out), "--quiet", "--no-plots", "--alpha", "0.5", "--overwrite"]
        )
        == 0
    )
    second = json.loads((out / "metrics.json").read_text())
    assert first["estimator"]["alpha"] == 1e-4 and second["estimator"]["alpha"] == 0.5
    assert SoftmaxRegression.load(out / "model.npz").alpha == 0.5
    assert (out / "my-notes.txt").read_text() == "keep me"


def test_predict_never_overwrites(digits_run, tmp_path, capsys):
    from sklearn.datasets import load_digits

    np.savez(tmp_path / "x.npz", X=load_digits().data[:7])
    target = tmp_path / "labels.csv"
    target.write_text("precious")
    assert main(["predict", str(digits_run[0] / "model.npz"), str(tmp_path / "x.npz"), "--out", str(target)]) == 1
    assert "labels.csv already exists" in capsys.readouterr().err
    assert target.read_text() == "precious"
    assert (
        main(
            ["predict", str(digits_run[0] / "model.npz"), str(tmp_path / "x.npz"), "--out", str(target), "--overwrite"]
        )
        == 0
    )
    assert target.read_text().split()[0] == "prediction" and len(target.read_text().split()) == 8


def _stale_temporary(folder: Path, target: str) -> Path:
    """A temporary file as a writer killed with SIGKILL leaves it (its process gone)."""
    from softmaxkit._atomic import _host_tag

    child = subprocess.Popen(["true"])
    child.wait()
    path = folder / f".{target}.{child.pid}-{_host_tag()}.0123456789abcdef.tmp"
    path.write_bytes(b"PK\x03\x04 half a model")
    return path


def test_a_train_killed_during_its_save_can_be_rerun(tmp_path, capsys):
    """The killed run left only its temporary model file: no earlier run; it is removed, with a note."""
    out = tmp_path / "run"
    out.mkdir()
    stale = _stale_temporary(out, "model.npz")
    assert main(["train", "--dataset", "iris", "--out", str(out), "--quiet", "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert f"note: removed {stale}, the temporary file of an interrupted run" in err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.npz", "report.html"]


def test_overwrite_removes_stale_temporaries_and_ignores_live_ones(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "iris", "--out", str(out), "--quiet", "--no-plots"]) == 0
    stale = _stale_temporary(out, "metrics.json")
    live = (
        out / f".model.npz.{os.getppid()}-{__import__('softmaxkit._atomic')._atomic._host_tag()}.00000000000000aa.tmp"
    )
    live.write_bytes(b"being written")  # another running process's file: not ours to remove
    capsys.readouterr()
    assert main(["train", "--dataset", "iris", "--out", str(out), "--quiet", "--no-plots"]) == 1
    assert "already holds an earlier run (metrics.json, model.npz, report.html)" in capsys.readouterr().err  # no .tmp
    assert not stale.exists()  # removed even by the refused run
    assert main(["train", "--dataset", "iris", "--out", str(out), "--quiet", "--no-plots", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["metrics.json", "model.npz", "report.html", live.name])


def test_predict_removes_the_stale_temporary_of_its_output(digits_run, tmp_path, capsys):
    from sklearn.datasets import load_digits

    np.savez(tmp_path / "x.npz", X=load_digits().data[:7])
    stale = _stale_temporary(tmp_path, "labels.csv")
    other = _stale_temporary(tmp_path, "other.csv")  # another output's: left to the run that writes it
    out = tmp_path / "labels.csv"
    assert main(["predict", str(digits_run[0] / "model.npz"), str(tmp_path / "x.npz"), "--out", str(out)]) == 0
    assert f"note: removed {stale}" in capsys.readouterr().err
    assert not stale.exists() and other.exists() and len(out.read_text().split()) == 8


def test_sigterm_is_an_interrupt_that_cleans_up(tmp_path):
    """SIGTERM while fitting: exit 143, one line, nothing left (SIGINT's test above, for SIGTERM)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 30))
    np.savez(tmp_path / "big.npz", X=X, y=(X[:, 0] > 0).astype(int))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "softmaxkit.cli", "train", str(tmp_path / "big.npz"), "--out", str(out)]
    command += ["--solver", "sgd", "--max-iter", "100000", "--n-iter-no-change", "100000", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=SINGLE_THREAD)
    try:
        assert process.stdout.readline().startswith("training on")
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["softmaxkit: terminated; no partial model or output file was left behind"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npz"]


def test_sigterm_handler_is_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["datasets"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------------------------------
# no silent wrong answers from the data files


def test_huge_float_labels_stay_distinct(tmp_path, capsys):
    """Labels 0, 1e19 and 3e19 (floats beyond int64): three exact classes, not two wrapped int64 values."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 2))
    labels = np.array([0.0, 1e19, 3e19])[np.arange(60) % 3]
    X[:, 0] += np.arange(60) % 3
    lines = ["a,b,label"] + [f"{float(x0)!r},{float(x1)!r},{float(label)!r}" for (x0, x1), label in zip(X, labels)]
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    assert main(["train", str(tmp_path / "big.csv"), "--out", str(tmp_path / "run"), "--quiet", "--no-plots"]) == 0
    model = SoftmaxRegression.load(tmp_path / "run" / "model.npz")
    assert model.classes_.tolist() == ["0", "10000000000000000000", "30000000000000000000"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["dataset"]["n_classes"] == 3
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run" / "model.npz"), str(tmp_path / "big.csv")]) == 0
    predicted = capsys.readouterr().out.split()[1:]
    assert set(predicted) == {"0", "10000000000000000000", "30000000000000000000"}


def test_labels_that_are_not_whole_numbers_are_refused(tmp_path, capsys):
    (tmp_path / "half.csv").write_text("a,label\n1,0\n2,0.5\n3,1\n")
    line = in_process_error(capsys, "train", tmp_path / "half.csv", "--out", tmp_path / "run")
    assert line.endswith(
        "target column 'label' holds numbers that are not whole (0.5 at data row 2); class labels must be whole numbers or names"
    )


def test_a_feature_of_huge_values_is_standardised_like_any_other(tmp_path, capsys):
    """Values near 1e300 (squares overflow): the column is standardised exactly as its rescaled twin."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 2))
    y = np.arange(60) % 3
    X[:, 1] += y
    runs = {}
    for name, factor in (("plain", 1.0), ("huge", 1e299)):
        rows = [f"{a!r},{b * factor!r},{t}" for (a, b), t in zip(X.tolist(), y)]
        (tmp_path / f"{name}.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
        argv = ["train", str(tmp_path / f"{name}.csv"), "--out", str(tmp_path / name), "--quiet", "--no-plots"]
        assert main(argv) == 0, capsys.readouterr().err
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert runs["huge"]["test"]["accuracy"] == runs["plain"]["test"]["accuracy"]
    assert runs["huge"]["test"]["log_loss"] == pytest.approx(runs["plain"]["test"]["log_loss"], rel=1e-9)


def test_metrics_json_writes_non_finite_numbers_as_null(tmp_path):
    from softmaxkit.cli._common import write_json

    write_json(tmp_path / "m.json", {"log_loss": float("inf"), "curve": [1.0, float("nan")], "n": 3})
    assert json.loads((tmp_path / "m.json").read_text()) == {"log_loss": None, "curve": [1.0, None], "n": 3}


def test_infinite_labels_are_refused(tmp_path, capsys):
    (tmp_path / "inf.csv").write_text("a,label\n1,0\n2,inf\n3,1\n")
    line = in_process_error(capsys, "train", tmp_path / "inf.csv", "--out", tmp_path / "run")
    assert line.endswith("inf.csv: target column 'label' has 1 infinite values (first at data row 2)")


@pytest.mark.parametrize("command", ["train", "predict"])
@pytest.mark.parametrize(
    "rows",
    [["1,2,0", "3,4,5,1", "5,6,0"], ["1,2,0,9", "3,4,1,9", "5,6,0,9"]],
    ids=["one row with an extra field", "every row with an extra field"],
)
def test_rows_with_extra_fields_are_refused(digits_run, tmp_path, capsys, command, rows):
    """pandas would take the first column for an index (every row) or drop the field (usecols): never."""
    path = tmp_path / "extra.csv"
    path.write_text("\n".join(["a,b,label", *rows]) + "\n")
    if command == "train":
        args = ["train", path, "--out", tmp_path / "run"]
    else:
        assert main(["train", "--dataset", "iris", "--out", str(tmp_path / "m"), "--quiet", "--no-plots"]) == 0
        path.write_text(
            "\n".join(
                ["sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)"] + [r + ",1" for r in rows]
            )
            + "\n"
        )
        capsys.readouterr()
        args = ["predict", tmp_path / "m" / "model.npz", path]
    line = in_process_error(capsys, *args)
    assert "cannot read extra.csv as csv" in line, line
    assert "fields" in line


def test_a_trailing_delimiter_is_no_extra_field(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2},\n" for i in range(40)))
    assert main(["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "run"), "--quiet", "--no-plots"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["dataset"]["n_features"] == 2


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    from sklearn.datasets import load_iris

    folder = tmp_path_factory.mktemp("iris-run")
    assert main(["train", "--dataset", "iris", "--out", str(folder / "run"), "--quiet", "--no-plots"]) == 0
    X, y = load_iris(return_X_y=True)
    return folder / "run" / "model.npz", X, y


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_file_without_any_of_the_models_column_names_is_refused(iris_run, tmp_path, capsys, command):
    """Same column count, other names: another data set, never matched silently by position."""
    model, X, y = iris_run
    path = tmp_path / "other.csv"
    path.write_text("w,x,y,z,label\n" + "".join(",".join(map(str, r)) + f",{t}\n" for r, t in zip(X[:9], y[:9])))
    line = in_process_error(capsys, command, model, path)
    assert "other.csv has none of the model's feature columns" in line
    assert "'sepal length (cm)'" in line and "'w', 'x'" in line and "--no-header" in line
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("".join(",".join(map(str, r)) + f",{t}\n" for r, t in zip(X[:9], y[:9])))
    assert main([command, str(model), str(headerless), "--no-header"]) == 0  # by position, on request


def test_a_header_only_file_has_no_rows_to_predict(iris_run, tmp_path, capsys):
    model, _, _ = iris_run
    path = tmp_path / "empty.csv"
    path.write_text("sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n")
    assert in_process_error(capsys, "predict", model, path).endswith("empty.csv has no data rows to predict")


# ------------------------------------------------------------------------------------------
# every input format, the same answer


@pytest.fixture(scope="module")
def iris_files(tmp_path_factory):
    from sklearn.datasets import dump_svmlight_file, load_iris

    folder = tmp_path_factory.mktemp("iris")
    bunch = load_iris(as_frame=True)
    frame = bunch.frame
    frame.to_csv(folder / "iris.csv", index=False)
    frame.to_csv(folder / "iris.tsv.gz", sep="\t", index=False)
    frame.to_parquet(folder / "iris.parquet", index=False)
    np.savez(folder / "iris.npz", X=bunch.data.to_numpy(), y=bunch.target.to_numpy())
    dump_svmlight_file(bunch.data.to_numpy(), bunch.target.to_numpy(), str(folder / "iris.svm"))
    return folder


@pytest.mark.parametrize("name", ["iris.csv", "iris.tsv.gz", "iris.parquet", "iris.npz", "iris.svm"])
def test_every_format_trains_the_same_model(iris_files, name, tmp_path, capsys):
    # svmlight data stays sparse and is never standardised: compared with the bundled set's raw features
    raw = ["--no-standardize"] if name == "iris.svm" else []
    options = ["--test-size", "0.3", "--quiet", "--no-plots", *raw]
    assert main(["train", str(iris_files / name), "--out", str(tmp_path / "run"), *options]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9
    assert metrics["split"]["n_test"] == 45
    reference = main(["train", "--dataset", "iris", "--out", str(tmp_path / "ref"), *options])
    assert reference == 0
    expected = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == expected["test"]["accuracy"]
    # Sparse products round differently, so L-BFGS's path differs in the last bits and the fit stops at
    # the default tol (a relative gap of 1e-5) a little elsewhere: 2.7e-8 apart, measured.
    rel = 1e-6 if raw else 1e-9
    assert metrics["test"]["log_loss"] == pytest.approx(expected["test"]["log_loss"], rel=rel)


def test_early_stopping_draws_the_validation_curve(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--solver",
                "sgd",
                "--max-iter",
                "15",
                "--early-stopping",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation_loss_curve"] is not None
    assert len(metrics["validation_loss_curve"]) == len(metrics["loss_curve"]) >= 1
    assert png_size(out / "loss_curve.png") == (800, 500)
    assert "epochs" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# the parser


def test_datasets_lists_the_bundled_datasets(capsys):
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["digits"][:4] == ["(default)", "1797", "64", "10"]
    assert rows["iris"][:3] == ["150", "4", "3"]
    assert rows["wine"][:3] == ["178", "13", "3"]


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "datasets"])
def test_every_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"softmaxkit {command}" in text


def usage_error(capsys, *args) -> str:
    """Run ``main(args)``: it must stop with argparse's exit status 2; the error line is returned."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: softmaxkit ") and "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--test-size", "half"], "argument --test-size: must be a fraction in (0, 1), got 'half'"),
        (["train", "--dataset", "wine", "--test-size", "1.5"], "argument --test-size: must be a fraction in (0, 1)"),
        (["train", "x.csv", "--dataset", "wine"], "argument --dataset: not allowed with argument DATA"),
        (["train", "a.csv", "--test", "b.csv", "--test-size", "0.3"], "argument --test-size: not allowed with"),
        (["train", "--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
        (["train", "--target", "y"], "--target applies to a data file"),
        (["train", "--dataset", "iris", "--backend", "jax"], "The 'backend' parameter of SoftmaxRegression must be"),
        (["train", "--dataset", "iris", "--device", "cuda"], "device must be None with backend='numpy'"),
        (["train", "--dataset", "iris", "--alpha", "-1"], "The 'alpha' parameter"),
    ],
)
def test_usage_errors_exit_2(args, message, tmp_path, capsys):
    line = usage_error(capsys, *args, "--quiet", "--out", tmp_path / "run")
    assert line.startswith("softmaxkit train: error: ") and message in line, line
    assert not (tmp_path / "run").exists()


def test_only_the_documented_user_errors_are_one_line_messages(tmp_path, capsys, monkeypatch):
    """A ValueError from inside the library is a bug: it keeps its traceback (main does not catch it)."""
    from softmaxkit.linear_model import SoftmaxRegression

    def broken_fit(self, X, y, sample_weight=None):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(SoftmaxRegression, "fit", broken_fit)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(["train", "--dataset", "iris", "--quiet", "--no-plots", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("softmaxkit")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (package not installed with pip)")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("softmaxkit ")


def test_traceback_flag_shows_the_error(tmp_path):
    from softmaxkit.cli._formats import DataError

    with pytest.raises(DataError, match="does not exist"):
        main(["--traceback", "train", str(tmp_path / "nope.csv")])


def _torch_device_or_skip(device: str) -> None:
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; PyTorch sees none on this machine")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_train_with_the_torch_backend(device, tmp_path, capsys):
    """--backend torch gives the numpy backend's model (same optimum: same test labels, close loss)."""
    _torch_device_or_skip(device)
    common = ["train", "--dataset", "digits", "--quiet", "--no-plots", "--tol", "1e-6"]
    assert main([*common, "--out", str(tmp_path / "numpy")]) == 0
    assert main([*common, "--backend", "torch", "--device", device, "--out", str(tmp_path / "torch")]) == 0
    reference = json.loads((tmp_path / "numpy" / "metrics.json").read_text())
    metrics = json.loads((tmp_path / "torch" / "metrics.json").read_text())
    assert metrics["estimator"]["backend"] == "torch" and metrics["test"]["accuracy"] >= DIGITS_FLOOR
    assert metrics["test"]["log_loss"] == pytest.approx(reference["test"]["log_loss"], rel=1e-3)
    from sklearn.datasets import load_digits

    X = load_digits().data
    torch_model = SoftmaxRegression.load(tmp_path / "torch" / "model.npz")
    numpy_model = SoftmaxRegression.load(tmp_path / "numpy" / "model.npz")
    assert np.mean(torch_model.predict(X) == numpy_model.predict(X)) >= 0.995


def test_a_missing_optional_package_is_named(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r}", name="matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    line = in_process_error(capsys, "train", "--dataset", "iris", "--quiet", "--out", tmp_path / "run")
    assert line == (
        "softmaxkit train: error: this needs the optional package matplotlib; install it with: "
        "pip install 'softmaxkit[plot]' (or pass --no-plots)"
    )
    assert not (tmp_path / "run").exists()  # refused before training, not after


# ------------------------------------------------------------------------------------------
# the streaming pass for the fit from a source


@pytest.mark.parametrize("kind", ["csv", "arrays", "sparse"])
def test_streamed_standardization_equals_the_whole_array_one(kind, tmp_path):
    """Two passes over batches of 37 rows give the whole-array statistics (a constant column, huge values)."""
    import scipy.sparse

    from softmaxkit.cli._train import streamed_standardization
    from softmaxkit.sources import ArraySource, CsvSource

    rng = np.random.default_rng(3)
    X = np.column_stack([rng.normal(5.0, 2.0, 500), np.full(500, 7.0), rng.normal(0, 1e200, 500), rng.random(500)])
    y = rng.integers(0, 3, 500)
    if kind == "sparse":
        X[:, [0, 2, 3]] *= rng.random((500, 3)) < 0.5  # zeros; the constant column kept
    width = 8 * X.shape[1] + 8
    if kind == "csv":
        np.savetxt(
            tmp_path / "d.csv", np.column_stack([X, y]), delimiter=",", header="a,b,c,d,y", comments="", fmt="%.17g"
        )
        source = CsvSource(tmp_path / "d.csv", max_bytes=37 * width)
    else:
        data = scipy.sparse.csr_matrix(X) if kind == "sparse" else X
        source = ArraySource(data, y, max_bytes=37 * (width if kind == "arrays" else 3 * width))
    assert len(list(source)) > 2  # several batches
    mean, scale = streamed_standardization(source)
    expected_mean, expected_scale = standardization(X)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(scale, expected_scale, rtol=1e-12)
    assert scale[1] == 1.0  # the constant column
