"""``softmaxkit train --distributed`` under torchrun (2 local gloo ranks): the model and metrics of one process.

The data-parallel run trains on a CSV file (each rank its row range) and on a folder of three
Parquet files (each rank its files); both must give the single-process command's model (1e-10
relative) and test metrics, with rank 0 alone writing the folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from softmaxkit.cli import main  # noqa: E402
from softmaxkit.linear_model import SoftmaxRegression  # noqa: E402

TIMEOUT_S = 240
OPTIONS = ["--no-plots", "--quiet", "--solver", "lbfgs", "--tol", "1e-12", "--alpha", "1e-3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The folder with the data and the three runs: ``single`` (in process), ``csv`` and ``parquet`` (torchrun)."""
    root = tmp_path_factory.mktemp("dist-cli")
    rng = np.random.default_rng(0)
    n = 301
    X = rng.normal(size=(n, 4))
    y = np.array(list("abc"))[rng.integers(0, 3, n)]
    X[y == "a"] += 1.0
    table = pd.DataFrame(X, columns=[f"f{i}" for i in range(4)]).assign(label=y)
    table.iloc[:240].to_csv(root / "train.csv", index=False)
    table.iloc[240:].to_csv(root / "test.csv", index=False)
    (root / "parts").mkdir()
    for i, (start, stop) in enumerate([(0, 50), (50, 170), (170, 240)]):
        table.iloc[start:stop].to_parquet(root / "parts" / f"part{i}.parquet")
    assert (
        main(
            [
                "train",
                str(root / "train.csv"),
                "--test",
                str(root / "test.csv"),
                "--out",
                str(root / "single"),
                *OPTIONS,
            ]
        )
        == 0
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    checkpointed = ["--checkpoint", str(root / "checkpoint"), "--checkpoint-every", "1"]
    _launch_all(
        root, env, {"csv": ("train.csv", []), "parquet": ("parts", []), "checkpointed": ("train.csv", checkpointed)}
    )
    _launch_all(root, env, {"resumed": ("train.csv", checkpointed)})  # the same command again: it resumes
    return root


def _launch_all(root, env, runs):
    """Run torchrun for each ``name: (data, extra options)`` at once, into ``root / name``."""
    launches = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                "2",
                "-m",
                "softmaxkit",
                "train",
                str(root / data),
                "--test",
                str(root / "test.csv"),
                "--distributed",
                "--out",
                str(root / name),
                *OPTIONS,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills torchrun and its ranks together
        )
        for name, (data, extra) in runs.items()
    }
    for name, process in launches.items():
        try:
            out, _ = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in launches.values():
                os.killpg(other.pid, signal.SIGKILL)
            pytest.fail(f"torchrun ({name}) did not finish in {TIMEOUT_S} s")
        assert process.returncode == 0, out


@pytest.mark.parametrize("name", ["csv", "parquet"])
def test_the_data_parallel_command_gives_the_single_process_model(runs, name):
    single = SoftmaxRegression.load(runs / "single" / "model.npz")
    ours = SoftmaxRegression.load(runs / name / "model.npz")
    np.testing.assert_array_equal(ours.classes_, single.classes_)
    theirs = np.hstack([single.coef_, single.intercept_[:, None]])
    got = np.hstack([ours.coef_, ours.intercept_[:, None]])
    assert np.linalg.norm(got - theirs) <= 1e-10 * np.linalg.norm(theirs)
    report = json.loads((runs / name / "metrics.json").read_text())
    reference = json.loads((runs / "single" / "metrics.json").read_text())
    assert report["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert report["split"]["n_train"] == 240 and report["dataset"]["n_samples"] == 240
    for part in ("train", "test"):
        assert report[part]["confusion_matrix"] == reference[part]["confusion_matrix"]
        assert report[part]["log_loss"] == pytest.approx(reference[part]["log_loss"], rel=1e-10)
    assert sorted(p.name for p in (runs / name).iterdir()) == ["metrics.json", "model.npz", "report.html"]


def test_a_checkpointed_data_parallel_run_resumes_to_the_same_model(runs):
    first = SoftmaxRegression.load(runs / "checkpointed" / "model.npz")
    resumed = SoftmaxRegression.load(runs / "resumed" / "model.npz")
    np.testing.assert_array_equal(resumed.coef_, first.coef_)
    np.testing.assert_array_equal(resumed.intercept_, first.intercept_)
    # the same optimum by another path (a checkpointed fit runs softmaxkit's own L-BFGS): a relative gap of
    # tol = 1e-12 leaves the coefficients about sqrt(2 tol / alpha) ~ 4e-5 apart at most (measured: 8.6e-7, the largest entry 0.83)
    single = SoftmaxRegression.load(runs / "single" / "model.npz")
    np.testing.assert_allclose(first.coef_, single.coef_, rtol=0, atol=1e-5 * np.abs(single.coef_).max())
    assert [p.name for p in (runs / "checkpoint").iterdir()] == ["checkpoint.npz"]  # rank 0's file only


def test_distributed_needs_a_launcher(tmp_path, monkeypatch, capsys):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "d.csv").write_text("a,label\n1,x\n2,y\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path / "d.csv"), "--distributed", "--no-plots"])
    assert exit_info.value.code == 2
    assert "--distributed must run under torchrun" in capsys.readouterr().err


def test_a_launcher_without_the_flag_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--no-plots", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "WORLD_SIZE=2: add --distributed" in capsys.readouterr().err
