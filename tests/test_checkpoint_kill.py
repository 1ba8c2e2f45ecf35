"""Checkpointed fits killed with SIGKILL at random moments, in subprocesses, then run again: the same model, bit for bit.

Each try forks a process from a multiprocessing forkserver (softmaxkit imported once), lets the
checkpointed fit (a checkpoint after every iteration) run for a random share of its measured
duration and kills it, so that no cleanup runs; it does that a few times in a row, each run resuming
from the checkpoint the one before left, and after every kill the checkpoint file is absent (killed
before its first write) or a complete, valid checkpoint. The last run goes to the end; its model must
equal the uninterrupted fit's exactly (``coef_`` and ``intercept_`` compared with ``array_equal``).
A kill in the middle of a checkpoint write (the writer dies halfway through the archive) leaves the
previous checkpoint readable and resumable.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import _checkpoint_jobs
import numpy as np
import pytest
from _fuzz import budget
from hypothesis import given
from hypothesis import strategies as st

from softmaxkit._atomic import find_temporaries
from softmaxkit._model_io import load_model_file
from softmaxkit.linear_model import SoftmaxRegression
from softmaxkit.linear_model._checkpoint import ESTIMATOR

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and fork are POSIX")

SOLVERS = tuple(_checkpoint_jobs.OPTIONS)
TRIES = budget(0.02, minimum=2)  # 12 at make fuzz's budget of 600


@pytest.fixture(scope="module")
def forkserver():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["softmaxkit.linear_model", "sklearn.datasets", "pytest", "_checkpoint_jobs"])
    return context


def run(forkserver, args, *, kill_after: float | None = None) -> int:
    """``_checkpoint_jobs.fit(*args)`` in a forked process, killed ``kill_after`` seconds in; its exit code."""
    process = forkserver.Process(target=_checkpoint_jobs.fit, args=args)
    process.start()
    if kill_after is not None:
        time.sleep(kill_after)
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # it had finished
            pass
    process.join(120)
    assert process.exitcode is not None, "the job did not end"
    return process.exitcode


@pytest.fixture(scope="module")
def uninterrupted(forkserver, tmp_path_factory):
    """Per solver: the model of an uninterrupted checkpointed fit, and the seconds the second of two runs took."""
    found = {}
    for solver in SOLVERS:
        folder = tmp_path_factory.mktemp(f"reference-{solver}")
        for _ in range(2):  # the first warms the forkserver
            (folder / "checkpoint.npz").unlink(missing_ok=True)
            started = time.perf_counter()
            assert run(forkserver, (solver, folder / "checkpoint.npz", folder / "model.npz")) == 0
            seconds = time.perf_counter() - started
        found[solver] = (SoftmaxRegression.load(folder / "model.npz"), seconds)
    return found


def check_checkpoint(folder) -> int | None:
    """The iterations of the checkpoint in ``folder`` (None if there is none); only stale temporaries beside it."""
    assert all(t.stale for t in find_temporaries(folder)), find_temporaries(folder)
    path = folder / "checkpoint.npz"
    if not path.exists():
        return None
    _, metadata = load_model_file(path, estimator=ESTIMATOR)  # complete and valid, or this raises
    return metadata["n_iter"]


def assert_same_model(model, reference):
    assert np.array_equal(model.coef_, reference.coef_)
    assert np.array_equal(model.intercept_, reference.intercept_)
    assert model.n_iter_ == reference.n_iter_
    assert model.loss_curve_ == reference.loss_curve_


def test_the_reference_runs_are_no_trivial_fits(uninterrupted):
    """Many iterations, the lbfgs and sgd fits stopped by max_iter (so a resume has work left), a real optimum."""
    for solver, (model, _) in uninterrupted.items():
        assert model.n_iter_ >= 8, solver
        assert model.loss_curve_[-1] < 0.75 * np.log(6), solver  # (log 6: the start's loss, 6 balanced classes)
    assert uninterrupted["lbfgs"][0].n_iter_ == _checkpoint_jobs.OPTIONS["lbfgs"]["max_iter"]


@pytest.mark.parametrize("solver", SOLVERS)
@given(moments=st.lists(st.floats(0.05, 0.95), min_size=2, max_size=4))
@TRIES
@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_a_fit_killed_again_and_again_resumes_to_the_same_model(
    uninterrupted, forkserver, tmp_path_factory, solver, moments
):
    reference, seconds = uninterrupted[solver]
    folder = tmp_path_factory.mktemp(f"kill-{solver}")
    args = (solver, folder / "checkpoint.npz", folder / "model.npz")
    done = []
    for moment in moments:
        status = run(forkserver, args, kill_after=moment * seconds)
        assert status in (0, -signal.SIGKILL)
        done.append(check_checkpoint(folder))
        if status == 0:
            break
    assert run(forkserver, args) == 0
    assert_same_model(SoftmaxRegression.load(folder / "model.npz"), reference)
    # the checkpoints only move forward
    progress = [n for n in done if n is not None]
    assert progress == sorted(progress)


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_kill_in_the_middle_of_a_checkpoint_write_leaves_the_previous_one(
    uninterrupted, forkserver, tmp_path, solver
):
    args = (solver, tmp_path / "checkpoint.npz", tmp_path / "model.npz")
    assert run(forkserver, (*args, 4)) == -signal.SIGKILL  # dies halfway through its 4th checkpoint
    assert check_checkpoint(tmp_path) == 3  # the 3rd, intact
    (leftover,) = find_temporaries(tmp_path)  # the half-written archive, hidden and known to be stale
    assert leftover.stale and leftover.target == "checkpoint.npz"
    assert run(forkserver, args) == 0
    assert_same_model(SoftmaxRegression.load(tmp_path / "model.npz"), uninterrupted[solver][0])
    assert find_temporaries(tmp_path) == []  # the resumed run's first write removed it
