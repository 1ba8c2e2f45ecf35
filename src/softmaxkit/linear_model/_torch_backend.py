r"""The torch backend of :class:`~softmaxkit.linear_model.SoftmaxRegression`: the objective on a torch device.

:func:`torch_objective` returns the same :class:`Objective` as the NumPy backend (callables on flat
float64 NumPy vectors), computing the objective of :mod:`softmaxkit.linear_model._loss`

.. math::

    L(W, b) = \sum_i w_i \, \mathrm{CE}(y_i, W x_i + b) + \frac{\alpha}{2} \lVert W \rVert_F^2,
    \qquad w_i = s_i / \textstyle\sum_j s_j ,

with :func:`softmaxkit.torch.cross_entropy`'s autograd op for the cross-entropy and its gradient
with respect to the logits, and two matrix products on the device for the chain rule through the
linear map. The solvers stay on the host (the package's L-BFGS, Newton-CG and mini-batch
loops); only the parameter vector (``n_classes * (n_features + 1)`` numbers) and the gradient cross
between host and device at each evaluation. Hessian-vector products and the Hessian's diagonal
run on the device; Newton-CG's factorised preconditioner ("full", :mod:`._preconditioners`, as
for the NumPy backend) is built on the host from the logits computed on the device.
``batch_loss_gradient`` is the unbiased mini-batch estimate of :func:`._loss.batch_loss_gradient`,
as for the NumPy backend.

Where the data lives. The data go to the device once, when they fit in the memory budget: 80 % of
the device's free memory (CUDA: free plus cached by PyTorch's allocator; MPS: the recommended
maximum minus what is allocated). Otherwise they stay on the host and are copied to the device in
chunks of rows at every evaluation (streaming): slower, but never out of memory. The ``n x C``
temporaries of one pass are bounded the same way, by processing rows in chunks. On the CPU the
data are used in place (no copy) and the budget is unlimited unless one is given.

Sparse X (SciPy CSR, from any sparse input) is never densified: it goes to the device as a torch
sparse CSR tensor together with its transpose, also CSR, so that both products of a pass (``X @ W``
and ``X.T @ G``) are CSR-times-dense, the one sparse product PyTorch supports on every device (CPU,
CUDA via cuSPARSE). The alternative, densifying blocks of rows on the device, costs
``n_features / nnz-per-row`` times more work (about 800 times on the news20 text set) and
``n_features`` numbers per row of memory, where the sparse form costs twice the nonzeros. Resident
sparse data are one chunk; when their ``n x C`` work does not fit beside them they are streamed,
chunks of CSR rows sent from the host.

Reproducibility. The mini-batches are drawn by the estimator's NumPy generator, so the same
``random_state`` gives the same batches on every device. On the CPU the same ``random_state``
gives the same model bit for bit, run to run, for a fixed number of torch threads. On CUDA the
operations used (cuBLAS matrix products, PyTorch's reductions and ``index_select``) are
deterministic run to run on the same GPU model with the same CUDA, cuBLAS and PyTorch versions,
so the model is expected to repeat bit for bit there as well (``tests/test_torch_backend.py``
checks this under ``-m cuda``); across GPU models, library versions or between CPU and GPU the
results agree to rounding only (float64: within about 1e-12 relative per evaluation).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.sparse
import torch

from softmaxkit.linear_model import _loss, _preconditioners
from softmaxkit.linear_model._solvers import Objective
from softmaxkit.torch._device import resolve_device
from softmaxkit.torch._ops import _CrossEntropy, softmax

__all__ = ["torch_objective"]

# Private: the device memory budget in bytes (None: the device's own). Tests set it, or pass
# ``memory_budget`` to :func:`torch_objective`, to force the streaming path on the CPU.
_MEMORY_BUDGET_BYTES: int | None = None
_FREE_MEMORY_FRACTION = 0.8
# n x C temporaries alive per row: logits, their gradient and the cross-entropy's scratch in one
# pass, while the previous point's Hessian operator keeps its probabilities (two), plus slack.
_WORK_PER_LOGIT = 6
_MIN_RESIDENT_CHUNK = 4096

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def _free_memory(device: torch.device) -> int | None:
    """Bytes the data may take on ``device`` (``None``: no limit, the data are already in host memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(_FREE_MEMORY_FRACTION * (free + cached))
    if device.type == "mps":
        limit = torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory()
        return int(_FREE_MEMORY_FRACTION * max(limit, 0))
    return None


def _layout(n_rows: int, row_data: int, row_work: int, budget: int | None) -> tuple[bool, int]:
    """``(resident, chunk_rows)``: whether the data go to the device whole, and the rows of one pass."""
    if budget is None:
        return True, max(n_rows, 1)
    data = n_rows * row_data
    if data < budget and (budget - data) // row_work >= min(n_rows, _MIN_RESIDENT_CHUNK):
        return True, int(min(n_rows, (budget - data) // row_work))
    return False, int(max(1, min(n_rows, budget // (row_data + row_work))))


def _to_tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    with warnings.catch_warnings():  # read-only input: the tensor is only ever read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device=device, dtype=dtype or tensor.dtype)


def _sparse_to_tensor(X, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A SciPy CSR matrix as a torch sparse CSR tensor on ``device`` (int64 indices)."""
    with warnings.catch_warnings():  # torch calls its sparse CSR support "beta"; the operations used here are stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(
            _to_tensor(X.indptr.astype(np.int64), device),
            _to_tensor(X.indices.astype(np.int64), device),
            _to_tensor(X.data, device, dtype),
            size=X.shape,
            check_invariants=False,
        )


class _Rows(NamedTuple):
    """A block of rows on the device: ``X``, ``XT`` (its transpose: a view when dense, its own CSR tensor when
    sparse, so that both products are CSR times dense), ``target`` and the normalised weights (None: ``1 / n``)."""

    X: torch.Tensor
    XT: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None


class _Data:
    """The training rows, on the device (resident) or on the host (streamed in chunks); dense or sparse (CSR)."""

    def __init__(self, X, target, weights, device, dtype, resident, chunk_rows):
        self.X_host, self.target_host, self.weights_host = X, target, weights
        self.sparse = scipy.sparse.issparse(X)
        self.device, self.dtype, self.resident, self.chunk_rows = device, dtype, resident, chunk_rows
        self.n_rows = X.shape[0]
        target_dtype = torch.int64 if target.ndim == 1 else dtype
        self.target_dtype = target_dtype
        if resident:
            self.X, self.XT = self._matrices(X)
            self.target = _to_tensor(target, device, target_dtype)
            self.weights = None if weights is None else _to_tensor(weights, device, dtype)

    def _matrices(self, X_host):
        """``(X, X.T)`` on the device for host rows ``X_host``."""
        if self.sparse:
            return _sparse_to_tensor(X_host, self.device, self.dtype), _sparse_to_tensor(
                X_host.T.tocsr(), self.device, self.dtype
            )
        X = _to_tensor(X_host, self.device, self.dtype)
        return X, X.T

    def _slice(self, start, stop) -> _Rows:
        if self.resident:
            w = None if self.weights is None else self.weights[start:stop]
            if self.sparse:  # resident sparse data are one chunk (chunk_rows >= n_rows)
                return _Rows(self.X, self.XT, self.target, w)
            return _Rows(self.X[start:stop], self.X[start:stop].T, self.target[start:stop], w)
        w = None if self.weights_host is None else _to_tensor(self.weights_host[start:stop], self.device, self.dtype)
        X, XT = self._matrices(self.X_host[start:stop])
        return _Rows(X, XT, _to_tensor(self.target_host[start:stop], self.device, self.target_dtype), w)

    def chunks(self):
        """The :class:`_Rows` of each chunk of rows."""
        for start in range(0, self.n_rows, self.chunk_rows):
            yield self._slice(start, min(start + self.chunk_rows, self.n_rows))

    def rows(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(X_b, X_b.T, target_b)`` for the rows ``indices`` (one mini-batch)."""
        if self.resident and not self.sparse:
            index = _to_tensor(np.asarray(indices, dtype=np.int64), self.device)
            Xb = self.X.index_select(0, index)
            return Xb, Xb.T, self.target.index_select(0, index)
        Xb, XbT = self._matrices(self.X_host[indices])
        return Xb, XbT, _to_tensor(self.target_host[indices], self.device, self.target_dtype)


def _logits(Xc, Wt, b):
    z = Xc @ Wt
    return z if b is None else z.add_(b)


def _squared(matrix: torch.Tensor) -> torch.Tensor:
    """Each entry squared (a sparse CSR tensor keeps its pattern)."""
    if matrix.layout == torch.sparse_csr:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            return torch.sparse_csr_tensor(
                matrix.crow_indices(),
                matrix.col_indices(),
                matrix.values() ** 2,
                size=matrix.shape,
                check_invariants=False,
            )
    return matrix * matrix


def _data_pass(chunks, Wt, b, scale, eps):
    """``(sum_i w_i CE_i, d/dW.T, d/db)`` over ``chunks`` (:class:`_Rows`), with their weights or, when None, ``scale``."""
    loss = torch.zeros((), dtype=torch.float64, device=Wt.device)
    grad_W = torch.zeros_like(Wt)
    grad_b = None if b is None else torch.zeros_like(b)
    for rows in chunks:
        z = _logits(rows.X, Wt, b).requires_grad_(True)
        with torch.enable_grad():
            per_sample = _CrossEntropy.apply(z, rows.target, None, -100, "none", eps)
            weighted = per_sample * scale if rows.weights is None else per_sample * rows.weights
            (grad_z,) = torch.autograd.grad(weighted.sum(), z)
        loss += weighted.detach().sum(dtype=torch.float64)
        grad_W.addmm_(rows.XT, grad_z)
        if grad_b is not None:
            grad_b += grad_z.sum(dim=0)
    return loss, grad_W, grad_b


class _Hessian:
    """The Hessian of the objective at one point: a :class:`~._solvers.HessianOperator`, like the NumPy backend's.

    ``H(v)`` (the Hessian-vector product of the module docstring of :mod:`._loss`) and
    :meth:`diagonal` run on the device; the factorised preconditioners are built on the host.
    """

    def __init__(self, objective, Wt, b):
        self._objective, self._Wt, self._b = objective, Wt, b
        self.shape = objective.shape
        self._cached = None  # (p, w p) of the only chunk, when the data are one resident chunk

    def _weighted_proba(self, rows):
        z = _logits(rows.X, self._Wt, self._b)
        p = softmax(z, 1)
        return p, p * self._objective.scale if rows.weights is None else p * rows.weights[:, None]

    def _chunks_with_proba(self):
        data = self._objective.data
        if data.resident and data.chunk_rows >= data.n_rows:
            rows = next(data.chunks())
            if self._cached is None:
                self._cached = self._weighted_proba(rows)
            yield rows, *self._cached
            return
        for rows in data.chunks():
            yield rows, *self._weighted_proba(rows)

    @torch.no_grad()
    def __call__(self, v) -> np.ndarray:
        obj = self._objective
        V, c = obj.split(obj.to_device(v))
        out_W = torch.zeros_like(V)
        out_c = None if c is None else torch.zeros_like(c)
        for rows, p, wp in self._chunks_with_proba():
            u = _logits(rows.X, V, c)
            u -= (p * u).sum(dim=1, keepdim=True)
            u *= wp
            out_W.addmm_(rows.XT, u)
            if out_c is not None:
                out_c += u.sum(dim=0)
        out = obj.to_host(out_W, out_c)
        out[: obj.n_features] += obj.alpha * np.asarray(v, dtype=np.float64).reshape(self.shape)[: obj.n_features]
        return out.ravel()

    @torch.no_grad()
    def diagonal(self) -> np.ndarray:
        """``sum_i w_i p_ik (1 - p_ik) x_ij^2`` (plus ``alpha`` on ``W``), flat."""
        obj = self._objective
        diag_W = torch.zeros_like(self._Wt)
        diag_b = None if self._b is None else torch.zeros_like(self._b)
        for rows, p, wp in self._chunks_with_proba():
            d = wp * (1.0 - p)
            diag_W.addmm_(_squared(rows.XT), d)
            if diag_b is not None:
                diag_b += d.sum(dim=0)
        out = obj.to_host(diag_W, diag_b)
        out[: obj.n_features] += obj.alpha
        return out.ravel()

    def _host_proba(self) -> tuple[np.ndarray, np.ndarray]:
        """``(p, w p)`` at this point on the host (NumPy), for the preconditioners built there."""
        data = self._objective.data
        proba = [softmax(_logits(rows.X, self._Wt, self._b), 1) for rows in data.chunks()]
        p = torch.cat(proba).to(device="cpu", dtype=torch.float64).numpy()
        weights = data.weights_host
        wp = p / data.n_rows if weights is None else p * np.asarray(weights, dtype=np.float64)[:, None]
        return p, wp

    def preconditioner_cost(self, kind: str) -> float:
        """The cost of :meth:`preconditioner` in Hessian-vector products (see :func:`._preconditioners.cost`)."""
        obj = self._objective
        X = obj.data.X_host
        return _preconditioners.cost(
            kind,
            n_samples=obj.data.n_rows,
            n_features=obj.n_features,
            n_classes=obj.n_classes,
            fit_intercept=obj.fit_intercept,
            nnz=int(X.nnz) if obj.data.sparse else None,
        )

    @torch.no_grad()
    def preconditioner(self, kind: str):
        """A function approximating ``H^-1 r`` (see :mod:`._preconditioners`): "diagonal" from the
        diagonal computed on the device; "block" and "full" built on the host from the probabilities computed here."""
        kind = _preconditioners.check_kind(kind)
        if kind == "diagonal":
            return _preconditioners.jacobi(self.diagonal())
        data, obj = self._objective.data, self._objective
        p, wp = self._host_proba()
        options = {"alpha": obj.alpha, "fit_intercept": obj.fit_intercept}
        if kind == "block":
            return _preconditioners.block(data.X_host, wp * (1.0 - p), **options)
        return _preconditioners.full(data.X_host, p, wp, **options)


class _TorchObjective:
    """The objective's state on the device and its three callables (flat vectors in the layout ``theta`` of
    :mod:`._loss`)."""

    def __init__(self, data, *, n_classes, n_features, fit_intercept, alpha, eps, sample_weight):
        self.data, self.alpha, self.eps = data, float(alpha), eps
        self.n_classes, self.n_features, self.fit_intercept = n_classes, n_features, fit_intercept
        self.shape = (n_features + int(fit_intercept), n_classes)
        self.scale = 1.0 / max(data.n_rows, 1)
        self.sample_weight = sample_weight
        self.mean_weight = None if sample_weight is None else float(np.mean(sample_weight, dtype=np.float64))

    def to_device(self, x) -> torch.Tensor:
        theta = np.asarray(x, dtype=np.float64).reshape(self.shape)
        return torch.from_numpy(theta).to(device=self.data.device, dtype=self.data.dtype)

    def split(self, theta: torch.Tensor):
        if not self.fit_intercept:
            return theta, None
        return theta[: self.n_features].contiguous(), theta[self.n_features].contiguous()

    def to_host(self, grad_W: torch.Tensor, grad_b: torch.Tensor | None) -> np.ndarray:
        grad = grad_W if grad_b is None else torch.cat([grad_W, grad_b[None, :]], dim=0)
        return grad.to(device="cpu", dtype=torch.float64).numpy().copy()

    def _finish(self, x, loss, grad_W, grad_b):
        """Add the penalty (on the host, in float64) and return ``(f, flat g)``."""
        penalty, penalty_grad = _loss.l2_penalty(
            np.asarray(x, dtype=np.float64).reshape(self.shape), self.alpha, self.n_features
        )
        return float(loss) + penalty, self.to_host(grad_W, grad_b).ravel() + penalty_grad

    @torch.no_grad()
    def loss_gradient(self, x):
        Wt, b = self.split(self.to_device(x))
        loss, grad_W, grad_b = _data_pass(self.data.chunks(), Wt, b, self.scale, self.eps)
        return self._finish(x, loss.item(), grad_W, grad_b)

    @torch.no_grad()
    def loss_gradient_hessp(self, x):
        Wt, b = self.split(self.to_device(x))
        loss, grad_W, grad_b = _data_pass(self.data.chunks(), Wt, b, self.scale, self.eps)
        f, g = self._finish(x, loss.item(), grad_W, grad_b)
        return f, g, _Hessian(self, Wt, b)

    @torch.no_grad()
    def batch_loss_gradient(self, x, indices):
        """The mini-batch estimate of :func:`._loss.batch_loss_gradient` (the penalty in float64)."""
        Wt, b = self.split(self.to_device(x))

        def subset_loss_gradient(rows, weights):
            Xb, XbT, tb = self.data.rows(rows)
            if weights is None:
                chunk, scale = _Rows(Xb, XbT, tb, None), 1.0 / len(rows)
            else:  # normalised, as in the full objective
                w = _to_tensor(weights / weights.sum(), self.data.device, self.data.dtype)
                chunk, scale = _Rows(Xb, XbT, tb, w), None
            loss, grad_W, grad_b = _data_pass([chunk], Wt, b, scale, self.eps)
            return self._finish(x, loss.item(), grad_W, grad_b)

        theta = np.asarray(x, dtype=np.float64).reshape(self.shape)
        return _loss.batch_loss_gradient(
            subset_loss_gradient,
            theta,
            indices,
            self.sample_weight,
            self.mean_weight,
            alpha=self.alpha,
            n_features=self.n_features,
        )


def torch_objective(
    X,
    target,
    sample_weight,
    alpha,
    *,
    n_classes,
    fit_intercept,
    label_smoothing,
    dtype,
    device="auto",
    memory_budget=None,
) -> Objective:
    """The solvers' callables for the objective of :mod:`._loss`, computed with torch on ``device``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    target : ndarray of shape (n_samples,) of class indices, or (n_samples, n_classes) of probabilities
    sample_weight : ndarray of shape (n_samples,) or None
        Non-negative weights :math:`s_i` with a positive sum; ``None`` means all ones.
    alpha : float
        L2 penalty on ``W``.
    n_classes : int
    fit_intercept : bool
    label_smoothing : float
    dtype : numpy.float32 or numpy.float64
        Precision of the device computation (the host side is float64); checked by
        :func:`._objective.make_objective`.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or None, default "auto"
        See :func:`softmaxkit.torch.resolve_device`; "auto" (or None) skips MPS for float64, which
        MPS does not have.
    memory_budget : int, optional
        Private: bytes the data and one pass may take on the device; default 80 % of its free
        memory (unlimited on the CPU), or ``_MEMORY_BUDGET_BYTES`` when set.

    Returns
    -------
    Objective
        ``loss_gradient``, ``loss_gradient_hessp`` and ``batch_loss_gradient`` on flat float64
        vectors.
    """
    np_dtype = np.dtype(dtype)
    resolved = resolve_device(device)
    if resolved.type == "mps" and np_dtype == np.float64:
        if device in (None, "auto"):  # "auto" picks the best device that computes in the dtype asked for
            resolved = torch.device("cpu")
        else:
            raise ValueError("dtype must be numpy.float32 on an MPS device (it has no float64), got float64")
    torch_dtype = _TORCH_DTYPES[np_dtype]
    if scipy.sparse.issparse(X):
        X = scipy.sparse.csr_matrix(X, dtype=np_dtype)
        X.sort_indices()
    else:
        X = np.ascontiguousarray(X, dtype=np_dtype)
    n_samples, n_features = X.shape
    target = np.asarray(target)
    target = target.astype(np.int64) if target.ndim == 1 else np.ascontiguousarray(target, dtype=np_dtype)
    weights = None  # normalised, w_i = s_i / sum_j s_j
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        total = sample_weight.sum()
        if not total > 0:
            raise ValueError(f"sample_weight must have a positive sum, got {total}")
        weights = (sample_weight / total).astype(np_dtype)
    budget = memory_budget if memory_budget is not None else _MEMORY_BUDGET_BYTES
    if budget is None:
        budget = _free_memory(resolved)
    itemsize = np_dtype.itemsize
    if scipy.sparse.issparse(X):  # X and its transpose, values and int64 column indices
        row_features = 2 * (itemsize + 8) * X.nnz / max(n_samples, 1) + 16
    else:
        row_features = n_features * itemsize
    row_data = int(np.ceil(row_features)) + target[:1].nbytes + (0 if weights is None else itemsize)
    row_work = _WORK_PER_LOGIT * n_classes * itemsize
    resident, chunk_rows = _layout(n_samples, row_data, row_work, budget)
    if resident and scipy.sparse.issparse(X) and chunk_rows < n_samples:
        # resident sparse rows are one CSR tensor, one chunk: when its n x C work does not fit too, stream instead
        resident, chunk_rows = False, int(max(1, min(n_samples, budget // (row_data + row_work))))
    data = _Data(X, target, weights, resolved, torch_dtype, resident, chunk_rows)
    state = _TorchObjective(
        data,
        n_classes=n_classes,
        n_features=n_features,
        fit_intercept=bool(fit_intercept),
        alpha=alpha,
        eps=float(label_smoothing),
        sample_weight=sample_weight,
    )
    return Objective(state.loss_gradient, state.loss_gradient_hessp, state.batch_loss_gradient)
