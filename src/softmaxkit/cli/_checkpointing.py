"""``softmaxkit train --checkpoint DIR``: the options, and the fit that saves its state and resumes from it.

The fit's state goes to ``DIR/checkpoint.npz`` (:class:`softmaxkit.linear_model.Checkpoint`) every
60 s, or every ``--checkpoint-every N`` iterations; the same command run again after a crash or a
kill finds it and resumes. A file there that is not this run's checkpoint is a one-line error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from softmaxkit.cli._common import CLIError, UsageError

__all__ = ["CHECKPOINT_FILE", "add_checkpoint_options", "check_checkpoint_options", "fit"]

CHECKPOINT_FILE = "checkpoint.npz"


def add_checkpoint_options(group) -> None:
    group.add_argument(
        "--checkpoint",
        metavar="DIR",
        type=Path,
        help=f"save the fit's state in DIR/{CHECKPOINT_FILE} (every 60 s, or --checkpoint-every N iterations); the "
        "same command run again after a crash resumes from it and ends with the model an uninterrupted run gives",
    )
    group.add_argument("--checkpoint-every", metavar="N", type=int, help="checkpoint every N iterations (sgd: epochs)")


def check_checkpoint_options(args: argparse.Namespace) -> None:
    if args.checkpoint_every is not None and (args.checkpoint is None or args.checkpoint_every < 1):
        raise UsageError(f"--checkpoint-every must be >= 1 with --checkpoint, got {args.checkpoint_every}")


def _fit_in_process(estimator, X, y, **options):
    return estimator.fit(X, y, **options)


def fit(estimator, X, y, args: argparse.Namespace, *, fit_function=_fit_in_process):
    """``fit_function(estimator, X, y)`` (``estimator.fit``; or the data-parallel fit), with the checkpoint of
    ``--checkpoint`` if given."""
    if args.checkpoint is None:
        return fit_function(estimator, X, y)
    from softmaxkit.linear_model import Checkpoint, CheckpointError

    every = args.checkpoint_every
    checkpoint = Checkpoint(args.checkpoint / CHECKPOINT_FILE, every=every, seconds=None if every else 60.0)
    try:
        return fit_function(estimator, X, y, checkpoint=checkpoint)
    except CheckpointError as error:  # a file in --checkpoint that is not this run's: one line, no traceback
        raise CLIError(str(error)) from None
