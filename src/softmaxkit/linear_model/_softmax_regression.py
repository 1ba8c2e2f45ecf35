"""SoftmaxRegression: the scikit-learn estimator shell around the multinomial linear loss and its solvers.

This module holds the parameters and the sequence of ``fit``, ``partial_fit`` and ``predict``; the
rest has its own module: the inputs (:mod:`._inputs`), the loss and the facts about it
(:mod:`._loss`), the backends (:mod:`._objective`, :mod:`._torch_backend`), the solvers
(:mod:`._solvers`), the per-iteration monitor (:mod:`._monitor`) and the model file
(:mod:`._model_file`).
"""

from __future__ import annotations

import functools
import numbers
import warnings
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_random_state

from softmaxkit._numpy._softmax import softmax
from softmaxkit.linear_model import _checkpoint, _predicting, _solvers
from softmaxkit.linear_model._fitting import (
    auto_learning_rate,
    coef_from_theta,
    epoch_options,
    initial_theta,
    nnz,
    resolve_solver,
    run_full_batch,
)
from softmaxkit.linear_model._inputs import check_classes, encode_target, sample_weights, split_validation, validate_X
from softmaxkit.linear_model._model_file import read_model, write_model
from softmaxkit.linear_model._monitor import Monitor
from softmaxkit.linear_model._objective import BACKENDS, check_device, check_dtype, default_dtype, make_objective
from softmaxkit.linear_model._solvers import SOLVERS, STOCHASTIC_SOLVERS
from softmaxkit.linear_model._source_fit import fit_source, is_source
from softmaxkit.linear_model._streams import new_stream, stream_steps
from softmaxkit.linear_model._threads import blas_threads, limit_blas_threads

__all__ = ["SoftmaxRegression"]


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    r"""Multinomial logistic (softmax) regression with exact second-order, quasi-Newton and stochastic solvers.

    For weights :math:`W` (``n_classes x n_features``), intercept :math:`b` and sample weights
    :math:`s_i = \mathrm{sample\_weight}_i \cdot \mathrm{class\_weight}[y_i]` the model minimises

    .. math::

        L(W, b) = \frac{1}{\sum_i s_i} \sum_i s_i \, \mathrm{CE}(y_i, W x_i + b)
                  + \frac{\alpha}{2} \lVert W \rVert_F^2 ,

    with :math:`\mathrm{CE}` the cross-entropy of :func:`softmaxkit.cross_entropy` (including its
    ``label_smoothing``). The intercept is not penalised. The parametrisation is symmetric: one
    row of ``coef_`` per class, also for two classes; the intercepts are returned centred (they
    sum to 0, which changes no prediction). For soft labels :math:`y_i` (rows of class
    probabilities), the class weight of a sample is :math:`\sum_k y_{ik}\,\mathrm{class\_weight}_k`.

    **Same problem as scikit-learn.** ``sklearn.linear_model.LogisticRegression(C=c)`` (L2)
    minimises ``c * sum_i s_i CE_i + ||W||^2 / 2``; scikit-learn 1.9 solves it internally as
    ``(1 / sum_i s_i) * sum_i s_i CE_i + ||W||^2 / (2 c sum_i s_i)`` (``l2_reg_strength = 1 / (C *
    sw_sum)`` with ``sw_sum`` the sum of sample weights after multiplying in ``class_weight``).
    With three or more classes (the multinomial model, one row of ``W`` per class) that is ``L``
    above with ``alpha = 1 / (c * sum_i s_i)``. With two classes scikit-learn fits the binomial
    model, one coefficient vector ``w``, which is ``W_1 - W_0`` here; ``L``'s minimiser has
    ``W_0 = -W_1``, so ``||W||_F^2 = ||w||^2 / 2``, and the same problem is
    ``alpha = 2 / (c * sum_i s_i)``.

    **Sparse X.** Every method takes SciPy sparse matrices and arrays (CSR, or CSC converted to
    CSR) and keeps them sparse, for every solver and on both backends; the products with ``X`` are
    sparse-times-dense and nothing of the size of dense ``X`` is allocated.

    Parameters
    ----------
    alpha : float, default 1e-4
        L2 penalty strength (see the formula above).
    fit_intercept : bool, default True
    solver : {"auto", "lbfgs", "newton-cg", "sgd", "adam"}, default "auto"
        "auto" (the default; earlier releases defaulted to "lbfgs") chooses by the rules of
        :mod:`~softmaxkit.linear_model._auto`: "lbfgs" where no factorisation of the Hessian (whole, or
        one block per class) fits in ``max(2**22 numbers, nnz(X))`` of memory (typically sparse text);
        else "newton-cg" where a pass is small (``nnz(X) * n_classes`` below 4e6), and L-BFGS first where
        it is larger, handing over to Newton-CG when its measured rate is slow (ill-conditioned
        problems). Time to scikit-learn's optimum, one thread: 0.05-0.4x on letter, pendigits, satimage,
        covtype, 0.7x on digits, 0.56-0.81x on well-conditioned shapes, 0.43x on news20 (lbfgs); see
        ``benchmarks/results/``. ``solver_``: the one that finished.
        "lbfgs": L-BFGS (scikit-learn's default algorithm; our own). "newton-cg": inexact Newton
        with preconditioned CG on exact Hessian-vector products and a backtracking line search
        (the preconditioner is Jacobi, then a lagged Cholesky factorisation of the whole Hessian or
        of its class blocks once CG slows down). "sgd": mini-batch SGD with Nesterov momentum.
        "adam": Adam. :meth:`partial_fit` runs its own stream method unless the solver is "sgd" or "adam".
    max_iter : int, default 200
        Iterations (lbfgs, newton-cg) or epochs (sgd, adam).
    tol : float, default 1e-5
        A bound on the relative gap to the optimum, ``(L - L*) / L``, comparable across problems
        and solvers (earlier releases: a bound of 1e-4 on the largest gradient entry).
        newton-cg: stops after the step taken where the Newton decrement ``g^T H^-1 g / 2``
        (which estimates ``L - L*``) is at most ``tol * L``; Newton's last step then leaves the gap
        far below ``tol`` (measured: at most 1.3 ``tol``, usually 1e-3 ``tol`` or less, on the
        benchmark sets). lbfgs: stops where the same estimate, with L-BFGS's own approximation of
        ``H^-1``, is at most ``tol * L`` ("auto": ``tol * L / 100``; measured: the true gap 0.3-6 times it,
        once 32). At the default, the gap is below scikit-learn's default fit's on every benchmark
        set (2e-6 against 6e-5 to 0.2; 7e-8, 8e-9 against 1.8e-7 on make_classification). A ``tol``
        below the objective's rounding (about 1e-15) stops where it no longer decreases: at machine precision.
        sgd, adam: stop when the epoch objective has not improved by ``tol`` (relative) for
        ``n_iter_no_change`` epochs. With ``early_stopping``: when the validation accuracy has not
        improved by ``tol``.
    batch_size : int or "auto", default "auto"
        Mini-batch size for sgd and adam; "auto" is ``min(256, max(8, n_samples // 10))``
        (at most ``n_samples``).
    learning_rate : float or "auto", default "auto"
        Initial step size of sgd and adam. "auto" is, for sgd, ``1 / L`` with
        ``L = lambda_max(X~^T X~ / n) / 2 + alpha`` (``X~`` is ``X`` with a column of ones when
        fitting an intercept; a bound on the curvature of the objective, estimated by power
        iteration on at most 5000 rows of the first data seen), and 1e-2 for adam. A number also makes
        :meth:`partial_fit`'s default stream averaged SGD with that step.
    learning_rate_schedule : {"constant", "invscaling", "adaptive"}, default "constant"
        "invscaling": ``learning_rate / sqrt(1 + epoch)`` (each :meth:`partial_fit` call counts as
        an epoch); "adaptive": divide the rate by 5 each time the objective stalls for
        ``n_iter_no_change`` epochs (stop below 1e-6; :meth:`fit` only).
    momentum : float, default 0.9
        Nesterov momentum of sgd (0 for plain SGD), and of :meth:`partial_fit`'s averaged SGD.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the training data (stratified) and stop when the
        validation accuracy has not improved by ``tol`` for ``n_iter_no_change`` iterations or
        epochs; the best coefficients are kept. Any solver; not used by :meth:`partial_fit`.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 10
    class_weight : dict, "balanced" or None, default None
        Multiplies each sample's weight by the weight of its class; "balanced" is
        ``sum_i sw_i / (n_classes * sum_{i: y_i = k} sw_i)`` (scikit-learn's rule).
    label_smoothing : float in [0, 1], default 0.0
        As in :func:`softmaxkit.cross_entropy`.
    warm_start : bool, default False
        Start :meth:`fit` from the previous solution (and solver state for sgd and adam).
    random_state : int, numpy.random.RandomState or None, default None
        Shuffling of sgd and adam, and the early-stopping split.
    verbose : bool, default False
        Show a progress bar (tqdm) with the current objective (and validation score).
    dtype : numpy.float64, numpy.float32 or None, default None
        Working precision of the data and the loss (solvers accumulate in float64). None means
        float64, except float32 with ``backend="torch"`` on a GPU (CUDA or MPS).
    backend : {"numpy", "torch"}, default "numpy"
        Where the loss and its gradient are computed; the solvers and the fitted model are the same.
        "torch" (the ``torch`` extra) computes them with :mod:`softmaxkit.torch` on ``device``,
        for every solver (newton-cg builds its factorised preconditioner on the host); the data go
        to the device once, or are streamed to it in chunks of rows when larger than 80 % of its
        free memory.
        The fitted attributes are NumPy arrays either way: ``predict``, ``save`` and ``load`` need
        neither torch nor the device. The same ``random_state`` gives the same model bit for bit
        on the CPU; on a GPU, the same up to rounding across GPU models and library versions.
        ``dtype`` sets the device precision (float32 is much faster on most GPUs).
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or None, default None
        backend="torch" only (None means "auto": CUDA, else MPS, else the CPU); a device this
        machine lacks is a ``ValueError`` at ``fit``; "auto" skips MPS for float64, which MPS lacks.
        Must be None with backend="numpy".

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (n_classes, n_features)
    intercept_ : ndarray of shape (n_classes,)
    n_iter_ : int
        Iterations or epochs run (summed over :meth:`partial_fit` calls).
    solver_ : str
        The solver that ran (what "auto" chose); set by :meth:`fit`.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Only when ``X`` had string column names.
    loss_curve_ : list of float
        The objective after each iteration (lbfgs, newton-cg) or the mean mini-batch objective of
        each epoch (sgd, adam).
    validation_scores_ : list of float
        Validation accuracy per iteration or epoch (with ``early_stopping``).
    validation_loss_curve_ : list of float
        Validation cross-entropy (weighted mean, no penalty) per iteration or epoch (with
        ``early_stopping``).
    best_validation_score_ : float
        With ``early_stopping``.
    saved_metadata_ : dict
        After :meth:`load`: the ``metadata`` given to :meth:`save`.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.linear_model import SoftmaxRegression
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0], [0.5, 3.0], [3.0, 3.0]])
    >>> y = np.array(["a", "a", "b", "b", "c", "c"])
    >>> model = SoftmaxRegression(alpha=0.1).fit(X, y)
    >>> model.predict(X)
    array(['a', 'a', 'b', 'b', 'c', 'c'], dtype='<U1')
    >>> model.predict_proba(X[:1]).round(3)
    array([[0.849, 0.096, 0.055]])
    """

    _parameter_constraints: ClassVar[dict] = {
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "solver": [StrOptions({"auto", *SOLVERS})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "learning_rate_schedule": [StrOptions({"constant", "invscaling", "adaptive"})],
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "label_smoothing": [Interval(numbers.Real, 0, 1, closed="both")],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "dtype": "no_validation",
        "backend": [StrOptions(set(BACKENDS))],
        "device": "no_validation",
    }

    def __init__(
        self,
        *,
        alpha=1e-4,
        fit_intercept=True,
        solver="auto",
        max_iter=200,
        tol=1e-5,
        batch_size="auto",
        learning_rate="auto",
        learning_rate_schedule="constant",
        momentum=0.9,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        class_weight=None,
        label_smoothing=0.0,
        warm_start=False,
        random_state=None,
        verbose=False,
        dtype=None,
        backend="numpy",
        device=None,
    ):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_schedule = learning_rate_schedule
        self.momentum = momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.dtype = dtype
        self.backend = backend
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_class = True
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------ validation

    def _check_params(self) -> np.dtype | None:
        """Validate the parameters; return the ``dtype`` asked for (None: the backend's default)."""
        self._validate_params()
        check_device(self.backend, self.device)  # the device is resolved by fit, so load never needs it
        return None if self.dtype is None else check_dtype(self.dtype)

    def _working_dtype(self) -> np.dtype:
        """The precision fit computes in: ``dtype``, else float32 on a GPU and float64 elsewhere."""
        dtype = self._check_params()
        return default_dtype(self.backend, self.device) if dtype is None else dtype

    def _validate_X(self, X, *, reset: bool, dtype):
        """``X`` as a C-contiguous array or a CSR matrix (CSC and sparse arrays converted, never densified)."""
        options = {"order": "C", "accept_sparse": "csr", "ensure_all_finite": True, "ensure_min_samples": 1}
        return validate_X(self, X, reset=reset, dtype=dtype, **options)

    # ------------------------------------------------------------------ fitting

    def _objective(self, X, target, s, n_classes, dtype):
        return make_objective(
            self.backend,
            self.device,
            X,
            target,
            s,
            float(self.alpha),
            n_classes=n_classes,
            fit_intercept=bool(self.fit_intercept),
            label_smoothing=float(self.label_smoothing),
            dtype=dtype,
        )

    def _initial_theta(self, n_classes, n_features, target, s, warm):
        return initial_theta(
            self.coef_ if warm else None,
            self.intercept_ if warm else None,
            n_classes=n_classes,
            n_features=n_features,
            fit_intercept=self.fit_intercept,
            target=target,
            sample_weight=s,
        )

    def _set_coef(self, x, n_classes, n_features, dtype):
        self.coef_, self.intercept_ = coef_from_theta(
            x, n_classes=n_classes, n_features=n_features, fit_intercept=self.fit_intercept, dtype=dtype
        )

    def _new_stochastic_state(self, X, solver):
        rate = auto_learning_rate(self.learning_rate, solver, X, self.alpha, self.fit_intercept)
        return _solvers.StochasticState(method=solver, learning_rate=rate)

    def _epoch_options(self, n_samples, state):
        rate = state.learning_rate if self.learning_rate == "auto" else float(self.learning_rate)
        return epoch_options(self.batch_size, n_samples, rate, self.learning_rate_schedule, self.momentum)

    def _run_solver(self, solver, objective, x0, X, n_samples, warm, rng, monitor, run):
        options = {"max_iter": self.max_iter, "tol": self.tol, "callback": monitor}
        if solver not in STOCHASTIC_SOLVERS:
            return run_full_batch(solver, objective, x0, run=run, **options)
        if not (warm and getattr(self, "_stochastic_state", None) is not None):
            self._stochastic_state = self._new_stochastic_state(X, solver)
        state = self._stochastic_state
        generator = np.random.default_rng(rng.randint(np.iinfo(np.int32).max))
        return _solvers.minimize_stochastic(
            objective.batch_loss_gradient,
            x0,
            n_samples,
            state,
            n_iter_no_change=self.n_iter_no_change,
            rng=generator,
            checkpoint=run,
            **options,
            **self._epoch_options(n_samples, state),
        )

    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None):
        """Fit the model to ``X`` and labels (or class probabilities) ``y``.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features), or a softmaxkit.sources.Source
            Finite values. Sparse input (SciPy CSR or CSC, matrices or arrays) stays sparse (as CSR)
            for every solver and backend: nothing the size of dense ``X`` is ever allocated. A source
            (``y`` None) is streamed: see :mod:`._source_fit`.
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
            Labels of any kind (numbers, strings), or rows of class probabilities (soft labels;
            non-negative, summing to 1). For soft labels ``classes_`` is ``arange(n_classes)``.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights.
        checkpoint : str, os.PathLike or Checkpoint, optional
            Save the solver's state there and resume from it (see :class:`~softmaxkit.linear_model.Checkpoint`).

        Returns
        -------
        self
        """
        if is_source(X):
            return fit_source(self, X, y, sample_weight, checkpoint=checkpoint)
        dtype = self._working_dtype()
        warm = self.warm_start and hasattr(self, "coef_")
        X = self._validate_X(X, reset=not warm, dtype=dtype)
        n_samples, n_features = X.shape
        classes, target, hard = encode_target(
            y, n_samples, dtype, classes=self.classes_ if warm else None, estimator_name=type(self).__name__
        )
        if warm and (len(classes) != len(self.classes_) or n_features != self.coef_.shape[1]):
            warm = False
        s = sample_weights(sample_weight, self.class_weight, target, classes, dtype)
        self.classes_ = classes
        n_classes = len(classes)
        rng = check_random_state(self.random_state)

        X_val = None
        if self.early_stopping:
            X, X_val, target, t_val, s, s_val = split_validation(X, target, hard, s, self.validation_fraction, rng)
            n_samples = X.shape[0]
        solver = resolve_solver(self.solver, X, n_classes, bool(self.fit_intercept))
        self.solver_ = solver
        self._stream_state = None  # a later partial_fit starts its stream from this fit
        objective = self._objective(X, target, s, n_classes, dtype)
        x0 = self._initial_theta(n_classes, n_features, target, s, warm)
        unit = "epoch" if solver in STOCHASTIC_SOLVERS else "iter"
        monitor = Monitor(
            X_val,
            t_val if X_val is not None else None,
            s_val if X_val is not None else None,
            n_classes=n_classes,
            n_features=n_features,
            fit_intercept=self.fit_intercept,
            label_smoothing=self.label_smoothing,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            dtype=dtype,
            progress={"total": self.max_iter, "desc": f"SoftmaxRegression[{solver}]", "unit": unit}
            if self.verbose
            else None,
        )
        try:
            run = _checkpoint.open_checkpoint(checkpoint, self, solver, dtype, x0, monitor, data=(X, target, s))
            with limit_blas_threads(blas_threads(nnz=nnz(X), n_classes=n_classes)):
                result = self._run_solver(solver, objective, x0, X, n_samples, warm, rng, monitor, run)
        finally:
            monitor.close()
        x = monitor.best_x if monitor.best_x is not None else result.x
        self.solver_ = getattr(result, "solver", None) or solver  # (auto: the solver that finished)
        self._set_coef(x, n_classes, n_features, dtype)
        self.n_iter_ = int(result.n_iter)
        self.loss_curve_ = list(result.loss_curve)
        if self.early_stopping:
            self.validation_scores_ = monitor.scores
            self.validation_loss_curve_ = monitor.losses
            self.best_validation_score_ = monitor.best_score
        else:
            for name in ("validation_scores_", "validation_loss_curve_", "best_validation_score_"):
                if hasattr(self, name):
                    delattr(self, name)
        if not result.converged:
            warnings.warn(
                f"{type(self).__name__} (solver={solver!r}) did not converge in max_iter={self.max_iter} "
                f"{'epochs' if solver in STOCHASTIC_SOLVERS else 'iterations'}; increase max_iter or tol, or "
                "standardise the features",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Update the model with one mini-batch ``X, y`` of a stream (any ``solver``).

        With ``solver`` "auto", "lbfgs" or "newton-cg" (the default), one step per call (or per ``batch_size``
        rows): while (features + 1) x classes <= 1024, an incremental Newton that remembers the samples it saw
        (:mod:`._stream_newton`: passes over a data set converge to :meth:`fit`'s optimum, at any feature
        scale); larger models run L-BFGS on the samples they remember (:mod:`._stream_replay`), and averaged
        SGD (:mod:`._streaming`; standardise the features) once those fill the memory (:mod:`._streams`). It
        continues from a fitted model. Gaps after 10 and 30 passes of 256-row calls: user guide, "Learning
        from a stream".
        "sgd", "adam": one epoch of :meth:`fit`'s updates per call, state kept.
        ``class_weight="balanced"`` and ``early_stopping`` do not apply here.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
            Labels from ``classes``, or rows of class probabilities in the order of ``classes``.
        classes : array-like of shape (n_classes,)
            All the classes; required on the first call, ignored afterwards.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        dtype = self._working_dtype()
        averaged = self.solver not in STOCHASTIC_SOLVERS
        state_name = "_stream_state" if averaged else "_stochastic_state"
        # averaged SGD continues from a fitted or loaded model; sgd and adam restart without their state
        first = not hasattr(self, "classes_") or (not averaged and getattr(self, state_name, None) is None)
        if first:
            classes = check_classes(classes)
        X = self._validate_X(X, reset=first, dtype=dtype)
        n_samples, n_features = X.shape
        classes, target, _ = encode_target(
            y, n_samples, dtype, classes=classes if first else self.classes_, estimator_name=type(self).__name__
        )
        weighing = (sample_weight, self.class_weight, target, classes)
        s = sample_weights(*weighing, dtype, allow_balanced=False)
        n_classes = len(classes)
        if first:
            self.classes_ = classes
            self.coef_ = np.zeros((n_classes, n_features), dtype=dtype)
            self.intercept_ = np.zeros(n_classes, dtype=dtype)
            self.n_iter_ = 0
            self.loss_curve_ = []
            self._stream_state = None
            if not averaged:
                self._stochastic_state = self._new_stochastic_state(X, self.solver)
                self._partial_fit_rng = None
        if not averaged and getattr(self, "_partial_fit_rng", None) is None:
            self._partial_fit_rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31 - 1))
        if averaged and getattr(self, "_stream_state", None) is None:
            x0 = self._initial_theta(n_classes, n_features, target, s, warm=not first)
            options = {"n_classes": n_classes, "warm": not first}
            self._stream_state = new_stream(self.learning_rate, X, self.alpha, self.fit_intercept, x0, **options)
        objective = functools.partial(self._objective, X, target, s, n_classes, dtype)  # built where needed
        with limit_blas_threads(blas_threads(nnz=nnz(X), n_classes=n_classes)):
            if averaged:
                batch = n_samples if self.batch_size == "auto" else min(self.batch_size, n_samples)
                options = {"batch_size": batch, "momentum": float(self.momentum), "alpha": float(self.alpha)}
                options.update(label_smoothing=self.label_smoothing, fit_intercept=bool(self.fit_intercept))
                options["class_weight"] = self.class_weight
                weights = sample_weights(*weighing, np.float64, allow_balanced=False, scaled=False)
                f, x = stream_steps(self._stream_state, objective, X, target, weights, **options)
            else:
                state = self._stochastic_state
                x0 = self._initial_theta(n_classes, n_features, target, s, warm=True)
                options = {"rng": self._partial_fit_rng, **self._epoch_options(n_samples, state)}
                x, f = _solvers.stochastic_epoch(objective().batch_loss_gradient, x0, n_samples, state, **options)
        if not np.isfinite(f):
            raise FloatingPointError(f"the objective diverged to {f}; lower learning_rate")
        self._set_coef(x, n_classes, n_features, dtype)
        self.n_iter_ = getattr(self, "n_iter_", 0) + 1
        self.loss_curve_ = [*getattr(self, "loss_curve_", []), f]
        return self

    # ------------------------------------------------------------------ prediction

    def _chunked(self, X):
        """``(logits(start, stop), n_samples, rows per chunk)`` for the validated ``X``."""
        check_is_fitted(self)
        X = self._validate_X(X, reset=False, dtype=self.coef_.dtype)
        rows = _predicting.chunk_rows(len(self.classes_), self.coef_.dtype.itemsize)
        return _predicting.logits_of(X, self.coef_, self.intercept_), X.shape[0], rows

    def _all(self, X, kind):
        logits, n_samples, rows = self._chunked(X)
        return _predicting.transformed(logits, n_samples, len(self.classes_), self.coef_.dtype, rows, kind)

    def decision_function(self, X):
        """The logits ``X @ coef_.T + intercept_``, shape (n_samples, n_classes).

        For two classes, scikit-learn's convention: the 1-D difference ``z_1 - z_0`` (the log-odds
        of ``classes_[1]``). Every prediction method works in row chunks of bounded memory (see
        :mod:`softmaxkit.linear_model._predicting`).
        """
        z = self._all(X, "logits")
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict(self, X):
        """The most probable class of each row (the first one on ties); no ``n_samples x n_classes`` array."""
        logits, n_samples, rows = self._chunked(X)
        return self.classes_[_predicting.predicted(logits, n_samples, rows)]

    def predict_proba(self, X):
        """Class probabilities, ``softmax(decision logits)``, shape (n_samples, n_classes)."""
        return self._all(X, "proba")

    def predict_log_proba(self, X):
        """Exact log-probabilities via :func:`softmaxkit.log_softmax` (finite wherever the probability is not 0)."""
        return self._all(X, "log_proba")

    def iter_predict_proba(self, X, *, chunk_bytes=_predicting.PREDICT_CHUNK_BYTES):
        """Yield ``(start, proba)``: the class probabilities of the rows ``start:start + len(proba)`` of ``X``.

        For outputs larger than memory: each chunk has about ``chunk_bytes / TEMPORARIES_PER_CHUNK``
        bytes (:mod:`._predicting`), to write away (e.g. into ``np.lib.format.open_memmap``) before the next.
        """
        rows = _predicting.chunk_rows(len(self.classes_), self.coef_.dtype.itemsize, chunk_bytes)
        logits, n_samples, _ = self._chunked(X)
        yield from _predicting.iter_chunks(logits, n_samples, rows, lambda z: softmax(z, axis=1))

    # ------------------------------------------------------------------ model files

    def save(self, path, *, overwrite=False, metadata=None):
        """Write the fitted model to ``path`` (format in :mod:`softmaxkit._model_io`), atomically.

        Parameters
        ----------
        path : str or os.PathLike
            Used as given (``.npz`` is customary).
        overwrite : bool, default False
            Replace an existing file; otherwise an existing file raises :class:`FileExistsError`.
        metadata : dict, optional
            Free-form JSON-serialisable data kept with the model (read back as
            ``saved_metadata_`` or with :func:`read_model_metadata`).

        Returns
        -------
        self
        """
        write_model(self, path, overwrite=overwrite, metadata=metadata)
        return self

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; every field is checked, nothing is unpickled.

        Raises :class:`softmaxkit.ModelFileError` (a :class:`ValueError`) for a truncated, corrupt,
        foreign or newer-version file or one with an invalid field, :class:`OSError` for one that
        cannot be opened.
        """
        return read_model(cls, path)
