"""Softmax, log-softmax and log-sum-exp in NumPy, all built on one stable helper.

Non-finite policy (shared by every function of the package)
-----------------------------------------------------------
The functions return the mathematical limit wherever one exists, where PyTorch and
``scipy.special`` return NaN:

* a ``-inf`` entry has probability exactly 0 (log-probability ``-inf``) and takes part
  in no NaN;
* a row whose entries are all ``-inf`` (a fully masked row) has softmax 0 everywhere,
  log-softmax ``-inf`` everywhere, log-sum-exp ``-inf``, and a zero gradient;
  PyTorch and SciPy give NaN here;
* ``+inf`` entries take the limit of a logit growing without bound: the probability
  mass is shared equally by the ``+inf`` entries of the row (each gets ``1/k``),
  every other entry gets 0, and the log-sum-exp is ``+inf``; PyTorch and SciPy give NaN;
* a NaN anywhere in a row makes that whole row NaN (other rows are unaffected).

Dtypes: float16, float32 and float64 are preserved (float16 is computed in float32);
integer and boolean input is promoted to float64.

Two implementations compute each function: the NumPy path below (:func:`stable_exp`), the
reference, and the compiled row kernels of :mod:`._kernels`; :mod:`._engine` chooses between them
(each public function here is its private twin called with ``engine="auto"``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from softmaxkit._numpy._engine import as_rows, run, use_kernel
from softmaxkit._validation import as_float_array, normalize_axes, normalize_axis


class StableExp(NamedTuple):
    r"""The pieces every softmax-like quantity is built from (``keepdims`` over the reduced axes).

    ``shifted`` is ``x - max(x)`` with the non-finite policy applied, ``exp_shifted`` is
    ``exp(shifted)``, ``rest`` is :math:`S' = \sum_{j \ne top} e^{x_j - m}`, the sum of the
    exponentials without the top one (which is exactly 1), summed without it, ``sum_exp`` is
    ``1 + rest`` (1 for a row with nothing to normalise, so that dividing by it is always safe) and
    ``log_sum_exp`` is the log-sum-exp of ``x``, ``m + log1p(S')``.

    Then ``softmax = exp_shifted / sum_exp``, ``log_softmax = shifted - log1p(rest)`` and, at the
    top, ``1 - p_top = rest / sum_exp``: each keeps full relative accuracy however confident the row
    (where ``sum_exp`` rounds to 1, ``log(sum_exp)`` and ``1 - p_top`` would be 0), and at any
    magnitude of ``x`` (nothing is rebuilt from the rounded log-sum-exp).
    """

    shifted: np.ndarray
    exp_shifted: np.ndarray
    rest: np.ndarray
    sum_exp: np.ndarray
    log_sum_exp: np.ndarray


# Up to this many entries per row, reducing the flat data segment by segment (``ufunc.reduceat``)
# is about twice as fast as NumPy's reduction along a short last axis (measured: max and sum of
# 1,000,000 x 10 float32), which otherwise takes most of a softmax's time.
_SHORT_ROW = 32


def _reduce_rows(ufunc: np.ufunc, a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``ufunc.reduce(a, axis=axes, keepdims=True)``, faster for short contiguous last-axis rows."""
    n = a.shape[-1] if a.ndim else 0
    if axes == (a.ndim - 1,) and 1 < n <= _SHORT_ROW and a.size and a.flags.c_contiguous:
        flat = a.reshape(-1)
        return ufunc.reduceat(flat, np.arange(0, flat.size, n)).reshape(a.shape[:-1] + (1,))
    return ufunc.reduce(a, axis=axes, keepdims=True)


def stable_exp(x: np.ndarray, axes: tuple[int, ...]) -> StableExp:
    """The one stable-softmax helper of the package; ``x`` is a floating array, ``axes`` non-empty.

    Both returned full-size arrays are freshly allocated, so callers may overwrite them.
    """
    row_max = _reduce_rows(np.maximum, x, axes)
    finite_max = np.isfinite(row_max)
    # A non-finite maximum is shifted by 0: an all -inf row stays -inf (exp gives 0, not NaN),
    # a NaN row stays NaN, and +inf rows are rewritten just below.
    all_finite = bool(finite_max.all())
    shift = row_max if all_finite else np.where(finite_max, row_max, 0)
    with np.errstate(over="ignore"):  # x - max below the dtype's range is -inf: probability 0, silently
        shifted = x - shift
    if not all_finite:
        nan_rows = np.isnan(row_max)
        if nan_rows.any():  # NaN throughout, so that nothing else in the row overflows or warns
            shifted = np.where(nan_rows, np.nan, shifted)
    # The per-row fix-ups below run only where needed: with many short rows they would cost
    # as much as the exp itself (np.where and np.isposinf are slow on (M, 1) arrays).
    positive_inf_rows = row_max == np.inf
    has_positive_inf = bool(positive_inf_rows.any())
    if has_positive_inf:
        # The limit of softmax as some logits grow without bound: those logits share the mass.
        limit = np.where(np.isposinf(x), 0.0, -np.inf).astype(x.dtype, copy=False)
        shifted = np.where(positive_inf_rows, limit, shifted)
    exp_shifted = np.exp(shifted)
    rest = _rest_sum(exp_shifted, axes)
    empty_rows = rest < 0  # all -inf: no top entry, nothing to normalise
    has_empty = bool(empty_rows.any())
    if has_empty:
        rest[empty_rows] = 0
    sum_exp = 1 + rest
    log_sum_exp = (shift + np.log1p(rest)).astype(x.dtype, copy=False)  # a fresh array
    if has_empty:
        log_sum_exp[empty_rows] = -np.inf
    if has_positive_inf:
        log_sum_exp[positive_inf_rows] = np.inf
    return StableExp(shifted, exp_shifted, rest, sum_exp, log_sum_exp)


def _rest_sum(exp_shifted: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``S'``: the sum of the exponentials without the top one, never ``sum - 1``; -1 for an all ``-inf`` row.

    The entries equal to 1 (the top, its ties, and any within half an ulp of it) are left out of the
    sum and counted: ``S' = sum_{e_j != 1} e_j + (count(e_j = 1) - 1)``, so that a row's 1 never absorbs
    the small exponentials it sits beside.
    """
    ones = exp_shifted == 1
    others = _reduce_rows(np.add, np.where(ones, 0, exp_shifted), axes)
    return others + (_reduce_rows(np.add, ones.astype(exp_shifted.dtype), axes) - 1)


def top_index(a: np.ndarray, axis: int) -> np.ndarray:
    """The position of the maximum of each row of ``a`` along ``axis`` (kept, size one): the top entry."""
    return np.expand_dims(np.argmax(a, axis=axis), axis)


def _unit_axis(x: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """Treat a 0-d array as a single entry along ``axis`` (as PyTorch does for ``dim=-1`` or ``0``)."""
    if x.ndim == 0:
        normalize_axis(axis, 1)
        return x.reshape(1), 0
    return x, normalize_axis(axis, x.ndim)


def softmax(x, axis: int = -1) -> np.ndarray:
    r"""Softmax along ``axis``, computed stably.

    .. math:: \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \quad m = \max_j x_j

    Parameters
    ----------
    x : array_like
        Logits. float16/32/64 keep their dtype; integer and boolean input becomes float64.
    axis : int, default -1
        The axis that sums to one.

    Returns
    -------
    ndarray
        Probabilities, same shape and dtype as ``x``. Non-finite entries follow the
        policy of :mod:`softmaxkit` (a fully masked row gives zeros, ``+inf`` entries
        share the mass), where PyTorch and SciPy give NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import softmax
    >>> softmax(np.array([2.0, 1.0, 0.1]))
    array([0.65900114, 0.24243297, 0.09856589])
    >>> softmax(np.array([[-np.inf, -np.inf], [np.inf, 0.0]]))
    array([[0., 0.],
           [1., 0.]])
    """
    return _softmax(x, axis, log=False, engine="auto")


def _softmax(x, axis: int, *, log: bool, engine: str) -> np.ndarray:
    """:func:`softmax` (or, with ``log``, :func:`log_softmax`) computed by ``engine`` (see :mod:`._engine`)."""
    work, out_dtype = as_float_array(x, name="x")
    work, axis = _unit_axis(work, axis)
    if work.shape[axis] == 0:
        return np.empty(np.shape(x), dtype=out_dtype)
    rows = as_rows(work, (axis,))
    if use_kernel(engine, rows):
        result = np.empty_like(work)
        run("log_softmax_rows" if log else "softmax_rows", rows, result.reshape(rows.shape), n_entries=rows.size)
    elif log:
        parts = stable_exp(work, (axis,))
        result = parts.shifted
        result -= np.log1p(parts.rest)
    else:
        parts = stable_exp(work, (axis,))
        result = parts.exp_shifted
        result /= parts.sum_exp
    return result.astype(out_dtype, copy=False).reshape(np.shape(x))


def log_softmax(x, axis: int = -1) -> np.ndarray:
    r"""Log of the softmax along ``axis``, computed without forming the softmax.

    .. math:: \log\operatorname{softmax}(x)_i = x_i - \operatorname{logsumexp}(x)

    Finite wherever the probability is not exactly 0, so it is exact where ``np.log(softmax(x))``
    underflows to ``-inf``; and accurate to a few ulp where the probability rounds to 1: the top
    entry is ``-log1p(S')`` with :math:`S' = \sum_{j \ne top} e^{x_j - m}` (``log_softmax([0, -40])[0]``
    is -4.2e-18, not 0). Same parameters, dtypes and non-finite policy as :func:`softmax`
    (a fully masked row gives ``-inf`` everywhere).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import log_softmax
    >>> log_softmax(np.array([0.0, 1000.0]))
    array([-1000.,     0.])
    """
    return _softmax(x, axis, log=True, engine="auto")


def logsumexp(x, axis=-1, keepdims: bool = False) -> np.ndarray:
    r"""``log(sum(exp(x)))`` over one axis, a tuple of axes, or all axes (``axis=None``).

    .. math:: \operatorname{logsumexp}(x) = m + \log \sum_j e^{x_j - m}, \quad m = \max_j x_j

    An empty reduction and a fully masked (all ``-inf``) one give ``-inf``; any ``+inf``
    gives ``+inf``; a NaN gives NaN. Dtypes as for :func:`softmax`.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import logsumexp
    >>> float(logsumexp(np.array([1000.0, 1000.0])))
    1000.6931471805599
    >>> logsumexp(np.zeros((2, 3)), axis=None)
    array(1.79175947)
    """
    return _logsumexp(x, axis, keepdims, engine="auto")


def _logsumexp(x, axis, keepdims: bool, *, engine: str) -> np.ndarray:
    """:func:`logsumexp` computed by ``engine`` (see :mod:`._engine`)."""
    work, out_dtype = as_float_array(x, name="x")
    if work.ndim == 0:
        normalize_axes(axis, 1)  # only validates: the log-sum-exp of one entry is that entry
        return work.astype(out_dtype)
    axes = normalize_axes(axis, work.ndim)
    reduced_shape = tuple(1 if i in axes else n for i, n in enumerate(work.shape))
    rows = as_rows(work, axes)
    if any(work.shape[a] == 0 for a in axes):
        result = np.full(reduced_shape, -np.inf, dtype=work.dtype)
    elif use_kernel(engine, rows):
        result = np.empty(rows.shape[0], dtype=work.dtype)
        run("logsumexp_rows", rows, result, n_entries=rows.size)
        result = result.reshape(reduced_shape)
    else:
        result = stable_exp(work, axes).log_sum_exp
    if not keepdims:
        result = np.squeeze(result, axis=axes)
    return result.astype(out_dtype, copy=False)


def softmax_backward(grad_output, output, axis: int = -1) -> np.ndarray:
    r"""Vector-Jacobian product of :func:`softmax`: the gradient with respect to its input.

    With :math:`p` the softmax output and :math:`g` the upstream gradient,

    .. math:: \frac{\partial L}{\partial x_i} = p_i \Big(g_i - \sum_j g_j p_j\Big)

    Entries with probability 0 (``-inf`` logits, fully masked rows) get gradient 0.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import softmax, softmax_backward
    >>> p = softmax(np.array([2.0, 1.0, 0.1]))
    >>> softmax_backward(np.array([1.0, 0.0, 0.0]), p)
    array([ 0.22471864, -0.1597636 , -0.06495503])
    """
    return _softmax_backward(grad_output, output, axis, log=False, engine="auto")


def _backward_rows(grad: np.ndarray, output: np.ndarray, axis: int):
    """The ``(M, C)`` views of ``grad`` and ``output`` for a backward kernel, or None."""
    rows, output_rows = as_rows(grad, (axis,)), as_rows(output, (axis,))
    return None if rows is None or output_rows is None or grad.dtype != output.dtype else (rows, output_rows)


def _softmax_backward(grad_output, output, axis: int, *, log: bool, engine: str) -> np.ndarray:
    """:func:`softmax_backward` (or, with ``log``, :func:`log_softmax_backward`) computed by ``engine``."""
    grad, out_dtype = as_float_array(grad_output, name="grad_output")
    output, _ = as_float_array(output, name="output")
    _check_same_shape(grad, output)
    axis = normalize_axis(axis, max(output.ndim, 1))  # a 0-d array has one axis, as in the forward pass
    if output.ndim == 0:
        return np.zeros((), dtype=out_dtype)
    if output.size == 0:  # nothing to reduce (no top entry to find)
        return np.zeros(output.shape, dtype=out_dtype)
    pair = _backward_rows(grad, output, axis)
    if use_kernel(engine, None if pair is None else pair[0]):
        result = np.empty_like(grad)
        name = "log_softmax_backward_rows" if log else "softmax_backward_rows"
        run(name, *pair, result.reshape(pair[0].shape), n_entries=grad.size)
    elif log:
        result = _log_softmax_backward_numpy(grad, output, axis)
    else:
        result = _softmax_backward_numpy(grad, output, axis)
    return result.astype(out_dtype, copy=False)


def log_softmax_backward(grad_output, output, axis: int = -1) -> np.ndarray:
    r"""Vector-Jacobian product of :func:`log_softmax`: the gradient with respect to its input.

    With :math:`\ell` the log-softmax output and :math:`g` the upstream gradient,

    .. math:: \frac{\partial L}{\partial x_i} = g_i - e^{\ell_i} \sum_j g_j

    A fully masked row (``output`` all ``-inf``) takes no part in the computation and
    gets a zero gradient (PyTorch returns ``g`` there, or NaN).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import log_softmax, log_softmax_backward
    >>> out = log_softmax(np.array([2.0, 1.0, 0.1]))
    >>> log_softmax_backward(np.array([-1.0, 0.0, 0.0]), out)  # the gradient of -log p_0
    array([-0.34099886,  0.24243297,  0.09856589])
    """
    return _softmax_backward(grad_output, output, axis, log=True, engine="auto")


def _softmax_backward_numpy(grad: np.ndarray, probabilities: np.ndarray, axis: int) -> np.ndarray:
    """``p_i (d_i - sum_j d_j p_j)`` with ``d = g - g_top``: the same value as ``p_i (g_i - <g, p>)``, and at
    the top entry ``p_top sum_j (g_top - g_j) p_j``, without the cancellation of ``g_top - <g, p>``."""
    diff = grad - np.take_along_axis(grad, top_index(probabilities, axis), axis)
    result = diff * probabilities
    result = np.sum(result, axis=axis, keepdims=True)
    np.subtract(diff, result, out=diff)
    diff *= probabilities
    return diff


def _log_softmax_backward_numpy(grad: np.ndarray, log_probabilities: np.ndarray, axis: int) -> np.ndarray:
    """``g_i - p_i sum_j g_j``, and at the top entry ``g_top (1 - p_top) - p_top sum_{j != top} g_j`` with
    ``1 - p_top = -expm1(l_top)``: exact however confident the row (``g - p sum(g)`` cancels there)."""
    result = np.exp(log_probabilities)
    # A log-softmax row always has an entry >= -log(C), so its exp sums to 0 only when fully masked.
    masked_rows = ~np.any(result, axis=axis, keepdims=True)
    top = top_index(log_probabilities, axis)
    grad_top = np.take_along_axis(grad, top, axis)
    grad_rest = np.sum(grad, axis=axis, keepdims=True, where=_not_at(top, grad.shape, axis))
    log_top = np.take_along_axis(log_probabilities, top, axis)
    with np.errstate(invalid="ignore"):  # a NaN row stays NaN (the policy); numpy 1.24's expm1 warns on NaN
        at_top = grad_top * -np.expm1(log_top) - np.exp(log_top) * grad_rest
    result *= -(grad_top + grad_rest)
    result += grad
    np.put_along_axis(result, top, at_top, axis)
    if masked_rows.any():
        result = np.where(masked_rows, 0, result)
    return result


def _not_at(index: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """A mask of ``shape``: False at ``index`` (one position per row along ``axis``), True elsewhere."""
    positions = np.arange(shape[axis]).reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return positions != index


def _check_same_shape(grad: np.ndarray, output: np.ndarray) -> None:
    if grad.shape != output.shape:
        raise ValueError(f"grad_output must have the shape of output {output.shape}, got shape {grad.shape}")
