"""Cross-entropy and negative log-likelihood in NumPy with PyTorch's semantics, and their gradients.

The formulas are written once, in :func:`cross_entropy`; the other functions refer to it.
Internally every input is brought to rows: ``(M, C)`` logits with the class axis last and
``M`` the number of samples (``N * d1 * ... * dk``), computed once, reduced once.

Conventions: the names of the coefficients
------------------------------------------
Every loss is ``L_n = -sum_c a_nc l_nc`` (:func:`cross_entropy`). Every implementation (these
functions, :mod:`softmaxkit.torch`'s ``cross_entropy`` and ``nll_loss``, the fused
``linear_cross_entropy`` and its Triton kernels) stores ``a`` under the same names:

* ``target_coef`` (per sample): ``(1 - eps) w_{y_n} v_n``, the coefficient at the target class;
* ``smooth_coef`` (per sample): ``eps / C * v_n``, the coefficient on every class ``c``, times ``w_c``;
* ``prob_coef`` (per sample and class), for probability targets: ``a_nc = w_c t'_nc``;
* ``total_coef`` (per sample): ``A_n = sum_c a_nc``, for index targets
  ``target_coef + smooth_coef * total_weight`` with ``total_weight = sum_c w_c``;
* ``denominator``: ``W``, what ``"mean"`` divides by.

The index-target coefficients are computed once, by :func:`_index_coefficients`, for both
implementations: the NumPy path (the reference) and the compiled row kernels of :mod:`._kernels`,
between which :mod:`._engine` chooses (each public function here calls :func:`_evaluate` with
``engine="auto"``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from softmaxkit._numpy._engine import as_rows, run, use_kernel
from softmaxkit._numpy._softmax import stable_exp
from softmaxkit._validation import (
    _describe,
    as_array,
    as_float_array,
    check_class_indices,
    check_class_weight,
    check_ignore_index,
    check_label_smoothing,
    check_reduction,
)


class _Rows(NamedTuple):
    """A validated loss problem, flattened to rows with the class axis last."""

    logits: np.ndarray  # (M, C), working dtype
    out_dtype: np.dtype
    input_shape: tuple[int, ...]
    class_axis: int
    batch_shape: tuple[int, ...]  # the shape of the per-sample loss
    target: np.ndarray  # (M,) class indices, or (M, C) probabilities
    is_index: bool
    valid: np.ndarray | None  # (M,) bool, index targets only
    weight: np.ndarray | None  # (C,)
    reduction: str
    label_smoothing: float


def _to_rows(array: np.ndarray, class_axis: int) -> np.ndarray:
    moved = np.moveaxis(array, class_axis, -1)
    return np.ascontiguousarray(moved.reshape(-1, array.shape[class_axis]))


def _from_rows(rows: np.ndarray, shape: tuple[int, ...], class_axis: int) -> np.ndarray:
    moved_shape = shape[:class_axis] + shape[class_axis + 1 :] + (shape[class_axis],)
    return np.moveaxis(rows.reshape(moved_shape), -1, class_axis)


def _prepare(
    input,
    target,
    *,
    weight,
    ignore_index,
    reduction,
    label_smoothing,
    allow_probabilities: bool,
) -> _Rows:
    logits, out_dtype = as_float_array(input, name="input")
    if logits.ndim == 0:
        raise ValueError("input must have the classes along axis 1 (or axis 0 when unbatched), got a 0-d array")
    class_axis = 0 if logits.ndim == 1 else 1
    n_classes = logits.shape[class_axis]
    if n_classes == 0:
        raise ValueError(f"input must have at least one class along axis {class_axis}, got shape {logits.shape}")
    batch_shape = logits.shape[:class_axis] + logits.shape[class_axis + 1 :]
    reduction = check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    label_smoothing = check_label_smoothing(label_smoothing)
    work_dtype = logits.dtype
    weight = check_class_weight(weight, n_classes, work_dtype)

    kinds = "integer class indices or floating class probabilities" if allow_probabilities else "integer class indices"
    target = as_array(target, name="target", what=kinds)
    if np.issubdtype(target.dtype, np.integer):
        if target.shape != batch_shape:
            raise ValueError(
                f"target must have shape {batch_shape} (the input's shape {logits.shape} without the class "
                f"axis {class_axis}) for class indices, got shape {target.shape}"
            )
        valid = check_class_indices(target, n_classes, ignore_index).reshape(-1)
        rows_target = target.reshape(-1).astype(np.intp, copy=False)
        is_index = True
    elif np.issubdtype(target.dtype, np.floating) and allow_probabilities:
        if target.shape == batch_shape:  # class indices stored as floats: never silently truncated
            raise TypeError(
                f"target must be integer class indices (or class probabilities of the input's shape "
                f"{logits.shape}), got floating values of shape {target.shape}"
            )
        if target.shape != logits.shape:
            raise ValueError(
                f"target must have the input's shape {logits.shape} for class probabilities, got shape {target.shape}"
            )
        if ignore_index >= 0:
            raise ValueError(
                f"ignore_index must be negative (unused) with class-probability targets, got {ignore_index}"
            )
        valid = None
        rows_target = _to_rows(target.astype(work_dtype, copy=False), class_axis)
        is_index = False
    else:
        raise TypeError(f"target must be {kinds}, got {_describe(target)}")
    return _Rows(
        logits=_to_rows(logits, class_axis),
        out_dtype=out_dtype,
        input_shape=logits.shape,
        class_axis=class_axis,
        batch_shape=batch_shape,
        target=rows_target,
        is_index=is_index,
        valid=valid,
        weight=weight,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def _row_dot(values: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``sum_c coef[., c] * values[:, c]`` per row, with ``0 * (-inf) = 0``.

    A zero weight or zero target probability on a ``-inf`` log-probability contributes nothing
    (the ``x log x -> 0`` convention); plain arithmetic would give NaN.
    """
    # The 0 * inf products, and only those, are the NaNs that the masked recomputation discards.
    with np.errstate(invalid="ignore"):
        out = values @ coef if coef.ndim == 1 else np.einsum("mc,mc->m", values, coef)
        nan_rows = np.isnan(out)
        if nan_rows.any():
            rows = values[nan_rows]
            rows_coef = coef if coef.ndim == 1 else coef[nan_rows]
            out[nan_rows] = np.sum(np.where(rows_coef == 0, 0, rows * rows_coef), axis=1)
    return out


def _times(coef: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``coef * value`` with ``0 * inf = 0``: an ignored or zero-weight sample contributes nothing."""
    with np.errstate(invalid="ignore"):  # the 0 * inf products are the ones np.where discards
        return np.where(coef == 0, 0, coef * value)


class _IndexCoefficients(NamedTuple):
    """The coefficients of index targets (module docstring); one value shared by every row, or one per row."""

    safe_target: np.ndarray  # (M,) the target class, 0 for an ignored sample
    target_coef: np.ndarray  # (M,) or (1,): (1 - eps) w_y v
    smooth_coef: np.ndarray  # (M,) or (1,): eps / C * v (0 without smoothing)
    total_weight: float  # sum_c w_c
    denominator: float  # W = sum_n w_{y_n} v_n


def _index_coefficients(rows: _Rows) -> _IndexCoefficients:
    valid, weight, eps = rows.valid, rows.weight, rows.label_smoothing
    dtype = rows.logits.dtype
    n_classes = rows.logits.shape[1]
    all_valid = bool(valid.all())  # then one shared value stands for M equal ones
    safe_target = rows.target if all_valid else np.where(valid, rows.target, 0)
    if weight is None:
        target_weight = np.ones(1, dtype) if all_valid else valid.astype(dtype)
        denominator = float(np.count_nonzero(valid))
    else:
        target_weight = weight[safe_target] if all_valid else np.where(valid, weight[safe_target], 0)
        denominator = float(np.sum(target_weight, dtype=np.float64))
    smooth = dtype.type(eps / n_classes)
    smooth_coef = np.full(1, smooth) if all_valid else smooth * valid.astype(dtype)
    total_weight = float(n_classes) if weight is None else float(weight.sum())
    return _IndexCoefficients(safe_target, (1.0 - eps) * target_weight, smooth_coef, total_weight, denominator)


class _Terms(NamedTuple):
    """Per-row loss and what the gradient needs: ``a`` and ``A`` under the names of the module docstring."""

    loss: np.ndarray  # (M,)
    denominator: float  # what "mean" divides by
    target_coef: np.ndarray | None  # index targets: (1 - eps) w_y v, at the target class
    smooth_coef: np.ndarray | None  # index targets: eps / C * v, times w_c, on every class
    prob_coef: np.ndarray | None  # probability targets: a_nc = w_c t'_nc
    total_coef: np.ndarray  # A_n


def _loss_terms(rows: _Rows, parts) -> _Terms:
    logits, weight, eps = rows.logits, rows.weight, rows.label_smoothing
    n_samples, n_classes = logits.shape
    # log(sum_exp) = log1p(S'): -log p_c = log_sum - shifted_c is a sum of two non-negative terms, so every
    # loss below keeps full relative accuracy however confident the row.
    log_sum = np.log1p(parts.rest[:, 0])
    if rows.is_index:
        coef = _index_coefficients(rows)
        picked_log_prob = parts.shifted[np.arange(n_samples), coef.safe_target] - log_sum
        loss = _times(coef.target_coef, -picked_log_prob)
        total_coef = coef.target_coef
        smooth_coef = None
        if eps > 0:
            smooth_coef = coef.smooth_coef
            if weight is None:
                weighted_sum = parts.shifted.sum(axis=1)
            else:
                weighted_sum = _row_dot(parts.shifted, weight)
            # sum_c w_c l_nc, using l = shifted - log_sum
            smooth_sum = weighted_sum - coef.total_weight * log_sum
            loss = loss + _times(smooth_coef, -smooth_sum)
            total_coef = coef.target_coef + smooth_coef * coef.total_weight
        return _Terms(loss, coef.denominator, coef.target_coef, smooth_coef, None, total_coef)
    prob_coef = rows.target
    if eps > 0:
        prob_coef = (1.0 - eps) * prob_coef + eps / n_classes
    if weight is not None:
        prob_coef = prob_coef * weight
    total_coef = prob_coef.sum(axis=1)
    loss = total_coef * log_sum - _row_dot(parts.shifted, prob_coef)
    return _Terms(loss, float(n_samples), None, None, prob_coef, total_coef)


def _reduce(rows: _Rows, loss: np.ndarray, denominator: float) -> np.ndarray:
    """The per-row losses ``loss`` reduced as ``rows.reduction`` asks."""
    if rows.reduction == "none":
        return loss.astype(rows.out_dtype).reshape(rows.batch_shape)
    total = np.sum(loss)
    if rows.reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            total = total / total.dtype.type(denominator)  # 0 / 0 = NaN, as in PyTorch
    return np.asarray(total, dtype=rows.out_dtype)


def _row_scale(rows: _Rows, denominator: float, grad_output) -> np.ndarray:
    """The upstream gradient of each row's loss: shape ``(M,)``, or ``(1,)`` when every row shares it."""
    dtype = rows.logits.dtype
    grad_output, _ = as_float_array(grad_output, name="grad_output")
    n_samples = rows.logits.shape[0]
    if rows.reduction == "none":
        if grad_output.shape not in ((), rows.batch_shape):
            raise ValueError(
                f"grad_output must be a scalar or have the loss's shape {rows.batch_shape} with reduction='none', "
                f"got shape {grad_output.shape}"
            )
        if grad_output.shape == ():
            return grad_output.astype(dtype).reshape(1)
        return grad_output.astype(dtype).reshape(n_samples)
    if grad_output.size != 1:
        raise ValueError(
            f"grad_output must be a scalar with reduction={rows.reduction!r}, got shape {grad_output.shape}"
        )
    scale = float(grad_output.reshape(()))
    if rows.reduction == "mean":
        scale = scale / denominator if denominator != 0 else np.nan
    return np.full(1, scale, dtype=dtype)


def _rest_coef(rows: _Rows, terms: _Terms, top: np.ndarray) -> np.ndarray:
    """``A'_n = sum_{c != top} a_nc`` per row, summed without the top class (never ``A_n - a_n,top``)."""
    if not rows.is_index:
        return np.sum(terms.prob_coef, axis=1, where=np.arange(rows.logits.shape[1]) != top[:, None])
    rest = np.where(rows.target != top, terms.target_coef, 0)  # an ignored row's coefficient is 0
    if terms.smooth_coef is not None:
        if rows.weight is None:
            others = float(rows.logits.shape[1] - 1)
        else:  # sum_{c != top} w_c, in float64 so that a dominant w_top costs nothing
            w64 = rows.weight.astype(np.float64)
            others = (np.sum(w64) - w64[top]).astype(rows.logits.dtype)
        rest = rest + terms.smooth_coef * others
    return rest


def _gradient(rows: _Rows, parts, terms: _Terms, scale: np.ndarray) -> np.ndarray:
    """``scale_n * (p_n * A_n - a_n)`` per row, written over ``parts.exp_shifted`` in place.

    At the top entry ``scale_n (A'_n - A_n (1 - p_top))`` with ``1 - p_top = S' / (1 + S')`` and ``A'`` the
    coefficients without the top class: ``p_t - 1 = -sum_{j != t} p_j`` at a top target, exact however
    confident the row (``p_top A - a_top`` cancels there).
    """
    n_samples = rows.logits.shape[0]
    grad = parts.exp_shifted
    top = np.argmax(parts.shifted, axis=1)
    with np.errstate(invalid="ignore"):  # 0 * nan where a reduction's denominator is 0
        row = _times(terms.total_coef, scale)
        grad *= (row / parts.sum_exp[:, 0])[:, None]
        if rows.is_index:
            grad[np.arange(n_samples), np.where(rows.valid, rows.target, 0)] -= _times(terms.target_coef, scale)
            if terms.smooth_coef is not None:
                per_class = 1.0 if rows.weight is None else rows.weight[None, :]
                grad -= _times(terms.smooth_coef[:, None] * per_class, scale[:, None])  # 0 where w_c = 0
        else:
            grad -= terms.prob_coef * scale[:, None]
        complement = parts.rest[:, 0] / parts.sum_exp[:, 0]
        grad[np.arange(n_samples), top] = _times(_rest_coef(rows, terms, top), scale) - row * complement
    masked_rows = np.isneginf(parts.log_sum_exp[:, 0])
    if masked_rows.any():  # a fully masked row takes no part: zero gradient, not NaN
        grad[masked_rows] = 0
    return grad


def _kernel_loss_and_grad(rows: _Rows, grad_output, want_loss: bool, want_grad: bool, *, out=None):
    """``(per-row losses in float64, denominator, gradient rows or None)`` from the compiled row kernels.

    ``out``: where the gradient rows go (``rows.logits`` itself is allowed); a fresh array by default.
    """
    logits = rows.logits
    n_samples, n_classes = logits.shape
    loss = np.empty(n_samples)
    grad = (np.empty_like(logits) if out is None else out) if want_grad else np.empty((1, n_classes), logits.dtype)
    in_place = out is logits
    class_weight = np.empty(0) if rows.weight is None else rows.weight.astype(np.float64)
    if rows.is_index:
        coef = _index_coefficients(rows)
        denominator = coef.denominator
        scale = _row_scale(rows, denominator, grad_output) if want_grad else np.zeros(1)
        args = (coef.safe_target, coef.target_coef.astype(np.float64), coef.smooth_coef.astype(np.float64))
        args += (class_weight, coef.total_weight)
        name = "cross_entropy_index_rows"
    else:
        denominator = float(n_samples)
        scale = _row_scale(rows, denominator, grad_output) if want_grad else np.zeros(1)
        args, name = (rows.target, rows.label_smoothing, class_weight), "cross_entropy_prob_rows"
    run(name, logits, *args, scale.astype(np.float64), loss, grad, want_grad, in_place, n_entries=logits.size)
    return loss, denominator, grad if want_grad else None


def _evaluate(
    input, target, grad_output, *, weight, ignore_index, reduction, label_smoothing, want_loss, want_grad, engine
):
    """``(loss, gradient)`` of a cross-entropy problem from one pass over its logits, computed by ``engine``
    (see :mod:`._engine`); each is None unless asked for. The public functions call this."""
    rows = _prepare(
        input,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        allow_probabilities=True,
    )
    if use_kernel(engine, as_rows(rows.logits, (1,))):
        per_row, denominator, grad = _kernel_loss_and_grad(rows, grad_output, want_loss, want_grad)
    else:
        parts = stable_exp(rows.logits, (1,))
        terms = _loss_terms(rows, parts)
        per_row, denominator = terms.loss, terms.denominator
        grad = _gradient(rows, parts, terms, _row_scale(rows, denominator, grad_output)) if want_grad else None
    loss = _reduce(rows, per_row, denominator) if want_loss else None
    if grad is not None:
        grad = _from_rows(grad.astype(rows.out_dtype, copy=False), rows.input_shape, rows.class_axis)
    return loss, grad


def cross_entropy(
    input,
    target,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> np.ndarray:
    r"""Cross-entropy between logits and class indices or class probabilities, as PyTorch defines it.

    Let :math:`\ell = \operatorname{log\_softmax}(x)` over the class axis, :math:`C` the number of
    classes, :math:`w_c` the class weight (1 when ``weight`` is None),
    :math:`\varepsilon` = ``label_smoothing`` and :math:`v_n = [y_n \ne \text{ignore\_index}]`.

    **Class-index targets** :math:`y_n`:

    .. math::

        L_n = (1-\varepsilon)\,\underbrace{\big(-w_{y_n}\ell_{n,y_n}v_n\big)}_{\text{nll}_n}
              + \frac{\varepsilon}{C}\,\underbrace{\Big(-v_n\sum_c w_c\,\ell_{n,c}\Big)}_{\text{smooth}_n}

    ``"mean"`` divides :math:`\sum_n L_n` by :math:`W = \sum_n w_{y_n} v_n`. When :math:`W = 0` the
    mean is NaN (0/0), as in PyTorch, while ``"sum"`` gives 0; a sample that contributes no term
    gets a zero gradient even then (PyTorch: NaN when the counted targets all have weight 0).

    **Class-probability targets** :math:`t_{n,c}`, with :math:`t' = (1-\varepsilon)\,t + \varepsilon/C`:

    .. math:: L_n = -\sum_c w_c\, t'_{n,c}\, \ell_{n,c}

    ``"mean"`` divides by the number of samples (``input.size / C``). ``ignore_index`` must be
    negative (unused) with probability targets, as in PyTorch.

    Both are :math:`L_n = -\sum_c a_{n,c}\ell_{n,c}`, with
    :math:`a_{n,c} = (1-\varepsilon)\,w_{y_n} v_n [c = y_n] + \frac{\varepsilon}{C} v_n w_c` for class
    indices and :math:`a_{n,c} = w_c\, t'_{n,c}` for class probabilities. The gradient with respect
    to the logits, used by :func:`cross_entropy_backward` and :func:`cross_entropy_with_grad`, is
    :math:`\partial L_n/\partial x_{n,c} = p_{n,c} A_n - a_{n,c}` with :math:`A_n = \sum_c a_{n,c}`
    and :math:`p` the softmax: the lesson's "softmax minus one-hot", weighted and smoothed.

    Parameters
    ----------
    input : array_like
        Logits of shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``; classes on axis 1
        (axis 0 when unbatched). float16/32/64 keep their dtype (float16 is computed in float32);
        integer and boolean input becomes float64.
    target : array_like
        Integer class indices of the input's shape without the class axis, each in ``[0, C)`` or
        equal to ``ignore_index`` (``-1`` is an error, never the last class), or floating class
        probabilities of the input's shape.
    weight : array_like of shape (C,), optional
        Non-negative, finite class weights.
    ignore_index : int, default -100
        Index-target value that contributes neither loss nor gradient nor weight to the mean.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"`` returns the per-sample loss :math:`L_n` with the target's shape.
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon` above.

    Returns
    -------
    ndarray
        The loss: a 0-d array for ``"mean"`` and ``"sum"``, else the per-sample losses;
        the input's floating dtype.

    Notes
    -----
    The loss, and the gradient at the row's top class, keep full relative accuracy however confident
    the row: :math:`-\ell_c = \operatorname{log1p}(S') + (m - x_c)` with :math:`S'` the sum of
    :math:`e^{x_j - m}` over the non-top classes, and at the top class :math:`p A - a = A' - A\,S'/(1 + S')`
    with :math:`A'` the coefficients of the other classes (:math:`p_t - 1 = -\sum_{j \ne t} p_j`).

    Non-finite logits follow the policy of :mod:`softmaxkit`: a target logit of ``-inf`` gives a loss
    of ``+inf`` with a finite gradient; a zero weight or zero target probability on a ``-inf``
    logit contributes 0 (PyTorch gives NaN); a fully masked row has a zero gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import cross_entropy
    >>> cross_entropy(np.array([2.0, 1.0, 0.1]), np.array(0))
    array(0.41703002)
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.0, 3.0, -1.0]])
    >>> cross_entropy(logits, np.array([0, -100]))  # the second sample is ignored
    array(0.41703002)
    >>> cross_entropy(logits, np.array([0, 1]), reduction="none", label_smoothing=0.1)
    array([0.51369668, 0.29921724])
    """
    options = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    return _evaluate(input, target, None, **options, want_loss=True, want_grad=False, engine="auto")[0]


def cross_entropy_backward(
    input,
    target,
    grad_output=1.0,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> np.ndarray:
    r"""Gradient of :func:`cross_entropy` with respect to ``input``, times ``grad_output``.

    ``grad_output`` is the upstream gradient of the loss: a scalar for ``"mean"`` and ``"sum"``,
    a scalar or an array of the loss's shape for ``"none"``. The formula is in :func:`cross_entropy`.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import cross_entropy_backward
    >>> cross_entropy_backward(np.array([2.0, 1.0, 0.1]), np.array(0))  # softmax minus one-hot
    array([-0.34099886,  0.24243297,  0.09856589])
    """
    options = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    return _evaluate(input, target, grad_output, **options, want_loss=False, want_grad=True, engine="auto")[1]


def cross_entropy_with_grad(
    input,
    target,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    r"""``(cross_entropy(...), cross_entropy_backward(...))`` from a single pass over the logits.

    What a training loop needs: the softmax is computed once and serves both the loss and the
    gradient (upstream gradient 1). Arguments and formulas as in :func:`cross_entropy`.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import cross_entropy_with_grad
    >>> loss, grad = cross_entropy_with_grad(np.array([[2.0, 1.0, 0.1]]), np.array([0]))
    >>> loss, grad
    (array(0.41703002), array([[-0.34099886,  0.24243297,  0.09856589]]))
    """
    options = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    return _evaluate(input, target, 1.0, **options, want_loss=True, want_grad=True, engine="auto")


def _nll_terms(rows: _Rows) -> _Terms:
    coef = _index_coefficients(rows)  # label_smoothing is 0: target_coef = w_y v
    loss = _times(coef.target_coef, -rows.logits[np.arange(rows.logits.shape[0]), coef.safe_target])
    return _Terms(loss, coef.denominator, coef.target_coef, None, None, coef.target_coef)


def nll_loss(input, target, *, weight=None, ignore_index: int = -100, reduction: str = "mean") -> np.ndarray:
    r"""Negative log-likelihood of class indices given log-probabilities, as PyTorch defines it.

    ``input`` holds log-probabilities (for instance :func:`log_softmax`'s output) and the loss is
    the ``nll`` term of :func:`cross_entropy`: :math:`L_n = -w_{y_n}\,\text{input}_{n,y_n} v_n`,
    with the same shapes, weights, ``ignore_index`` and reductions (``"mean"`` divides by
    :math:`W = \sum_n w_{y_n} v_n`). Targets are class indices only.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import log_softmax, nll_loss
    >>> nll_loss(log_softmax(np.array([[2.0, 1.0, 0.1]])), np.array([0]))
    array(0.41703002)
    """
    rows = _prepare(
        input,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=0.0,
        allow_probabilities=False,
    )
    terms = _nll_terms(rows)
    return _reduce(rows, terms.loss, terms.denominator)


def nll_loss_backward(
    input, target, grad_output=1.0, *, weight=None, ignore_index: int = -100, reduction: str = "mean"
) -> np.ndarray:
    r"""Gradient of :func:`nll_loss` with respect to ``input``, times ``grad_output``.

    Zero everywhere except :math:`-w_{y_n} v_n` (scaled by the reduction) at each target class.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import nll_loss_backward
    >>> nll_loss_backward(np.zeros((2, 3)), np.array([2, 0]))
    array([[ 0. ,  0. , -0.5],
           [-0.5,  0. ,  0. ]])
    """
    rows = _prepare(
        input,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=0.0,
        allow_probabilities=False,
    )
    terms = _nll_terms(rows)
    scale = _row_scale(rows, terms.denominator, grad_output)
    grad = np.zeros_like(rows.logits)
    n_samples = grad.shape[0]
    with np.errstate(invalid="ignore"):
        grad[np.arange(n_samples), np.where(rows.valid, rows.target, 0)] -= _times(terms.target_coef, scale)
    return _from_rows(grad.astype(rows.out_dtype, copy=False), rows.input_shape, rows.class_axis)
