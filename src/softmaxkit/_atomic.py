"""The one atomic file writer: every file softmaxkit writes (model files, the command line's JSON,
PNG and prediction files) goes through :func:`atomic_write` or :func:`atomic_path`.

What they promise:

* the file appears under its name only when complete: the data goes to a hidden temporary file in
  the same folder (``.<name>.<random>.tmp``), is flushed to disk (``fsync``) and then moved into
  place with one rename, so a crash or an interrupt leaves the old file or the new one, never half
  of one;
* the temporary file is removed when anything fails, an exception inside the ``with`` block included;
* the file gets the permissions of an ordinary new file under the process's umask (``0o666 & ~umask``),
  not the private ``0o600`` of :func:`tempfile.mkstemp`: the temporary file is created with
  ``os.open(..., 0o666)``, so the kernel applies the umask itself (no ``os.umask`` round trip, which
  would change the umask of every thread for a moment);
* with ``overwrite=False`` an existing file (or symbolic link) of that name is never replaced: it is
  refused before anything is written, and the final step is a hard link, which fails if the name was
  taken meanwhile, so there is no race with another writer either. On a file system without hard
  links the name is checked again just before an ordinary rename.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_path", "atomic_write"]

_ATTEMPTS = 100  # random 64-bit names: a clash is a stale file or a malicious one, not bad luck


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, overwrite: bool = True, encoding=None, newline=None
) -> Iterator[IO]:
    """Write ``path`` through a stream on a temporary file; the file appears when the block ends.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.
    mode : {"wb", "w"}, default "wb"
        Binary or text.
    overwrite : bool, default True
        Replace an existing file; with False a :class:`FileExistsError` is raised instead (before
        the block runs, or at its end if the name was taken meanwhile).
    encoding, newline
        As in :func:`open`, for text mode.

    Yields
    ------
    file object
        Open on the temporary file; do not close it.

    Examples
    --------
    >>> import os, tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "notes.txt"
    ...     with atomic_write(path, "w") as stream:
    ...         _ = stream.write("done")
    ...         during = path.exists()
    ...     print(during, path.read_text(), os.listdir(folder))
    False done ['notes.txt']
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    with _temporary(path, overwrite=overwrite) as (descriptor, _):
        with os.fdopen(descriptor, mode, encoding=encoding, newline=newline) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """A temporary path to write ``path`` through, for writers that open a path themselves.

    The block writes the file at the yielded path (an empty file already exists there, with the
    final permissions; truncating it keeps them); when the block ends it is flushed to disk and
    moved to ``path``. ``overwrite`` as in :func:`atomic_write`.
    """
    with _temporary(path, overwrite=overwrite) as (descriptor, temporary):
        os.close(descriptor)
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextmanager
def _temporary(path, *, overwrite: bool) -> Iterator[tuple[int, Path]]:
    """``(descriptor, temporary path)`` of a new file beside ``path``, moved to ``path`` after the block."""
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path} already exists")
    descriptor, temporary = _create_beside(path)
    try:
        yield descriptor, temporary
        _move_into_place(temporary, path, overwrite=overwrite)
    finally:
        # After os.replace the name is gone; after os.link (overwrite=False) or a failure it is not.
        temporary.unlink(missing_ok=True)


def _create_beside(path: Path) -> tuple[int, Path]:
    """A new, empty hidden file in ``path``'s folder, opened for writing, with mode ``0o666 & ~umask``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_ATTEMPTS):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path} in {_ATTEMPTS} attempts")


def _move_into_place(temporary: Path, path: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails if the name exists, however it got there
    except FileExistsError:
        raise FileExistsError(f"{path} already exists") from None
    except OSError:  # a file system without hard links
        if os.path.lexists(path):
            raise FileExistsError(f"{path} already exists") from None
        os.replace(temporary, path)
