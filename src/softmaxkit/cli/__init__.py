"""The ``softmaxkit`` command line: train, evaluate and predict on data files.

One module per subcommand (``_train``, ``_evaluate``, ``_predict``, ``_datasets``; ``_distributed`` is train's data-parallel run), beside the
helpers only the command line uses (``_common``: options, metrics, output files; ``_formats``,
``_read``, ``_batches``, ``_bundled``: the data files; ``_plots``: the figures; ``_report``: the run's
record and report.html); this module
builds the argparse root and turns a user's mistake into one line on stderr:

=====  ====================================================================
exit   meaning
=====  ====================================================================
0      success
1      a problem with the user's input (missing file, bad column, foreign model, ...)
2      bad command-line arguments (argparse's usage errors, conflicting options included)
130    interrupted with Ctrl-C (SIGINT); nothing half-written is left behind
143    terminated with SIGTERM; nothing half-written is left behind
=====  ====================================================================

Only the documented user errors become one line on stderr: :class:`~softmaxkit.cli._common.CLIError`
(a mistake the command found), :class:`~softmaxkit.sources.DataError` (a data file's problem), an
``OSError`` (a file that cannot be read or written: missing, permissions, a full disk) and a missing
optional package. Anything else is a bug and keeps its traceback; ``--traceback`` shows the traceback
of a user error too (for bug reports).

Nothing left behind: every file is written through :mod:`softmaxkit._atomic` (a temporary file,
renamed when complete, removed on any exception). ``SIGTERM`` is turned into an exception here, as
Python already does with ``SIGINT``, so that removal runs; a process killed with ``SIGKILL`` runs
nothing, and the next run that writes the same file, or into the same ``--out`` folder, removes
the temporary file it left (with a note). A file-size limit (``RLIMIT_FSIZE``) makes writes fail
with an error (Python ignores ``SIGXFSZ``), which is reported and cleaned up like any other.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from softmaxkit._sources._errors import DataError
from softmaxkit._version import __version__
from softmaxkit.cli import _datasets, _distributed, _evaluate, _predict, _train_stream
from softmaxkit.cli._common import CLIError, HelpFormatter, UsageError

__all__ = ["build_parser", "main"]

EPILOG = """\
examples:
  softmaxkit train                                  # train on the bundled digits, write runs/...
  softmaxkit train data.csv --target label --out runs/mine
  softmaxkit evaluate runs/mine/model.npz test.csv
  softmaxkit predict runs/mine/model.npz new.csv --proba --out predictions.csv
  softmaxkit datasets

Run `softmaxkit COMMAND --help` for each command's options and examples.
"""


# Optional packages the command line uses, and the extra that brings each one.
_OPTIONAL = {
    "matplotlib": "'softmaxkit[plot]' (or pass --no-plots)",
    "pandas": "'softmaxkit[data]'",
    "pyarrow": "'softmaxkit[data]'",
    "torch": "'softmaxkit[torch]'",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``softmaxkit`` command."""
    parser = argparse.ArgumentParser(
        prog="softmaxkit",
        description="Softmax regression on your data files: train, evaluate, predict.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"softmaxkit {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an input error (for bug reports)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (_train_stream, _evaluate, _predict, _datasets):  # _train_stream: train, streaming if need be
        module.add_parser(subparsers)
    _distributed.extend_train(subparsers.choices["train"])
    return parser


class Terminated(BaseException):
    """``SIGTERM`` arrived: raised where the program is, like ``KeyboardInterrupt``, so cleanup runs."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the block runs, ``SIGTERM`` raises :class:`Terminated` (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # for the run's record (metrics.json)
    try:
        with _sigterm_raises():
            return int(args.run(args) or 0)
    except UsageError as error:
        args.parser.error(str(error))  # exits with status 2 and the subcommand's usage line
    except KeyboardInterrupt:
        print("softmaxkit: interrupted; no partial model or output file was left behind", file=sys.stderr)
        return 130
    except Terminated:
        print("softmaxkit: terminated; no partial model or output file was left behind", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`); stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except ModuleNotFoundError as error:
        if args.traceback or error.name not in _OPTIONAL:
            raise
        print(
            f"softmaxkit {args.command}: error: this needs the optional package {error.name}; "
            f"install it with: pip install {_OPTIONAL[error.name]}",
            file=sys.stderr,
        )
        return 1
    except (CLIError, DataError, OSError) as error:
        if args.traceback:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"softmaxkit {args.command}: error: {message}", file=sys.stderr)
        return 1
