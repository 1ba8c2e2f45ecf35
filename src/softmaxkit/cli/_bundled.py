"""The datasets shipped with scikit-learn that ``softmaxkit train --dataset NAME`` trains on (no download)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softmaxkit.cli._formats import DataError
from softmaxkit.cli._read import Dataset


@dataclass(frozen=True)
class _Bundled:
    loader: str
    description: str
    image_shape: tuple[int, int] | None = None


BUNDLED_DATASETS: dict[str, _Bundled] = {
    "digits": _Bundled("load_digits", "handwritten digits 0-9, 8x8 grey-level images", (8, 8)),
    "iris": _Bundled("load_iris", "iris flowers, 3 species from 4 measurements"),
    "wine": _Bundled("load_wine", "wines from 3 cultivars, 13 chemical measurements"),
    "breast_cancer": _Bundled("load_breast_cancer", "breast tumours, benign or malignant, 30 features"),
}
"""The datasets shipped with scikit-learn that ``softmaxkit train --dataset NAME`` can use."""

DEFAULT_DATASET = "digits"


def load_bundled(name: str) -> Dataset:
    """Return one of :data:`BUNDLED_DATASETS` (no download: they ship with scikit-learn).

    Examples
    --------
    >>> data = load_bundled("iris")
    >>> data.X.shape, data.y.shape, data.target
    ((150, 4), (150,), 'target')
    """
    if name not in BUNDLED_DATASETS:
        raise DataError(f"dataset must be one of {', '.join(BUNDLED_DATASETS)}, got {name!r}")
    import sklearn.datasets

    spec = BUNDLED_DATASETS[name]
    bunch = getattr(sklearn.datasets, spec.loader)()
    X = np.ascontiguousarray(bunch.data, dtype=np.float64)
    names = tuple(str(n) for n in bunch.feature_names)
    return Dataset(
        X=X,
        y=np.asarray(bunch.target),
        feature_names=names,
        target="target",
        target_index=len(names),
        name=name,
        image_shape=spec.image_shape,
    )
