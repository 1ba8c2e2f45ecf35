"""SciPy's L-BFGS-B (no bounds) stopped by the package's L-BFGS stopping rule: the reference for ``_lbfgs``.

``scipy_lbfgs(loss_gradient, x0, *, max_iter, tol, memory=10) -> (n_iter, f, x)`` runs
:func:`scipy.optimize.minimize` with ``method="L-BFGS-B"`` (its own tests off: ``gtol=0``,
``ftol=64 eps``) and stops it, from its callback, at the first iterate with
``g^T H^-1 g / 2 <= tol |f|``, ``H^-1`` the two-loop recursion's matrix from the last ``memory``
steps with the initial matrix ``max_i (s^T s / s^T y) I``: what ``minimize_lbfgs`` did before it ran
the package's own L-BFGS. Used by ``tests/test_lbfgs.py`` and ``benchmarks/bench_lbfgs.py``.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import scipy.optimize


def _inverse_hessian_product(g, pairs):
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


def scipy_lbfgs(loss_gradient, x0, *, max_iter, tol, memory=10):
    """``(n_iter, f, x)`` of SciPy's L-BFGS-B stopped by the estimated relative gap (see the module docstring)."""
    pairs: deque = deque(maxlen=memory)
    last, done = {}, {"n_iter": 0, "f": None, "x": None}

    def fun(x):
        f, g = loss_gradient(x)
        last["x"], last["g"] = np.array(x), np.asarray(g, dtype=np.float64).ravel()
        return f, last["g"]

    def on_iteration(intermediate_result):
        x, f = intermediate_result.x, float(intermediate_result.fun)
        done.update(n_iter=done["n_iter"] + 1, f=f, x=x.copy())
        assert np.array_equal(last["x"], x)  # SciPy reports its last evaluated point
        g = last["g"]
        if "previous" in last:
            s, y = x - last["previous"][0], g - last["previous"][1]
            if float(np.dot(s, y)) > 1e-12 * float(np.dot(y, y)):
                pairs.append((s, y))
        last["previous"] = (x.copy(), g)
        if pairs and 0.5 * float(np.dot(g, _inverse_hessian_product(g, pairs))) <= tol * abs(f):
            raise StopIteration

    options = {"maxiter": max_iter, "maxls": 50, "gtol": 0.0, "ftol": 64 * np.finfo(float).eps, "maxcor": memory}
    scipy.optimize.minimize(fun, x0, method="L-BFGS-B", jac=True, callback=on_iteration, options=options)
    return done["n_iter"], done["f"], done["x"]
