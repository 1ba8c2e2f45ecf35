"""Data files for the command line: which format a file is, how to open it, and the error type.

Formats, chosen by the file's suffix (a trailing ``.gz``, ``.bz2``, ``.xz`` or ``.zip`` is
looked through) or named explicitly:

========== =========================================== =======================================
format     suffixes                                    notes
========== =========================================== =======================================
csv        ``.csv``, ``.data``, ``.txt``               header row by default; ``.data`` and
                                                       ``.txt`` sniff the delimiter
tsv        ``.tsv``, ``.tab``                          tab-separated, otherwise as csv
parquet    ``.parquet``, ``.pq``                       read with pyarrow
npz        ``.npz``                                    arrays ``X`` (n, d) and ``y`` (n,)
svmlight   ``.svm``, ``.svmlight``, ``.libsvm``        scikit-learn's loader; densified
========== =========================================== =======================================

Reading whole files is :mod:`softmaxkit.cli._read`, reading in batches for prediction is
:mod:`softmaxkit.cli._batches`, the datasets shipped with scikit-learn are
:mod:`softmaxkit.cli._bundled`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

FORMATS = ("csv", "tsv", "parquet", "npz", "svmlight")

_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".data": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
    ".svm": "svmlight",
    ".svmlight": "svmlight",
    ".libsvm": "svmlight",
}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zip")
_SNIFFED_SUFFIXES = (".data", ".txt")


class DataError(ValueError):
    """A problem with a user's data file, described in one line."""


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """The format of ``path`` (one of :data:`FORMATS`), from ``fmt`` or the file's suffix.

    Examples
    --------
    >>> detect_format("train.csv.gz"), detect_format("a.pq"), detect_format("x.bin", "npz")
    ('csv', 'parquet', 'npz')
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    suffix = data_suffix(Path(path))
    if suffix not in _SUFFIX_FORMATS:
        raise DataError(
            f"cannot tell the format of {path} from its suffix {suffix or '(none)'!r}; "
            f"name it with --format ({', '.join(FORMATS)})"
        )
    return _SUFFIX_FORMATS[suffix]


def data_suffix(path: Path) -> str:
    """The lower-case suffix that names the format, a compression suffix looked through (``''`` if none)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def open_text(path: Path):
    """``path`` opened for reading text, decompressed by its suffix (``.gz``, ``.bz2``, ``.xz``)."""
    suffix = path.suffix.lower()
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix, open)
    return opener(path, "rt", newline="")


def field_separator(path: Path, fmt: str) -> str:
    """The field separator: tab for tsv, comma for .csv, sniffed from the first line otherwise."""
    if fmt == "tsv":
        return "\t"
    if data_suffix(path) not in _SNIFFED_SUFFIXES or path.suffix.lower() == ".zip":
        return ","
    with open_text(path) as handle:
        line = handle.readline()
    for sep in (",", "\t", ";"):
        if sep in line:
            return sep
    return r"\s+"


def csv_options(path: Path, fmt: str, *, header: bool) -> dict:
    """The :func:`pandas.read_csv` options of a csv/tsv file, the same for whole files and batches.

    ``index_col=False``: pandas would otherwise take the first column for the index when every row
    has one more field than the header, shifting every value one column over. Use it with
    :func:`strict_csv`, which turns the warning pandas then gives into an error.
    """
    return dict(sep=field_separator(path, fmt), header=0 if header else None, skipinitialspace=True, index_col=False)


@contextmanager
def reading(path: Path, fmt: str) -> Iterator[None]:
    """Reading ``path`` as ``fmt``: the readers' and the OS's errors become one-line :class:`DataError`."""
    try:
        yield
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as error:  # UnicodeDecodeError and pyarrow.ArrowInvalid included
        raise DataError(f"cannot read {path.name} as {fmt}: {one_line(error)}") from None
    except Exception as error:  # pandas' and pyarrow's parser errors have no common base beyond Exception
        if type(error).__module__.split(".")[0] in ("pandas", "pyarrow"):
            raise DataError(f"cannot read {path.name} as {fmt}: {one_line(error)}") from None
        raise


@contextmanager
def strict_csv(path: Path, fmt: str) -> Iterator[None]:
    """:func:`reading` a csv/tsv file, where also a row with more fields than the header is a :class:`DataError`.

    (A trailing delimiter at the end of every row is no extra field: pandas drops it.)
    """
    from pandas.errors import ParserWarning

    with reading(path, fmt):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", ParserWarning)
                yield
        except ParserWarning:
            raise DataError(
                f"cannot read {path.name} as {fmt}: its rows have more fields than its header row has names "
                "(check the delimiter and the header)"
            ) from None


def check_exists(path: Path) -> None:
    """A :class:`DataError` unless ``path`` is an existing file."""
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if path.is_dir():
        raise DataError(f"data file {path} is a directory, not a file")


def short_list(names: Sequence[object], limit: int = 8) -> str:
    """The first ``limit`` names, quoted, for a message (``'a', 'b' (and 3 more)``)."""
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def one_line(error: BaseException) -> str:
    """A library's error message on one line of at most 200 characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."
