"""``solver="auto"``: the solver chosen from the problem, by rules measured on many problems.

Two rules, applied in turn by :meth:`SoftmaxRegression.fit <softmaxkit.linear_model.SoftmaxRegression.fit>`
(through :func:`._fitting.resolve_solver`):

1. the shape (:func:`choose_solver`): L-BFGS where no factorisation of the Hessian fits the memory
   rule (many features times classes, typically sparse text), else Newton-CG is allowed;
2. where Newton-CG is allowed, the size of a pass (:func:`probes_lbfgs`): below :data:`PROBE_PASS`
   multiply-adds Newton-CG runs; from it, :func:`._solvers.minimize_auto` runs, which starts with
   L-BFGS and switches to Newton-CG from
   L-BFGS's point when L-BFGS's measured rate of convergence predicts more than
   :data:`._solvers.NEWTON_PASSES` further iterations. The shape cannot tell a well-conditioned
   problem (where L-BFGS, one pass per iteration, wins) from an ill-conditioned one (where Newton-CG
   wins); three iterations of L-BFGS can.

Measured (``benchmarks/bench_fit.py``, time to ``LogisticRegression(tol=1e-10)``'s objective within
1e-6, one thread, the 2-core machine under load 5-6; ratios to scikit-learn's time in the same
interleaved rounds; two runs, with a float32 phase since removed, see below): ``make_classification(200_000, 100,
n_informative=50, n_classes=20)``
0.70-0.71x (Newton-CG alone 0.77-1.22x: 4 Newton iterations with 21 Hessian-vector products and 6
evaluations, against L-BFGS's 10 iterations); ``make_classification(50_000, 500, n_informative=100,
n_classes=10)`` 0.74-1.01x (Newton-CG 1.16-1.33x); on the library's default threads 0.10-0.14x and
0.12-0.71x. Before these rules "auto" ran Newton-CG on both: 1.19x and 1.17x. Without the float32 phase, in
``bench_fit.py``'s process at load 1-2: 0.56x and 0.81x (``"lbfgs"`` 0.61x and 0.77x).
A float32 phase (L-BFGS's first iterations on a float32 copy of ``X``) was tried and removed. Fits run back to
back (one thread) took 0.73x and 0.85x the time of ``solver="lbfgs"`` with it, but in ``bench_fit.py`` it
took 0.85x and 0.98-1.97x scikit-learn's time, against 0.56x and 0.81x without it. The cause is the copy's
fresh memory. This machine's virtual memory gives freed pages back to its host about 2 s after they are freed;
touching such pages again cost 4-10 ms per MiB (a first touch of 64 MiB: 0.62 s, against 15-25 ms for pages
still held). On the synthetic shape, the phase saved 0.2 s in fits run back to back and nothing with 4 s
between fits (1.53 against 1.73 s, then 1.77 against 1.79 s). It also cost half of ``X``'s memory more at
the peak.
The ill-conditioned sets keep Newton-CG: letter (above :data:`PROBE_PASS`) switches after three L-BFGS
iterations, with about as many passes in all as Newton-CG alone (4 evaluations + 9 Newton evaluations
+ 43 products against 10 + 45); pendigits, satimage, covtype and digits are below it. Fits with a
checkpoint (which saves one solver's state), fits of data sources and data-parallel fits apply rule 1
only.
"""

from __future__ import annotations

from softmaxkit.linear_model import _preconditioners

__all__ = ["PROBE_PASS", "choose_solver", "probes_lbfgs"]

# Multiply-adds of one pass over the data (nnz(X) * n_classes) from which "auto" probes L-BFGS before Newton-CG
# (probes_lbfgs). Below it a pass costs less than the solvers' own work per iteration (about 0.2 ms), so Newton-CG's
# few iterations win whatever the conditioning, and the probe's passes are overhead. Measured (one thread, each at
# the tol that reaches scikit-learn's optimum within 1e-6; medians of 10 interleaved rounds): digits (9.2e5 per
# pass) newton-cg 22.4 ms, with the probe 27.1 ms; iris 2.2 against 2.7 ms; make_classification 400 x 5 x 3
# newton-cg 2.2 ms, lbfgs 3.1 ms. benchmarks/bench_auto.py (medians of 5 rounds, load 2): 4,000 x 50 x 10 (2e6)
# about even (newton-cg 28 ms, lbfgs 30-32 ms); 2,400 x 200 x 10 (4.8e6) lbfgs 62-67 ms, newton-cg 76 ms;
# 8,000 x 100 x 20 (1.6e7) lbfgs 63-70 ms, newton-cg 83 ms.
PROBE_PASS = 4_000_000


def choose_solver(*, n_samples: int, n_features: int, n_classes: int, nnz: int, fit_intercept: bool = True) -> str:
    """``"newton-cg"`` when a factorisation can precondition its CG, else ``"lbfgs"``.

    Newton-CG converges in 5-15 iterations, but each costs as many Hessian-vector products as its
    conjugate gradients need, and near the optimum they need tens to hundreds of them unless a
    factorisation of the Hessian ("full", or the per-class "block" of :mod:`._preconditioners`)
    preconditions them: then one to a few. So "auto" is Newton-CG when one of those factorisations
    fits the memory rule of :func:`._preconditioners.affordable` (its matrix at most
    ``max(2**22, nnz(X))`` numbers: moderate ``n_features * n_classes``), and L-BFGS otherwise
    (many features times classes, typically sparse text), where each iteration costs one pass.

    Measured (``benchmarks/bench_fit.py``, time to scikit-learn's optimum within 1e-6, one thread):
    Newton-CG at 0.1-0.4x scikit-learn's time on letter, pendigits, satimage and covtype
    (full factorisation affordable), against 0.8-1.1x for our L-BFGS; on news20 (62,061 sparse
    features x 20 classes, no factorisation affordable) Newton-CG with Jacobi took 3-5x
    scikit-learn's time (33-38 iterations, thousands of Hessian-vector products) and L-BFGS about
    1x. The numbers of the last run are in ``benchmarks/results/fit.md``.

    Small and mid-size dense problems (``benchmarks/bench_auto.py``: the toy sets, ``make_classification``
    with 5-200 features, 3-50 classes, 500-50,000 rows, and unstandardised sets; the last run is in
    ``benchmarks/results/auto.md``) are allowed Newton-CG by this rule (the ones from :data:`PROBE_PASS`
    multiply-adds per pass then start with L-BFGS: see the module docstring). On one thread, under load
    10-11, before that second rule, our Newton-CG took
    0.5-1.5x scikit-learn's time to its optimum on the mid-size sets (digits 0.7x, 40,000 x 20 x 50 0.5x;
    the well-conditioned ``make_classification`` sets, which scikit-learn's L-BFGS solves in 10-13
    iterations, 1.0-1.5x) and 0.9-2.6x on the toy sets (fits of 3-8 ms, where one solver's medians
    varied up to 2.5x); our L-BFGS took 0.6-4x, faster than our Newton-CG by at most 10% on three of the
    well-conditioned sets and 2-3x slower on the toy sets: SciPy's L-BFGS-B costs about 0.18 ms per
    iteration of its own at 650 parameters (a quadratic, 300 iterations), more than one evaluation on
    digits, and tiny problems need as many iterations as large ones. Unstandardised (5,000 x 20 x 5,
    feature scales 1e-3 to 1e3), Newton-CG reached in 3 iterations (31 ms) an objective 3.5e-3 below the
    one scikit-learn's L-BFGS stopped at after 14,235 (35 s). On the library's default threads
    scikit-learn's fits took 10-50 times as long on those problems (two threads on a
    busy 2-core machine) and ours, on one BLAS thread below :data:`._threads.SMALL_PASS`, did not:
    0.01-0.4x. Within Newton-CG the factorisation is built where its measured cost pays (see
    :func:`._preconditioners.cost`): digits no longer builds its 650 x 650 one.
    """
    options = {"n_features": n_features, "n_classes": n_classes, "fit_intercept": fit_intercept, "nnz": nnz}
    if any(_preconditioners.affordable(kind, **options) for kind in ("full", "block")):
        return "newton-cg"
    return "lbfgs"


def probes_lbfgs(*, nnz: int, n_classes: int) -> bool:
    """Whether "auto", where :func:`choose_solver` allows Newton-CG, starts with L-BFGS and switches by its progress.

    True from :data:`PROBE_PASS` multiply-adds per pass (``nnz * n_classes``): then
    :func:`._solvers.minimize_auto` runs, which keeps L-BFGS where it converges fast (well-conditioned
    problems, where its iterations of one pass each beat Newton-CG's Hessian-vector products) and
    gives way to Newton-CG after a few iterations where it does not.
    """
    return nnz * n_classes >= PROBE_PASS
