"""``softmaxkit predict``: label new data with a saved model, batch by batch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from softmaxkit._atomic import atomic_path, atomic_write
from softmaxkit.cli._batches import iter_feature_batches
from softmaxkit.cli._common import (
    CLIError,
    HelpFormatter,
    add_data_options,
    clear_stale_temporaries,
    load_model,
    model_layout,
)

EPILOG = """\
examples:
  softmaxkit predict runs/digits-20260101-120000/model.npz new.csv > labels.csv
  softmaxkit predict model.npz new.parquet --out predictions.parquet --proba
  softmaxkit predict model.npz huge.csv.gz --out labels.csv --batch-size 100000

The data may hold the model's target column (it is ignored).  Columns are matched by name
when the model was trained on named columns and the file has a header (a file that has none
of the model's column names is refused), else by position (--no-header).  The output has a column
`prediction` and, with --proba, one column `proba_<class>` per class; .parquet/.pq output is
written as Parquet, anything else as CSV.  The file is written under a temporary name and
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
        help="where the predictions go (.csv, .tsv or .parquet); default: stdout as CSV",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--proba", action="store_true", help="add the probability of each class")
    parser.add_argument("--batch-size", type=int, default=65536, metavar="N", help="rows per batch (default 65536)")
    parser.set_defaults(run=run)


def _frames(estimator, batches, *, proba: bool):
    import pandas as pd

    classes = np.asarray(estimator.classes_)
    for X in batches:
        if proba:
            probabilities = np.asarray(estimator.predict_proba(X))
            columns = {"prediction": classes[np.argmax(probabilities, axis=1)]}
            columns.update({f"proba_{c}": probabilities[:, k] for k, c in enumerate(classes)})
        else:
            columns = {"prediction": np.asarray(estimator.predict(X))}
        yield pd.DataFrame(columns)


def run(args: argparse.Namespace) -> int:
    estimator, metadata = load_model(args.model)
    layout = model_layout(estimator, metadata)
    out: Path | None = args.out
    if out is not None:
        if out.is_dir():
            raise CLIError(f"--out {out} is a folder; give a file name")
        if out.exists() and not args.overwrite:
            raise CLIError(f"--out {out} already exists; choose another name or pass --overwrite")
        if not out.parent.exists():
            raise CLIError(f"the folder of --out {out} does not exist")
        clear_stale_temporaries(out.parent, target=out.name)
    batches = iter_feature_batches(args.data, layout, header=args.header, fmt=args.fmt, batch_size=args.batch_size)
    frames = _frames(estimator, batches, proba=args.proba)
    no_rows = f"{Path(args.data).name} has no data rows to predict"
    if out is None:
        n = _write_csv(frames, sys.stdout, sep=",", no_rows=no_rows)
        print(f"predicted {n} rows", file=sys.stderr)
        return 0
    if out.suffix.lower() in (".parquet", ".pq"):
        with atomic_path(out, overwrite=args.overwrite) as temporary:  # pyarrow opens the file itself
            n = _write_parquet(frames, str(temporary), no_rows=no_rows)
    else:
        with atomic_write(out, "w", overwrite=args.overwrite, newline="") as stream:
            n = _write_csv(frames, stream, sep="\t" if out.suffix.lower() == ".tsv" else ",", no_rows=no_rows)
    print(f"wrote {n} predictions to {out}", file=sys.stderr)
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
