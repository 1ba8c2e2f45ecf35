"""Saves, predictions and training runs killed at random moments, in subprocesses: nothing broken, nothing left behind.

Each try forks a process from a multiprocessing forkserver (which has imported softmaxkit,
scikit-learn and pandas once: milliseconds per process), lets it run for a random share of the job's
measured duration and kills it with SIGKILL, so no cleanup can run. Then:

* the target file is the old one, intact, or the new one, complete (a model loads with exactly the
  predictions of one of the two models; a predictions file is byte for byte one of the two);
* nothing new is visible in the folder: at most the hidden temporary file of the killed writer,
  which is recognised as stale;
* a rerun works (a killed ``train`` is no "earlier run" unless it completed a file) and leaves no
  temporary file at all.

Also: SIGTERM (the command line cleans up and exits 143), and RLIMIT_FSIZE (the write fails with
EFBIG, the old file stays, the temporary file is removed). The number of tries is a share of the
hypothesis profile's budget: a few in the normal suite, 30 or more in ``make fuzz``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import multiprocessing
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import _kill_jobs
import numpy as np
import pytest
from _fuzz import budget
from hypothesis import given
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from softmaxkit._atomic import find_temporaries
from softmaxkit.cli import main
from softmaxkit.linear_model import SoftmaxRegression

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL, fork and RLIMIT_FSIZE are POSIX")

KILLS = budget(0.05, minimum=3)  # 30 tries at make fuzz's budget of 600


@pytest.fixture(scope="module")
def forkserver():
    context = multiprocessing.get_context("forkserver")
    # pytest too: a forked child runs the parent's __main__ module again (under `python -m pytest`, pytest's).
    context.set_forkserver_preload(["softmaxkit.linear_model", "softmaxkit.cli", "pandas", "pytest", "_kill_jobs"])
    return context


@dataclass
class Job:
    """A job for :func:`run`, the seconds an uninterrupted run of it takes, and what it turns into."""

    target: object
    args: tuple
    seconds: float


def run(forkserver, target, args, *, kill_after: float | None = None, sig=signal.SIGKILL) -> int:
    """Run ``target(*args)`` in a forked process, signal it ``kill_after`` seconds in; its exit code."""
    process = forkserver.Process(target=target, args=args)
    process.start()
    if kill_after is not None:
        time.sleep(kill_after)
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:  # it had finished
            pass
    process.join(120)
    assert process.exitcode is not None, "the job did not end"
    return process.exitcode


def timed(forkserver, target, args) -> float:
    """Seconds of an uninterrupted run (the second of two: the first warms the forkserver)."""
    for _ in range(2):
        started = time.perf_counter()
        assert run(forkserver, target, args) == 0
        seconds = time.perf_counter() - started
    return seconds


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def check_leftovers(folder: Path) -> None:
    """Only stale temporary files of killed writers may be left, hidden."""
    hidden = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    found = find_temporaries(folder)
    assert sorted(t.path.name for t in found) == hidden, hidden
    assert all(t.stale for t in found), found


# ------------------------------------------------------------------------------------------
# SoftmaxRegression.save


@pytest.fixture(scope="module")
def big_models(forkserver, tmp_path_factory):
    """Two models of 1.6 MB each (10 classes x 20,000 features), so a save takes milliseconds."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(30, 20_000))
    y = np.arange(30) % 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 3 iterations: two models are all it takes
        first = SoftmaxRegression(max_iter=3).fit(X, y)
        second = SoftmaxRegression(max_iter=3, alpha=1.0).fit(X, y)
    folder = tmp_path_factory.mktemp("timing")
    seconds = timed(forkserver, _kill_jobs.save, (second, folder / "model.npz"))
    return {"old": first, "new": second, "X": X[:5], "job": Job(_kill_jobs.save, (second,), seconds)}


def _which_model(path: Path, models) -> str:
    loaded = SoftmaxRegression.load(path)
    proba = loaded.predict_proba(models["X"])
    for name in ("old", "new"):
        if np.array_equal(proba, models[name].predict_proba(models["X"])):
            return name
    raise AssertionError("the model file is neither the old model nor the new one")


@given(moment=st.floats(0.0, 1.0))
@KILLS
def test_a_save_killed_at_any_moment_leaves_the_old_model_or_the_new(big_models, forkserver, tmp_path_factory, moment):
    folder = tmp_path_factory.mktemp("save")
    path = folder / "model.npz"
    big_models["old"].save(path)
    job = big_models["job"]
    # Over the whole measured run (fork, unpickling, the save, exit): about a sixth of the kills land
    # inside the write itself, the rest before it starts or after it ends.
    status = run(forkserver, job.target, (*job.args, path), kill_after=moment * job.seconds)
    assert status in (0, -signal.SIGKILL)
    assert _which_model(path, big_models) in ("old", "new")
    assert visible(folder) == ["model.npz"]
    check_leftovers(folder)
    big_models["new"].save(path, overwrite=True)  # the rerun
    assert _which_model(path, big_models) == "new"
    assert os.listdir(folder) == ["model.npz"]  # its stale temporary file removed


def test_a_save_beyond_the_file_size_limit_keeps_the_old_model(big_models, forkserver, tmp_path):
    path = tmp_path / "model.npz"
    big_models["old"].save(path)
    limit = path.stat().st_size // 2
    status = run(forkserver, _kill_jobs.file_size_limited, (limit, _kill_jobs.save, big_models["new"], path))
    assert status == errno.EFBIG  # an OSError in the child, not a death by SIGXFSZ
    assert _which_model(path, big_models) == "old"
    assert os.listdir(tmp_path) == ["model.npz"]  # the temporary file removed on the way out


# ------------------------------------------------------------------------------------------
# softmaxkit predict


@pytest.fixture(scope="module")
def prediction_job(forkserver, tmp_path_factory):
    """Two iris-sized models and 100,000 rows to label: an old predictions file and the new one's text."""
    folder = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(100_000, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    columns = ["a", "b", "c", "d"]
    (folder / "data.csv").write_text(
        ",".join(columns) + "\n" + "\n".join(",".join(f"{v:.6g}" for v in row) for row in X) + "\n"
    )
    (folder / "train.csv").write_text(
        ",".join([*columns, "label"])
        + "\n"
        + "\n".join(",".join([*(f"{v:.6g}" for v in row), str(t)]) for row, t in zip(X[:2000], y[:2000]))
        + "\n"
    )
    for name, alpha in (("old", "1.0"), ("new", "1e-4")):
        argv = ["train", str(folder / "train.csv"), "--out", str(folder / name), "--alpha", alpha]
        assert main([*argv, "--quiet", "--no-plots"]) == 0
    texts = {}
    for name in ("old", "new"):
        out = folder / f"{name}.csv"
        assert (
            main(["predict", str(folder / name / "model.npz"), str(folder / "data.csv"), "--proba", "--out", str(out)])
            == 0
        )
        texts[name] = out.read_bytes()
    assert texts["old"] != texts["new"]
    argv = ["predict", str(folder / "new" / "model.npz"), str(folder / "data.csv"), "--proba", "--overwrite", "--out"]
    seconds = timed(forkserver, _kill_jobs.command, ([*argv, str(folder / "timing.csv")],))
    return {"texts": texts, "argv": argv, "seconds": seconds, "folder": folder}


@given(moment=st.floats(0.0, 1.0))
@KILLS
def test_a_prediction_killed_at_any_moment_leaves_the_old_file_or_the_new(
    prediction_job, forkserver, tmp_path_factory, moment
):
    folder = tmp_path_factory.mktemp("predicted")
    out = folder / "predictions.csv"
    out.write_bytes(prediction_job["texts"]["old"])
    argv = [*prediction_job["argv"], str(out)]
    status = run(forkserver, _kill_jobs.command, (argv,), kill_after=moment * 1.2 * prediction_job["seconds"])
    assert status in (0, -signal.SIGKILL)
    assert out.read_bytes() in (prediction_job["texts"]["old"], prediction_job["texts"]["new"])
    assert visible(folder) == ["predictions.csv"]
    check_leftovers(folder)
    assert main(argv) == 0  # the rerun
    assert out.read_bytes() == prediction_job["texts"]["new"]
    assert os.listdir(folder) == ["predictions.csv"]


@given(moment=st.floats(0.0, 1.0))
@KILLS
def test_a_terminated_prediction_cleans_up(prediction_job, forkserver, tmp_path_factory, moment):
    """SIGTERM: the command line raises where it is, the writer removes its temporary file, exit 143."""
    folder = tmp_path_factory.mktemp("terminated")
    out = folder / "predictions.csv"
    out.write_bytes(prediction_job["texts"]["old"])
    argv = [*prediction_job["argv"], str(out)]
    status = run(
        forkserver, _kill_jobs.command, (argv,), kill_after=moment * 1.2 * prediction_job["seconds"], sig=signal.SIGTERM
    )
    assert status in (0, 128 + signal.SIGTERM, -signal.SIGTERM)  # -SIGTERM: before main() took the signal
    assert out.read_bytes() in (prediction_job["texts"]["old"], prediction_job["texts"]["new"])
    assert os.listdir(folder) == ["predictions.csv"]  # no temporary file, not even a hidden one


def test_a_prediction_beyond_the_file_size_limit_keeps_the_old_file(prediction_job, forkserver, tmp_path):
    out = tmp_path / "predictions.csv"
    out.write_bytes(prediction_job["texts"]["old"])
    limit = len(prediction_job["texts"]["new"]) // 2
    argv = [*prediction_job["argv"], str(out)]
    assert run(forkserver, _kill_jobs.file_size_limited, (limit, _kill_jobs.command, argv)) == 1
    assert out.read_bytes() == prediction_job["texts"]["old"]
    assert os.listdir(tmp_path) == ["predictions.csv"]


# ------------------------------------------------------------------------------------------
# softmaxkit train


@given(moment=st.floats(0.0, 1.0))
@KILLS
def test_a_killed_train_can_be_rerun(prediction_job, forkserver, tmp_path_factory, moment):
    """The rerun is refused only for files the killed run completed (never for a temporary file), and
    with --overwrite it always works; afterwards no temporary file is left."""
    folder = prediction_job["folder"]
    out = tmp_path_factory.mktemp("train") / "run"
    argv = ["train", str(folder / "train.csv"), "--out", str(out), "--quiet", "--no-plots"]
    if "train_seconds" not in prediction_job:
        prediction_job["train_seconds"] = timed(forkserver, _kill_jobs.command, ([*argv, "--overwrite"],))
        for child in out.iterdir():
            child.unlink()
    status = run(forkserver, _kill_jobs.command, (argv,), kill_after=moment * 1.2 * prediction_job["train_seconds"])
    assert status in (0, -signal.SIGKILL)
    if out.exists():
        check_leftovers(out)
        completed = visible(out)
        assert set(completed) <= {"model.npz", "metrics.json"}
        if "model.npz" in completed:
            SoftmaxRegression.load(out / "model.npz")  # complete
    else:
        completed = []
    if completed:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(argv) == 1
        assert f"already holds an earlier run ({', '.join(completed)})" in err.getvalue()
        assert main([*argv, "--overwrite"]) == 0
    else:
        assert main(argv) == 0  # a temporary file of the killed run is no earlier run
    assert sorted(os.listdir(out)) == ["metrics.json", "model.npz"]
