"""Model files: an ``.npz`` archive of plain arrays plus one JSON metadata record, never a pickle.

Format (version 1)
------------------
A ZIP archive as written by :func:`numpy.savez` holding

* ``__softmaxkit_metadata__``: a 1-D ``uint8`` array, the UTF-8 bytes of a JSON object with at
  least ``"format": "softmaxkit-model"``, ``"format_version": 1``, ``"estimator"`` (the class
  name), ``"softmaxkit_version"`` and ``"arrays"`` (the names of the other members);
* one member per array, each a numeric or fixed-width-string array (never ``object`` dtype),
  read back with ``allow_pickle=False``.

Writing is atomic (:func:`softmaxkit._atomic.atomic_write`): the archive goes to a temporary
file in the target's directory, is flushed to disk, then moved into place (so a crash leaves
either the old file or the new one), with the umask's permissions. An existing file is never
replaced unless ``overwrite=True``, not even one that appears while the archive is written.
Reading checks the ZIP structure and checksums, the metadata record, the format name and
version, and that the listed arrays are present; the estimator then checks shapes, dtypes and
values.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from softmaxkit._atomic import atomic_write
from softmaxkit._version import __version__

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load_model_file", "read_model_metadata", "save_model_file"]

FORMAT_NAME = "softmaxkit-model"
FORMAT_VERSION = 1
_METADATA_KEY = "__softmaxkit_metadata__"


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
        if name == _METADATA_KEY or not name.isidentifier():
            raise ValueError(f"array names must be identifiers other than {_METADATA_KEY!r}, got {name!r}")
        array = np.asarray(array)
        if array.dtype.hasobject:
            raise ValueError(f"array {name!r} must have a numeric or string dtype, got dtype {array.dtype}")
        clean[name] = array
    record = dict(metadata)
    record.update(
        format=FORMAT_NAME, format_version=FORMAT_VERSION, softmaxkit_version=__version__, arrays=sorted(clean)
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


def _open(path) -> tuple[dict, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not a softmaxkit model file (not an .npz archive, or truncated)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if _METADATA_KEY not in names:
                raise ValueError(f"{str(path)!r} is not a softmaxkit model file (no {_METADATA_KEY} record)")
            raw = archive[_METADATA_KEY]
            try:
                metadata = json.loads(raw.tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ValueError(f"model file {str(path)!r} has a corrupt metadata record: {error}") from None
            if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
                raise ValueError(
                    f"{str(path)!r} is not a softmaxkit model file (format {metadata.get('format') if isinstance(metadata, dict) else None!r})"
                )
            version = metadata.get("format_version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError(f"model file {str(path)!r} has an invalid format_version {version!r}")
            if version > FORMAT_VERSION:
                raise ValueError(
                    f"model file {str(path)!r} has format version {version}, newer than this softmaxkit "
                    f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade softmaxkit to load it"
                )
            listed = metadata.get("arrays")
            if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
                raise ValueError(f"model file {str(path)!r} has a corrupt metadata record (no array list)")
            missing = sorted(set(listed) - names)
            if missing:
                raise ValueError(f"model file {str(path)!r} is incomplete: missing arrays {missing}")
            arrays = {name: archive[name] for name in listed}
    except ValueError as error:
        if "model file" in str(error) or "not a softmaxkit model file" in str(error):
            raise
        raise ValueError(f"model file {str(path)!r} is corrupt: {error}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
        raise ValueError(f"model file {str(path)!r} is truncated or corrupt: {error}") from None
    return arrays, metadata


def load_model_file(path, *, estimator: str) -> tuple[dict, dict]:
    """Read and check a file written by :func:`save_model_file` for the class named ``estimator``.

    Returns
    -------
    arrays : dict of str to ndarray
    metadata : dict
    """
    arrays, metadata = _open(path)
    found = metadata.get("estimator")
    if found != estimator:
        raise ValueError(f"model file {str(path)!r} holds a {found!r} model, expected {estimator!r}")
    return arrays, metadata


def read_model_metadata(path) -> dict:
    """The metadata record of a model file (format fields, estimator, parameters, ``extra_metadata``).

    The file is fully checked as in loading, but no model is built.

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
