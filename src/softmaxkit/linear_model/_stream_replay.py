r"""Remembered rows and L-BFGS for :meth:`partial_fit <softmaxkit.linear_model.SoftmaxRegression.partial_fit>`:
the default stream method for models too large for the incremental Newton's Hessian (:mod:`._stream_newton`),
such as sparse text with tens of thousands of features.

The stream's objective is the incremental Newton's (see :mod:`._stream_newton`): :meth:`fit`'s on the
samples seen so far, each counted as often as it came,

.. math::

    L(\theta) = \frac{1}{S} \sum_i c_i s_i \, \ell_i(\theta) + \frac{\alpha}{2} \lVert W \rVert_F^2 .

Here each sample is remembered whole (its row, target and weight, recognised by a 128-bit hash when it
comes back, which raises its count :math:`c_i`), and the stream runs L-BFGS (:mod:`._lbfgs`, the solver of
:meth:`fit`) on :math:`L` over the remembered samples: an iteration each time :math:`M /`
:data:`STEPS_PER_MEMORY` rows have come since the last one, :math:`M` the samples remembered, at most
:data:`MAX_STEPS_PER_BATCH` per mini-batch. The curvature pairs are kept from step to step; the objective
changes between steps (new samples, counts), so each step first evaluates it again at the current point,
and an iteration is two evaluations or so. An evaluation costs a pass over the :math:`M` samples, so the
work per row that comes is about ``2 * STEPS_PER_MEMORY`` rows' evaluations, whatever the stream's length.

Passes over a data set that fits the memory are then L-BFGS on :meth:`fit`'s objective, with
``STEPS_PER_MEMORY`` iterations a pass (when each call has at most a quarter of the set; larger calls get
``MAX_STEPS_PER_BATCH`` each), and converge to :meth:`fit`'s optimum. The counts of a pass differ by at most
one, a difference that fades as passes go on; since the iterations run within passes, the gap left falls
about as the square of the passes (measured on 400 samples: 1.7e-6 after 10 passes, 5.3e-7 after 20, 1.4e-7
after 40), where the incremental Newton, which moves to the minimiser of its model, reaches 1e-9. A stream
that never repeats is, at each step, L-BFGS on the empirical objective of what it has seen.

The memory: the samples' rows (in the first call's format, dense or sparse; a sparse row costs its stored
entries three times over, for the copies an evaluation and a consolidation make), targets and weights, the
hash table, an evaluation's logits, and the L-BFGS state (:data:`LBFGS_PAIRS` pairs and a few vectors of the
model's size), within :data:`MEMORY_BYTES`. The method is used when the L-BFGS state alone fits
(:func:`affordable`). A call whose new samples would not fit turns the stream into averaged SGD
(:mod:`._streaming`) from the current model, for good (:func:`._streams.stream_steps`): from then on the
stream converges only as averaged SGD does, but it does not leave the remembered samples overweighted. A
stream that starts from a fitted model counts it as a prior worth :data:`._stream_newton.WARM_START_ROWS`
samples: the first mini-batch's rows once more, as the memory's first rows, with their loss tilted so that
its minimiser, with the penalty, is the fitted model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from softmaxkit.linear_model import _lbfgs, _loss
from softmaxkit.linear_model._stream_newton import WARM_START_ROWS

__all__ = [
    "LBFGS_PAIRS",
    "MAX_STEPS_PER_BATCH",
    "MEMORY_BYTES",
    "STEPS_PER_MEMORY",
    "ReplayStream",
    "affordable",
    "current_theta",
    "forget_samples",
    "new_replay_stream",
    "remembered_steps",
]

# The memory for the remembered samples and the L-BFGS state (the incremental Newton's ROW_MEMORY_BYTES).
MEMORY_BYTES = 256 * 2**20

# Curvature pairs kept. Measured (news20, 11,951 x 62,061, alpha 1e-4, full-batch L-BFGS): iterations to a
# relative gap of 1e-2 / 1e-3: 77 / 118 with 10 pairs, 91 / 141 with 5, 102 / 147 with 3. Five pairs of news20's
# 1.24 million parameters are 99 MB.
LBFGS_PAIRS = 5

# Iterations per memory's worth of rows that come (passes: iterations per pass). See the module docstring.
STEPS_PER_MEMORY = 16

# At most this many iterations for one mini-batch: a call of the whole data set (batch_size="auto") gets
# several, a first mini-batch cannot be fitted far beyond what it says.
MAX_STEPS_PER_BATCH = 4

# Bytes per remembered sample besides its row, its target and an evaluation's logits: its weight and count, the
# key (a 16-byte bytes object, 49) and its dict entry and slot, the row pointer, the evaluation's weights. Measured
# with tracemalloc: the peak of a stream that fills its memory is 0.5-1.0 of the budget with sparse and dense rows,
# 3 to 50 classes (tests/test_stream_replay.py bounds it).
_ROW_OVERHEAD_BYTES = 300


def _fixed_bytes(n_parameters: int) -> int:
    """The L-BFGS state's bytes: the pairs, and the point, gradient, direction and a line search's trial points."""
    return (2 * LBFGS_PAIRS + 8) * n_parameters * 8


def affordable(*, n_features: int, n_classes: int, fit_intercept: bool) -> bool:
    """Whether the L-BFGS state of the model fits three quarters of :data:`MEMORY_BYTES` (a quarter at least is
    left for the samples: 64 MiB, news20's 11,951 rows take 37 MB).

    >>> affordable(n_features=62_061, n_classes=20, fit_intercept=True)
    True
    >>> affordable(n_features=1_000_000, n_classes=100, fit_intercept=True)
    False
    """
    return 4 * _fixed_bytes((n_features + int(fit_intercept)) * n_classes) <= 3 * MEMORY_BYTES


@dataclass
class ReplayStream:
    """What the remembered-rows stream carries between :meth:`partial_fit` calls (see the module docstring)."""

    theta: np.ndarray  # flat, float64
    n_features: int
    n_classes: int
    fit_intercept: bool
    alpha: float
    warm: bool = False  # the prior of a fitted start is still to be made
    sparse: bool | None = None  # the rows' format, the first call's: later calls are brought to it
    slots: dict = field(default_factory=dict)  # a sample's key -> its row in the memory
    n_rows: int = 0  # rows in the memory: the prior's (first), then one per sample
    rows: object = None  # the remembered rows, consolidated (dense or CSR)
    target: np.ndarray | None = None
    pending: list = field(default_factory=list)  # (rows, target) of samples not yet consolidated
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stored_bytes: int = 0
    total_weight: float = 0.0  # S, the sum of counts times weights
    prior_linear: np.ndarray | None = None  # the prior's tilt, sum_j w_j (g_j(theta0) + alpha P theta0)
    lbfgs: _lbfgs.LbfgsState | None = None
    since_step: int = 0
    step: int = 0
    samples_seen: int = 0
    settings: dict | None = None  # fit_intercept, class_weight, label_smoothing: fixed while the stream goes on
    fallback: object = None  # the averaged SGD (._streaming.StreamState) the stream became when its memory filled


def new_replay_stream(x0, *, n_features: int, n_classes: int, alpha: float, fit_intercept: bool, warm: bool):
    """The state before the first step, from the flat start ``x0`` (a fitted model when ``warm``)."""
    theta = np.asarray(x0, dtype=np.float64).ravel().copy()
    options = {"n_features": n_features, "n_classes": n_classes, "fit_intercept": bool(fit_intercept)}
    return ReplayStream(theta=theta, alpha=float(alpha), warm=warm, **options)


def remembered_steps(
    state: ReplayStream, X, target, sample_weight, *, alpha: float, batch_size: int, label_smoothing: float
) -> tuple[float, int]:
    """Steps on consecutive ``batch_size`` rows of ``X``: ``(sum of each batch's objective, before its step, times its
    rows, rows done)``; no row is done when the call's new samples would not fit the memory.

    ``target`` holds class indices or rows of probabilities, ``sample_weight`` None or one weight per row
    on one scale for the whole stream. Refused before the stream changes: an infinite weight sum, and rows
    whose squared norm overflows (no step could change the model on them).
    """
    weights = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    with np.errstate(over="ignore"):  # an infinite sum is refused here, before the stream changes
        added = float(weights.sum())
        norms = _squared_norms(X)
    if not np.isfinite(state.total_weight + added):
        raise ValueError(f"sample_weight must have a finite sum over the stream, got {added}")
    if not np.all(np.isfinite(norms)):
        raise ValueError("X must have rows whose squared norm is finite, got a row of norm inf; scale the features")
    state.alpha = float(alpha)
    state.sparse = scipy.sparse.issparse(X) if state.sparse is None else state.sparse
    X = _in_format(X, state.sparse)
    keep = (weights > 0) & _target_mass(target)
    keys = _sample_keys(X, target, weights)
    if state.stored_bytes + _new_bytes(state, X, target, keys, keep) + _fixed_bytes(state.theta.size) > MEMORY_BYTES:
        return 0.0, 0
    total = 0.0
    for start in range(0, X.shape[0], batch_size):
        rows = slice(start, min(start + batch_size, X.shape[0]))
        batch = (X[rows], target[rows], weights[rows], keys[rows], keep[rows])
        total += _batch(state, *batch, label_smoothing=label_smoothing) * (rows.stop - start)
    return total, X.shape[0]


def current_theta(state: ReplayStream) -> np.ndarray:
    """The model, flat."""
    return state.theta


def forget_samples(state: ReplayStream) -> None:
    """The memory freed (the stream has gone on as averaged SGD)."""
    state.slots, state.rows, state.target, state.pending, state.lbfgs = {}, None, None, [], None
    state.weights = state.counts = np.zeros(0)
    state.n_rows, state.stored_bytes, state.total_weight, state.prior_linear = 0, 0, 0.0, None


def _batch(state: ReplayStream, X, target, weights, keys, keep, *, label_smoothing: float) -> float:
    """One mini-batch: its objective at the current point, its samples remembered, the iterations due."""
    value = _batch_objective(state, X[keep], target[keep], weights[keep], label_smoothing)
    if state.warm and state.prior_linear is None and keep.any():
        _add_prior(state, X[keep], target[keep], weights[keep], label_smoothing)
    _remember(state, X, target, weights, keys, keep)
    state.samples_seen += int(keep.sum())
    state.since_step += int(keep.sum())
    threshold = max(1.0, len(state.slots) / STEPS_PER_MEMORY)
    steps = min(int(state.since_step // threshold), MAX_STEPS_PER_BATCH)
    if steps:
        state.since_step = 0 if steps == MAX_STEPS_PER_BATCH else int(state.since_step - steps * threshold)
        _iterate(state, steps, label_smoothing)
    state.step += 1
    return value


def _iterate(state: ReplayStream, iterations: int, label_smoothing: float) -> None:
    """``iterations`` L-BFGS iterations on the objective of the remembered samples, the pairs kept."""
    loss_gradient = _memory_loss_gradient(state, label_smoothing)
    if state.lbfgs is None:
        state.lbfgs = _lbfgs.start_lbfgs(loss_gradient, state.theta)
    else:  # the objective changed since the last step: the point's value and gradient again
        state.lbfgs.f, state.lbfgs.g = loss_gradient(state.lbfgs.x)
    options = {"max_iter": state.lbfgs.n_iter + iterations, "tol": 0.0, "memory": LBFGS_PAIRS}
    _lbfgs.minimize_lbfgs_resumable(loss_gradient, None, state=state.lbfgs, **options)
    state.lbfgs.curve = []  # (the objective changes from step to step: the curve means nothing here)
    state.theta = state.lbfgs.x


def _memory_loss_gradient(state: ReplayStream, label_smoothing: float):
    """``x -> (L(x), gradient)`` over the memory's rows (the prior's and the samples'), counts times weights."""
    _consolidate(state)
    weights = state.counts[: state.n_rows] * state.weights[: state.n_rows]
    total = float(weights.sum())
    options = {"n_classes": state.n_classes, "fit_intercept": state.fit_intercept, "label_smoothing": label_smoothing}
    # (scaled to at most 1: the loss does not depend on the weights' scale, and a float32 stream's would overflow)
    problem = _loss.LinearLoss(state.rows, state.target, weights / weights.max(), state.alpha, **options)
    linear = None if state.prior_linear is None else state.prior_linear / total

    def loss_gradient(x):
        f, g = problem.loss_gradient(x)
        g = np.asarray(g, dtype=np.float64).ravel()
        if linear is None:
            return float(f), g
        return float(f) - float(np.dot(linear, x)), g - linear

    return loss_gradient


def _add_prior(state: ReplayStream, X, target, weights, label_smoothing: float) -> None:
    r"""The prior of a fitted start :math:`\theta_0`, as the memory's first rows: the batch's samples with weights
    summing to ``WARM_START_ROWS`` times their mean, and the linear term :math:`\sum_j w_j (g_j + \alpha P
    \theta_0)` that makes :math:`\theta_0` the minimiser of the prior plus the penalty (``g_j`` the gradient of
    the sample's loss at :math:`\theta_0`)."""
    prior_weights = weights * (WARM_START_ROWS / len(weights))
    options = {"n_classes": state.n_classes, "fit_intercept": state.fit_intercept, "label_smoothing": label_smoothing}
    scaled = prior_weights / prior_weights.max()
    data_gradient = _loss.LinearLoss(X, target, scaled, 0.0, **options).loss_gradient(state.theta)[1]
    penalty_gradient = state.alpha * state.theta.reshape(-1, state.n_classes)
    if state.fit_intercept:
        penalty_gradient[-1] = 0.0
    gradient = np.asarray(data_gradient, dtype=np.float64).ravel() + penalty_gradient.ravel()
    state.prior_linear = float(prior_weights.sum()) * gradient
    _append_rows(state, X, target, prior_weights)


def _batch_objective(state: ReplayStream, X, target, weights, label_smoothing: float) -> float:
    """The batch's objective at the current point (the penalty alone for a batch without weight)."""
    if X.shape[0] == 0:
        W = state.theta.reshape(-1, state.n_classes)[: state.n_features]
        return 0.5 * state.alpha * float(np.vdot(W, W))
    options = {"n_classes": state.n_classes, "fit_intercept": state.fit_intercept, "label_smoothing": label_smoothing}
    scaled = weights / weights.max()  # (the loss does not depend on the weights' scale)
    return float(_loss.LinearLoss(X, target, scaled, state.alpha, **options).loss_gradient(state.theta)[0])


def _remember(state: ReplayStream, X, target, weights, keys, keep) -> None:
    """Counts of the batch's known samples raised, its new ones added (pending consolidation)."""
    new_rows, again = [], []
    for j in np.flatnonzero(keep):
        row = state.slots.get(keys[j])
        if row is None:
            row = state.slots[keys[j]] = state.n_rows + len(new_rows)
            new_rows.append(j)
        elif row >= state.n_rows:  # a new sample twice in the batch
            again.append(row)
        else:
            state.counts[row] += 1.0
        state.total_weight += float(weights[j])
    if new_rows:
        index = np.asarray(new_rows)
        _append_rows(state, X[index], target[index], weights[index])
    np.add.at(state.counts, np.asarray(again, dtype=np.intp), 1.0)


def _append_rows(state: ReplayStream, rows, target, weights) -> None:
    """New rows (pending consolidation) with count 1 and their weights."""
    start, stop = state.n_rows, state.n_rows + rows.shape[0]
    if stop > len(state.counts):  # capacity doubled: a long stream copies them O(1) times a row
        capacity = max(stop, 2 * len(state.counts), 1024)
        state.counts = np.concatenate([state.counts, np.zeros(capacity - len(state.counts))])
        state.weights = np.concatenate([state.weights, np.zeros(capacity - len(state.weights))])
    state.counts[start:stop] = 1.0
    state.weights[start:stop] = weights
    state.n_rows = stop
    state.pending.append((rows, np.array(target, copy=True)))
    state.stored_bytes += _bytes_of(rows, target, state.n_classes)


def _consolidate(state: ReplayStream) -> None:
    """The pending samples appended to the remembered rows and targets."""
    if not state.pending:
        return
    parts = ([] if state.rows is None else [(state.rows, state.target)]) + state.pending
    if scipy.sparse.issparse(parts[0][0]):
        state.rows = scipy.sparse.vstack([rows for rows, _ in parts], format="csr")
    else:
        state.rows = np.vstack([rows for rows, _ in parts])
    state.target = _stack_targets([part_target for _, part_target in parts], state.n_classes)
    state.pending = []


def _stack_targets(targets: list, n_classes: int) -> np.ndarray:
    """Class indices, or probability rows if any part has them (indices made one-hot)."""
    if all(t.ndim == 1 for t in targets):
        return np.concatenate(targets)
    rows = []
    for t in targets:
        if t.ndim == 1:
            t = np.eye(n_classes)[t]
        rows.append(t)
    return np.concatenate(rows)


def _in_format(X, sparse: bool):
    """The call's rows in the stream's format. Sparse rows in one form (CSR, sorted indices, no duplicates, no
    stored zeros), so that a sample's hash does not depend on how it was stored."""
    if not sparse:
        return X.toarray() if scipy.sparse.issparse(X) else X
    X = scipy.sparse.csr_matrix(X, copy=True)
    X.sum_duplicates()
    X.eliminate_zeros()
    X.sort_indices()
    return X


def _squared_norms(X) -> np.ndarray:
    """Each row's squared Euclidean norm, in float64."""
    if scipy.sparse.issparse(X):
        return np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    rows = np.asarray(X, dtype=np.float64)
    return np.einsum("ij,ij->i", rows, rows)


def _target_mass(target) -> np.ndarray:
    """Whether each row's target has a positive mass (class indices always do)."""
    if target.ndim == 1:
        return np.ones(len(target), dtype=bool)
    return np.asarray(target).sum(axis=1) > 0


def _sample_keys(X, target, weights) -> list[bytes]:
    """A 128-bit hash of each sample's features, target and weight (``+ 0.0``: -0.0 and 0.0 are one value)."""
    target = np.asarray(target)
    keys = []
    for i in range(X.shape[0]):
        digest = hashlib.blake2b(digest_size=16)
        if scipy.sparse.issparse(X):
            lo, hi = X.indptr[i], X.indptr[i + 1]
            digest.update(np.ascontiguousarray(X.indices[lo:hi], dtype=np.int64).tobytes())
            digest.update(b"|")
            digest.update((np.asarray(X.data[lo:hi], dtype=np.float64) + 0.0).tobytes())
        else:
            digest.update((np.asarray(X[i], dtype=np.float64) + 0.0).tobytes())
        digest.update(b"|")
        digest.update((np.asarray(target[i], dtype=np.float64) + 0.0).tobytes())
        digest.update(np.float64(weights[i] + 0.0).tobytes())
        keys.append(digest.digest())
    return keys


def _new_bytes(state: ReplayStream, X, target, keys, keep) -> int:
    """The bytes the call's samples not yet remembered would take (the prior's too, for a warm start's first call)."""
    new, seen = [], set()
    for j in np.flatnonzero(keep):
        if keys[j] not in state.slots and keys[j] not in seen:
            seen.add(keys[j])
            new.append(j)
    if state.warm and state.prior_linear is None:
        new.extend(np.flatnonzero(keep).tolist())  # the prior: at most the call's rows once more
    if not new:
        return 0
    index = np.asarray(new)
    return _bytes_of(X[index], np.asarray(target)[index], state.n_classes)


def _bytes_of(rows, target, n_classes: int) -> int:
    """What remembering ``rows`` costs: a sparse row's entries three times (the rows, an evaluation's copy of
    ``X^T``, a consolidation's copy), a dense row twice, the targets, an evaluation's logits (twice) and
    :data:`_ROW_OVERHEAD_BYTES` each."""
    if scipy.sparse.issparse(rows):
        row_bytes = 3 * rows.nnz * (rows.data.itemsize + rows.indices.itemsize)
    else:
        row_bytes = 2 * rows.size * rows.itemsize
    per_row = _ROW_OVERHEAD_BYTES + 2 * n_classes * rows.dtype.itemsize
    return row_bytes + np.asarray(target).nbytes + rows.shape[0] * per_row
