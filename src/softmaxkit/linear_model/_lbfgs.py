"""L-BFGS whose whole state lives in one object, so that a fit can stop and resume bit for bit.

SciPy's L-BFGS-B (:func:`._solvers.minimize_lbfgs`) keeps its curvature pairs and line-search
state in Fortran work arrays that cannot be saved; :func:`minimize_lbfgs_resumable` is the same
algorithm on a :class:`LbfgsState` that can: the point, its objective and gradient, the last
``memory`` curvature pairs, the iterations done and the objective after each. Everything an
iteration does is a function of that state alone (the line search is deterministic), so an
iteration started from a saved state does exactly what the uninterrupted run did.

The algorithm: the search direction is ``-H g`` with ``H`` the two-loop recursion's inverse-Hessian
approximation from the kept pairs (scaled by ``s^T y / y^T y`` of the newest one); the first
direction, and the one after a failed line search, is ``-g / |g|`` (a first step of length 1, as
in L-BFGS-B). The step satisfies the strong Wolfe conditions (``c1 = 1e-4``, ``c2 = 0.9``;
:func:`scipy.optimize.line_search`, Nocedal and Wright's Algorithm 3.5, first trial step 1). A pair
is kept when ``s^T y > eps * y^T y`` (L-BFGS-B's rule). Stopping: the rule of
:func:`._solvers.minimize_lbfgs` (the estimated relative gap ``g^T H^-1 g / 2 <= tol * |f|``,
with the same estimate of ``H^-1``; or a relative decrease of at most ``64 * eps``; or no step
along the steepest descent direction decreases the objective: machine precision).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from softmaxkit.linear_model._solvers import SolverResult, _inverse_hessian_product

__all__ = ["LbfgsState", "minimize_lbfgs_resumable"]

_EPS = np.finfo(np.float64).eps
_FTOL = 64 * _EPS  # the relative-decrease stop of minimize_lbfgs (its SciPy "ftol")


@dataclass
class LbfgsState:
    """Everything :func:`minimize_lbfgs_resumable` carries from one iteration to the next.

    ``pairs`` are the curvature pairs ``(s, y)``, oldest first, at most ``memory`` of them;
    ``curve`` the objective after each of the ``n_iter`` iterations done.
    """

    x: np.ndarray
    f: float
    g: np.ndarray
    pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    n_iter: int = 0
    curve: list[float] = field(default_factory=list)


def _direction(g: np.ndarray, pairs) -> np.ndarray:
    """``-H g``: the two-loop recursion with the initial matrix ``(s^T y / y^T y) I`` of the newest pair."""
    q = g.copy()
    coefficients = []
    for s, y in reversed(pairs):
        rho = 1.0 / float(np.dot(y, s))
        a = rho * float(np.dot(s, q))
        q -= a * y
        coefficients.append((rho, a))
    s, y = pairs[-1]
    r = q * (float(np.dot(s, y)) / float(np.dot(y, y)))
    for (s, y), (rho, a) in zip(pairs, reversed(coefficients)):
        r += s * (a - rho * float(np.dot(y, r)))
    return -r


def _wolfe_step(loss_gradient, x, f, g, p):
    """``(x_new, f_new, g_new)`` of a strong-Wolfe step along ``p``, or None when the line search fails."""
    evaluated: dict[bytes, tuple[float, np.ndarray]] = {}

    def evaluate(point):
        key = point.tobytes()
        if key not in evaluated:
            with np.errstate(over="ignore", invalid="ignore"):  # a trial beyond the dtype's range: inf, rejected
                value, gradient = loss_gradient(point)
            evaluated[key] = (float(value), np.asarray(gradient, dtype=np.float64).ravel())
        return evaluated[key]

    with warnings.catch_warnings():
        # (its LineSearchWarning, a RuntimeWarning not exported by scipy.optimize: a failure is handled here)
        warnings.filterwarnings("ignore", message="The line search algorithm", category=RuntimeWarning)
        alpha, *_ = scipy.optimize.line_search(
            lambda z: evaluate(z)[0], lambda z: evaluate(z)[1], x, p, g, f, c1=1e-4, c2=0.9, maxiter=50
        )
    if alpha is None:
        return None
    x_new = x + alpha * p  # the very expression line_search evaluated, so the cache holds it
    f_new, g_new = evaluate(x_new)
    if not (np.isfinite(f_new) and f_new <= f):
        return None
    return x_new, f_new, g_new


def start_lbfgs(loss_gradient, x0) -> LbfgsState:
    """The state before the first iteration, at ``x0``."""
    x = np.asarray(x0, dtype=np.float64).ravel().copy()
    f, g = loss_gradient(x)
    return LbfgsState(x=x, f=float(f), g=np.asarray(g, dtype=np.float64).ravel().copy())


def minimize_lbfgs_resumable(
    loss_gradient,
    x0,
    *,
    max_iter: int,
    tol: float,
    callback=None,
    memory: int = 10,
    state: LbfgsState | None = None,
    on_iteration: Callable[[LbfgsState], None] | None = None,
) -> SolverResult:
    """L-BFGS (see the module docstring) from ``x0``, or from ``state`` (a resumed run; ``x0`` is then unused).

    ``callback(x, f) -> bool`` as for every solver (see :mod:`._solvers`); ``on_iteration(state)``
    is called after every iteration that does not end the run, with the state to resume from
    (it must not change it). ``max_iter`` counts the iterations of the whole run, resumed or not.
    """
    if state is None:
        state = start_lbfgs(loss_gradient, x0)
    converged, message = False, "iteration limit reached"
    while state.n_iter < max_iter:
        if not np.any(state.g):
            converged, message = True, "gradient zero"
            break
        step = None
        if state.pairs:
            p = _direction(state.g, state.pairs)
            if float(np.dot(state.g, p)) < 0:
                step = _wolfe_step(loss_gradient, state.x, state.f, state.g, p)
        if step is None:  # no pairs yet, or the quasi-Newton step failed: steepest descent, memory cleared
            state.pairs = []
            step = _wolfe_step(loss_gradient, state.x, state.f, state.g, -state.g / np.linalg.norm(state.g))
        if step is None:
            converged, message = True, "line search cannot decrease the objective (machine precision)"
            break
        x_new, f_new, g_new = step
        s, y = x_new - state.x, g_new - state.g
        if float(np.dot(s, y)) > _EPS * float(np.dot(y, y)):
            state.pairs = [*state.pairs[-(memory - 1) :], (s, y)] if memory > 1 else [(s, y)]
        f_old = state.f
        state.x, state.f, state.g = x_new, f_new, g_new
        state.n_iter += 1
        state.curve.append(f_new)
        if callback is not None and callback(state.x, f_new):
            converged, message = True, "stopped by callback"
            break
        if state.pairs and 0.5 * float(np.dot(state.g, _inverse_hessian_product(state.g, state.pairs))) <= tol * abs(
            f_new
        ):
            converged, message = True, "estimated relative gap below tol"
            break
        if f_old - f_new <= _FTOL * max(abs(f_old), abs(f_new), 1.0):
            converged, message = True, "relative reduction of the objective at machine precision"
            break
        if on_iteration is not None:
            on_iteration(state)
    return SolverResult(state.x, state.n_iter, list(state.curve), converged, message)
