"""The stream method of :meth:`partial_fit <softmaxkit.linear_model.SoftmaxRegression.partial_fit>`, chosen by the
model's size: the incremental Newton (:mod:`._stream_newton`) while its Hessian is small, L-BFGS on remembered
rows (:mod:`._stream_replay`) while its L-BFGS state fits the memory, else averaged SGD (:mod:`._streaming`),
which a numeric ``learning_rate`` also asks for. The first two remember the samples they see, up to 256 MiB;
a stream whose samples would overflow that goes on as averaged SGD from the model it has (:func:`stream_steps`).
Both remembering methods give :func:`stream_steps` the same three functions: ``remembered_steps(state, X,
target, sample_weight, *, alpha, batch_size, label_smoothing) -> (sum of the batches' objectives times their
rows, rows done)``, which stops before the first mini-batch (the Newton) or call (the remembered rows) whose
samples would not fit; ``current_theta``; and ``forget_samples``, which frees the memory. Since a sample is
remembered with its weight and target, ``class_weight`` and ``label_smoothing`` (like ``fit_intercept``) may
not change while such a stream goes on; ``alpha`` may.

=========================================  ==============================  ===================================
model: (features + 1) x classes            stream method                   passes over a data set reach
=========================================  ==============================  ===================================
at most 1,024                              incremental Newton              :meth:`fit`'s optimum, quickly
its L-BFGS state within 192 MiB            L-BFGS on the remembered rows   :meth:`fit`'s optimum (16 iterations
                                                                           a pass), while the rows fit 256 MiB
larger, or ``learning_rate`` a number      averaged SGD                    near the optimum (see
                                                                           :mod:`._streaming`)
=========================================  ==============================  ===================================
"""

from __future__ import annotations

import copy

import numpy as np

from softmaxkit.linear_model import _stream_newton, _stream_replay, _streaming

__all__ = ["new_stream", "stream_steps"]


def new_stream(learning_rate, X, alpha: float, fit_intercept: bool, x0: np.ndarray, *, n_classes: int, warm: bool):
    """The state of :meth:`partial_fit`'s default stream method, from the start ``x0`` (flat ``theta``; a fitted
    model when ``warm``), by the table of the module docstring."""
    options = {"n_features": X.shape[1], "n_classes": n_classes, "fit_intercept": fit_intercept}
    if learning_rate == "auto" and _stream_newton.affordable(**options):
        return _stream_newton.new_newton_stream(x0, alpha=alpha, warm=warm, **options)
    if learning_rate == "auto" and _stream_replay.affordable(**options):
        return _stream_replay.new_replay_stream(x0, alpha=alpha, warm=warm, **options)
    return _streaming.new_stream_state(learning_rate, X, alpha, fit_intercept, x0, warm=warm)


def stream_steps(
    state,
    make_objective,
    X,
    target,
    sample_weight,
    *,
    alpha,
    fit_intercept,
    batch_size,
    momentum,
    label_smoothing,
    class_weight=None,
):
    """``(mean batch objective, flat theta of the model)`` after the steps on the rows of ``X``, in order.

    ``sample_weight`` is None or the rows' weights on one scale for the whole stream (the Newton's and the
    remembered rows' objectives weigh samples of different calls against each other), ``alpha`` and
    ``fit_intercept`` the estimator's current parameters. Averaged SGD takes the ``batch_loss_gradient`` of
    the backend's objective, which ``make_objective()`` builds (:func:`._streaming.averaged_steps`); the
    other methods need none. When the Newton's or the remembered rows' samples would overflow their memory,
    the stream goes on, from that mini-batch and for good, as averaged SGD from the model it has (its
    ``fallback``), and the memory is freed.
    """
    n_samples = X.shape[0]
    options = {"batch_size": batch_size, "momentum": momentum}
    if not isinstance(state, _stream_newton.NewtonStream | _stream_replay.ReplayStream):
        value = _streaming.averaged_steps(make_objective().batch_loss_gradient, n_samples, state, **options)
        return value, state.average
    settings = {"fit_intercept": fit_intercept, "class_weight": class_weight, "label_smoothing": label_smoothing}
    state.settings = copy.deepcopy(settings) if state.settings is None else state.settings
    for name, value in settings.items():
        if value != state.settings[name]:
            raise ValueError(
                f"{name} must stay {state.settings[name]!r} while a stream goes on, got {value!r}; "
                "call fit, or partial_fit on a new estimator"
            )
    total, done = 0.0, 0
    if state.fallback is None:
        method = _stream_newton if isinstance(state, _stream_newton.NewtonStream) else _stream_replay
        steps = {"alpha": alpha, "batch_size": batch_size, "label_smoothing": label_smoothing}
        total, done = method.remembered_steps(state, X, target, sample_weight, **steps)
        if done == n_samples:
            return total / max(n_samples, 1), method.current_theta(state)
        theta = method.current_theta(state)
        state.fallback = _streaming.new_stream_state("auto", X, alpha, fit_intercept, theta, warm=True)
        state.fallback.samples_seen = state.samples_seen
        method.forget_samples(state)
    batch_loss_gradient = make_objective().batch_loss_gradient
    value = _streaming.averaged_steps(batch_loss_gradient, n_samples, state.fallback, first=done, **options)
    return (total + value * (n_samples - done)) / max(n_samples, 1), state.fallback.average
