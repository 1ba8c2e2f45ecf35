"""softmaxkit.distributed: the data-parallel fit on 2 and 3 local gloo ranks equals the single-process fit.

Each world size starts its ranks once (``tests/_distributed_worker.py``, subprocesses joined through
a rendezvous file under pytest's tmp_path, every rank killed after a timeout: a hung rank fails the
test, never the suite) and fits every case there; the tests below compare each case with
:meth:`SoftmaxRegression.fit` on the concatenated rows: the objective and the coefficients to 1e-10
relative. For sgd and adam "equal" means the same global mini-batches, hence the same iterates: the
whole loss curve agrees to 1e-10 too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
import _distributed_worker as worker

from softmaxkit.distributed import fit_distributed, shard_rows
from softmaxkit.linear_model import SoftmaxRegression
from softmaxkit.linear_model._inputs import encode_target, sample_weights
from softmaxkit.linear_model._loss import loss

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this torch has no torch.distributed")

# Rank start-up (importing torch, scikit-learn and softmaxkit) takes a few seconds each; on the 2 shared cores
# of the development machine all the fits of one world size took under 30 s.
TIMEOUT_S = 240
RANK_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def run_ranks(world_size: int, directory: Path, script: Path, *args: str) -> list[subprocess.CompletedProcess]:
    """Start ``script RANK WORLD DIRECTORY *args`` for every rank; all killed after :data:`TIMEOUT_S`."""
    env = {**os.environ, **RANK_ENV}
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(world_size), str(directory), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for rank in range(world_size)
    ]
    done = []
    try:
        for process in ranks:
            out, _ = process.communicate(timeout=TIMEOUT_S)
            done.append(subprocess.CompletedProcess(process.args, process.returncode, out))
    except subprocess.TimeoutExpired:
        for process in ranks:
            process.kill()
        pytest.fail(f"a rank of {world_size} did not finish in {TIMEOUT_S} s")
    for result in done:
        assert result.returncode == 0, result.stdout
    return done


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}ranks")
def ranks(request, tmp_path_factory):
    """``(world_size, [each rank's results])`` of the worker's cases."""
    world_size = request.param
    directory = tmp_path_factory.mktemp(f"dist{world_size}")
    run_ranks(world_size, directory, Path(worker.__file__))
    return world_size, [dict(np.load(directory / f"rank{r}.npz")) for r in range(world_size)]


def single_process(case):
    X, y, sw, _ = worker.problem(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return worker.estimator(case).fit(X, y, sample_weight=sw)


def objective(case, coef, intercept):
    """The fit's objective at ``(coef, intercept)`` on the whole data (the estimator's weights), float64."""
    X, y, sw, class_weight = worker.problem(case)
    classes, target, _ = encode_target(y, X.shape[0], np.float64, estimator_name="SoftmaxRegression")
    assert target.ndim == 2 or len(classes) == 4
    s = sample_weights(sw, class_weight, target, classes, np.float64)
    return loss(np.hstack([coef, intercept[:, None]]), X, target, s, 1e-2)


def relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


@pytest.mark.parametrize("case", list(worker.CASES))
def test_equals_single_process(ranks, case):
    world_size, results = ranks
    reference = single_process(case)
    got = results[0]
    np.testing.assert_array_equal(got[f"{case}/classes"], reference.classes_)
    if not case.endswith("proba"):
        assert "only-rank-0" in got[f"{case}/classes"]
    assert str(got[f"{case}/solver"]) == reference.solver_
    ours = np.hstack([got[f"{case}/coef"], got[f"{case}/intercept"][:, None]])
    theirs = np.hstack([reference.coef_, reference.intercept_[:, None]])
    assert relative(ours, theirs) <= 1e-10
    f_ours = objective(case, got[f"{case}/coef"], got[f"{case}/intercept"])
    f_theirs = objective(case, reference.coef_, reference.intercept_)
    assert abs(f_ours - f_theirs) <= 1e-10 * abs(f_theirs)
    if reference.solver_ in ("sgd", "adam"):  # the same batches: the same curve, epoch by epoch
        curve = got[f"{case}/loss_curve"]
        assert len(curve) == len(reference.loss_curve_) == worker.CASES[case][1]["max_iter"]
        assert relative(curve, reference.loss_curve_) <= 1e-10


@pytest.mark.parametrize("case", list(worker.CASES))
def test_every_rank_has_the_same_model(ranks, case):
    _, results = ranks
    for other in results[1:]:
        for field in ("coef", "intercept", "loss_curve"):
            np.testing.assert_array_equal(other[f"{case}/{field}"], results[0][f"{case}/{field}"])


@pytest.mark.parametrize("case", worker.CHECKPOINTED)
def test_a_resumed_checkpointed_fit_equals_the_uninterrupted_one(ranks, case):
    world_size, results = ranks
    key = f"checkpoint-{case}"
    for rank, result in enumerate(results):
        np.testing.assert_array_equal(result[f"{key}/resumed"], result[f"{key}/uninterrupted"], err_msg=f"rank {rank}")
        np.testing.assert_array_equal(result[f"{key}/resumed"], results[0][f"{key}/resumed"])
        resumed_iterations, uninterrupted_iterations = result[f"{key}/n_iter"]
        assert resumed_iterations == uninterrupted_iterations > 2  # the first fit stopped early, the resume went on
        stopped, resumed, uninterrupted = result[f"{key}/writes"]  # with every=1, a write per iteration
        if rank == 0:  # the resumed fit went on from the stopped one's checkpoint: it did not start again
            assert stopped > 0 and resumed > 0 and stopped + resumed == uninterrupted, result[f"{key}/writes"]
        else:
            assert stopped == resumed == uninterrupted == 0, f"rank {rank} wrote {result[f'{key}/writes']}"
    # the checkpointed optimum is the single-process one (lbfgs runs softmaxkit's own L-BFGS when checkpointed)
    reference = single_process(case)
    coef = results[0][f"{key}/uninterrupted"]
    if case != "sgd":
        assert (
            relative(objective(case, coef[:, :-1], coef[:, -1]), objective(case, reference.coef_, reference.intercept_))
            < 1e-10
        )


def test_early_stopping_scores_are_global(ranks):
    """Each rank holds its own validation rows; the scores (and so the stop and the model) are the same on all."""
    _, results = ranks
    scores = results[0]["early-stopping/scores"]
    assert len(scores) >= 1 and np.all((scores >= 0) & (scores <= 1))
    for other in results[1:]:
        np.testing.assert_array_equal(other["early-stopping/scores"], scores)
        np.testing.assert_array_equal(other["early-stopping/coef"], results[0]["early-stopping/coef"])


def test_a_refused_input_raises_on_every_rank(ranks):
    world_size, results = ranks
    last = world_size - 1
    assert str(results[last]["refused"]).startswith("ValueError: y must have")
    for rank in range(last):
        message = str(results[rank]["refused"])
        assert message.startswith(f"PeerError: rank {last} failed: ValueError: y must have"), message


def test_the_cases_differ_from_a_fit_on_one_shard():
    """The comparison can fail: a fit on the first shard alone is far from the fit on all the rows."""
    X, y, sw, _ = worker.problem("lbfgs")
    rows = slice(*worker.bounds(2)[1:3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = worker.estimator("lbfgs").fit(X[rows], y[rows], sample_weight=sw[rows])
    whole = single_process("lbfgs")
    assert relative(alone.coef_, whole.coef_[1:]) > 1e-2  # (the shard lacks the class of the first rank)


def test_importing_the_module_imports_no_torch():
    code = "import sys, softmaxkit.distributed\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def test_needs_an_initialised_group():
    if dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    with pytest.raises(RuntimeError, match="initialised process group"):
        fit_distributed(SoftmaxRegression(), np.eye(3), [0, 1, 2])


def test_refuses_another_estimator():
    with pytest.raises(TypeError, match="estimator must be a SoftmaxRegression, got LogisticRegression"):
        from sklearn.linear_model import LogisticRegression

        fit_distributed(LogisticRegression(), np.eye(3), [0, 1, 2])


def test_shard_rows_cover_the_rows_once():
    for n in (0, 1, 7, 100):
        for size in (1, 2, 3, 5):
            covered = np.concatenate([np.arange(n)[shard_rows(n, rank=r, world_size=size)] for r in range(size)])
            np.testing.assert_array_equal(covered, np.arange(n))
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, 2\), got 2"):
        shard_rows(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size must be a positive integer, got 0"):
        shard_rows(10, rank=0, world_size=0)
