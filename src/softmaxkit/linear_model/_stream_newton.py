r"""Incremental Newton for :meth:`partial_fit <softmaxkit.linear_model.SoftmaxRegression.partial_fit>`:
the default stream method when the model is small enough for its Hessian.

The stream's objective after the samples :math:`i` seen so far (each with its count :math:`c_i`, the
times it came, and its weight :math:`s_i`; :math:`S = \sum_i c_i s_i`) is the weighted mean
cross-entropy plus the penalty, as :meth:`fit`'s on those samples,

.. math::

    L(\theta) = \frac{1}{S} \sum_i c_i s_i \, \ell_i(\theta) + \frac{\alpha}{2} \lVert W \rVert_F^2 .

Each sample is remembered by the point :math:`\theta_i` where it was last seen, and the method keeps
the sum of the second-order models of the :math:`\ell_i` at their points,

.. math::

    A = \sum_i c_i s_i H_i , \qquad r = \sum_i c_i s_i \, (H_i \theta_i - g_i) ,

with :math:`g_i, H_i` the gradient and Hessian of :math:`\ell_i` at :math:`\theta_i`. A step takes a
mini-batch, replaces the models of its samples (the old ones, if a sample came before, are taken
out of :math:`A` and :math:`r`; the new ones, at the current :math:`\theta`, put in) and moves to the
minimiser of the summed model,

.. math::

    \theta \leftarrow \left(\frac{A}{S} + \alpha P\right)^{-1} \frac{r}{S} ,

:math:`P` the identity on the weights (the intercepts are not penalised). When every point
:math:`\theta_i` equals :math:`\theta`, the step is Newton's on :math:`L` itself, and :math:`\theta`
is then a fixed point exactly when it is :meth:`fit`'s optimum (any positive definite :math:`H_i`
would do for that; the true Hessians make it fast). So a stream that repeats a finite set (passes
over a data set) converges to that optimum, the incremental Newton method of Rodomanov and Kropotov
(2016) with a stream's counts: measured (``benchmarks/bench_stream.py``, shuffled 256-row calls) below
1e-7 of relative gap after 10 passes on letter, pendigits, satimage and covtype, where averaged SGD is
at 1e-2. A sample that never comes back keeps the model of the point where it was seen, as in an online
Newton method. Newton's steps do not depend on the features' scales.

Two safeguards make it a stable iteration, since a sample's model is refreshed only when the sample
comes back:

* the curvature of a sample's model is that of its probabilities floored at a per-sample floor
  (renormalised), 0 until the sample's loss rises by more than :data:`FLOOR_RISE` between two of
  its visits. A sample fitted to :math:`p \approx 1` has a flat model, and the coordinates it alone
  determines (covtype's soil type of one row) would otherwise drift until it is misfitted, be
  fitted again at its next visit, and so on, a cycle;
* a step changes no logit of its own batch by more than :data:`MAX_LOGIT_CHANGE` (the step is
  scaled down), a trust region in the units the quadratic models are good in.

Neither changes the fixed point.

What it costs: a sample's memory is its :math:`C` logits at :math:`\theta_i` (its gradient and
Hessian follow from them and from the sample itself, which brings them back), kept for at most
:data:`ROW_MEMORY_BYTES`. A mini-batch with samples beyond it turns the stream into averaged SGD from the
current model, for good (:func:`._streams.stream_steps`): models of samples that could not be replaced
would stay in the sums from every visit, stale ones too (kept in, they left passes over a set six times the
memory at a gap of 1.4e-2 after 10 passes, where averaged SGD reaches 2.3e-3). A sample is recognised by a
128-bit hash of its features, target and weight. :math:`A` has :math:`K^2` entries for :math:`K` = (features +
intercept) x classes, and a step costs about :math:`2 |B| K^2 + K^3/3` operations, so the method is
used while :math:`K \le` :data:`MAX_PARAMETERS` (:func:`affordable`); larger models stream by L-BFGS on
remembered rows (:mod:`._stream_replay`) or averaged SGD (:mod:`._streaming`), as :mod:`._streams` chooses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse

from softmaxkit._numpy._softmax import log_softmax, softmax

__all__ = [
    "FLOOR_MAX",
    "FLOOR_RISE",
    "FLOOR_START",
    "MAX_LOGIT_CHANGE",
    "MAX_PARAMETERS",
    "ROW_MEMORY_BYTES",
    "WARM_START_ROWS",
    "NewtonStream",
    "RowMemory",
    "affordable",
    "current_theta",
    "forget_samples",
    "new_newton_stream",
    "remembered_steps",
]

# K = (n_features + fit_intercept) * n_classes at most: a step's 2 |B| K^2 + K^3 / 3 operations. Measured (one
# thread, 256-row steps, at load 8): K = 170 (pendigits) 94,000 rows/s, 442 (letter) 32,000, 910
# (make_classification, 90 features, 10 classes) 7,900 rows/s; averaged SGD streams several hundred thousand rows/s
# but takes thousands of passes to the gap the Newton reaches in ten.
MAX_PARAMETERS = 1024

# The memory for the samples' logits and keys. At 10 classes 200 bytes a sample: 1.3 million samples.
ROW_MEMORY_BYTES = 256 * 2**20

# A sample's curvature floor: 0 until its loss rises by more than FLOOR_RISE (nats) between two visits (its
# model was wrong: it was fitted, p ~ 1, at a point the stream has since left), then FLOOR_START, and ten times
# more at each further rise, up to FLOOR_MAX. Measured (benchmarks/bench_stream.py's protocol, relative gap after
# 10 / 30 passes): standardised covtype 1.2e-9 / 1.3e-11 (without floors the iteration cycles at 2.5e-3 / 4.2e-4:
# a soil type of one row is fitted, its model flat, its weight decays, it is misfitted again), covtype with raw
# features (scales 0.01-100, offsets to 50) 9.6e-7 / 6.8e-9, raw pendigits 1.1e-6 / 1.5e-9, letter, satimage,
# digits and make_classification shapes unchanged (no sample rises). One floor for every sample instead: 1e-5 cost
# raw pendigits 9.4e-3 / 1.1e-3 (confident samples' curvature overstated), 3e-5 and 1e-6 let raw covtype diverge
# (0.19, 8.8 after 30 passes); rises of 0.5 or 1 nat with a start of 1e-6 left standardised covtype at 3.3e-2.
FLOOR_RISE = 2.0
FLOOR_START = 1e-5
FLOOR_MAX = 1e-2

# Measured (as above, with the floors): raw covtype 9.6e-7 / 6.8e-9 with 4, 3.7e-5 / 3.6e-5 without a limit;
# standardised covtype 1.2e-9 / 1.3e-11, without 1.8e-6 / 1.5e-11; under one floor of 3e-5 for every sample,
# raw covtype diverged without a limit (0.29 / 0.19) and converged with it (1.2e-5 / 2.8e-6).
MAX_LOGIT_CHANGE = 4.0

# A stream that starts from a fitted (or loaded) model counts that model as this many samples whose
# models are the first mini-batch's at the fitted point, so that one batch cannot pull it away
# (averaged SGD's WARM_START_STEPS of 256 rows).
WARM_START_ROWS = 25_600

# Bytes per remembered sample besides its logits: its count and floor (16), the key (a 16-byte bytes object,
# 49 bytes), its dict entry and the arrays' growth. Measured with tracemalloc: 167 bytes a sample at 3 classes
# (59,000 samples; tests/test_stream_newton.py bounds it).
_ROW_OVERHEAD_BYTES = 150

# A step sums its batch's models in chunks of at most this many numbers of dense rows x parameters (32 MiB), so
# that a large or sparse call allocates a bounded amount.
_CHUNK_NUMBERS = 2**22


def affordable(*, n_features: int, n_classes: int, fit_intercept: bool) -> bool:
    """Whether the incremental Newton's Hessian is small enough: :math:`K \\le` :data:`MAX_PARAMETERS`.

    >>> affordable(n_features=16, n_classes=26, fit_intercept=True), affordable(n_features=500, n_classes=10, fit_intercept=True)
    (True, False)
    """
    return (n_features + int(fit_intercept)) * n_classes <= MAX_PARAMETERS


@dataclass
class RowMemory:
    """The logits and counts of the samples seen, by key, for at most ``max_rows`` samples."""

    n_classes: int
    max_rows: int
    slots: dict = field(default_factory=dict)
    logits: np.ndarray = None
    counts: np.ndarray = None
    floors: np.ndarray = None

    def __post_init__(self):
        capacity = min(self.max_rows, 1024)
        self.logits = np.zeros((capacity, self.n_classes))
        self.counts = np.zeros(capacity)
        self.floors = np.zeros(capacity)

    def find(self, keys: list[bytes]) -> np.ndarray:
        """The slot of each key, new ones given a slot while there is room, -1 for a sample not remembered."""
        slots = np.empty(len(keys), dtype=np.intp)
        for j, key in enumerate(keys):
            slot = self.slots.get(key)
            if slot is None and len(self.slots) < self.max_rows:
                slot = self.slots[key] = len(self.slots)
            slots[j] = -1 if slot is None else slot
        needed = len(self.slots)
        if needed > len(self.counts):
            capacity = min(self.max_rows, max(needed, 2 * len(self.counts)))
            self.logits = np.concatenate([self.logits, np.zeros((capacity - len(self.counts), self.n_classes))])
            self.floors = np.concatenate([self.floors, np.zeros(capacity - len(self.counts))])
            self.counts = np.concatenate([self.counts, np.zeros(capacity - len(self.counts))])
        return slots


@dataclass
class NewtonStream:
    """What the incremental Newton carries between :meth:`partial_fit` calls (see the module docstring)."""

    theta: np.ndarray  # (n_features + fit_intercept, n_classes), float64
    hessian: np.ndarray  # A, (K, K)
    rhs: np.ndarray  # r, (K,)
    memory: RowMemory
    alpha: float
    fit_intercept: bool
    settings: dict | None = None  # fit_intercept, class_weight, label_smoothing: fixed while the stream goes on
    fallback: object = None  # the averaged SGD (._streaming.StreamState) the stream became when its memory filled
    total_weight: float = 0.0  # S
    warm: bool = False  # the prior of a fitted start is still to be put in
    step: int = 0
    samples_seen: int = 0


def new_newton_stream(x0, *, n_features: int, n_classes: int, alpha: float, fit_intercept: bool, warm: bool):
    """The state before the first step, from the flat start ``x0`` (a fitted model when ``warm``)."""
    theta = np.asarray(x0, dtype=np.float64).reshape(n_features + int(fit_intercept), n_classes).copy()
    size = theta.size
    max_rows = max(1, ROW_MEMORY_BYTES // (8 * n_classes + _ROW_OVERHEAD_BYTES))
    return NewtonStream(
        theta=theta,
        hessian=np.zeros((size, size)),
        rhs=np.zeros(size),
        memory=RowMemory(n_classes, max_rows),
        alpha=float(alpha),
        fit_intercept=bool(fit_intercept),
        warm=warm,
    )


def remembered_steps(
    state: NewtonStream, X, target, sample_weight, *, alpha: float, batch_size: int, label_smoothing: float
) -> tuple[float, int]:
    """Steps on consecutive ``batch_size`` rows of ``X`` (the stream's order): ``(sum of each batch's objective,
    before its step, times its rows, rows done)``; it stops before the first batch whose samples do not all fit
    the memory.

    ``target`` holds class indices or rows of probabilities, ``sample_weight`` is None or one weight per
    row; ``alpha`` is the estimator's current penalty (the sums hold none of it). ``state`` is updated in
    place, one step at a time: a step that fails (a ``ValueError`` or ``FloatingPointError``, or a full memory)
    leaves it as it was.
    """
    state.alpha = float(alpha)
    n_samples = X.shape[0]
    total = 0.0
    for start in range(0, n_samples, batch_size):
        stop = min(start + batch_size, n_samples)
        weights = None if sample_weight is None else np.asarray(sample_weight[start:stop], dtype=np.float64)
        batch = (X[start:stop], target[start:stop], weights)
        try:
            total += _step(state, *batch, label_smoothing=label_smoothing) * (stop - start)
        except _MemoryFull:
            return total, start
    return total, n_samples


def current_theta(state: NewtonStream) -> np.ndarray:
    """The model, flat."""
    return state.theta.ravel()


def forget_samples(state: NewtonStream) -> None:
    """The memory and the sums freed (the stream has gone on as averaged SGD)."""
    state.memory = RowMemory(state.theta.shape[1], 0)
    state.hessian, state.rhs = np.zeros((0, 0)), np.zeros(0)


class _MemoryFull(Exception):
    """A batch has samples the memory has no room for."""


@dataclass
class _Sums:
    """Working copies of ``A`` and ``r`` for one step (the state takes them only if the step succeeds)."""

    hessian: np.ndarray
    rhs: np.ndarray


def _step(state: NewtonStream, X, target, weights, *, label_smoothing: float) -> float:
    """One step on the batch ``X, target, weights``; its objective before the step.

    The batch's models are summed in chunks of at most :data:`_CHUNK_NUMBERS` numbers of dense rows, so a
    large call (``batch_size="auto"``) or a sparse one allocates a bounded amount. The sums are copies and
    the memory's changes are logged, so that a failed solve leaves the state as it was.
    """
    n_rows, width = X.shape[0], state.theta.shape[0]
    weights = np.ones(n_rows) if weights is None else weights
    W = state.theta[: width - int(state.fit_intercept)]
    penalty = 0.5 * state.alpha * float(np.vdot(W, W))
    sums = _Sums(state.hessian.copy(), state.rhs.copy())
    undo, added = [], []  # the memory's changes and its new keys, to undo
    losses = new_weight = prior_weight = 0.0
    chunk = max(1, _CHUNK_NUMBERS // state.theta.size)
    try:
        for start in range(0, n_rows, chunk):
            stop = min(start + chunk, n_rows)
            rows = _with_intercept(X[start:stop], state.fit_intercept)
            targets = _target_rows(target[start:stop], state.theta.shape[1], label_smoothing)
            chunk_weights = weights[start:stop]
            mass = targets.sum(axis=1)  # the cross-entropy of a target of mass m is m times that of target / m
            keep = (chunk_weights > 0) & (mass > 0)
            logits = rows @ state.theta
            rows, targets, logits = rows[keep], targets[keep], logits[keep]
            with np.errstate(over="ignore"):  # an infinite sum is refused below
                losses += float(chunk_weights[keep] @ _losses(logits, targets))
                chunk_weights = chunk_weights[keep] * mass[keep]
                new_weight += float(chunk_weights.sum())
            targets = targets / mass[keep, None]
            if state.warm and not prior_weight and len(rows):  # the fitted start as a prior (WARM_START_ROWS)
                prior_weight = _add_prior(state, sums, rows, logits, (WARM_START_ROWS / len(rows)) * chunk_weights)
            if not np.isfinite(state.total_weight + prior_weight + new_weight):
                raise ValueError(f"sample_weight must have a finite sum over the stream, got {new_weight}")
            keys, known = _keys(rows, targets, chunk_weights), len(state.memory.slots)
            slots = state.memory.find(keys)
            added.extend(key for key, slot in zip(keys, slots) if slot >= known)
            if np.any(slots < 0):
                raise _MemoryFull
            undo.append(_replace_models(state.memory, sums, slots, rows, logits, targets, chunk_weights))
        total_weight = state.total_weight + prior_weight + new_weight
        if total_weight > 0:
            move = _model_minimiser(sums, total_weight, state) - state.theta
            change = float(np.abs(X @ move[: X.shape[1]] + (move[-1] if state.fit_intercept else 0.0)).max())
            if change > MAX_LOGIT_CHANGE:
                move *= MAX_LOGIT_CHANGE / change
    except (ValueError, FloatingPointError, _MemoryFull):
        for slots, logits, counts, floors in reversed(undo):
            state.memory.logits[slots], state.memory.counts[slots], state.memory.floors[slots] = logits, counts, floors
        for key in added:
            del state.memory.slots[key]
        raise
    total = float(weights.sum())
    objective = (losses / total if total > 0 else 0.0) + penalty
    state.hessian, state.rhs, state.total_weight = sums.hessian, sums.rhs, total_weight
    state.warm = state.warm and not prior_weight
    state.step += 1
    state.samples_seen += int(np.count_nonzero(weights > 0))
    if total_weight > 0:
        state.theta = state.theta + move
    return objective


def _add_prior(state: NewtonStream, sums: _Sums, rows, logits, weights) -> float:
    r"""The fitted start :math:`\theta_0` as a prior: the batch's models at :math:`\theta_0` with the gradient
    that makes :math:`\theta_0` the minimiser, :math:`-\alpha P \theta_0` (a fitted optimum's data gradient).
    Returns the prior's weight."""
    _add_models(sums, rows, softmax(logits, axis=1), logits, None, weights, gradient=False)
    penalty_gradient = state.alpha * state.theta.copy()
    if state.fit_intercept:
        penalty_gradient[-1] = 0.0
    total = float(weights.sum())
    sums.rhs += total * penalty_gradient.ravel()
    return total


def _replace_models(memory: RowMemory, sums: _Sums, slots, rows, logits, targets, weights):
    """The remembered samples' old models (if they came before) out of the sums, their new ones in.

    A sample twice in the batch is one sample whose count grows by two: its old model goes out once.
    Returns ``(slots, logits, counts, floors)`` as they were, to undo the memory's change.
    """
    slots, first, times = np.unique(slots, return_index=True, return_counts=True)
    rows, logits, targets, weights = rows[first], logits[first], targets[first], weights[first]
    counts = memory.counts[slots]
    floors = memory.floors[slots]
    undo = (slots, memory.logits[slots], counts, floors)
    seen = counts > 0
    new_floors = floors.copy()
    if seen.any():
        old = memory.logits[slots[seen]]
        old_weights = -(counts * weights)[seen]
        _add_models(sums, rows[seen], softmax(old, axis=1), old, targets[seen], old_weights, floor=floors[seen])
        rise = _losses(logits[seen], targets[seen]) - _losses(old, targets[seen])
        raised = np.clip(10 * floors[seen], FLOOR_START, FLOOR_MAX)
        new_floors[seen] = np.where(rise > FLOOR_RISE, raised, floors[seen] / 2)
    _add_models(sums, rows, softmax(logits, axis=1), logits, targets, (counts + times) * weights, floor=new_floors)
    memory.logits[slots] = logits
    memory.counts[slots] = counts + times
    memory.floors[slots] = new_floors
    return undo


def _losses(logits, targets):
    """Each row's cross-entropy ``-sum_c y_c log p_c`` (0 where ``y_c = 0``)."""
    return -np.einsum("ij,ij->i", targets, np.where(targets > 0, log_softmax(logits, axis=1), 0.0))


def _add_models(sums: _Sums, rows, proba, logits, targets, weights, *, gradient: bool = True, floor=0.0) -> None:
    r"""``A += sum_i w_i H_i`` and ``r += sum_i w_i (H_i theta_i - g_i)`` for the batch's models.

    The Hessian of a sample is :math:`\tilde x \tilde x^T \otimes (\operatorname{diag} p - p p^T)`,
    in the layout of ``theta`` (features outer, classes inner), and :math:`H_i \theta_i = \tilde x
    \otimes (\operatorname{diag} p - p p^T) z`, :math:`z = \theta_i^T \tilde x` the logits; :math:`g_i
    = \tilde x \otimes (p - y)`. The curvature's :math:`p` is floored at ``floor`` (per row or one for
    all; renormalised). ``gradient=False`` leaves :math:`g_i` out (the prior of a fitted start).
    """
    n_rows, width = rows.shape
    curv = np.maximum(proba, np.reshape(floor, (-1, 1)) if np.ndim(floor) else floor)
    curv /= curv.sum(axis=1, keepdims=True)
    n_classes = proba.shape[1]
    blocks = sums.hessian.reshape(width, n_classes, width, n_classes)
    for k in range(n_classes):
        blocks[:, k, :, k] += (rows * (weights * curv[:, k])[:, None]).T @ rows
    outer = (rows[:, :, None] * curv[:, None, :]).reshape(n_rows, width * n_classes)
    sums.hessian -= (outer * weights[:, None]).T @ outer
    curvature_times_logits = curv * logits - curv * (curv * logits).sum(axis=1, keepdims=True)
    residual = curvature_times_logits - (proba - targets if gradient else 0.0)
    sums.rhs += (rows.T @ (residual * weights[:, None])).ravel()


def _model_minimiser(sums: _Sums, total_weight: float, state: NewtonStream) -> np.ndarray:
    r"""``(A / S + alpha P)^{-1} r / S``, with the class-mean of each row of ``theta`` pinned to 0.

    The loss does not change when a constant is added to a row of ``theta`` across the classes, so
    :math:`A` is singular along those directions; the terms :math:`\delta_j \tfrac1C 1 1^T` on the
    diagonal blocks (:math:`\delta_j` the mean diagonal of feature :math:`j`'s block, so that the term has
    that feature's scale) make it definite and change no loss, since :math:`r` has no part there. A ridge
    grows only if the factorisation still fails (``alpha = 0`` and a feature no sample has used).
    """
    width, n_classes = state.theta.shape
    matrix = sums.hessian / total_weight
    n_weights = (width - int(state.fit_intercept)) * n_classes
    diagonal = np.arange(len(matrix))
    matrix[diagonal[:n_weights], diagonal[:n_weights]] += state.alpha
    scales = matrix[diagonal, diagonal].reshape(width, n_classes).mean(axis=1)
    scales = np.maximum(scales, max(1e-12 * float(scales.max(initial=0.0)), 1e-300))
    blocks = matrix.reshape(width, n_classes, width, n_classes)
    for j in range(width):
        blocks[j, :, j, :] += scales[j] / n_classes
    rhs = sums.rhs / total_weight
    ridge = 0.0
    for _ in range(30):
        try:
            factor = scipy.linalg.cho_factor(matrix, lower=True, check_finite=False)
            solution = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
        except np.linalg.LinAlgError:
            ridge = max(10 * ridge, 1e-12 * float(scales.max()))
            matrix[diagonal, diagonal] += ridge
            continue
        if np.all(np.isfinite(solution)):
            return solution.reshape(width, n_classes)
        break
    raise FloatingPointError("partial_fit's Newton model has no finite minimiser; check the data for extreme values")


def _with_intercept(X, fit_intercept: bool) -> np.ndarray:
    """The batch as dense float64 rows, with a column of ones for the intercept."""
    rows = X.toarray() if scipy.sparse.issparse(X) else X
    rows = np.asarray(rows, dtype=np.float64)
    if fit_intercept:
        rows = np.hstack([rows, np.ones((rows.shape[0], 1))])
    return rows


def _target_rows(target, n_classes: int, label_smoothing: float) -> np.ndarray:
    """Class indices or probability rows as float64 probability rows, label smoothing applied."""
    if target.ndim == 1:
        rows = np.zeros((len(target), n_classes))
        rows[np.arange(len(target)), target] = 1.0
    else:
        rows = np.asarray(target, dtype=np.float64)
    if label_smoothing:
        rows = (1.0 - label_smoothing) * rows + label_smoothing / n_classes * rows.sum(axis=1, keepdims=True)
    return rows


def _keys(rows: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> list[bytes]:
    """A 128-bit hash of each sample's features, target and weight: what recognises it when it comes back."""
    record = np.hstack([rows, targets, weights[:, None]]) + 0.0  # + 0.0: -0.0 and 0.0 are one value
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in record]
