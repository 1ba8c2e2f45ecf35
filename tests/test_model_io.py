"""Model files: round trips are bit-identical; bad, foreign, truncated and newer files are refused clearly."""

from __future__ import annotations

import json
import os
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from softmaxkit._model_io import FORMAT_VERSION, ModelFileError, load_model_file, save_model_file
from softmaxkit.linear_model import SoftmaxRegression, read_model_metadata


def _data(k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(90, 4))
    y = np.arange(90) % k
    X[np.arange(90), y] += 2.0
    return X, y


def _assert_same_predictions(a, b, X):
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.predict(X).dtype == b.predict(X).dtype
    for method in ("predict_proba", "predict_log_proba", "decision_function"):
        np.testing.assert_array_equal(getattr(a, method)(X), getattr(b, method)(X))


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, 1, 2]),
        np.array([-3, 10, 42]),
        np.array(["cat", "dog", "eel"]),
        np.array(["cat", "dog", "eel"], dtype=object),
        np.array([1.0, 2.0, 4.0]),
        np.array([False, True]),
    ],
)
def test_round_trip_is_bit_identical(tmp_path, labels):
    X, y = _data(k=len(labels))
    model = SoftmaxRegression(alpha=0.01, class_weight="balanced").fit(X, labels[y])
    path = tmp_path / "model.npz"
    assert model.save(path, metadata={"dataset": "toy", "rows": 90}) is model
    loaded = SoftmaxRegression.load(path)
    _assert_same_predictions(model, loaded, X)
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    assert loaded.classes_.dtype == model.classes_.dtype
    assert loaded.get_params() == model.get_params()
    assert loaded.saved_metadata_ == {"dataset": "toy", "rows": 90}
    assert loaded.n_iter_ == model.n_iter_ and loaded.loss_curve_ == model.loss_curve_
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_round_trip_with_feature_names_float32_and_dict_class_weight(tmp_path):
    X, y = _data()
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    model = SoftmaxRegression(
        dtype=np.float32, class_weight={0: 2.0, 2: 0.5}, solver="sgd", random_state=3, max_iter=20
    ).fit(frame, y)
    model.save(tmp_path / "m.npz")
    loaded = SoftmaxRegression.load(tmp_path / "m.npz")
    _assert_same_predictions(model, loaded, frame)
    np.testing.assert_array_equal(loaded.feature_names_in_, model.feature_names_in_)
    assert loaded.coef_.dtype == np.float32
    assert loaded.get_params() == model.get_params()
    with pytest.raises(ValueError, match="feature names should match"):
        loaded.predict(pd.DataFrame(X, columns=["a", "b", "x", "d"]))


def test_read_model_metadata(tmp_path):
    X, y = _data()
    SoftmaxRegression().fit(X, y).save(tmp_path / "m.npz", metadata={"dataset": "letter", "nested": [1, {"a": 2}]})
    meta = read_model_metadata(tmp_path / "m.npz")
    assert meta["format"] == "softmaxkit-model" and meta["format_version"] == FORMAT_VERSION
    assert meta["estimator"] == "SoftmaxRegression"
    assert meta["extra_metadata"] == {"dataset": "letter", "nested": [1, {"a": 2}]}
    assert meta["params"]["solver"] == "auto" and meta["params"]["dtype"] is None  # None: float64 here


def test_refuses_to_overwrite(tmp_path):
    X, y = _data()
    model = SoftmaxRegression().fit(X, y)
    path = tmp_path / "m.npz"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        model.save(path)
    assert path.read_bytes() == b"precious"
    model.save(path, overwrite=True)
    _assert_same_predictions(model, SoftmaxRegression.load(path), X)
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_save_errors(tmp_path):
    with pytest.raises(NotFittedError):
        SoftmaxRegression().save(tmp_path / "m.npz")
    X, y = _data()
    model = SoftmaxRegression().fit(X, y)
    with pytest.raises(ValueError, match="metadata must be JSON-serialisable"):
        model.save(tmp_path / "m.npz", metadata={"bad": object()})
    with pytest.raises(ValueError, match="metadata must be JSON-serialisable"):
        model.save(tmp_path / "m.npz", metadata={"bad": float("nan")})
    with pytest.raises(ValueError, match="metadata must be a dict"):
        model.save(tmp_path / "m.npz", metadata=["a"])
    # What JSON would read back as something else: keys that are not strings, tuples.
    with pytest.raises(
        ValueError, match=re.escape("metadata must have string keys (JSON's) at every depth, got the key 1 in metadata")
    ):
        model.save(tmp_path / "m.npz", metadata={1: 2})
    with pytest.raises(ValueError, match=re.escape("got the key None in metadata['a'][1]")):
        model.save(tmp_path / "m.npz", metadata={"a": [0, {None: 2}]})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "metadata must hold lists, not tuples (JSON reads them back as lists), got one at metadata['shape']"
        ),
    ):
        model.save(tmp_path / "m.npz", metadata={"shape": (2, 3)})
    cycle = {"a": []}
    cycle["a"].append(cycle)
    with pytest.raises(ValueError, match="metadata must be JSON-serialisable"):  # refused, and no endless walk
        model.save(tmp_path / "m.npz", metadata=cycle)
    deep = current = {}
    for _ in range(100_000):
        current["a"] = current = {}
    with pytest.raises(ValueError, match="metadata must be nested at most 100 deep, got more at metadata"):
        model.save(tmp_path / "m.npz", metadata=deep)  # JSON's writer: RecursionError; its reader could not load it
    assert os.listdir(tmp_path) == []
    with pytest.raises(IsADirectoryError):
        model.save(tmp_path)


@pytest.fixture
def saved(tmp_path):
    X, y = _data()
    path = tmp_path / "m.npz"
    SoftmaxRegression().fit(X, y).save(path)
    return path


def test_truncated_file(saved):
    data = saved.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        saved.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"truncated|corrupt|not a softmaxkit model file"):
            SoftmaxRegression.load(saved)


def test_corrupted_bytes(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("coef.npy")
    offset = info.header_offset + 30 + len(info.filename) + 200  # inside the stored coefficients
    data[offset] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        SoftmaxRegression.load(saved)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a softmaxkit model file"):
        SoftmaxRegression.load(text)
    plain = tmp_path / "arrays.npz"
    np.savez(plain, coef=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not a softmaxkit model file"):
        SoftmaxRegression.load(plain)
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="not a softmaxkit model file"):
        SoftmaxRegression.load(npy)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SoftmaxRegression.load(tmp_path / "missing.npz")


def _rewrite(path, *, metadata_update=None, arrays_update=None, raw_metadata=None):
    """Rewrite a model file with changes, its array_specs kept consistent with its members (as a writer would)."""
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    meta = json.loads(members["__softmaxkit_metadata__"].tobytes())
    members.update(arrays_update or {})
    meta["array_specs"] = {
        name: {"dtype": np.lib.format.dtype_to_descr(a.dtype), "shape": list(a.shape)}
        for name, a in members.items()
        if name in meta["arrays"]
    }
    meta.update(metadata_update or {})
    text = raw_metadata if raw_metadata is not None else json.dumps(meta).encode()
    members["__softmaxkit_metadata__"] = np.frombuffer(text, dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **members)


def test_newer_format_version(saved):
    _rewrite(saved, metadata_update={"format_version": FORMAT_VERSION + 1})
    with pytest.raises(ValueError, match="newer than this softmaxkit"):
        SoftmaxRegression.load(saved)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"metadata_update": {"format": "other"}}, "not a softmaxkit model file"),
        ({"metadata_update": {"format_version": "1"}}, "invalid format_version"),
        ({"metadata_update": {"estimator": "MLPClassifier"}}, "holds a 'MLPClassifier' model"),
        ({"metadata_update": {"params": {"solver": "magic"}}}, "invalid metadata"),
        ({"metadata_update": {"params": {"unknown": 1}}}, "invalid metadata"),
        ({"metadata_update": {"n_features_in": 7}}, "must hold coef of shape"),
        ({"metadata_update": {"arrays": ["coef", "intercept", "classes", "extra"]}}, "missing arrays"),
        # dtype=None reads the precision from coef, so a float32 coef beside a float64 intercept is caught there.
        (
            {"arrays_update": {"coef": np.zeros((3, 4), dtype=np.float32)}},
            "intercept of shape \\(3,\\) and dtype float32",
        ),
        ({"arrays_update": {"coef": np.full((3, 4), np.nan)}}, "non-finite"),
        ({"arrays_update": {"intercept": np.zeros(2)}}, "intercept of shape"),
        ({"arrays_update": {"classes": np.array([0, 0, 1])}}, "repeated classes"),
        ({"raw_metadata": b"{not json"}, "corrupt metadata"),
    ],
)
def test_tampered_files(saved, change, message):
    _rewrite(saved, **change)
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression.load(saved)


def test_pickled_member_is_refused(saved):
    _rewrite(saved, arrays_update={"classes": np.array([0, "a", 2.0], dtype=object)})
    with pytest.raises(ModelFileError, match="array 'classes' has dtype object; model files hold numbers and strings"):
        SoftmaxRegression.load(saved)


def test_low_level_api(tmp_path):
    path = save_model_file(tmp_path / "x.npz", {"a": np.arange(3)}, {"estimator": "Thing"})
    arrays, meta = load_model_file(path, estimator="Thing")
    np.testing.assert_array_equal(arrays["a"], np.arange(3))
    assert meta["estimator"] == "Thing"
    with pytest.raises(ValueError, match="numeric or string dtype"):
        save_model_file(tmp_path / "y.npz", {"a": np.array([None])}, {})


def test_saved_file_has_the_usual_permissions(tmp_path):
    import os

    X, y = _data()
    path = tmp_path / "m.npz"
    SoftmaxRegression().fit(X, y).save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert (os.stat(path).st_mode & 0o777) == (0o666 & ~umask)


def test_the_record_declares_each_array(saved):
    """array_specs: what the reader checks every member's .npy header against before reading it."""
    meta = read_model_metadata(saved)
    arrays, _ = load_model_file(saved, estimator="SoftmaxRegression")
    assert sorted(meta["array_specs"]) == sorted(meta["arrays"]) == sorted(arrays)
    for name, array in arrays.items():
        assert meta["array_specs"][name] == {
            "dtype": np.lib.format.dtype_to_descr(array.dtype),
            "shape": list(array.shape),
        }


@pytest.mark.parametrize(
    "array", [np.array([1, 2], dtype="M8[D]"), np.array([1], dtype="m8[s]"), np.zeros(2, dtype=[("a", "<f8")])]
)
def test_save_refuses_what_load_would_refuse(tmp_path, array):
    with pytest.raises(ValueError, match="must have a numeric or string dtype"):
        save_model_file(tmp_path / "x.npz", {"a": array}, {})
    assert list(tmp_path.iterdir()) == []


def test_every_bad_content_is_one_exception_type(saved):
    """Truncated, corrupt, foreign, newer: all ModelFileError (and still ValueError, as documented before)."""
    data = saved.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "flipped": data[:100] + bytes([data[100] ^ 0x10]) + data[101:]}
    for content in cases.values():
        saved.write_bytes(content)
        with pytest.raises(ModelFileError):
            SoftmaxRegression.load(saved)
    saved.write_bytes(data)
    _rewrite(saved, metadata_update={"format_version": FORMAT_VERSION + 1})
    with pytest.raises(ModelFileError, match="newer than this softmaxkit"):
        SoftmaxRegression.load(saved)
    _rewrite(saved, metadata_update={"format_version": 1, "estimator": "Other"})
    with pytest.raises(ModelFileError, match="holds a 'Other' model"):
        SoftmaxRegression.load(saved)
