"""Jobs of tests/test_kill.py, run in processes forked from a multiprocessing forkserver.

The forkserver imports softmaxkit, scikit-learn and pandas once; each job is a fork of it, so a
process to kill costs milliseconds, not the seconds of a fresh interpreter. A job's exit status
carries its outcome (multiprocessing turns ``SystemExit(n)`` into the exit code ``n``).
"""

from __future__ import annotations

import resource
import sys


def save(model, path) -> None:
    """``model.save(path, overwrite=True)``; exit status the errno of an OSError (EFBIG: 27)."""
    try:
        model.save(path, overwrite=True)
    except OSError as error:
        sys.exit(error.errno or 1)


def command(argv: list[str]) -> None:
    """The command line, ``softmaxkit ARGV``; exit status its own."""
    from softmaxkit.cli import main

    sys.exit(main(argv))


def file_size_limited(limit: int, job, *args) -> None:
    """``job(*args)`` under ``RLIMIT_FSIZE = limit`` bytes (Python ignores SIGXFSZ: writes beyond fail with EFBIG)."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    job(*args)
