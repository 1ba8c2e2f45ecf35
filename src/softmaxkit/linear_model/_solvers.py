"""Solvers for smooth convex objectives on a flat parameter vector, and the contract they rely on.

Each solver sees only callables and knows nothing of softmax (an :class:`Objective` bundles them):

* full-batch solvers take ``loss_gradient(x) -> (f, g)`` (and, for Newton-CG,
  ``loss_gradient_hessp(x) -> (f, g, H)`` with ``H`` a :class:`HessianOperator`);
* stochastic solvers take ``batch_loss_gradient(x, indices) -> (f, g)``, an estimate of the
  objective from the samples ``indices``.

Every solver accepts ``callback(x, f) -> bool``, called once per iteration (epoch for the
stochastic solvers) with the current point and objective; returning ``True`` stops the solver.
All of them return a :class:`SolverResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from softmaxkit.linear_model._lbfgs import minimize_lbfgs_resumable, start_lbfgs
from softmaxkit.linear_model._result import SolverResult

__all__ = [
    "SOLVERS",
    "STOCHASTIC_SOLVERS",
    "HessianOperator",
    "NewtonState",
    "Objective",
    "SolverResult",
    "StochasticState",
    "minimize_auto",
    "minimize_lbfgs",
    "minimize_newton_cg",
    "minimize_stochastic",
    "stochastic_epoch",
]

SOLVERS = ("lbfgs", "newton-cg", "sgd", "adam")
STOCHASTIC_SOLVERS = ("sgd", "adam")


class HessianOperator(Protocol):
    """The Hessian at one point, as :func:`minimize_newton_cg` uses it (flat float64 vectors in and out).

    ``H(v)`` is the Hessian-vector product. ``H.preconditioner(kind)`` returns a function
    approximating ``H^-1 r``: ``kind`` is ``"diagonal"`` (cheap, rebuilt every iteration) or
    ``"full"`` (a factorisation, kept over several iterations). ``H.preconditioner_cost(kind)`` is
    the cost of building it, in Hessian-vector products.
    """

    def __call__(self, v: np.ndarray) -> np.ndarray: ...

    def preconditioner(self, kind: str) -> Callable[[np.ndarray], np.ndarray]: ...

    def preconditioner_cost(self, kind: str) -> float: ...


class Objective(NamedTuple):
    """The callables the solvers see, on flat float64 parameter vectors.

    For softmax regression the vector is ``theta`` of :mod:`._loss` (``coef.T``, shape
    ``(n_features + fit_intercept, n_classes)``) raveled in C order.
    """

    loss_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]]
    loss_gradient_hessp: Callable[[np.ndarray], tuple[float, np.ndarray, HessianOperator]]
    batch_loss_gradient: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


def minimize_lbfgs(loss_gradient, x0, *, max_iter: int, tol: float, callback=None, memory: int = 10) -> SolverResult:
    """L-BFGS until the estimated relative gap to the optimum is at most ``tol``: :func:`._lbfgs.minimize_lbfgs_resumable`.

    The estimate is half the squared Newton decrement, ``g^T H^-1 g / 2`` (which approximates
    ``f - f*`` near the optimum), with L-BFGS's own approximation of ``H^-1`` from the last
    ``memory`` steps: the solver stops at the first iterate with ``g^T H^-1 g / 2 <= tol * |f|``.
    A relative decrease of at most ``64 * eps`` also stops it, converged: the objective no longer
    decreases measurably (a ``tol`` below the objective's rounding).

    Our own L-BFGS rather than SciPy's L-BFGS-B (the same algorithm without bounds, with its
    generalised Cauchy point and subspace step at every iteration): on news20 (1,241,240
    parameters, one thread) L-BFGS-B's own work took 60 ms per iteration and the estimate above
    another 100 ms from outside it, against 38 ms for both here (a fused two-loop recursion that
    gives the estimate for free), at 223 iterations against SciPy's 219 to the same tol.
    """
    return minimize_lbfgs_resumable(loss_gradient, x0, max_iter=max_iter, tol=tol, callback=callback, memory=memory)


def _to_bound(x, p, bound):
    """``x + tau p`` with ``tau >= 0`` and ``|x + tau p| = bound`` (given ``|x| <= bound``)."""
    xp, pp, xx = float(np.dot(x, p)), float(np.dot(p, p)), float(np.dot(x, x))
    tau = (np.sqrt(max(xp * xp + pp * (bound * bound - xx), 0.0)) - xp) / max(pp, np.finfo(float).tiny)
    return x + tau * p


def _pcg(hessp, b, precondition, tol, max_iter, bound=np.inf):
    """Preconditioned conjugate gradients for ``H x = b`` from 0; ``precondition(r)`` approximates ``H^-1 r``.

    ``bound`` caps the solution's length: the first iterate that would be longer is replaced by the
    point of length ``bound`` on its way (Steihaug's truncation; with a preconditioner the iterates'
    lengths need not grow monotonically, so this is a heuristic cap, not a trust-region solve).
    """
    x = np.zeros_like(b)
    r = b.copy()
    z = precondition(r)
    p = z.copy()
    rz = float(np.dot(r, z))
    n_iter = 0
    for n_iter in range(max_iter + 1):
        if np.sqrt(float(np.dot(r, r))) <= tol or n_iter == max_iter:
            break
        Hp = hessp(p)
        curvature = float(np.dot(p, Hp))
        if not curvature > 0 or not np.isfinite(curvature):  # flat or negative (round-off: it is convex), or
            # beyond the working dtype's range (a preconditioned direction of almost no curvature)
            if not x.any():  # steepest descent, within the bound
                x = b * min(1.0, bound / max(float(np.linalg.norm(b)), np.finfo(float).tiny))
            break
        step = rz / curvature
        if bound < np.inf and np.linalg.norm(x + step * p) > bound:
            return _to_bound(x, p, bound), n_iter + 1
        x += step * p
        r -= step * Hp
        z = precondition(r)
        rz_new = float(np.dot(r, z))
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, n_iter


# (preconditioner rebuilt every iteration, factorisations in order of preference (the first whose cost is
# finite is the one used) built once CG needed more than N iterations and then kept, N): near the optimum the
# Hessian barely changes, so one factorisation serves several steps. On letter, taking the cheaper "block"
# whenever "full" did not pay yet doubled the Hessian-vector products (57 against 28): a lagged block
# preconditioner helps CG much less than the whole Hessian does.
PRECONDITIONING = ("diagonal", ("full", "block"), 8)
# The most CG iterations of one Newton step (at least 50, at most the number of parameters).
CG_LIMIT = 500
# The step bound (see minimize_newton_cg): set to the accepted step's length once the line search cut a step to at
# most STEP_CUT of CG's (three halvings: the quadratic model was far off), and raised to STEP_GROWTH times the
# length of each uncut step. Hessian-vector products to the benchmark's tol (one thread), no bound -> this rule:
# digits C=100 403 -> 246, covtype C=100 98 -> 76, news20 C=10 (sparse) 9,170 -> 2,628 (416 -> 170 s); letter,
# pendigits, satimage (C = 1, 100) and digits C=1 unchanged. Setting it after any cut (STEP_CUT = 0.5) took 268,
# 76; an allowance of twice the accepted length with growth 4, 359 and 96 (a sweep of 60 small logistic problems
# started far out, by total evaluations + products: all the rules within 7 % of no bound).
STEP_CUT = 0.125
STEP_GROWTH = 2.0
# The smallest and the largest relative CG tolerance (see minimize_newton_cg).
_FORCING_FLOOR = 1e-4
_FORCING_CEILING = 0.5


@dataclass
class NewtonState:
    """What :func:`minimize_newton_cg` carries from one iteration to the next (the Hessian aside, rebuilt from ``x``).

    ``cg_used`` is the CG iterations of the last step; ``step_bound`` the longest step the next
    iteration may take (see :func:`minimize_newton_cg`), ``inf`` until a step was cut back;
    ``factor_x`` the point whose Hessian's factorisation (of kind ``factor_kind``) is kept as the
    preconditioner, None while the diagonal one is used; ``curve`` the objective after each of the
    ``n_iter`` iterations done.
    """

    x: np.ndarray
    f: float
    g: np.ndarray
    n_iter: int = 0
    curve: list = field(default_factory=list)
    cg_used: int = 0
    step_bound: float = np.inf
    factor_x: np.ndarray | None = None
    factor_kind: str | None = None


def minimize_newton_cg(
    loss_gradient_hessp: Callable[[np.ndarray], tuple[float, np.ndarray, HessianOperator]],
    x0,
    *,
    max_iter: int,
    tol: float,
    callback=None,
    state: NewtonState | None = None,
    on_iteration: Callable[[NewtonState], None] | None = None,
) -> SolverResult:
    """Inexact Newton: preconditioned CG on ``H p = -g``, then a backtracking line search.

    Stopping: CG's solution gives the Newton decrement ``lambda^2 = -g^T p`` (about ``g^T H^-1 g``),
    and ``lambda^2 / 2`` estimates the gap ``f - f*``. The solver stops after the step taken at
    the first iterate with ``lambda^2 / 2 <= tol * |f|`` (Newton converges quadratically, so
    after that step the gap is far below ``tol`` relative), or where the objective no longer
    decreases at machine precision.
    The CG tolerance is the forcing sequence ``min(0.5, max(sqrt(|g|), 1e-4)) * |g|``, which gives
    superlinear convergence until the gradient is reduced 1e4-fold per step (a finer CG tolerance
    asks for more than CG's recurrences can deliver in float64: at ``|g|`` 1e-12 a CG run asked for
    1e-18 drifted, and its step raised ``|g|`` a hundredfold); CG stops after ``max(50, min(n_params, 500))`` iterations in any case.
    Preconditioning: ``H.preconditioner("diagonal")`` (Jacobi, rebuilt each iteration) while CG
    converges quickly; the factorisation is the first of ``("full", "block")`` whose
    ``H.preconditioner_cost`` (in Hessian-vector products) is finite; once a CG run needs more than
    8 iterations and that cost is at most 6 times that count, it is built and reused at the
    following iterations, and rebuilt whenever CG needs more than 8 iterations again.
    The line search tries the full step first (accepted almost always near the optimum) and halves
    it until the Armijo condition holds.
    Step bound: once the line search had to cut a step to at most :data:`STEP_CUT` of its length,
    to ``l``, the next CG runs stop at length ``l`` (the first iterate past it is truncated to it);
    each uncut step lets the next be up to :data:`STEP_GROWTH` times as long (a trust-region radius,
    kept by the line search). Where the Newton step overshoots (nearly separable classes, a weak
    penalty: steps that raised the objective a thousandfold before nine halvings), this saves both
    the halvings and the CG iterations that made the step long: on digits with ``C = 100``, 246
    Hessian-vector products to ``tol=1e-5`` instead of 403, in 0.6x the time (one thread); on
    news20 with ``C = 10``, 2,628 instead of 9,170. Runs whose steps are not cut back that far are
    unchanged.
    Resuming: ``state`` (a :class:`NewtonState` that ``on_iteration(state)`` was given after an
    iteration) continues that run exactly (``x0`` is then unused; the kept factorisation is rebuilt
    from ``factor_x``); ``max_iter`` counts the iterations of the whole run.
    """
    if state is None:
        x = np.asarray(x0, dtype=np.float64).ravel().copy()
        f, g, H = loss_gradient_hessp(x)
        state = NewtonState(x=x, f=f, g=np.asarray(g, dtype=np.float64).ravel())
    else:
        H = loss_gradient_hessp(state.x)[2]
    x, f, g, curve = state.x, state.f, state.g, state.curve
    n_cg = max(50, min(x.size, CG_LIMIT))
    cheap, strong, refresh = PRECONDITIONING
    precondition = None
    if state.factor_x is not None:  # (resumed) the kept factorisation, rebuilt where it was built
        precondition = loss_gradient_hessp(state.factor_x)[2].preconditioner(state.factor_kind)
    converged, message = False, "iteration limit reached"
    while state.n_iter < max_iter:
        if not np.any(g):
            converged, message = True, "gradient zero"
            break
        g_norm = float(np.linalg.norm(g))
        if state.cg_used > refresh:
            costs = {kind: H.preconditioner_cost(kind) for kind in strong}
            kind = next((k for k in strong if np.isfinite(costs[k])), None)
            if kind is not None and costs[kind] <= 6 * state.cg_used:  # CG struggled and the factorisation pays
                precondition = None  # (the kept factorisation goes before the new one is built: one at a time)
                precondition, state.factor_x, state.factor_kind = H.preconditioner(kind), x, kind
        if state.factor_x is None:
            precondition = H.preconditioner(cheap)

        def hessp(v, H=H):
            with np.errstate(over="ignore", invalid="ignore"):  # (out of range: see _pcg's curvature test)
                return np.asarray(H(v), dtype=np.float64).ravel()

        tolerance = min(_FORCING_CEILING, max(np.sqrt(g_norm), _FORCING_FLOOR)) * g_norm
        step, state.cg_used = _pcg(hessp, -g, precondition, tolerance, n_cg, state.step_bound)
        # The Hessian goes before the line search builds the next one: each holds n_samples x n_classes numbers
        # (two of them at once made a fit's peak memory on letter 17.4 MiB, against scikit-learn's 6.7 MiB).
        del hessp
        H = None
        slope = float(np.dot(g, step))
        if slope >= 0:  # not a descent direction (round-off): fall back to steepest descent
            step, slope = -g, -(g_norm**2)
        close = -0.5 * slope <= tol * abs(f)  # the estimated gap is below tol: this step is the last
        t = 1.0
        rounding = -0.5 * slope <= 1e3 * np.finfo(float).eps * abs(f)  # the decrease is below f's rounding
        for _ in range(60):
            # A trial may leave the working dtype's range (a direction of no curvature: the intercept of a
            # class of weight 0 in float32): its objective is then inf or NaN, and the step is halved.
            with np.errstate(over="ignore", invalid="ignore"):
                f_new, g_new, H_new = loss_gradient_hessp(x + t * step)
            if rounding:  # Armijo cannot see a decrease this small: |g| decides, and this step is the last
                if np.linalg.norm(g_new) < g_norm:
                    close = True
                    break
            elif f_new <= f + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            converged, message = True, "line search cannot decrease the objective (machine precision)"
            break
        length = t * float(np.linalg.norm(step))
        if t <= STEP_CUT:
            state.step_bound = length
        elif t == 1:
            state.step_bound = max(state.step_bound, STEP_GROWTH * length)
        x = x + t * step
        # no measurable decrease although the gap estimate is at rounding level: machine precision
        stalled = f - f_new <= 4 * np.finfo(float).eps * abs(f) and -0.5 * slope <= np.sqrt(np.finfo(float).eps) * abs(
            f
        )
        f, g, H = f_new, np.asarray(g_new, dtype=np.float64).ravel(), H_new
        curve.append(float(f))
        state.x, state.f, state.g, state.n_iter = x, f, g, state.n_iter + 1
        if callback is not None and callback(x, float(f)):
            converged, message = True, "stopped by callback"
            break
        if close:
            converged, message = True, "estimated relative gap below tol"
            break
        if stalled:
            converged, message = True, "objective stalled at machine precision"
            break
        if on_iteration is not None:
            on_iteration(state)
    return SolverResult(x, state.n_iter, list(curve), converged, message)


# minimize_auto's probe: L-BFGS's rate is read over the last PROBE_WINDOW iterations once more than PROBE_MIN
# estimates are in, and L-BFGS gives way to Newton-CG when it predicts more than NEWTON_PASSES further iterations
# (about one pass over X each), about what Newton-CG takes. Measured, L-BFGS's relative gap estimates after
# iterations 1 and 3: make_classification(200_000, 100, n_classes=20) 2e-1 and 3e-4 (10 iterations to 1e-6), the
# other well-conditioned make_classification shapes alike; digits 6e-1 and 4e-1, pendigits 4e-1 and 4e-1,
# satimage 2e-1 and 1e-1, letter 5e-1 and 2e-1 (70-120 iterations to 1e-6). Newton-CG alone took 27 passes
# (evaluations + Hessian-vector products) on the first, 55 on letter, 104 on covtype, 141 on digits; switching
# after 3 L-BFGS iterations took 56, 115 and 139 passes on those three (deciding after 4: 5 fewer on letter, 56
# more on covtype).
PROBE_MIN = 2
PROBE_WINDOW = 5
NEWTON_PASSES = 20
# minimize_auto's L-BFGS stops where its estimate is at most this times tol: the estimate was measured up to 6 times
# below the true gap (SoftmaxRegression's tol), and on the well-conditioned benchmark shapes scikit-learn's default fit
# ends 1.8e-7 from the optimum, which L-BFGS at the default tol (1e-5) reaches only at an estimate of 1e-7 (12
# iterations on make_classification(200_000, 100, n_classes=20), against 8 at 1e-5).
LBFGS_TOL_FACTOR = 0.01
# The smallest relative gap L-BFGS is predicted to reach: the objective's rounding (a smaller tol stops it there).
_GAP_FLOOR = 1e-15


def predicted_iterations(gaps: list[float], tol: float) -> float:
    """L-BFGS's iterations still to go, from the relative gap estimates ``gaps`` (one per iteration done).

    The rate is ``(gaps[-1] / gaps[-1 - w]) ** (1 / w)`` over the last ``w = min(PROBE_WINDOW, len - 1)``
    iterations (linear convergence: the gap shrinks by a constant factor per iteration), and the gap
    left to close is ``gaps[-1] / tol`` (``tol`` floored at 1e-15, the objective's
    rounding). 0 until more than :data:`PROBE_MIN` estimates are in or where an estimate is missing
    (``inf``: no curvature pair kept), ``inf`` where the gap does not shrink.
    """
    if len(gaps) <= PROBE_MIN:
        return 0.0
    window = min(PROBE_WINDOW, len(gaps) - 1)
    first, last = gaps[-1 - window], gaps[-1]
    if not (np.isfinite(first) and np.isfinite(last)) or last <= 0:
        return 0.0
    if last >= first:
        return np.inf
    rate = (last / first) ** (1.0 / window)
    return float(np.log(max(last / max(tol, _GAP_FLOOR), 1.0)) / -np.log(rate))


def minimize_auto(loss_gradient, loss_gradient_hessp, x0, *, max_iter: int, tol: float, callback=None) -> SolverResult:
    """L-BFGS while it converges fast, else Newton-CG from where L-BFGS got: ``solver="auto"``'s run.

    L-BFGS (:func:`minimize_lbfgs`) runs one iteration at a time; after each, its estimate of the
    relative gap (``g^T H^-1 g / (2 |f|)``, the quantity ``tol`` bounds) gives its rate of
    convergence, and :func:`predicted_iterations` the iterations it still needs. While that is at
    most :data:`NEWTON_PASSES`, L-BFGS goes on (to the end, exactly as :func:`minimize_lbfgs` would
    with ``tol`` times :data:`LBFGS_TOL_FACTOR`); the first time it is more, Newton-CG
    (:func:`minimize_newton_cg`) starts from L-BFGS's point and finishes. The choice is made from
    measured progress, so that well-conditioned problems (where L-BFGS's iterations, one pass over X
    each, win) and ill-conditioned ones (where Newton-CG's few iterations win) both get their solver,
    whatever their shape. ``max_iter`` counts the iterations of both; the result's ``solver`` says
    which one finished.
    """
    lbfgs_tol = LBFGS_TOL_FACTOR * tol
    state, gaps = start_lbfgs(loss_gradient, x0), []
    result = SolverResult(state.x, state.n_iter, list(state.curve), False, "iteration limit reached")
    while state.n_iter < max_iter:
        result = minimize_lbfgs_resumable(
            loss_gradient, None, max_iter=state.n_iter + 1, tol=lbfgs_tol, callback=callback, state=state
        )
        if result.converged:
            break
        gaps.append(state.gap / max(abs(state.f), np.finfo(np.float64).tiny))
        if predicted_iterations(gaps, lbfgs_tol) > NEWTON_PASSES:
            newton = minimize_newton_cg(
                loss_gradient_hessp, state.x, max_iter=max_iter - state.n_iter, tol=tol, callback=callback
            )
            curve = list(state.curve) + list(newton.loss_curve)
            return SolverResult(
                newton.x, state.n_iter + newton.n_iter, curve, newton.converged, newton.message, solver="newton-cg"
            )
    result.solver = "lbfgs"
    return result


@dataclass
class StochasticState:
    """The state a stochastic solver carries between epochs (and between ``partial_fit`` calls).

    ``method`` is ``"sgd"`` (Nesterov momentum) or ``"adam"``; ``epoch`` counts
    finished epochs and ``step`` finished updates; ``learning_rate`` is the current rate, which the
    ``"adaptive"`` schedule lowers.
    """

    method: str
    learning_rate: float
    epoch: int = 0
    step: int = 0
    velocity: np.ndarray | None = None  # sgd momentum buffer, or Adam's first moment
    second_moment: np.ndarray | None = None  # Adam only
    best_loss: float = np.inf
    bad_epochs: int = 0


# "invscaling": learning_rate / (1 + epoch) ** _POWER_T; Adam's usual constants (Kingma and Ba, 2015).
_POWER_T = 0.5
_BETA_1, _BETA_2, _EPSILON = 0.9, 0.999, 1e-8


def _epoch_learning_rate(state: StochasticState, base: float, schedule: str) -> float:
    if schedule == "invscaling":
        return base / (1.0 + state.epoch) ** _POWER_T
    return state.learning_rate


def stochastic_epoch(
    batch_loss_gradient,
    x: np.ndarray,
    n_samples: int,
    state: StochasticState,
    *,
    batch_size: int,
    learning_rate: float,
    schedule: str = "constant",
    momentum: float = 0.9,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """One pass over ``n_samples`` in shuffled mini-batches; returns the new point and the mean batch objective.

    sgd: ``v <- momentum * v - lr * g``, then ``x <- x + momentum * v - lr * g`` (Nesterov).
    adam: the usual bias-corrected first and second moments (``beta_1 = 0.9``, ``beta_2 = 0.999``,
    ``epsilon = 1e-8``). ``state`` is updated in place; the rate for this epoch is
    ``learning_rate / sqrt(1 + epoch)`` with ``schedule="invscaling"``, else ``state.learning_rate``.
    """
    lr = _epoch_learning_rate(state, learning_rate, schedule)
    order = rng.permutation(n_samples)
    if state.velocity is None:
        state.velocity = np.zeros_like(x)
    if state.method == "adam" and state.second_moment is None:
        state.second_moment = np.zeros_like(x)
    total, weight = 0.0, 0
    for start in range(0, n_samples, batch_size):
        idx = order[start : start + batch_size]
        f, g = batch_loss_gradient(x, idx)
        g = np.asarray(g, dtype=x.dtype).ravel()
        state.step += 1
        if state.method == "adam":
            m, v = state.velocity, state.second_moment
            m *= _BETA_1
            m += (1 - _BETA_1) * g
            v *= _BETA_2
            v += (1 - _BETA_2) * np.square(g)
            lr_t = lr * np.sqrt(1 - _BETA_2**state.step) / (1 - _BETA_1**state.step)
            x = x - lr_t * m / (np.sqrt(v) + _EPSILON)
        else:
            v = state.velocity
            v *= momentum
            v -= lr * g
            x = x + (momentum * v - lr * g)
        total += float(f) * len(idx)
        weight += len(idx)
    state.epoch += 1
    return x, total / max(weight, 1)


def minimize_stochastic(
    batch_loss_gradient,
    x0,
    n_samples: int,
    state: StochasticState,
    *,
    max_iter: int,
    tol: float,
    n_iter_no_change: int,
    rng: np.random.Generator,
    batch_size: int,
    learning_rate: float,
    schedule: str = "constant",
    momentum: float = 0.9,
    callback=None,
    checkpoint=None,
) -> SolverResult:
    """Epochs of :func:`stochastic_epoch` (with these ``batch_size``, ``learning_rate``, ``schedule``,
    ``momentum`` and ``rng``) until the objective stops improving.

    Convergence: the mean batch objective has not improved on the best one by more than ``tol``
    (relative: ``tol * |best|``) for ``n_iter_no_change`` consecutive epochs. With ``schedule="adaptive"`` that event first
    divides the learning rate by 5 (and converges once it is below ``1e-6``).
    ``callback(x, f)`` may stop early (early stopping on a validation set does this).
    Resuming: ``checkpoint`` (a :class:`._checkpoint.CheckpointRun`) gives the point and the
    objective curve to start from (``checkpoint.resume_stochastic(x0, state, rng)``, which restores
    ``state`` and ``rng`` in place; ``max_iter`` counts the epochs done before) and is told
    ``checkpoint.save_stochastic(x, curve, state, rng)`` before each later epoch, a point to resume from.
    """
    epoch_options = {
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "schedule": schedule,
        "momentum": momentum,
    }
    x = np.asarray(x0, dtype=np.float64).ravel().copy()
    curve: list[float] = []
    if checkpoint is not None:
        x, curve = checkpoint.resume_stochastic(x, state, rng)
    converged, message = False, "epoch limit reached"
    for _ in range(max_iter - len(curve)):
        if checkpoint is not None and curve:
            checkpoint.save_stochastic(x, curve, state, rng)
        x, f = stochastic_epoch(batch_loss_gradient, x, n_samples, state, rng=rng, **epoch_options)
        if not np.isfinite(f):
            raise FloatingPointError(f"the objective diverged to {f} at epoch {state.epoch}; lower learning_rate")
        curve.append(f)
        if callback is not None and callback(x, f):
            converged, message = True, "stopped by callback"
            break
        if f > state.best_loss - tol * abs(state.best_loss):
            state.bad_epochs += 1
        else:
            state.bad_epochs = 0
        state.best_loss = min(state.best_loss, f)
        if state.bad_epochs >= n_iter_no_change:
            if schedule == "adaptive" and state.learning_rate > 1e-6:
                state.learning_rate /= 5.0
                state.bad_epochs = 0
                continue
            converged, message = True, f"no improvement above tol for {n_iter_no_change} epochs"
            break
    return SolverResult(x, len(curve), curve, converged, message)
