"""What every solver of :mod:`._solvers` returns (its own module, so that :mod:`._lbfgs` needs nothing else of them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SolverResult"]


@dataclass
class SolverResult:
    """What a solver returns: the point, the iterations done, the objective after each, and whether it converged."""

    x: np.ndarray
    n_iter: int
    loss_curve: list[float]
    converged: bool
    message: str = ""
    solver: str | None = None  # the solver that ran (set where a rule chose it: minimize_auto)
