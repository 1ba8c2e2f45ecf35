"""``solver="auto"``: the solver chosen from the shape of the problem, by a rule measured on many shapes.

:func:`choose_solver` is the rule; the measurements behind it are in its docstring and in
``benchmarks/results/fit.md``.
"""

from __future__ import annotations

from softmaxkit.linear_model import _preconditioners

__all__ = ["choose_solver"]


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
    Newton-CG at 0.1-0.4x scikit-learn's time on letter, pendigits, satimage, covtype and digits
    (full factorisation affordable), against 0.8-1.1x for our L-BFGS; on news20 (62,061 sparse
    features x 20 classes, no factorisation affordable) Newton-CG with Jacobi took 3-5x
    scikit-learn's time (33-38 iterations, thousands of Hessian-vector products) and L-BFGS about
    1x. The numbers of the last run are in ``benchmarks/results/fit.md``.
    """
    options = {"n_features": n_features, "n_classes": n_classes, "fit_intercept": fit_intercept, "nnz": nnz}
    if any(_preconditioners.affordable(kind, **options) for kind in ("full", "block")):
        return "newton-cg"
    return "lbfgs"
