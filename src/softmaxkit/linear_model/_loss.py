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

Beside the loss, the facts about it that solvers and the estimator use (computed here, not there):
:class:`MultinomialHessian` (the operator :func:`loss_gradient_hessp` returns, a
:class:`~._solvers.HessianOperator`; its preconditioners are :mod:`._preconditioners`'),
:func:`batch_loss_gradient` (the unbiased mini-batch estimate every backend computes),
:func:`curvature_bound` (a bound on the Hessian, for the stochastic solvers' step) and
:func:`intercept_only` (the intercept-only optimum, the solvers' start).
"""

from __future__ import annotations

import numpy as np

from softmaxkit._numpy._cross_entropy import cross_entropy_with_grad
from softmaxkit._numpy._softmax import softmax
from softmaxkit.linear_model import _preconditioners

__all__ = [
    "MultinomialHessian",
    "batch_loss_gradient",
    "class_counts",
    "curvature_bound",
    "gradient",
    "intercept_only",
    "l2_penalty",
    "loss",
    "loss_gradient",
    "loss_gradient_hessp",
    "weighted_proba",
]


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


def l2_penalty(coef: np.ndarray, alpha: float, n_features: int) -> tuple[float, np.ndarray]:
    """``(alpha / 2 ||W||^2, its gradient)`` for ``W = coef[:, :n_features]``; the gradient flat, in coef's dtype."""
    W = coef[:, :n_features]
    grad = np.zeros_like(coef)
    grad[:, :n_features] = alpha * W
    return 0.5 * alpha * float(np.vdot(W, W)), grad.ravel()


def batch_loss_gradient(
    subset_loss_gradient, coef, indices, sample_weight, mean_weight, *, alpha, n_features
) -> tuple[float, np.ndarray]:
    r"""The unbiased mini-batch estimate of :func:`loss` and its gradient, from the samples ``indices``.

    For a batch :math:`B` drawn uniformly, with :math:`\bar s` the mean weight of all the samples,

    .. math::

        \hat L_B = \frac{1}{|B| \, \bar s} \sum_{i \in B} s_i \, \mathrm{CE}(y_i, W x_i + b)
                   + \frac{\alpha}{2} \lVert W \rVert_F^2 ,

    whose expectation is :math:`L`. Every backend computes its mini-batch objective here.

    Parameters
    ----------
    subset_loss_gradient : callable
        ``subset_loss_gradient(indices, weights) -> (f, flat g)``: the backend's :func:`loss_gradient`
        at ``coef`` on the rows ``indices`` with sample weights ``weights`` (``None``: all ones).
        Without sample weights it is the estimate itself; with them, the estimate rescales its data
        term by :math:`\sum_{i \in B} s_i / (|B| \bar s)`. A batch of zero-weight samples gives the
        penalty alone.
    coef : ndarray of shape (n_classes, n_features + fit_intercept)
        The point, in the dtype the penalty is computed in.
    indices : ndarray of int
    sample_weight : ndarray of shape (n_samples,) or None
    mean_weight : float or None
        ``mean(sample_weight)`` over all the samples (None without sample weights).
    alpha : float
    n_features : int
    """
    if sample_weight is None:
        return subset_loss_gradient(indices, None)
    weights = sample_weight[indices]
    penalty, penalty_grad = l2_penalty(coef, alpha, n_features)
    ratio = float(weights.sum(dtype=np.float64)) / (len(indices) * mean_weight)
    if not ratio > 0:  # a batch of zero-weight samples: only the penalty
        return penalty, penalty_grad
    f, g = subset_loss_gradient(indices, weights)
    return ratio * (f - penalty) + penalty, ratio * (g - penalty_grad) + penalty_grad


def weighted_proba(logits: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(p, w p)``: the class probabilities ``p_i = softmax(z_i)`` and ``w_i p_i``, the Hessian's ingredients.

    ``weights`` are the normalised sample weights :math:`w_i`, ``None`` meaning ``1 / n_samples`` each.
    """
    p = softmax(logits, axis=1)
    n_samples = p.shape[0]
    wp = p * (1.0 / n_samples) if weights is None else p * weights[:, None]
    return p, wp


class MultinomialHessian:
    """The Hessian of :func:`loss` at one point, as a linear operator on arrays shaped like ``coef``.

    A :class:`~._solvers.HessianOperator` (what Newton-CG relies on).
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
        if self._proba is None:
            self._proba = weighted_proba(self._logits, self._w)
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

    def preconditioner_cost(self, kind: str) -> float:
        """The cost of ``preconditioner(kind)`` in Hessian-vector products (see :func:`._preconditioners.cost`)."""
        n_samples, n_features = self._X.shape
        return _preconditioners.cost(
            kind,
            n_samples=n_samples,
            n_features=n_features,
            n_classes=self.shape[0],
            fit_intercept=self._fit_intercept,
        )

    def preconditioner(self, kind: str):
        """A function approximating ``H^-1 r``: ``kind`` is "diagonal" or "full" (see :mod:`._preconditioners`)."""
        if _preconditioners.check_kind(kind) == "diagonal":
            return _preconditioners.jacobi(self.diagonal())
        p, wp = self._weighted_proba()
        n_samples = self._X.shape[0]
        return _preconditioners.full(
            self._X,
            p,
            wp,
            self._w,
            alpha=self._alpha,
            fit_intercept=self._fit_intercept,
            max_rows=_preconditioners.full_rows(n_samples, int(np.prod(self.shape))),
        )


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
) -> tuple[float, np.ndarray, MultinomialHessian]:
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
    return value, grad, MultinomialHessian(X, z, w, alpha, fit_intercept, coef.shape, X_squared)


def curvature_bound(X, alpha=0.0, *, fit_intercept=True, max_rows=5000) -> float:
    r"""An upper bound on the curvature of :func:`loss`: ``L = lambda_max(X~^T X~ / n) / 2 + alpha``.

    ``X~`` is ``X`` with a column of ones when ``fit_intercept``. The Hessian of the cross-entropy
    with respect to the logits, :math:`\mathrm{diag}(p) - p p^\top`, has eigenvalues at most 1/2,
    so :math:`L` bounds the Hessian of the (unweighted) objective, and ``1 / L`` is a safe
    gradient step (cf. scikit-learn's ``get_auto_step_size``). ``lambda_max`` is estimated by 50
    power iterations on every ``n // max_rows``-th row (at most about ``max_rows`` rows).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[2.0, 0.0], [0.0, 0.0]])  # X^T X / n = diag(2, 0)
    >>> curvature_bound(X, 0.1, fit_intercept=False)
    1.1
    """
    rows = X[:: max(1, X.shape[0] // max_rows)].astype(np.float64)
    if fit_intercept:
        rows = np.hstack([rows, np.ones((rows.shape[0], 1))])
    v = np.ones(rows.shape[1]) / np.sqrt(rows.shape[1])
    top = 0.0
    for _ in range(50):  # power iteration on the (tiny) second-moment matrix
        w = rows.T @ (rows @ v) / rows.shape[0]
        top = float(np.linalg.norm(w))
        if top == 0.0:
            break
        v = w / top
    return 0.5 * top + alpha


def class_counts(target, sample_weight, n_classes: int) -> np.ndarray:
    """The weighted count of each class, float64: ``sum_i s_i [y_i = k]`` (``sum_i s_i y_ik`` for probabilities)."""
    weights = np.ones(target.shape[0]) if sample_weight is None else sample_weight.astype(np.float64)
    if target.ndim == 1:
        return np.bincount(target, weights=weights, minlength=n_classes)
    return weights @ target.astype(np.float64)


def intercept_only(target, sample_weight, n_classes: int) -> np.ndarray:
    """The intercepts minimising the unpenalised, unsmoothed intercept-only objective: centred log class frequencies.

    Class frequencies are weighted by ``sample_weight`` (``None``: all ones) and, for soft
    targets (rows of class probabilities), summed over the rows; a class that never occurs gets
    the frequency ``1e-12`` (a finite start). A natural starting point for any solver (cf.
    scikit-learn's ``BaseLoss.fit_intercept_only``).

    Examples
    --------
    >>> import numpy as np
    >>> b = intercept_only(np.array([0, 0, 0, 1]), None, 2)
    >>> bool(np.allclose(b, [np.log(3) / 2, -np.log(3) / 2]))
    True
    """
    counts = class_counts(target, sample_weight, n_classes)
    freq = counts / counts.sum()
    log_freq = np.log(np.maximum(freq, 1e-12))
    return log_freq - log_freq.mean()
