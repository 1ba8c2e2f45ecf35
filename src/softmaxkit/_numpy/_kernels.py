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
are ``(x - shift) - log(s)``, never ``log(softmax)``.

Exactness: the sum of exponentials is accumulated in float64 for both dtypes (in the data's dtype
over blocks of ``_BLOCK`` entries, then in float64 with compensation, so its error does not grow
with the number of classes), and the exponential is :func:`_exp32` / :func:`_exp64` (and their
``t <= 0`` forms), within 1 ulp of the correctly rounded value (tests/test_kernels.py checks it over
the whole range, subnormals included).

Longer than 600 lines because numba's on-disk cache of a kernel is invalidated only by a change of
the file that defines it, not of the files its callees come from: the kernels and everything they
call live in this one file, so that no edit can leave stale machine code in the cache.
"""

from __future__ import annotations

import math
from types import FunctionType

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
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
_bits_of_f64 = _bitcast_intrinsic(types.float64, types.int64, ir.IntType(64))


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


# log(s) of the sums of exponentials (s >= 1, or NaN), one per row: libm's log is a call per row,
# which for short rows cost as much as all their exponentials (1e6 x 10 float32 log_softmax took
# twice softmax's time). So: s = 2^k m, m in [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(f) with
# f = (m - 1) / (m + 1), |f| < 0.172, by its series to f^21 (truncation below 1e-17), and k ln 2 in
# two parts; a loop of them vectorises.
_SQRT2 = 1.4142135623730951
_ATANH = tuple(2.0 / (2 * k + 1) for k in range(11))  # 2 atanh(f) = sum_k 2 f^(2k+1) / (2k + 1)
_MANTISSA = (1 << 52) - 1


@njit(**_EXACT)
def _log_of_sum(s):
    bits = _bits_of_f64(s)
    k = (bits >> 52) - 1023
    m = _f64_from_bits((bits & _MANTISSA) | (1023 << 52))  # in [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    k = k + 1 if big else k
    d = m + 1.0
    f = (m - 1.0) / d
    # f's rounding (that of m + 1 and of the division) corrected: m + 1 = d + (m - (d - 1)) exactly,
    # and the residual of the division by a fused multiply-add
    correction = ((m - 1.0) - f * d - f * (m - (d - 1.0))) / d
    f2 = f * f
    q = _ATANH[10]  # log(m) = 2 f + f^3 q(f^2): the leading term exactly, the rest a small correction
    q = q * f2 + _ATANH[9]
    q = q * f2 + _ATANH[8]
    q = q * f2 + _ATANH[7]
    q = q * f2 + _ATANH[6]
    q = q * f2 + _ATANH[5]
    q = q * f2 + _ATANH[4]
    q = q * f2 + _ATANH[3]
    q = q * f2 + _ATANH[2]
    q = q * f2 + _ATANH[1]
    n = np.float64(k)
    result = n * _LN2_HI_64 + (2.0 * f + (2.0 * correction + f * f2 * q + n * _LN2_LO_64))
    return result if s == s else s


@njit(**_EXACT)
def _log_sums(sums, out):
    """``out[r] = log(sums[r])``, 0 for a zero sum (an all ``-inf`` row, normalised by 1)."""
    for r in range(sums.size):
        s = sums[r]
        out[r] = _log_of_sum(s if s != 0 else 1.0)


@njit(**_EXACT)
def log_array(s, out):
    """``out = log(s)`` for ``s >= 1`` (1-D float64): the kernels' logarithm, exposed for its tests."""
    _log_sums(s, out)


@njit(**_EXACT)
def _log1p_of_rest(r):
    """``log1p(r)`` for ``r >= 0`` (or NaN): ``log(u) r / (u - 1)`` with ``u = 1 + r`` rounded, whose
    rounding the factor undoes (``u - 1`` is exact), or ``r`` itself where ``u`` rounds to 1."""
    u = 1.0 + r
    return r if u == 1.0 else _log_of_sum(u) * (r / (u - 1.0))


@njit(**_EXACT)
def _log1p_rests(rests, out):
    """``out[r] = log1p(rests[r])``: the log of each row's sum of exponentials, ``1 + S'``, from ``S'``."""
    for r in range(rests.size):
        out[r] = _log1p_of_rest(rests[r])


@njit(**_EXACT)
def log1p_array(r, out):
    """``out = log1p(r)`` for ``r >= 0`` (1-D float64): the kernels' ``log1p``, exposed for its tests."""
    _log1p_rests(r, out)


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


# Below this sum of exponentials s = 1 + S' (a row whose top probability exceeds 1/2), S' is summed
# again without the top entry (:func:`_exp_split`, :func:`_split_sum`); at or above it S' = s - 1, whose
# cancellation costs at most a factor s / (s - 1) <= 2 on the few ulp of the sum. Splitting every sum
# instead (a compare and a select per entry in the exponential's loop) cost 30 % at C = 1000 (float32
# log_softmax, one thread); this way only the confident rows pay, one more pass over their row.
_CONFIDENT = 2.0


@njit(**_EXACT)
def _split_total(others, ones):
    """``(s, S')`` from the sum ``others`` of the exponentials other than 1 and the count ``ones`` of 1s.

    ``S' = others + (ones - 1)``: the top entry (exactly 1) left out, its ties (and any entry within half
    an ulp of it, which rounds to 1) counted; ``s = 1 + S'``. A row without a 1 is all ``-inf``
    (``s = S' = 0``) or has a NaN (both NaN).
    """
    if ones == 0:
        return others, others
    rest = others + (ones - 1.0)
    return 1.0 + rest, rest


@njit(**_SUM)
def _exp_split(x, shift):
    """``(s, S')`` of ``exp(x - shift)`` (see :func:`_split_total`), in float64."""
    scalar = _dtype_of(x)
    total, compensation, ones = 0.0, 0.0, 0.0
    for start in range(0, x.size, _BLOCK):
        part, count = scalar(0), scalar(0)
        for j in range(start, min(start + _BLOCK, x.size)):
            e = _exp_nonpositive(x[j] - shift)
            one = e == 1
            part += scalar(0) if one else e
            count += scalar(1) if one else scalar(0)
        total, compensation = _add(total, compensation, np.float64(part))
        ones += np.float64(count)
    return _split_total(total, ones)


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


@njit(**_SUM)
def _split_sum(e):
    """``(s, S')`` of stored exponentials ``e`` (see :func:`_split_total`)."""
    scalar = _dtype_of(e)
    total, compensation, ones = 0.0, 0.0, 0.0
    for start in range(0, e.size, _BLOCK):
        part, count = scalar(0), scalar(0)
        for j in range(start, min(start + _BLOCK, e.size)):
            v = e[j]
            one = v == 1
            part += scalar(0) if one else v
            count += scalar(1) if one else scalar(0)
        total, compensation = _add(total, compensation, np.float64(part))
        ones += np.float64(count)
    return _split_total(total, ones)


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
def _row_top(x):
    """``(m, top)``: the row's maximum and the position of its first occurrence (0 for a row of only NaN).

    The maximum of each block of ``_BLOCK`` entries (vectorised), then a search in the block that holds
    the row's: a scalar scan of the whole row cost a fifth of a cross-entropy pass at C = 1000.
    """
    scalar = _dtype_of(x)
    m, block = scalar(-np.inf), 0
    for start in range(0, x.size, _BLOCK):
        part = scalar(-np.inf)
        for j in range(start, min(start + _BLOCK, x.size)):
            part = _maxnum(part, x[j])
        if part > m:
            m, block = part, start
    return m, _first_index(x[block : block + _BLOCK], m) + block


@njit(**_EXACT)
def _first_index(x, value):
    """The position of the first entry of ``x`` equal to ``value``, 0 if none."""
    for j in range(x.size):
        if x[j] == value:
            return j
    return 0


@njit(**_EXACT)
def _row_shift_top(x):
    """``(shift, plus, top)``: :func:`_row_shift` and the position of the row's top entry, in one pass."""
    m, top = _row_top(x)
    if m == np.inf:
        return _dtype_of(x)(0), True, top
    return _shift_of(m), False, top


@njit(**_EXACT)
def _rest_of(s, x, shift):
    """``S'`` of a row from its sum ``s`` of ``exp(x - shift)``: ``s - 1``, or summed again without the
    top entry in a confident row (``s < _CONFIDENT``; an all ``-inf`` row: 0)."""
    return _exp_split(x, shift)[1] if s < _CONFIDENT else s - 1.0


@njit(**_EXACT)
def _stored_rest_of(s, e):
    """``S'`` of a row from its sum ``s`` and its stored exponentials ``e`` (see :func:`_rest_of`)."""
    return _split_sum(e)[1] if s < _CONFIDENT else s - 1.0


@njit(**_EXACT)
def _row_exponentials(x, shift, plus, out, store, in_place):
    """``(s, S')``: ``s = sum(exp(x - shift))`` and ``S'`` the sum without the top entry (the limit for a
    ``plus`` row), the exponentials stored in ``out`` if ``store`` (``out`` is ``x`` if ``in_place``)."""
    if plus:
        count = _limit_store_count(x, out) if store else _limit_count(x)
        return count, count - 1.0
    if not store:
        s = _exp_sum(x, shift)
        return s, _rest_of(s, x, shift)
    s = _exp_in_place_sum(out, shift) if in_place else _exp_store_sum(x, shift, out)
    return s, _stored_rest_of(s, out)


@njit(**_EXACT)
def _shifted(v, shift, plus):
    return _limit_shifted(v) if plus else np.float64(v) - np.float64(shift)


# --------------------------------------------------------------------------- tiles of short rows
# A row of a few classes is too short to vectorise (C = 10: one vector of 8 and 2 scalar exponentials,
# and a row's loop setup costs as much as its work). Rows of at most _SHORT_ROW classes are therefore
# taken _TILE at a time and transposed into a classes x rows buffer (a gather loop), in which every pass
# runs across the rows, one row per vector lane: the maxima, the exponentials with their sums (and the
# position of each row's top entry), the logarithms, the results, then one transposing loop back.
# Measured (one thread, 4e6 entries into a fresh output, ns per entry, the former tiles of flat loops with
# the shifts repeated over each row's entries vs these; the 2-core machine under load 2): float32
# log_softmax C = 10: 8.3 vs 1.8, C = 20: 7.0 vs 1.7; softmax C = 10: 3.9 vs 1.7; cross-entropy with
# gradient C = 10: 13.4 vs 3.5; float64 (bound by memory at this size) cross-entropy C = 20: 5.6 vs 4.5.
_SHORT_ROW = 32
_TILE = 256
# Tiles per parallel task: each task allocates its buffers once.
_TASK_TILES = 16
_TASK_ROWS = _TILE * _TASK_TILES


@njit(**_EXACT)
def _task_count(n_rows):
    return (n_rows + _TASK_ROWS - 1) // _TASK_ROWS


@njit(**_EXACT)
def _tile_buffers(x):
    """A task's buffers: the transposed tile (classes x rows), four row arrays of ``x``'s dtype and three of float64."""
    dtype = x.dtype
    t = np.empty((x.shape[1], _TILE), dtype)
    in_dtype = (np.empty(_TILE, dtype), np.empty(_TILE, dtype), np.empty(_TILE, dtype), np.empty(_TILE, dtype))
    return t, in_dtype, (np.empty(_TILE), np.empty(_TILE), np.empty(_TILE))


@njit(**_EXACT)
def _transpose_in(x, t):
    """``t[j, r] = x[r, j]``: along the rows in the inner loop (a gather; the other order took 2.5x as long
    for float32 at C = 10, 1.1x for float64)."""
    n_rows, n_classes = x.shape
    for j in range(n_classes):
        for r in range(n_rows):
            t[j, r] = x[r, j]


@njit(**_EXACT)
def _transpose_out(t, out, shifts, skip_plus):
    """``out[r, j] = t[j, r]`` (contiguous writes), leaving out the rows whose maximum is +inf if ``skip_plus``."""
    n_rows, n_classes = out.shape
    for r in range(n_rows):
        if skip_plus and shifts[r] == np.inf:
            continue
        for j in range(n_classes):
            out[r, j] = t[j, r]


@njit(**_EXACT)
def _tile_sums(x, buffers, store, want_top):
    """The tile ``x`` transposed into ``t``, and per row: the shift, ``(s, S')`` (see :func:`_split_total`),
    and (``want_top``) the position of the first exponential equal to 1, the top entry; ``t`` becomes the
    transposed exponentials if ``store``. Returns whether a row's maximum is +inf: such a row has the
    shift +inf (its values here are meaningless) and the callers take it on its own."""
    t, (shifts, others, ones, tops), (rests, sums, _) = buffers
    n_rows, n_classes = x.shape
    scalar = _dtype_of(x)
    _transpose_in(x, t)
    for r in range(n_rows):
        shifts[r] = scalar(-np.inf)
    for j in range(n_classes):
        for r in range(n_rows):
            shifts[r] = _maxnum(shifts[r], t[j, r])
    any_plus = False
    for r in range(n_rows):
        m = shifts[r]
        any_plus = any_plus or m == np.inf
        shifts[r] = m if m > -np.inf else scalar(0)
        others[r], ones[r], tops[r] = scalar(0), scalar(0), scalar(0)
    # the sums in the data's dtype over at most _SHORT_ROW entries, as :func:`_exp_split` over a block
    for j in range(n_classes):
        position = scalar(j)
        for r in range(n_rows):
            e = _exp_nonpositive(t[j, r] - shifts[r])
            one = e == 1
            if want_top:
                tops[r] = position if one and ones[r] == 0 else tops[r]
            others[r] += scalar(0) if one else e
            ones[r] += scalar(1) if one else scalar(0)
            if store:
                t[j, r] = e
    for r in range(n_rows):
        sums[r], rests[r] = _split_total(np.float64(others[r]), np.float64(ones[r]))
    return any_plus


# --------------------------------------------------------------------------- threads
# Each kernel comes twice: parallel (numba's threads, as many as the calling thread's
# numba.get_num_threads()) and ``.serial``, the same source compiled without threads, which
# _engine.run calls for small problems (see PARALLEL_MIN_SIZE there). Not numba.set_num_threads around
# the call: from Python it costs 15 us a call, and from compiled code it stops numba from caching it.


def _rows_kernel(fn):
    """``fn`` compiled in parallel, with its one-thread twin as ``.serial`` (cached under its own name)."""
    twin = FunctionType(fn.__code__, fn.__globals__, f"{fn.__name__}_serial", fn.__defaults__)
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
    # The exponentials are stored in out (what the loop below overwrites): a confident row's S' is then
    # a sum of them, not a second pass of exponentials (which doubled the time of all-confident rows).
    s = _exp_store_sum(x, shift, out)
    log_sum = scalar(math.log1p(_stored_rest_of(s, out)))  # 0 for an all -inf row (rest = 0)
    for j in range(x.size):
        out[j] = (x[j] - shift) - log_sum


@njit(**_EXACT)
def _logsumexp_row(x):
    m = _row_max(x)
    if m == np.inf:
        return np.inf if _limit_count(x) == _limit_count(x) else np.nan
    shift = _shift_of(m)
    s = _exp_sum(x, shift)
    return np.float64(shift) + math.log1p(_rest_of(s, x, shift)) if s != 0 else -np.inf


@njit(**_EXACT)
def _softmax_tile(x, out, buffers):
    n_rows, n_classes = x.shape
    scalar = _dtype_of(x)
    any_plus = _tile_sums(x, buffers, True, False)
    t, (shifts, inverse, _, _), (_, sums, _) = buffers
    for r in range(n_rows):
        inverse[r] = scalar(1.0 / (sums[r] if sums[r] != 0 else 1.0))  # an all -inf row: 0 / 1
    for j in range(n_classes):
        for r in range(n_rows):
            t[j, r] = t[j, r] * inverse[r]
    _transpose_out(t, out, shifts, False)
    if any_plus:
        for r in range(n_rows):
            if shifts[r] == np.inf:
                _softmax_row(x[r], out[r])


@njit(**_EXACT)
def _log_softmax_tile(x, out, buffers):
    n_rows, n_classes = x.shape
    scalar = _dtype_of(x)
    any_plus = _tile_sums(x, buffers, False, False)
    t, (shifts, log_sums, _, _), (rests, _, row_logs) = buffers
    # log(1 + S'): the log-probability of the top entry, -log1p(S'), stays exact (0 for an all -inf row)
    _log1p_rests(rests[:n_rows], row_logs[:n_rows])
    for r in range(n_rows):
        log_sums[r] = scalar(row_logs[r])
    for j in range(n_classes):
        for r in range(n_rows):
            t[j, r] = (t[j, r] - shifts[r]) - log_sums[r]
    _transpose_out(t, out, shifts, False)
    if any_plus:
        for r in range(n_rows):
            if shifts[r] == np.inf:
                _log_softmax_row(x[r], out[r])


@_rows_kernel
def softmax_rows(x, out):
    """``out[i] = softmax(x[i])``."""
    n_rows = x.shape[0]
    if x.shape[1] > _SHORT_ROW:
        for i in prange(n_rows):
            _softmax_row(x[i], out[i])
    else:
        for task in prange(_task_count(n_rows)):
            buffers = _tile_buffers(x)
            for start in range(task * _TASK_ROWS, min(n_rows, (task + 1) * _TASK_ROWS), _TILE):
                stop = min(n_rows, start + _TILE)
                _softmax_tile(x[start:stop], out[start:stop], buffers)


@_rows_kernel
def log_softmax_rows(x, out):
    """``out[i] = log_softmax(x[i])``."""
    n_rows = x.shape[0]
    if x.shape[1] > _SHORT_ROW:
        for i in prange(n_rows):
            _log_softmax_row(x[i], out[i])
    else:
        for task in prange(_task_count(n_rows)):
            buffers = _tile_buffers(x)
            for start in range(task * _TASK_ROWS, min(n_rows, (task + 1) * _TASK_ROWS), _TILE):
                stop = min(n_rows, start + _TILE)
                _log_softmax_tile(x[start:stop], out[start:stop], buffers)


@_rows_kernel
def logsumexp_rows(x, out):
    """``out[i] = logsumexp(x[i])`` (``out`` 1-D)."""
    for i in prange(x.shape[0]):
        out[i] = _logsumexp_row(x[i])


@njit(**_SUM)
def _dot_from(a, offset, b):
    """``sum((a - offset) * b)`` in float64 (blocks as in :func:`_exp_sum`)."""
    scalar = _dtype_of(a)
    total, compensation = 0.0, 0.0
    for start in range(0, a.size, _BLOCK):
        part = scalar(0)
        for j in range(start, min(start + _BLOCK, a.size)):
            part += (a[j] - offset) * b[j]
        total, compensation = _add(total, compensation, np.float64(part))
    return total


@_rows_kernel
def softmax_backward_rows(grad, proba, out):
    """``out[i] = p (d - sum(d p))`` with ``d = g - g_top``, ``g = grad[i]``, ``p = proba[i]``.

    The value of ``p (g - sum(g p))``, and at the top entry ``p_top sum_j (g_top - g_j) p_j``, without the
    cancellation of ``g_top - sum(g p)`` in a confident row.
    """
    for i in prange(grad.shape[0]):
        g, p, o = grad[i], proba[i], out[i]
        g_top = g[_row_top(p)[1]]
        d = _dtype_of(g)(_dot_from(g, g_top, p))
        for j in range(g.size):
            o[j] = p[j] * ((g[j] - g_top) - d)


@_rows_kernel
def log_softmax_backward_rows(grad, log_proba, out):
    """``out[i] = g - exp(l) sum(g)`` with ``g = grad[i]``, ``l = log_proba[i]``; 0 for a fully masked row.

    At the top entry ``g_top (1 - p_top) - p_top sum_{j != top} g_j`` with ``1 - p_top = -expm1(l_top)``,
    exact however confident the row.
    """
    for i in prange(grad.shape[0]):
        g, logp, o = grad[i], log_proba[i], out[i]
        log_top, top = _row_top(logp)
        log_top = np.float64(log_top)
        if math.exp(log_top) == 0 and not _has_nan(logp):  # every exp(l) is 0: fully masked
            for j in range(g.size):
                o[j] = 0
            continue
        g_top = np.float64(g[top])
        g_rest = _sum(g[:top]) + _sum(g[top + 1 :])
        total = _dtype_of(g)(g_top + g_rest)
        for j in range(g.size):
            o[j] = g[j] - _exp(logp[j]) * total
        if o[top] == o[top]:  # a row of NaN and -inf has no top (its first entry stands in): NaN stays
            o[top] = g_top * -math.expm1(log_top) - math.exp(log_top) * g_rest


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
def _index_loss(tc, sc, log_sum, target_shifted, smooth_sum, total_weight):
    """A row's loss ``tc (log s - (x_y - shift)) + sc (W log s - sum_c w_c (x_c - shift))``, ``log_sum = log1p(S')``."""
    value = _times(tc, log_sum - target_shifted)
    if sc != 0:
        value += _times(sc, total_weight * log_sum - smooth_sum)
    return value


@njit(**_EXACT)
def _top_gradient(y, top, tc, sc, row_scale, total_weight, class_weight, rest, s):
    """The gradient at the top entry of a confident row: ``scale (A' - A S' / s)`` (see :func:`_index_row_finish`)."""
    rest_coef = 0.0 if y == top else tc
    if sc != 0:  # sum_{c != top} w_c, in float64 so that a dominant w_top costs nothing
        others = total_weight - (1.0 if class_weight.size == 0 else class_weight[top])
        rest_coef += sc * others
    return _times(rest_coef, row_scale) - _times(tc + sc * total_weight, row_scale) * (rest / s)


@njit(**_EXACT)
def _index_row_finish(
    i,
    y,
    s,
    rest,
    log_sum,
    target_shifted,
    smooth_sum,
    coefficients,
    class_weight,
    total_weight,
    loss,
    g,
    with_grad,
):
    """The loss ``loss[i]`` of a row and, ``with_grad``, its gradient, written over its exponentials ``g``
    (``log_sum``: ``log1p(S')``, 0 for ``s = 0``).

    In a confident row (``s < _CONFIDENT``) the gradient at the top entry is ``scale (A' - A S' / s)`` with
    ``A' = sum_{c != top} a_c`` (``p_t - 1 = -sum_{j != t} p_j`` at a top target), not ``p_top A - a_top``,
    which cancels there; elsewhere ``p_top <= 1/2`` and the plain form keeps its accuracy."""
    target_coef, smooth_coef, scale = coefficients
    tc, sc = _at(target_coef, i), _at(smooth_coef, i)
    loss[i] = _index_loss(tc, sc, log_sum, target_shifted, smooth_sum, total_weight)
    if not with_grad:
        return
    if s == 0:  # a fully masked row takes no part: zero gradient
        _scale_row(g, _dtype_of(g)(0))
        return
    row_scale = _at(scale, i)
    confident = s < _CONFIDENT
    top = _first_index(g, 1.0) if confident else 0  # the top's exponential is exactly 1 (the only 1 here)
    _finish_gradient(g, _times(tc + sc * total_weight, row_scale) / s, _times(sc, row_scale), class_weight)
    g[y] -= _times(tc, row_scale)
    if confident:
        g[top] = _top_gradient(y, top, tc, sc, row_scale, total_weight, class_weight, rest, s)


@njit(**_EXACT)
def _index_row(i, row, y, g, coefficients, class_weight, total_weight, loss, with_grad, in_place):
    """Row ``i`` of :func:`cross_entropy_index_rows` on its own (rows past _SHORT_ROW, and +inf maxima)."""
    shift, plus = _row_shift(row)
    target_shifted = _shifted(row[y], shift, plus)
    smooth_sum = 0.0
    if _at(coefficients[1], i) != 0:
        smooth_sum = _weighted_shifted_sum(row, shift, plus, class_weight)
    s, rest = _row_exponentials(row, shift, plus, g, with_grad, in_place)
    log_sum = math.log1p(rest)  # 0 for an all -inf row (rest = 0)
    _index_row_finish(
        i, y, s, rest, log_sum, target_shifted, smooth_sum, coefficients, class_weight, total_weight, loss, g, with_grad
    )


@njit(**_EXACT)
def _index_tile(x, target, coefficients, class_weight, total_weight, loss, grad, with_grad, in_place, first, buffers):
    """:func:`cross_entropy_index_rows` on the rows ``first:first + len(x)``, transposed (see the tiles above):
    the formulas of :func:`_index_row_finish`, each pass across the rows. Everything that reads the logits
    does so before the gradient is written (``grad`` may be ``x``)."""
    n_rows, n_classes = x.shape
    target_coef, smooth_coef, scale = coefficients
    scalar = _dtype_of(x)
    any_plus = _tile_sums(x, buffers, with_grad, with_grad)
    t, (shifts, factors, offsets, tops), (rests, sums, values) = buffers
    if any_plus:
        for r in range(n_rows):
            if shifts[r] == np.inf:
                g = grad[r] if with_grad else grad[0]
                _index_row(
                    first + r,
                    x[r],
                    target[first + r],
                    g,
                    coefficients,
                    class_weight,
                    total_weight,
                    loss,
                    with_grad,
                    in_place,
                )
    _log1p_rests(rests[:n_rows], values[:n_rows])
    for r in range(n_rows):
        if shifts[r] == np.inf:
            continue
        i = first + r
        tc, sc = _at(target_coef, i), _at(smooth_coef, i)
        target_shifted = np.float64(x[r, target[i]]) - np.float64(shifts[r])
        smooth_sum = _weighted_shifted_sum(x[r], shifts[r], False, class_weight) if sc != 0 else 0.0
        loss[i] = _index_loss(tc, sc, values[r], target_shifted, smooth_sum, total_weight)
        if with_grad:  # g = e * factor - offset * w_c; a fully masked row (s = 0, e = 0) gets 0
            row_scale = _at(scale, i)
            masked = sums[r] == 0
            factors[r] = scalar(0) if masked else scalar(_times(tc + sc * total_weight, row_scale) / sums[r])
            values[r] = 0.0 if masked else _times(sc, row_scale)
            offsets[r] = scalar(values[r])
    if not with_grad:
        return
    if class_weight.size == 0:
        for j in range(n_classes):
            for r in range(n_rows):
                t[j, r] = t[j, r] * factors[r] - offsets[r]
    else:
        for j in range(n_classes):
            w = class_weight[j]
            for r in range(n_rows):
                t[j, r] = t[j, r] * factors[r] - scalar(values[r] * w)
    _transpose_out(t, grad, shifts, any_plus)
    for r in range(n_rows):
        s = sums[r]
        if shifts[r] == np.inf or s == 0:
            continue
        i = first + r
        y = target[i]
        tc, row_scale = _at(target_coef, i), _at(scale, i)
        grad[r, y] -= _times(tc, row_scale)
        if s < _CONFIDENT:
            top = np.intp(tops[r])
            sc = _at(smooth_coef, i)
            grad[r, top] = _top_gradient(y, top, tc, sc, row_scale, total_weight, class_weight, rests[r], s)


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
        for task in prange(_task_count(n_rows)):
            buffers = _tile_buffers(x)
            for start in range(task * _TASK_ROWS, min(n_rows, (task + 1) * _TASK_ROWS), _TILE):
                stop = min(n_rows, start + _TILE)
                g = grad[start:stop] if with_grad else grad
                xs = x[start:stop]
                _index_tile(
                    xs, target, coefficients, class_weight, total_weight, loss, g, with_grad, in_place, start, buffers
                )
    else:
        for i in prange(n_rows):
            g = grad[i] if with_grad else grad[0]
            _index_row(i, x[i], target[i], g, coefficients, class_weight, total_weight, loss, with_grad, in_place)


@njit(**_EXACT)
def _prob_coef(q, w, eps, inv_classes):
    """``a_c = w_c ((1 - eps) q_c + eps / C)``, the probability-target coefficient."""
    a = np.float64(q) if eps == 0 else (1.0 - eps) * np.float64(q) + eps * inv_classes
    return a * w


@njit(**_SUM)
def _prob_terms(x, q, class_weight, eps, shift, plus, top):
    """``(A, A', D)``: ``sum_c a_c``, ``sum_{c != top} a_c`` (summed without the top class) and
    ``sum_c a_c (x_c - shift)`` (a zero ``a_c`` contributing 0)."""
    inv_classes = 1.0 / x.size
    total, rest_total, dot = 0.0, 0.0, 0.0
    for c in range(x.size):
        a = _prob_coef(q[c], 1.0 if class_weight.size == 0 else class_weight[c], eps, inv_classes)
        total += a
        rest_total += 0.0 if c == top else a
        dot += 0.0 if a == 0 else a * _shifted(x[c], shift, plus)
    return total, rest_total, dot


@_rows_kernel
def cross_entropy_prob_rows(x, target, eps, class_weight, scale, loss, grad, with_grad, in_place):
    """Probability targets ``target`` (M x C): ``loss[i] = L_i`` and, ``with_grad``, the gradient rows
    (arguments as in :func:`cross_entropy_index_rows`)."""
    for i in prange(x.shape[0]):
        row, q = x[i], target[i]
        g = grad[i] if with_grad else grad[0]
        shift, plus, top = _row_shift_top(row)
        total, rest_total, dot = _prob_terms(row, q, class_weight, eps, shift, plus, top)
        s, rest = _row_exponentials(row, shift, plus, g, with_grad, in_place)
        masked = s == 0
        loss[i] = total * math.log1p(rest) - dot  # log1p(0) = 0 for an all -inf row
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
        # the top entry as scale (A' - A S' / s), as in _index_row_finish
        g[top] = _times(rest_total, row_scale) - _times(total, row_scale) * (rest / s)
