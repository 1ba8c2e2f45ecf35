"""Model files: an ``.npz`` archive of plain arrays plus one JSON metadata record, never a pickle.

Format (version 1)
------------------
A ZIP archive as written by :func:`numpy.savez` holding

* ``__softmaxkit_metadata__``: a 1-D ``uint8`` array, the UTF-8 bytes of a JSON object with at
  least ``"format": "softmaxkit-model"``, ``"format_version": 1``, ``"estimator"`` (the class
  name), ``"softmaxkit_version"`` and ``"arrays"`` (the names of the other members); files written
  since softmaxkit 0.2 also record ``"array_specs"``, each array's ``{"dtype": descr, "shape": [...]}``;
* one member per array, each a numeric (bool, integer, float, complex) or fixed-width-string array
  (never ``object`` dtype), read back with ``allow_pickle=False``.

Writing is atomic (:func:`softmaxkit._atomic.atomic_write`): the archive goes to a temporary
file in the target's directory, is flushed to disk, then moved into place (so a crash leaves
either the old file or the new one), with the umask's permissions. An existing file is never
replaced unless ``overwrite=True``, not even one that appears while the archive is written.

Reading treats the file as untrusted input
------------------------------------------
Every way a file can be bad (truncated, corrupt, foreign, of a newer format version, or built to
do harm) raises :class:`ModelFileError`, a :class:`ValueError`; a file that cannot be opened at
all (missing, a folder, no permission) raises the :class:`OSError` that says so. Reading is
bounded: only the metadata record and the arrays it lists are read (other members are never
touched); each member's ``.npy`` header is parsed and its dtype, shape and byte count are checked
against the ZIP directory, the record's ``array_specs`` and a size budget *before* anything is
allocated; members must be stored or deflated (no encryption, no other compression), and the
bytes they expand to may not exceed :data:`MAX_EXPANSION` times the file's size plus
:data:`EXPANSION_ALLOWANCE`, so a deflate bomb is refused from its directory entry, before it is
inflated. ZIP's CRC-32 of every member read is checked. The estimator then checks the values.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from softmaxkit._atomic import atomic_write
from softmaxkit._version import __version__

__all__ = [
    "EXPANSION_ALLOWANCE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_EXPANSION",
    "ModelFileError",
    "load_model_file",
    "read_model_metadata",
    "save_model_file",
]

FORMAT_NAME = "softmaxkit-model"
FORMAT_VERSION = 1
_METADATA_KEY = "__softmaxkit_metadata__"
# Numbers, booleans and fixed-width strings: what np.load(allow_pickle=False) gives back as it was.
_DTYPE_KINDS = "biufcSU"

# The budget of a read: the members read may hold at most MAX_EXPANSION bytes per byte of the file,
# plus EXPANSION_ALLOWANCE. softmaxkit stores members uncompressed (ratio 1); deflated by hand
# (np.savez_compressed) a model's coefficients shrink by about 1.1x and its class-name and
# feature-name strings (UTF-32, zero-padded) by 5-20x, so 64 is far above any real model and far
# below deflate's limit of about 1032x; the allowance lets small files hold highly compressible
# names. A 0.6 MB deflate bomb that expands to 600 MB is thus refused from its directory entry.
MAX_EXPANSION = 64
EXPANSION_ALLOWANCE = 1 << 20
_CHUNK = 1 << 20  # members are read in pieces of this size into the array's own memory

# What zipfile, zlib and numpy's header parser raise on a damaged archive (a flipped bit in a ZIP
# header gives NotImplementedError for an unknown compression method or RuntimeError for the
# encryption flag; struct.error and OverflowError come from impossible sizes and offsets).
_DAMAGE = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    struct.error,
    OverflowError,
    ValueError,
    KeyError,
)


class ModelFileError(ValueError):
    """A model file that cannot be loaded: truncated, corrupt, foreign, of a newer format, or hostile.

    One type for every way the *content* of a file can be bad, so ``except ModelFileError`` is all a
    caller needs; a subclass of :class:`ValueError`, which loading raised before. A file that
    cannot be opened (missing, a folder, no read permission) raises an :class:`OSError` instead.
    """

    __module__ = "softmaxkit"  # where users import it from (and where tracebacks should send them)


# --------------------------------------------------------------------------------------------
# writing


def save_model_file(path, arrays: dict, metadata: dict, *, overwrite: bool = False) -> Path:
    """Write ``arrays`` and ``metadata`` to ``path`` atomically; refuse to replace a file unless ``overwrite``.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write; used exactly as given (no suffix is added; ``.npz`` is customary).
    arrays : dict of str to ndarray
        Numeric or string arrays (``object`` arrays are refused, as they would need pickle).
    metadata : dict
        JSON-serialisable; the format fields are added to it.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path must be a file, got the directory {str(path)!r}")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise _already_exists(path)
    clean = {}
    for name, array in arrays.items():
        if not isinstance(name, str) or name == _METADATA_KEY or not name.isidentifier():
            raise ValueError(f"array names must be identifiers other than {_METADATA_KEY!r}, got {name!r}")
        array = np.asarray(array)
        if not _plain_dtype(array.dtype):
            raise ValueError(f"array {name!r} must have a numeric or string dtype, got dtype {array.dtype}")
        clean[name] = array
    record = dict(metadata)
    record.update(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        softmaxkit_version=__version__,
        arrays=sorted(clean),
        array_specs={
            name: {"dtype": npy_format.dtype_to_descr(a.dtype), "shape": list(a.shape)} for name, a in clean.items()
        },
    )
    try:
        text = json.dumps(record, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"metadata must be JSON-serialisable (finite numbers, str keys), got an error: {error}"
        ) from None
    clean[_METADATA_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    try:
        with atomic_write(path, overwrite=overwrite) as handle:
            np.savez(handle, **clean)
    except FileExistsError:  # the name was taken while the archive was written
        raise _already_exists(path) from None
    return path


def _already_exists(path: Path) -> FileExistsError:
    return FileExistsError(f"model file {str(path)!r} already exists; pass overwrite=True to replace it")


def _plain_dtype(dtype: np.dtype) -> bool:
    """Numbers, booleans or fixed-width strings; no fields, no sub-arrays, no empty strings."""
    return dtype.kind in _DTYPE_KINDS and dtype.fields is None and dtype.subdtype is None and dtype.itemsize > 0


# --------------------------------------------------------------------------------------------
# reading


def _open(path) -> tuple[dict, dict]:
    """``(arrays, metadata)`` of the model file at ``path``, every check of the module docstring made."""
    path = Path(path)
    shown = repr(str(path))
    where = f"model file {shown}"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{where} does not exist") from None
    except OSError as error:
        raise type(error)(error.errno, f"cannot read {where}: {error.strerror}") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, f"{where} is a directory, not a file")
        raise ModelFileError(f"{shown} is not a softmaxkit model file (not a regular file)")
    with open(descriptor, "rb") as handle, _damage_reported(where):
        try:
            archive = zipfile.ZipFile(handle)
        except zipfile.BadZipFile:
            raise ModelFileError(
                f"{shown} is not a softmaxkit model file (not an .npz archive, or truncated)"
            ) from None
        with archive:
            return _Reader(archive, shown, size=os.fstat(descriptor).st_size).read()


@contextmanager
def _damage_reported(where: str) -> Iterator[None]:
    """What the ZIP, zlib, JSON and ``.npy`` parsers raise on a damaged file becomes a :class:`ModelFileError`."""
    try:
        yield
    except ModelFileError:
        raise
    except RecursionError:  # json: a record nested thousands deep
        raise ModelFileError(f"{where} has a corrupt metadata record (nested too deeply)") from None
    except _DAMAGE as error:
        raise ModelFileError(f"{where} is truncated or corrupt: {_one_line(error)}") from None
    except OSError as error:
        if error.errno != errno.EINVAL:  # a real read error (EIO, ...) stays one
            raise
        # A seek to an impossible offset of the open file: a damaged directory entry.
        raise ModelFileError(f"{where} is truncated or corrupt: {_one_line(error)}") from None


class _Reader:
    """One bounded read of an open archive: the record first, then the arrays it lists."""

    def __init__(self, archive: zipfile.ZipFile, shown: str, *, size: int):
        self.archive, self.shown, self.size = archive, shown, size
        self.budget = MAX_EXPANSION * size + EXPANSION_ALLOWANCE
        self.where = f"model file {shown}"

    def read(self) -> tuple[dict, dict]:
        names = set(self.archive.namelist())
        if f"{_METADATA_KEY}.npy" not in names:
            raise ModelFileError(f"{self.shown} is not a softmaxkit model file (no {_METADATA_KEY} record)")
        raw = self.member(_METADATA_KEY, None)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ModelFileError(
                f"{self.where} has a corrupt metadata record (an array of dtype {raw.dtype} and shape {raw.shape}, "
                "not the bytes of a JSON text)"
            )
        try:
            metadata = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelFileError(f"{self.where} has a corrupt metadata record: {error}") from None
        listed = self.check_record(metadata)
        missing = sorted(name for name in listed if f"{name}.npy" not in names)
        if missing:
            raise ModelFileError(f"{self.where} is incomplete: missing arrays {missing}")
        specs = self.check_specs(metadata, listed)
        arrays = {name: self.member(name, specs.get(name)) for name in listed}
        return arrays, metadata

    def check_record(self, metadata) -> list[str]:
        where = self.where
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
            found = metadata.get("format") if isinstance(metadata, dict) else None
            raise ModelFileError(f"{self.shown} is not a softmaxkit model file (format {_short(found)})")
        version = metadata.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ModelFileError(f"{where} has an invalid format_version {_short(version)}")
        if version > FORMAT_VERSION:
            raise ModelFileError(
                f"{where} has format version {version}, newer than this softmaxkit "
                f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade softmaxkit to load it"
            )
        listed = metadata.get("arrays")
        if (
            not isinstance(listed, list)
            or not all(isinstance(n, str) and n.isidentifier() and n != _METADATA_KEY for n in listed)
            or len(set(listed)) != len(listed)
        ):
            raise ModelFileError(f"{where} has a corrupt metadata record (its array list is not a list of names)")
        return listed

    def check_specs(self, metadata: dict, listed: list[str]) -> dict:
        where = self.where
        specs = metadata.get("array_specs", {})  # absent in files of earlier releases
        if not isinstance(specs, dict) or set(specs) != (set(listed) if "array_specs" in metadata else set()):
            raise ModelFileError(f"{where} has a corrupt metadata record (array_specs does not match the array list)")
        for name, spec in specs.items():
            if not (
                isinstance(spec, dict)
                and isinstance(spec.get("dtype"), str)
                and isinstance(spec.get("shape"), list)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in spec["shape"])
            ):
                raise ModelFileError(f"{where} has a corrupt metadata record (array_specs of {name!r}: {_short(spec)})")
        return specs

    def member(self, name: str, spec: dict | None) -> np.ndarray:
        """The array ``name``, its header checked against the directory, ``spec`` and the budget first."""
        where = f"{self.where}, array {name!r}"
        info = self.archive.getinfo(f"{name}.npy")
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{where} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFileError(
                f"{where} uses ZIP compression method {info.compress_type} (stored or deflated expected)"
            )
        if not 0 <= info.header_offset <= info.header_offset + info.compress_size <= self.size:
            raise ModelFileError(f"{where} lies outside the file (truncated or corrupt)")
        if info.file_size > self.budget:
            raise ModelFileError(
                f"{where} expands to {info.file_size} bytes, more than a file of this size may hold "
                f"({self.budget} bytes: {MAX_EXPANSION} x the file size + {EXPANSION_ALLOWANCE})"
            )
        self.budget -= info.file_size
        with self.archive.open(info) as stream:
            version = npy_format.read_magic(stream)
            if version == (1, 0):
                shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
            else:
                raise ModelFileError(f"{where} has .npy format version {version}, expected 1.0 or 2.0")
            if not _plain_dtype(dtype):
                raise ModelFileError(f"{where} has dtype {dtype}; model files hold numbers and strings only")
            descr = npy_format.dtype_to_descr(dtype)
            if spec is not None and (spec["dtype"] != descr or list(shape) != spec["shape"]):
                raise ModelFileError(
                    f"{where} has dtype {descr} and shape {list(shape)}, the metadata record says "
                    f"dtype {spec['dtype']} and shape {spec['shape']}"
                )
            if any(n < 0 for n in shape):
                raise ModelFileError(f"{where} declares the impossible shape {tuple(shape)}")
            count = math.prod(shape)
            n_bytes = count * dtype.itemsize
            if stream.tell() + n_bytes != info.file_size:
                raise ModelFileError(
                    f"{where} declares shape {tuple(shape)} of {descr} ({n_bytes} bytes) but its member "
                    f"holds {info.file_size - stream.tell()} bytes of data"
                )
            array = np.empty(count, dtype=dtype)  # bounded: n_bytes <= file_size <= the budget
            buffer = memoryview(array.view(np.uint8)) if n_bytes else memoryview(b"")
            done = 0
            while done < n_bytes:
                piece = stream.read(min(_CHUNK, n_bytes - done))
                if not piece:
                    raise ModelFileError(f"{where} is truncated")
                buffer[done : done + len(piece)] = piece
                done += len(piece)
            if stream.read(1):  # also the end of the member, where zipfile checks its CRC-32
                raise ModelFileError(f"{where} holds more bytes than its header declares")
        return array.reshape(shape, order="F" if fortran_order else "C")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_model_file(path, *, estimator: str) -> tuple[dict, dict]:
    """Read and check a file written by :func:`save_model_file` for the class named ``estimator``.

    Returns
    -------
    arrays : dict of str to ndarray
    metadata : dict

    Raises
    ------
    ModelFileError
        The file is not a model file of this format and version, is damaged, or holds another
        estimator.
    OSError
        The file cannot be opened (``FileNotFoundError``, ``IsADirectoryError``, ``PermissionError``).
    """
    arrays, metadata = _open(path)
    found = metadata.get("estimator")
    if found != estimator:
        raise ModelFileError(f"model file {str(path)!r} holds a {_short(found)} model, expected {estimator!r}")
    return arrays, metadata


def read_model_metadata(path) -> dict:
    """The metadata record of a model file (format fields, estimator, parameters, ``extra_metadata``).

    The file is fully checked as in loading (errors as in :func:`load_model_file`), but no model
    is built.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from softmaxkit.linear_model import SoftmaxRegression
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "model.npz")
    ...     _ = SoftmaxRegression().fit(X, y).save(path, metadata={"dataset": "toy"})
    ...     read_model_metadata(path)["extra_metadata"]
    {'dataset': 'toy'}
    """
    return _open(path)[1]
