r"""Averaged stochastic gradient descent on a stream of mini-batches: the stream method of
:meth:`SoftmaxRegression.partial_fit <softmaxkit.linear_model.SoftmaxRegression.partial_fit>` with a numeric
``learning_rate``, for models too large for the other stream methods, and for a stream whose samples no longer
fit their memory (:mod:`._streams` chooses).

Each mini-batch is one step (a call with more rows than ``batch_size`` is several), and everything
that changes with time (the step count, the momentum buffer, the average) advances by steps, and the
step size by samples seen, never by calls. The update is Nesterov's on the mini-batch estimate
:math:`\hat g_t` of the gradient (:func:`._loss.batch_loss_gradient`), with the step :math:`\eta_t`,

.. math::

    v_{t+1} = \mu v_t - \eta_t \hat g_t(x_t), \qquad x_{t+1} = x_t + \mu v_{t+1} - \eta_t \hat g_t(x_t),

and the model is the polynomial-decay average of the iterates (Shamir and Zhang, 2013: weights that
grow like :math:`t^3`, so the early, far-off iterates fade),

.. math::

    \bar x_{t+1} = \bar x_t + \frac{4}{t + 4} (x_{t+1} - \bar x_t) .

A constant step makes the iterate wander around the optimum at a distance of order :math:`\eta`,
and the average of a constant-step stream stops short of the optimum (measured: covtype's gap stayed
at 0.16 from 10 to 30 passes). So the step is constant for the first :data:`DECAY_AFTER_SAMPLES`
samples of the stream and then decreases as the inverse of the samples seen :math:`n_t` before the
step,

.. math::

    \eta_t = \eta_0 \min\left(1, \frac{n_0}{n_t}\right), \qquad
    \eta_0 = \frac{c}{L}, \quad n_0 = \text{DECAY\_AFTER\_SAMPLES}, \quad c = \text{STEP\_PER\_CURVATURE},

with :math:`L` the curvature bound :func:`._loss.curvature_bound` of the first mini-batch seen.
A step of :math:`c / L` bounds the drift of the mean; the noise of a mini-batch :math:`B` grows with
the per-sample curvature bound :math:`R^2 / 2`, :math:`R^2` the mean of :math:`\lVert \tilde x_i
\rVert^2` (``x`` with a 1 for the intercept) over the first mini-batch, and falls with its size, so
the step is also at most :data:`NOISE_PER_STEP` :math:`\cdot 2 |B| / R^2` (with many features,
:math:`R^2 \gg L`: 400 features, 5 classes went from a gap of 0.48 after 30 passes to 6.8e-4).
The rule counts samples, not calls nor steps, so a stream cut into smaller or larger calls follows
the same schedule. Features are not rescaled here: :math:`L` is dominated by the largest-scale
features, so a stream of raw features of very different scales converges slowly (measured in
``benchmarks/bench_stream.py``'s docstring); standardise them first.

Sample weights count within a call: a mini-batch's gradient is its weighted mean, each call's weights
divided by their mean (:func:`._loss.batch_loss_gradient`), so weights on different scales in different calls
weigh the same (the remembering methods of :mod:`._streams` weigh them against each other; a stream that turns
to averaged SGD when its memory fills changes to this).

How close a stream can get: the average of stochastic-gradient iterates over :math:`N` samples drawn
independently has, at best, the gap :math:`\operatorname{tr}(H^{-1} G) / (2N)` (Polyak and Juditsky,
1992; :math:`H` the Hessian, :math:`G` the covariance of the per-sample gradients at the optimum).
Computed at the optimum, relative to :math:`L^*`, after 10 / 30 passes: pendigits 3.7e-3 / 1.2e-3,
satimage 5.6e-3 / 1.9e-3, covtype 9.8e-4 / 3.3e-4, letter 1.3e-3 / 4.3e-4. Passes over a finite set in
shuffled order do better than independent draws (letter: 5.3e-5 measured after 30 passes), but a
gap of 1e-3 after 30 passes on pendigits or satimage asks for more than averaging gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from softmaxkit.linear_model import _loss

__all__ = [
    "DECAY_AFTER_SAMPLES",
    "NOISE_PER_STEP",
    "STEP_PER_CURVATURE",
    "WARM_START_STEPS",
    "StreamState",
    "averaged_steps",
    "new_stream_state",
    "step_size",
]

# eta = STEP_PER_CURVATURE / L. Measured (benchmarks/bench_stream.py's protocol, momentum 0.9, on
# pendigits): 1 gives a relative gap of 0.12 after 10 passes, 2 (momentum 0.95) 0.017, 4 0.013,
# 8 0.029 (the iterate starts to wander too far for the average to help).
STEP_PER_CURVATURE = 4.0

# n_0 of the step's decay (200 mini-batches of 256 rows). Measured (the same protocol, without the noise
# bound, relative gap after 10 / 30 passes): 200 batches gave letter 8.9e-4 / 8.8e-5, pendigits 1.4e-2 / 3.0e-3,
# satimage 4.5e-2 / 1.6e-2, covtype 6.6e-2 / 1.5e-2 (constant step: 2.6e-3 / 2.3e-3, 1.4e-2 / 3.9e-3,
# 4.5e-2 / 1.2e-2, 0.16 / 0.16); 400 batches: covtype 0.15 / 3.9e-2; 50: satimage 5.2e-2 / 2.5e-2.
# make_classification with 4 features: 2.7e-3 / 2.0e-4 (constant: 6.1e-3 / 6.5e-3). A decay as 1 / sqrt(n)
# instead: letter 1.4e-3 / 3.8e-4, covtype 9.7e-2 / 4.6e-2, 4 features 3.7e-3 / 7.1e-4, but 15 % better
# on pendigits and satimage after 30 passes (2.6e-3, 1.4e-2).
DECAY_AFTER_SAMPLES = 51_200

# eta <= NOISE_PER_STEP * 2 |B| / R^2. Measured (the same protocol, with the decay; gap after 10 / 30
# passes): 0.05 gave covtype 2.1e-2 / 6.2e-3 (no bound: 6.6e-2 / 1.5e-2), letter 6.7e-4 / 6.0e-5,
# make_classification with 400 features 4.1e-3 / 6.8e-4 (no bound: 3.0 / 0.48), with 50 classes 4.9e-4 / 3.5e-5
# (9.8e-3 / 5.4e-4), pendigits 1.6e-2 / 3.7e-3 (1.4e-2 / 3.0e-3), digits (64 features, 1437 rows) 1.3 / 0.40
# (0.68 / 0.20); satimage and news20 unchanged (c / L is the smaller). 0.1: covtype 3.9e-2 / 7.6e-3, 400
# features 1.5e-2 / 1.1e-3; 0.025: covtype 3.8e-2 / 1.8e-2.
NOISE_PER_STEP = 0.05

# A stream that starts from a fitted (or loaded) model counts that model as the average of this
# many steps, so that the first mini-batch moves the average by 4 / 104 of the step, not all of it
# (with 0, one 256-row step from the optimum raised the objective by 20 %; tests/test_partial_fit.py).
WARM_START_STEPS = 100


@dataclass
class StreamState:
    """What averaged SGD carries between :meth:`partial_fit` calls: the last iterate, its average,
    the momentum buffer, the number of steps and of samples seen, and the initial step size
    (the current one is :func:`step_size`)."""

    learning_rate: float
    iterate: np.ndarray
    average: np.ndarray
    velocity: np.ndarray
    step: int = 0
    samples_seen: int = 0
    rate_per_row: float = np.inf  # the noise bound on the step of a mini-batch, per row


def averaged_steps(
    batch_loss_gradient, n_samples: int, state: StreamState, *, batch_size: int, momentum: float, first: int = 0
) -> float:
    """Steps on consecutive ``batch_size`` rows ``first:n_samples`` (the stream's order); returns their mean batch
    objective.

    ``batch_loss_gradient(x, indices) -> (f, g)`` is the backend's mini-batch objective; ``state``
    is updated in place.
    """
    total = 0.0
    x, v = state.iterate, state.velocity
    for start in range(first, n_samples, batch_size):
        idx = np.arange(start, min(start + batch_size, n_samples))
        f, g = batch_loss_gradient(x, idx)
        g = np.asarray(g, dtype=np.float64).ravel()
        lr = step_size(state, len(idx))
        v *= momentum
        v -= lr * g
        x = x + (momentum * v - lr * g)
        state.step += 1
        state.samples_seen += len(idx)
        state.average += (4.0 / (state.step + 3.0)) * (x - state.average)
        total += float(f) * len(idx)
    state.iterate = x
    return total / max(n_samples - first, 1)


def step_size(state: StreamState, n_rows: int) -> float:
    """The step of the next update, on ``n_rows`` rows: ``min(learning_rate, rate_per_row * n_rows)`` times
    ``min(1, DECAY_AFTER_SAMPLES / samples_seen)``.

    >>> state = StreamState(learning_rate=2.0, iterate=None, average=None, velocity=None, rate_per_row=0.01)
    >>> step_size(state, 256), step_size(state, 100)
    (2.0, 1.0)
    >>> state.samples_seen = 4 * DECAY_AFTER_SAMPLES
    >>> step_size(state, 256)
    0.5
    """
    rate = min(state.learning_rate, state.rate_per_row * n_rows)
    return rate * min(1.0, DECAY_AFTER_SAMPLES / max(state.samples_seen, 1))


def new_stream_state(learning_rate, X, alpha: float, fit_intercept: bool, x0: np.ndarray, *, warm: bool) -> StreamState:
    """The state before the first step from ``x0``: the step ``learning_rate`` or, for "auto",
    :data:`STEP_PER_CURVATURE` over the curvature bound of the rows ``X`` and the noise bound
    :data:`NOISE_PER_STEP` ``* 2 / R^2`` per row (see the module's docstring); ``warm`` (``x0`` a fitted
    model) counts ``x0`` as the average of :data:`WARM_START_STEPS` steps."""
    per_row = np.inf
    if learning_rate == "auto":
        rate = STEP_PER_CURVATURE / (_loss.curvature_bound(X, alpha, fit_intercept=fit_intercept) + 1e-12)
        per_row = NOISE_PER_STEP * 2.0 / (_mean_squared_norm(X) + float(fit_intercept) + 1e-12)
    else:
        rate = float(learning_rate)
    x0 = np.asarray(x0, dtype=np.float64)
    state = StreamState(
        learning_rate=rate, iterate=x0.copy(), average=x0.copy(), velocity=np.zeros_like(x0), rate_per_row=per_row
    )
    state.step = WARM_START_STEPS if warm else 0
    return state


def _mean_squared_norm(X) -> float:
    """The mean squared Euclidean norm of the rows of ``X`` (dense or sparse), in float64."""
    if X.shape[0] == 0:
        return 0.0
    if scipy.sparse.issparse(X):
        squares = X.data.astype(np.float64)
        return float(np.dot(squares, squares)) / X.shape[0]
    rows = np.asarray(X, dtype=np.float64)
    return float(np.einsum("ij,ij->", rows, rows)) / X.shape[0]
