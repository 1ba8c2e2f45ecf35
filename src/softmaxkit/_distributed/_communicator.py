"""The process group as the data-parallel fit uses it: float64 sums and maxima, and small Python objects.

:class:`Communicator` is the one place that calls ``torch.distributed``. Arrays travel as float64
tensors: on the CPU for gloo (the NumPy backend uses torch's gloo on CPU tensors, so one process
group serves both backends), on the rank's current CUDA device for NCCL (which has no CPU tensors).
Every array collective is counted (:attr:`Communicator.calls`, :attr:`Communicator.bytes`), so
that the benchmarks can report what an evaluation moves.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Communicator", "PeerError", "collectively"]


class Communicator:
    """Collectives over ``group`` (None: the default group), which must be initialised.

    Attributes
    ----------
    rank, world_size : int
        This process's rank in ``group`` and the group's size.
    backend : str
        The group's backend ("gloo", "nccl").
    calls, bytes : int
        Array collectives done so far and the bytes of their payloads (each rank's contribution).
    """

    def __init__(self, group=None):
        try:
            import torch
            import torch.distributed as dist
        except ImportError as error:  # pragma: no cover - the torch extra is installed in the test environment
            raise ImportError("softmaxkit.distributed needs PyTorch: pip install 'softmaxkit[torch]'") from error
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "group must belong to an initialised process group (torch.distributed.init_process_group, or "
                "torchrun), got no initialised default group"
            )
        self._torch, self._dist, self.group = torch, dist, group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group)).lower()
        cuda = self.backend == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        self._source = 0 if group is None else dist.get_global_rank(group, 0)
        self.calls = 0
        self.bytes = 0

    def _reduce(self, array, op) -> np.ndarray:
        values = np.ascontiguousarray(array, dtype=np.float64)
        tensor = self._torch.from_numpy(values.reshape(-1).copy()).to(self.device)
        self._dist.all_reduce(tensor, op=op, group=self.group)
        self.calls += 1
        self.bytes += values.nbytes
        return tensor.cpu().numpy().reshape(values.shape)

    def sum(self, array) -> np.ndarray:
        """The elementwise sum over the ranks of ``array`` (same shape on every rank), in float64."""
        return self._reduce(array, self._dist.ReduceOp.SUM)

    def max(self, array) -> np.ndarray:
        """The elementwise maximum over the ranks, in float64."""
        return self._reduce(array, self._dist.ReduceOp.MAX)

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        out = [None] * self.world_size
        self._dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` (picklable), on every rank."""
        box = [obj]
        self._dist.broadcast_object_list(box, src=self._source, group=self.group)
        return box[0]


class PeerError(RuntimeError):
    """Another rank refused its input (raised by :func:`collectively` on the ranks that did not)."""


def collectively(comm: Communicator, step):
    """``step()`` on every rank; if it raises on any rank, every rank raises (none is left waiting in a collective).

    The failing rank raises its own exception; the others a :class:`PeerError` naming the rank and its message.
    """
    try:
        result, error = step(), None
    except Exception as caught:
        result, error = None, caught
    failures = comm.gather(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    for rank, message in enumerate(failures):
        if message is not None:
            raise PeerError(f"rank {rank} failed: {message}")
    return result
