"""Check a hand-written backward pass against central finite differences in float64."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from softmaxkit._validation import _describe, as_float_array


@dataclass(frozen=True)
class GradcheckResult:
    """What :func:`gradcheck` found; true in a boolean context when the check passed.

    Attributes
    ----------
    passed : bool
        Every entry satisfied ``|analytic - numerical| <= atol + rtol * |numerical|``.
    max_abs_error, max_rel_error : float
        The largest absolute error, and that error relative to the largest ``|numerical|`` entry of
        its input (an entrywise ratio would explode wherever the true gradient is 0).
    worst_input : int
        Position in ``inputs`` of the entry with the largest absolute error.
    worst_index : tuple of int
        Index of that entry within its input.
    analytic, numerical : float
        The two gradients at that entry.
    """

    passed: bool
    max_abs_error: float
    max_rel_error: float
    worst_input: int
    worst_index: tuple[int, ...]
    analytic: float
    numerical: float

    def __bool__(self) -> bool:
        return self.passed


def gradcheck(
    fn: Callable[..., np.ndarray],
    backward: Callable[..., np.ndarray | Sequence[np.ndarray]],
    *inputs,
    wrt: Sequence[int] = (0,),
    eps: float = 1e-6,
    atol: float = 1e-7,
    rtol: float = 1e-5,
    seed: int = 0,
) -> GradcheckResult:
    r"""Compare ``backward`` with the central-difference gradient of ``fn``, in float64.

    For a random upstream gradient :math:`g` (seeded) the scalar :math:`s(x) = \sum g \odot f(x)`
    is differentiated numerically, :math:`\partial s/\partial x_i \approx (s(x + \epsilon e_i) - s(x - \epsilon e_i))/2\epsilon`,
    and compared entry by entry with ``backward(g, *inputs)``, the vector-Jacobian product.
    Outputs that are not finite at ``inputs`` are left out of :math:`s`.

    Parameters
    ----------
    fn : callable
        ``fn(*inputs)`` returns an array (or a scalar).
    backward : callable
        ``backward(grad_output, *inputs)`` returns the gradient with respect to ``inputs[wrt[0]]``,
        or a sequence of gradients, one per entry of ``wrt``.
    *inputs : array_like
        The point at which to check. Inputs listed in ``wrt`` are converted to float64.
    wrt : sequence of int, default (0,)
        Which inputs to differentiate with respect to.
    eps : float, default 1e-6
        Finite-difference step.
    atol, rtol : float
        Tolerances of the comparison.
    seed : int, default 0
        Seed of the random upstream gradient.

    Returns
    -------
    GradcheckResult

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import gradcheck, softmax, softmax_backward
    >>> x = np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
    >>> result = gradcheck(softmax, lambda g, x: softmax_backward(g, softmax(x)), x)
    >>> result.passed, result.max_abs_error < 1e-9
    (True, True)
    >>> bool(gradcheck(softmax, lambda g, x: g, x))  # a wrong backward is caught
    False
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {_describe(fn)}")
    if not callable(backward):
        raise TypeError(f"backward must be callable, got {_describe(backward)}")
    wrt = _check_wrt(wrt, len(inputs))
    eps = _check_real(eps, "eps", positive=True)
    atol = _check_real(atol, "atol")
    rtol = _check_real(rtol, "rtol")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {_describe(seed)}")
    point = [
        np.array(as_float_array(x, name=f"inputs[{i}]")[0], dtype=np.float64) if i in wrt else x
        for i, x in enumerate(inputs)
    ]

    def evaluate(args) -> np.ndarray:
        values, _ = as_float_array(fn(*args), name="the output of fn")
        return values.astype(np.float64, copy=False)

    output = evaluate(point)
    rng = np.random.default_rng(seed)
    upstream = rng.standard_normal(output.shape)
    finite = np.isfinite(output)

    def projected(args) -> float:
        values = evaluate(args)
        if values.shape != output.shape:
            raise ValueError(f"the output of fn must keep its shape {output.shape}, got shape {values.shape}")
        return float(np.sum(np.where(finite, upstream * np.where(finite, values, 0), 0)))

    analytic = backward(upstream, *point)
    if isinstance(analytic, np.ndarray) or np.isscalar(analytic):
        analytic = (analytic,)
    if not isinstance(analytic, Sequence):
        raise TypeError(f"backward must return an array or a sequence of arrays, got {_describe(analytic)}")
    analytic = [
        as_float_array(a, name=f"the gradient {k} returned by backward")[0].astype(np.float64, copy=False)
        for k, a in enumerate(analytic)
    ]
    if len(analytic) != len(wrt):
        raise ValueError(f"backward must return {len(wrt)} gradient(s), one per entry of wrt, got {len(analytic)}")

    worst = (-1.0, 0.0, 0, (), 0.0, 0.0)  # abs error, rel error, input, index, analytic, numerical
    passed = True
    max_rel = 0.0
    for gradient, position in zip(analytic, wrt):
        x = point[position]
        if gradient.shape != x.shape:
            raise ValueError(
                f"backward must return a gradient of shape {x.shape} for input {position}, got shape {gradient.shape}"
            )
        numerical = np.empty_like(x)
        for index in np.ndindex(x.shape):
            original = x[index]
            x[index] = original + eps
            plus = projected(point)
            x[index] = original - eps
            minus = projected(point)
            x[index] = original
            numerical[index] = (plus - minus) / (2 * eps)
        error = np.abs(gradient - numerical)
        error = np.where(np.isnan(error), np.inf, error)
        passed &= bool(np.all(error <= atol + rtol * np.abs(numerical)))
        if error.size:
            scale = max(float(np.max(np.abs(numerical))), np.finfo(np.float64).tiny)
            max_rel = max(max_rel, float(error.max()) / scale)
            at = np.unravel_index(int(np.argmax(error)), error.shape)
            if error[at] > worst[0]:
                worst = (
                    float(error[at]),
                    0.0,
                    position,
                    tuple(int(i) for i in at),
                    float(gradient[at]),
                    float(numerical[at]),
                )
    return GradcheckResult(
        passed=passed,
        max_abs_error=max(worst[0], 0.0),
        max_rel_error=max_rel,
        worst_input=worst[2],
        worst_index=worst[3],
        analytic=worst[4],
        numerical=worst[5],
    )


def _check_wrt(wrt, n_inputs: int) -> tuple[int, ...]:
    """``wrt`` as a tuple of distinct input positions, or a clear error."""
    if isinstance(wrt, (str, bytes)) or not isinstance(wrt, Sequence):
        raise TypeError(f"wrt must be a sequence of input positions, got {_describe(wrt)}")
    for i in wrt:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral):
            raise TypeError(f"wrt must hold integer positions, got {_describe(i)} in {_describe(wrt)}")
    positions = tuple(int(i) for i in wrt)
    if not positions or any(not 0 <= i < n_inputs for i in positions):
        raise ValueError(f"wrt must list positions in [0, {n_inputs}), got {positions}")
    if len(set(positions)) != len(positions):
        raise ValueError(f"wrt must not repeat a position, got {positions}")
    return positions


def _check_real(value, name: str, *, positive: bool = False) -> float:
    """A finite real ``value`` >= 0 (> 0 with ``positive``), as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {number}")
    return number
