"""``softmaxkit predict``: label new data with a saved model, batch by batch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from softmaxkit._atomic import atomic_path, atomic_write
from softmaxkit._progress import progress
from softmaxkit.cli._batches import iter_feature_batches
from softmaxkit.cli._common import (
    CLIError,
    HelpFormatter,
    UsageError,
    add_data_options,
    clear_stale_temporaries,
    load_model,
    model_layout,
    warn_positional_match,
)

EPILOG = """\
examples:
  softmaxkit predict runs/digits-20260101-120000/model.npz new.csv > labels.csv
  softmaxkit predict model.npz new.parquet --out predictions.parquet --proba
  softmaxkit predict model.npz huge.csv.gz --out labels.csv --batch-size 100000

The data may hold the model's target column (it is ignored).  Columns are matched by name
when the model was trained on named columns and the file has a header (a file that has none
of the model's column names is refused), else by position (--no-header).  The output has a column
`prediction` and, with --proba, one column `proba_<class>` per class; the --out file's extension
names its format: .csv (or .txt), .tsv, .parquet (or .pq); any other is refused.  The file is written under a temporary name and
renamed when complete, so an interrupted run leaves no partial output.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict labels (and probabilities) for new data",
        description="Predict the class of each row of DATA with a model saved by "
        "`softmaxkit train`, reading DATA in batches so files larger than memory work.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="a model.npz (or the folder holding it)")
    parser.add_argument("data", metavar="DATA", help="features (csv, tsv, parquet, npz, svmlight)")
    add_data_options(parser, target=None)
    parser.add_argument(
        "--out",
        metavar="FILE",
        type=Path,
        help="where the predictions go (.csv, .txt, .tsv, .parquet or .pq); default: stdout as CSV",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--proba", action="store_true", help="add the probability of each class")
    parser.add_argument(
        "--batch-size", type=positive_int, default=65536, metavar="N", help="rows per batch (default 65536)"
    )
    parser.add_argument("--quiet", action="store_true", help="nothing on stderr but errors (no progress, no summary)")
    parser.set_defaults(run=run, parser=parser)


# The output formats by the --out file's extension.
OUTPUT_FORMATS = {".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 1.

    >>> positive_int("3")
    3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


def output_format(out: Path) -> str:
    """The format the ``--out`` file's extension names; any other extension is a usage error.

    >>> output_format(Path("p.PQ"))
    'parquet'
    """
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UsageError(
            f"--out {out}: cannot write predictions as {suffix or 'a file without an extension'}; "
            f"name the file with one of {', '.join(OUTPUT_FORMATS)}"
        )
    return OUTPUT_FORMATS[suffix]


def _frames(estimator, batches, *, proba: bool, display):
    import pandas as pd

    classes = np.asarray(estimator.classes_)
    for X in batches:
        display.update(X.shape[0])
        if proba:
            probabilities = np.asarray(estimator.predict_proba(X))
            columns = {"prediction": classes[np.argmax(probabilities, axis=1)]}
            columns.update({f"proba_{c}": probabilities[:, k] for k, c in enumerate(classes)})
        else:
            columns = {"prediction": np.asarray(estimator.predict(X))}
        yield pd.DataFrame(columns)


def _warn_once_read(batches, warn):
    """The batches, with ``warn()`` called once the first one is read.

    A warning about how the columns are matched is noise before a file that cannot be read at all:
    the read error is then the one line the user sees.
    """
    for k, X in enumerate(batches):
        if k == 0:
            warn()
        yield X


def run(args: argparse.Namespace) -> int:
    estimator, metadata = load_model(args.model)
    layout = model_layout(estimator, metadata)
    out: Path | None = args.out
    if out is not None:
        fmt = output_format(out)
        if out.is_dir():
            raise CLIError(f"--out {out} is a folder; give a file name")
        if out.exists() and not args.overwrite:
            raise CLIError(f"--out {out} already exists; choose another name or pass --overwrite")
        if not out.parent.exists():
            raise CLIError(f"the folder of --out {out} does not exist")
        clear_stale_temporaries(out.parent, target=out.name)
    batches = _warn_once_read(
        iter_feature_batches(args.data, layout, header=args.header, fmt=args.fmt, batch_size=args.batch_size),
        lambda: warn_positional_match(layout, header=args.header, fmt=args.fmt, data=args.data),
    )
    display = progress(
        total=None,
        desc=f"predicting {Path(args.data).name}",
        unit="rows",
        unit_scale=True,
        summary=False,
        enabled=not args.quiet,
    )
    frames = _frames(estimator, batches, proba=args.proba, display=display)
    no_rows = f"{Path(args.data).name} has no data rows to predict"
    with display:
        if out is None:
            n = _write_csv(frames, sys.stdout, sep=",", no_rows=no_rows)
        elif fmt == "parquet":
            with atomic_path(out, overwrite=args.overwrite) as temporary:  # pyarrow opens the file itself
                n = _write_parquet(frames, str(temporary), no_rows=no_rows)
        else:
            with atomic_write(out, "w", overwrite=args.overwrite, newline="") as stream:
                n = _write_csv(frames, stream, sep="\t" if fmt == "tsv" else ",", no_rows=no_rows)
    if not args.quiet:
        print(f"predicted {n} rows" if out is None else f"wrote {n} predictions to {out}", file=sys.stderr)
    return 0


def _write_csv(frames, stream, *, sep: str, no_rows: str) -> int:
    n = 0
    for frame in frames:
        frame.to_csv(stream, sep=sep, header=n == 0, index=False)
        n += len(frame)
    if n == 0:
        raise CLIError(no_rows)
    return n


def _write_parquet(frames, path: str, *, no_rows: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    n = 0
    try:
        for frame in frames:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            n += len(frame)
    finally:
        if writer is not None:
            writer.close()
    if n == 0:
        raise CLIError(no_rows)
    return n
