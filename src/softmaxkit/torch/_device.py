"""Device resolution ("auto" is CUDA when available, then MPS, then the CPU) and each device's default precision."""

from __future__ import annotations

import re

import numpy as np
import torch

__all__ = ["default_dtype", "resolve_device"]

_DEVICE_PATTERN = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def resolve_device(device="auto") -> torch.device:
    """The torch device for ``device``: "auto" is CUDA when available, then MPS, then the CPU.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or None
        ``None`` means "auto".

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        An unknown name, or a device this machine does not have.

    Examples
    --------
    >>> from softmaxkit.torch import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None:
        device = "auto"
    if not (isinstance(device, str) and _DEVICE_PATTERN.fullmatch(device)):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device must be available on this machine, got {device!r} (PyTorch sees no CUDA device)")
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device must be available on this machine, got {device!r} "
                f"(PyTorch sees {torch.cuda.device_count()} CUDA device(s))"
            )
        return torch.device("cuda", index)
    if resolved.type == "mps" and not _mps_available():
        raise ValueError(f"device must be available on this machine, got {device!r} (PyTorch sees no MPS device)")
    return resolved


def default_dtype(device="auto") -> np.dtype:
    """float32 on a GPU (CUDA or MPS), float64 on the CPU: the precision ``device`` computes in by default.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or None
        As in :func:`resolve_device`.

    Returns
    -------
    numpy.dtype

    Examples
    --------
    >>> from softmaxkit.torch._device import default_dtype
    >>> default_dtype("cpu")
    dtype('float64')
    """
    return np.dtype(np.float64 if resolve_device(device).type == "cpu" else np.float32)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
