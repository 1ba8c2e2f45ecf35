"""SoftmaxRegression(backend="torch"): the NumPy backend's objective, solvers and optimum, computed with torch.

Oracles: the NumPy backend's callables (``_objective.numpy_objective``, which the NumPy linear-loss tests check
against PyTorch float64 and finite differences) evaluated at the same points, the NumPy backend's
fitted models on the shared real datasets, and the objective of ``_loss.loss`` in float64.
"""

from __future__ import annotations

import functools
import gzip
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch (the torch extra)")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from softmaxkit.linear_model import SoftmaxRegression, _loss  # noqa: E402
from softmaxkit.linear_model import _torch_backend as tb  # noqa: E402
from softmaxkit.linear_model._objective import make_objective, numpy_objective  # noqa: E402
from softmaxkit.torch import resolve_device  # noqa: E402
from softmaxkit.torch._device import _mps_available, default_dtype  # noqa: E402

CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def one_thread():
    """One torch and one BLAS thread: small problems, and the suite runs beside others (pytest -n)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def _problem(rng, n=157, d=7, k=4, *, soft=False, weighted=False):
    X = rng.normal(size=(n, d))
    if soft:
        target = rng.dirichlet(np.ones(k), size=n)
    else:
        target = rng.integers(0, k, size=n)
    sample_weight = rng.uniform(0.0, 2.0, size=n) if weighted else None
    if weighted:
        sample_weight[:5] = 0.0
    return X, target, sample_weight


OPTION_SWEEP = [
    {"fit_intercept": True, "label_smoothing": 0.0, "soft": False, "weighted": False},
    {"fit_intercept": False, "label_smoothing": 0.0, "soft": False, "weighted": True},
    {"fit_intercept": True, "label_smoothing": 0.2, "soft": False, "weighted": True},
    {"fit_intercept": True, "label_smoothing": 0.1, "soft": True, "weighted": False},
    {"fit_intercept": False, "label_smoothing": 0.0, "soft": True, "weighted": True},
]


def _pair(rng, case, *, device="cpu", dtype=np.float64, memory_budget=None, k=4):
    X, target, sw = _problem(rng, soft=case["soft"], weighted=case["weighted"], k=k)
    options = {
        "n_classes": k,
        "fit_intercept": case["fit_intercept"],
        "label_smoothing": case["label_smoothing"],
        "dtype": dtype,
    }
    ours = tb.torch_objective(X.astype(dtype), target, sw, 0.3, device=device, memory_budget=memory_budget, **options)
    reference = numpy_objective(X, target, sw, 0.3, **{**options, "dtype": np.float64})
    n_params = k * (X.shape[1] + int(case["fit_intercept"]))
    return ours, reference, n_params, X.shape[0], sw


# ------------------------------------------------------------------------- devices


def test_auto_picks_the_best_available_device():
    expected = "cuda" if CUDA else ("mps" if _mps_available() else "cpu")
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_clear_error(device):
    message = rf"device must be available on this machine, got '{device}' \(PyTorch sees no CUDA device\)"
    with pytest.raises(ValueError, match=message):
        resolve_device(device)
    X, y, _ = _problem(np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(backend="torch", device=device).fit(X, y)


@pytest.mark.skipif(_mps_available(), reason="checks the error on a machine without MPS")
def test_mps_without_mps_is_a_clear_error():
    with pytest.raises(ValueError, match=r"got 'mps' \(PyTorch sees no MPS device\)"):
        resolve_device("mps")


def test_default_dtype_and_free_memory_on_the_cpu():
    assert default_dtype("cpu") == np.float64
    assert default_dtype("auto") == (np.float32 if CUDA or _mps_available() else np.float64)
    assert tb._free_memory(torch.device("cpu")) is None  # in place on the host: no budget


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:x", "tpu", "", 0])
def test_unknown_device_names(device):
    with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got"):
        resolve_device(device)


def test_device_parameter_validation():
    X, y, _ = _problem(np.random.default_rng(0))
    with pytest.raises(
        ValueError,
        match=r"device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or None with backend='torch', got device\(type='cpu'\)",
    ):
        SoftmaxRegression(backend="torch", device=torch.device("cpu")).fit(X, y)
    with pytest.raises(ValueError, match="device must be None with backend='numpy', got 'cpu'"):
        SoftmaxRegression(device="cpu").fit(X, y)
    with pytest.raises(ValueError, match=r"The 'backend' parameter of SoftmaxRegression must be a str among .*'jax'"):
        SoftmaxRegression(backend="jax").fit(X, y)
    with pytest.raises(ValueError, match=r"dtype must be numpy\.float64 or numpy\.float32"):
        make_objective(
            "torch", "cpu", X, y, None, 0.0, n_classes=4, fit_intercept=True, label_smoothing=0.0, dtype=np.float16
        )


# ------------------------------------------------------------------------- the objective's callables


@pytest.mark.parametrize("case", OPTION_SWEEP)
def test_callables_equal_the_numpy_backend(case, rng):
    ours, reference, n_params, n, sw = _pair(rng, case)
    for _ in range(2):
        x = rng.normal(size=n_params)
        f, g = ours.loss_gradient(x)
        f_ref, g_ref = reference.loss_gradient(x)
        assert isinstance(f, float) and g.dtype == np.float64 and g.shape == (n_params,)
        np.testing.assert_allclose(f, f_ref, rtol=1e-13)
        np.testing.assert_allclose(g, g_ref, rtol=1e-11, atol=1e-14)

        f, g, H = ours.loss_gradient_hessp(x)
        f_ref, g_ref, H_ref = reference.loss_gradient_hessp(x)
        np.testing.assert_allclose(f, f_ref, rtol=1e-13)
        v = rng.normal(size=n_params)
        np.testing.assert_allclose(H(v), H_ref(v).ravel(), rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(H.diagonal(), H_ref.diagonal().ravel(), rtol=1e-11, atol=1e-14)
        r = rng.normal(size=n_params)
        np.testing.assert_allclose(H.preconditioner("diagonal")(r), H_ref.preconditioner("diagonal")(r), rtol=1e-11)
        # block and full are the NumPy operator's, built on the host from this point's probabilities
        p, wp = H._host_proba()
        weighted = slice(None) if sw is None else sw > 0  # (the NumPy operator keeps p = 0 for rows of weight 0)
        np.testing.assert_allclose(p[weighted], H_ref.proba()[weighted], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(wp, H_ref.weighted_proba, rtol=1e-12, atol=1e-16)
        np.testing.assert_allclose(H.preconditioner("block")(r), H_ref.preconditioner("block")(r), rtol=1e-9)
        if not case["fit_intercept"]:  # (with an intercept, the shared shift makes it ill-conditioned)
            np.testing.assert_allclose(H.preconditioner("full")(r), H_ref.preconditioner("full")(r), rtol=1e-9)

        indices = rng.choice(n, size=23, replace=False)
        f, g = ours.batch_loss_gradient(x, indices)
        f_ref, g_ref = reference.batch_loss_gradient(x, indices)
        np.testing.assert_allclose(f, f_ref, rtol=1e-13)
        np.testing.assert_allclose(g, g_ref, rtol=1e-11, atol=1e-14)


def test_zero_weight_batch_is_the_penalty_only(rng):
    ours, reference, n_params, n, sw = _pair(rng, OPTION_SWEEP[1])
    x = rng.normal(size=n_params)
    zero_rows = np.flatnonzero(sw == 0)
    f, g = ours.batch_loss_gradient(x, zero_rows)
    f_ref, g_ref = reference.batch_loss_gradient(x, zero_rows)
    assert f == pytest.approx(f_ref, rel=1e-14) and f > 0
    np.testing.assert_allclose(g, g_ref, rtol=1e-14)


def test_gradient_and_hessian_by_finite_differences(rng):
    ours, _, n_params, _, _ = _pair(rng, OPTION_SWEEP[2])
    x, v = rng.normal(size=n_params), rng.normal(size=n_params)
    f, g, H = ours.loss_gradient_hessp(x)
    h = 1e-6
    numeric = (ours.loss_gradient(x + h * v)[0] - ours.loss_gradient(x - h * v)[0]) / (2 * h)
    assert numeric == pytest.approx(float(g @ v), rel=1e-7)
    numeric_hv = (ours.loss_gradient(x + h * v)[1] - ours.loss_gradient(x - h * v)[1]) / (2 * h)
    np.testing.assert_allclose(H(v), numeric_hv, rtol=1e-6, atol=1e-8)


def test_float32_is_float64_to_single_precision(rng):
    ours, reference, n_params, _, _ = _pair(rng, OPTION_SWEEP[2], dtype=np.float32)
    x = rng.normal(size=n_params)
    f, g = ours.loss_gradient(x)
    f_ref, g_ref = reference.loss_gradient(x)
    assert g.dtype == np.float64
    assert f == pytest.approx(f_ref, rel=1e-5)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)
    assert not np.array_equal(g, g_ref)  # it really ran in float32


# ------------------------------------------------------------------------- memory: resident or streamed


def test_layout_rules():
    assert tb._layout(10**9, 400, 80, None) == (True, 10**9)  # CPU default: in place, one pass
    assert tb._layout(1000, 400, 80, 10**9) == (True, 1000)
    resident, rows = tb._layout(100_000, 400, 80, 400 * 100_000 + 80 * 5000)
    assert resident and rows == 5000  # data on the device, the n x C work in chunks
    assert tb._layout(100_000, 400, 80, 480 * 1000) == (False, 1000)  # streamed in chunks
    assert tb._layout(100_000, 400, 80, 1) == (False, 1)


@pytest.mark.parametrize("case", OPTION_SWEEP[:4])
def test_streamed_data_give_the_resident_results(case, rng):
    resident, _, n_params, n, _ = _pair(np.random.default_rng(1), case)
    # room for about 20 rows of data and work: the 157 rows go in 8 chunks, kept on the host
    streamed, _, _, _, _ = _pair(np.random.default_rng(1), case, memory_budget=20 * 200)
    state = streamed.loss_gradient.__self__
    assert not state.data.resident and not hasattr(state.data, "X")
    assert 1 < state.data.chunk_rows < n
    x, v = rng.normal(size=n_params), rng.normal(size=n_params)
    f, g, H = streamed.loss_gradient_hessp(x)
    f_ref, g_ref, H_ref = resident.loss_gradient_hessp(x)
    np.testing.assert_allclose(f, f_ref, rtol=1e-13)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(H(v), H_ref(v), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(H.diagonal(), H_ref.diagonal(), rtol=1e-12)
    np.testing.assert_allclose(H._host_proba()[1], H_ref._host_proba()[1], rtol=1e-13, atol=1e-16)
    idx = rng.choice(n, size=17, replace=False)
    np.testing.assert_allclose(
        streamed.batch_loss_gradient(x, idx)[1], resident.batch_loss_gradient(x, idx)[1], rtol=1e-13, atol=1e-16
    )


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_streaming_fit_gives_the_resident_model(solver, monkeypatch):
    X, y, _ = _problem(np.random.default_rng(2), n=400, d=5, k=3)
    params = {"backend": "torch", "device": "cpu", "solver": solver, "random_state": 0, "max_iter": 15}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        resident = SoftmaxRegression(**params).fit(X, y)
        monkeypatch.setattr(tb, "_MEMORY_BUDGET_BYTES", 3000)
        streamed = SoftmaxRegression(**params).fit(X, y)
    np.testing.assert_allclose(streamed.coef_, resident.coef_, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(streamed.intercept_, resident.intercept_, rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------------- the estimator


@functools.cache
def _read_dataset(datasets_dir, name):
    """``(X_train, y_train, X_test, y_test)``, features standardised on the training rows."""
    folder = datasets_dir / name
    if name == "pendigits":
        train = np.loadtxt(gzip.open(folder / "pendigits.tra.gz"), delimiter=",")
        test = np.loadtxt(gzip.open(folder / "pendigits.tes.gz"), delimiter=",")
        parts = (train[:, :-1], train[:, -1], test[:, :-1], test[:, -1])
    elif name == "satimage":
        train, test = np.loadtxt(gzip.open(folder / "sat.trn.gz")), np.loadtxt(gzip.open(folder / "sat.tst.gz"))
        parts = (train[:, :-1], train[:, -1], test[:, :-1], test[:, -1])
    elif name == "letter":
        raw = np.loadtxt(gzip.open(folder / "letter-recognition.data.gz"), delimiter=",", dtype=str)
        X, y = raw[:, 1:].astype(float), raw[:, 0]
        parts = (X[:16000], y[:16000], X[16000:], y[16000:])
    else:  # covtype: a seeded split
        raw = np.loadtxt(gzip.open(folder / "covtype_kaggle_train.csv.gz"), delimiter=",", skiprows=1)
        order = np.random.default_rng(0).permutation(len(raw))
        X, y = raw[order, 1:-1], raw[order, -1]
        parts = (X[:12000], y[:12000], X[12000:], y[12000:])
    X_train, y_train, X_test, y_test = parts
    if not (folder.is_dir() and len(X_train)):
        pytest.skip(f"dataset {name} not found in {folder}")
    mean, std = X_train.mean(0), X_train.std(0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, y_train, (X_test - mean) / std, y_test


def _objective_value(model, X, y):
    coef = np.hstack([model.coef_, model.intercept_[:, None]]).astype(np.float64)
    codes = np.searchsorted(model.classes_, y)
    return _loss.loss(coef, X, codes, None, model.alpha)


@functools.cache
def _reference_fit(datasets_dir, name):
    """The NumPy backend's tight Newton-CG optimum (once per dataset)."""
    X, y, _, _ = _read_dataset(datasets_dir, name)
    return SoftmaxRegression(solver="newton-cg", alpha=1e-3, tol=1e-10).fit(X, y)


def _same_optimum(datasets_dir, name, solver):
    """The torch backend's fit against the NumPy backend's tight Newton-CG optimum."""
    X, y, X_test, _ = _read_dataset(datasets_dir, name)
    reference = _reference_fit(datasets_dir, name)
    # tol bounds the relative gap (lbfgs's estimate within a factor 10 of it): 1e-8 for an objective within 1e-6
    model = SoftmaxRegression(solver=solver, alpha=1e-3, tol=1e-8, max_iter=1000, backend="torch", device="cpu")
    model.fit(X, y)
    assert isinstance(model.coef_, np.ndarray) and model.coef_.dtype == np.float64
    f, f_ref = _objective_value(model, X, y), _objective_value(reference, X, y)
    assert abs(f - f_ref) <= 1e-6 * f_ref, (f, f_ref)
    assert np.mean(model.predict(X_test) == reference.predict(X_test)) >= 0.998


@pytest.mark.parametrize("name", ["pendigits", "satimage"])
def test_reaches_the_numpy_optimum_on_real_data(datasets_dir, name):
    _same_optimum(datasets_dir, name, "lbfgs")


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("name", ["pendigits", "satimage", "letter", "covtype"])
def test_reaches_the_numpy_optimum_on_every_dataset(datasets_dir, name, solver):
    _same_optimum(datasets_dir, name, solver)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_mini_batch_solvers_follow_the_numpy_backend(datasets_dir, solver):
    X, y, X_test, _ = _read_dataset(datasets_dir, "pendigits")
    X, y = X[::3], y[::3]  # same batches (same random_state), a few epochs
    sw = np.random.default_rng(0).uniform(0.5, 1.5, size=len(y))
    params = {"solver": solver, "alpha": 1e-3, "max_iter": 4, "random_state": 7, "label_smoothing": 0.05}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = SoftmaxRegression(**params).fit(X, y, sample_weight=sw)
        model = SoftmaxRegression(**params, backend="torch", device="cpu").fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(model.loss_curve_, reference.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-9, atol=1e-12)
    assert np.array_equal(model.predict(X_test), reference.predict(X_test))


def test_newton_cg_follows_the_numpy_backend():
    X, y, _ = _problem(np.random.default_rng(3), n=600, d=8, k=5)
    reference = SoftmaxRegression(solver="newton-cg", alpha=1e-3, tol=1e-9).fit(X, y)
    model = SoftmaxRegression(solver="newton-cg", alpha=1e-3, tol=1e-9, backend="torch", device="cpu").fit(X, y)
    assert model.n_iter_ == reference.n_iter_
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-8, atol=1e-10)


def test_partial_fit_and_early_stopping_follow_the_numpy_backend():
    X, y, _ = _problem(np.random.default_rng(4), n=300, d=6, k=3)
    models = {}
    for backend in ("numpy", "torch"):
        model = SoftmaxRegression(solver="adam", random_state=3, backend=backend)
        for _ in range(3):
            model.partial_fit(X, y, classes=[0, 1, 2])
        stopped = SoftmaxRegression(
            solver="sgd", early_stopping=True, random_state=3, max_iter=30, n_iter_no_change=3, backend=backend
        ).fit(X, y)
        models[backend] = (model, stopped)
    for ours, reference in zip(models["torch"], models["numpy"]):
        np.testing.assert_allclose(ours.coef_, reference.coef_, rtol=1e-10, atol=1e-13)
    assert models["torch"][1].validation_scores_ == models["numpy"][1].validation_scores_


@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
def test_same_random_state_same_model_bit_for_bit(solver):
    X, y, sw = _problem(np.random.default_rng(5), n=500, d=9, k=4, weighted=True)
    params = {"solver": solver, "random_state": 11, "max_iter": 8, "backend": "torch", "device": "cpu"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = SoftmaxRegression(**params).fit(X, y, sample_weight=sw)
        second = SoftmaxRegression(**params).fit(X, y, sample_weight=sw)
        other = SoftmaxRegression(**{**params, "random_state": 12}).fit(X, y, sample_weight=sw)
    assert np.array_equal(first.coef_, second.coef_) and np.array_equal(first.intercept_, second.intercept_)
    assert first.loss_curve_ == second.loss_curve_
    if solver != "lbfgs":  # the batches depend on random_state
        assert not np.array_equal(first.coef_, other.coef_)


def test_float32_on_the_torch_backend():
    X, y, _ = _problem(np.random.default_rng(6), n=400, d=6, k=3)
    model = SoftmaxRegression(dtype=np.float32, backend="torch", device="cpu", tol=1e-7).fit(X, y)
    reference = SoftmaxRegression(tol=1e-12).fit(X, y)
    assert model.coef_.dtype == np.float32
    # tol bounds the relative gap (random labels: a flat objective, where a 1e-9 gap is a 1e-3 change of coef_)
    f, f_ref = _objective_value(model, X, y), _objective_value(reference, X, y)
    assert 0 <= (f - f_ref) / f_ref <= 1e-7
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-4)


def test_fitted_model_needs_no_torch(tmp_path):
    """The fitted estimator is NumPy-backed: saved, loaded and used with torch unimportable."""
    X, y, _ = _problem(np.random.default_rng(7), n=200, d=4, k=3)
    model = SoftmaxRegression(backend="torch", device="auto").fit(X, y)
    assert type(model.coef_) is np.ndarray and type(model.intercept_) is np.ndarray
    path = tmp_path / "model.npz"
    model.save(path)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", model.predict_proba(X))
    script = textwrap.dedent(f"""
        import sys

        class NoTorch:  # any import of torch now fails
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("torch is not installed here")

        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        import softmaxkit
        from softmaxkit.linear_model import SoftmaxRegression
        model = SoftmaxRegression.load({str(path)!r})
        assert model.backend == "torch" and model.device == "auto"
        proba = model.predict_proba(np.load({str(tmp_path / "X.npy")!r}))
        assert np.array_equal(proba, np.load({str(tmp_path / "expected.npy")!r}))
        assert "torch" not in sys.modules
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@parametrize_with_checks([SoftmaxRegression(backend="torch", device="cpu")])
def test_sklearn_estimator_checks_with_the_torch_backend(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------- CUDA (skipped without a GPU)


@pytest.mark.cuda
@pytest.mark.parametrize("case", OPTION_SWEEP)
def test_cuda_callables_equal_the_numpy_backend(case, rng):
    ours, reference, n_params, n, _ = _pair(rng, case, device="cuda")
    x, v = rng.normal(size=n_params), rng.normal(size=n_params)
    f, g, H = ours.loss_gradient_hessp(x)
    f_ref, g_ref, H_ref = reference.loss_gradient_hessp(x)
    np.testing.assert_allclose(f, f_ref, rtol=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(H(v), H_ref(v).ravel(), rtol=1e-10, atol=1e-13)
    idx = rng.choice(n, size=19, replace=False)
    np.testing.assert_allclose(
        ours.batch_loss_gradient(x, idx)[1], reference.batch_loss_gradient(x, idx)[1], rtol=1e-10, atol=1e-13
    )


@pytest.mark.cuda
def test_cuda_streamed_equals_resident(rng):
    resident, _, n_params, _, _ = _pair(np.random.default_rng(1), OPTION_SWEEP[2], device="cuda")
    streamed, _, _, _, _ = _pair(np.random.default_rng(1), OPTION_SWEEP[2], device="cuda", memory_budget=4000)
    assert not streamed.loss_gradient.__self__.data.resident
    x = rng.normal(size=n_params)
    np.testing.assert_allclose(streamed.loss_gradient(x)[1], resident.loss_gradient(x)[1], rtol=1e-12, atol=1e-15)


@pytest.mark.cuda
def test_cuda_fit_reaches_the_numpy_optimum_and_repeats():
    # synthetic, so that it runs where ../shared/datasets is absent (benchmarks/gpu_check.py)
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=12_000, n_features=30, n_informative=20, n_classes=8, random_state=0)
    X, X_test, y = X[:10_000], X[10_000:], y[:10_000]
    reference = SoftmaxRegression(solver="newton-cg", alpha=1e-3, tol=1e-8).fit(X, y)
    params = {"alpha": 1e-3, "tol": 1e-7, "max_iter": 1000, "backend": "torch", "device": "cuda"}
    model = SoftmaxRegression(**params).fit(X, y)
    f, f_ref = _objective_value(model, X, y), _objective_value(reference, X, y)
    assert abs(f - f_ref) <= 1e-6 * f_ref
    assert np.mean(model.predict(X_test) == reference.predict(X_test)) >= 0.999
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        runs = [
            SoftmaxRegression(**{**params, "solver": "sgd", "random_state": 0, "max_iter": 3}).fit(X, y)
            for _ in range(2)
        ]
    assert np.array_equal(runs[0].coef_, runs[1].coef_)  # same GPU, same software: bit for bit
    single = SoftmaxRegression(**{**params, "tol": 1e-4}, dtype=np.float32).fit(X, y)
    assert single.coef_.dtype == np.float32
    assert np.mean(single.predict(X_test) == reference.predict(X_test)) >= 0.99


@pytest.mark.cuda
def test_cuda_device_index_out_of_range():
    with pytest.raises(ValueError, match=r"got 'cuda:99' \(PyTorch sees \d+ CUDA device\(s\)\)"):
        resolve_device("cuda:99")
