"""Checkpoints of SoftmaxRegression.fit in one process: resume equals the uninterrupted fit, bad files are errors.

The kill-and-resume tests in subprocesses are in test_checkpoint_kill.py; here a fit "interrupted"
by a small ``max_iter`` (its checkpoint is what a kill after that iteration leaves) is run again
with the full ``max_iter``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.optimize
from sklearn.datasets import load_digits, make_classification
from sklearn.preprocessing import StandardScaler

from softmaxkit._model_io import load_model_file, save_model_file
from softmaxkit.linear_model import Checkpoint, CheckpointError, SoftmaxRegression
from softmaxkit.linear_model._checkpoint import ESTIMATOR
from softmaxkit.linear_model._lbfgs import minimize_lbfgs_resumable, start_lbfgs
from softmaxkit.linear_model._loss import LinearLoss
from softmaxkit.linear_model._solvers import minimize_lbfgs

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=300, n_features=12, n_informative=8, n_classes=4, random_state=1)


CASES = {
    "lbfgs": {"solver": "lbfgs", "tol": 1e-12, "max_iter": 40},
    "newton-cg": {"solver": "newton-cg", "tol": 1e-300, "max_iter": 12, "alpha": 1e-6},
    "sgd": {"solver": "sgd", "max_iter": 12, "batch_size": 32},
    "adam": {"solver": "adam", "max_iter": 12, "batch_size": 32, "learning_rate_schedule": "invscaling"},
    "sgd-adaptive": {"solver": "sgd", "max_iter": 30, "batch_size": 32, "learning_rate_schedule": "adaptive"},
    "early-stopping": {"solver": "adam", "max_iter": 25, "early_stopping": True, "n_iter_no_change": 8},
    "lbfgs-early-stopping": {"solver": "lbfgs", "max_iter": 30, "early_stopping": True, "tol": 1e-12},
}


def fit(X, y, path=None, *, every=1, **options):
    model = SoftmaxRegression(random_state=0, **options)
    return model.fit(X, y, checkpoint=None if path is None else Checkpoint(path, every=every))


def same_model(a, b):
    return (
        np.array_equal(a.coef_, b.coef_)
        and np.array_equal(a.intercept_, b.intercept_)
        and a.n_iter_ == b.n_iter_
        and a.loss_curve_ == b.loss_curve_
    )


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stop", [2, 5])
def test_a_resumed_fit_ends_with_the_uninterrupted_fits_model(data, tmp_path, case, stop):
    X, y = data
    options = CASES[case]
    reference = fit(X, y, tmp_path / "reference.npz", **options)
    assert reference.n_iter_ > stop + 1
    path = tmp_path / "checkpoint.npz"
    fit(X, y, path, **{**options, "max_iter": stop})  # a kill after iteration `stop` (sgd, adam: before epoch `stop`)
    stochastic = options["solver"] in ("sgd", "adam")
    assert load_model_file(path, estimator=ESTIMATOR)[1]["n_iter"] == stop - stochastic
    resumed = fit(X, y, path, **options)
    assert same_model(resumed, reference)
    if options.get("early_stopping"):
        assert resumed.validation_scores_ == reference.validation_scores_
        assert resumed.best_validation_score_ == reference.best_validation_score_


def test_the_checkpointed_newton_and_stochastic_fits_equal_the_plain_ones(data, tmp_path):
    """Only lbfgs changes its algorithm under a checkpoint (ours, not SciPy's); the others are the same fits."""
    X, y = data
    for case in ("newton-cg", "sgd", "adam"):
        assert same_model(fit(X, y, tmp_path / f"{case}.npz", **CASES[case]), fit(X, y, **CASES[case])), case


def test_a_resumed_newton_cg_fit_keeps_its_step_bound(tmp_path):
    """Standardised digits, a weak penalty: Newton's steps overshoot, and the bound they leave must be resumed."""
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    options = {"solver": "newton-cg", "alpha": 1 / (100 * len(y)), "tol": 1e-300, "max_iter": 10}
    reference = fit(X, y, **options)
    path = tmp_path / "checkpoint.npz"
    fit(X, y, path, **{**options, "max_iter": 6})
    bound = load_model_file(path, estimator=ESTIMATOR)[1]["state"]["step_bound"]
    # (the bound was set by iteration 3 and binds at iterations 7-10: this run tests its resume)
    assert np.isfinite(bound) and bound > 0
    assert same_model(fit(X, y, path, **options), reference)
    arrays, metadata = load_model_file(path, estimator=ESTIMATOR)
    for name in ("format", "format_version", "softmaxkit_version", "arrays", "array_specs"):
        metadata.pop(name)
    for damaged in (-1.0, 0.0, "1.0"):
        metadata["state"]["step_bound"] = damaged
        save_model_file(path, arrays, metadata, overwrite=True)
        with pytest.raises(CheckpointError, match=f"its 'step_bound' is {damaged!r}"):
            fit(X, y, path, **options)


def test_the_checkpointed_lbfgs_reaches_the_plain_lbfgs_optimum(data, tmp_path):
    X, y = data
    plain = SoftmaxRegression(solver="lbfgs", tol=1e-10, max_iter=500).fit(X, y)
    ours = SoftmaxRegression(solver="lbfgs", tol=1e-10, max_iter=500).fit(X, y, checkpoint=tmp_path / "c.npz")
    assert abs(ours.loss_curve_[-1] - plain.loss_curve_[-1]) <= 1e-9 * plain.loss_curve_[-1]
    np.testing.assert_allclose(ours.coef_, plain.coef_, rtol=0, atol=1e-3 * np.abs(plain.coef_).max())
    assert ours.n_iter_ <= 1.5 * plain.n_iter_ + 5


def test_a_longer_max_iter_continues_the_killed_fit(data, tmp_path):
    X, y = data
    fit(X, y, tmp_path / "c.npz", solver="sgd", max_iter=3)
    longer = fit(X, y, tmp_path / "c.npz", solver="sgd", max_iter=6)
    assert same_model(longer, fit(X, y, solver="sgd", max_iter=6))


# ------------------------------------------------------------------------------------------
# the resumable L-BFGS on its own


def _problem(seed, n_features=30, n_classes=5):
    X, y = make_classification(300, n_features, n_informative=10, n_classes=n_classes, random_state=seed)
    return LinearLoss(X, y, None, 1e-3, n_classes=n_classes, fit_intercept=True, label_smoothing=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_resumable_lbfgs_reaches_scipys_optimum(seed):
    loss = _problem(seed)
    x0 = np.zeros(loss.shape).ravel()
    fun = lambda x: (loss.loss_gradient(x)[0], loss.loss_gradient(x)[1].ravel())
    options = {"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000}
    exact = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", options=options)
    ours = minimize_lbfgs_resumable(fun, x0, max_iter=500, tol=1e-10)
    theirs = minimize_lbfgs(fun, x0, max_iter=500, tol=1e-10)
    assert ours.converged
    assert abs(ours.loss_curve[-1] - exact.fun) <= 1e-9 * exact.fun
    assert ours.n_iter <= 1.5 * theirs.n_iter + 5


def test_the_resumable_lbfgs_on_a_quadratic():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(20, 20))
    A = A @ A.T + np.eye(20)
    b = rng.normal(size=20)
    result = minimize_lbfgs_resumable(
        lambda x: (0.5 * x @ A @ x - b @ x, A @ x - b), np.zeros(20), max_iter=200, tol=1e-14
    )
    np.testing.assert_allclose(result.x, np.linalg.solve(A, b), rtol=0, atol=1e-6)


def test_the_resumable_lbfgs_continues_from_any_saved_state():
    loss = _problem(4)
    fun = lambda x: (loss.loss_gradient(x)[0], loss.loss_gradient(x)[1].ravel())
    x0 = np.zeros(loss.shape).ravel()
    saved = []
    whole = minimize_lbfgs_resumable(fun, x0, max_iter=30, tol=0.0, on_iteration=lambda s: saved.append(_copy(s)))
    for state in saved[::7]:
        resumed = minimize_lbfgs_resumable(fun, None, max_iter=30, tol=0.0, state=state)
        assert np.array_equal(resumed.x, whole.x) and resumed.loss_curve == whole.loss_curve
    assert start_lbfgs(fun, x0).n_iter == 0


def _copy(state):
    from dataclasses import replace

    return replace(state, x=state.x.copy(), g=state.g.copy(), pairs=list(state.pairs), curve=list(state.curve))


# ------------------------------------------------------------------------------------------
# when to write, and where


def test_no_checkpoint_before_the_seconds_are_up(data, tmp_path):
    X, y = data
    SoftmaxRegression(solver="lbfgs").fit(X, y, checkpoint=Checkpoint(tmp_path / "c.npz", seconds=3600))
    assert list(tmp_path.iterdir()) == []
    SoftmaxRegression(solver="lbfgs", max_iter=5).fit(X, y, checkpoint=Checkpoint(tmp_path / "c.npz", seconds=0))
    assert load_model_file(tmp_path / "c.npz", estimator=ESTIMATOR)[1]["n_iter"] == 5


def test_every_counts_iterations(data, tmp_path):
    X, y = data
    written = []
    checkpoint = Checkpoint(
        tmp_path / "c.npz", every=3, seconds=None, writer=lambda p, a, m: written.append(m["n_iter"])
    )
    SoftmaxRegression(solver="sgd", max_iter=10, random_state=0).fit(X, y, checkpoint=checkpoint)
    assert written == [3, 6, 9]
    assert list(tmp_path.iterdir()) == []  # a writer that writes nothing (another rank's, say) leaves nothing


def test_combine_gives_the_fingerprint_every_rank_agrees_on(data, tmp_path):
    """The data-parallel hook: each rank's own digest in, the agreed one out (here: one for two "ranks")."""
    X, y = data
    half = len(y) // 2
    agreed = "0" * 32
    for rows in (slice(None, half), slice(half, None)):  # two shards, one file, one fingerprint
        seen = []
        checkpoint = Checkpoint(tmp_path / "c.npz", every=1, combine=lambda key: seen.append(key) or agreed)
        SoftmaxRegression(solver="sgd", max_iter=2, random_state=0).fit(X[rows], y[rows], checkpoint=checkpoint)
        assert len(seen) == 1 and seen[0] != agreed
    assert load_model_file(tmp_path / "c.npz", estimator=ESTIMATOR)[1]["fingerprint"] == agreed


def test_the_folder_of_the_checkpoint_is_created(data, tmp_path):
    X, y = data
    fit(X, y, tmp_path / "a" / "b" / "c.npz", solver="sgd", max_iter=3)
    assert (tmp_path / "a" / "b" / "c.npz").is_file()


# ------------------------------------------------------------------------------------------
# files that are not this fit's checkpoint: errors, and the file is left as it was


@pytest.fixture
def checkpoint(data, tmp_path):
    X, y = data
    path = tmp_path / "c.npz"
    fit(X, y, path, solver="lbfgs", max_iter=3)
    return path


def _refused(data, path, match, **options):
    X, y = data
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=match):
        fit(X, y, path, **{"solver": "lbfgs", "max_iter": 6, **options})
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "change", [{"alpha": 1e-2}, {"fit_intercept": False}, {"dtype": np.float32}, {"solver": "newton-cg"}]
)
def test_a_checkpoint_of_other_parameters_is_refused(data, checkpoint, change):
    _refused(data, checkpoint, "was written by a fit of other data, parameters or start; remove it", **change)


def test_a_checkpoint_of_other_data_is_refused(data, checkpoint):
    X, y = data
    other = (X.copy(), y)
    other[0][0, 0] += 1e-9
    _refused(other, checkpoint, "was written by a fit of other data")
    _refused((X, np.roll(y, 1)), checkpoint, "was written by a fit of other data")


def test_a_truncated_checkpoint_is_refused(data, checkpoint):
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    _refused(data, checkpoint, "cannot be resumed .*truncated or corrupt|cannot be resumed .*not an .npz archive")


def test_a_model_file_is_no_checkpoint(data, tmp_path):
    X, y = data
    path = tmp_path / "model.npz"
    SoftmaxRegression(max_iter=3).fit(X, y).save(path)
    _refused(data, path, "holds a 'SoftmaxRegression' model, expected 'SoftmaxRegression checkpoint'")


def test_a_foreign_file_is_no_checkpoint(data, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes")
    _refused(data, path, "not a softmaxkit model file")


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda a, m: a.update(x=np.full_like(a["x"], np.nan)), "no finite float64 point"),
        (lambda a, m: a.update(x=a["x"][:-1]), "no finite float64 point"),
        (lambda a, m: a.update(curve=a["curve"][:-1]), "objective curve does not match"),
        (lambda a, m: a.update(pairs_s=a["pairs_s"][:, :-1]), "curvature pairs"),
        (lambda a, m: a.update(g=a["g"].astype(np.float32)), "'g' is not a finite float64 vector"),
        (lambda a, m: m["state"].update(f=None), "its 'f' is None"),
        (lambda a, m: m.update(checkpoint_version=2), "checkpoint version 2"),
    ],
)
def test_a_tampered_checkpoint_is_refused(data, checkpoint, damage, match):
    arrays, metadata = load_model_file(checkpoint, estimator=ESTIMATOR)
    for name in ("format", "format_version", "softmaxkit_version", "arrays", "array_specs"):
        metadata.pop(name)
    damage(arrays, metadata)
    save_model_file(checkpoint, arrays, metadata, overwrite=True)
    _refused(data, checkpoint, match)


def test_a_tampered_stochastic_checkpoint_is_refused(data, tmp_path):
    X, y = data
    path = tmp_path / "c.npz"
    fit(X, y, path, solver="sgd", max_iter=3)
    arrays, metadata = load_model_file(path, estimator=ESTIMATOR)
    for name in ("format", "format_version", "softmaxkit_version", "arrays", "array_specs"):
        metadata.pop(name)
    metadata["state"]["rng"] = {"bit_generator": "MT19937"}
    save_model_file(path, arrays, metadata, overwrite=True)
    with pytest.raises(CheckpointError, match="random generator state"):
        fit(X, y, path, solver="sgd", max_iter=6)


def test_a_failed_write_keeps_the_previous_checkpoint(data, checkpoint, monkeypatch):
    X, y = data
    before = checkpoint.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        fit(X, y, checkpoint, solver="lbfgs", max_iter=6)
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["c.npz"]


def test_a_directory_is_no_checkpoint_path(data, tmp_path):
    X, y = data
    with pytest.raises(IsADirectoryError, match="checkpoint path must be a file"):
        fit(X, y, tmp_path, solver="sgd", max_iter=2)


@pytest.mark.parametrize(
    "value, error, match",
    [
        (3, TypeError, "checkpoint must be a path, a Checkpoint or None, got int"),
        (Checkpoint(3), TypeError, "Checkpoint path must be a str or os.PathLike, got int"),
        (Checkpoint("c.npz", every=0), ValueError, "Checkpoint every must be an int >= 1 or None, got 0"),
        (Checkpoint("c.npz", every=2.0), ValueError, "Checkpoint every must be an int >= 1 or None, got 2.0"),
        (
            Checkpoint("c.npz", seconds=-1),
            ValueError,
            "Checkpoint seconds must be a finite number >= 0 or None, got -1",
        ),
        (Checkpoint("c.npz", seconds=None), ValueError, "Checkpoint every and seconds must not both be None"),
        (Checkpoint("c.npz", writer=1), TypeError, "Checkpoint writer must be callable or None, got int"),
    ],
)
def test_bad_checkpoint_options(data, value, error, match):
    X, y = data
    with pytest.raises(error, match=match):
        SoftmaxRegression(max_iter=2).fit(X, y, checkpoint=value)


def test_randomness_a_resume_cannot_repeat_is_refused(data, tmp_path):
    X, y = data
    with pytest.raises(ValueError, match=r"random_state must be an int or None with a checkpoint .* got RandomState"):
        SoftmaxRegression(random_state=np.random.RandomState(0)).fit(X, y, checkpoint=tmp_path / "c.npz")
    with pytest.raises(ValueError, match="random_state must be an int with a checkpoint and early_stopping"):
        SoftmaxRegression(early_stopping=True).fit(X, y, checkpoint=tmp_path / "c.npz")
    assert list(tmp_path.iterdir()) == []


def test_no_warning_from_a_checkpointed_fit_that_converges(data, tmp_path):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SoftmaxRegression(solver="lbfgs").fit(X, y, checkpoint=tmp_path / "c.npz")


# ------------------------------------------------------------------------------------------
# the command line


def test_the_command_line_resumes_from_its_checkpoint(tmp_path, capsys):
    from softmaxkit.cli import main

    argv = ["train", "--dataset", "iris", "--solver", "lbfgs", "--tol", "1e-12", "--quiet", "--no-plots"]
    checkpoint = ["--checkpoint", str(tmp_path / "state"), "--checkpoint-every", "1"]
    assert main([*argv, *checkpoint, "--out", str(tmp_path / "killed"), "--max-iter", "4"]) == 0  # a kill at 4
    assert (tmp_path / "state" / "checkpoint.npz").is_file()
    assert main([*argv, *checkpoint, "--out", str(tmp_path / "resumed")]) == 0
    reference = ["--checkpoint", str(tmp_path / "other"), "--out", str(tmp_path / "reference")]
    assert main([*argv, *reference]) == 0
    resumed = SoftmaxRegression.load(tmp_path / "resumed" / "model.npz")
    uninterrupted = SoftmaxRegression.load(tmp_path / "reference" / "model.npz")
    assert np.array_equal(resumed.coef_, uninterrupted.coef_)
    assert np.array_equal(resumed.intercept_, uninterrupted.intercept_)
    capsys.readouterr()
    assert main([*argv, *checkpoint, "--alpha", "1", "--out", str(tmp_path / "changed")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "was written by a fit of other data, parameters or start" in error
    assert not (tmp_path / "changed").exists()


def test_checkpoint_every_needs_a_checkpoint(capsys):
    from softmaxkit.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["train", "--dataset", "iris", "--checkpoint-every", "2"])
    assert exit.value.code == 2
    assert "--checkpoint-every must be >= 1 with --checkpoint, got 2" in capsys.readouterr().err
