r"""``SoftmaxRegression.fit(source)``: the fit from a :mod:`softmaxkit.sources` source, in bounded memory.

**Why ``fit(source)``.** A source carries its labels and sample weights the way a scikit-learn
``X`` carries its rows, so the estimator's one ``fit`` takes it in ``X``'s place (``y`` and
``sample_weight`` stay ``None``: they are columns of the source). Everything that calls ``fit``
(a pipeline step, the command line, a data-parallel wrapper) then works on files larger than
memory unchanged, and the fitted estimator is the same object with the same attributes; a second
function beside the estimator would duplicate its parameters and its fitted state. The float32
on-disk cache is composition, not an option: ``fit(cache_source(source))``
(:func:`softmaxkit.sources.cache_source`) parses text once and makes every later pass a read of
raw float32 rows.

**What streams.** One pass (:func:`scan`) counts the rows, the stored entries and the labels with
their weights, for ``classes_``, "balanced" class weights, the start (the intercept-only optimum),
the weight sum and ``solver="auto"`` (the rule of :func:`._auto.choose_solver`, on the counts). Then:

* lbfgs and newton-cg see an :class:`~._solvers.Objective` whose callables stream
  (:func:`streamed_objective`): each evaluation is one pass, each Hessian-vector product one
  more; the solvers are unchanged and the optimum is exact. The data term is summed over the
  batches in float64 and normalised once, at the end (:class:`RowSums`), which is also what a
  data-parallel wrapper needs: it all-reduces a rank's sums and normalises the same way.
* sgd and adam run by passes: each pass shuffles the rows within each batch of the source and
  steps through them in mini-batches (the updates of :func:`._solvers.stochastic_epoch`; the
  schedule counts passes as epochs).

**Memory.** One batch of the source (its ``max_bytes``) plus the loss's temporaries for it (the
batch's logits; with newton-cg also its probabilities, ``n_batch x n_classes``), the solver's
vectors, and for Newton-CG's factorised preconditioners a fixed random sample of rows of at most
``max_bytes`` and the factor (which :func:`._preconditioners.affordable` bounds). Nothing scales
with the number of rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_random_state

from softmaxkit._numpy._softmax import softmax
from softmaxkit._sources._base import Source
from softmaxkit._sources._statistics import LabelCounts
from softmaxkit.linear_model import _loss, _preconditioners, _solvers
from softmaxkit.linear_model._auto import choose_solver
from softmaxkit.linear_model._fitting import auto_learning_rate, coef_from_theta, epoch_options, run_full_batch
from softmaxkit.linear_model._inputs import class_weights
from softmaxkit.linear_model._monitor import Monitor
from softmaxkit.linear_model._solvers import STOCHASTIC_SOLVERS, Objective
from softmaxkit.linear_model._threads import blas_threads, limit_blas_threads

__all__ = ["RowSums", "SourceScan", "fit_source", "is_source", "scan", "streamed_objective"]


def is_source(X) -> bool:
    """Whether ``X`` is a :class:`softmaxkit.sources.Source` (then ``fit`` streams it)."""
    return isinstance(X, Source)


@dataclass(frozen=True)
class SourceScan:
    """What the first pass over a source found.

    ``weight_per_class`` is the summed sample weight of each class (the row count without a weight column).
    """

    n_rows: int
    nnz: int
    classes: np.ndarray
    weight_per_class: np.ndarray


def scan(source) -> SourceScan:
    """One pass: the rows, the stored entries, the sorted labels and each one's summed sample weight."""
    if not source.has_target:
        raise ValueError(f"X must be a source with a target column to fit on, got {source!r}")
    labels = LabelCounts()
    weights: dict = {}
    n_rows = nnz = 0
    for X, y, w in source.iter_batches():
        n_rows += X.shape[0]
        nnz += int(X.nnz) if scipy.sparse.issparse(X) else int(np.prod(X.shape))
        if X.shape[0] == 0:
            continue
        labels.update(y)
        found, inverse = np.unique(y, return_inverse=True)
        sums = np.bincount(inverse.reshape(-1), weights=w, minlength=len(found))
        for label, total in zip(found.tolist(), sums.tolist()):
            weights[label] = weights.get(label, 0.0) + total
    if n_rows == 0:
        raise ValueError(f"X must have at least one row, got the source {source.name} with none")
    classes = labels.classes_
    return SourceScan(n_rows, nnz, classes, np.array([weights[c] for c in classes.tolist()], dtype=np.float64))


class RowSums:
    r"""The data term of :mod:`._loss` as sums over a source's rows: :math:`\sum_i s_i \mathrm{CE}_i` and its derivatives.

    No penalty and no normalisation: :func:`streamed_objective` divides by :attr:`weight_sum` and
    adds the penalty once. Each method is one pass over the source; every batch is evaluated by
    :class:`._loss.LinearLoss` in the working ``dtype`` and the sums are float64. A data-parallel
    wrapper all-reduces the results of these methods (and :attr:`weight_sum`) over its ranks.

    Parameters
    ----------
    source : Source
    classes : ndarray
        The sorted labels (``classes_``); a label outside them is a ``ValueError``.
    class_multipliers : ndarray of shape (n_classes,) or None
        Each class's weight (``class_weight``), multiplied into the sample weights.
    weight_sum : float
        :math:`\sum_i s_i` over the whole source (from :func:`scan`).
    n_classes, fit_intercept, label_smoothing, dtype
        As for :class:`._loss.LinearLoss`.
    """

    def __init__(self, source, classes, class_multipliers, weight_sum, *, fit_intercept, label_smoothing, dtype):
        self.source = source
        self.classes = classes
        self.class_multipliers = class_multipliers
        self.weight_sum = float(weight_sum)
        self.n_features = int(source.n_features)
        self.n_classes = len(classes)
        self.fit_intercept = bool(fit_intercept)
        self.label_smoothing = float(label_smoothing)
        self.dtype = np.dtype(dtype)
        self.shape = (self.n_features + int(self.fit_intercept), self.n_classes)

    def batches(self):
        """``(X, codes, s, S)`` per batch: ``X`` in ``dtype``, the class indices, the weights (None: ones), their sum."""
        for X, y, w in self.source.iter_batches():
            if X.shape[0] == 0:
                continue
            if scipy.sparse.issparse(X):
                X = scipy.sparse.csr_matrix(X, dtype=self.dtype)
            else:
                X = np.ascontiguousarray(X, dtype=self.dtype)
            codes = np.searchsorted(self.classes, y)
            codes = np.minimum(codes, self.n_classes - 1)
            if not np.array_equal(self.classes[codes], y):
                unknown = np.asarray(y)[self.classes[codes] != y]
                raise ValueError(f"y must hold only the classes of the first pass, got {unknown[:5].tolist()}")
            s = None if w is None else np.asarray(w, dtype=np.float64)
            if self.class_multipliers is not None:
                s = self.class_multipliers[codes] if s is None else s * self.class_multipliers[codes]
            total = float(X.shape[0]) if s is None else float(s.sum())
            if total > 0:
                yield X, codes.astype(np.intp), s, total

    def _problem(self, X, codes, s) -> _loss.LinearLoss:
        options = {"n_classes": self.n_classes, "fit_intercept": self.fit_intercept}
        weights = None if s is None else s.astype(self.dtype)
        return _loss.LinearLoss(X, codes, weights, 0.0, label_smoothing=self.label_smoothing, **options)

    def loss_gradient(self, theta) -> tuple[float, np.ndarray]:
        """``(sum_i s_i CE_i, its gradient)`` at ``theta`` (the gradient in theta's shape, float64)."""
        value, grad = 0.0, np.zeros(self.shape)
        for X, codes, s, total in self.batches():
            f, g = self._problem(X, codes, s).loss_gradient(theta)
            value += total * float(f)
            grad += total * g
        return value, grad

    def loss_gradient_diagonal(self, theta) -> tuple[float, np.ndarray, np.ndarray]:
        """:meth:`loss_gradient` and the summed diagonal of the data term's Hessian, in the same pass."""
        value, grad, diagonal = 0.0, np.zeros(self.shape), np.zeros(self.shape)
        for X, codes, s, total in self.batches():
            f, g, H = self._problem(X, codes, s).loss_gradient_hessp(theta)
            value += total * float(f)
            grad += total * g
            diagonal += total * H.diagonal()
        return value, grad, diagonal

    def hessp(self, theta, v) -> np.ndarray:
        """The summed Hessian-vector product of the data term at ``theta`` (one pass, the probabilities recomputed)."""
        out = np.zeros(self.shape)
        v = np.asarray(v, dtype=np.float64)
        for X, codes, s, total in self.batches():
            _, _, H = self._problem(X, codes, s).loss_gradient_hessp(theta)
            out += total * H(v)
        return out

    def sample(self, rows: np.ndarray):
        """``(X, s)`` of the rows ``rows`` (sorted global indices), gathered in one pass, float64 (the preconditioners')."""
        X_out, s_out = np.empty((len(rows), self.n_features)), np.empty(len(rows))
        start = 0
        for X, y, w in self.source.iter_batches():
            n = X.shape[0]
            lo, hi = np.searchsorted(rows, [start, start + n])
            if hi > lo:
                local = rows[lo:hi] - start
                Xs = X[local]
                X_out[lo:hi] = Xs.toarray() if scipy.sparse.issparse(Xs) else Xs
                s = np.ones(len(local)) if w is None else np.asarray(w, dtype=np.float64)[local]
                if self.class_multipliers is not None:
                    s = s * self.class_multipliers[np.searchsorted(self.classes, np.asarray(y)[local])]
                s_out[lo:hi] = s
            start += n
        return X_out, s_out


class _StreamedHessian:
    """The Hessian at ``theta`` as :class:`~._solvers.HessianOperator`: each product one pass (see :class:`RowSums`)."""

    def __init__(self, objective: _StreamedObjective, theta: np.ndarray, diagonal: np.ndarray):
        self._objective = objective
        self._theta = theta
        self._diagonal = diagonal  # normalised, penalty included

    def __call__(self, v):
        o = self._objective
        V = np.asarray(v, dtype=np.float64).reshape(o.sums.shape)
        out = o.sums.hessp(self._theta, V) / o.sums.weight_sum
        out[: o.sums.n_features] += o.alpha * V[: o.sums.n_features]
        return out.ravel()

    def preconditioner_cost(self, kind: str) -> float:
        if kind != "diagonal" and self._objective.sample_bytes == 0:  # no sample: no factorised preconditioner
            return float("inf")
        sums = self._objective.sums
        options = {"n_features": sums.n_features, "n_classes": sums.n_classes, "fit_intercept": sums.fit_intercept}
        return _preconditioners.cost(kind, n_samples=self._objective.n_rows, nnz=self._objective.nnz, **options)

    def preconditioner(self, kind: str):
        kind = _preconditioners.check_kind(kind)
        if kind == "diagonal":
            return _preconditioners.jacobi(self._diagonal)
        return self._objective.factorised(kind, self._theta)


class _StreamedObjective:
    """The callables of :func:`streamed_objective` (an object, so that the preconditioners' sample is kept)."""

    def __init__(self, sums: RowSums, alpha: float, *, n_rows: int, nnz: int, sample_bytes: int):
        self.sums = sums
        self.alpha = float(alpha)
        self.n_rows = int(n_rows)
        self.nnz = int(nnz)
        self.sample_bytes = int(sample_bytes)
        self._samples: dict = {}

    def _theta(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64).reshape(self.sums.shape)

    def _finish(self, theta, value, grad):
        d = self.sums.n_features
        W = theta[:d]
        grad = grad / self.sums.weight_sum
        grad[:d] += self.alpha * W
        return value / self.sums.weight_sum + 0.5 * self.alpha * float(np.vdot(W, W)), grad

    def loss_gradient(self, x):
        theta = self._theta(x)
        f, g = self._finish(theta, *self.sums.loss_gradient(theta))
        return f, g.ravel()

    def loss_gradient_hessp(self, x):
        theta = self._theta(x)
        value, grad, diagonal = self.sums.loss_gradient_diagonal(theta)
        f, g = self._finish(theta, value, grad)
        diagonal = diagonal / self.sums.weight_sum
        diagonal[: self.sums.n_features] += self.alpha
        return f, g.ravel(), _StreamedHessian(self, theta, diagonal)

    def batch_loss_gradient(self, x, indices):
        raise NotImplementedError("a streamed objective has no random access to rows; sgd and adam run by passes")

    def factorised(self, kind: str, theta: np.ndarray):
        """Newton-CG's "block" or "full" preconditioner, formed from a fixed random sample of rows.

        The rows of :func:`._preconditioners.full_rows` / :func:`~._preconditioners.block_rows` (the
        same draw as a fit in memory), at most :attr:`sample_bytes` of them; gathered in one pass,
        the first time, and rescaled to the whole source.
        """
        sums = self.sums
        size = sums.n_features + int(sums.fit_intercept)
        if kind == "full":
            wanted = _preconditioners.full_rows(self.n_rows, sums.n_classes * size)
        else:
            wanted = _preconditioners.block_rows(self.n_rows, size)
        wanted = max(1, min(wanted, self.sample_bytes // (8 * (sums.n_features + 2))))
        if kind not in self._samples:
            rows, scale = _preconditioners._sample(self.n_rows, wanted)
            self._samples[kind] = (*sums.sample(rows), scale)
        X, s, scale = self._samples[kind]
        logits = X @ theta[: sums.n_features]
        if sums.fit_intercept:
            logits += theta[sums.n_features]
        proba = softmax(logits, axis=1)
        weighted = proba * (s * scale / sums.weight_sum)[:, None]
        options = {"alpha": self.alpha, "fit_intercept": sums.fit_intercept, "max_rows": None}
        if kind == "block":
            return _preconditioners.block(X, weighted - weighted * proba, **options)
        return _preconditioners.full(X, proba, weighted, **options)


def streamed_objective(sums: RowSums, alpha: float, *, n_rows: int, nnz: int, sample_bytes: int) -> Objective:
    r"""The solvers' :class:`~._solvers.Objective` of :mod:`._loss` over a source: :math:`F / S + \frac{\alpha}{2}\lVert W\rVert^2`.

    ``F`` and its derivatives are :class:`RowSums`' (one pass per call), ``S`` its
    :attr:`~RowSums.weight_sum`; ``n_rows`` and ``nnz`` (from :func:`scan`) feed Newton-CG's cost
    model, ``sample_bytes`` bounds the sample its factorised preconditioners are formed from (0: none,
    Jacobi only; a data-parallel fit's ranks would each sample their own rows and take different steps).
    ``batch_loss_gradient`` raises: the stochastic solvers run by passes (:func:`fit_source`).
    """
    objective = _StreamedObjective(sums, alpha, n_rows=n_rows, nnz=nnz, sample_bytes=sample_bytes)
    return Objective(objective.loss_gradient, objective.loss_gradient_hessp, objective.batch_loss_gradient)


def _class_multipliers(class_weight, found: SourceScan) -> np.ndarray | None:
    """``class_weight`` per class from the scan's weight sums ("balanced": scikit-learn's rule), scaled to the largest."""
    if class_weight is None:
        return None
    n_classes = len(found.classes)
    if isinstance(class_weight, str):
        counts = found.weight_per_class
        with np.errstate(divide="ignore"):
            result = counts.sum() / (n_classes * counts)
        result[counts == 0] = 1.0
    else:
        result = class_weights(class_weight, None, None, n_classes, found.classes)
    largest = result.max(initial=0)
    return result / largest if largest > 0 else result


def _batch_loss_gradient(sums: RowSums, X, codes, s, alpha: float, mean_weight: float):
    """The mini-batch estimate of :func:`._loss.batch_loss_gradient` on rows of one batch of the source.

    ``mean_weight`` is the mean sample weight over the whole source, so that every mini-batch's
    estimate is unbiased for the whole objective, not only for its batch of the source.
    """
    weights = None if s is None else s.astype(sums.dtype)
    options = {
        "n_classes": sums.n_classes,
        "fit_intercept": sums.fit_intercept,
        "label_smoothing": sums.label_smoothing,
    }

    def batch_loss_gradient(x, indices):
        theta = np.asarray(x, dtype=sums.dtype).reshape(sums.shape)

        def subset_loss_gradient(rows, w):
            f, g = _loss.LinearLoss(X[rows], codes[rows], w, alpha, **options).loss_gradient(theta)
            return f, g.ravel()

        mean = None if weights is None else mean_weight
        return _loss.batch_loss_gradient(
            subset_loss_gradient, theta, indices, weights, mean, alpha=alpha, n_features=sums.n_features
        )

    return batch_loss_gradient


def _stochastic_passes(estimator, sums: RowSums, solver, x0, n_rows, rng, monitor) -> _solvers.SolverResult:
    """sgd or adam by passes over the source (see the module docstring); the stopping rule of ``minimize_stochastic``."""
    batches = sums.batches()
    first = next(batches)[0]  # the curvature bound of "auto" learning rates, from the first batch's rows
    batches.close()
    rate = auto_learning_rate(estimator.learning_rate, solver, first, estimator.alpha, sums.fit_intercept)
    state = _solvers.StochasticState(method=solver, learning_rate=rate)
    options = epoch_options(
        estimator.batch_size, n_rows, state.learning_rate, estimator.learning_rate_schedule, estimator.momentum
    )
    alpha = float(estimator.alpha)
    mean_weight = sums.weight_sum / n_rows
    x = np.asarray(x0, dtype=np.float64).copy()
    curve, converged, message = [], False, "epoch limit reached"
    tol, patience = float(estimator.tol), int(estimator.n_iter_no_change)
    for _ in range(estimator.max_iter):
        epoch, total = state.epoch, 0.0
        for X, codes, s, _ in sums.batches():
            step = _batch_loss_gradient(sums, X, codes, s, alpha, mean_weight)
            state.epoch = epoch  # the schedule counts passes, not batches of the source
            x, f = _solvers.stochastic_epoch(step, x, X.shape[0], state, rng=rng, **options)
            total += f * X.shape[0]
        state.epoch = epoch + 1
        f = total / n_rows
        if not np.isfinite(f):
            raise FloatingPointError(f"the objective diverged to {f} at pass {state.epoch}; lower learning_rate")
        curve.append(f)
        if monitor(x, f):
            converged, message = True, "stopped by callback"
            break
        state.bad_epochs = state.bad_epochs + 1 if f > state.best_loss - tol * abs(state.best_loss) else 0
        state.best_loss = min(state.best_loss, f)
        if state.bad_epochs >= patience:
            if estimator.learning_rate_schedule == "adaptive" and state.learning_rate > 1e-6:
                state.learning_rate /= 5.0
                options["learning_rate"] = state.learning_rate
                state.bad_epochs = 0
                continue
            converged, message = True, f"no improvement above tol for {patience} passes"
            break
    return _solvers.SolverResult(x, len(curve), curve, converged, message)


def fit_source(estimator, source, y=None, sample_weight=None, *, checkpoint=None, across=None):
    """:meth:`SoftmaxRegression.fit` on a source (see the module docstring); returns the estimator.

    ``across`` makes the fit data-parallel (:class:`softmaxkit._distributed._source.AcrossRanks`): its
    ``scan(source)`` is the scan of every rank's source, ``sums(row_sums)`` all-reduces the sums'
    passes and ``final(x)`` is rank 0's point; lbfgs and newton-cg (Jacobi-preconditioned) only.
    """
    if y is not None or sample_weight is not None:
        raise ValueError(
            "y and sample_weight must be None when X is a source (its target and weight columns give them), "
            f"got y={type(y).__name__} and sample_weight={type(sample_weight).__name__}"
        )
    dtype = estimator._working_dtype()
    for name, value, allowed in (
        ("backend", estimator.backend, "numpy"),
        ("early_stopping", estimator.early_stopping, False),
        ("checkpoint", checkpoint, None),  # a source's fingerprint would be its files' (not done yet)
    ):
        if value != allowed:
            raise ValueError(f"{name} must be {allowed!r} when X is a source, got {value!r}")
    found = scan(source) if across is None else across.scan(source)
    classes = found.classes
    n_classes, n_features = len(classes), int(source.n_features)
    multipliers = _class_multipliers(estimator.class_weight, found)
    weighted_counts = found.weight_per_class if multipliers is None else found.weight_per_class * multipliers
    if not weighted_counts.sum() > 0:
        raise ValueError("sample_weight must have a positive sum, got all weights zero (after class weights)")
    fit_intercept = bool(estimator.fit_intercept)
    warm = (
        estimator.warm_start
        and hasattr(estimator, "coef_")
        and estimator.coef_.shape == (n_classes, n_features)
        and np.array_equal(estimator.classes_, classes)
    )
    theta = np.zeros((n_features + int(fit_intercept), n_classes))
    if warm:
        theta[:n_features] = estimator.coef_.T
        if fit_intercept:
            theta[n_features] = estimator.intercept_
    elif fit_intercept:
        theta[n_features] = _loss.intercept_only(np.arange(n_classes), weighted_counts, n_classes)
    solver = estimator.solver
    if solver == "auto":
        solver = choose_solver(
            n_samples=found.n_rows,
            n_features=n_features,
            n_classes=n_classes,
            nnz=found.nnz,
            fit_intercept=fit_intercept,
        )
    sums = RowSums(
        source,
        classes,
        multipliers,
        weighted_counts.sum(),
        fit_intercept=fit_intercept,
        label_smoothing=estimator.label_smoothing,
        dtype=dtype,
    )
    if across is not None:
        if solver in STOCHASTIC_SOLVERS:
            raise ValueError(
                f"solver must be 'lbfgs' or 'newton-cg' for a data-parallel fit of sources, got {solver!r}"
            )
        sums = across.sums(sums)
    estimator.classes_ = classes
    estimator.n_features_in_ = n_features
    if hasattr(estimator, "feature_names_in_"):  # a source's column names are not a DataFrame's: predict takes arrays
        del estimator.feature_names_in_
    estimator.solver_ = solver
    estimator._stream_state = None
    unit = "pass" if solver in STOCHASTIC_SOLVERS else "iter"
    monitor = Monitor(
        None,
        None,
        None,
        n_classes=n_classes,
        n_features=n_features,
        fit_intercept=fit_intercept,
        label_smoothing=estimator.label_smoothing,
        tol=estimator.tol,
        n_iter_no_change=estimator.n_iter_no_change,
        dtype=dtype,
        progress={"total": estimator.max_iter, "desc": f"SoftmaxRegression[{solver}]", "unit": unit}
        if estimator.verbose
        else None,
    )
    x0 = theta.ravel()
    try:
        with limit_blas_threads(blas_threads(nnz=found.nnz, n_classes=n_classes)):
            if solver in STOCHASTIC_SOLVERS:
                rng = np.random.default_rng(check_random_state(estimator.random_state).randint(np.iinfo(np.int32).max))
                result = _stochastic_passes(estimator, sums, solver, x0, found.n_rows, rng, monitor)
            else:
                sample_bytes = getattr(source, "max_bytes", 1 << 26) if across is None else 0
                objective = streamed_objective(
                    sums, estimator.alpha, n_rows=found.n_rows, nnz=found.nnz, sample_bytes=sample_bytes
                )
                options = {"max_iter": estimator.max_iter, "tol": estimator.tol, "callback": monitor}
                result = run_full_batch(solver, objective, x0, **options)
    finally:
        monitor.close()
    x = result.x if across is None else across.final(result.x)
    estimator.coef_, estimator.intercept_ = coef_from_theta(
        x, n_classes=n_classes, n_features=n_features, fit_intercept=fit_intercept, dtype=dtype
    )
    estimator.n_iter_ = int(result.n_iter)
    estimator.loss_curve_ = list(result.loss_curve)
    for name in ("validation_scores_", "validation_loss_curve_", "best_validation_score_"):
        if hasattr(estimator, name):
            delattr(estimator, name)
    if not result.converged:
        warnings.warn(
            f"{type(estimator).__name__} (solver={solver!r}) did not converge in max_iter={estimator.max_iter} "
            f"{'passes' if solver in STOCHASTIC_SOLVERS else 'iterations'}; increase max_iter or tol, or "
            "standardise the features",
            ConvergenceWarning,
            stacklevel=3,
        )
    return estimator
