"""The multiclass datasets of the tests and the fit benchmark, read and split one way for everyone.

Used by ``tests/test_sklearn_optimum.py`` and ``benchmarks/bench_fit.py``, so that the optimum the
tests check and the one the benchmark times are the same problem. Nothing in the package reads
these files.

``load_real_dataset(name, root)`` returns standardised ``(X_train, X_test, y_train, y_test)``
(C-contiguous float64, the scaler fitted on the training part) for the dense sets of
``../shared/datasets``: letter's first 16,000 rows are the training part, pendigits and satimage
come with their own split, covtype (the Kaggle training file) gets a seeded stratified 75/25 split.
``load_news20(root)`` returns the sparse word counts of news20 (CSR, unscaled: counts are what text
models see) with a seeded stratified 75/25 split. ``load_generated(name)`` returns scikit-learn's
``digits`` and the synthetic cases of :data:`GENERATED`, standardised, with seeded stratified
80/20 splits.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

REAL_DATASETS = ("letter", "pendigits", "satimage", "covtype")
# name -> make_classification arguments (random_state=0)
GENERATED = {
    "synthetic": {"n_samples": 200_000, "n_features": 100, "n_informative": 50, "n_classes": 20},
    "wide": {"n_samples": 50_000, "n_features": 500, "n_informative": 100, "n_classes": 10},
}
NEWS20_FEATURES = 62_061


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


def _split_standardised(X, y, test_size=0.2):
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return (
        np.ascontiguousarray(scaler.transform(X_train)),
        np.ascontiguousarray(scaler.transform(X_test)),
        y_train,
        y_test,
    )


def load_generated(name: str):
    """Standardised ``(X_train, X_test, y_train, y_test)`` of ``digits`` or one of :data:`GENERATED`."""
    from sklearn.datasets import load_digits, make_classification

    if name == "digits":
        X, y = load_digits(return_X_y=True)
    elif name in GENERATED:
        X, y = make_classification(**GENERATED[name], random_state=0)
    else:
        raise ValueError(f"dataset must be 'digits' or one of {', '.join(GENERATED)}, got {name!r}")
    return _split_standardised(X, y)


def load_news20(root: Path):
    """``(X_train, X_test, y_train, y_test)`` of news20: CSR word counts (float64), labels 1 to 20, 75/25 split."""
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(root / "news20" / "news20.svm.gz"), n_features=NEWS20_FEATURES)
    y = y.astype(int)
    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
