"""Input checks on tensors: the tensor side of :mod:`softmaxkit._validation`, for every function of the package.

Every message has the package's one shape, ``"<argument> must be <what>, got <what was given>"``,
and where the NumPy functions reject the same input the words are theirs (the tests compare them).
Checks of plain options (``reduction``, ``label_smoothing``, ``ignore_index``) are the NumPy side's
own functions; the wording of a bad class index is shared with it through
:func:`softmaxkit._validation.class_index_error`.

Checks of tensor values (class indices in range, finite non-negative weights) read the values in
eager calls and inside ``torch.func`` transforms (on the tensor beneath the transform's
wrappers, see :func:`readable`). While ``torch.compile`` or ``torch.export`` traces a call they
become ``torch._assert_async`` nodes of the graph instead (no graph break): the compiled program
still refuses the input when it runs, with the same first sentence but without the position.
Checks of shapes, dtypes and options never read values and run unchanged when traced.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from softmaxkit._validation import (
    _describe,
    check_ignore_index,
    check_reduction,
    class_index_error,
)

_BACKENDS = ("auto", "torch", "triton")
_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


# --------------------------------------------------------------------------------------------
# Tensors, dimensions, devices.
# --------------------------------------------------------------------------------------------


def check_tensor(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_has_data(x, name)
    return x


def check_has_data(x: torch.Tensor, name: str) -> None:
    """The ops read values (row maxima, class indices): a ``meta`` tensor has none."""
    if x.is_meta:
        raise ValueError(f"{name} must be a tensor with data on a real device, got a tensor on the meta device")


#: Every comparison of a class index with ``ignore_index`` runs in int64 (see :func:`check_ignore_index64`).
_INT64 = torch.iinfo(torch.int64)


def check_ignore_index64(ignore_index: Any) -> int:
    """``ignore_index`` as an int of the int64 range, in which the tensors' class indices are compared."""
    ignore_index = check_ignore_index(ignore_index)
    if not _INT64.min <= ignore_index <= _INT64.max:
        raise ValueError(
            f"ignore_index must be an integer in the int64 range [{_INT64.min}, {_INT64.max}], got {ignore_index}"
        )
    return ignore_index


def float_input(x: Any) -> torch.Tensor:
    """``input`` as a real floating tensor (integer and boolean promoted to the default dtype)."""
    x = check_tensor(x, "input")
    if x.is_complex():
        raise TypeError(f"input must be a real floating, integer or boolean tensor, got {_describe(x)}")
    if not x.is_floating_point():
        return x.to(torch.get_default_dtype())
    return x


def normalize_dim(dim: Any, ndim: int) -> int:
    """``dim`` as a non-negative int (a 0-d input has the one dimension 0)."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be an integer, got {dim!r}")
    dim = int(dim)
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise ValueError(f"dim must be in [{-size}, {size}) for an input with {ndim} dimensions, got {dim}")
    return dim % size


def normalize_dims(dim: Any, ndim: int) -> tuple[int, ...]:
    """``dim`` as a sorted tuple of distinct non-negative dimensions (``None`` means all of them)."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (tuple, list)):
        dims = tuple(normalize_dim(d, ndim) for d in dim)
        if len(set(dims)) != len(dims):
            raise ValueError(f"dim must not repeat a dimension, got {tuple(dim)}")
        return tuple(sorted(dims))
    return (normalize_dim(dim, ndim),)


def check_same_device(t: torch.Tensor, x: torch.Tensor, name: str) -> None:
    if t.device != x.device:
        raise ValueError(f"{name} must be on the input's device ({x.device}), got a tensor on {t.device}")


# --------------------------------------------------------------------------------------------
# Targets: the one class-index check, and the shapes of index and probability targets.
# --------------------------------------------------------------------------------------------


def readable(t: torch.Tensor) -> torch.Tensor | None:
    """The tensor whose values a check may read: ``t`` itself, the plain tensor beneath ``torch.func``'s
    wrappers (under ``vmap`` it holds every sample), or ``None`` while a graph is traced."""
    if torch.compiler.is_compiling():
        return None
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        t = functorch.get_unwrapped(t)
    return t


def _bad_class_index(target: torch.Tensor, n_classes: int, ignore_index: int) -> torch.Tensor:
    target = target.long()
    return (target != ignore_index) & ((target < 0) | (target >= n_classes))


def check_class_indices(target: torch.Tensor, n_classes: int, ignore_index: int) -> torch.Tensor:
    """Return the mask of the entries that count (``target != ignore_index``).

    Every other entry must be a class index in ``[0, n_classes)``; ``-1`` never wraps around. The
    comparisons run in int64 whatever ``target``'s dtype (in uint8, ``-100`` would be 156). The
    tensor twin of :func:`softmaxkit._validation.check_class_indices`, with its message.
    """
    valid = target.long() != ignore_index
    values = readable(target)
    if values is None:
        message = f"target must hold class indices in [0, {n_classes}) or ignore_index={ignore_index}"
        torch._assert_async(~_bad_class_index(target, n_classes, ignore_index).any(), message)
        return valid
    bad = _bad_class_index(values, n_classes, ignore_index)
    if bool(bad.any()):
        position = tuple(int(i) for i in torch.nonzero(bad)[0]) if values.ndim else ()
        raise class_index_error(int(values[position]), position, n_classes, ignore_index)
    return valid


def check_target_kind(target: torch.Tensor, *, allow_probabilities: bool) -> None:
    integer = not (target.is_floating_point() or target.is_complex() or target.dtype == torch.bool)
    if integer or (allow_probabilities and target.is_floating_point()):
        return
    kinds = "integer class indices or floating class probabilities" if allow_probabilities else "integer class indices"
    raise TypeError(f"target must be {kinds}, got {_describe(target)}")


def check_index_target(target: torch.Tensor, x: torch.Tensor, ignore_index: int) -> None:
    """Index targets of (N, C, ...) logits: the input's shape without the class axis, values in [0, C)."""
    class_axis = 0 if x.ndim == 1 else 1
    batch_shape = tuple(x.shape[:class_axis]) + tuple(x.shape[class_axis + 1 :])
    if tuple(target.shape) != batch_shape:
        raise ValueError(
            f"target must have shape {batch_shape} (the input's shape {tuple(x.shape)} without the class "
            f"axis {class_axis}) for class indices, got shape {tuple(target.shape)}"
        )
    check_same_device(target, x, "target")
    check_class_indices(target, x.shape[class_axis], ignore_index)


def check_probability_target(target: torch.Tensor, x: torch.Tensor, ignore_index: int) -> None:
    if tuple(target.shape) != tuple(x.shape):
        raise ValueError(
            f"target must have the input's shape {tuple(x.shape)} for class probabilities, "
            f"got shape {tuple(target.shape)}"
        )
    check_same_device(target, x, "target")
    if ignore_index >= 0:
        raise ValueError(f"ignore_index must be negative (unused) with class-probability targets, got {ignore_index}")


# --------------------------------------------------------------------------------------------
# cross_entropy and nll_loss.
# --------------------------------------------------------------------------------------------


def check_loss_input(input: Any) -> torch.Tensor:
    x = float_input(input)
    if x.ndim == 0:
        raise ValueError("input must have the classes along axis 1 (or axis 0 when unbatched), got a 0-d tensor")
    class_axis = 0 if x.ndim == 1 else 1
    if x.shape[class_axis] == 0:
        raise ValueError(f"input must have at least one class along axis {class_axis}, got shape {tuple(x.shape)}")
    return x


def check_class_weight(weight: Any, x: torch.Tensor, n_classes: int) -> torch.Tensor | None:
    """A per-class weight vector of shape ``(n_classes,)`` on the input's device: finite and non-negative."""
    if weight is None:
        return None
    weight = check_tensor(weight, "weight")
    if weight.is_complex() or weight.dtype == torch.bool:
        raise TypeError(f"weight must be a real tensor of shape ({n_classes},), got {_describe(weight)}")
    if tuple(weight.shape) != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},), one entry per class, got shape {tuple(weight.shape)}")
    check_same_device(weight, x, "weight")
    _check_weight_values(weight, "weight")
    return weight


def _check_weight_values(weight: torch.Tensor, name: str) -> None:
    """Class weights are finite and non-negative (a meta tensor has no values to check)."""
    if weight.device.type == "meta":
        return
    values = readable(weight)
    if values is None:
        torch._assert_async(torch.isfinite(weight).all(), f"{name} must be finite")
        torch._assert_async(~(weight < 0).any(), f"{name} must be non-negative")
        return
    weight = values
    if not bool(torch.isfinite(weight).all()):
        bad = torch.nonzero(~torch.isfinite(weight)).flatten().tolist()
        raise ValueError(f"{name} must be finite, got non-finite entries at {bad}")
    if bool((weight < 0).any()):
        bad = torch.nonzero(weight < 0).flatten().tolist()
        raise ValueError(f"{name} must be non-negative, got negative entries at {bad}")


def check_loss_args(input, target, weight, ignore_index, reduction):
    """``(input, target, weight, ignore_index, reduction)`` of ``cross_entropy`` / ``nll_loss``, checked."""
    x = check_loss_input(input)
    target = check_tensor(target, "target")
    reduction = check_reduction(reduction)
    ignore_index = check_ignore_index64(ignore_index)
    n_classes = x.shape[1] if x.ndim >= 2 else x.shape[0]
    weight = check_class_weight(weight, x, n_classes)
    return x, target, weight, ignore_index, reduction


# --------------------------------------------------------------------------------------------
# linear_cross_entropy and linear_logsumexp.
# --------------------------------------------------------------------------------------------


def check_linear_tensors(input: Any, weight: Any, bias: Any) -> None:
    """Hidden states ``(..., d)``, a projection ``(V, d)`` of their dtype and device, an optional bias ``(V,)``."""
    if not isinstance(input, torch.Tensor) or not input.is_floating_point() or input.ndim < 1:
        raise ValueError(f"input must be a floating tensor of shape (..., d), got {_describe(input)}")
    check_has_data(input, "input")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[1] != input.shape[-1]:
        raise ValueError(
            f"weight must be a tensor of shape (V, {input.shape[-1]}) (one row per class), got {_describe(weight)}"
        )
    if weight.dtype != input.dtype or weight.device != input.device:
        raise ValueError(
            f"weight must have the input's dtype {input.dtype} and device {input.device}, "
            f"got {weight.dtype} on {weight.device}"
        )
    if weight.shape[0] < 1:
        raise ValueError(f"weight must have at least one row (class), got {_describe(weight)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must be None or a tensor of shape ({weight.shape[0]},), got {_describe(bias)}")
        if bias.device != input.device or not bias.is_floating_point():
            raise ValueError(f"bias must be a floating tensor on {input.device}, got {bias.dtype} on {bias.device}")


def check_finite_real(value: Any, name: str, *, low: float, allow_none: bool = False) -> float | None:
    """A finite real ``>= low``; with ``allow_none``, ``None`` or a finite real ``> low``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {_describe(value)}")
    if value < low or (allow_none and value <= low):
        bound = f"> {low}" if allow_none else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return float(value)


def check_backend(backend: Any) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {_describe(backend)}")
    return backend


def check_linear_class_weight(class_weight: Any, v: int) -> torch.Tensor | None:
    """``class_weight``: None, or a floating ``(V,)`` tensor that does not require grad."""
    if class_weight is None:
        return None
    if (
        not isinstance(class_weight, torch.Tensor)
        or tuple(class_weight.shape) != (v,)
        or not class_weight.is_floating_point()
    ):
        raise ValueError(
            f"class_weight must be None or a floating tensor of shape ({v},), got {_describe(class_weight)}"
        )
    if class_weight.requires_grad and torch.is_grad_enabled():
        raise ValueError("class_weight must not require grad (no gradient flows to it), got requires_grad=True")
    _check_weight_values(class_weight, "class_weight")
    return class_weight


def check_linear_target(target: Any, batch: tuple[int, ...], v: int) -> bool:
    """Class indices of shape ``batch`` or probabilities ``batch + (V,)``; return whether they are probabilities.

    The values of class indices are checked by :func:`check_class_indices`, once they are int64.
    """
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"target must be a tensor, got {_describe(target)}")
    shapes = f"target must be class indices of shape {batch} or probabilities of shape {batch + (v,)}"
    if target.is_floating_point():
        if tuple(target.shape) != batch + (v,):
            raise ValueError(f"{shapes}, got {_describe(target)}")
        if target.requires_grad and torch.is_grad_enabled():
            raise ValueError("target must not require grad (no gradient flows to it), got requires_grad=True")
        return True
    if target.dtype not in _INDEX_DTYPES:
        raise ValueError(f"target must hold integer class indices or floating probabilities, got {_describe(target)}")
    if tuple(target.shape) != batch:
        raise ValueError(f"{shapes}, got {_describe(target)}")
    return False


# --------------------------------------------------------------------------------------------
# The explicit denominator of "mean" (global normalisation).
# --------------------------------------------------------------------------------------------


def check_denominator(value: Any, name: str, reduction: str) -> torch.Tensor | None:
    """``denominator`` (or ``z_loss_denominator``): None, or a positive finite number or 0-d real tensor.

    Returned as a 0-d float64 tensor (a number becomes one; a tensor keeps its device and its place
    in the graph, detached), so that one code path and one custom-op signature serve both. It only
    means something for ``reduction="mean"``: with ``"sum"`` or ``"none"`` it is an error rather than
    silently unused. The value check reads the tensor in eager calls and inside ``torch.func``
    transforms; traced, it becomes a ``torch._assert_async`` node.
    """
    if value is None:
        return None
    if reduction != "mean":
        raise ValueError(f"{name} must be None unless reduction='mean', got {_describe(value)} with {reduction=}")
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a positive finite number or a 0-d real tensor, got {_describe(value)}")
        check_has_data(value, name)
        t = value.detach().to(torch.float64)
        values = readable(t)
        if values is None:
            torch._assert_async(torch.isfinite(t) & (t > 0), f"{name} must be positive and finite")
        elif not (math.isfinite(float(values)) and float(values) > 0):
            raise ValueError(f"{name} must be positive and finite, got {float(values)!r}")
        return t
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number or a 0-d real tensor, got {_describe(value)}")
    return torch.tensor(float(value), dtype=torch.float64)
