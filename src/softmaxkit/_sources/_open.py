"""One entry point: the source class for a path, chosen by its suffix (a compression suffix looked through)."""

from __future__ import annotations

from pathlib import Path

from softmaxkit._sources._base import Source
from softmaxkit._sources._csv import CsvSource
from softmaxkit._sources._errors import DataError
from softmaxkit._sources._parquet import ParquetSource
from softmaxkit._sources._svmlight import SvmlightSource

_COMPRESSIONS = (".gz", ".bz2", ".xz")
_KINDS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".svm": "svmlight",
    ".svmlight": "svmlight",
    ".libsvm": "svmlight",
}


def source_kind(path: Path) -> str:
    """``"csv"``, ``"tsv"``, ``"parquet"`` or ``"svmlight"`` from the suffix (a folder is Parquet).

    >>> source_kind(Path("train.csv.gz")), source_kind(Path("a.pq")), source_kind(Path("news.libsvm"))
    ('csv', 'parquet', 'svmlight')
    """
    if path.is_dir():
        return "parquet"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix not in _KINDS:
        raise DataError(
            f"cannot tell the format of {path} from its suffix {suffix or '(none)'!r}; use the source class of its "
            "format (CsvSource with delimiter=, ParquetSource, SvmlightSource, ArraySource)"
        )
    return _KINDS[suffix]


def open_source(path, **options) -> Source:
    """The source of a data file or folder, by its suffix: ``CsvSource`` (``.csv``; ``.tsv``/``.tab`` with a
    tab delimiter), ``ParquetSource`` (``.parquet``, ``.pq``, a folder) or ``SvmlightSource`` (``.svm``,
    ``.svmlight``, ``.libsvm``), each optionally ``.gz``/``.bz2``/``.xz`` but Parquet.

    ``options`` go to the class (``target=``, ``max_bytes=``, ...).
    """
    path = Path(path)
    kind = source_kind(path)
    if kind == "parquet":
        return ParquetSource(path, **options)
    if kind == "svmlight":
        return SvmlightSource(path, **options)
    if kind == "tsv":
        options.setdefault("delimiter", "\t")
    return CsvSource(path, **options)
