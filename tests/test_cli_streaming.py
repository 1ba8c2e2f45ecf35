"""``softmaxkit train`` and ``evaluate`` on streamed files: the same results as in memory, and safe to kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from softmaxkit._atomic import find_temporaries
from softmaxkit.cli import main
from softmaxkit.cli._stream import batch_bytes, memory_size, should_stream
from softmaxkit.linear_model import SoftmaxRegression

SCALES = np.array([1.0, 10.0, 100.0, 0.1, 3.0])


def _rows(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(SCALES))) * SCALES
    logits = (X / SCALES) @ rng.normal(size=(len(SCALES), 3))
    y = np.array(["a", "b", "c"])[np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)]
    return X, y


def _write_csv(path, X, y):
    with open(path, "w") as stream:
        stream.write(",".join([*(f"x{j}" for j in range(X.shape[1])), "label"]) + "\n")
        for row, label in zip(X.tolist(), y.tolist()):
            stream.write(",".join([*map(repr, row), label]) + "\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-streaming")
    X, y = _rows(2000, 0)
    X_test, y_test = _rows(500, 1)
    _write_csv(folder / "train.csv", X, y)
    _write_csv(folder / "test.csv", X_test, y_test)
    parts = folder / "parts"
    parts.mkdir()
    for k, rows in enumerate(np.array_split(np.arange(len(y)), 3)):
        columns = {f"x{j}": X[rows, j] for j in range(X.shape[1])}
        pq.write_table(pa.table({**columns, "label": y[rows]}), parts / f"part-{k}.parquet")
    return folder


def _train(capsys, *argv):
    assert main(["train", *argv, "--no-plots", "--quiet"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("train_file", ["train.csv", "parts"])
def test_streamed_train_equals_in_memory_train(data, tmp_path, capsys, train_file):
    common = ["--test", str(data / "test.csv"), "--tol", "1e-12", "--alpha", "1e-3"]
    _train(capsys, str(data / "train.csv"), *common, "--out", str(tmp_path / "memory"))
    printed = _train(capsys, str(data / train_file), *common, "--stream", "--out", str(tmp_path / "streamed"))
    assert "(streamed, batches of" in printed
    memory = SoftmaxRegression.load(tmp_path / "memory" / "model.npz")
    streamed = SoftmaxRegression.load(tmp_path / "streamed" / "model.npz")
    np.testing.assert_allclose(streamed.coef_, memory.coef_, rtol=1e-9, atol=1e-9 * np.abs(memory.coef_).max())
    np.testing.assert_allclose(streamed.intercept_, memory.intercept_, rtol=1e-9, atol=1e-9)
    for key in ("standardized", "mean", "scale", "target", "feature_names"):
        if key in ("mean", "scale"):
            np.testing.assert_allclose(streamed.saved_metadata_[key], memory.saved_metadata_[key], rtol=1e-12)
        else:
            assert streamed.saved_metadata_[key] == memory.saved_metadata_[key]
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("memory", "streamed")]
    for part in ("train", "test"):
        assert metrics[1][part]["confusion_matrix"] == metrics[0][part]["confusion_matrix"]
        assert metrics[1][part]["log_loss"] == pytest.approx(metrics[0][part]["log_loss"], rel=1e-9)
    assert metrics[1]["dataset"]["streamed"] is True


def test_test_size_split_cache_and_automatic_streaming(data, tmp_path, capsys, monkeypatch):
    train = str(data / "train.csv")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # where the cache goes
    # 2000 rows of about 90 bytes (0.18 MB; 4 x that is within 1 MiB): read whole
    printed = _train(capsys, train, "--max-memory", "1MiB", "--out", str(tmp_path / "small"))
    assert "streamed" not in printed
    first = _train(capsys, train, "--stream", "--test-size", "0.25", "--out", str(tmp_path / "a"))
    _train(capsys, train, "--stream", "--test-size", "0.25", "--cache", "--out", str(tmp_path / "b"))
    assert "0.25 of the rows held out at random" in first
    reports = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("a", "b")]
    # the same seeded split, whether the training rows come from the file or from the float32 cache
    assert reports[0]["split"] == reports[1]["split"]
    assert reports[0]["split"]["n_train"] + reports[0]["split"]["n_test"] == 2000
    assert 0.15 < reports[0]["split"]["n_test"] / 2000 < 0.35
    a, b = (SoftmaxRegression.load(tmp_path / name / "model.npz") for name in ("a", "b"))
    # float32-rounded features: the fits differ by about float32's precision, not more
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-3, atol=1e-4 * np.abs(a.coef_).max())
    assert list(temporary.iterdir()) == []  # the cache was removed


def test_a_file_past_the_budget_streams_without_being_asked(tmp_path, capsys):
    X, y = _rows(12_000, 2)  # about 1.1 MB of text: 4 x that is past a 4 MiB budget
    _write_csv(tmp_path / "big.csv", X, y)
    printed = _train(
        capsys, str(tmp_path / "big.csv"), "--max-memory", "4MiB", "--max-iter", "5", "--out", str(tmp_path / "run")
    )
    assert "(streamed, batches of 1 MiB)" in printed
    assert (tmp_path / "run" / "model.npz").is_file()


def test_evaluate_streamed_equals_evaluate_in_memory(data, tmp_path, capsys):
    _train(capsys, str(data / "train.csv"), "--out", str(tmp_path / "model"))
    assert main(["evaluate", str(tmp_path / "model"), str(data / "test.csv")]) == 0
    in_memory = capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "model"), str(data / "test.csv"), "--stream", "--quiet"]) == 0
    assert capsys.readouterr().out == in_memory


def test_budget_parsing_and_streaming_errors(data, tmp_path, capsys):
    assert memory_size("512MiB") == 512 * 2**20 and memory_size("1.5GB") == 1_500_000_000
    assert batch_bytes(memory_size("512MiB")) == 64 * 2**20
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(data / "train.csv"), "--max-memory", "lots"])
    assert exit_info.value.code == 2
    assert "--max-memory: must be a size in bytes such as 512MiB or 2GB, got 'lots'" in capsys.readouterr().err
    code = main(["train", str(data / "train.csv"), "--stream", "--early-stopping", "--out", str(tmp_path / "x")])
    assert code == 1
    assert "--early-stopping needs the rows in memory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_npz_and_bundled_data_never_stream(tmp_path):
    import argparse

    np.savez(tmp_path / "d.npz", X=np.zeros((3, 2)), y=np.arange(3))
    args = argparse.Namespace(fmt=None, stream=True, max_memory=1 << 20)
    assert not should_stream(str(tmp_path / "d.npz"), args)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_killed_streaming_train_leaves_no_model_and_the_rerun_works(tmp_path):
    # 300,000 rows: the whole run took 4.4 s on a quiet machine, far longer than the wait before the kill
    # (30,000 rows: a 0.4 s fit of 16 streamed L-BFGS iterations to machine precision, sometimes over by then)
    X, y = _rows(300_000, 3)
    _write_csv(tmp_path / "train.csv", X, y)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "softmaxkit.cli",
        "train",
        str(tmp_path / "train.csv"),
        "--stream",
        "--out",
        str(out),
        "--no-plots",
        "--max-memory",
        "1MiB",
        "--solver",
        "lbfgs",
    ]
    process = subprocess.Popen([*command, "--max-iter", "100000", "--tol", "0"], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # printed after the standardisation passes, before the fit
    assert line.startswith("training on"), line
    time.sleep(0.5)  # midway through the fit's passes
    assert process.poll() is None, "the fit ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "model.npz").exists()
    if out.exists():  # nothing visible: at most the hidden temporary file of a killed writer
        temporaries = {t.path.name for t in find_temporaries(out)}
        assert [p.name for p in out.iterdir() if p.name not in temporaries] == []
    rerun = subprocess.run([*command, "--max-iter", "3"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    model = SoftmaxRegression.load(out / "model.npz")
    assert model.coef_.shape == (3, len(SCALES))
    assert not find_temporaries(out)


@pytest.mark.slow
def test_bench_out_of_core_quick(tmp_path):
    """benchmarks/bench_out_of_core.py still runs (its quick form, about a minute): both runs stream, the check is exact."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_out_of_core.py", "--quick", "--out", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "out_of_core-partial.json").read_text())["rows"]
    runs = [r for r in rows if "peak_MiB" in r]
    assert len(runs) == 2 and all(r["streamed"] for r in runs)
    checks = [r for r in rows if "coef_rel_diff" in r]
    assert len(checks) == 2 and all(float(r["coef_rel_diff"]) < 1e-8 for r in checks)


def test_progress_per_pass_counts_rows_and_knows_the_total_after_the_first_pass(monkeypatch, capsys):
    from softmaxkit import _progress
    from softmaxkit.cli._stream import ProgressSource, SplitSource
    from softmaxkit.sources import ArraySource

    monkeypatch.setattr(_progress, "PLAIN_INTERVAL_S", 0.0)  # a line per batch (a log's line every 10 s otherwise)
    rows = SplitSource(
        ArraySource(np.zeros((10, 2)), np.arange(10) % 2, max_bytes=4 * 24), fraction=0, seed=0, test=False
    )
    assert rows.n_rows is None  # (as a text file's: not known before a pass)
    source = ProgressSource(rows, enabled=True)
    for _ in range(2):
        assert sum(len(y) for _, y, _ in source) == 10
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("pass 1 over ") and ": 4.00 rows, " in line and "rows/s" in line for line in lines)
    assert any(line.startswith("pass 2 over ") and ": 4.00/10.0 rows, " in line for line in lines)  # with the total
    assert lines[-1].startswith("pass 2 over ") and "done, 10.0 rows" in lines[-1]
