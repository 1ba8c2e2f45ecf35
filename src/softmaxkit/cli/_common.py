"""Helpers shared by the subcommands: user errors, data options, output files, metrics, tables."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from softmaxkit._atomic import atomic_write, is_temporary, remove_stale_temporaries
from softmaxkit.cli._batches import FeatureLayout, match_by_name, no_shared_names
from softmaxkit.cli._formats import DataError, one_line, short_list
from softmaxkit.cli._read import Dataset, read_dataset, table_columns

MODEL_FILE = "model.npz"
METRICS_FILE = "metrics.json"


class CLIError(Exception):
    """A user's mistake, reported as one line on stderr with exit status 1 (no traceback)."""


class UsageError(CLIError):
    """Command-line arguments that do not go together (or a value out of range): argparse's usage error, exit 2.

    For the conflicts argparse cannot see by itself, found once the run has started (an estimator
    option its own parameter check refuses, ``--target`` with a bundled dataset).
    """


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the examples in the epilog as written, and show defaults."""


# --------------------------------------------------------------------------------------------
# data options


def add_data_options(parser: argparse.ArgumentParser, *, target: str | None) -> None:
    """``--target`` (unless ``target`` is None; it names the default), ``--no-header``, ``--format``."""
    group = parser.add_argument_group("reading the data")
    if target is not None:
        group.add_argument(
            "--target",
            metavar="COL",
            help=f"the label column, by name or 0-based position (negative counts from the end); default: {target}",
        )
    group.add_argument(
        "--no-header",
        dest="header",
        action="store_false",
        help="the csv/tsv file has no header row; columns are named by 0-based position",
    )
    group.add_argument(
        "--format",
        dest="fmt",
        choices=("csv", "tsv", "parquet", "npz", "svmlight"),
        help="the file format; default: from the suffix (.csv .tsv .parquet .npz .svm, .gz allowed)",
    )


def read_labelled(path: str, args: argparse.Namespace, layout: FeatureLayout) -> Dataset:
    """Read a labelled file to score a model with (``layout``), with the options of :func:`add_data_options`.

    Without ``--target``, the model's target column when the file has it, else the last column,
    unless the file's columns are just the model's features: then it has no target, and saying so
    beats blaming the feature that the last column would have taken away.
    """
    target = getattr(args, "target", None)
    if target is None:
        columns = _columns(path, args)
        if layout.target is not None and layout.target in columns:
            target = layout.target
        elif columns and _only_features(columns, layout, header=args.header):
            expected = f"the model's target column {layout.target!r}" if layout.target else "a target column"
            raise CLIError(
                f"{Path(path).name} has no target column: its {len(columns)} columns are the model's features, "
                f"without {expected}; add the labels as a column (and name it with --target if it is not the last)"
            )
    return read_dataset(
        path,
        target=target,
        header=args.header,
        fmt=args.fmt,
        n_features=layout.n_features,
        task="evaluating",
        show_progress=not getattr(args, "quiet", False),
    )


def _only_features(columns: Sequence[str], layout: FeatureLayout, *, header: bool) -> bool:
    if header and layout.feature_names is not None:
        return set(columns) <= set(layout.feature_names)
    return len(columns) == layout.n_features


def _columns(path: str, args: argparse.Namespace) -> list[str]:
    """The column names of a table (nothing for npz and svmlight, which keep labels apart)."""
    return table_columns(path, header=args.header, fmt=args.fmt)


def align_features(data: Dataset, layout: FeatureLayout) -> np.ndarray:
    """``data.X`` with its columns in the model's order (by name when both sides have names)."""
    X = data.X
    by_name = layout.feature_names is not None and data.feature_names is not None
    if by_name:
        names = list(data.feature_names)
        try:
            matched = match_by_name(names, layout, source=data.name)
        except DataError as error:
            raise CLIError(str(error)) from None
        if matched is not None:
            return X[:, [names.index(n) for n in matched]]
    if X.shape[1] != layout.n_features:
        raise CLIError(
            f"{data.name} has {X.shape[1]} feature columns besides the target, the model expects {layout.n_features}"
        )
    if by_name:
        raise CLIError(str(no_shared_names(data.feature_names, layout, source=data.name)))
    if data.feature_names is None and data.target_index is not None:  # a table read with --no-header
        warn_positional_match(layout, header=False, fmt="csv", data=data.name)
    return X


def warn_positional_match(layout: FeatureLayout, *, header: bool, fmt: str | None, data: str) -> None:
    """A warning on stderr when a model trained on named columns reads a table without a header.

    Its columns are then matched to the model's features by position, as ``--no-header`` asks; the
    warning says so, since a file of another layout with as many columns would be labelled silently.
    """
    if header or layout.feature_names is None:
        return
    from softmaxkit.cli._formats import detect_format

    if detect_format(Path(data), fmt) not in ("csv", "tsv"):
        return
    print(
        f"warning: {Path(data).name} is read without a header row, so its columns are taken for the model's "
        f"{layout.n_features} named features ({short_list(layout.feature_names, 3)}) by position; check that "
        "they are in the order the model was trained on",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------------------------
# models


def load_model(path: str):
    """Load a model saved by ``softmaxkit train``; returns ``(estimator, metadata)``.

    Anything that is not such a file (missing, unreadable, foreign, truncated, corrupt, hostile)
    is a :class:`CLIError` with a one-line message.
    """
    from softmaxkit._model_io import ModelFileError
    from softmaxkit.linear_model import SoftmaxRegression

    model_path = Path(path)
    if not model_path.exists():
        raise CLIError(f"model file {path} does not exist")
    if model_path.is_dir():
        candidate = model_path / MODEL_FILE
        if not candidate.exists():
            raise CLIError(f"{path} is a directory without a {MODEL_FILE}")
        model_path = candidate
    try:
        estimator = SoftmaxRegression.load(model_path)
        metadata = estimator.saved_metadata_
    except (ModelFileError, OSError) as error:  # their messages name the file and say what is wrong
        raise CLIError(str(error)) from None
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        # The estimator's own checks of the record's values: every one of them is about the file,
        # the only input of load.
        reason = one_line(error)
        if "model file" not in reason:
            reason = f"{path} is not a valid softmaxkit model file ({reason})"
        raise CLIError(reason) from None
    if not isinstance(metadata, dict):
        metadata = {}
    return estimator, metadata


def model_layout(estimator, metadata: dict) -> FeatureLayout:
    """What the model expects of a data file, from its saved metadata."""
    names = metadata.get("feature_names")
    return FeatureLayout(
        n_features=int(estimator.n_features_in_),
        feature_names=tuple(names) if names is not None else None,
        target=metadata.get("target"),
        target_index=metadata.get("target_index"),
    )


# --------------------------------------------------------------------------------------------
# metrics


def class_indices(classes: np.ndarray, y: np.ndarray, *, source: str) -> np.ndarray:
    """The position of each label of ``y`` in the model's ``classes``; unknown labels are an error."""
    classes = np.asarray(classes)
    y = np.asarray(y)
    if classes.dtype.kind != y.dtype.kind and (classes.dtype.kind in "US" or y.dtype.kind in "US"):
        classes, y = classes.astype(str), y.astype(str)
    order = np.argsort(classes, kind="stable")
    position = np.searchsorted(classes[order], y)
    position = np.clip(position, 0, len(classes) - 1)
    index = order[position]
    unknown = classes[index] != y
    if unknown.any():
        labels = np.unique(y[unknown])
        shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in labels[:8])
        more = f" (and {len(labels) - 8} more)" if len(labels) > 8 else ""
        raise CLIError(f"{source} has labels the model never saw in training: {shown}{more}")
    return index


# Rows scored at once: the (rows x classes) float64 log-probabilities stay under this many bytes,
# so evaluating 10 million rows of a 10,000-class model needs no N x C matrix (issue 12, item 4).
METRICS_CHUNK_BYTES = 1 << 26


def classification_metrics(estimator, X, y: np.ndarray, *, source: str, max_bytes: int = METRICS_CHUNK_BYTES) -> dict:
    """Accuracy, log-loss, per-class precision/recall/F1 and the confusion matrix of ``X, y``.

    The log-loss is the mean over samples of ``-log p(y_i | x_i)`` (natural log, no penalty).
    Rows are scored in chunks of at most ``max_bytes`` of log-probabilities; the scores are those
    of :func:`sklearn.metrics.precision_recall_fscore_support` (``zero_division=0``), computed
    from the confusion matrix.
    """
    classes = np.asarray(estimator.classes_)
    index = class_indices(classes, y, source=source)
    scores = MetricsAccumulator(len(classes))
    rows = max(1, max_bytes // (8 * len(classes)))
    for start in range(0, X.shape[0], rows):
        log_proba = np.asarray(estimator.predict_log_proba(X[start : start + rows]), dtype=np.float64)
        scores.add(log_proba, index[start : start + rows])
    return scores.result(classes)


class MetricsAccumulator:
    """The confusion matrix and the summed log-loss of chunks of rows, and the metrics they give.

    >>> scores = MetricsAccumulator(2)
    >>> scores.add(np.log([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
    >>> scores.add(np.log([[0.3, 0.7]]), np.array([1]))
    >>> metrics = scores.result(np.array(["a", "b"]))
    >>> metrics["confusion_matrix"], round(metrics["accuracy"], 4), round(metrics["log_loss"], 4)
    ([[1, 1], [0, 1]], 0.6667, 0.6905)
    """

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        self.log_loss_sum = 0.0
        self.n = 0

    def add(self, log_proba: np.ndarray, index: np.ndarray) -> None:
        """Count a chunk: its log-probabilities (rows x classes) and the class index of each row."""
        predicted = np.argmax(log_proba, axis=1)
        C = self.n_classes
        self.confusion += np.bincount(index * C + predicted, minlength=C * C).reshape(C, C)
        self.log_loss_sum -= float(np.sum(log_proba[np.arange(len(index)), index]))
        self.n += len(index)

    def result(self, classes: np.ndarray) -> dict:
        cm = self.confusion
        tp = np.diag(cm).astype(np.float64)
        predicted, support = cm.sum(axis=0), cm.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = np.where(support > 0, tp / support, 0.0)
            denominator = predicted + support  # 2 tp + fp + fn
            f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
        return {
            "n_samples": int(self.n),
            "accuracy": float(tp.sum() / self.n) if self.n else float("nan"),
            "log_loss": self.log_loss_sum / self.n if self.n else float("nan"),
            "per_class": [
                {"class": _jsonable(c), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for c, p, r, f, s in zip(classes, precision, recall, f1, support)
            ],
            "confusion_matrix": cm.tolist(),
        }


def _jsonable(value):
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------------------------
# files


def check_out_dir(path: Path, *, overwrite: bool, ours: Sequence[str]) -> None:
    """Refuse an output folder that already holds files, unless ``overwrite``.

    With ``overwrite`` only the files this run writes (``ours``) are replaced; anything else in
    the folder is left alone. Temporary files of the atomic writer are no earlier run: those of
    interrupted runs are removed (with a note), those of running ones ignored.
    """
    if path.exists() and not path.is_dir():
        raise CLIError(f"--out {path} is a file, not a folder")
    if not path.exists():
        return
    clear_stale_temporaries(path)
    if overwrite:
        return
    existing = sorted(p.name for p in path.iterdir() if not is_temporary(p.name))
    if existing:
        shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise CLIError(
            f"--out {path} already holds an earlier run ({shown}); choose another folder or pass --overwrite"
        )


def clear_stale_temporaries(folder: Path, *, target: str | None = None) -> None:
    """Remove the temporary files that killed runs left in ``folder`` (for ``target`` only), with a note on stderr.

    See :mod:`softmaxkit._atomic` for how a temporary file is known to be stale.
    """
    for temporary in remove_stale_temporaries(folder, target=target):
        print(
            f"note: removed {temporary.path}, the temporary file of an interrupted run "
            f"(process {temporary.pid} no longer exists)",
            file=sys.stderr,
        )


def write_json(path: Path, document: dict) -> None:
    """Write ``document`` as indented JSON, atomically (see :mod:`softmaxkit._atomic`).

    A non-finite number (an infinite log-loss: a true class given probability 0) is written as
    ``null``: JSON has no infinity, and ``Infinity`` is not JSON that other tools read.
    """
    text = json.dumps(_finite_or_null(document), indent=2, allow_nan=False) + "\n"
    with atomic_write(path) as stream:
        stream.write(text.encode())


def _finite_or_null(value):
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# printing


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, left: Sequence[int] = (0,)) -> str:
    """A plain-text table; the columns ``left`` are left-aligned, the others right-aligned.

    >>> print(format_table(["set", "accuracy"], [["train", "0.9900"], ["test", "0.9750"]]))
    set    accuracy
    train    0.9900
    test     0.9750
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def per_class_table(metrics: dict) -> str:
    rows = [
        [str(c["class"]), f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
        for c in metrics["per_class"]
    ]
    return format_table(["class", "precision", "recall", "f1", "support"], rows)


def confusion_table(metrics: dict) -> str:
    names = [str(c["class"]) for c in metrics["per_class"]]
    rows = [[f"true {n}"] + list(r) for n, r in zip(names, metrics["confusion_matrix"])]
    return format_table(["(rows: true, columns: predicted)"] + names, rows)
