"""L-BFGS whose whole state lives in one object, so that a fit can stop and resume bit for bit.

Every L-BFGS fit runs :func:`minimize_lbfgs_resumable` (:func:`._solvers.minimize_lbfgs` is it,
without a state to save). Its state is a :class:`LbfgsState`: the point, its objective and
gradient, the last ``memory`` curvature pairs, the iterations done and the objective after each.
Everything an iteration does is a function of that state alone (the line search is
deterministic), so an iteration started from a saved state does exactly what the uninterrupted run
did. (SciPy's L-BFGS-B keeps its pairs in work arrays that cannot be saved, and does a generalised
Cauchy point and a subspace step at every iteration even without bounds: 60 ms per iteration on
news20's 1,241,240 parameters, against 38 ms for a whole iteration's work here besides the
evaluation.)

The algorithm: the search direction is ``-H g`` with ``H`` the two-loop recursion's inverse-Hessian
approximation from the kept pairs (scaled by ``s^T y / y^T y`` of the newest one); the first
direction, and the one after a failed line search, is ``-g / |g|`` (a first step of length 1, as
in L-BFGS-B). The step satisfies the strong Wolfe conditions (``c1 = 1e-4``, ``c2 = 0.9``;
:func:`scipy.optimize.line_search`, Nocedal and Wright's Algorithm 3.5, first trial step 1, which
is tried here first). A pair is kept when ``s^T y > eps * y^T y`` (L-BFGS-B's rule). Stopping: the
estimated relative gap ``g^T H^-1 g / 2 <= tol * |f|``, with ``H^-1`` the recursion's matrix with
the initial matrix ``max_i (s^T s / s^T y) I`` (:func:`_inverse_hessian_product`; a larger, safer
estimate than the direction's scaling), computed from the direction's own first loop
(:func:`_estimated_gap`); or a relative decrease of at most ``64 * eps``; or no step along the
steepest descent direction decreases the objective (machine precision). Each step of the recursion
is one fused pass over its vectors (:func:`softmaxkit._numpy._vectors.axpy_dot`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from softmaxkit._numpy._vectors import axpy_dot
from softmaxkit.linear_model._result import SolverResult

__all__ = ["LbfgsState", "estimated_gap", "minimize_lbfgs_resumable", "start_lbfgs"]

_EPS = np.finfo(np.float64).eps
_FTOL = 64 * _EPS  # the relative-decrease stop of minimize_lbfgs (its SciPy "ftol")
_C1, _C2 = 1e-4, 0.9  # the strong Wolfe conditions


@dataclass
class LbfgsState:
    """Everything :func:`minimize_lbfgs_resumable` carries from one iteration to the next.

    ``pairs`` are the curvature pairs ``(s, y)``, oldest first, at most ``memory`` of them;
    ``curve`` the objective after each of the ``n_iter`` iterations done; ``products`` each pair's
    ``(s^T y, y^T y, s^T s)`` (recomputed from the pairs when their number differs, as in a state
    read from a file; the lists are replaced, never changed in place, so a shallow copy is a snapshot);
    ``gap`` the stopping rule's estimate ``g^T H^-1 g / 2`` at ``x`` after the last iteration (not saved:
    :func:`._solvers.minimize_auto` reads it to judge L-BFGS's progress).
    """

    x: np.ndarray
    f: float
    g: np.ndarray
    pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    n_iter: int = 0
    curve: list[float] = field(default_factory=list)
    products: list[tuple[float, float, float]] = field(default_factory=list)
    gap: float = np.inf  # the stopping rule's estimate of f - f* at x (inf while no pair is kept)


def _inverse_hessian_product(g: np.ndarray, pairs) -> np.ndarray:
    """The stopping rule's approximation of ``H^-1 g`` from the curvature pairs ``(s, y)``, oldest first: the two-loop
    recursion with the initial matrix ``max_i (s^T s / s^T y) I`` (the reference of :func:`_estimated_gap`)."""
    q = g.copy()
    coefficients = []
    for s, y in reversed(pairs):
        rho = 1.0 / float(np.dot(y, s))
        a = rho * float(np.dot(s, q))
        q -= a * y
        coefficients.append((rho, a))
    r = q * max(float(np.dot(s, s)) / float(np.dot(s, y)) for s, y in pairs)
    for (s, y), (rho, a) in zip(pairs, reversed(coefficients)):
        r += s * (a - rho * float(np.dot(y, r)))
    return r


def _pair_products(s: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """``(s^T y, y^T y, s^T s)`` of a curvature pair: what the recursion and the stopping rule use of it."""
    return float(np.dot(s, y)), float(np.dot(y, y)), float(np.dot(s, s))


@dataclass
class _FirstLoop:
    """The two-loop recursion's first half on ``g``: ``q = V_1 ... V_m g`` and the coefficients ``a_i``.

    ``quadratic`` is ``sum_i a_i^2 / rho_i`` and ``qq`` is ``q^T q``: for the initial matrix ``gamma I``
    the recursion's ``g^T H g`` is ``gamma qq + quadratic`` (``H = V^T H' V + rho s s^T`` at each pair),
    so the stopping rule's estimate needs no second loop.
    """

    q: np.ndarray
    coefficients: list[float]
    quadratic: float
    qq: float


def _first_loop(g: np.ndarray, pairs, products) -> _FirstLoop:
    """The first loop over ``pairs`` (oldest first), newest to oldest, each step one fused pass."""
    q = g.copy()
    coefficients = []
    quadratic = 0.0
    dot = float(np.dot(pairs[-1][0], q))
    for i in range(len(pairs) - 1, -1, -1):
        rho = 1.0 / products[i][0]
        a = rho * dot
        coefficients.append(a)
        quadratic += a * a / rho
        # q -= a y_i, then the next pair's s . q (or q . q after the oldest)
        dot = axpy_dot(q, -a, pairs[i][1], pairs[i - 1][0] if i else None)
    coefficients.reverse()
    return _FirstLoop(q, coefficients, quadratic, dot)


def _second_loop(first: _FirstLoop, pairs, products, gamma: float) -> np.ndarray:
    """``H g`` from the first loop, with the initial matrix ``gamma I``."""
    r = first.q
    r *= gamma
    dot = float(np.dot(pairs[0][1], r))
    for i, (s, _) in enumerate(pairs):
        b = dot / products[i][0]
        # r += (a_i - b) s_i, then the next pair's y . r
        dot = axpy_dot(r, first.coefficients[i] - b, s, pairs[i + 1][1] if i + 1 < len(pairs) else r)
    return r


def _estimated_gap(first: _FirstLoop, products) -> float:
    """``g^T H g / 2`` with the stopping rule's initial matrix ``max_i (s^T s / s^T y) I`` (as
    :func:`_inverse_hessian_product`): the estimate of ``f - f*`` that ``tol`` bounds."""
    gamma = max(ss / sy for sy, _, ss in products)
    return 0.5 * (gamma * first.qq + first.quadratic)


def _direction(first: _FirstLoop, pairs, products) -> np.ndarray:
    """``-H g``: the second loop with the initial matrix ``(s^T y / y^T y) I`` of the newest pair (consumes ``first``)."""
    sy, yy, _ = products[-1]
    r = _second_loop(first, pairs, products, sy / yy)
    np.negative(r, out=r)
    return r


def _strong_wolfe(f, derphi, f_new, derphi_new) -> bool:
    """The strong Wolfe conditions of a step of length 1 (``derphi``: the directional derivative)."""
    return f_new <= f + _C1 * derphi and abs(derphi_new) <= _C2 * abs(derphi)


def _wolfe_step(loss_gradient, x, f, g, p):
    """``(x_new, f_new, g_new)`` of a strong-Wolfe step along ``p``, or None when the line search fails.

    The first trial is the step 1, as in the line search (Nocedal and Wright's Algorithm 3.5 as
    :func:`scipy.optimize.line_search` implements it, started at 1), which returns it when it
    satisfies the conditions: so that trial is made here, without the line search's machinery, and
    the line search runs (with that evaluation remembered) only when it fails.
    """
    evaluated: list = []

    def evaluate(point):
        for known, value, gradient in evaluated:
            if np.array_equal(known, point):
                return value, gradient
        with np.errstate(over="ignore", invalid="ignore"):  # a trial beyond the dtype's range: inf, rejected
            value, gradient = loss_gradient(point)
        value, gradient = float(value), np.asarray(gradient, dtype=np.float64).ravel()
        evaluated.append((point, value, gradient))  # (points are fresh arrays, never changed)
        return value, gradient

    derphi = float(np.dot(g, p))
    x_new = x + p
    f_new, g_new = evaluate(x_new)
    if np.isfinite(f_new) and _strong_wolfe(f, derphi, f_new, float(np.dot(g_new, p))):
        return x_new, f_new, g_new
    with warnings.catch_warnings():
        # (its LineSearchWarning, a RuntimeWarning not exported by scipy.optimize: a failure is handled here)
        warnings.filterwarnings("ignore", message="The line search algorithm", category=RuntimeWarning)
        alpha, *_ = scipy.optimize.line_search(
            lambda z: evaluate(z)[0], lambda z: evaluate(z)[1], x, p, g, f, c1=_C1, c2=_C2, maxiter=50
        )
    if alpha is None:
        return None
    x_new = x + alpha * p  # the very expression line_search evaluated, so the cache holds it
    f_new, g_new = evaluate(x_new)
    if not (np.isfinite(f_new) and f_new <= f):
        return None
    return x_new, f_new, g_new


def estimated_gap(state: LbfgsState) -> float:
    """The stopping rule's estimate ``g^T H^-1 g / 2`` at ``state`` (``inf`` without curvature pairs)."""
    if not state.pairs:
        return np.inf
    if len(state.products) != len(state.pairs):
        state.products = [_pair_products(s, y) for s, y in state.pairs]
    return _estimated_gap(_first_loop(state.g, state.pairs, state.products), state.products)


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
    if len(state.products) != len(state.pairs):  # a state from a file: the pairs' products, computed as when kept
        state.products = [_pair_products(s, y) for s, y in state.pairs]
    converged, message = False, "iteration limit reached"
    first = _first_loop(state.g, state.pairs, state.products) if state.pairs else None
    while state.n_iter < max_iter:
        if not np.any(state.g):
            converged, message = True, "gradient zero"
            break
        step = None
        if first is not None:
            p = _direction(first, state.pairs, state.products)
            if float(np.dot(state.g, p)) < 0:
                step = _wolfe_step(loss_gradient, state.x, state.f, state.g, p)
        if step is None:  # no pairs yet, or the quasi-Newton step failed: steepest descent, memory cleared
            state.pairs, state.products = [], []
            step = _wolfe_step(loss_gradient, state.x, state.f, state.g, -state.g / np.linalg.norm(state.g))
        if step is None:
            converged, message = True, "line search cannot decrease the objective (machine precision)"
            break
        x_new, f_new, g_new = step
        s, y = x_new - state.x, g_new - state.g
        products = _pair_products(s, y)
        if products[0] > _EPS * products[1]:
            keep = memory - 1
            state.pairs = [*state.pairs[len(state.pairs) - keep :], (s, y)] if keep else [(s, y)]
            state.products = [*state.products[len(state.products) - keep :], products] if keep else [products]
        f_old = state.f
        state.x, state.f, state.g = x_new, f_new, g_new
        state.n_iter += 1
        state.curve.append(f_new)
        if callback is not None and callback(state.x, f_new):
            converged, message = True, "stopped by callback"
            break
        first = _first_loop(state.g, state.pairs, state.products) if state.pairs else None
        state.gap = _estimated_gap(first, state.products) if first is not None else np.inf
        if state.gap <= tol * abs(f_new):
            converged, message = True, "estimated relative gap below tol"
            break
        if f_old - f_new <= _FTOL * max(abs(f_old), abs(f_new), 1.0):
            converged, message = True, "relative reduction of the objective at machine precision"
            break
        if on_iteration is not None:
            on_iteration(state)
    return SolverResult(state.x, state.n_iter, list(state.curve), converged, message)
