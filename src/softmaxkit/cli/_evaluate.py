"""``softmaxkit evaluate``: accuracy, log-loss, per-class scores and confusion matrix of a model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from softmaxkit.cli import _report
from softmaxkit.cli._common import (
    METRICS_FILE,
    HelpFormatter,
    add_data_options,
    align_features,
    check_out_dir,
    classification_metrics,
    confusion_table,
    format_table,
    load_model,
    model_layout,
    per_class_table,
    read_labelled,
    write_json,
)
from softmaxkit.cli._stream import ProgressSource, add_stream_options, labelled_source, should_stream, streamed_metrics

EPILOG = """\
examples:
  softmaxkit evaluate runs/digits-20260101-120000/model.npz digits_test.csv
  softmaxkit evaluate model.npz test.parquet --target species --out runs/eval
  softmaxkit evaluate model.npz letter.data.gz --no-header --target 0

The confusion matrix is printed for up to 15 classes; --out DIR also writes metrics.json,
confusion_matrix.png and report.html (all of it in one file that opens offline).
"""

_PRINTED_CLASSES = 15
PLOT_FILE = "confusion_matrix.png"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a saved model on labelled data",
        description="Score a model saved by `softmaxkit train` on labelled DATA: accuracy, "
        "log-loss, per-class precision/recall/F1 and the confusion matrix.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="a model.npz (or the folder holding it)")
    parser.add_argument("data", metavar="DATA", help="labelled data (csv, tsv, parquet, npz, svmlight)")
    add_data_options(parser, target="the model's target column if DATA has it, else the last column")
    parser.add_argument("--out", metavar="DIR", type=Path, help="also write metrics.json and confusion_matrix.png here")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace this command's files in an existing --out folder"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_stream_options(parser, cache=False)
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    started = _report.now()
    estimator, metadata = load_model(args.model)
    layout = model_layout(estimator, metadata)
    if args.out is not None:
        check_out_dir(args.out, overwrite=args.overwrite, ours=(METRICS_FILE, PLOT_FILE, _report.REPORT_FILE))
    if should_stream(args.data, args):  # larger than memory: scored batch by batch (cli/_stream.py)
        source = labelled_source(args.data, args, layout)
        data = argparse.Namespace(name=source.name, target=getattr(getattr(source, "plan", None), "target", None))
        metrics = streamed_metrics(estimator, ProgressSource(source, enabled=not args.quiet, what="scoring"))
    else:
        data = read_labelled(args.data, args, layout)
        metrics = classification_metrics(estimator, align_features(data, layout), data.y, source=data.name)

    print(f"{data.name}: {metrics['n_samples']} samples, target column {data.target!r}")
    print(
        format_table(
            ["metric", "value"],
            [["accuracy", f"{metrics['accuracy']:.4f}"], ["log-loss", f"{metrics['log_loss']:.4f}"]],
        )
    )
    print()
    print(per_class_table(metrics))
    n_classes = len(metrics["per_class"])
    if n_classes <= _PRINTED_CLASSES:
        print()
        print(confusion_table(metrics))
    elif args.out is None:
        print(f"\n({n_classes} classes: pass --out DIR for the confusion matrix as a plot)")
    if args.out is not None:
        from softmaxkit.cli import _plots

        args.out.mkdir(parents=True, exist_ok=True)
        _plots.plot_confusion_matrix(
            args.out / PLOT_FILE,
            np.asarray(metrics["confusion_matrix"]),
            estimator.classes_,
            title=f"Confusion matrix, {data.name} (accuracy {metrics['accuracy']:.3f})",
        )
        document = {"model": str(args.model), "data": str(args.data), **metrics}
        document["run"] = _report.run_record(args.argv, started, _report.now())
        write_json(args.out / METRICS_FILE, document)
        _report.write_report(args.out, document, title=f"softmaxkit evaluate: {data.name}", plots=(PLOT_FILE,))
        print(f"\nwrote {args.out / METRICS_FILE}, {args.out / PLOT_FILE} and {args.out / _report.REPORT_FILE}")
    return 0
