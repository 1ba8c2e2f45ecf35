"""SoftmaxRegression: optimum, equivalent forms, solvers, partial_fit, early stopping and every input error."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from softmaxkit import cross_entropy, log_softmax
from softmaxkit.linear_model import SoftmaxRegression, _loss
from softmaxkit.linear_model._objective import make_objective


def _data(n=300, d=6, k=4, seed=0):
    X, y = make_classification(
        n_samples=n,
        n_features=d,
        n_informative=d - 1,
        n_redundant=0,
        n_classes=k,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return StandardScaler().fit_transform(X), y


def _objective(model, X, y, sample_weight=None, label_smoothing=0.0):
    codes = np.searchsorted(model.classes_, y) if np.ndim(y) == 1 else y
    coef = np.hstack([model.coef_, model.intercept_[:, None]]).astype(np.float64)
    return _loss.loss(coef, X, codes, sample_weight, model.alpha, label_smoothing=label_smoothing)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_same_optimum_as_sklearn_small(solver):
    X, y = _data()
    C = 3.0
    alpha = 1.0 / (C * len(y))
    ref = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X, y)
    # tol below the objective's rounding: to machine precision (tol bounds the relative gap, about |x - x*|^2)
    ours = SoftmaxRegression(alpha=alpha, solver=solver, tol=1e-15, max_iter=10_000).fit(X, y)
    f_ref = _loss.loss(np.hstack([ref.coef_, ref.intercept_[:, None]]), X, y, None, alpha)
    assert _objective(ours, X, y) <= f_ref * (1 + 1e-10)
    # same minimiser (unique: the intercepts are centred on both sides)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-5)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_ - ref.intercept_.mean(), atol=1e-5)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)
    assert ours.loss_curve_[-1] == pytest.approx(_objective(ours, X, y), rel=1e-12)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_stochastic_solvers_get_close(solver):
    X, y = _data()
    alpha = 1e-2
    exact = SoftmaxRegression(alpha=alpha, solver="newton-cg", tol=1e-10).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        approx = SoftmaxRegression(
            alpha=alpha, solver=solver, random_state=0, max_iter=300, learning_rate_schedule="invscaling"
        ).fit(X, y)
    f_star = _objective(exact, X, y)
    assert (_objective(approx, X, y) - f_star) / f_star < 2e-2
    assert len(approx.loss_curve_) == approx.n_iter_


def test_predict_methods_agree_and_log_proba_is_exact():
    X, y = _data()
    model = SoftmaxRegression(alpha=1e-3).fit(X, y)
    z = model.decision_function(X)
    np.testing.assert_allclose(z, X @ model.coef_.T + model.intercept_, rtol=1e-13)
    np.testing.assert_array_equal(model.predict(X), model.classes_[np.argmax(z, axis=1)])
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, rtol=1e-13)
    np.testing.assert_array_equal(model.predict_log_proba(X), log_softmax(z, axis=1))
    # far from the data the probability of some class underflows to 0 while its log is finite
    far = X[:3] * 1e4
    with np.errstate(divide="ignore"):
        naive = np.log(model.predict_proba(far))
    assert np.isneginf(naive).any()
    exact = model.predict_log_proba(far)
    assert np.isfinite(exact).all()
    zf = far @ model.coef_.T + model.intercept_
    reference = torch.log_softmax(torch.as_tensor(zf, dtype=torch.float64), dim=1).numpy()
    np.testing.assert_allclose(exact, reference, rtol=1e-12)


def test_binary_decision_function_is_log_odds():
    X, y = _data(k=2)
    model = SoftmaxRegression().fit(X, y)
    assert model.coef_.shape == (2, X.shape[1])
    z = X @ model.coef_.T + model.intercept_
    np.testing.assert_allclose(model.decision_function(X), z[:, 1] - z[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(model.predict(X), model.classes_[(model.decision_function(X) > 0).astype(int)])


def test_string_labels_and_dataframe_feature_names():
    X, y = _data()
    names = np.array(["cat", "dog", "eel", "fox"])
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    model = SoftmaxRegression().fit(frame, names[y])
    np.testing.assert_array_equal(model.classes_, names)
    np.testing.assert_array_equal(model.feature_names_in_, frame.columns.to_numpy(dtype=object))
    assert set(model.predict(frame)) <= set(names)
    numeric = SoftmaxRegression().fit(X, y)
    np.testing.assert_allclose(model.coef_, numeric.coef_, rtol=1e-12, atol=1e-14)


def test_one_hot_soft_labels_give_the_hard_label_model():
    X, y = _data()
    sw = np.random.default_rng(0).uniform(0.2, 2, size=len(y))
    options = dict(alpha=1e-2, solver="newton-cg", tol=1e-10, class_weight={0: 2.0, 3: 0.5})
    hard = SoftmaxRegression(**options).fit(X, y, sample_weight=sw)
    soft = SoftmaxRegression(**options).fit(X, np.eye(4)[y], sample_weight=sw)
    np.testing.assert_array_equal(soft.classes_, np.arange(4))
    np.testing.assert_allclose(soft.coef_, hard.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(soft.intercept_, hard.intercept_, rtol=1e-8, atol=1e-10)


def test_soft_labels_reach_their_own_optimum():
    X, y = _data()
    proba = np.random.default_rng(1).dirichlet(np.ones(4), size=len(y))
    model = SoftmaxRegression(alpha=1e-2, solver="newton-cg", tol=1e-10).fit(X, proba)
    coef = np.hstack([model.coef_, model.intercept_[:, None]])
    assert np.abs(_loss.gradient(coef, X, proba, None, 1e-2)).max() < 1e-9


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_label_smoothing_optimum_matches_cross_entropy(solver):
    """At the fit, the objective is cross_entropy(..., label_smoothing) and torch's gradient is zero."""
    X, y = _data()
    eps, alpha = 0.2, 1e-2
    model = SoftmaxRegression(alpha=alpha, label_smoothing=eps, solver=solver, tol=1e-15, max_iter=5000).fit(X, y)
    z = X @ model.coef_.T + model.intercept_
    value = float(cross_entropy(z, y, label_smoothing=eps)) + 0.5 * alpha * np.sum(model.coef_**2)
    assert model.loss_curve_[-1] == pytest.approx(value, rel=1e-12)
    W = torch.tensor(model.coef_, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(model.intercept_, dtype=torch.float64, requires_grad=True)
    logits = torch.as_tensor(X) @ W.T + b
    objective = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y), label_smoothing=eps)
    objective = objective + 0.5 * alpha * (W**2).sum()
    objective.backward()
    assert W.grad.abs().max() < 1e-7 and b.grad.abs().max() < 1e-7


def test_class_weight_is_sample_weight():
    X, y = _data(n=200, k=3)
    y[:60] = 0  # unbalanced
    sw = np.random.default_rng(3).uniform(0.5, 1.5, size=len(y))
    balanced = SoftmaxRegression(class_weight="balanced", solver="newton-cg", tol=1e-10).fit(X, y, sample_weight=sw)
    counts = np.bincount(y, weights=sw)
    per_class = counts.sum() / (3 * counts)
    explicit = SoftmaxRegression(solver="newton-cg", tol=1e-10).fit(X, y, sample_weight=sw * per_class[y])
    np.testing.assert_allclose(balanced.coef_, explicit.coef_, rtol=1e-8, atol=1e-10)
    as_dict = SoftmaxRegression(class_weight=dict(enumerate(per_class)), solver="newton-cg", tol=1e-10)
    np.testing.assert_allclose(as_dict.fit(X, y, sample_weight=sw).coef_, explicit.coef_, rtol=1e-8, atol=1e-10)


def test_integer_sample_weight_equals_repetition():
    X, y = _data(n=120)
    counts = np.random.default_rng(4).integers(1, 4, size=len(y))
    weighted = SoftmaxRegression(solver="newton-cg", tol=1e-10).fit(X, y, sample_weight=counts)
    repeated = SoftmaxRegression(solver="newton-cg", tol=1e-10).fit(np.repeat(X, counts, 0), np.repeat(y, counts))
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-7, atol=1e-9)


def test_float32_dtype():
    X, y = _data()
    m64 = SoftmaxRegression(solver="newton-cg", tol=1e-8).fit(X, y)
    m32 = SoftmaxRegression(solver="newton-cg", tol=1e-4, dtype=np.float32).fit(X, y)
    assert m32.coef_.dtype == np.float32 and m32.predict_proba(X).dtype == np.float32
    np.testing.assert_allclose(m32.predict_proba(X), m64.predict_proba(X), atol=2e-3)


def test_warm_start_continues():
    X, y = _data()
    model = SoftmaxRegression(solver="lbfgs", tol=1e-15, warm_start=True).fit(X, y)
    first = model.coef_.copy()
    model.fit(X, y)
    assert model.n_iter_ <= 2
    np.testing.assert_allclose(model.coef_, first, atol=1e-6)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "sgd"])
def test_early_stopping_records_validation(solver):
    X, y = _data(n=400)
    model = SoftmaxRegression(
        solver=solver, early_stopping=True, n_iter_no_change=3, random_state=0, max_iter=50, tol=1e-6
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    assert len(model.validation_scores_) == len(model.validation_loss_curve_) == len(model.loss_curve_)
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert all(0 <= s <= 1 for s in model.validation_scores_)
    assert not hasattr(SoftmaxRegression().fit(X, y), "validation_scores_")


def test_verbose_shows_progress_with_loss(capsys):
    X, y = _data(n=100)
    model = SoftmaxRegression(verbose=True).fit(X, y)
    err = capsys.readouterr().err
    assert f"SoftmaxRegression[{model.solver_}]" in err and "loss=" in err


def test_convergence_warning():
    X, y = _data()
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=2"):
        SoftmaxRegression(max_iter=2, tol=1e-12).fit(X, y)


def test_pickle_round_trip():
    X, y = _data()
    model = SoftmaxRegression().fit(X, y)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict_proba(X), model.predict_proba(X))


def test_partial_fit_reaches_the_optimum_on_synthetic_data():
    """Shuffled chunks of a tenth of the data, mini-batches of 50 inside each (sgd, momentum 0.5,
    learning_rate "auto", schedule "invscaling"): within 1e-3 (relative) of the exact optimum after
    10 epochs (5 suffice with random_state=0)."""
    X, y = make_classification(
        n_samples=2000, n_features=8, n_informative=6, n_classes=5, class_sep=0.7, random_state=7
    )
    X = StandardScaler().fit_transform(X)
    alpha = 1.0 / len(y)
    f_star = _objective(SoftmaxRegression(alpha=alpha, solver="newton-cg", tol=1e-10).fit(X, y), X, y)
    model = SoftmaxRegression(
        alpha=alpha, solver="sgd", momentum=0.5, batch_size=50, learning_rate_schedule="invscaling", random_state=0
    )
    rng = np.random.default_rng(0)
    for _ in range(10):
        for batch in np.array_split(rng.permutation(len(y)), 10):
            model.partial_fit(X[batch], y[batch], classes=np.arange(5))
    assert (_objective(model, X, y) - f_star) / f_star < 1e-3
    assert model.n_iter_ == 100 and len(model.loss_curve_) == 100


def test_partial_fit_for_every_solver():
    assert all(hasattr(SoftmaxRegression(solver=solver), "partial_fit") for solver in ("auto", "lbfgs", "adam"))


# --------------------------------------------------------------------------- every bad input of item 6


@pytest.mark.parametrize(
    "X_bad, message",
    [
        (np.array([[0.0, np.nan]] * 4), "NaN"),
        (np.array([[0.0, np.inf]] * 4), "infinity"),
        (np.zeros((0, 2)), "0 sample"),
    ],
)
def test_bad_X(X_bad, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression().fit(X_bad, np.array([0, 1, 0, 1])[: len(X_bad)])


def test_wrong_number_of_features_at_predict():
    X, y = _data()
    model = SoftmaxRegression().fit(X, y)
    for method in (model.predict, model.predict_proba, model.predict_log_proba, model.decision_function):
        with pytest.raises(ValueError, match=r"X has 5 features, but SoftmaxRegression is expecting 6 features"):
            method(X[:, :5])


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        SoftmaxRegression().predict(np.zeros((2, 2)))


def test_partial_fit_errors():
    X, y = _data()
    model = SoftmaxRegression(solver="sgd")
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        model.partial_fit(X, y)
    model.partial_fit(X[:50], y[:50], classes=np.arange(4))
    with pytest.raises(ValueError, match=r"y must only hold labels from classes \[0, 1, 2, 3\], got \[7\]"):
        model.partial_fit(X[:3], np.array([0, 7, 1]))
    with pytest.raises(ValueError, match="X has 5 features"):
        model.partial_fit(X[:3, :5], y[:3])
    with pytest.raises(ValueError, match="class_weight must be None or a dict with partial_fit"):
        SoftmaxRegression(solver="sgd", class_weight="balanced").partial_fit(X, y, classes=np.arange(4))


def test_fewer_than_two_classes():
    X, _ = _data()
    with pytest.raises(ValueError, match=r"y must contain at least two classes, got 1 class: \[3\]"):
        SoftmaxRegression().fit(X, np.full(len(X), 3))
    with pytest.raises(ValueError, match="classes must hold at least two distinct classes"):
        SoftmaxRegression(solver="sgd").partial_fit(X, np.zeros(len(X)), classes=[0])


@pytest.mark.parametrize(
    "transform, message",
    [
        (lambda P: P * 1.1, "y must have rows that sum to 1"),
        (
            lambda P: (
                P - 0.5 * np.eye(P.shape[1])[np.argmin(P, axis=1)] + 0.5 * np.eye(P.shape[1])[np.argmax(P, axis=1)]
            ),
            "y must be non-negative",
        ),
        (lambda P: np.where(P == P.max(), np.nan, P), "y must be finite"),
    ],
)
def test_bad_soft_labels(transform, message):
    X, y = _data()
    proba = np.random.default_rng(0).dirichlet(np.ones(4), size=len(y))
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression().fit(X, transform(proba))


@pytest.mark.parametrize(
    "sample_weight, message",
    [
        (np.ones(5), r"sample_weight must have shape \(300,\), got shape \(5,\)"),
        (np.ones((300, 2)), r"sample_weight must have shape \(300,\)"),
        (-np.ones(300), "sample_weight must be non-negative"),
        (np.full(300, np.nan), "sample_weight must be finite"),
        (np.zeros(300), "sample_weight must have a positive sum"),
    ],
)
def test_bad_sample_weight(sample_weight, message):
    X, y = _data()
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression().fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"backend": "jax"}, "The 'backend' parameter of SoftmaxRegression must be a str among"),
        ({"device": "cuda"}, "device must be None"),
        ({"dtype": np.int32}, "dtype must be numpy.float64 or numpy.float32"),
        ({"solver": "saga"}, "solver"),
        ({"alpha": -1.0}, "alpha"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"class_weight": {9: 1.0}}, "class_weight must only name classes"),
    ],
)
def test_bad_parameters(params, message):
    X, y = _data()
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(**params).fit(X, y)


def test_wrong_y_length():
    X, y = _data()
    with pytest.raises(ValueError, match="y must have 300 rows"):
        SoftmaxRegression().fit(X, y[:10])


def test_the_backend_dispatch_rejects_what_the_estimator_cannot_pass():
    """make_objective is the one dispatch on backend; its own checks hold for direct callers too."""
    X, y = _data()
    options = dict(n_classes=4, fit_intercept=True, label_smoothing=0.0, dtype=np.float64)
    with pytest.raises(ValueError, match="backend must be one of 'numpy', 'torch', got 'jax'"):
        make_objective("jax", None, X, y, None, 0.0, **options)
    with pytest.raises(ValueError, match="device must be None with backend='numpy', got 'cpu'"):
        make_objective("numpy", "cpu", X, y, None, 0.0, **options)
    with pytest.raises(ValueError, match=r"dtype must be numpy\.float64 or numpy\.float32, got <class 'numpy\.int32'>"):
        make_objective("numpy", None, X, y, None, 0.0, **{**options, "dtype": np.int32})
    f, g = make_objective("numpy", None, X, y, None, 0.0, **options).loss_gradient(np.zeros(4 * 7))
    assert f == pytest.approx(np.log(4)) and g.shape == (28,)
