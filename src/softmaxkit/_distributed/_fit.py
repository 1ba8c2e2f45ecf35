"""The data-parallel :meth:`SoftmaxRegression.fit <softmaxkit.linear_model.SoftmaxRegression.fit>`, global facts computed globally.

The steps are the estimator's (the same private helpers); what differs is that every fact about
the data is a fact about the union of the ranks' rows:

* the classes (the union of the ranks' labels: a class may occur on one rank only);
* the sample weights' scale (their global maximum) and ``class_weight="balanced"``'s counts;
* the weight sum the objective is normalised by, and the intercept-only start;
* ``solver="auto"``'s problem size (global rows and stored entries);
* sgd's ``learning_rate="auto"`` (the curvature bound on the same rows a single process samples);
* the early-stopping scores (weighted sums over every rank's validation rows);
* the seed of the stochastic solvers (rank 0's, broadcast).

Validation happens on every rank before the first collective of the solver; a bad input on any
rank raises on every rank (:func:`._communicator.collectively`), so none waits for the others.
The final point is rank 0's, broadcast: every rank ends with the same model, bit for bit.

A checkpoint (:class:`~softmaxkit.linear_model.Checkpoint`) is written by rank 0 alone (the solver's
state is the same on every rank) and read by every rank on resume, so its path must be one that every
rank sees (one machine, or a shared file system); its fingerprint combines those of every rank's rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings

import numpy as np
import scipy.sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_random_state

from softmaxkit._distributed._communicator import Communicator, collectively
from softmaxkit._distributed._objective import Shard, global_curvature_bound, global_objective
from softmaxkit._validation import as_array
from softmaxkit.linear_model import _checkpoint, _loss, _solvers
from softmaxkit.linear_model._auto import choose_solver
from softmaxkit.linear_model._fitting import epoch_options, initial_theta
from softmaxkit.linear_model._inputs import (
    check_sample_weight,
    class_weights,
    combine_weights,
    encode_target,
    split_validation,
)
from softmaxkit.linear_model._monitor import Monitor
from softmaxkit.linear_model._objective import make_objective
from softmaxkit.linear_model._solvers import STOCHASTIC_SOLVERS
from softmaxkit.linear_model._source_fit import fit_source, is_source
from softmaxkit.linear_model._threads import blas_threads, limit_blas_threads

__all__ = ["fit_data_parallel"]


def _local_labels(y, n_samples):
    """``("labels", sorted unique labels)`` for 1-D ``y``, ``("proba", n_columns)`` for 2-D (checked by ``encode_target``)."""
    if y is None:
        return ("none", None)
    y = as_array(y, name="y", what="class labels (numbers, strings or booleans) or rows of class probabilities")
    if y.ndim == 2 and y.shape[1] != 1:
        return ("proba", int(y.shape[1]))
    return ("labels", np.unique(y.reshape(-1)) if y.shape[:1] == (n_samples,) else None)


def _global_classes(kinds, estimator_name):
    """The classes of the union of the ranks' targets (``None``: class probabilities, ``arange`` from ``encode_target``)."""
    kinds_seen = {kind for kind, _ in kinds}
    if kinds_seen == {"proba"}:
        columns = {value for _, value in kinds}
        if len(columns) != 1:
            raise ValueError(f"y must have the same number of columns on every rank, got {sorted(columns)}")
        return None
    if kinds_seen != {"labels"}:
        raise ValueError(
            f"y must be labels on every rank or class probabilities on every rank, got {sorted(kinds_seen)}"
        )
    labels = [value for _, value in kinds if value is not None]
    classes = np.unique(np.concatenate(labels)) if labels else np.array([])
    if len(classes) < 2:
        raise ValueError(f"y must contain at least two classes, got {len(classes)} class: {classes.tolist()}")
    return classes


def _global_sample_weights(comm, sw, class_weight, target, classes, dtype):
    """The weights :math:`s_i` of :func:`~softmaxkit.linear_model._inputs.sample_weights`, with the global rules.

    ``sw`` is the checked ``sample_weight`` (float64 or None, the same on every rank); its scale, the
    "balanced" counts and the final scale are global, so that the weights are those of one process
    on the concatenated rows.
    """
    n_classes = len(classes)
    if sw is not None:
        sw = sw / _positive_or_one(comm.max(np.array([sw.max(initial=0)]))[0])
    if class_weight == "balanced":
        counts = comm.sum(_loss.class_counts(target, sw, n_classes))
        with np.errstate(divide="ignore"):
            cw = counts.sum() / (n_classes * counts)
        cw[counts == 0] = 1.0
    else:
        cw = class_weights(class_weight, target, sw, n_classes, classes)
    s = combine_weights(target, sw, cw)
    if s is None:
        return None
    largest = comm.max(np.array([s.max(initial=0)]))[0]
    if not largest > 0:
        raise ValueError("sample_weight must have a positive sum, got all weights zero (after class weights)")
    return (s / largest).astype(dtype)


def _positive_or_one(value):
    return value if value > 0 else 1.0


class _GlobalMonitor(Monitor):
    """:class:`~softmaxkit.linear_model._monitor.Monitor` with the validation accuracy and loss of every rank's rows."""

    def __init__(self, comm, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._comm = comm

    def _scores(self, x):
        theta = np.asarray(x, dtype=self.dtype).reshape(self.shape)
        z = self.X_val @ theta[: self.n_features]
        if self.fit_intercept:
            z += theta[self.n_features]
        hard = self.t_val if self.t_val.ndim == 1 else np.argmax(self.t_val, axis=1)
        correct = (np.argmax(z, axis=1) == hard).astype(np.float64)
        w = np.ones(len(correct)) if self.s_val is None else self.s_val.astype(np.float64)
        options = {"fit_intercept": self.fit_intercept, "label_smoothing": float(self.label_smoothing)}
        plain_loss = _loss.loss(theta.T, self.X_val, self.t_val, None, 0.0, **options) * len(correct)
        weighted_loss = _loss.loss(theta.T, self.X_val, self.t_val, w, 0.0, **options) * w.sum() if w.sum() > 0 else 0.0
        sums = self._comm.sum([w @ correct, w.sum(), weighted_loss, correct.sum(), len(correct), plain_loss])
        if sums[1] > 0:
            return sums[0] / sums[1], sums[2] / sums[1]
        return sums[3] / sums[4], sums[5] / sums[4]

    def __call__(self, x, f) -> bool:
        if self.X_val is None:
            return super().__call__(x, f)
        score, loss = self._scores(x)
        self.scores.append(float(score))
        self.losses.append(float(loss))
        self.bad = 0 if score > self.best_score + self.tol else self.bad + 1
        if score > self.best_score or self.best_x is None:
            self.best_score, self.best_x = max(score, self.best_score), np.array(x, copy=True)
        if self.bar is not None:
            self.bar.update(1, {"loss": f"{f:.6g}", "val_acc": f"{score:.4f}"})
        return self.bad >= self.n_iter_no_change


def _rank_zero_checkpoint(checkpoint, comm):
    """``checkpoint`` written by rank 0 only, its fingerprint that of every rank's rows (in rank order)."""
    options = _checkpoint.as_checkpoint(checkpoint)
    write = options.writer or _checkpoint.write_checkpoint_file

    def writer(path, arrays, metadata):
        if comm.rank == 0:
            write(path, arrays, metadata)

    def combine(key):
        return hashlib.blake2b("/".join(comm.gather(key)).encode(), digest_size=32).hexdigest()

    return dataclasses.replace(options, writer=writer, combine=combine)


def fit_data_parallel(estimator, X, y, sample_weight, *, group=None, checkpoint=None):
    """Fit ``estimator`` (a :class:`~softmaxkit.linear_model.SoftmaxRegression`) on the rows of every rank of ``group``."""
    comm = Communicator(group)
    if is_source(X):  # each rank streams its own source
        from softmaxkit._distributed._source import AcrossRanks

        return fit_source(estimator, X, y, sample_weight, checkpoint=checkpoint, across=AcrossRanks(comm))
    est = estimator
    name = type(est).__name__

    def local_inputs():
        dtype = est._working_dtype()
        warm = est.warm_start and hasattr(est, "coef_")
        X_valid = est._validate_X(X, reset=not warm, dtype=dtype)
        return dtype, warm, X_valid, _local_labels(y, X_valid.shape[0]), sample_weight is not None

    dtype, warm, X_local, labels, has_weights = collectively(comm, local_inputs)
    n_local, n_features = X_local.shape
    facts = comm.gather((labels, n_features, has_weights))
    feature_counts = {count for _, count, _ in facts}
    if len(feature_counts) != 1:
        raise ValueError(f"X must have the same number of features on every rank, got {sorted(feature_counts)}")
    classes = est.classes_ if warm else collectively(comm, lambda: _global_classes([f[0] for f in facts], name))

    def local_targets():
        found, target, hard = encode_target(y, n_local, dtype, classes=classes, estimator_name=name)
        sw = check_sample_weight(sample_weight, n_local)
        if sw is None and any(has for _, _, has in facts):
            sw = np.ones(n_local)
        class_weights(None if est.class_weight == "balanced" else est.class_weight, target, sw, len(found), found)
        return found, target, hard, sw

    found, target, hard, sw = collectively(comm, local_targets)  # every check before the weights' collectives
    s = _global_sample_weights(comm, sw, est.class_weight, target, found, dtype)
    if warm and (len(found) != len(est.classes_) or n_features != est.coef_.shape[1]):
        warm = False
    est.classes_ = found
    n_classes = len(found)
    rng = check_random_state(est.random_state)

    X_val = t_val = s_val = None
    if est.early_stopping:
        X_local, X_val, target, t_val, s, s_val = collectively(
            comm, lambda: split_validation(X_local, target, hard, s, est.validation_fraction, rng)
        )
        n_local = X_local.shape[0]

    # the shard: offset in the global order (rank order), weight sums
    local_weight = float(n_local) if s is None else float(s.sum(dtype=np.float64))
    nnz_local = int(X_local.nnz) if scipy.sparse.issparse(X_local) else n_local * n_features
    sizes = comm.gather((n_local, local_weight, nnz_local))
    offset = sum(size for size, _, _ in sizes[: comm.rank])
    total_samples = sum(size for size, _, _ in sizes)
    total_weight = float(comm.sum(np.array([local_weight]))[0])
    if not total_weight > 0:
        raise ValueError("sample_weight must have a positive sum on the training split, got all weights zero")
    shard = Shard(offset, n_local, local_weight, total_samples, total_weight)

    solver = est.solver
    if solver == "auto":
        solver = choose_solver(
            n_samples=total_samples,
            n_features=n_features,
            n_classes=n_classes,
            nnz=sum(nnz for _, _, nnz in sizes),
            fit_intercept=bool(est.fit_intercept),
        )
    est.solver_ = solver
    est._stream_state = None

    # this rank's objective without the penalty; a rank whose rows weigh nothing contributes 0 (weights of 1
    # keep its local objective defined, its share S_r / S is 0)
    local_s = s if s is None or local_weight > 0 else np.ones_like(s)
    local = make_objective(
        est.backend,
        est.device,
        X_local,
        target,
        local_s,
        0.0,
        n_classes=n_classes,
        fit_intercept=bool(est.fit_intercept),
        label_smoothing=float(est.label_smoothing),
        dtype=dtype,
    )
    shape = (n_features + int(est.fit_intercept), n_classes)
    objective = global_objective(
        local, comm, shard, alpha=float(est.alpha), n_features=n_features, shape=shape, dtype=dtype
    )

    if warm:
        x0 = initial_theta(
            est.coef_,
            est.intercept_,
            n_classes=n_classes,
            n_features=n_features,
            fit_intercept=est.fit_intercept,
            target=None,
            sample_weight=None,
        )
    else:
        x0 = np.zeros(shape)
        if est.fit_intercept:
            counts = comm.sum(_loss.class_counts(target, s, n_classes))
            # the intercept-only optimum of the global class counts (each class once, weighted by its count)
            x0[n_features] = _loss.intercept_only(np.arange(n_classes), counts, n_classes)
        x0 = x0.ravel()

    unit = "epoch" if solver in STOCHASTIC_SOLVERS else "iter"
    progress = None
    if est.verbose and comm.rank == 0:
        progress = {
            "total": est.max_iter,
            "desc": f"SoftmaxRegression[{solver}, {comm.world_size} ranks]",
            "unit": unit,
        }
    monitor = _GlobalMonitor(
        comm,
        X_val,
        t_val,
        s_val,
        n_classes=n_classes,
        n_features=n_features,
        fit_intercept=est.fit_intercept,
        label_smoothing=est.label_smoothing,
        tol=est.tol,
        n_iter_no_change=est.n_iter_no_change,
        dtype=dtype,
        progress=progress,
    )
    seed = comm.broadcast(int(rng.randint(np.iinfo(np.int32).max)))
    try:
        run = None
        if checkpoint is not None:
            options = _rank_zero_checkpoint(checkpoint, comm)
            run = collectively(
                comm,
                lambda: _checkpoint.open_checkpoint(
                    options, est, solver, dtype, x0, monitor, data=(X_local, target, s)
                ),
            )
        with limit_blas_threads(blas_threads(nnz=nnz_local, n_classes=n_classes)):
            result = _run_solver(est, solver, objective, x0, X_local, comm, shard, warm, seed, monitor, run)
    finally:
        monitor.close()
    x = monitor.best_x if monitor.best_x is not None else result.x
    x = comm.broadcast(np.asarray(x, dtype=np.float64))  # every rank ends with rank 0's model, bit for bit
    est._set_coef(x, n_classes, n_features, dtype)
    est.n_iter_ = int(result.n_iter)
    est.loss_curve_ = list(result.loss_curve)
    if est.early_stopping:
        est.validation_scores_ = monitor.scores
        est.validation_loss_curve_ = monitor.losses
        est.best_validation_score_ = monitor.best_score
    else:
        for attribute in ("validation_scores_", "validation_loss_curve_", "best_validation_score_"):
            if hasattr(est, attribute):
                delattr(est, attribute)
    if not result.converged:
        warnings.warn(
            f"{name} (solver={solver!r}) did not converge in max_iter={est.max_iter} "
            f"{'epochs' if solver in STOCHASTIC_SOLVERS else 'iterations'}; increase max_iter or tol, or "
            "standardise the features",
            ConvergenceWarning,
            stacklevel=3,
        )
    return est


def _run_solver(est, solver, objective, x0, X_local, comm, shard, warm, seed, monitor, run):
    options = {"max_iter": est.max_iter, "tol": est.tol, "callback": monitor}
    if run is not None and solver not in STOCHASTIC_SOLVERS:
        return run.run_full_batch(solver, objective, x0, **options)
    if solver == "lbfgs":
        return _solvers.minimize_lbfgs(objective.loss_gradient, x0, **options)
    if solver == "newton-cg":
        return _solvers.minimize_newton_cg(objective.loss_gradient_hessp, x0, **options)
    if not (warm and getattr(est, "_stochastic_state", None) is not None):
        rate = est.learning_rate
        if rate == "auto":
            rate = (
                1e-2
                if solver == "adam"
                else 1.0
                / (global_curvature_bound(X_local, comm, shard, est.alpha, fit_intercept=est.fit_intercept) + 1e-12)
            )
        est._stochastic_state = _solvers.StochasticState(method=solver, learning_rate=float(rate))
    state = est._stochastic_state
    rate = state.learning_rate if est.learning_rate == "auto" else float(est.learning_rate)
    return _solvers.minimize_stochastic(
        objective.batch_loss_gradient,
        x0,
        shard.total_samples,
        state,
        n_iter_no_change=est.n_iter_no_change,
        rng=np.random.default_rng(seed),
        checkpoint=run,
        **options,
        **epoch_options(est.batch_size, shard.total_samples, rate, est.learning_rate_schedule, est.momentum),
    )
