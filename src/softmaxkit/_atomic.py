"""The one atomic file writer: every file softmaxkit writes (model files, the command line's JSON,
PNG and prediction files) goes through :func:`atomic_write` or :func:`atomic_path`.

What they promise:

* the file appears under its name only when complete: the data goes to a hidden temporary file in
  the same folder (``.<name>.<pid>-<host>.<random>.tmp``), is flushed to disk (``fsync``) and then
  moved into place with one rename, so a crash or an interrupt leaves the old file or the new one,
  never half of one;
* the temporary file is removed when anything fails, an exception inside the ``with`` block included
  (``KeyboardInterrupt`` too; the command line turns ``SIGTERM`` into such an exception);
* the file gets the permissions of an ordinary new file under the process's umask (``0o666 & ~umask``),
  not the private ``0o600`` of :func:`tempfile.mkstemp`: the temporary file is created with
  ``os.open(..., 0o666)``, so the kernel applies the umask itself (no ``os.umask`` round trip, which
  would change the umask of every thread for a moment);
* with ``overwrite=False`` an existing file (or symbolic link) of that name is never replaced: it is
  refused before anything is written, and the final step is a hard link, which fails if the name was
  taken meanwhile, so there is no race with another writer either. On a file system without hard
  links the name is checked again just before an ordinary rename.

Temporary files of dead writers
-------------------------------
A process killed outright (``SIGKILL``, the out-of-memory killer, a power cut) runs no cleanup, so
its temporary file stays. Such a file is recognised later by its name, which carries the writer's
process id and a tag of its host name, and by a lock: the writer holds an exclusive ``flock`` on its
temporary file while it writes. A temporary file is *stale* when it was written on this host, its
process no longer exists, and (where ``fcntl`` exists) nobody holds its lock. Both tests are needed:
the process id alone can be wrong across PID namespaces (two containers with one host name), the
lock alone has a gap between creating the file and locking it, and the process id covers that gap.
A process id that was reused by an unrelated process makes a stale file look alive, which only
leaves it in place. Every write removes the stale temporary files of its own target first
(:func:`remove_stale_temporaries`); those of live writers, of other hosts and of older softmaxkit
releases (``.<name>.<random>.tmp``, which carry no process id) are left alone, and
:func:`is_temporary` lets a caller ignore them.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: the process id alone tells a dead writer
    fcntl = None

__all__ = ["Temporary", "atomic_path", "atomic_write", "find_temporaries", "is_temporary", "remove_stale_temporaries"]

_ATTEMPTS = 100  # random 64-bit names: a clash is a stale file or a malicious one, not bad luck
# .<target>.<pid>-<host tag>.<16 hex>.tmp, and the older .<target>.<16 hex>.tmp (no owner recorded).
_TEMPORARY = re.compile(r"\.(?P<target>.+?)\.(?:(?P<pid>[0-9]{1,10})-(?P<host>[0-9a-f]{8})\.)?[0-9a-f]{16}\.tmp")


def _host_tag() -> str:
    """Eight hex digits of the host name: short, safe in a file name, distinct between hosts that share a folder."""
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


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
        # A second descriptor for the stream: closing the stream must not release the lock on the first.
        with os.fdopen(os.dup(descriptor), mode, encoding=encoding, newline=newline) as stream:
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
    with _temporary(path, overwrite=overwrite) as (_, temporary):
        yield temporary
        # Opened again by name: the writer may have replaced the file at that path with its own.
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextmanager
def _temporary(path, *, overwrite: bool) -> Iterator[tuple[int, Path]]:
    """``(descriptor, temporary path)`` of a new, locked file beside ``path``, moved to ``path`` after the block."""
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path} already exists")
    remove_stale_temporaries(path.parent, target=path.name)
    descriptor, temporary = _create_beside(path)
    try:
        yield descriptor, temporary
        os.close(descriptor)  # releases the lock; the process id still marks the file as ours
        descriptor = -1
        _move_into_place(temporary, path, overwrite=overwrite)
    finally:
        if descriptor >= 0:
            os.close(descriptor)
        # After os.replace the name is gone; after os.link (overwrite=False) or a failure it is not.
        temporary.unlink(missing_ok=True)


def _create_beside(path: Path) -> tuple[int, Path]:
    """A new, empty, locked hidden file in ``path``'s folder, opened for writing, mode ``0o666 & ~umask``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    owner = f"{os.getpid()}-{_host_tag()}"
    for _ in range(_ATTEMPTS):
        temporary = path.parent / f".{path.name}.{owner}.{secrets.token_hex(8)}.tmp"
        try:
            descriptor = os.open(temporary, flags, 0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a file system without locks (or a hostile locker): the process id still marks it
                pass
        return descriptor, temporary
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


# --------------------------------------------------------------------------------------------
# temporary files left behind


@dataclass(frozen=True)
class Temporary:
    """A temporary file of this writer found in a folder.

    Attributes
    ----------
    path : pathlib.Path
    target : str
        The name of the file it was going to become.
    pid : int or None
        The writer's process id (``None`` for the names of older releases, which do not record it).
    stale : bool
        The writer is known to be gone (see the module docstring); only such a file may be removed.
    """

    path: Path
    target: str
    pid: int | None
    stale: bool


def is_temporary(name: str) -> bool:
    """Whether a file name is that of this writer's temporary files (of any release).

    >>> is_temporary(".model.npz.4242-0a1b2c3d.0123456789abcdef.tmp"), is_temporary("model.npz")
    (True, False)
    """
    return _TEMPORARY.fullmatch(name) is not None


def find_temporaries(folder: str | os.PathLike, *, target: str | None = None) -> list[Temporary]:
    """The temporary files of this writer in ``folder`` (those for ``target`` only, if given), by name."""
    folder = Path(folder)
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        match = _TEMPORARY.fullmatch(name)
        if match is None or (target is not None and match["target"] != target):
            continue
        pid = int(match["pid"]) if match["pid"] is not None else None
        path = folder / name
        stale = pid is not None and match["host"] == _host_tag() and not _process_exists(pid) and _unlocked(path)
        found.append(Temporary(path=path, target=match["target"], pid=pid, stale=stale))
    return found


def remove_stale_temporaries(folder: str | os.PathLike, *, target: str | None = None) -> list[Temporary]:
    """Remove the stale temporary files in ``folder`` (for ``target`` only, if given); return those removed."""
    removed = []
    for temporary in find_temporaries(folder, target=target):
        if temporary.stale:
            try:
                temporary.path.unlink()
            except FileNotFoundError:  # another process cleaned it up first
                continue
            except OSError:  # not ours to remove (a read-only folder, say): leave it
                continue
            removed.append(temporary)
    return removed


def _process_exists(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows: assume alive
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or an id no process can have
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _unlocked(path: Path) -> bool:
    """Whether nobody holds the writer's lock on ``path`` (True where there are no locks)."""
    if fcntl is None:
        return True
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held by its writer
        return False
    except OSError:  # a file system without locks: the process id decides alone
        return True
    finally:
        os.close(descriptor)  # releases the lock just taken
    return True
