"""The one atomic writer (softmaxkit._atomic): permissions, no overwrite, cleanup, completeness, fsync.

The oracle for permissions is an ordinary file made by ``open(..., "x")`` under the same umask.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from softmaxkit import _atomic
from softmaxkit._atomic import atomic_path, atomic_write

WRITERS = ["stream", "path"]


def _write(path, data: bytes, *, how: str, overwrite: bool = True, during=None) -> None:
    """Write ``data`` to ``path`` with one of the two entry points; ``during()`` runs inside the block."""
    if how == "stream":
        with atomic_write(path, overwrite=overwrite) as stream:
            stream.write(data)
            if during is not None:
                during()
    else:
        with atomic_path(path, overwrite=overwrite) as temporary:
            Path(temporary).write_bytes(data)
            if during is not None:
                during()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def umask():
    """Set a umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("how", WRITERS)
@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o000])
def test_permissions_are_those_of_an_ordinary_new_file(tmp_path, umask, how, overwrite, mask):
    umask(mask)
    ordinary = tmp_path / "ordinary"
    with open(ordinary, "x"):
        pass
    path = tmp_path / "written.bin"
    _write(path, b"data", how=how, overwrite=overwrite)
    assert os.stat(path).st_mode & 0o7777 == os.stat(ordinary).st_mode & 0o7777 == 0o666 & ~mask


@pytest.mark.parametrize("how", WRITERS)
def test_the_file_appears_only_when_complete(tmp_path, how):
    path = tmp_path / "out.bin"
    seen = {}

    def during():
        seen["exists"] = path.exists()
        seen["leftovers"] = _leftovers(tmp_path)

    _write(path, b"complete", how=how, during=during)
    assert seen["exists"] is False
    assert len(seen["leftovers"]) == 1 and seen["leftovers"][0].startswith(".out.bin.")  # hidden, beside it
    assert path.read_bytes() == b"complete"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("how", WRITERS)
def test_an_existing_file_keeps_its_content_until_the_new_one_is_complete(tmp_path, how):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    old_inode = os.stat(path).st_ino
    seen = []
    _write(path, b"new", how=how, during=lambda: seen.append(path.read_bytes()))
    assert seen == [b"old"]
    assert path.read_bytes() == b"new"
    assert os.stat(path).st_ino != old_inode  # replaced by a rename, not rewritten in place


@pytest.mark.parametrize("how", WRITERS)
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failure_inside_the_block_leaves_nothing_behind(tmp_path, how, error):
    path = tmp_path / "out.bin"

    def fail():
        raise error("stop")

    with pytest.raises(error, match="stop"):
        _write(path, b"half", how=how, during=fail)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("how", WRITERS)
def test_a_failure_keeps_the_old_file(tmp_path, how):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fail():
        raise OSError(errno.ENOSPC, "disk full")

    with pytest.raises(OSError, match="disk full"):
        _write(path, b"half", how=how, during=fail)
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("how", WRITERS)
def test_refuses_to_overwrite_before_writing(tmp_path, how):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    entered = []
    with pytest.raises(FileExistsError, match=r"out\.bin already exists"):
        _write(path, b"new", how=how, overwrite=False, during=lambda: entered.append(True))
    assert entered == []  # refused before the block ran
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_dangling_symbolic_link_counts_as_existing(tmp_path):
    path = tmp_path / "out.bin"
    path.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        _write(path, b"new", how="stream", overwrite=False)
    assert path.is_symlink() and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("how", WRITERS)
def test_a_file_that_appears_meanwhile_is_not_replaced(tmp_path, how):
    """The race: another writer takes the name while the block runs; the final hard link refuses."""
    path = tmp_path / "out.bin"
    with pytest.raises(FileExistsError, match=r"out\.bin already exists"):
        _write(path, b"ours", how=how, overwrite=False, during=lambda: path.write_bytes(b"theirs"))
    assert path.read_bytes() == b"theirs"
    assert _leftovers(tmp_path) == []


def test_without_overwrite_the_new_file_has_one_name(tmp_path):
    path = tmp_path / "out.bin"
    _write(path, b"new", how="stream", overwrite=False)
    assert os.stat(path).st_nlink == 1  # the temporary name was removed after the hard link
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("taken", [False, True])
def test_a_file_system_without_hard_links(tmp_path, monkeypatch, taken):
    def no_links(source, target):
        if taken:
            Path(target).write_bytes(b"theirs")  # the race, just before the fallback's check
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(_atomic.os, "link", no_links)
    path = tmp_path / "out.bin"
    if taken:
        with pytest.raises(FileExistsError):
            _write(path, b"ours", how="stream", overwrite=False)
        assert path.read_bytes() == b"theirs"
    else:
        _write(path, b"ours", how="stream", overwrite=False)
        assert path.read_bytes() == b"ours"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("how", WRITERS)
def test_the_data_is_flushed_to_disk_before_the_rename(tmp_path, monkeypatch, how):
    path = tmp_path / "out.bin"
    synced = []
    real_fsync = os.fsync

    def fsync(descriptor):
        synced.append((os.fstat(descriptor).st_size, path.exists()))
        real_fsync(descriptor)

    monkeypatch.setattr(_atomic.os, "fsync", fsync)
    _write(path, b"12345", how=how)
    assert synced == [(5, False)]


def test_text_mode_with_encoding_and_newline(tmp_path):
    path = tmp_path / "out.csv"
    with atomic_write(path, "w", encoding="utf-8", newline="") as stream:
        stream.write("a,b\r\nä,1\n")
    assert path.read_bytes() == "a,b\r\nä,1\n".encode()


def test_bad_mode_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w', got 'a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "no" / "x"):
            pass
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# temporary files of dead writers


def _dead_pid() -> int:
    """The process id of a process that has exited (and been reaped)."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _temporary_name(target: str, pid: int, host: str | None = None) -> str:
    return f".{target}.{pid}-{host or _atomic._host_tag()}.{'0123456789abcdef'}.tmp"


def test_the_temporary_name_records_the_writer(tmp_path):
    path = tmp_path / "out.bin"
    seen = []
    with atomic_write(path) as stream:
        stream.write(b"x")
        seen = _leftovers(tmp_path)
    (name,) = seen
    assert _atomic.is_temporary(name)
    assert name.startswith(f".out.bin.{os.getpid()}-{_atomic._host_tag()}.")
    assert _atomic.find_temporaries(tmp_path / "missing") == []


def test_a_running_writer_is_never_stale(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path) as stream:
        stream.write(b"x")
        (found,) = _atomic.find_temporaries(tmp_path)
        assert found.target == "out.bin" and found.pid == os.getpid() and not found.stale
        assert _atomic.remove_stale_temporaries(tmp_path) == []
        assert len(_leftovers(tmp_path)) == 1


@pytest.mark.parametrize("how", WRITERS)
def test_a_stale_temporary_is_removed_by_the_next_write_of_its_target(tmp_path, how):
    pid = _dead_pid()
    stale = tmp_path / _temporary_name("out.bin", pid)
    stale.write_bytes(b"half a model")
    other = tmp_path / _temporary_name("other.bin", pid)  # another target: left for its own writer
    other.write_bytes(b"half")
    (found, _) = sorted(_atomic.find_temporaries(tmp_path), key=lambda t: t.target != "out.bin")
    assert found.path == stale and found.pid == pid and found.stale
    _write(tmp_path / "out.bin", b"new", how=how)
    assert not stale.exists() and other.exists()
    assert (tmp_path / "out.bin").read_bytes() == b"new"
    assert [t.path for t in _atomic.remove_stale_temporaries(tmp_path)] == [other]
    assert _leftovers(tmp_path) == []


def test_temporaries_that_cannot_be_judged_stay(tmp_path):
    pid = _dead_pid()
    names = [
        _temporary_name("a.bin", os.getppid()),  # a live process
        _temporary_name("b.bin", pid, host="00000000" if _atomic._host_tag() != "00000000" else "11111111"),
        ".c.bin.0123456789abcdef.tmp",  # an older release's name: no process id
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    found = _atomic.find_temporaries(tmp_path)
    assert sorted(t.path.name for t in found) == sorted(names)
    assert not any(t.stale for t in found)
    assert _atomic.remove_stale_temporaries(tmp_path) == []
    assert sorted(_leftovers(tmp_path)) == sorted(names)
    assert [t.pid for t in found if t.target == "c.bin"] == [None]


@pytest.mark.skipif(_atomic.fcntl is None, reason="no flock on this platform")
def test_a_locked_temporary_is_not_stale_even_when_its_pid_is_gone(tmp_path):
    """Another PID namespace (a container with the same host name): the lock tells what the pid cannot."""
    stale = tmp_path / _temporary_name("out.bin", _dead_pid())
    stale.write_bytes(b"x")
    descriptor = os.open(stale, os.O_RDONLY)
    try:
        _atomic.fcntl.flock(descriptor, _atomic.fcntl.LOCK_EX)
        assert [t.stale for t in _atomic.find_temporaries(tmp_path)] == [False]
    finally:
        os.close(descriptor)
    assert [t.stale for t in _atomic.find_temporaries(tmp_path)] == [True]


@pytest.mark.skipif(_atomic.fcntl is None, reason="no flock on this platform")
def test_the_writer_holds_the_lock_while_it_writes(tmp_path):
    with atomic_write(tmp_path / "out.bin") as stream:
        stream.write(b"x")
        (name,) = _leftovers(tmp_path)
        assert not _atomic._unlocked(tmp_path / name)


def test_is_temporary():
    assert _atomic.is_temporary(".model.npz.12-0a1b2c3d.0123456789abcdef.tmp")
    assert _atomic.is_temporary(".model.npz.0123456789abcdef.tmp")
    assert _atomic.is_temporary("..hidden.12-0a1b2c3d.0123456789abcdef.tmp")
    for name in ("model.npz", ".model.npz", ".model.npz.tmp", "model.npz.0123456789abcdef.tmp", ".x.12-0a1b.ff.tmp"):
        assert not _atomic.is_temporary(name), name
