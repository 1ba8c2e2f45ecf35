"""The numerics the compiled row kernels (:mod:`._kernels`) are built from: numba functions on one row
or one tile of rows.

Private, and imported with :mod:`._kernels`, on first use. Exactness: the sum of exponentials is
accumulated in float64 for both dtypes (in the data's dtype over blocks of ``_BLOCK`` entries, then
in float64 with compensation, so its error does not grow with the number of classes), and the
exponential is :func:`_exp32` / :func:`_exp64` (and their ``t <= 0`` forms), within 1 ulp of the
correctly rounded value (tests/test_kernels.py checks it over the whole range, subnormals included).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

# Row helpers may reorder their sums ("reassoc", so that they vectorise) and fuse multiply-adds;
# nothing else of fast-math (no "nnan"/"ninf": the non-finite policy relies on IEEE semantics).
# The exponential is compiled without "reassoc" (it would undo the range reduction), and LLVM keeps
# each instruction's own flags when it inlines it into a caller.
_SUM = {"cache": True, "error_model": "numpy", "fastmath": {"reassoc", "contract"}}
_EXACT = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}}
_PARALLEL = {"cache": True, "error_model": "numpy", "parallel": True}
_SERIAL = {"cache": True, "error_model": "numpy"}

# Sums run in the data's dtype over blocks of this many entries (vectorised: a few ulp of error per
# block), then across blocks in float64 with Kahan's compensation (:func:`_add`), so their error does
# not grow with the number of classes. For float32, a float64 accumulator in the exponential's loop
# halves the vector width and took 1.8x as long (1e7 entries, one thread); per block, the sum is free.
_BLOCK = 64


# --------------------------------------------------------------------------- LLVM primitives


def _bitcast_intrinsic(source, target, llvm_type):
    @intrinsic
    def bitcast(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_type)

        return target(source), codegen

    return bitcast


_f32_from_bits = _bitcast_intrinsic(types.int32, types.float32, ir.FloatType())
_f64_from_bits = _bitcast_intrinsic(types.int64, types.float64, ir.DoubleType())


def _llvm_binary(name):
    @intrinsic
    def call(typingctx, a, b):
        def codegen(context, builder, signature, args):
            llvm_type = args[0].type
            suffix = "f64" if isinstance(llvm_type, ir.DoubleType) else "f32"
            function_type = ir.FunctionType(llvm_type, [llvm_type, llvm_type])
            fn = cgutils.get_or_insert_function(builder.module, function_type, f"llvm.{name}.{suffix}")
            return builder.call(fn, args)

        return a(a, a), codegen

    return call


# IEEE maxNum / minNum: a NaN operand is ignored. A reduction with them vectorises (a compare-and-
# select one does not, without "nnan"); a row's NaN is caught later, by its sum of exponentials.
_maxnum = _llvm_binary("maxnum")
_minnum = _llvm_binary("minnum")


def _dtype_of(value):
    """Typed-at-compile-time stub: the NumPy scalar type of ``value`` (an array's entries, or a scalar)."""


@overload(_dtype_of)
def _dtype_of_impl(value):
    scalar = as_dtype(value.dtype if isinstance(value, types.Array) else value).type
    return lambda value: scalar


# --------------------------------------------------------------------------- the exponential
# LLVM lowers math.exp to one libm call per entry (5 ns); numba's vectorised SVML needs an LLVM that
# pip's llvmlite is not built with. So: exp(t) = 2^n exp(r), n = round(t / ln 2), r = t - n ln 2
# (ln 2 split in two, the high part short enough that n * high is exact), exp(r) by its Taylor
# polynomial on |r| <= ln(2) / 2 (truncation error below 0.05 ulp), 2^n built in the exponent bits
# as two factors so that subnormal results are rounded once. Everything vectorises.


def _taylor(degree, scalar):
    return tuple(scalar(1.0 / math.factorial(k)) for k in range(degree + 1))


_F32 = np.float32
_LOG2E_32, _LN2_HI_32, _LN2_LO_32 = _F32(1.4426950408889634), _F32(0.693115234375), _F32(3.194618329871446e-05)
_ROUND_32 = _F32(12582912.0)  # 1.5 * 2^23: adding it rounds |v| < 2^22 to an integer
_LOW_32, _HIGH_32 = _F32(-104.0), _F32(89.0)  # exp is 0 below, +inf above
_P32 = _taylor(7, _F32)  # r^8 / 8! < 6e-9 relative

_LOG2E_64, _LN2_HI_64, _LN2_LO_64 = 1.4426950408889634, 0.6931471803691238, 1.9082149292705877e-10
_ROUND_64 = 6755399441055744.0  # 1.5 * 2^52
_LOW_64, _HIGH_64 = -1080.0, 710.0
_P64 = _taylor(13, float)  # r^14 / 14! < 5e-18 relative


@njit(**_EXACT)
def _poly32(r):
    p = _P32[7]
    p = p * r + _P32[6]
    p = p * r + _P32[5]
    p = p * r + _P32[4]
    p = p * r + _P32[3]
    p = p * r + _P32[2]
    p = p * r + _P32[1]
    return p * r + _P32[0]


@njit(**_EXACT)
def _poly64(r):
    p = _P64[13]
    p = p * r + _P64[12]
    p = p * r + _P64[11]
    p = p * r + _P64[10]
    p = p * r + _P64[9]
    p = p * r + _P64[8]
    p = p * r + _P64[7]
    p = p * r + _P64[6]
    p = p * r + _P64[5]
    p = p * r + _P64[4]
    p = p * r + _P64[3]
    p = p * r + _P64[2]
    p = p * r + _P64[1]
    return p * r + _P64[0]


@njit(**_EXACT)
def _exp32(t):
    clamped = _minnum(_maxnum(t, _LOW_32), _HIGH_32)
    n = (clamped * _LOG2E_32 + _ROUND_32) - _ROUND_32
    p = _poly32((clamped - n * _LN2_HI_32) - n * _LN2_LO_32)
    k = np.int32(n)
    half = k >> np.int32(1)
    e = p * _f32_from_bits((half + np.int32(127)) << np.int32(23))
    e = e * _f32_from_bits((k - half + np.int32(127)) << np.int32(23))
    return e if t == t else t


@njit(**_EXACT)
def _exp64(t):
    clamped = _minnum(_maxnum(t, _LOW_64), _HIGH_64)
    n = (clamped * _LOG2E_64 + _ROUND_64) - _ROUND_64
    p = _poly64((clamped - n * _LN2_HI_64) - n * _LN2_LO_64)
    k = np.int64(n)
    half = k >> 1
    e = p * _f64_from_bits((half + 1023) << 52)
    e = e * _f64_from_bits((k - half + 1023) << 52)
    return e if t == t else t


# exp(t) for t <= 0 (or -inf, or NaN): what every softmax-like sum needs (t = x - max). Then
# 2^n (n <= 0) is one multiply by 2^(n + k), a normal number, and one by the constant 2^-k, the
# only rounding of a subnormal result. About 20 % faster than the full range's two variable factors.
_NONPOSITIVE_LOW_32, _UNBIAS_32 = _F32(-104.0), _F32(2.0**-24)  # n >= -150
_NONPOSITIVE_LOW_64, _UNBIAS_64 = -746.0, 2.0**-64  # n >= -1077


@njit(**_EXACT)
def _exp_nonpositive32(t):
    clamped = _maxnum(t, _NONPOSITIVE_LOW_32)
    n = (clamped * _LOG2E_32 + _ROUND_32) - _ROUND_32
    p = _poly32((clamped - n * _LN2_HI_32) - n * _LN2_LO_32)
    e = p * _f32_from_bits((np.int32(n) + np.int32(127 + 24)) << np.int32(23)) * _UNBIAS_32
    return e if t == t else t


@njit(**_EXACT)
def _exp_nonpositive64(t):
    clamped = _maxnum(t, _NONPOSITIVE_LOW_64)
    n = (clamped * _LOG2E_64 + _ROUND_64) - _ROUND_64
    p = _poly64((clamped - n * _LN2_HI_64) - n * _LN2_LO_64)
    e = p * _f64_from_bits((np.int64(n) + (1023 + 64)) << 52) * _UNBIAS_64
    return e if t == t else t


def _exp(t):
    """Typed-at-compile-time stub: ``exp(t)`` in ``t``'s own precision."""


@overload(_exp)
def _exp_impl(t):
    if t == types.float32:
        return lambda t: _exp32(t)
    return lambda t: _exp64(t)


def _exp_nonpositive(t):
    """Typed-at-compile-time stub: ``exp(t)`` for ``t <= 0``, in ``t``'s own precision."""


@overload(_exp_nonpositive)
def _exp_nonpositive_impl(t):
    if t == types.float32:
        return lambda t: _exp_nonpositive32(t)
    return lambda t: _exp_nonpositive64(t)


@njit(**_EXACT)
def exp_array(t, out, nonpositive):
    """``out = exp(t)`` entry by entry (1-D arrays; ``nonpositive``: ``t <= 0``): for the tests."""
    if nonpositive:
        for j in range(t.size):
            out[j] = _exp_nonpositive(t[j])
    else:
        for j in range(t.size):
            out[j] = _exp(t[j])


# --------------------------------------------------------------------------- one row


@njit(**_EXACT)
def _row_max(x):
    scalar = _dtype_of(x)
    m = scalar(-np.inf)
    for j in range(x.size):
        m = _maxnum(m, x[j])
    return m


@njit(**_EXACT)
def _shift_of(m):
    """The shift of a row with maximum ``m`` (not +inf): ``m``, or 0 for an all ``-inf`` (or all NaN) row."""
    return m if m > -np.inf else _dtype_of(m)(0)


@njit(**_EXACT)
def _add(total, compensation, value):
    """Kahan's compensated ``total + value`` (``_EXACT``: a caller's "reassoc" would cancel the compensation)."""
    y = value - compensation
    t = total + y
    return t, (t - total) - y


@njit(**_SUM)
def _exp_sum(x, shift):
    """``sum(exp(x - shift))`` in float64."""
    scalar = _dtype_of(x)
    total, compensation = 0.0, 0.0
    for start in range(0, x.size, _BLOCK):
        part = scalar(0)
        for j in range(start, min(start + _BLOCK, x.size)):
            part += _exp_nonpositive(x[j] - shift)
        total, compensation = _add(total, compensation, np.float64(part))
    return total


@njit(**_SUM)
def _exp_store_sum(x, shift, out):
    """``out = exp(x - shift)``; returns ``sum(out)`` in float64."""
    scalar = _dtype_of(x)
    total, compensation = 0.0, 0.0
    for start in range(0, x.size, _BLOCK):
        part = scalar(0)
        for j in range(start, min(start + _BLOCK, x.size)):
            e = _exp_nonpositive(x[j] - shift)
            out[j] = e
            part += e
        total, compensation = _add(total, compensation, np.float64(part))
    return total


@njit(**_SUM)
def _exp_in_place_sum(a, shift):
    """``a = exp(a - shift)``; returns ``sum(a)`` in float64 (one array: no aliasing to check at run time)."""
    scalar = _dtype_of(a)
    total, compensation = 0.0, 0.0
    for start in range(0, a.size, _BLOCK):
        part = scalar(0)
        for j in range(start, min(start + _BLOCK, a.size)):
            e = _exp_nonpositive(a[j] - shift)
            a[j] = e
            part += e
        total, compensation = _add(total, compensation, np.float64(part))
    return total


@njit(**_EXACT)
def _limit_count(x):
    """For a row whose maximum is +inf: the number of +inf entries (NaN if the row has a NaN)."""
    count = 0.0
    for j in range(x.size):
        v = x[j]
        if v != v:
            return np.nan
        if v == np.inf:
            count += 1.0
    return count


@njit(**_EXACT)
def _limit_store_count(x, out):
    """For a row whose maximum is +inf: ``out`` = 1 at the +inf entries, else 0; returns their count.

    ``out`` may be ``x`` itself (the count is taken first).
    """
    count = _limit_count(x)
    for j in range(x.size):
        out[j] = 1.0 if x[j] == np.inf else 0.0
    return count


@njit(**_EXACT)
def _limit_shifted(v):
    """The shifted logit of an entry of a row whose maximum is +inf: 0 for +inf, else ``-inf``."""
    return 0.0 if v == np.inf else -np.inf


@njit(**_EXACT)
def _times(coef, value):
    """``coef * value`` with ``0 * inf = 0 * nan = 0``: a term with coefficient 0 contributes nothing."""
    return 0.0 if coef == 0 else coef * value


@njit(**_EXACT)
def _scale_row(out, factor):
    for j in range(out.size):
        out[j] = out[j] * factor


@njit(**_SUM)
def _dot(a, b):
    """``sum(a * b)`` in float64 (blocks as in :func:`_exp_sum`)."""
    scalar = _dtype_of(a)
    total, compensation = 0.0, 0.0
    for start in range(0, a.size, _BLOCK):
        part = scalar(0)
        for j in range(start, min(start + _BLOCK, a.size)):
            part += a[j] * b[j]
        total, compensation = _add(total, compensation, np.float64(part))
    return total


@njit(**_SUM)
def _sum(a):
    scalar = _dtype_of(a)
    total, compensation = 0.0, 0.0
    for start in range(0, a.size, _BLOCK):
        part = scalar(0)
        for j in range(start, min(start + _BLOCK, a.size)):
            part += a[j]
        total, compensation = _add(total, compensation, np.float64(part))
    return total


@njit(**_EXACT)
def _has_nan(x):
    for j in range(x.size):
        if x[j] != x[j]:
            return True
    return False


@njit(**_EXACT)
def _at(values, i):
    """``values[i]``, or ``values[0]`` for a single value shared by every row."""
    return values[0] if values.size == 1 else values[i]


@njit(**_EXACT)
def _row_shift(x):
    """``(shift, plus)``: the shift of the row, and whether its maximum is +inf (then the shift is unused)."""
    m = _row_max(x)
    if m == np.inf:
        return _dtype_of(x)(0), True
    return _shift_of(m), False


@njit(**_EXACT)
def _row_exponentials(x, shift, plus, out, store, in_place):
    """``s = sum(exp(x - shift))`` (the limit for a ``plus`` row), the exponentials stored in ``out`` if
    ``store`` (``out`` is ``x`` if ``in_place``)."""
    if plus:
        return _limit_store_count(x, out) if store else _limit_count(x)
    if not store:
        return _exp_sum(x, shift)
    return _exp_in_place_sum(out, shift) if in_place else _exp_store_sum(x, shift, out)


@njit(**_EXACT)
def _shifted(v, shift, plus):
    return _limit_shifted(v) if plus else np.float64(v) - np.float64(shift)


# --------------------------------------------------------------------------- tiles of short rows
# A row of a few classes is too short to vectorise (C = 10: one vector of 8 and 2 scalar
# exponentials, which cost as much again). Rows of at most _SHORT_ROW classes are therefore taken
# _TILE at a time: the row maxima, then one flat vectorised loop of exponentials over the whole
# tile, then the row sums. Measured (float32 softmax, one thread): 2x faster at C = 10, 3.4x at
# C = 3, 1.5x at C = 20, and 1.5x slower at C = 32, where a row fills four vectors.
_SHORT_ROW = 24
_TILE = 1024


@njit(**_EXACT)
def _tile_count(n_rows):
    return (n_rows + _TILE - 1) // _TILE


@njit(**_EXACT)
def _tile_shifts(x, shifts, plus, expanded):
    """Each row's shift and +inf flag (see :func:`_row_shift`), the shifts repeated over the row's
    entries in ``expanded``; returns whether any row's maximum is +inf."""
    n_classes = x.shape[1]
    any_plus = False
    for r in range(x.shape[0]):
        shift, row_plus = _row_shift(x[r])
        shifts[r], plus[r] = shift, row_plus
        any_plus = any_plus or row_plus
        for j in range(n_classes):
            expanded[r * n_classes + j] = shift
    return any_plus


@njit(**_EXACT)
def _flat_exp(x, shift, out):
    for k in range(x.size):
        out[k] = _exp_nonpositive(x[k] - shift[k])


@njit(**_EXACT)
def _flat_exp_in_place(a, shift):
    for k in range(a.size):
        a[k] = _exp_nonpositive(a[k] - shift[k])


@njit(**_EXACT)
def _tile_exponentials(x, expanded, e, in_place, plus, any_plus, sums):
    """``e = exp(x - shift)`` row by row as one flat loop (the limit on the +inf rows) and ``sums`` its
    row sums in float64; ``in_place``: ``e`` is ``x``."""
    n_rows, n_classes = x.shape
    if in_place and any_plus:  # the +inf rows become their limit's shifted logits (shift 0), NaN kept
        for r in range(n_rows):
            if plus[r]:
                for j in range(n_classes):
                    v = x[r, j]
                    x[r, j] = v if v != v else _limit_shifted(v)
    if in_place:
        _flat_exp_in_place(e.reshape(e.size), expanded)
    else:
        _flat_exp(x.reshape(x.size), expanded, e.reshape(e.size))
    for r in range(n_rows):
        sums[r] = _limit_store_count(x[r], e[r]) if plus[r] and not in_place else _sum(e[r])


@njit(**_EXACT)
def _flat_scale(a, factor):
    for k in range(a.size):
        a[k] = a[k] * factor[k]
