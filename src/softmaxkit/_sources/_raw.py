"""Rows of a raw binary array file read by explicit reads, not through a memory map.

A memory map's pages stay in the process's resident set once touched (up to the whole file: a pass
over a 200 MB float32 cache through ``np.memmap`` peaked 333 MB over its baseline, measured in
benchmarks/bench_sources.py), while pages read with ``readinto`` go to the kernel's page cache,
which is not this process's memory: the reader then holds one batch. The files stay exactly what
``np.memmap`` (or ``np.load(mmap_mode="r")``) would map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RawArray:
    """A C-ordered array stored at ``offset`` of ``path``: its dtype and shape."""

    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int = 0

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, handle, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new array, read from the open binary ``handle``."""
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        handle.seek(self.offset + start * self.row_bytes)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < view.nbytes:
            count = handle.readinto(view[done:])
            if not count:
                raise EOFError(f"{self.path.name} ends before row {stop} of {self.shape[0]}")
            done += count
        return out


def npy_array(path: Path) -> RawArray | None:
    """The array of a ``.npy`` file as a :class:`RawArray`; ``None`` if it is Fortran-ordered or holds objects."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    if fortran or dtype.hasobject or len(shape) == 0:
        return None
    return RawArray(Path(path), np.dtype(dtype), tuple(int(s) for s in shape), offset)
