"""Out-of-core data sources: a file (or arrays) read batch by batch under a memory budget in bytes.

Every source yields :class:`Batch` ``(X, y, sample_weight)`` tuples, a new pass each time it is
iterated, each batch at most ``max_bytes`` bytes; the protocol is :class:`Source`'s. The readers:

========================= ============================================= ===============================
class                     reads                                         ``X``
========================= ============================================= ===============================
:class:`CsvSource`        CSV/TSV (optionally compressed), through      dense, float64 or float32
                          pyarrow's streaming reader
:class:`ParquetSource`    a Parquet file or a folder of them            dense
                          (pyarrow.dataset)
:class:`SvmlightSource`   svmlight/LIBSVM text (optionally .gz)         ``scipy.sparse.csr_matrix``
:class:`ArraySource`      arrays, ``np.memmap``, ``.npy`` files         dense or sparse
========================= ============================================= ===============================

:func:`open_source` picks the class by suffix; :func:`cache_source` writes the parsed rows to an
on-disk ``np.memmap`` cache for fast later passes; :func:`summarize`, :func:`collect_classes` and
:func:`feature_moments` make the streaming passes an estimator needs first (labels; means and
variances by Chan's parallel update, :class:`RunningMoments`).

Examples
--------
>>> import numpy as np
>>> from softmaxkit.sources import ArraySource, summarize
>>> X = np.arange(20.0).reshape(10, 2)
>>> source = ArraySource(X, np.arange(10) % 3, max_bytes=4 * 24)
>>> [len(y) for _, y, _ in source]
[4, 4, 2]
>>> summary = summarize(source)
>>> summary.classes.tolist(), summary.moments.mean_.tolist()
([0, 1, 2], [9.0, 10.0])
"""

from softmaxkit._sources._arrays import ArraySource
from softmaxkit._sources._base import DEFAULT_MAX_BYTES, Batch, Source, batch_nbytes
from softmaxkit._sources._cache import CachedSource, cache_source
from softmaxkit._sources._columns import ColumnPlan, plan_columns, resolve_target
from softmaxkit._sources._csv import CsvSource
from softmaxkit._sources._errors import DataError
from softmaxkit._sources._open import open_source
from softmaxkit._sources._parquet import ParquetSource
from softmaxkit._sources._statistics import (
    LabelCounts,
    RunningMoments,
    SourceSummary,
    collect_classes,
    feature_moments,
    summarize,
)
from softmaxkit._sources._svmlight import SvmlightSource

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ArraySource",
    "Batch",
    "CachedSource",
    "ColumnPlan",
    "CsvSource",
    "DataError",
    "LabelCounts",
    "ParquetSource",
    "RunningMoments",
    "Source",
    "SourceSummary",
    "SvmlightSource",
    "batch_nbytes",
    "cache_source",
    "collect_classes",
    "feature_moments",
    "open_source",
    "plan_columns",
    "resolve_target",
    "summarize",
]
