"""The one float64 reference oracle of the test suite, and its one set of comparison helpers.

Everything here is written independently of :mod:`softmaxkit`, straight from the formulas.

The oracle (NumPy, float64):

* ``softmax_ref``, ``log_softmax_ref``, ``logsumexp_ref``: textbook exp / sum in float64
  (shifted by the maximum; meant for finite input, no non-finite policy).
* ``cross_entropy_ref``, ``nll_loss_ref``: the loss from one-hot (index targets) or
  probability targets, in float64, as in the issue's formula.
* ``softmax_policy_ref``, ``log_softmax_policy_ref``, ``logsumexp_policy_ref``: the README's table of
  non-finite values applied row by row in float64 (NaN row, ``+inf`` entries sharing the mass, a
  fully masked row, ``-inf`` entries), for any input.
* ``numerical_vjp``: a fourth-order central difference of ``sum(g * f(x))``, independent of
  :func:`softmaxkit.gradcheck`.

The comparisons (NumPy arrays and PyTorch tensors alike, on any device):

* ``assert_close``: type, shape, dtype, an exact match of the NaN / +inf / -inf pattern, and the
  relative error of the finite entries (to the largest reference magnitude) within ``rtol``.
* ``max_relative_error``: that error, ``max |actual - expected| / max |expected|`` over the
  finite entries of ``expected``.
* ``frobenius_error``: ``||actual - expected|| / ||expected||``, the statistically stable measure
  for low-precision results.
* ``seed_of``: a seed fixed by a test's parameters (``hash`` of a str changes from run to run).

The exact oracle (mpmath at 50 significant digits, for small sizes: it is slow):

* ``exact_softmax_rows``: per row of a float array (class axis last) the exact log-softmax,
  softmax and log-sum-exp, computed from the shifted logits so that no magnitude loses digits,
  rounded once to float64.
* ``exact_softmax_vjp``, ``exact_log_softmax_vjp``: the exact vector-Jacobian products, with the
  magnitude of the terms each entry is a sum of (the scale an entry is measured against where
  the terms cancel).
* ``exact_cross_entropy``: the loss (every option) and its gradient with respect to the logits,
  exact, with the term magnitudes of the gradient.
* ``longdouble_softmax_rows``: the same as ``exact_softmax_rows`` in NumPy's extended precision
  (64-bit significand on x86), for sizes where mpmath is too slow (C up to 100,000): its error,
  ~1e-19 relative, is below a float64 ulp.
* ``hard_families``: the hard input families of issue 14 (logit gaps 0..700, magnitudes up to
  1e300, tiny spreads, random rows), small enough for the oracle; ``shift_allowance``: per entry
  the ulp that rounding ``x_j - max`` itself costs (0 where the subtraction is exact);
  ``hard_targets``: the top class on even rows, another class on odd rows.
* ``ulp_error``: elementwise ``|actual - exact| / (max(|exact|, tiny) * eps)`` in the units of a
  dtype (``eps = 2**-52`` for float64, ``2**-23`` for float32), ``0`` where both are the same
  non-finite value and ``inf`` where the non-finite patterns differ.

PyTorch parity (torch is imported inside these only, so the NumPy tests run without it; where it
is absent, ``import_torch`` skips the calling test with a reason):

* ``import_torch``: the ``torch`` module, or a skip.
* ``torch_value_and_grad``: a computation replayed in PyTorch float64 with autograd.
* ``compare_with_torch``: value, shape, dtype, gradient, and the error raised, of a softmaxkit
  NumPy function against its PyTorch float64 twin.
* ``linear_cross_entropy_ref``: the fused linear cross-entropy computed the naive way, through the
  N x V logits with ``torch.nn.functional`` (float64 inputs make it the reference; inputs of
  another dtype give the naive same-dtype computation that a fast path must not be worse than).
  With it, ``cast_value_and_grads`` (value and gradients of ``sum(g * fn(x, w, b))`` on fresh
  leaves, optionally cast to a dtype, returned in float64). Also used by ``benchmarks/gpu_linear_ce.py``.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import torch

RTOL = 1e-12  # what "parity with torch float64" means in this suite
EXACT_DIGITS = 50  # the precision of the mpmath oracle


# --------------------------------------------------------------------------- float64 formulas


def softmax_ref(x, axis=-1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax_ref(x, axis=-1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def logsumexp_ref(x, axis=-1, keepdims=False) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _rows(x: np.ndarray) -> np.ndarray:
    """``(M, C)``: the class axis (1, or 0 when unbatched) last, every other axis flattened."""
    class_axis = 0 if x.ndim == 1 else 1
    return np.moveaxis(x, class_axis, -1).reshape(-1, x.shape[class_axis])


def cross_entropy_ref(
    input, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
) -> np.ndarray:
    """PyTorch's cross-entropy written from the formula with one-hot / probability targets, float64."""
    x = np.asarray(input, dtype=np.float64)
    target = np.asarray(target)
    n_classes = x.shape[0 if x.ndim == 1 else 1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    logp = log_softmax_ref(_rows(x), axis=1)
    if np.issubdtype(target.dtype, np.integer):
        y = target.reshape(-1)
        valid = (y != ignore_index).astype(np.float64)
        one_hot = np.eye(n_classes)[np.where(y == ignore_index, 0, y)] * valid[:, None]
        nll = -np.sum(one_hot * w * logp, axis=1)
        smooth = -np.sum(w * logp, axis=1) * valid
        losses = (1 - eps) * nll + eps / n_classes * smooth
        denominator = np.sum(one_hot @ w)
        shape = target.shape
    else:
        t = (1 - eps) * _rows(np.asarray(target, dtype=np.float64)) + eps / n_classes
        losses = -np.sum(w * t * logp, axis=1)
        denominator = float(logp.shape[0])
        shape = x.shape[:1] + x.shape[2:] if x.ndim > 1 else ()
    if reduction == "none":
        return losses.reshape(shape)
    total = np.sum(losses)
    if reduction == "sum":
        return np.asarray(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / denominator)


def nll_loss_ref(input, target, *, weight=None, ignore_index=-100, reduction="mean") -> np.ndarray:
    """PyTorch's nll_loss from the formula, float64."""
    x = _rows(np.asarray(input, dtype=np.float64))
    target = np.asarray(target)
    n_classes = x.shape[1]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    y = target.reshape(-1)
    valid = (y != ignore_index).astype(np.float64)
    one_hot = np.eye(n_classes)[np.where(y == ignore_index, 0, y)] * valid[:, None]
    losses = -np.sum(one_hot * w * x, axis=1)
    if reduction == "none":
        return losses.reshape(target.shape)
    if reduction == "sum":
        return np.asarray(np.sum(losses))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.sum(losses) / np.sum(one_hot @ w))


# --------------------------------------------------------------------------- the non-finite policy


def _policy_rows(x, axis):
    """``(rows, restore)``: ``x`` in float64 with the reduced axis (or axes) flattened last, and the way back."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        return x.reshape(1, 1), lambda out: out.reshape(())
    axes = tuple(range(x.ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    axes = tuple(a % x.ndim for a in axes)
    moved = np.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
    kept = moved.shape[: x.ndim - len(axes)]
    rows = moved.reshape(kept + (int(np.prod(moved.shape[len(kept) :])),))
    return rows, lambda out: np.moveaxis(out.reshape(moved.shape), tuple(range(x.ndim - len(axes), x.ndim)), axes)


def softmax_policy_ref(x, axis=-1) -> np.ndarray:
    """softmax by the README's table: a NaN makes the row NaN; ``+inf`` entries share the mass equally;
    a row of ``-inf`` is all 0; otherwise exp/sum over the finite entries, ``-inf`` giving exactly 0."""
    rows, restore = _policy_rows(x, axis)
    out = np.zeros_like(rows)
    for index in np.ndindex(rows.shape[:-1]):
        row = rows[index]
        if row.size == 0:
            continue
        if np.isnan(row).any():
            out[index] = np.nan
        elif np.isposinf(row).any():
            out[index] = np.where(np.isposinf(row), 1.0 / np.count_nonzero(np.isposinf(row)), 0.0)
        elif np.isfinite(row).any():
            finite = np.isfinite(row)
            e = np.where(finite, np.exp(np.where(finite, row, 0.0) - row[finite].max()), 0.0)
            out[index] = e / e.sum()
    return restore(out)


def log_softmax_policy_ref(x, axis=-1) -> np.ndarray:
    """log_softmax by the README's table: NaN row; ``-log k`` on the ``k`` ``+inf`` entries and ``-inf``
    elsewhere; a row of ``-inf`` stays ``-inf``; otherwise ``x - logsumexp`` over the finite entries."""
    rows, restore = _policy_rows(x, axis)
    out = np.full_like(rows, -np.inf)
    for index in np.ndindex(rows.shape[:-1]):
        row = rows[index]
        if row.size == 0:
            continue
        if np.isnan(row).any():
            out[index] = np.nan
        elif np.isposinf(row).any():
            out[index] = np.where(np.isposinf(row), -np.log(np.count_nonzero(np.isposinf(row))), -np.inf)
        elif np.isfinite(row).any():
            finite = np.isfinite(row)
            m = row[finite].max()
            lse = m + np.log(np.sum(np.exp(row[finite] - m)))
            out[index] = np.where(finite, row - lse, -np.inf)
    return restore(out)


def logsumexp_policy_ref(x, axis=-1, keepdims=False) -> np.ndarray:
    """logsumexp by the README's table: NaN if any NaN; ``+inf`` if any ``+inf``; ``-inf`` for an empty or
    fully masked reduction; otherwise ``m + log(sum(exp(x - m)))`` over the finite entries."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        return x.copy()
    axes = tuple(range(x.ndim)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    axes = tuple(sorted(a % x.ndim for a in axes))
    moved = np.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
    kept = moved.shape[: x.ndim - len(axes)]
    rows = moved.reshape(kept + (int(np.prod(moved.shape[len(kept) :])),))
    out = np.full(kept, -np.inf)
    for index in np.ndindex(kept):
        row = rows[index]
        if np.isnan(row).any():
            out[index] = np.nan
        elif np.isposinf(row).any():
            out[index] = np.inf
        elif np.isfinite(row).any():
            finite = row[np.isfinite(row)]
            out[index] = finite.max() + np.log(np.sum(np.exp(finite - finite.max())))
    if keepdims:
        out = out.reshape(tuple(1 if i in axes else n for i, n in enumerate(x.shape)))
    return out


# --------------------------------------------------------------------------- finite differences


def numerical_vjp(fn: Callable[[np.ndarray], np.ndarray], x, grad_output, *, h: float = 1e-3) -> np.ndarray:
    """``d/dx sum(grad_output * fn(x))`` by the fourth-order central stencil, in float64.

    ``(-s(x+2h) + 8 s(x+h) - 8 s(x-h) + s(x-2h)) / 12h``; its error is O(h^4) for smooth ``fn``,
    so with h = 1e-3 it agrees with an exact gradient to about 1e-10 on unit-sized input.
    """
    x = np.array(x, dtype=np.float64)
    g = np.asarray(grad_output, dtype=np.float64)

    def s(point):
        return float(np.sum(g * np.asarray(fn(point), dtype=np.float64)))

    grad = np.zeros_like(x)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        values = []
        for step in (2 * h, h, -h, -2 * h):
            flat[i] = original + step
            values.append(s(x))
        flat[i] = original
        out[i] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * h)
    return grad


# --------------------------------------------------------------------------- comparisons


def _is_tensor(value) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch (no tensor exists before it is)."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(value, torch_module.Tensor)


def _float64(value) -> np.ndarray:
    """``value`` (array, tensor on any device, number or list) as a float64 NumPy array."""
    if _is_tensor(value):
        import torch

        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value).astype(np.float64)


def max_relative_error(actual, expected) -> float:
    """``max |actual - expected| / max |expected|`` over the finite entries of ``expected``.

    Arrays or tensors; the positions where ``expected`` is NaN or infinite are left out (compare
    them with :func:`assert_close`).
    """
    actual = _float64(actual)
    expected = _float64(expected)
    finite = np.isfinite(expected)
    if not finite.any():
        return 0.0
    scale = max(float(np.max(np.abs(expected[finite]))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(actual[finite] - expected[finite]))) / scale


def frobenius_error(actual, expected) -> float:
    """``||actual - expected|| / ||expected||`` (Frobenius, in float64); arrays or tensors."""
    actual = _float64(actual)
    expected = _float64(expected)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def assert_close(actual, expected, *, rtol: float = RTOL, dtype=None, what: str = "value") -> None:
    """``actual`` is ``expected`` to ``rtol``: type, shape, dtype, NaN/+inf/-inf positions, relative error.

    Parameters
    ----------
    actual : ndarray or torch.Tensor
        The result under test: a tensor when ``expected`` is one, else an ndarray (a NumPy function
        that returned a scalar or a list fails here).
    expected : array_like or torch.Tensor
        The reference (any device; compared in float64).
    rtol : float
        Bound on :func:`max_relative_error`; 0 asks for equality.
    dtype : NumPy or torch dtype, optional
        The dtype ``actual`` must have; default that of ``expected``.
    what : str
        Names the compared quantity in the failure message.

    ``None`` for both (a gradient that neither side has, e.g. of an absent bias) passes.
    """
    if actual is None and expected is None:
        return
    if _is_tensor(expected):
        assert _is_tensor(actual), f"{what}: expected a tensor, got {type(actual).__name__}"
        want = expected.dtype if dtype is None else dtype
        assert actual.dtype == want, f"{what}: dtype {actual.dtype} != {want}"
    else:
        assert isinstance(actual, np.ndarray), f"{what}: expected an ndarray, got {type(actual).__name__}"
        want = np.asarray(expected).dtype if dtype is None else np.dtype(dtype)
        assert actual.dtype == want, f"{what}: dtype {actual.dtype} != {want}"
    a = _float64(actual)
    e = _float64(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        mismatch = test(a) != test(e)
        assert not mismatch.any(), (
            f"{what}: {name} pattern differs at {np.argwhere(mismatch)[:5].tolist()}: got {a[mismatch][:5]}, "
            f"expected {e[mismatch][:5]}"
        )
    error = max_relative_error(a, e)
    assert error <= rtol, f"{what}: relative error {error:.3e} > {rtol:.0e}"


def seed_of(*parts) -> int:
    """A seed fixed by a test's parameters: ``crc32`` of their ``repr`` (``hash`` of a str is salted)."""
    return zlib.crc32(repr(parts).encode())


# --------------------------------------------------------------------------- the exact oracle


def _mp():
    mpmath = pytest.importorskip("mpmath", reason="the exact oracle needs mpmath (the test extra)")
    mpmath.mp.dps = EXACT_DIGITS
    return mpmath


def _exact_row(row, mpmath):
    """``(shifted, log1p_rest, m)`` of one row as mpf: ``x - m`` and ``log sum exp(x - m)``, exactly enough."""
    values = [mpmath.mpf(float(v)) for v in row]
    m = max(values)
    top = values.index(m)
    shifted = [v - m for v in values]
    # log1p of the other terms: log(1 + 1e-300) needs it even at 50 digits.
    log_norm = mpmath.log1p(mpmath.fsum(mpmath.exp(s) for i, s in enumerate(shifted) if i != top))
    return shifted, log_norm, m


def exact_softmax_rows(x) -> dict[str, np.ndarray]:
    """Exact ``log_softmax``, ``softmax`` (``(M, C)``) and ``logsumexp`` (``(M,)``) of finite ``(M, C)`` rows.

    Each is computed at 50 digits from the shifted logits (``x_j - m`` and ``log sum exp(x - m)``
    are exact to 50 digits whatever the magnitude of ``x``) and rounded once to float64.
    """
    mpmath = _mp()
    x = np.asarray(x, dtype=np.float64)
    log_p = np.empty(x.shape)
    p = np.empty(x.shape)
    lse = np.empty(x.shape[0])
    for i, row in enumerate(x):
        shifted, log_norm, m = _exact_row(row, mpmath)
        lps = [s - log_norm for s in shifted]
        log_p[i] = [float(v) for v in lps]
        p[i] = [float(mpmath.exp(v)) for v in lps]
        lse[i] = float(m + log_norm)
    return {"log_softmax": log_p, "softmax": p, "logsumexp": lse}


def longdouble_softmax_rows(x) -> dict[str, np.ndarray]:
    """:func:`exact_softmax_rows` in ``np.longdouble`` (error ~1e-19 relative on x86): for large C."""
    if np.finfo(np.longdouble).eps > 1e-18:
        pytest.skip("np.longdouble is float64 on this platform: no extended-precision reference")
    x = np.asarray(x, dtype=np.float64).astype(np.longdouble)
    m = x.max(axis=1, keepdims=True)
    shifted = x - m
    e = np.exp(shifted)
    e[np.arange(len(x)), np.argmax(x, axis=1)] = 0  # log1p of the other terms (see _exact_row)
    log_norm = np.log1p(e.sum(axis=1, keepdims=True))
    log_p = shifted - log_norm
    return {
        "log_softmax": log_p.astype(np.float64),
        "softmax": np.exp(log_p).astype(np.float64),
        "logsumexp": (m + log_norm)[:, 0].astype(np.float64),
    }


def exact_softmax_vjp(x, g) -> tuple[np.ndarray, np.ndarray]:
    """``(vjp, scale)`` of the softmax of ``(M, C)`` rows for the upstream ``g``, exact.

    ``vjp_i = p_i sum_j (g_i - g_j) p_j``; ``scale_i = p_i sum_j |g_i - g_j| p_j``.
    """
    mpmath = _mp()
    x, g = np.asarray(x, dtype=np.float64), np.asarray(g, dtype=np.float64)
    out, scale = np.empty(x.shape), np.empty(x.shape)
    for i, row in enumerate(x):
        shifted, log_norm, _ = _exact_row(row, mpmath)
        p = [mpmath.exp(s - log_norm) for s in shifted]
        gi = [mpmath.mpf(float(v)) for v in g[i]]
        for a in range(len(p)):
            terms = [(gi[a] - gi[b]) * p[b] for b in range(len(p))]
            out[i, a] = float(p[a] * mpmath.fsum(terms))
            scale[i, a] = float(p[a] * mpmath.fsum(abs(t) for t in terms))
    return out, scale


def exact_log_softmax_vjp(x, g) -> tuple[np.ndarray, np.ndarray]:
    """``(vjp, scale)`` of the log-softmax: ``g_i (1 - p_i) - p_i sum_{j != i} g_j``, and the sum of the two magnitudes."""
    mpmath = _mp()
    x, g = np.asarray(x, dtype=np.float64), np.asarray(g, dtype=np.float64)
    out, scale = np.empty(x.shape), np.empty(x.shape)
    for i, row in enumerate(x):
        shifted, log_norm, _ = _exact_row(row, mpmath)
        p = [mpmath.exp(s - log_norm) for s in shifted]
        gi = [mpmath.mpf(float(v)) for v in g[i]]
        for a in range(len(p)):
            others = mpmath.fsum(gi[b] for b in range(len(p)) if b != a)
            complement = mpmath.fsum(p[b] for b in range(len(p)) if b != a)  # 1 - p_a, exactly
            first, second = gi[a] * complement, p[a] * others
            out[i, a] = float(first - second)
            scale[i, a] = float(abs(first) + abs(second))
    return out, scale


def exact_cross_entropy(
    input, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, grad_output=1.0
):
    """``(loss, grad, grad_scale)`` of PyTorch's cross-entropy on ``(N, C)`` logits, exact (50 digits).

    ``loss_n = -sum_c a_nc log p_nc`` (see :func:`cross_entropy_ref` for ``a``); ``grad`` is the
    gradient of ``sum(grad_output * loss)`` with respect to the logits, ``s_n (p_nc A_n - a_nc)``;
    ``grad_scale`` is the magnitude of the terms of the entry in its cancellation-free form:
    ``|s_n| (p_nc |A_n| + |a_nc|)``, and at the row's top entry ``|s_n| (|A'_n| + |A_n| (1 - p_top))``
    with ``A' = sum_{c != top} a_nc`` (the terms cancel only where a smoothed or probability target
    puts mass near ``p A``; for plain class indices the scale is within a factor 4 of the entry).
    """
    mpmath = _mp()
    x = np.asarray(input, dtype=np.float64)
    target = np.asarray(target)
    n, n_classes = x.shape
    w = [mpmath.mpf(1)] * n_classes if weight is None else [mpmath.mpf(float(v)) for v in np.asarray(weight)]
    eps = mpmath.mpf(float(label_smoothing))
    coef = []  # a_nc as mpf
    denominator = mpmath.mpf(0)
    for i in range(n):
        if np.issubdtype(target.dtype, np.integer):
            y = int(target[i])
            if y == ignore_index:
                coef.append([mpmath.mpf(0)] * n_classes)
                continue
            row = [eps / n_classes * w[c] for c in range(n_classes)]
            row[y] += (1 - eps) * w[y]
            denominator += w[y]
        else:
            t = [mpmath.mpf(float(v)) for v in target[i]]
            row = [w[c] * ((1 - eps) * t[c] + eps / n_classes) for c in range(n_classes)]
            denominator += 1
        coef.append(row)
    g_out = np.broadcast_to(np.asarray(grad_output, dtype=np.float64), (n,) if reduction == "none" else ())
    losses, grad, grad_scale = [], np.zeros(x.shape), np.zeros(x.shape)
    for i, row in enumerate(x):
        shifted, log_norm, _ = _exact_row(row, mpmath)
        log_p = [s - log_norm for s in shifted]
        a = coef[i]
        losses.append(-mpmath.fsum(a[c] * log_p[c] for c in range(n_classes) if a[c] != 0))
        big_a = mpmath.fsum(a)
        if reduction == "none":
            s_n = mpmath.mpf(float(g_out[i]))
        elif reduction == "sum":
            s_n = mpmath.mpf(float(g_out))
        else:
            s_n = mpmath.mpf(float(g_out)) / denominator if denominator else mpmath.mpf(0)
        top = int(np.argmax(row))
        for c in range(n_classes):
            if c == top:  # p_top A - a_top = A' - A (1 - p_top): 1 - p_top rounds to 0 even at 50 digits
                rest_coef = mpmath.fsum(a[k] for k in range(n_classes) if k != top)
                complement = mpmath.fsum(mpmath.exp(log_p[k]) for k in range(n_classes) if k != top)
                grad[i, c] = float(s_n * (rest_coef - big_a * complement))
                grad_scale[i, c] = float(abs(s_n) * (abs(rest_coef) + abs(big_a) * complement))
            else:
                pa = mpmath.exp(log_p[c]) * big_a
                grad[i, c] = float(s_n * (pa - a[c]))
                grad_scale[i, c] = float(abs(s_n) * (abs(pa) + abs(a[c])))
    if reduction == "none":
        loss = np.array([float(v) for v in losses])
    elif reduction == "sum":
        loss = np.asarray(float(mpmath.fsum(losses)))
    else:
        loss = np.asarray(float(mpmath.fsum(losses) / denominator) if denominator else np.nan)
    return loss, grad, grad_scale


def hard_families(dtype) -> dict[str, np.ndarray]:
    """The hard input families (``(M, C)`` arrays of ``dtype``, float64 or float32), small enough for mpmath.

    * ``gaps``: ``[o, o - g, o - g - 3]`` for gaps ``g`` from 0 to 700 and offsets ``o`` of 0 and 5
      (confident rows: ``1 - p_top`` from 1 down to 1e-304; the shifts are exact);
    * ``magnitudes``: rows of ordinary gaps at offsets up to 1e15 (float32: 1e6), and rows of
      1e300 (float32: 1e37) of both signs;
    * ``tiny_spreads``: rows whose entries differ by one ulp, by 1e-300 (float32: 1e-38), or by nothing;
    * ``random``: N(0, 3^2) rows of 7 classes and N(0, 30^2) rows of 5 (the shifts are rounded:
      see :func:`shift_allowance`).
    """
    dtype = np.dtype(dtype)
    big = 1e300 if dtype == np.float64 else 1e37  # float32: twice it and a few sums of it stay finite
    offsets = (1e3, 1e6, 1e12, 1e15) if dtype == np.float64 else (1e3, 1e5, 1e6)
    small = 1e-300 if dtype == np.float64 else 1e-38
    gaps = [0, 0.5, 1, 2, 5, 10, 17, 20, 30, 37, 40, 50, 87, 100, 200, 300, 500, 700]
    rows = [[o, o - g, o - g - 3] for o in (0.0, 5.0) for g in gaps]
    families = {"gaps": np.array(rows, dtype=dtype)}
    magnitude_rows = [[o, o - 1, o - 2.5] for o in offsets] + [[o, o - 40, o - 0.25] for o in offsets]
    magnitude_rows += [[big, big, big], [-big, -big, -big], [big, -big, 0.0], [big, 0.0, -1.0], [-big, 0.0, -1.0]]
    families["magnitudes"] = np.array(magnitude_rows, dtype=dtype)
    one = np.array(1.0, dtype=dtype)
    up = np.nextafter(one, np.array(2.0, dtype=dtype))
    tiny_rows = [
        [one, up, np.nextafter(up, np.array(2.0, dtype=dtype))],
        [0.0, small, 2 * small],
        [small, -small, 0.0],
        [7.0, 7.0, 7.0],
        [-3.0, -3.0, -3.0 + 2**-20],
    ]
    families["tiny_spreads"] = np.array(tiny_rows, dtype=dtype)
    rng = np.random.default_rng(14)
    families["random"] = (3 * rng.standard_normal((12, 7))).astype(dtype)
    families["random_wide"] = (30 * rng.standard_normal((8, 5))).astype(dtype)
    return families


def shift_allowance(x) -> tuple[np.ndarray, np.ndarray]:
    """``(per entry, per row)``: the ulp that rounding ``x_j - max`` in ``x``'s dtype costs.

    ``|x_j - max|`` where the subtraction is inexact, 0 where it is exact (checked with exact
    rational arithmetic) or where ``exp(x_j - max)`` underflows to 0 anyway; the row value is the largest of its entries (what ``S'`` and everything
    built from it may inherit).
    """
    from fractions import Fraction

    x = np.asarray(x)
    m = x.max(axis=1, keepdims=True)
    with np.errstate(over="ignore", under="ignore"):
        shifted = x - m
        counts = np.exp(shifted) > 0  # an entry whose exponential underflows to 0 costs nothing
    entry = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        if not counts[index]:
            continue
        exact = Fraction(float(x[index])) - Fraction(float(m[index[0], 0]))
        if Fraction(float(shifted[index])) != exact:
            entry[index] = abs(float(shifted[index]))
    return entry, entry.max(axis=1, keepdims=True)


def hard_targets(x) -> np.ndarray:
    """Class indices for the rows of ``x``: its top class on even rows (the confident case), the next one on odd rows."""
    x = np.asarray(x)
    top = np.argmax(x, axis=1)
    return np.where(np.arange(len(x)) % 2 == 0, top, (top + 1) % x.shape[1]).astype(np.int64)


def _torch_finfo(dtype):
    import torch

    return torch.finfo(dtype)


def ulp_error(actual, exact, dtype, *, scale=None) -> np.ndarray:
    """Elementwise error of ``actual`` in units of ``eps`` of ``dtype``, relative to ``|exact|`` (or ``scale``).

    ``|actual - exact| / (max(r, tiny) * eps)`` with ``r = |exact|`` (``scale`` where given: the
    magnitude of the terms an entry is a difference of). An exact value beyond the dtype's range
    is expected to be ``inf`` of its sign. Entries where both are the same
    non-finite value count 0; differing non-finite patterns count ``inf``.
    """
    a, e = _float64(actual), _float64(exact)
    info = np.finfo(np.dtype(dtype)) if not hasattr(dtype, "is_floating_point") else _torch_finfo(dtype)
    with np.errstate(over="ignore"):
        overflows = np.isfinite(e) & (np.abs(e) > float(info.max))
    e = np.where(overflows, np.copysign(np.inf, e), e)  # an exact value beyond the dtype's range rounds to inf
    r = np.abs(e) if scale is None else np.maximum(np.abs(_float64(scale)), np.abs(e))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - e) / (np.maximum(r, float(info.tiny)) * float(info.eps))
    both_nonfinite = ~np.isfinite(e) & (a == e)
    err = np.where(both_nonfinite, 0.0, err)
    return np.where(np.isnan(err), np.inf, err)


# --------------------------------------------------------------------------- PyTorch parity


def import_torch():
    """The ``torch`` module; without PyTorch, the calling test is skipped with the reason."""
    return pytest.importorskip("torch", reason="PyTorch parity needs PyTorch (the torch extra)")


def torch_value_and_grad(torch_fn: Callable, x: np.ndarray, grad_output) -> tuple[np.ndarray, np.ndarray]:
    """``torch_fn(x)`` in float64 and the gradient ``grad_output``-weighted with respect to ``x``."""
    torch = import_torch()
    tx = torch.tensor(np.ascontiguousarray(x, dtype=np.float64), requires_grad=True)
    out = torch_fn(tx)
    g = torch.as_tensor(np.broadcast_to(grad_output, tuple(out.shape)).astype(np.float64))
    (grad,) = torch.autograd.grad(out, tx, grad_outputs=g, allow_unused=True)
    grad = torch.zeros_like(tx) if grad is None else grad
    return out.detach().numpy(), grad.numpy()


def compare_with_torch(
    ours: Callable[[np.ndarray], np.ndarray],
    theirs: Callable[[torch.Tensor], torch.Tensor],
    x,
    *,
    backward: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    grad_output=None,
    error: str | None = None,
    torch_raises: bool = True,
    rtol: float = RTOL,
    dtype=np.float64,
    seed: int = 0,
):
    """Compare a softmaxkit function with its PyTorch float64 twin on the input ``x``.

    ``ours(x)`` and ``theirs(tensor)`` compute the same thing; ``backward(g, x)`` is our gradient with
    respect to ``x`` for the upstream gradient ``g`` (a seeded random array of the output's shape
    unless ``grad_output`` is given). Checks value, shape, dtype, NaN/inf pattern and gradient.

    With ``error`` (a regex) the input is a bad one: ours must raise ``ValueError``/``TypeError``
    matching it (and PyTorch must raise too unless ``torch_raises=False``). Returns the exception then,
    else ``(value, grad)`` of ours. Without PyTorch, ours is still checked to raise before the test
    is skipped.
    """
    x = np.asarray(x)
    if error is not None:
        with pytest.raises((ValueError, TypeError), match=error) as info:
            ours(x)
        if backward is not None:
            with pytest.raises((ValueError, TypeError), match=error):
                backward(np.float64(1.0), x)
        if torch_raises:
            torch = import_torch()
            with pytest.raises(Exception):  # noqa: B017  (torch's own types vary: RuntimeError, IndexError, ValueError
                theirs(torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64)))
        return info.value
    torch = import_torch()
    value = ours(x)
    if backward is None:
        tx = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64))
        expected = theirs(tx).numpy()
        assert_close(value, expected, rtol=rtol, dtype=dtype)
        return value, None
    if grad_output is None:
        shape = np.shape(value)
        grad_output = np.random.default_rng(seed).uniform(0.5, 1.5, size=shape) if shape else np.float64(0.75)
    expected, expected_grad = torch_value_and_grad(theirs, x, grad_output)
    assert_close(value, expected, rtol=rtol, dtype=dtype, what="value")
    grad = backward(grad_output, x)
    assert_close(grad, expected_grad, rtol=rtol, dtype=dtype, what="gradient")
    return value, grad


# --------------------------------------------------------------------------- fused linear cross-entropy


def linear_cross_entropy_ref(
    x,
    w,
    target,
    b=None,
    *,
    reduction="mean",
    label_smoothing=0.0,
    class_weight=None,
    z_loss=0.0,
    softcap=None,
    ignore_index=-100,
):
    """``cross_entropy(softcap(x @ w.T + b), target, ...) + z_loss * mean(lse^2)``, materialised."""
    torch = import_torch()
    F = torch.nn.functional

    z = F.linear(x, w, b)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    weight = None if class_weight is None else class_weight.to(z.dtype)
    loss = F.cross_entropy(
        z, target, weight=weight, reduction=reduction, label_smoothing=label_smoothing, ignore_index=ignore_index
    )
    if z_loss:
        keep = (
            torch.ones(z.shape[:-1], dtype=torch.bool, device=z.device)
            if target.is_floating_point()
            else target != ignore_index
        )
        zl = torch.where(keep, z_loss * torch.logsumexp(z.to(torch.float64), -1) ** 2, 0.0)
        loss = loss + (zl if reduction == "none" else zl.sum() if reduction == "sum" else zl.sum() / keep.sum())
    return loss


def cast_value_and_grads(fn, tensors, dtype, grad_output) -> list:
    """``[value, *grads]`` in float64 of ``sum(grad_output * fn(*leaves))``.

    The leaves are fresh copies of ``tensors`` that require grad, cast to ``dtype`` (``None``: each
    keeps its own). A ``None`` among ``tensors`` (an absent bias) is passed to ``fn`` as ``None``
    and has the gradient ``None``. Each gradient is checked to have its leaf's dtype.
    """
    torch = import_torch()
    leaves = [
        None if t is None else t.detach().to(t.dtype if dtype is None else dtype).clone().requires_grad_()
        for t in tensors
    ]
    value = fn(*leaves)
    (value.to(torch.float64) * grad_output).sum().backward()
    grads = []
    for leaf in leaves:
        if leaf is None:
            grads.append(None)
            continue
        assert leaf.grad is not None, "fn does not depend on one of its inputs"
        assert leaf.grad.dtype == leaf.dtype, f"gradient dtype {leaf.grad.dtype} != input dtype {leaf.dtype}"
        grads.append(leaf.grad.to(torch.float64))
    return [value.detach().to(torch.float64), *grads]
