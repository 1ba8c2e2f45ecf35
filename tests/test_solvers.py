"""The solvers of softmaxkit.linear_model._solvers on their own: callables only, no softmax.

Oracles: the closed-form minimiser of a strictly convex quadratic, and SciPy's ``trust-ncg`` at
``gtol=1e-12`` on a small L2-regularised logistic objective. Each full-batch solver must reach
them, stop once their estimate of the relative gap ``(f - f*) / |f|`` is at most ``tol``, report
``converged``, ``n_iter`` and
``loss_curve`` truthfully, obey ``max_iter`` and a callback that returns True; Newton-CG must
need nothing of its Hessian beyond the :class:`~softmaxkit.linear_model._solvers.HessianOperator`
protocol. The stochastic solver is checked on a least-squares objective whose iterates are known
in closed form with a full batch, and gets near the minimum with mini-batches.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.optimize
import scipy.special

from softmaxkit.linear_model import _lbfgs, _solvers

N_PARAMS = 12


class _Quadratic:
    """``f(x) = x^T A x / 2 - b^T x + c`` with ``A`` symmetric positive definite (eigenvalues 1 to ``condition``)
    and ``c`` such that the minimum is 1 (the relative gaps the solvers bound are then plain gaps)."""

    strong_convexity = 1.0  # the smallest eigenvalue of the Hessian

    def __init__(self, rng, condition=100.0, n=N_PARAMS):
        Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
        self.A = (Q * np.geomspace(1.0, condition, n)) @ Q.T
        self.b = rng.normal(size=n)
        self.minimiser = np.linalg.solve(self.A, self.b)
        self.offset = 1.0 + 0.5 * float(self.b @ self.minimiser)
        self.minimum = self(self.minimiser)[0]

    def __call__(self, x):
        Ax = self.A @ x
        return float(0.5 * x @ Ax - self.b @ x + self.offset), Ax - self.b

    def with_hessian(self, x, **options):
        f, g = self(x)
        return f, g, _Operator(self.A, **options)


class _Logistic:
    """``f(w) = mean_i log(1 + exp(-y_i x_i^T w)) + lam |w|^2 / 2``, labels ``y_i`` in {-1, 1}."""

    def __init__(self, rng, n_samples=80, n=N_PARAMS, lam=1e-2):
        self.X = rng.normal(size=(n_samples, n)) * rng.uniform(0.5, 3.0, size=n)
        w_true = rng.normal(size=n)
        self.y = np.where(rng.uniform(size=n_samples) < scipy.special.expit(self.X @ w_true), 1.0, -1.0)
        self.lam = self.strong_convexity = lam

    def __call__(self, w):
        margin = self.y * (self.X @ w)
        f = float(np.mean(np.logaddexp(0.0, -margin)) + 0.5 * self.lam * w @ w)
        g = self.X.T @ (-self.y * scipy.special.expit(-margin)) / len(margin) + self.lam * w
        return f, g

    def hessian(self, w):
        p = scipy.special.expit(self.X @ w)
        return (self.X.T * (p * (1 - p))) @ self.X / len(p) + self.lam * np.eye(len(w))

    def with_hessian(self, w, **options):
        f, g = self(w)
        return f, g, _Operator(self.hessian(w), **options)

    def reference(self):
        """SciPy's trust-region Newton-CG at a tight gradient tolerance."""
        result = scipy.optimize.minimize(
            self,
            np.zeros(self.X.shape[1]),
            jac=True,
            hessp=lambda w, v: self.hessian(w) @ v,
            method="trust-ncg",
            options={"gtol": 1e-10, "maxiter": 1000},
        )
        assert result.success and np.max(np.abs(self(result.x)[1])) <= 1e-10
        return result.x


class _Operator:
    """A Hessian offering exactly the HessianOperator protocol (no ``diagonal``, nothing else)."""

    __slots__ = ("_H", "_block_cost", "_full_cost", "requested")

    def __init__(self, H, *, full_cost=1.0, block_cost=np.inf, requested=None):
        self._H, self._full_cost, self._block_cost = H, full_cost, block_cost
        self.requested = [] if requested is None else requested

    def __call__(self, v):
        return self._H @ v

    def preconditioner(self, kind):
        self.requested.append(kind)
        if kind == "diagonal":
            d = np.diag(self._H).copy()
            return lambda r: r / d
        if kind == "block":  # the two diagonal halves
            half = len(self._H) // 2
            blocks = np.zeros_like(self._H)
            blocks[:half, :half], blocks[half:, half:] = self._H[:half, :half], self._H[half:, half:]
            return lambda r: np.linalg.solve(blocks, r)
        assert kind == "full"
        factor = np.linalg.cholesky(self._H)
        return lambda r: np.linalg.solve(factor.T, np.linalg.solve(factor, r))

    def preconditioner_cost(self, kind):
        return {"diagonal": 0.5, "full": self._full_cost, "block": self._block_cost}[kind]


def _problems(rng):
    return {"quadratic": _Quadratic(rng), "logistic": _Logistic(rng)}


def _minimize(solver, problem, **options):
    x0 = np.zeros(N_PARAMS)
    if solver == "lbfgs":
        return _solvers.minimize_lbfgs(problem, x0, **options)
    return _solvers.minimize_newton_cg(problem.with_hessian, x0, **options)


def _max_gradient(problem, x):
    return float(np.max(np.abs(problem(x)[1])))


# ------------------------------------------------------------------------------- full-batch solvers


def _gap(problem, x, reference):
    """The relative gap ``(f(x) - f*) / |f*|``."""
    f_star = problem(reference)[0]
    return (problem(x)[0] - f_star) / abs(f_star)


def _decrement(problem, x):
    """Half the squared Newton decrement, ``g^T H^-1 g / 2``, relative to ``|f|``: the estimate tol bounds."""
    f, g = problem(x)
    H = problem.A if isinstance(problem, _Quadratic) else problem.hessian(x)
    return 0.5 * float(g @ np.linalg.solve(H, g)) / abs(f)


def _reference(problem, name):
    return problem.minimiser if name == "quadratic" else problem.reference()


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("name", ["quadratic", "logistic"])
def test_reaches_the_reference_minimiser(rng, solver, name):
    problem = _problems(rng)[name]
    reference = _reference(problem, name)
    result = _minimize(solver, problem, max_iter=500, tol=1e-15)  # below rounding: to machine precision
    assert result.converged, result.message
    assert isinstance(result.x, np.ndarray) and result.x.shape == (N_PARAMS,)
    assert _gap(problem, result.x, reference) <= 1e-13  # (64 eps: L-BFGS's relative decrease test)
    g = problem(result.x)[1]
    # strong convexity mu: |x - x*| <= |g(x) - g(x*)| / mu
    mu = problem.strong_convexity
    bound = (np.linalg.norm(g) + np.linalg.norm(problem(reference)[1])) / mu
    assert np.linalg.norm(result.x - reference) <= bound
    tolerance = 1e-8 if solver == "newton-cg" else 1e-6  # (L-BFGS stops where f stops decreasing: ~sqrt(eps))
    np.testing.assert_allclose(result.x, reference, rtol=0, atol=tolerance)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
@pytest.mark.parametrize("name", ["quadratic", "logistic"])
@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-9])
def test_stops_once_the_estimated_gap_is_below_tol_and_reports_truthfully(rng, solver, name, tol):
    problem = _problems(rng)[name]
    reference = _reference(problem, name)
    iterates = []

    def record(x, f):
        iterates.append((np.array(x, copy=True), f))
        return False

    result = _minimize(solver, problem, max_iter=500, tol=tol, callback=record)
    assert result.converged and result.message == "estimated relative gap below tol", result.message
    # one callback, one curve entry per iteration; the curve is the objective at each iterate
    assert result.n_iter == len(result.loss_curve) == len(iterates) >= 1
    np.testing.assert_array_equal(result.loss_curve, [f for _, f in iterates])
    np.testing.assert_allclose(result.loss_curve, [problem(x)[0] for x, _ in iterates], rtol=1e-14)
    np.testing.assert_array_equal(result.x, iterates[-1][0])
    assert all(b <= a for a, b in zip(result.loss_curve, result.loss_curve[1:]))  # non-increasing
    gaps = [_gap(problem, x, reference) for x, _ in iterates]
    starts = [np.zeros(N_PARAMS)] + [x for x, _ in iterates]
    if solver == "newton-cg":
        # the last step was taken from the first iterate whose decrement is below tol (CG's estimate of it, within
        # a factor 2 here); Newton's last step then leaves the gap far below tol
        decrements = [_decrement(problem, x) for x in starts]
        assert decrements[-2] <= 2 * tol and all(d > 0.5 * tol for d in decrements[:-2])
        assert gaps[-1] <= tol
    else:
        # stopped at the first iterate whose L-BFGS estimate is below tol: the true gap there is within a
        # factor 10 of tol (measured on these problems: 0.3 to 3), and it was not yet below tol / 10 before
        assert gaps[-1] <= 10 * tol and all(g > tol / 10 for g in gaps[:-1])


def test_the_inverse_hessian_estimate_is_lbfgs_secant_update(rng):
    """``_inverse_hessian_product`` applies the L-BFGS matrix: it satisfies the newest secant equation
    ``H~^-1 y = s``, and on a quadratic with as many pairs as dimensions (conjugate steps) it is ``A^-1``."""
    problem = _Quadratic(rng, condition=50.0, n=5)
    steps = [rng.normal(size=5) for _ in range(5)]
    pairs = [(s, problem.A @ s) for s in steps]
    s_last, y_last = pairs[-1]
    np.testing.assert_allclose(_lbfgs._inverse_hessian_product(y_last, pairs), s_last, rtol=1e-10)
    g = rng.normal(size=5)
    exact = np.linalg.solve(problem.A, g)
    assert not np.allclose(_lbfgs._inverse_hessian_product(g, pairs[:1]), exact, rtol=1e-2)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_iteration_limit_is_not_convergence(rng, solver):
    problem = _Logistic(rng)
    result = _minimize(solver, problem, max_iter=2, tol=1e-12)
    assert not result.converged
    assert result.n_iter == len(result.loss_curve) == 2
    assert _max_gradient(problem, result.x) > 1e-12


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg"])
def test_a_callback_returning_true_stops_the_solver(rng, solver):
    problem = _Logistic(rng)
    calls = []

    def stop_at_the_third(x, f):
        calls.append(f)
        return len(calls) == 3

    result = _minimize(solver, problem, max_iter=500, tol=1e-12, callback=stop_at_the_third)
    assert len(calls) == 3 and result.n_iter == 3 and result.loss_curve == calls
    assert result.converged  # a requested stop (early stopping) is not a failure to converge
    assert _max_gradient(problem, result.x) > 1e-12


def test_cg_truncates_its_solution_at_the_step_bound(rng):
    problem = _Quadratic(rng, condition=1e3)
    b = -problem(np.zeros(N_PARAMS))[1]
    hessp, identity = (lambda v: problem.A @ v), (lambda r: r)
    unbounded, _ = _solvers._pcg(hessp, b, identity, 1e-14, 200)
    np.testing.assert_allclose(unbounded, problem.minimiser, rtol=1e-8)
    for bound in (1e-3, 0.3 * np.linalg.norm(unbounded)):
        x, n_iter = _solvers._pcg(hessp, b, identity, 1e-14, 200, bound)
        assert np.linalg.norm(x) == pytest.approx(bound, rel=1e-12)
        assert float(b @ x) > 0 and n_iter < 200  # a descent direction, found before CG converged
    assert np.array_equal(_solvers._pcg(hessp, b, identity, 1e-14, 200, 10 * np.linalg.norm(unbounded))[0], unbounded)
    flat = lambda v: np.zeros_like(v)  # no curvature at all: steepest descent, cut to the bound
    np.testing.assert_allclose(_solvers._pcg(flat, b, identity, 1e-14, 200, 1e-3)[0], 1e-3 * b / np.linalg.norm(b))
    assert np.array_equal(_solvers._pcg(flat, b, identity, 1e-14, 200)[0], b)


def test_newton_cg_bounds_each_step_by_the_last_cut_back_one():
    """Started far out on the wrong side (probabilities saturated, curvature tiny), full Newton steps overshoot."""
    rng = np.random.default_rng(1)  # (a problem whose run truncates CG at the bound, besides cutting steps back)
    problem = _Logistic(rng, n_samples=60, lam=1e-4)
    states = []
    result = _solvers.minimize_newton_cg(
        problem.with_hessian,
        -10 * rng.normal(size=N_PARAMS),
        max_iter=200,
        tol=1e-12,
        on_iteration=lambda state: states.append((state.x.copy(), state.step_bound)),
    )
    assert result.converged
    assert np.isfinite([bound for _, bound in states]).any()  # a step was cut back: the bound was in force
    truncated = 0
    for (x, bound), (x_next, _) in itertools.pairwise(states):
        length = np.linalg.norm(x_next - x)
        assert length <= bound * (1 + 1e-9)
        truncated += bool(length >= bound * (1 - 1e-9))
    assert truncated  # some CG run was stopped by the bound (and its step then taken whole)
    assert _gap(problem, result.x, problem.reference()) <= 1e-12


def test_newton_cg_builds_the_full_preconditioner_only_when_cg_struggles_and_it_pays(rng):
    # condition 1e6 in a rotated basis: the Jacobi preconditioner leaves CG needing many iterations
    problem = _Quadratic(rng, condition=1e6)
    for full_cost, expect_full in [(1.0, True), (np.inf, False)]:
        requested = []

        def with_hessian(x, full_cost=full_cost, requested=requested):
            return problem.with_hessian(x, full_cost=full_cost, requested=requested)

        result = _solvers.minimize_newton_cg(with_hessian, np.zeros(N_PARAMS), max_iter=100, tol=1e-12)
        assert result.converged
        np.testing.assert_allclose(result.x, problem.minimiser, rtol=1e-6, atol=1e-8)
        assert requested[0] == "diagonal"
        assert ("full" in requested) is expect_full
        assert "block" not in requested  # (its cost is infinite here: not affordable)


def test_newton_cg_takes_the_block_factorisation_when_the_full_one_is_not_affordable(rng):
    problem = _Quadratic(rng, condition=1e6)
    for full_cost, block_cost, expected in [(np.inf, 1.0, "block"), (1.0, 1.0, "full"), (1e4, 1.0, None)]:
        requested = []

        def with_hessian(x, full_cost=full_cost, block_cost=block_cost, requested=requested):
            return problem.with_hessian(x, full_cost=full_cost, block_cost=block_cost, requested=requested)

        result = _solvers.minimize_newton_cg(with_hessian, np.zeros(N_PARAMS), max_iter=200, tol=1e-12)
        assert result.converged
        np.testing.assert_allclose(result.x, problem.minimiser, rtol=1e-6, atol=1e-8)
        factorisations = set(requested) - {"diagonal"}
        # "full" is preferred whenever affordable: at cost 1e4 it never pays, and "block" is not taken instead
        assert factorisations == ({expected} if expected else set()), requested


# ------------------------------------------------------------------------------- the stochastic solver


class _LeastSquares:
    """``f(x) = mean_i |x - a_i|^2 / 2``, minimised at ``mean(a)``; a batch gives the mean over its rows."""

    def __init__(self, rng, n_samples=200, scale=None):
        self.a = rng.normal(size=(n_samples, N_PARAMS)) + 3.0
        self.scale = np.ones(N_PARAMS) if scale is None else scale  # per-coordinate curvature
        self.minimiser = self.a.mean(axis=0)
        self.calls = 0

    def value(self, x):
        return float(np.mean(0.5 * np.sum(self.scale * (x - self.a) ** 2, axis=1)))

    def __call__(self, x, indices):
        self.calls += 1
        diff = x - self.a[indices]
        return float(np.mean(0.5 * np.sum(self.scale * diff**2, axis=1))), self.scale * diff.mean(axis=0)


def _stochastic(problem, method, *, max_iter, tol=0.0, n_iter_no_change=5, callback=None, **options):
    state = _solvers.StochasticState(method=method, learning_rate=options["learning_rate"])
    result = _solvers.minimize_stochastic(
        problem,
        np.zeros(N_PARAMS),
        len(problem.a),
        state,
        max_iter=max_iter,
        tol=tol,
        n_iter_no_change=n_iter_no_change,
        rng=np.random.default_rng(0),
        callback=callback,
        **options,
    )
    return result, state


def test_full_batch_sgd_takes_the_known_gradient_steps(rng):
    """One batch per epoch, no momentum, step 0.5: the error to the minimiser halves every epoch, exactly."""
    problem = _LeastSquares(rng)
    result, state = _stochastic(problem, "sgd", max_iter=10, batch_size=200, learning_rate=0.5, momentum=0.0)
    np.testing.assert_allclose(result.x, problem.minimiser * (1 - 0.5**10), rtol=1e-13)
    assert not result.converged and result.n_iter == len(result.loss_curve) == 10 == state.epoch == state.step
    # the curve is the objective at the start of each epoch (one batch: the whole set)
    x_before = [problem.minimiser * (1 - 0.5**k) for k in range(10)]
    np.testing.assert_allclose(result.loss_curve, [problem.value(x) for x in x_before], rtol=1e-13)


@pytest.mark.parametrize(
    "method, options",
    [
        ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "schedule": "constant"}),
        ("sgd", {"learning_rate": 0.5, "momentum": 0.0, "schedule": "invscaling"}),
        ("adam", {"learning_rate": 0.1, "schedule": "invscaling"}),
    ],
)
def test_mini_batches_get_near_the_minimum(rng, method, options):
    problem = _LeastSquares(rng, scale=np.geomspace(0.2, 2.0, N_PARAMS))  # curvature 0.2 to 2
    start_gap = problem.value(np.zeros(N_PARAMS)) - problem.value(problem.minimiser)
    result, state = _stochastic(problem, method, max_iter=60, n_iter_no_change=60, batch_size=16, **options)
    assert problem.calls == 60 * 13 == state.step  # ceil(200 / 16) batches per epoch
    gap = problem.value(result.x) - problem.value(problem.minimiser)
    assert 0 <= gap <= 1e-3 * start_gap, gap / start_gap
    # the epoch curve (mean batch objective) falls to the objective's floor, mean_i |a_i - mean(a)|^2 / 2
    floor = problem.value(problem.minimiser)
    assert result.loss_curve[-1] - floor < 1e-2 * (result.loss_curve[0] - floor)


def test_stochastic_convergence_is_no_improvement_for_n_iter_no_change_epochs(rng):
    problem = _LeastSquares(rng)

    def flat(x, indices):  # a constant objective: the first epoch sets the best, none improves on it
        return 1.0, np.zeros_like(x)

    state = _solvers.StochasticState(method="sgd", learning_rate=0.1)
    result = _solvers.minimize_stochastic(
        flat, np.zeros(N_PARAMS), 50, state, max_iter=100, tol=1e-4, n_iter_no_change=4,
        rng=np.random.default_rng(0), batch_size=10, learning_rate=0.1,
    )  # fmt: skip
    assert result.converged and result.n_iter == len(result.loss_curve) == 5
    # "adaptive": each stall first divides the rate by 5, until it is below 1e-6
    state = _solvers.StochasticState(method="sgd", learning_rate=0.1)
    result = _solvers.minimize_stochastic(
        flat, np.zeros(N_PARAMS), 50, state, max_iter=100, tol=1e-4, n_iter_no_change=4,
        rng=np.random.default_rng(0), batch_size=10, learning_rate=0.1, schedule="adaptive",
    )  # fmt: skip
    # 0.1 / 5**7 > 1e-6 is divided once more, 0.1 / 5**8 < 1e-6 is not: 8 divisions, then the 9th stall stops it
    assert result.converged and state.learning_rate == pytest.approx(0.1 / 5**8) and result.n_iter == 1 + 4 * 9
    # a real decrease is never a stall
    result, _ = _stochastic(problem, "sgd", max_iter=8, tol=0.0, n_iter_no_change=1, batch_size=200,
                            learning_rate=0.5, momentum=0.0)  # fmt: skip
    assert not result.converged and result.n_iter == 8


def test_stochastic_callback_stops_and_divergence_is_an_error(rng):
    problem = _LeastSquares(rng)
    calls = []
    result, _ = _stochastic(
        problem, "adam", max_iter=50, batch_size=20, learning_rate=0.1, callback=lambda x, f: calls.append(f) or True
    )
    assert result.converged and result.n_iter == len(calls) == 1 and result.loss_curve == calls
    # step 3 on curvature 1 doubles the error every step: the objective overflows after about 500 epochs
    with np.errstate(over="ignore"), pytest.raises(FloatingPointError, match="the objective diverged to inf at epoch"):
        _stochastic(
            problem, "sgd", max_iter=2000, n_iter_no_change=2000, batch_size=200, learning_rate=3.0, momentum=0.0
        )
