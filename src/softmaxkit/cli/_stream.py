"""Files larger than memory on the command line: the memory budget, when to stream, and sources that do the rest.

``train`` and ``evaluate`` read a csv, tsv, parquet or svmlight file whole when it is small and
stream it through :mod:`softmaxkit.sources` when its in-memory form would pass ``--max-memory``
(default :data:`DEFAULT_MAX_MEMORY`), or always with ``--stream`` (and for a folder of Parquet files). The budget rule
(:func:`should_stream`): reading a file whole takes about :data:`IN_MEMORY_FACTOR` times its size on
disk (measured: a 433 MB CSV of 1,000,000 x 50 floats peaked at 1.74 GB), sixteen times for a
compressed one. A streamed run holds one batch of :func:`batch_bytes` at a time, a fraction of the
budget, because each batch is held in a few forms at once (the reader's Arrow columns, the batch
itself, its standardised copy, the loss's temporaries); the interpreter and its libraries (about
200 MB) come on top.

The wrappers here are sources too (:class:`softmaxkit.sources.Source`): :class:`SplitSource`
(a seeded, reproducible share of the rows, for ``--test-size``), :class:`StandardizedSource`
(``(x - mean) / scale`` batch by batch) and :class:`ProgressSource` (a progress bar per pass,
rows/s and, once the rows are counted, an ETA).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from softmaxkit._progress import progress
from softmaxkit._sources._base import Batch, Source
from softmaxkit.cli._common import CLIError

DEFAULT_MAX_MEMORY = 2 << 30  # 2 GiB
IN_MEMORY_FACTOR = 4  # the in-memory reader's peak over the file's size (1.74 GB for a 433 MB CSV)
COMPRESSED_FACTOR = 16
BATCH_SHARE = 8  # one batch is this share of the budget (the forms it is held in at once, with room to spare)
STREAMABLE = {"csv", "tsv", "parquet", "svmlight"}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20}
_UNITS.update({"g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40})


def memory_size(text: str) -> int:
    """An argparse ``type``: a number of bytes, with an optional unit (``512MiB``, ``2GB``, ``1e9``).

    >>> memory_size("512MiB"), memory_size("2 GB"), memory_size("3e9")
    (536870912, 2000000000, 3000000000)
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"must be a size in bytes such as 512MiB or 2GB, got {text!r}")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1 << 20:
        raise argparse.ArgumentTypeError(f"must be at least 1MiB, got {text!r}")
    return value


def add_stream_options(parser: argparse.ArgumentParser, *, cache: bool) -> None:
    """``--max-memory``, ``--stream`` (and for ``train`` ``--cache``)."""
    group = parser.add_argument_group("files larger than memory")
    group.add_argument(
        "--max-memory",
        type=memory_size,
        default=DEFAULT_MAX_MEMORY,
        metavar="SIZE",
        help="memory budget for the data, e.g. 512MiB or 8GB; a csv/tsv/parquet/svmlight file whose in-memory "
        f"form would exceed it is streamed in batches (default {DEFAULT_MAX_MEMORY >> 30}GiB)",
    )
    group.add_argument("--stream", action="store_true", help="stream the data file whatever its size")
    if cache:
        group.add_argument(
            "--cache",
            action="store_true",
            help="when streaming, parse the training rows once into a float32 cache in the temporary folder, "
            "so that each pass of the solver reads raw numbers instead of text (float32-rounded features)",
        )


def data_format(path: str, fmt: str | None) -> str | None:
    """The file's format (``--format``, else its suffix), ``None`` when it cannot be told."""
    if fmt is not None:
        return fmt
    from softmaxkit._sources._errors import DataError
    from softmaxkit._sources._open import source_kind

    try:
        return source_kind(Path(path))
    except (DataError, OSError):
        return None


def should_stream(path: str, args: argparse.Namespace) -> bool:
    """Whether to stream ``path``: ``--stream``, or an in-memory form past ``--max-memory`` (module docstring)."""
    kind = data_format(path, args.fmt)
    if kind not in STREAMABLE:
        return False
    target = Path(path)
    if args.stream or target.is_dir():  # (a folder of Parquet files is read only as a source)
        return True
    files = [p for p in target.rglob("*") if p.is_file()] if target.is_dir() else [target]
    size = sum(p.stat().st_size for p in files if p.exists())
    factor = COMPRESSED_FACTOR if target.suffix.lower() in (".gz", ".bz2", ".xz") else IN_MEMORY_FACTOR
    return size * factor > args.max_memory


def batch_bytes(max_memory: int) -> int:
    """The bytes of one batch for a budget of ``max_memory`` (see :data:`BATCH_SHARE`)."""
    return max(1 << 20, max_memory // BATCH_SHARE)


def open_data(path: str, args: argparse.Namespace, *, target, features=None) -> Source:
    """The source of ``path`` with the command's reading options (``--format``, ``--no-header``)."""
    from softmaxkit.sources import CsvSource, ParquetSource, SvmlightSource

    kind = data_format(path, args.fmt)
    budget = batch_bytes(args.max_memory)
    if kind == "svmlight":
        return SvmlightSource(path, max_bytes=budget, **({"n_features": features} if isinstance(features, int) else {}))
    options = {"target": target, "max_bytes": budget}
    if features is not None and not isinstance(features, int):
        options["features"] = list(features)
    if kind == "parquet":
        return ParquetSource(path, **options)
    return CsvSource(path, header=args.header, delimiter="\t" if kind == "tsv" else ",", **options)


class _Wrapper(Source):
    """A source over another one (its features, names, rows and budget)."""

    def __init__(self, inner: Source):
        self.inner = inner
        self.name = inner.name
        self.dtype = inner.dtype
        self.max_bytes = inner.max_bytes
        self.sparse = inner.sparse

    @property
    def n_features(self) -> int:
        return self.inner.n_features

    @property
    def feature_names(self):
        return self.inner.feature_names

    @property
    def n_rows(self):
        return self.inner.n_rows

    @property
    def has_target(self) -> bool:
        return self.inner.has_target

    @property
    def has_weights(self) -> bool:
        return self.inner.has_weights


class SplitSource(_Wrapper):
    """The rows of ``inner`` drawn for one side of a split: each row is a test row with probability ``fraction``.

    The draw of batch ``k`` is seeded by ``(seed, k)``, so every pass (whose batches are the same)
    selects the same rows, and the two sides are complements.
    """

    def __init__(self, inner: Source, *, fraction: float, seed: int, test: bool):
        super().__init__(inner)
        self.fraction, self.seed, self.test = float(fraction), int(seed), bool(test)

    @property
    def n_rows(self):
        return None

    def iter_batches(self) -> Iterator[Batch]:
        for k, (X, y, w) in enumerate(self.inner.iter_batches()):
            chosen = np.random.default_rng([self.seed, k]).random(X.shape[0]) < self.fraction
            rows = np.flatnonzero(chosen if self.test else ~chosen)
            if len(rows):
                yield Batch(X[rows], None if y is None else y[rows], None if w is None else w[rows])


class StandardizedSource(_Wrapper):
    """The batches of ``inner`` with each feature standardised, ``(x - mean) / scale`` (float64)."""

    def __init__(self, inner: Source, mean: np.ndarray, scale: np.ndarray):
        super().__init__(inner)
        self.dtype = np.dtype(np.float64)
        self.mean, self.scale = mean, scale

    def iter_batches(self) -> Iterator[Batch]:
        for X, y, w in self.inner.iter_batches():
            Z = np.array(X, dtype=np.float64)  # one copy, standardised in place (a batch held twice, not thrice)
            Z -= self.mean
            Z /= self.scale
            yield Batch(Z, y, w)


class ProgressSource(_Wrapper):
    """``inner`` with a progress bar per pass (rows/s; an ETA once a pass has counted the rows)."""

    def __init__(self, inner: Source, *, enabled: bool, what: str = "pass"):
        super().__init__(inner)
        self.enabled, self.what = enabled, what
        self.passes = 0
        self._rows = inner.n_rows

    def iter_batches(self) -> Iterator[Batch]:
        self.passes += 1
        bar = progress(
            total=self._rows,
            desc=f"{self.what} {self.passes} over {self.name}",
            unit="rows",
            enabled=self.enabled,
            unit_scale=True,
            summary=False,
        )
        rows, failed = 0, True
        try:
            for batch in self.inner.iter_batches():
                rows += batch.X.shape[0]
                bar.update(batch.X.shape[0])
                yield batch
            failed = False
        finally:
            bar.close(failed=failed)
        self._rows = rows


def streamed_scan(source: Source, *, standardize: bool):
    """One pass: the rows, the label counts and each feature's largest magnitude (for the standardisation)."""
    from softmaxkit.sources import LabelCounts

    labels = LabelCounts()
    largest = np.zeros(source.n_features) if standardize else None
    rows = 0
    for X, y, _ in source.iter_batches():
        if X.shape[0] == 0:
            continue
        rows += X.shape[0]
        if y is not None:
            labels.update(y)
        if largest is not None:
            X = X.toarray() if hasattr(X, "toarray") else X
            np.maximum(largest, np.max(np.abs(X), axis=0), out=largest)
    if rows == 0:
        raise CLIError(f"{source.name} has no data rows")
    return rows, labels, largest


def streamed_moments(source: Source, largest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The standardisation of :func:`softmaxkit.cli._train.standardization`, streamed: one pass of moments.

    The columns are divided by their largest magnitude (from :func:`streamed_scan`) so that the
    moments of features of any size stay finite, as in memory. (The same two passes as
    :func:`softmaxkit.cli._train.streamed_standardization`, the first one also counting rows and labels.)
    """
    from softmaxkit.cli._train import _column_sizes, _scales
    from softmaxkit.sources import RunningMoments

    size = _column_sizes(largest)
    moments = RunningMoments(len(size))
    for X, _, _ in source.iter_batches():
        X = X.toarray() if hasattr(X, "toarray") else X
        moments.update(np.asarray(X, dtype=np.float64) / size)
    mean = moments.mean_ * size
    return mean, _scales(np.sqrt(moments.var_) * size, mean)


def streamed_metrics(estimator, source: Source) -> dict:
    """:func:`softmaxkit.cli._common.classification_metrics` over a source, batch by batch."""
    from softmaxkit.cli._common import METRICS_CHUNK_BYTES, MetricsAccumulator, class_indices

    classes = np.asarray(estimator.classes_)
    scores = MetricsAccumulator(len(classes))
    rows = max(1, METRICS_CHUNK_BYTES // (8 * len(classes)))
    for X, y, _ in source.iter_batches():
        index = class_indices(classes, y, source=source.name)
        for start in range(0, X.shape[0], rows):
            log_proba = np.asarray(estimator.predict_log_proba(X[start : start + rows]), dtype=np.float64)
            scores.add(log_proba, index[start : start + rows])
    if scores.n == 0:
        raise CLIError(f"{source.name} has no data rows to score")
    return scores.result(classes)


def labelled_source(path: str, args: argparse.Namespace, layout) -> Source:
    """The source of a labelled file to score a model with: ``read_labelled``'s column rules, streamed.

    The target: ``--target``, else the model's target column when the file has it, else the last
    column. The features: the model's feature names when the file has them all (in the model's
    order), else every other column by position, which must be as many as the model's.
    """
    from softmaxkit.cli._batches import match_by_name, no_shared_names
    from softmaxkit.cli._read import table_columns

    if data_format(path, args.fmt) == "svmlight":
        return open_data(path, args, target=None, features=layout.n_features)
    columns = table_columns(path, header=args.header, fmt=args.fmt)
    target = args.target
    if target is None:
        target = layout.target if layout.target is not None and layout.target in columns else -1
    features = None
    if args.header and layout.feature_names is not None:
        features = match_by_name(columns, layout, source=Path(path).name)
    source = open_data(path, args, target=target, features=features)
    if source.n_features != layout.n_features:
        raise CLIError(
            f"{source.name} has {source.n_features} feature columns besides the target, "
            f"the model expects {layout.n_features}"
        )
    if features is None and args.header and layout.feature_names is not None:
        raise CLIError(str(no_shared_names(columns, layout, source=source.name)))
    return source
