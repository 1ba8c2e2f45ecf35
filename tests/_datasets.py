"""The real multiclass datasets of ``../shared/datasets``, read and split one way for everyone.

Used by ``tests/test_sklearn_optimum.py`` and ``benchmarks/bench_fit.py``, so that the optimum the
tests check and the one the benchmark times are the same problem. Nothing in the package reads
these files.

``load_real_dataset(name, root)`` returns standardised ``(X_train, X_test, y_train, y_test)``
(C-contiguous float64, the scaler fitted on the training part): letter's first 16,000 rows are
the training part, pendigits and satimage come with their own split, covtype (the Kaggle training
file) gets a seeded stratified 75/25 split.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

REAL_DATASETS = ("letter", "pendigits", "satimage", "covtype")


def load_real_dataset(name: str, root: Path):
    """Standardised ``(X_train, X_test, y_train, y_test)`` of one of :data:`REAL_DATASETS`."""
    if name == "letter":
        frame = pd.read_csv(root / "letter" / "letter-recognition.data.gz", header=None)
        X, y = frame.iloc[:, 1:].to_numpy(float), frame[0].to_numpy()
        parts = X[:16000], X[16000:], y[:16000], y[16000:]
    elif name in ("pendigits", "satimage"):
        files = {
            "pendigits": ("pendigits.tra.gz", "pendigits.tes.gz", ","),
            "satimage": ("sat.trn.gz", "sat.tst.gz", None),
        }
        train_file, test_file, delimiter = files[name]
        train = np.loadtxt(gzip.open(root / name / train_file), delimiter=delimiter)
        test = np.loadtxt(gzip.open(root / name / test_file), delimiter=delimiter)
        parts = train[:, :-1], test[:, :-1], train[:, -1].astype(int), test[:, -1].astype(int)
    elif name == "covtype":
        frame = pd.read_csv(root / "covtype" / "covtype_kaggle_train.csv.gz")
        X = frame.drop(columns=["Id", "Cover_Type"]).to_numpy(float)
        y = frame["Cover_Type"].to_numpy()
        parts = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    else:
        raise ValueError(f"dataset must be one of {', '.join(REAL_DATASETS)}, got {name!r}")
    X_train, X_test, y_train, y_test = parts
    scaler = StandardScaler().fit(X_train)
    return (
        np.ascontiguousarray(scaler.transform(X_train)),
        np.ascontiguousarray(scaler.transform(X_test)),
        y_train,
        y_test,
    )
