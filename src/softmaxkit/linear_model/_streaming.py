r"""The default :meth:`SoftmaxRegression.partial_fit <softmaxkit.linear_model.SoftmaxRegression.partial_fit>`:
averaged stochastic gradient descent on a stream of mini-batches.

Each mini-batch is one step (a call with more rows than ``batch_size`` is several), and everything
that changes with time (the step count, the momentum buffer, the average) advances by steps, never
by calls. The update is Nesterov's on the mini-batch estimate :math:`\hat g_t` of the gradient
(:func:`._loss.batch_loss_gradient`), with a constant step :math:`\eta`,

.. math::

    v_{t+1} = \mu v_t - \eta \hat g_t(x_t), \qquad x_{t+1} = x_t + \mu v_{t+1} - \eta \hat g_t(x_t),

and the model is the polynomial-decay average of the iterates (Shamir and Zhang, 2013: weights that
grow like :math:`t^3`, so the early, far-off iterates fade),

.. math::

    \bar x_{t+1} = \bar x_t + \frac{4}{t + 4} (x_{t+1} - \bar x_t) .

A constant step makes the iterate wander around the optimum at a distance of order :math:`\eta`;
the average does not wander (Polyak and Juditsky, 1992). The step is
:data:`STEP_PER_CURVATURE` over the curvature bound :func:`._loss.curvature_bound` of the first
mini-batch seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softmaxkit.linear_model import _loss

__all__ = ["STEP_PER_CURVATURE", "WARM_START_STEPS", "StreamState", "averaged_steps", "new_stream_state"]

# eta = STEP_PER_CURVATURE / L. Measured (benchmarks/bench_stream.py's protocol, momentum 0.9, on
# pendigits): 1 gives a relative gap of 0.12 after 10 passes, 2 (momentum 0.95) 0.017, 4 0.013,
# 8 0.029 (the iterate starts to wander too far for the average to help).
STEP_PER_CURVATURE = 4.0

# A stream that starts from a fitted (or loaded) model counts that model as the average of this
# many steps, so that the first mini-batch moves the average by 4 / 104 of the step, not all of it
# (with 0, one 256-row step from the optimum raised the objective by 20 %; tests/test_partial_fit.py).
WARM_START_STEPS = 100


@dataclass
class StreamState:
    """What averaged SGD carries between :meth:`partial_fit` calls: the last iterate, its average,
    the momentum buffer, the number of steps and of samples seen, and the step size."""

    learning_rate: float
    iterate: np.ndarray
    average: np.ndarray
    velocity: np.ndarray
    step: int = 0
    samples_seen: int = 0


def averaged_steps(
    batch_loss_gradient, n_samples: int, state: StreamState, *, batch_size: int, momentum: float
) -> float:
    """Steps on consecutive ``batch_size`` rows of ``n_samples`` (the stream's order); returns the mean batch objective.

    ``batch_loss_gradient(x, indices) -> (f, g)`` is the backend's mini-batch objective; ``state``
    is updated in place.
    """
    total = 0.0
    x, v, lr = state.iterate, state.velocity, state.learning_rate
    for start in range(0, n_samples, batch_size):
        idx = np.arange(start, min(start + batch_size, n_samples))
        f, g = batch_loss_gradient(x, idx)
        g = np.asarray(g, dtype=np.float64).ravel()
        v *= momentum
        v -= lr * g
        x = x + (momentum * v - lr * g)
        state.step += 1
        state.average += (4.0 / (state.step + 3.0)) * (x - state.average)
        total += float(f) * len(idx)
    state.iterate = x
    state.samples_seen += n_samples
    return total / n_samples


def new_stream_state(learning_rate, X, alpha: float, fit_intercept: bool, x0: np.ndarray, *, warm: bool) -> StreamState:
    """The state before the first step from ``x0``: the step ``learning_rate`` or, for "auto",
    :data:`STEP_PER_CURVATURE` over the curvature bound of the rows ``X``; ``warm`` (``x0`` a fitted
    model) counts ``x0`` as the average of :data:`WARM_START_STEPS` steps."""
    if learning_rate == "auto":
        rate = STEP_PER_CURVATURE / (_loss.curvature_bound(X, alpha, fit_intercept=fit_intercept) + 1e-12)
    else:
        rate = float(learning_rate)
    x0 = np.asarray(x0, dtype=np.float64)
    state = StreamState(learning_rate=rate, iterate=x0.copy(), average=x0.copy(), velocity=np.zeros_like(x0))
    state.step = WARM_START_STEPS if warm else 0
    return state
