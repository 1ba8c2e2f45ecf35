"""``softmaxkit datasets``: the bundled datasets that ``train --dataset NAME`` accepts."""

from __future__ import annotations

import argparse

import numpy as np

from softmaxkit.cli._bundled import BUNDLED_DATASETS, DEFAULT_DATASET, load_bundled
from softmaxkit.cli._common import HelpFormatter, format_table

EPILOG = """\
examples:
  softmaxkit datasets
  softmaxkit train --dataset wine
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "datasets",
        help="list the bundled datasets",
        description="List the datasets bundled with scikit-learn (no download) that "
        "`softmaxkit train --dataset NAME` can train on.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    rows = []
    for name, spec in BUNDLED_DATASETS.items():
        data = load_bundled(name)
        label = f"{name} (default)" if name == DEFAULT_DATASET else name
        rows.append([label, data.X.shape[0], data.X.shape[1], len(np.unique(data.y)), spec.description])
    print(format_table(["name", "samples", "features", "classes", "description"], rows, left=(0, 4)))
    return 0
