"""An on-disk cache of a source's parsed rows, so that repeated passes do not re-parse text.

:func:`cache_source` reads a source once and writes, in a folder:

* ``X.bin`` (dense, row-major) or ``data.bin``, ``indices.bin``, ``indptr.bin`` (CSR), in the cache's dtype;
* ``labels.bin``: int32 codes into the classes (listed in the manifest), and ``weights.bin`` (float64);
* ``manifest.json``: shapes, dtypes, classes, feature names and the source's fingerprint (its files'
  paths, sizes and modification times, and its options).

Each data file is a raw C-ordered array that ``np.memmap`` maps as it is; the cache reads them with
explicit reads (:mod:`softmaxkit._sources._raw`), so that a pass holds one batch, not the file.

Every file goes through softmaxkit's one atomic writer, the manifest last: a cache whose pass was
interrupted has no manifest and is never read. A cache in a given folder is reused when its
manifest's fingerprint matches the source's; one in a temporary folder (the default) is removed
by :meth:`CachedSource.close`, at the end of a ``with`` block, or when the object is collected.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from softmaxkit._atomic import atomic_write
from softmaxkit._sources._base import (
    DEFAULT_MAX_BYTES,
    Batch,
    Source,
    check_dtype,
    check_max_bytes,
    rows_per_batch,
    split_to_budget,
)
from softmaxkit._sources._errors import DataError
from softmaxkit._sources._raw import RawArray

_FORMAT = 2  # the manifest's layout version


def _fingerprint(source: Source) -> dict | None:
    """What identifies a source's rows: its files (path, size, mtime) and options; ``None`` without files."""
    files = getattr(source, "files", None) or ([source.path] if hasattr(source, "path") else None)
    if not files:
        return None
    stats = []
    for f in files:
        info = Path(f).stat()
        stats.append([str(Path(f).resolve()), info.st_size, info.st_mtime_ns])
    options = {
        key: repr(getattr(source, key))
        for key in ("plan", "label_type", "header", "delimiter", "_zero_based", "_n_features", "dtype")
        if hasattr(source, key)
    }
    return {"type": type(source).__name__, "files": stats, "options": options}


class CachedSource(Source):
    """A source read from its on-disk cache (see :func:`cache_source`); a context manager.

    Attributes
    ----------
    directory : Path
        Where the cache lies.
    classes : ndarray or None
        The sorted labels found while writing it (``None`` without a target).
    """

    def __init__(self, directory: Path, manifest: dict, *, max_bytes: int, temporary: bool):
        self.directory = Path(directory)
        self.name = manifest["name"]
        self.dtype = np.dtype(manifest["dtype"])
        self.max_bytes = max_bytes
        self.sparse = manifest["sparse"]
        self._n_rows = manifest["n_rows"]
        self._n_features = manifest["n_features"]
        names = manifest["feature_names"]
        self._feature_names = tuple(names) if names is not None else None
        codes_classes = manifest["classes"]
        self._classes = None if codes_classes is None else np.array(codes_classes)
        self.classes = None if self._classes is None else np.sort(self._classes)
        n, d = self._n_rows, self._n_features
        folder = self.directory
        # Read by explicit reads, not np.memmap, so that a pass holds one batch, not the file (see _raw).
        if self.sparse:
            self._indptr = RawArray(folder / "indptr.bin", np.dtype(np.int64), (n + 1,))
            self._data = RawArray(folder / "data.bin", self.dtype, (manifest["nnz"],))
            self._indices = RawArray(folder / "indices.bin", np.dtype(manifest["index_dtype"]), (manifest["nnz"],))
            self._X = None
        else:
            self._X = RawArray(folder / "X.bin", self.dtype, (n, d))
            self._indptr = self._data = self._indices = None
        self._codes = RawArray(folder / "labels.bin", np.dtype(np.int32), (n,)) if self._classes is not None else None
        self._w = RawArray(folder / "weights.bin", np.dtype(np.float64), (n,)) if manifest["weights"] else None
        self._label_bytes = self._classes.itemsize if self._classes is not None else 0
        row_bytes = (d * self.dtype.itemsize if not self.sparse else 0) + self._label_bytes
        row_bytes += 8 if self._w is not None else 0
        self.batch_rows = rows_per_batch(max(row_bytes, 1), max_bytes, source=self.name) if not self.sparse else None
        self._closed = False
        self._finalizer = (
            weakref.finalize(self, shutil.rmtree, str(self.directory), ignore_errors=True) if temporary else None
        )

    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        return self._feature_names

    @property
    def n_rows(self) -> int:
        return self._n_rows

    @property
    def has_target(self) -> bool:
        return self._codes is not None

    @property
    def has_weights(self) -> bool:
        return self._w is not None

    def close(self) -> None:
        """Remove the folder if it is a temporary one; the source cannot be read after."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> CachedSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def iter_batches(self) -> Iterator[Batch]:
        if self._closed:
            raise ValueError(f"the cache of {self.name} is closed")
        with contextlib.ExitStack() as stack:
            parts = [self._X, self._data, self._indices, self._indptr, self._codes, self._w]
            handles = {id(p): stack.enter_context(open(p.path, "rb")) for p in parts if p is not None}

            def read(part, start, stop):
                return None if part is None else part.read(handles[id(part)], start, stop)

            def extras(start, stop):
                codes = read(self._codes, start, stop)
                return (None if codes is None else self._classes[codes]), read(self._w, start, stop)

            if not self.sparse:
                for start in range(0, self._n_rows, self.batch_rows):
                    stop = min(start + self.batch_rows, self._n_rows)
                    yield Batch(read(self._X, start, stop), *extras(start, stop))
                return
            yield from self._sparse_batches(read, extras)

    def _sparse_batches(self, read, extras) -> Iterator[Batch]:
        import scipy.sparse as sp

        item = self.dtype.itemsize + self._indices.dtype.itemsize
        extra = self._label_bytes + (8 if self._w is not None else 0) + 8  # labels, weights and indptr per row
        window = max(self.max_bytes // 8, 1)  # rows of indptr looked at per batch, itself within the budget
        start = 0
        while start < self._n_rows:
            indptr = read(self._indptr, start, min(start + window, self._n_rows) + 1)
            cumulative = (indptr - indptr[0]) * item + np.arange(indptr.shape[0]) * extra
            stop = start + max(int(np.searchsorted(cumulative, self.max_bytes - 8, side="right")) - 1, 1)
            a, b = int(indptr[0]), int(indptr[stop - start])
            X = sp.csr_matrix(
                (read(self._data, a, b), read(self._indices, a, b), indptr[: stop - start + 1] - a),
                shape=(stop - start, self._n_features),
            )
            yield from split_to_budget(Batch(X, *extras(start, stop)), self.max_bytes, source=self.name)
            start = stop


def cache_source(source: Source, *, dtype=np.float32, directory=None, max_bytes: int | None = None) -> CachedSource:
    """Read ``source`` once into an on-disk cache and return a source that reads the cache.

    Parameters
    ----------
    source : Source
    dtype : float32 or float64, default float32
        The dtype of the cached features (float32 halves the bytes of each later pass).
    directory : str or Path, optional
        A folder for the cache, kept and reused by later calls on the same, unchanged source; default
        a new temporary folder, removed when the returned source is closed or collected.
    max_bytes : int, optional
        The batch budget of the cached source; default the source's.

    Examples
    --------
    >>> from softmaxkit._sources._arrays import ArraySource
    >>> with cache_source(ArraySource(np.eye(3), ["a", "b", "a"]), dtype=np.float64) as cached:
    ...     [(X.tolist(), y.tolist()) for X, y, _ in cached][0][1], cached.classes.tolist()
    (['a', 'b', 'a'], ['a', 'b'])
    """
    dtype = check_dtype(dtype)
    max_bytes = check_max_bytes(max_bytes if max_bytes is not None else getattr(source, "max_bytes", DEFAULT_MAX_BYTES))
    fingerprint = _fingerprint(source)
    temporary = directory is None
    folder = Path(tempfile.mkdtemp(prefix="softmaxkit-cache-")) if temporary else Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        manifest_path = folder / "manifest.json"
        wanted = {"dtype": dtype.name, "fingerprint": fingerprint}
        if not temporary and fingerprint is not None and manifest_path.is_file():
            with contextlib.suppress(ValueError, OSError):
                manifest = json.loads(manifest_path.read_text())
                if manifest.get("format") == _FORMAT and all(manifest.get(k) == v for k, v in wanted.items()):
                    return CachedSource(folder, manifest, max_bytes=max_bytes, temporary=False)
        manifest_path.unlink(missing_ok=True)  # from here on an interrupted write leaves no cache that looks whole
        manifest = _write(source, folder, dtype=dtype)
        manifest.update(wanted, format=_FORMAT)
        with atomic_write(manifest_path, "w", encoding="utf-8") as stream:
            json.dump(manifest, stream)
        return CachedSource(folder, manifest, max_bytes=max_bytes, temporary=temporary)
    except BaseException:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _write(source: Source, folder: Path, *, dtype: np.dtype) -> dict:
    """One pass over ``source`` into the cache's data files; the manifest's fields (all but the fingerprint)."""
    sparse = bool(source.sparse)
    index_dtype = np.dtype(np.int32 if source.n_features < 2**31 else np.int64)
    names = ["data.bin", "indices.bin", "indptr.bin"] if sparse else ["X.bin"]
    names += (["labels.bin"] if source.has_target else []) + (["weights.bin"] if source.has_weights else [])
    codes: dict = {}
    n_rows = nnz = 0
    with contextlib.ExitStack() as stack:
        streams = {name: stack.enter_context(atomic_write(folder / name, "wb")) for name in names}
        if sparse:
            streams["indptr.bin"].write(np.zeros(1, np.int64).tobytes())
        for X, y, w in source.iter_batches():
            if sparse:
                X = X.tocsr()
                streams["data.bin"].write(np.ascontiguousarray(X.data, dtype=dtype).tobytes())
                streams["indices.bin"].write(np.ascontiguousarray(X.indices, dtype=index_dtype).tobytes())
                streams["indptr.bin"].write((X.indptr[1:].astype(np.int64) + nnz).tobytes())
                nnz += int(X.indptr[-1])
            else:
                streams["X.bin"].write(np.ascontiguousarray(X, dtype=dtype).tobytes())
            if y is not None:
                found, inverse = np.unique(y, return_inverse=True)
                for label in found.tolist():
                    codes.setdefault(label, len(codes))
                lookup = np.array([codes[label] for label in found.tolist()], dtype=np.int32)
                streams["labels.bin"].write(lookup[inverse.reshape(-1)].tobytes())
            if w is not None:
                streams["weights.bin"].write(np.ascontiguousarray(w, dtype=np.float64).tobytes())
            n_rows += X.shape[0]
        if n_rows == 0:
            raise DataError(f"{source.name} has no data rows")
    return {
        "name": source.name,
        "sparse": sparse,
        "n_rows": n_rows,
        "n_features": int(source.n_features),
        "feature_names": None if source.feature_names is None else list(source.feature_names),
        "index_dtype": index_dtype.name,
        "nnz": nnz,
        "classes": list(codes) if source.has_target else None,
        "weights": bool(source.has_weights),
    }
