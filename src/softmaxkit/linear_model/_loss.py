r"""The multinomial linear loss: objective, gradient and Hessian-vector product of softmax regression.

This is the middle layer between the cross-entropy of :mod:`softmaxkit` (which it calls, never
re-implements) and the solvers of :mod:`softmaxkit.linear_model._solvers` (which only see the
callables built from these functions).

For samples :math:`x_i` with targets :math:`y_i` and non-negative weights :math:`s_i`
(``sample_weight``; ``None`` means all ones) the objective is

.. math::

    L(W, b) = \frac{1}{\sum_i s_i} \sum_i s_i \, \mathrm{CE}(y_i, W x_i + b)
              + \frac{\alpha}{2} \lVert W \rVert_F^2 ,

where :math:`\mathrm{CE}` is :func:`softmaxkit.cross_entropy` per sample (with its
``label_smoothing``), the intercept is not penalised, and ``y_i`` is either a class index or a
row of class probabilities. With :math:`p_i = \mathrm{softmax}(z_i)`, :math:`z_i = W x_i + b`
and :math:`g_i = \partial \mathrm{CE} / \partial z_i` (which is :math:`p_i - y'_i` with
:math:`y'_i` the smoothed target), the gradient and the Hessian applied to a direction
:math:`(V, c)` are

.. math::

    \nabla_W L = \sum_i w_i \, g_i x_i^\top + \alpha W, \qquad
    \nabla_b L = \sum_i w_i \, g_i, \qquad w_i = s_i / \textstyle\sum_j s_j,

    H[V, c]_W = \sum_i w_i \, r_i x_i^\top + \alpha V, \qquad H[V, c]_b = \sum_i w_i \, r_i,
    \qquad r_i = p_i \odot (u_i - p_i^\top u_i), \quad u_i = V x_i + c .

The Hessian of the cross-entropy with respect to the logits, :math:`\mathrm{diag}(p) - p p^\top`,
does not depend on the target, so the same product serves hard, soft and smoothed labels.

Conventions
-----------
* **Coefficients.** The estimator's layout is ``coef`` of shape ``(n_classes, n_features +
  fit_intercept)``: ``W = coef[:, :n_features]`` and, with an intercept, ``b = coef[:, n_features]``
  (the functions :func:`loss`, :func:`gradient`, :func:`loss_gradient` and
  :func:`loss_gradient_hessp` take and return this layout). The solvers' layout is its transpose,
  ``theta = coef.T`` of shape ``(n_features + fit_intercept, n_classes)`` raveled in C order
  (:class:`LinearLoss`, :class:`MultinomialHessian`, the preconditioners, the backends): then
  ``X @ theta[:n_features]`` and ``X.T @ G`` need no transposed copies, dense or sparse (the same
  layout as scikit-learn's multinomial ``LinearModelLoss``).
* **Data.** ``X`` is a C-contiguous float32 or float64 ndarray, or a SciPy CSR matrix or array of
  that dtype; sparse rows are never densified (except row blocks for the preconditioners that
  :func:`._preconditioners.affordable` admits). The two products with ``X`` are the logits
  ``X @ W.T`` and the gradient ``X.T @ G`` (``G`` the ``n_samples x n_classes`` rows ``w_i g_i``);
  everything else is a pass over ``n_samples x n_classes`` numbers.
* **Rows in blocks.** Dense rows are processed in blocks (:func:`._products.block_rows`), so that
  the second product reads each block from cache and a plain loss-and-gradient pass holds no
  ``n_samples x n_classes`` array; :mod:`._products` computes both products in BLAS's fast layout.
* **Weights.** The normalised weights :math:`w_i` (``1 / n_samples`` without sample weights) are
  computed once, by :class:`LinearLoss`, not at every evaluation.
* **The one call into the cross-entropy** is :func:`_cross_entropy_rows`: the weighted sum of
  the per-row cross-entropies, with :math:`w_i g_i` left in the logits' place.
* **The Hessian** at a point keeps :math:`w_i p_i` for every row (recovered from the gradient
  rows as :math:`w_i g_i + w_i y'_i`, without a second softmax) and is a
  :class:`~._solvers.HessianOperator`: :class:`MultinomialHessian`.

Beside the loss, the facts about it that solvers and the estimator use (computed here, not there):
:func:`batch_loss_gradient` (the unbiased mini-batch estimate every backend computes),
:func:`curvature_bound` (a bound on the Hessian, for the stochastic solvers' step) and
:func:`intercept_only` (the intercept-only optimum, the solvers' start).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from softmaxkit._numpy._engine import MIN_KERNEL_SIZE
from softmaxkit._numpy._weighted_rows import WeightedRows
from softmaxkit.linear_model import _preconditioners, _products

__all__ = [
    "LinearLoss",
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
]


def _cross_entropy_rows(target, weights, label_smoothing, *, n_classes, dtype, engine="auto") -> WeightedRows:
    """The one call into the cross-entropy, prepared once per data set: ``rows(logits, start, stop)`` returns
    ``sum_i w_i CE_i`` (float64) over the samples ``start:stop`` and leaves ``w_i dCE_i/dz_i`` in ``logits``.

    ``logits`` is ``(stop - start, n_classes)``, C-contiguous, in ``dtype``; ``target`` ``(n_samples,)`` class
    indices or ``(n_samples, n_classes)`` class probabilities; ``weights`` ``(n_samples,)`` the normalised
    sample weights. The fused row kernel of :mod:`softmaxkit._numpy._weighted_rows` (one compiled pass,
    nothing allocated at the size of ``logits``); ``engine="numpy"`` is its NumPy reference path.
    """
    return WeightedRows(
        target, weights, n_classes=n_classes, dtype=dtype, label_smoothing=label_smoothing, engine=engine
    )


def _add_smoothed_target(rows: np.ndarray, target: np.ndarray, weights: np.ndarray, label_smoothing: float) -> None:
    """``w_i g_i -> w_i p_i`` in place: add ``w_i y'_i``, the weighted smoothed target (``g_i = p_i - y'_i``)."""
    eps = label_smoothing
    if target.ndim == 1:
        rows[np.arange(rows.shape[0]), target] += (1.0 - eps) * weights
        if eps:
            rows += (eps / rows.shape[1]) * weights[:, None]
    else:
        smoothed = target if not eps else (1.0 - eps) * target + eps / rows.shape[1]
        rows += smoothed * weights[:, None]


def _normalised_weights(sample_weight, n_samples: int, dtype) -> np.ndarray | None:
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


class LinearLoss:
    """The objective of the module docstring on one data set, ready to be evaluated many times.

    Everything that depends only on the data (the normalised weights, the row blocks, ``X ** 2``
    for sparse ``X``) is computed here once, so that the methods called in a solver's loop
    validate nothing and do only the products with ``X`` and the passes over the logits.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), or scipy.sparse CSR
        C-contiguous float32 or float64 (the working precision); sparse matrices of another format
        are converted to CSR.
    target : ndarray of shape (n_samples,) of class indices, or (n_samples, n_classes) of probabilities
    sample_weight : ndarray of shape (n_samples,) or None
        Non-negative weights :math:`s_i` with a positive sum; ``None`` means all ones.
    alpha : float
        L2 penalty strength on ``W``.
    n_classes : int
    fit_intercept : bool
    label_smoothing : float
        As in :func:`softmaxkit.cross_entropy`.
    """

    def __init__(self, X, target, sample_weight, alpha, *, n_classes, fit_intercept, label_smoothing):
        self.sparse = scipy.sparse.issparse(X)
        if self.sparse:
            X = X.tocsr() if X.format != "csr" else X
        else:
            X = np.asarray(X)
        self.X = X
        self.dtype = np.dtype(X.dtype)
        self.n_samples, self.n_features = X.shape
        self.n_classes = int(n_classes)
        self.fit_intercept = bool(fit_intercept)
        self.shape = (self.n_features + int(self.fit_intercept), self.n_classes)  # theta's
        self.alpha = float(alpha)
        self.label_smoothing = float(label_smoothing)
        self.target = np.asarray(target)
        weights = _normalised_weights(sample_weight, self.n_samples, self.dtype)
        self.weights = weights
        # the weights every row pass takes (1 / n each without sample weights), and 1 / w_i (0 where w_i = 0)
        self.row_weights = np.full(self.n_samples, 1.0 / max(self.n_samples, 1), dtype=self.dtype)
        if weights is not None:
            self.row_weights = weights
        # (a weight below 1 / max float, of a total of 1, counts as 0 here: its inverse would overflow, and its
        # row's share of the Hessian is below the smallest normal number anyway)
        with np.errstate(divide="ignore", over="ignore"):
            tiny = 1.0 / np.finfo(self.dtype).max
            inverse = np.where(self.row_weights > tiny, 1.0 / np.maximum(self.row_weights, tiny), 0.0)
        self.inverse_weights = inverse.astype(self.dtype)
        self.block_rows = _products.block_rows(self.n_samples, self.n_features, self.n_classes, sparse=self.sparse)
        # The compiled row kernel for every block once the whole N x C block is past the kernels' threshold: the
        # blocks (of about 2**17 numbers of X) are often below it, and the kernel's one-off load is paid per fit.
        self.engine = "kernel" if self.n_samples * self.n_classes >= MIN_KERNEL_SIZE else "auto"
        self._rows = _cross_entropy_rows(
            self.target,
            self.row_weights,
            self.label_smoothing,
            n_classes=self.n_classes,
            dtype=self.dtype,
            engine=self.engine,
        )
        self._squared = None
        # X^T in CSR (one more copy of X) for the gradient's X^T G: on news20 (958,810 entries, 20 classes, one
        # thread) 41 ms against 68 ms for SciPy's CSC product on X.T; converting costs a product / n_classes.
        self._transposed = X.T.tocsr() if self.sparse else None
        self._ones = np.ones(min(self.block_rows, max(self.n_samples, 1)), dtype=self.dtype)

    # -------------------------------------------------------------- the parts

    @property
    def nnz(self) -> int:
        """Stored entries of ``X`` (``n_samples * n_features`` when dense)."""
        return int(self.X.nnz) if self.sparse else self.n_samples * self.n_features

    def blocks(self):
        """``(start, stop)`` of each block of rows."""
        for start in range(0, self.n_samples, self.block_rows):
            yield start, min(start + self.block_rows, self.n_samples)

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(W.T, b)`` as views of ``theta`` (``b`` None without an intercept), in the working dtype."""
        theta = np.asarray(theta, dtype=self.dtype).reshape(self.shape)
        if self.fit_intercept:
            return theta[: self.n_features], theta[self.n_features]
        return theta, None

    def rows(self, start: int, stop: int):
        """The rows ``start:stop`` of ``X`` (a view when dense)."""
        if start == 0 and stop == self.n_samples:
            return self.X
        return self.X[start:stop]

    def logits(self, Wt, b, start, stop, out=None) -> np.ndarray:
        """``X[start:stop] @ Wt + b``, into ``out`` (a ``(stop - start, n_classes)`` C-contiguous array) if given."""
        return _products.logits(self.rows(start, stop), Wt, b, out, sparse=self.sparse)

    def add_product(self, out: np.ndarray, rows: np.ndarray, start: int, stop: int, X=None) -> None:
        """``out[:n_features] += X[start:stop].T @ rows`` and, with an intercept, ``out[-1] += rows.sum(0)``."""
        whole = start == 0 and stop == self.n_samples
        Xb = self.rows(start, stop) if X is None else X
        Xt = self._transposed if X is None else None
        _products.add_product(out, Xb, rows, whole=whole, fit_intercept=self.fit_intercept, ones=self._ones, Xt=Xt)

    def squared(self):
        """``X ** 2`` for sparse ``X`` (kept: the Hessian's diagonal needs it at every Newton iteration)."""
        if self._squared is None:
            self._squared = self.X.multiply(self.X).tocsr()
        return self._squared

    def penalty(self, Wt) -> float:
        return 0.5 * self.alpha * float(np.vdot(Wt, Wt))

    # -------------------------------------------------------------- evaluations

    def _pass(self, theta, keep_rows: bool):
        """``(loss, gradient, rows)``: one pass over the blocks; ``rows`` the ``w_i g_i`` when ``keep_rows``."""
        W, b = self.split(theta)
        grad = np.zeros(self.shape, dtype=self.dtype)
        kept = np.empty((self.n_samples, self.n_classes), dtype=self.dtype) if keep_rows else None
        scratch = None
        value = 0.0
        for start, stop in self.blocks():
            if kept is not None:
                out = kept[start:stop]
            else:
                if scratch is None:
                    scratch = np.empty((min(self.block_rows, self.n_samples), self.n_classes), dtype=self.dtype)
                out = scratch[: stop - start]
            z = self.logits(W, b, start, stop, out=out)
            value += self._rows(z, start, stop)
            self.add_product(grad, z, start, stop)
        if self.alpha:
            grad[: self.n_features] += self.alpha * W
        return value + self.penalty(W), grad, kept

    def loss_gradient(self, theta) -> tuple[float, np.ndarray]:
        """``(L, gradient)`` at ``theta`` (``(n_features + fit_intercept, n_classes)`` or flat, any float dtype).

        The gradient has the shape :attr:`shape`, in the working dtype.
        """
        value, grad, _ = self._pass(theta, keep_rows=False)
        return value, grad

    def loss_gradient_hessp(self, theta) -> tuple[float, np.ndarray, MultinomialHessian]:
        """``(L, gradient, H)``: :meth:`loss_gradient` plus the Hessian at ``theta``."""
        value, grad, rows = self._pass(theta, keep_rows=True)
        _add_smoothed_target(rows, self.target, self.row_weights, self.label_smoothing)
        return value, grad, MultinomialHessian(self, rows)


class MultinomialHessian:
    """The Hessian of :func:`loss` at one point, as a linear operator on arrays shaped like ``theta``.

    A :class:`~._solvers.HessianOperator` (what Newton-CG relies on), built by
    :meth:`LinearLoss.loss_gradient_hessp`. It keeps ``weighted_proba``, :math:`w_i p_i` for every
    row; ``H(v)`` is the Hessian-vector product and :meth:`diagonal` the Hessian's diagonal, both
    with the formulas of the module docstring, in the working dtype.
    """

    def __init__(self, problem: LinearLoss, weighted_proba: np.ndarray):
        self._problem = problem
        self.weighted_proba = weighted_proba
        self.shape = problem.shape

    def proba(self, start=0, stop=None) -> np.ndarray:
        """:math:`p_i` for the rows ``start:stop`` (0 for rows of weight 0, which take no part)."""
        problem = self._problem
        stop = problem.n_samples if stop is None else stop
        return self.weighted_proba[start:stop] * problem.inverse_weights[start:stop, None]

    def __call__(self, v: np.ndarray) -> np.ndarray:
        problem = self._problem
        V, c = problem.split(v)
        out = np.zeros(self.shape, dtype=problem.dtype)
        scratch = None
        for start, stop in problem.blocks():
            if scratch is None:
                scratch = np.empty((min(problem.block_rows, problem.n_samples), problem.n_classes), problem.dtype)
            u = problem.logits(V, c, start, stop, out=scratch[: stop - start])
            wp = self.weighted_proba[start:stop]
            # w_i r_i = w_i p_i * (u_i - p_i . u_i), with p_i . u_i = (w_i p_i . u_i) / w_i
            dots = np.einsum("ij,ij->i", wp, u)
            dots *= problem.inverse_weights[start:stop]
            u -= dots[:, None]
            u *= wp
            problem.add_product(out, u, start, stop)
        if problem.alpha:
            out[: problem.n_features] += problem.alpha * V
        return out

    def curvature(self, start=0, stop=None) -> np.ndarray:
        """:math:`w_i p_{ik} (1 - p_{ik})` for the rows ``start:stop``: the diagonal of each row's Hessian block."""
        wp = self.weighted_proba[start:stop]
        return wp - wp * self.proba(start, stop)

    def diagonal(self) -> np.ndarray:
        """``H[k, j; k, j] = sum_i w_i p_ik (1 - p_ik) x_ij^2 (+ alpha on W)``."""
        problem = self._problem
        out = np.zeros(self.shape, dtype=problem.dtype)
        if problem.sparse:
            problem.add_product(out, self.curvature(), 0, problem.n_samples, X=problem.squared())
        else:
            for start, stop in problem.blocks():
                squared = np.square(problem.rows(start, stop))
                problem.add_product(out, self.curvature(start, stop), start, stop, X=squared)
        if problem.alpha:
            out[: problem.n_features] += problem.alpha
        return out

    def preconditioner_cost(self, kind: str) -> float:
        """The cost of ``preconditioner(kind)`` in Hessian-vector products (see :func:`._preconditioners.cost`)."""
        problem = self._problem
        return _preconditioners.cost(
            kind,
            n_samples=problem.n_samples,
            n_features=problem.n_features,
            n_classes=problem.n_classes,
            fit_intercept=problem.fit_intercept,
            nnz=problem.nnz,
        )

    def preconditioner(self, kind: str):
        """A function approximating ``H^-1 r`` for ``kind`` in :data:`._preconditioners.KINDS`."""
        kind = _preconditioners.check_kind(kind)
        if kind == "diagonal":
            return _preconditioners.jacobi(self.diagonal())
        problem = self._problem
        options = {"alpha": problem.alpha, "fit_intercept": problem.fit_intercept}
        if kind == "block":
            return _preconditioners.block(problem.X, self.curvature(), **options)
        return _preconditioners.full(
            problem.X, None, self.weighted_proba, inverse_weights=problem.inverse_weights, **options
        )


# ------------------------------------------------------------------ the functions on (coef, X, target)


def _problem(coef, X, target, sample_weight, alpha, fit_intercept, label_smoothing) -> LinearLoss:
    n_features = X.shape[1]
    expected = n_features + int(fit_intercept)
    if coef.ndim != 2 or coef.shape[1] != expected:
        raise ValueError(
            f"coef must have shape (n_classes, {expected}) for {n_features} features "
            f"{'with' if fit_intercept else 'without'} an intercept, got shape {coef.shape}"
        )
    if not scipy.sparse.issparse(X):
        X = np.ascontiguousarray(X)
    return LinearLoss(
        X,
        target,
        sample_weight,
        alpha,
        n_classes=coef.shape[0],
        fit_intercept=fit_intercept,
        label_smoothing=label_smoothing,
    )


def loss(coef, X, target, sample_weight=None, alpha=0.0, *, fit_intercept=True, label_smoothing=0.0) -> float:
    r"""The objective :math:`L(W, b)` of the module docstring.

    Parameters
    ----------
    coef : ndarray of shape (n_classes, n_features + fit_intercept)
        Weights, with the intercept as the last column when ``fit_intercept``.
    X : ndarray of shape (n_samples, n_features), or scipy.sparse matrix
        In the working precision (float32 or float64).
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
    """``(loss, gradient)`` from one pass: two matrix products and one fused cross-entropy per block of rows.

    Arguments as in :func:`loss`; the gradient has the shape of ``coef``.
    """
    problem = _problem(coef, X, target, sample_weight, alpha, fit_intercept, label_smoothing)
    value, grad = problem.loss_gradient(coef.T)
    return value, grad.T


def loss_gradient_hessp(
    coef, X, target, sample_weight=None, alpha=0.0, *, fit_intercept=True, label_smoothing=0.0
) -> tuple[float, np.ndarray, MultinomialHessian]:
    """``(loss, gradient, hessp)``: :func:`loss_gradient` plus the Hessian operator at ``coef``.

    ``hessp`` is a :class:`MultinomialHessian`, in the solvers' layout: ``hessp(v.T).T`` is the
    Hessian-vector product for ``v`` shaped like ``coef`` (the formula is in the module docstring);
    it reuses the probabilities of this pass, so each product costs two matrix products.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(20, 3)), rng.integers(0, 4, size=20)
    >>> coef, v = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    >>> _, g, hessp = loss_gradient_hessp(coef, X, y, alpha=0.1)
    >>> g_step = gradient(coef + 1e-6 * v, X, y, alpha=0.1)
    >>> bool(np.allclose((g_step - g) / 1e-6, hessp(v.T).T, atol=1e-5))
    True
    """
    problem = _problem(coef, X, target, sample_weight, alpha, fit_intercept, label_smoothing)
    value, grad, hessp = problem.loss_gradient_hessp(coef.T)
    return value, grad.T, hessp


def l2_penalty(theta: np.ndarray, alpha: float, n_features: int) -> tuple[float, np.ndarray]:
    """``(alpha / 2 ||W||^2, its gradient)`` for ``W.T = theta[:n_features]``; the gradient flat, in theta's dtype."""
    Wt = theta[:n_features]
    grad = np.zeros_like(theta)
    grad[:n_features] = alpha * Wt
    return 0.5 * alpha * float(np.vdot(Wt, Wt)), grad.ravel()


def batch_loss_gradient(
    subset_loss_gradient, theta, indices, sample_weight, mean_weight, *, alpha, n_features
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
        ``subset_loss_gradient(indices, weights) -> (f, flat g)``: the backend's loss and gradient
        at ``theta`` on the rows ``indices`` with sample weights ``weights`` (``None``: all ones).
        Without sample weights it is the estimate itself; with them, the estimate rescales its data
        term by :math:`\sum_{i \in B} s_i / (|B| \bar s)`. A batch of zero-weight samples gives the
        penalty alone.
    theta : ndarray of shape (n_features + fit_intercept, n_classes)
        The point (the solvers' layout), in the dtype the penalty is computed in.
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
    penalty, penalty_grad = l2_penalty(theta, alpha, n_features)
    ratio = float(weights.sum(dtype=np.float64)) / (len(indices) * mean_weight)
    if not ratio > 0:  # a batch of zero-weight samples: only the penalty
        return penalty, penalty_grad
    f, g = subset_loss_gradient(indices, weights)
    return ratio * (f - penalty) + penalty, ratio * (g - penalty_grad) + penalty_grad


def curvature_bound(X, alpha=0.0, *, fit_intercept=True, max_rows=5000) -> float:
    r"""An upper bound on the curvature of :func:`loss`: ``L = lambda_max(X~^T X~ / n) / 2 + alpha``.

    ``X~`` is ``X`` (dense or sparse) with a column of ones when ``fit_intercept``. The Hessian of
    the cross-entropy with respect to the logits, :math:`\mathrm{diag}(p) - p p^\top`, has
    eigenvalues at most 1/2, so :math:`L` bounds the Hessian of the (unweighted) objective, and
    ``1 / L`` is a safe gradient step (cf. scikit-learn's ``get_auto_step_size``). ``lambda_max``
    is estimated by 50 power iterations on every ``n // max_rows``-th row (at most about
    ``max_rows`` rows).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[2.0, 0.0], [0.0, 0.0]])  # X^T X / n = diag(2, 0)
    >>> curvature_bound(X, 0.1, fit_intercept=False)
    1.1
    """
    rows = X[:: max(1, X.shape[0] // max_rows)].astype(np.float64)
    n_rows, n_features = rows.shape
    size = n_features + int(fit_intercept)
    v = np.ones(size) / np.sqrt(size)
    top = 0.0
    for _ in range(50):  # power iteration on X~^T X~ / n, X~ = [X, 1] never formed
        u = rows @ v[:n_features]
        if fit_intercept:
            u = u + v[n_features]
        w = np.empty(size)
        w[:n_features] = rows.T @ u
        if fit_intercept:
            w[n_features] = u.sum()
        w /= n_rows
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
