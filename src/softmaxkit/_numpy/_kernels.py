"""Compiled row kernels (numba) behind the NumPy functions: one fused pass per row, rows in parallel.

Private, and imported on first use by :mod:`softmaxkit._numpy._engine` (never at ``import softmaxkit``):
numba compiles each kernel lazily, for the dtypes it meets, and caches the machine code on disk.

Every kernel takes C-contiguous 2-D float32 or float64 arrays with one sample per row and the classes
along axis 1, and writes into outputs the caller allocated. The math and the non-finite policy are
those of :func:`softmaxkit._numpy._softmax.stable_exp`, the NumPy reference they are tested against,
applied row by row: ``m = max(x)``; a finite ``m`` is the shift, a ``-inf`` one (an all ``-inf`` row)
is shifted by 0; ``s = sum(exp(x - shift))``; an all ``-inf`` row (``s = 0``) is normalised by 1; a
``+inf`` maximum takes the limit (the ``+inf`` entries share the mass: ``exp`` is 1 there, 0 elsewhere,
``s`` their count); a NaN anywhere makes ``s`` NaN and with it the whole row. The log-probabilities
are ``(x - shift) - log(s)``, never ``log(softmax)``. The numerics are in :mod:`._jit_math`.
"""

from __future__ import annotations

import math
import types

import numpy as np
from numba import njit, prange

from softmaxkit._numpy._jit_math import (
    _EXACT,
    _PARALLEL,
    _SERIAL,
    _SHORT_ROW,
    _SUM,
    _TILE,
    _at,
    _dot,
    _dtype_of,
    _exp,
    _exp_store_sum,
    _exp_sum,
    _flat_scale,
    _has_nan,
    _limit_count,
    _limit_shifted,
    _limit_store_count,
    _row_exponentials,
    _row_max,
    _row_shift,
    _scale_row,
    _shift_of,
    _shifted,
    _sum,
    _tile_count,
    _tile_exponentials,
    _tile_shifts,
    _times,
)

# --------------------------------------------------------------------------- threads
# Each kernel comes twice: parallel (numba's threads, as many as the calling thread's
# numba.get_num_threads()) and ``.serial``, the same source compiled without threads, which
# _engine.run calls for small problems (see PARALLEL_MIN_SIZE there). Not numba.set_num_threads around
# the call: from Python it costs 15 us a call, and from compiled code it stops numba from caching it.


def _rows_kernel(fn):
    """``fn`` compiled in parallel, with its one-thread twin as ``.serial`` (cached under its own name)."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, f"{fn.__name__}_serial", fn.__defaults__)
    twin.__qualname__ = f"{fn.__qualname__}_serial"
    twin.__doc__ = fn.__doc__
    kernel = njit(**_PARALLEL)(fn)
    kernel.serial = njit(**_SERIAL)(twin)
    return kernel


# --------------------------------------------------------------------------- softmax and friends


@njit(**_EXACT)
def _softmax_row(x, out):
    m = _row_max(x)
    s = _limit_store_count(x, out) if m == np.inf else _exp_store_sum(x, _shift_of(m), out)
    if s == 0:  # all -inf: out is 0 already
        s = 1.0
    _scale_row(out, _dtype_of(x)(1.0 / s))


@njit(**_EXACT)
def _log_softmax_row(x, out):
    scalar = _dtype_of(x)
    m = _row_max(x)
    if m == np.inf:
        log_sum = math.log(_limit_count(x))
        for j in range(x.size):
            out[j] = _limit_shifted(x[j]) - log_sum
        return
    shift = _shift_of(m)
    s = _exp_sum(x, shift)
    log_sum = scalar(math.log(s if s != 0 else 1.0))
    for j in range(x.size):
        out[j] = (x[j] - shift) - log_sum


@njit(**_EXACT)
def _logsumexp_row(x):
    m = _row_max(x)
    if m == np.inf:
        return np.inf if _limit_count(x) == _limit_count(x) else np.nan
    shift = _shift_of(m)
    s = _exp_sum(x, shift)
    return np.float64(shift) + math.log(s) if s != 0 else -np.inf


@njit(**_EXACT)
def _softmax_tile(x, out):
    n_rows, n_classes = x.shape
    expanded = np.empty(n_rows * n_classes, x.dtype)
    shifts, plus, sums = np.empty(n_rows, x.dtype), np.empty(n_rows, np.bool_), np.empty(n_rows)
    any_plus = _tile_shifts(x, shifts, plus, expanded)
    _tile_exponentials(x, expanded, out, False, plus, any_plus, sums)
    for r in range(n_rows):
        inverse = _dtype_of(x)(1.0 / (sums[r] if sums[r] != 0 else 1.0))
        for j in range(n_classes):
            expanded[r * n_classes + j] = inverse
    _flat_scale(out.reshape(out.size), expanded)


@njit(**_EXACT)
def _log_softmax_tile(x, out):
    n_rows, n_classes = x.shape
    scalar = _dtype_of(x)
    expanded, e = np.empty(n_rows * n_classes, x.dtype), np.empty((n_rows, n_classes), x.dtype)
    shifts, plus, sums = np.empty(n_rows, x.dtype), np.empty(n_rows, np.bool_), np.empty(n_rows)
    any_plus = _tile_shifts(x, shifts, plus, expanded)
    _tile_exponentials(x, expanded, e, False, plus, any_plus, sums)
    log_sums = e.reshape(e.size)  # the exponentials are summed: their room takes each row's log(s)
    for r in range(n_rows):
        log_sum = scalar(math.log(sums[r] if sums[r] != 0 else 1.0))
        for j in range(n_classes):
            log_sums[r * n_classes + j] = log_sum
    _flat_log_softmax(x.reshape(x.size), expanded, log_sums, out.reshape(out.size))
    if any_plus:
        for r in range(n_rows):
            if plus[r]:
                log_sum = math.log(sums[r])
                for j in range(n_classes):
                    out[r, j] = _limit_shifted(x[r, j]) - log_sum


@njit(**_EXACT)
def _flat_log_softmax(x, shift, log_sum, out):
    for k in range(x.size):
        out[k] = (x[k] - shift[k]) - log_sum[k]


@_rows_kernel
def softmax_rows(x, out):
    """``out[i] = softmax(x[i])``."""
    n_rows = x.shape[0]
    if x.shape[1] > _SHORT_ROW:
        for i in prange(n_rows):
            _softmax_row(x[i], out[i])
    else:
        for t in prange(_tile_count(n_rows)):
            start, stop = t * _TILE, min(n_rows, (t + 1) * _TILE)
            _softmax_tile(x[start:stop], out[start:stop])


@_rows_kernel
def log_softmax_rows(x, out):
    """``out[i] = log_softmax(x[i])``."""
    n_rows = x.shape[0]
    if x.shape[1] > _SHORT_ROW:
        for i in prange(n_rows):
            _log_softmax_row(x[i], out[i])
    else:
        for t in prange(_tile_count(n_rows)):
            start, stop = t * _TILE, min(n_rows, (t + 1) * _TILE)
            _log_softmax_tile(x[start:stop], out[start:stop])


@_rows_kernel
def logsumexp_rows(x, out):
    """``out[i] = logsumexp(x[i])`` (``out`` 1-D)."""
    for i in prange(x.shape[0]):
        out[i] = _logsumexp_row(x[i])


@_rows_kernel
def softmax_backward_rows(grad, proba, out):
    """``out[i] = p (g - sum(g p))`` with ``g = grad[i]``, ``p = proba[i]``."""
    for i in prange(grad.shape[0]):
        g, p, o = grad[i], proba[i], out[i]
        d = _dtype_of(g)(_dot(g, p))
        for j in range(g.size):
            o[j] = g[j] * p[j] - p[j] * d


@_rows_kernel
def log_softmax_backward_rows(grad, log_proba, out):
    """``out[i] = g - exp(l) sum(g)`` with ``g = grad[i]``, ``l = log_proba[i]``; 0 for a fully masked row."""
    for i in prange(grad.shape[0]):
        g, logp, o = grad[i], log_proba[i], out[i]
        if _exp(_row_max(logp)) == 0 and not _has_nan(logp):  # every exp(l) is 0: fully masked
            for j in range(g.size):
                o[j] = 0
            continue
        total = _dtype_of(g)(_sum(g))
        for j in range(g.size):
            o[j] = g[j] - _exp(logp[j]) * total


# --------------------------------------------------------------------------- cross-entropy
# The coefficients are those of softmaxkit._numpy._cross_entropy (its module docstring); they are
# computed there, once, and passed in: per row (an array of M values) or shared (an array of one).
# Each row: L = A log(s) - sum_c a_c (x_c - shift), and the gradient scale (p A - a), written over
# the exponentials that the pass stored in the gradient row. Everything that reads the logits
# beyond the exponentials is read before them, so that the gradient may overwrite the logits
# (``in_place``: ``grad`` is ``x``).


@njit(**_SUM)
def _weighted_shifted_sum(x, shift, plus, class_weight):
    """``sum_c w_c (x_c - shift)`` in float64, a zero weight contributing 0 even on a ``-inf`` entry."""
    total = 0.0
    if plus:
        for c in range(x.size):
            w = 1.0 if class_weight.size == 0 else class_weight[c]
            total += _times(w, _limit_shifted(x[c]))
    elif class_weight.size == 0:
        for c in range(x.size):
            total += np.float64(x[c]) - np.float64(shift)
    else:
        for c in range(x.size):
            w = class_weight[c]
            total += 0.0 if w == 0 else w * (np.float64(x[c]) - np.float64(shift))
    return total


@njit(**_EXACT)
def _finish_gradient(g, factor, offset, class_weight):
    """``g = g * factor - offset * w_c`` (``w_c = 1`` without class weights)."""
    scalar = _dtype_of(g)
    f = scalar(factor)
    if offset == 0:
        _scale_row(g, f)
    elif class_weight.size == 0:
        off = scalar(offset)
        for c in range(g.size):
            g[c] = g[c] * f - off
    else:
        for c in range(g.size):
            g[c] = g[c] * f - scalar(offset * class_weight[c])


@njit(**_EXACT)
def _index_row_finish(
    i, y, s, target_shifted, smooth_sum, coefficients, class_weight, total_weight, loss, g, with_grad
):
    """The loss ``loss[i]`` of a row and, ``with_grad``, its gradient, written over its exponentials ``g``."""
    target_coef, smooth_coef, scale = coefficients
    tc, sc = _at(target_coef, i), _at(smooth_coef, i)
    masked = s == 0
    log_sum = 0.0 if masked else math.log(s)
    value = _times(tc, log_sum - target_shifted)
    if sc != 0:
        value += _times(sc, total_weight * log_sum - smooth_sum)
    loss[i] = value
    if not with_grad:
        return
    if masked:  # a fully masked row takes no part: zero gradient
        _scale_row(g, _dtype_of(g)(0))
        return
    row_scale = _at(scale, i)
    factor = _times(tc + sc * total_weight, row_scale) / s
    _finish_gradient(g, factor, _times(sc, row_scale), class_weight)
    g[y] -= _times(tc, row_scale)


@njit(**_EXACT)
def _index_tile(x, target, coefficients, class_weight, total_weight, loss, grad, with_grad, in_place, first):
    n_rows, n_classes = x.shape
    smooth_coef = coefficients[1]
    expanded = np.empty(n_rows * n_classes, x.dtype)
    e = grad if with_grad else np.empty((n_rows, n_classes), x.dtype)
    shifts, plus = np.empty(n_rows, x.dtype), np.empty(n_rows, np.bool_)
    sums, target_shifted, smooth_sums = np.empty(n_rows), np.empty(n_rows), np.zeros(n_rows)
    any_plus = _tile_shifts(x, shifts, plus, expanded)
    for r in range(n_rows):  # what reads the logits, before the exponentials may overwrite them
        target_shifted[r] = _shifted(x[r, target[first + r]], shifts[r], plus[r])
        if _at(smooth_coef, first + r) != 0:
            smooth_sums[r] = _weighted_shifted_sum(x[r], shifts[r], plus[r], class_weight)
    _tile_exponentials(x, expanded, e, in_place and with_grad, plus, any_plus, sums)
    for r in range(n_rows):
        i = first + r
        _index_row_finish(
            i,
            target[i],
            sums[r],
            target_shifted[r],
            smooth_sums[r],
            coefficients,
            class_weight,
            total_weight,
            loss,
            e[r],
            with_grad,
        )


@_rows_kernel
def cross_entropy_index_rows(
    x, target, target_coef, smooth_coef, class_weight, total_weight, scale, loss, grad, with_grad, in_place
):
    """Index targets: ``loss[i] = L_i`` (float64) and, ``with_grad``, ``grad[i] = scale_i (p_i A_i - a_i)``.

    ``target`` holds valid class indices (ignored samples: any index, with coefficients 0);
    ``target_coef``, ``smooth_coef`` and ``scale`` hold M values or one; ``class_weight`` C values
    or none (all ones) and ``total_weight`` their sum. Without ``with_grad``, ``grad`` is unused;
    with ``in_place``, ``grad`` is ``x``.
    """
    n_rows = x.shape[0]
    coefficients = (target_coef, smooth_coef, scale)
    if x.shape[1] <= _SHORT_ROW:
        for t in prange(_tile_count(n_rows)):
            start, stop = t * _TILE, min(n_rows, (t + 1) * _TILE)
            g = grad[start:stop] if with_grad else grad
            _index_tile(
                x[start:stop], target, coefficients, class_weight, total_weight, loss, g, with_grad, in_place, start
            )
    else:
        for i in prange(n_rows):
            row, y = x[i], target[i]
            g = grad[i] if with_grad else grad[0]
            shift, plus = _row_shift(row)
            target_shifted = _shifted(row[y], shift, plus)
            smooth_sum = _weighted_shifted_sum(row, shift, plus, class_weight) if _at(smooth_coef, i) != 0 else 0.0
            s = _row_exponentials(row, shift, plus, g, with_grad, in_place)
            _index_row_finish(
                i, y, s, target_shifted, smooth_sum, coefficients, class_weight, total_weight, loss, g, with_grad
            )


@njit(**_EXACT)
def _prob_coef(q, w, eps, inv_classes):
    """``a_c = w_c ((1 - eps) q_c + eps / C)``, the probability-target coefficient."""
    a = np.float64(q) if eps == 0 else (1.0 - eps) * np.float64(q) + eps * inv_classes
    return a * w


@njit(**_SUM)
def _prob_terms(x, q, class_weight, eps, shift, plus):
    """``(A, D)``: ``sum_c a_c`` and ``sum_c a_c (x_c - shift)`` (a zero ``a_c`` contributing 0)."""
    inv_classes = 1.0 / x.size
    total, dot = 0.0, 0.0
    for c in range(x.size):
        a = _prob_coef(q[c], 1.0 if class_weight.size == 0 else class_weight[c], eps, inv_classes)
        total += a
        dot += 0.0 if a == 0 else a * _shifted(x[c], shift, plus)
    return total, dot


@_rows_kernel
def cross_entropy_prob_rows(x, target, eps, class_weight, scale, loss, grad, with_grad, in_place):
    """Probability targets ``target`` (M x C): ``loss[i] = L_i`` and, ``with_grad``, the gradient rows
    (arguments as in :func:`cross_entropy_index_rows`)."""
    for i in prange(x.shape[0]):
        row, q = x[i], target[i]
        g = grad[i] if with_grad else grad[0]
        shift, plus = _row_shift(row)
        total, dot = _prob_terms(row, q, class_weight, eps, shift, plus)
        s = _row_exponentials(row, shift, plus, g, with_grad, in_place)
        masked = s == 0
        loss[i] = total * (0.0 if masked else math.log(s)) - dot
        if not with_grad:
            continue
        if masked:
            _scale_row(g, _dtype_of(g)(0))
            continue
        row_scale = _at(scale, i)
        scalar = _dtype_of(g)
        factor = scalar(_times(total, row_scale) / s)
        inv_classes = 1.0 / row.size
        for c in range(g.size):
            w = 1.0 if class_weight.size == 0 else class_weight[c]
            g[c] = g[c] * factor - scalar(_prob_coef(q[c], w, eps, inv_classes) * row_scale)
