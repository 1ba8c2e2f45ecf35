r"""The multinomial linear loss: objective, gradient and Hessian-vector product of softmax regression.

This is the middle layer between the cross-entropy of :mod:`softmaxkit` (which it calls, never
re-implements) and the solvers of :mod:`softmaxkit.linear_model._solvers` (which only see the
callables built from these functions).

Parameters are stored as one array ``coef`` of shape ``(n_classes, n_features + fit_intercept)``:
``W = coef[:, :n_features]`` and, with an intercept, ``b = coef[:, n_features]``.
For samples :math:`x_i` with targets :math:`y_i` and non-negative weights :math:`s_i`
(``sample_weight``; ``None`` means all ones) the objective is

.. math::

    L(W, b) = \frac{1}{\sum_i s_i} \sum_i s_i \, \mathrm{CE}(y_i, W x_i + b)
              + \frac{\alpha}{2} \lVert W \rVert_F^2 ,

where :math:`\mathrm{CE}` is :func:`softmaxkit.cross_entropy` per sample (with its
``label_smoothing``), the intercept is not penalised, and ``y_i`` is either a class index or a
row of class probabilities. With :math:`p_i = \mathrm{softmax}(z_i)`, :math:`z_i = W x_i + b`
and :math:`g_i = \partial \mathrm{CE} / \partial z_i` (which is :math:`p_i - y_i` for
unsmoothed targets), the gradient and the Hessian applied to a direction :math:`(V, c)` are

.. math::

    \nabla_W L = \sum_i w_i \, g_i x_i^\top + \alpha W, \qquad
    \nabla_b L = \sum_i w_i \, g_i, \qquad w_i = s_i / \textstyle\sum_j s_j,

    H[V, c]_W = \sum_i w_i \, r_i x_i^\top + \alpha V, \qquad H[V, c]_b = \sum_i w_i \, r_i,
    \qquad r_i = p_i \odot (u_i - p_i^\top u_i), \quad u_i = V x_i + c .

The Hessian of the cross-entropy with respect to the logits, :math:`\mathrm{diag}(p) - p p^\top`,
does not depend on the target, so the same product serves hard, soft and smoothed labels.
"""

from __future__ import annotations

import numpy as np

from softmaxkit._numpy._cross_entropy import cross_entropy_with_grad
from softmaxkit._numpy._softmax import softmax

__all__ = ["HessianOperator", "gradient", "loss", "loss_gradient", "loss_gradient_hessp"]

# Rows of the full Hessian's rank-k update per chunk: 2**22 numbers (32 MiB) of Q at a time.
_CHUNK_ELEMENTS = 2**22


def _split(coef: np.ndarray, n_features: int, fit_intercept: bool) -> tuple[np.ndarray, np.ndarray | None]:
    expected = n_features + int(fit_intercept)
    if coef.ndim != 2 or coef.shape[1] != expected:
        raise ValueError(
            f"coef must have shape (n_classes, {expected}) for {n_features} features "
            f"{'with' if fit_intercept else 'without'} an intercept, got shape {coef.shape}"
        )
    if fit_intercept:  # contiguous copies: BLAS is much faster on them than on strided views
        return np.ascontiguousarray(coef[:, :n_features]), np.ascontiguousarray(coef[:, n_features])
    return coef, None


def _weights(sample_weight, n_samples: int, dtype) -> np.ndarray | None:
    """``s_i / sum_j s_j``, or ``None`` for the plain mean."""
    if sample_weight is None:
        return None
    sample_weight = np.asarray(sample_weight, dtype=dtype)
    if sample_weight.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got shape {sample_weight.shape}")
    total = sample_weight.sum(dtype=np.float64)
    if not total > 0:
        raise ValueError(f"sample_weight must have a positive sum, got {total}")
    return sample_weight / sample_weight.dtype.type(total)


def _logits(W: np.ndarray, b: np.ndarray | None, X: np.ndarray) -> np.ndarray:
    z = X @ W.T
    if b is not None:
        z += b
    return z


def _pack(grad_W: np.ndarray, grad_b: np.ndarray | None) -> np.ndarray:
    if grad_b is None:
        return grad_W
    return np.concatenate([grad_W, grad_b[:, None]], axis=1)


def _forward(coef, X, target, sample_weight, alpha, fit_intercept, label_smoothing):
    """Loss and ``w_i g_i`` rows from one fused cross-entropy pass."""
    W, b = _split(coef, X.shape[1], fit_intercept)
    z = _logits(W, b, X)
    per_sample, grad_z = cross_entropy_with_grad(z, target, reduction="none", label_smoothing=label_smoothing)
    w = _weights(sample_weight, X.shape[0], z.dtype)
    if w is None:
        data_loss = float(np.mean(per_sample, dtype=np.float64))
        grad_z *= grad_z.dtype.type(1.0 / X.shape[0])
    else:
        data_loss = float(np.dot(w, per_sample))
        grad_z *= w[:, None]
    penalty = 0.5 * alpha * float(np.vdot(W, W))
    return data_loss + penalty, grad_z, z, w, W


def _grad_from_rows(grad_z, X, W, alpha, fit_intercept):
    grad_W = grad_z.T @ X
    if alpha:
        grad_W += alpha * W
    return _pack(grad_W, grad_z.sum(axis=0) if fit_intercept else None)


def loss(coef, X, target, sample_weight=None, alpha=0.0, *, fit_intercept=True, label_smoothing=0.0) -> float:
    r"""The objective :math:`L(W, b)` of the module docstring.

    Parameters
    ----------
    coef : ndarray of shape (n_classes, n_features + fit_intercept)
        Weights, with the intercept as the last column when ``fit_intercept``.
    X : ndarray of shape (n_samples, n_features)
    target : ndarray of shape (n_samples,) of class indices, or (n_samples, n_classes) of probabilities
    sample_weight : ndarray of shape (n_samples,), optional
        Non-negative weights :math:`s_i`; ``None`` means all ones.
    alpha : float, default 0.0
        L2 penalty strength on ``W``.
    fit_intercept : bool, default True
    label_smoothing : float, default 0.0
        As in :func:`softmaxkit.cross_entropy`.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> coef = np.zeros((3, 3))
    >>> bool(np.isclose(loss(coef, X, np.array([0, 2])), np.log(3)))
    True
    """
    return loss_gradient(
        coef, X, target, sample_weight, alpha, fit_intercept=fit_intercept, label_smoothing=label_smoothing
    )[0]


def gradient(coef, X, target, sample_weight=None, alpha=0.0, *, fit_intercept=True, label_smoothing=0.0) -> np.ndarray:
    """The gradient of :func:`loss` with respect to ``coef`` (same shape as ``coef``)."""
    return loss_gradient(
        coef, X, target, sample_weight, alpha, fit_intercept=fit_intercept, label_smoothing=label_smoothing
    )[1]


def loss_gradient(
    coef, X, target, sample_weight=None, alpha=0.0, *, fit_intercept=True, label_smoothing=0.0
) -> tuple[float, np.ndarray]:
    """``(loss, gradient)`` from one pass: two matrix products and one fused cross-entropy.

    Arguments as in :func:`loss`; the gradient has the shape of ``coef``.
    """
    value, grad_z, _, _, W = _forward(coef, X, target, sample_weight, alpha, fit_intercept, label_smoothing)
    return value, _grad_from_rows(grad_z, X, W, alpha, fit_intercept)


class HessianOperator:
    """The Hessian of :func:`loss` at one point, as a linear operator on arrays shaped like ``coef``.

    Built by :func:`loss_gradient_hessp`; the class probabilities are computed on first use.
    ``H(v)`` is the Hessian-vector product, :meth:`diagonal` the Hessian's diagonal (for
    preconditioning), both with the formulas of the module docstring, in the dtype of ``X``.
    """

    def __init__(self, X, logits, weights, alpha, fit_intercept, coef_shape, X_squared=None):
        self._X = X
        self._logits = logits
        self._w = weights
        self._alpha = alpha
        self._fit_intercept = fit_intercept
        self.shape = coef_shape
        self._proba = None
        self._X_squared = X_squared

    def _weighted_proba(self):
        """``p_i`` and ``w_i p_i`` (the probabilities times the normalised sample weights)."""
        if self._proba is None:
            p = softmax(self._logits, axis=1)
            n_samples = p.shape[0]
            wp = p * (1.0 / n_samples) if self._w is None else p * self._w[:, None]
            self._proba = (p, wp)
        return self._proba

    def __call__(self, v: np.ndarray) -> np.ndarray:
        X = self._X
        v = np.asarray(v, dtype=X.dtype).reshape(self.shape)
        n_features = X.shape[1]
        V, c = _split(v, n_features, self._fit_intercept)
        u = _logits(V, c, X)
        p, wp = self._weighted_proba()
        # r_i w_i = w_i p_i * (u_i - p_i . u_i)
        u -= np.einsum("ij,ij->i", p, u)[:, None]
        u *= wp
        out_W = u.T @ X
        if self._alpha:
            out_W += self._alpha * V
        return _pack(out_W, u.sum(axis=0) if self._fit_intercept else None)

    def diagonal(self) -> np.ndarray:
        """``H[k, j; k, j] = sum_i w_i p_ik (1 - p_ik) x_ij^2 (+ alpha on W)``."""
        p, wp = self._weighted_proba()
        d = wp * (1.0 - p)
        if self._X_squared is None:
            self._X_squared = np.square(self._X)
        diag_W = d.T @ self._X_squared
        if self._alpha:
            diag_W += self._alpha
        return _pack(diag_W, d.sum(axis=0) if self._fit_intercept else None)

    def full_preconditioner(self, *, max_samples: int | None = None, seed: int = 0):
        r"""The exact inverse of the Hessian at this point, as a function (a Cholesky solve).

        The Hessian :math:`\sum_i w_i (\mathrm{diag}(p_i) - p_i p_i^\top) \otimes \tilde x_i
        \tilde x_i^\top + \alpha I_W` is formed explicitly (``n_params**2`` memory, about
        ``n_samples * n_params**2 / 2`` operations, with ``n_params = n_classes * (n_features + 1)``),
        from at most ``max_samples`` rows. The intercept direction that leaves the loss unchanged
        (all intercepts shifted together) gets a tiny ridge. Used to precondition CG near the
        optimum, where the Hessian changes little between Newton iterations.
        """
        import scipy.linalg
        from scipy.linalg.blas import dsyrk

        p, wp = self._weighted_proba()
        X = self._X
        n_samples, n_features = X.shape
        n_classes = p.shape[1]
        scale = 1.0
        rows = None
        if max_samples is not None and n_samples > max_samples:
            rows = np.sort(np.random.default_rng(seed).choice(n_samples, max_samples, replace=False))
            scale = n_samples / max_samples
        size = n_features + int(self._fit_intercept)
        n_params = n_classes * size
        hessian = np.zeros((n_params, n_params), order="F")
        outer = np.zeros((n_params, n_params), order="F")
        chunk = max(1, _CHUNK_ELEMENTS // n_params)
        index = np.arange(n_samples) if rows is None else rows
        for start in range(0, len(index), chunk):
            sel = index[start : start + chunk]
            Xc = X[sel].astype(np.float64, copy=False)
            if self._fit_intercept:
                Xc = np.hstack([Xc, np.ones((len(sel), 1))])
            pc, wpc = p[sel].astype(np.float64, copy=False), wp[sel].astype(np.float64, copy=False) * scale
            for k in range(n_classes):  # diag(p) part, block k
                block = slice(k * size, (k + 1) * size)
                hessian[block, block] += (Xc * wpc[:, k : k + 1]).T @ Xc
            # - p p^T part: Q^T Q with Q_i = sqrt(w_i) p_i (x) x_i, via a symmetric rank-k update
            wc = np.full(len(sel), 1.0 / n_samples) if self._w is None else self._w[sel].astype(np.float64)
            root_w = np.sqrt(wc * scale)[:, None]
            Q = ((root_w * pc)[:, :, None] * Xc[:, None, :]).reshape(len(sel), n_params).astype(outer.dtype)
            outer = dsyrk(1.0, Q.T, beta=1.0, c=outer, trans=0, lower=0, overwrite_c=1)
        hessian -= outer  # upper triangles (the Cholesky factorisation reads only those)
        diagonal = np.arange(n_params)
        ridge = np.full(size, self._alpha)
        if self._fit_intercept:
            ridge[-1] = 0.0
        hessian[diagonal, diagonal] += np.tile(ridge, n_classes)
        hessian[diagonal, diagonal] += 1e-10 * (np.trace(hessian) / n_params + 1e-300)
        factor = scipy.linalg.cho_factor(hessian, lower=False, overwrite_a=True, check_finite=False)

        def solve(r):
            return scipy.linalg.cho_solve(factor, np.asarray(r, dtype=np.float64).ravel(), check_finite=False)

        return solve

    def _full_rows(self) -> int:
        n_samples = self._X.shape[0]
        n_params = int(np.prod(self.shape))
        return min(n_samples, max(2 * n_params, 480 * n_samples // n_params))

    def preconditioner_cost(self, kind: str) -> float:
        """The cost of building ``preconditioner(kind)``, in Hessian-vector products (a flop estimate)."""
        n_samples, n_features = self._X.shape
        size = n_features + int(self._fit_intercept)
        n_params = int(np.prod(self.shape))
        if kind == "diagonal":
            return 0.5
        return size / 4.0 + self._full_rows() * n_params / (8.0 * n_samples)

    def preconditioner(self, kind: str):
        """A function approximating ``H^-1 r``: ``kind`` is "diagonal" or "full".

        "diagonal" divides by :meth:`diagonal`; "full" is :meth:`full_preconditioner` from at most ``max(2 n_params, 480 n_samples / n_params)`` rows,
        which keeps its cost near that of 60 Hessian-vector products.
        """
        if kind == "full":
            # cost of the full Hessian ~ m P^2 / 2 against 4 n P per product: cap it near 60 products
            return self.full_preconditioner(max_samples=self._full_rows())
        diag = np.asarray(self.diagonal(), dtype=np.float64).ravel()
        diag = np.maximum(diag, 1e-12 * max(float(diag.max()), 1e-300))
        return lambda r: np.asarray(r, dtype=np.float64).ravel() / diag


def loss_gradient_hessp(
    coef,
    X,
    target,
    sample_weight=None,
    alpha=0.0,
    *,
    fit_intercept=True,
    label_smoothing=0.0,
    X_squared=None,
) -> tuple[float, np.ndarray, HessianOperator]:
    """``(loss, gradient, hessp)``: :func:`loss_gradient` plus the Hessian operator at ``coef``.

    ``hessp(v)`` returns the Hessian-vector product for ``v`` shaped like ``coef`` (the formula is
    in the module docstring); it reuses the logits of this pass, so each product costs two
    matrix products. ``X_squared``, optional, is ``X ** 2``, which the
    Hessian's diagonal needs (pass it to reuse it across calls).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(20, 3)), rng.integers(0, 4, size=20)
    >>> coef, v = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    >>> _, g, hessp = loss_gradient_hessp(coef, X, y, alpha=0.1)
    >>> g_step = gradient(coef + 1e-6 * v, X, y, alpha=0.1)
    >>> bool(np.allclose((g_step - g) / 1e-6, hessp(v), atol=1e-5))
    True
    """
    value, grad_z, z, w, W = _forward(coef, X, target, sample_weight, alpha, fit_intercept, label_smoothing)
    grad = _grad_from_rows(grad_z, X, W, alpha, fit_intercept)
    return value, grad, HessianOperator(X, z, w, alpha, fit_intercept, coef.shape, X_squared)
