"""Model files as untrusted input: every corrupted or hostile file is refused with ModelFileError in
bounded time and memory, or loads with bit-identical predictions; the command line prints one line.

Three sources of bad files:

* a catalogue of hand-built hostile files (``CATALOGUE``): lying ``.npy`` headers and ZIP
  directories, a 0.6 MB deflate bomb, encryption and unknown compression flags, pickles,
  records nested 100,000 deep, ... each with the message it must get;
* corruptions of a real model file drawn by hypothesis (bit flips, truncations, overwritten,
  inserted and deleted bytes, one ZIP header field set to any value): never fixed up, so the file
  is damaged, and loading must refuse it or give exactly the original predictions;
* rebuilt files whose ``.npy`` headers declare any dtype and shape, with valid CRCs (a crafted
  file, which may load as another model but must be refused or loaded within the bounds).

The bounds (``TIME_BOUND_S``, ``MEMORY_BOUND``) are measured per file: CPU time (the work a load
does, which a busy machine's other processes do not inflate as they do wall time) and the peak of
:mod:`tracemalloc`, which sees NumPy's allocations; the bomb is also loaded in a subprocess whose
peak resident memory is read from the kernel.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pandas as pd
import pytest
from _fuzz import budget
from _model_files import (
    DEFLATED,
    METADATA,
    Member,
    archive_members,
    deflate_bomb,
    header_fields,
    metadata_member,
    npy_bytes,
    npy_header,
    record_of,
    stored,
    zip_archive,
)
from hypothesis import given, target
from hypothesis import strategies as st

import softmaxkit
from softmaxkit import ModelFileError
from softmaxkit._model_io import EXPANSION_ALLOWANCE, MAX_EXPANSION, load_model_file
from softmaxkit.cli import main
from softmaxkit.linear_model import SoftmaxRegression

# The good model is fitted on a DataFrame (to have feature names); the command line passes arrays.
pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")
# A load of these 3 KB files takes about 2 ms and traces about 150 kB here; a record of 100,000
# names (1.1 MB) traces 13.6 MB: JSON becomes Python objects at about 12 bytes per byte. The bounds
# are far above that (the machine is shared) and far below what a hang, an inflated bomb (600 MB)
# or an allocation of a declared huge shape would take.
TIME_BOUND_S = 2.0
# Waiting is wall time: a load that blocks on a FIFO waits forever, so the bound may be generous
# (a suite run at load 20 on 2 cores took 10x its quiet wall times).
FIFO_WAIT_BOUND_S = 30.0


def memory_bound(file_size: int) -> int:
    return (4 << 20) + 16 * file_size


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real model file (string classes, feature names: every kind of member) and its predictions."""
    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = np.array(["cat", "dog", "eel"])[np.arange(60) % 3]
    model = SoftmaxRegression(alpha=0.1).fit(X, y)
    folder = tmp_path_factory.mktemp("good")
    model.save(folder / "model.npz", metadata={"dataset": "toy"})
    data = (folder / "model.npz").read_bytes()
    (folder / "data.csv").write_text(X.to_csv(index=False))
    return {
        "bytes": data,
        "members": archive_members(folder / "model.npz"),
        "X": X,
        "proba": model.predict_proba(X),
        "folder": folder,
    }


def _load_measured(path):
    """``(model or the exception, CPU seconds, peak traced bytes)`` of ``SoftmaxRegression.load(path)``."""
    tracemalloc.start()
    started = time.process_time()
    try:
        outcome = SoftmaxRegression.load(path)
    except Exception as error:  # classified by the caller
        outcome = error
    finally:
        seconds = time.process_time() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return outcome, seconds, peak


def _report(seconds, peak):
    """The measurements as hypothesis targets: ``--hypothesis-show-statistics`` prints the largest of
    each, and the search leans towards files that cost more."""
    target(seconds * 1e3, label="load time (ms)")
    target(peak / 1e3, label="peak traced memory (kB)")


def _check_bounds(seconds, peak, path, what):
    assert seconds < TIME_BOUND_S, f"{what}: {seconds:.2f} s"
    bound = memory_bound(path.stat().st_size)
    assert peak < bound, f"{what}: peak {peak / 1e6:.1f} MB traced, bound {bound / 1e6:.1f} MB"


def _refused_or_identical(outcome, good, what):
    if isinstance(outcome, SoftmaxRegression):
        np.testing.assert_array_equal(outcome.predict_proba(good["X"]), good["proba"], err_msg=what)
    else:
        assert isinstance(outcome, ModelFileError), f"{what}: {type(outcome).__name__}: {outcome}"


# ------------------------------------------------------------------------------------------
# the catalogue of hostile files


def _record_declaring(good, name, descr, shape) -> dict:
    """The record, its array_specs saying of ``name`` what a hostile header says (so only the header checks stand)."""
    record = record_of(good["members"])
    record["array_specs"][name] = {"dtype": descr, "shape": list(shape)}
    return record


def _rebuilt(good, *, replace=None, record=None, extra=None):
    members = dict(good["members"])
    members.update(replace or {})
    if record is not None:
        members[METADATA] = metadata_member(record)
    data = [Member(name, body) for name, body in members.items()]
    return zip_archive(data + list(extra or []))


def _with_record(good, **changes):
    record = record_of(good["members"])
    record.update(changes)
    return _rebuilt(good, record=record)


def _members_list(good):
    return [Member(name, body) for name, body in good["members"].items()]


def _central(good, name, **fields):
    members = _members_list(good)
    for member in members:
        if member.name == name:
            member.central.update(fields)
            member.local.update({k: v for k, v in fields.items() if k != "offset"})
    return zip_archive(members)


def _members_declaring(good, name, descr, shape) -> list[Member]:
    members = dict(good["members"])
    members[METADATA] = metadata_member(_record_declaring(good, name.removesuffix(".npy"), descr, shape))
    return [Member(n, body) for n, body in members.items()]


def _huge_shape(good):
    shape = (10**9, 10**9)
    return _rebuilt(
        good, replace={"coef.npy": npy_header("<f8", shape)}, record=_record_declaring(good, "coef", "<f8", shape)
    )


def _huge_declared_size(good):
    shape = (3, 536_870_000)  # ~12.9 GB of float64; the directory says 4 GB
    members = _members_declaring(good, "coef.npy", "<f8", shape)
    members[0] = Member("coef.npy", npy_header("<f8", shape), size=0xFFFFFFFE, crc=0)
    return zip_archive(members)


_BOMB = {}


def _bomb_member(name="coef.npy", *, declared=None):
    if "data" not in _BOMB:
        _BOMB["data"], _BOMB["size"], _BOMB["crc"] = deflate_bomb(600 << 20)
    size = _BOMB["size"] if declared is None else declared
    return Member(name, _BOMB["data"], method=DEFLATED, size=size, crc=_BOMB["crc"])


def _bomb_shape():
    return ((_BOMB["size"] - 128) // 8,) if "size" in _BOMB else None


def _bomb(good, *, declared=None):
    member = _bomb_member(declared=declared)
    members = _members_declaring(good, "coef.npy", "<f8", _bomb_shape())
    members[0] = member
    return zip_archive(members)


def _bomb_small_directory(good):
    return _bomb(good, declared=1000)


def _two_names_one_member(good):
    members = _members_list(good)
    return zip_archive(
        members[:1] + [Member(m.name, m.data, central={"offset": 0}) for m in members[1:2]] + members[2:]
    )


def _nested_record(good):
    text = b'{"format": "softmaxkit-model", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return _rebuilt(good, replace={METADATA: npy_bytes(np.frombuffer(text, dtype=np.uint8))})


CATALOGUE = {
    "huge declared shape": (_huge_shape, r"declares shape \(1000000000, 1000000000\) of <f8 .* holds 0 bytes"),
    "huge size in the directory": (_huge_declared_size, r"expands to 4294967294 bytes, more than a file of this size"),
    "deflate bomb (0.6 MB to 600 MB)": (_bomb, r"array 'coef' expands to 629145728 bytes, more than a file"),
    "deflate bomb, directory saying 1000 bytes": (_bomb_small_directory, r"truncated or corrupt: Bad CRC-32"),
    "encrypted member": (lambda g: _central(g, "coef.npy", flags=1), r"array 'coef' is encrypted"),
    "bzip2 member": (lambda g: _central(g, "coef.npy", method=12), r"compression method 12 \(stored or deflated"),
    "unknown compression": (lambda g: _central(g, "intercept.npy", method=99), r"compression method 99"),
    "member beyond the end": (lambda g: _central(g, "classes.npy", offset=10**6), r"lies outside the file"),
    "two names, one member": (_two_names_one_member, r"truncated or corrupt: File name in directory"),
    "pickled member": (
        lambda g: _rebuilt(g, replace={"classes.npy": npy_bytes(np.array([1, "a", None], dtype=object))}),
        r"array 'classes' has dtype object; model files hold numbers and strings only",
    ),
    "structured dtype": (
        lambda g: _rebuilt(g, replace={"intercept.npy": npy_bytes(np.zeros(3, dtype=[("a", "<f8")]))}),
        r"array 'intercept' has dtype .*numbers and strings only",
    ),
    "datetime member": (
        lambda g: _rebuilt(g, replace={"intercept.npy": npy_bytes(np.zeros(3, dtype="M8[ns]"))}),
        r"has dtype datetime64\[ns\]",
    ),
    ".npy version 3.0": (
        lambda g: _rebuilt(g, replace={"coef.npy": npy_header("<f8", (3, 3), version=(3, 0)) + bytes(72)}),
        r"\.npy format version \(3, 0\), expected 1\.0 or 2\.0",
    ),
    ".npy header of 60 kB": (
        lambda g: _rebuilt(
            g, replace={"coef.npy": npy_header("<f8", (3, 3), version=(2, 0))[:8] + b"\x60\xea\x00\x00"}
        ),
        r"truncated or corrupt",
    ),
    "metadata nested 100000 deep": (_nested_record, r"corrupt metadata record \(nested too deeply\)"),
    "metadata not UTF-8": (
        lambda g: _rebuilt(g, replace={METADATA: npy_bytes(np.frombuffer(b'{"a": "\xff"}', dtype=np.uint8))}),
        r"corrupt metadata record: 'utf-8' codec",
    ),
    "metadata a float array": (
        lambda g: _rebuilt(g, replace={METADATA: npy_bytes(np.zeros((2, 2)))}),
        r"corrupt metadata record \(an array of dtype float64 and shape \(2, 2\)",
    ),
    "metadata a JSON list": (
        lambda g: _rebuilt(g, replace={METADATA: npy_bytes(np.frombuffer(b"[1, 2]", dtype=np.uint8))}),
        r"is not a softmaxkit model file \(format None\)",
    ),
    "metadata with a 5000-digit number": (
        lambda g: _rebuilt(
            g,
            replace={METADATA: npy_bytes(np.frombuffer(b'{"format_version": 1' + b"0" * 5000 + b"}", dtype=np.uint8))},
        ),
        r"truncated or corrupt: Exceeds the limit",
    ),
    "array name with a path": (
        lambda g: _with_record(g, arrays=["coef", "../../etc/passwd"]),
        r"array list is not a list of names",
    ),
    "100000 array names": (
        lambda g: _with_record(g, arrays=[f"a{i}" for i in range(100_000)], array_specs={}),
        r"is incomplete: missing arrays \['a0', 'a1'",
    ),
    "array_specs disagree with a member": (
        lambda g: _with_record(
            g, array_specs={**record_of(g["members"])["array_specs"], "coef": {"dtype": "<f8", "shape": [4, 3]}}
        ),
        r"array 'coef' has dtype <f8 and shape \[3, 3\], the metadata record says dtype <f8 and shape \[4, 3\]",
    ),
    "array_specs not a dict": (lambda g: _with_record(g, array_specs=[1]), r"array_specs does not match"),
    "newer format version": (lambda g: _with_record(g, format_version=2), r"format version 2, newer than this"),
    "foreign format": (lambda g: _with_record(g, format="other"), r"not a softmaxkit model file \(format 'other'\)"),
    "another estimator": (lambda g: _with_record(g, estimator="MLP"), r"holds a 'MLP' model, expected"),
    "no metadata record": (
        lambda g: zip_archive([Member("coef.npy", g["members"]["coef.npy"])]),
        r"not a softmaxkit model file \(no __softmaxkit_metadata__ record\)",
    ),
    "empty file": (lambda g: b"", r"not a softmaxkit model file \(not an \.npz archive"),
    "random bytes": (lambda g: np.random.default_rng(0).bytes(3000), r"not a softmaxkit model file"),
    "a .npy file": (lambda g: npy_bytes(np.zeros(3)), r"not a softmaxkit model file"),
    "only the directory": (lambda g: g["bytes"][g["bytes"].rindex(b"PK\x01\x02") - 2000 :], r"truncated or corrupt"),
}


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_hostile_file_is_refused_in_bounded_time_and_memory(good, tmp_path, case):
    build, message = CATALOGUE[case]
    path = tmp_path / "hostile.npz"
    path.write_bytes(build(good))
    outcome, seconds, peak = _load_measured(path)
    assert isinstance(outcome, ModelFileError), f"{type(outcome).__name__}: {outcome}"
    assert isinstance(outcome, ValueError)  # what load documented before
    assert str(path) in str(outcome)
    assert re.search(message, str(outcome)), str(outcome)
    _check_bounds(seconds, peak, path, case)


def test_the_bomb_is_as_the_issue_describes(good):
    data = _bomb(good)
    assert 0.55e6 < len(data) < 0.7e6
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.getinfo("coef.npy").file_size > 600e6
        assert archive.getinfo("coef.npy").file_size > MAX_EXPANSION * len(data) + EXPANSION_ALLOWANCE


def test_the_bomb_in_a_subprocess_keeps_the_resident_memory_flat(good, tmp_path):
    """The kernel's own count (peak RSS), in a fresh process: loading the bomb adds under 16 MB to it."""
    path = tmp_path / "bomb.npz"
    path.write_bytes(_bomb(good))
    code = (
        "import resource, sys\n"
        "from softmaxkit._model_io import ModelFileError, load_model_file\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    load_model_file(sys.argv[1], estimator='SoftmaxRegression')\n"
        "except ModelFileError:\n"
        "    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    grown_kb = int(result.stdout)
    assert grown_kb < 16 * 1024, f"peak RSS grew by {grown_kb} kB"


def test_a_member_that_is_not_listed_is_never_read(good, tmp_path):
    """Only the record and the arrays it lists are read: a bomb beside them costs nothing."""
    path = tmp_path / "model.npz"
    path.write_bytes(_rebuilt(good, extra=[_bomb_member("junk.npy")]))
    outcome, seconds, peak = _load_measured(path)
    _check_bounds(seconds, peak, path, "unlisted bomb")
    np.testing.assert_array_equal(outcome.predict_proba(good["X"]), good["proba"])


def test_files_of_earlier_releases_without_array_specs_load(good, tmp_path):
    record = record_of(good["members"])
    del record["array_specs"]
    path = tmp_path / "old.npz"
    path.write_bytes(_rebuilt(good, record=record))
    np.testing.assert_array_equal(SoftmaxRegression.load(path).predict_proba(good["X"]), good["proba"])
    path.write_bytes(_rebuilt(good, record=record, replace={"coef.npy": npy_header("<f8", (10**9, 10**9))}))
    with pytest.raises(ModelFileError, match="declares shape"):  # the header is still checked against the member
        SoftmaxRegression.load(path)


def test_stored_and_fortran_order_members_load(good, tmp_path):
    """Legitimate variants: no zip64 extras (another writer), a Fortran-ordered array."""
    path = tmp_path / "model.npz"
    path.write_bytes(stored(good["members"]))
    np.testing.assert_array_equal(SoftmaxRegression.load(path).predict_proba(good["X"]), good["proba"])
    coef = np.load(io.BytesIO(good["members"]["coef.npy"]))
    path.write_bytes(_rebuilt(good, replace={"coef.npy": npy_bytes(np.asfortranarray(coef))}))
    assert np.load(io.BytesIO(npy_bytes(np.asfortranarray(coef)))).flags.f_contiguous
    np.testing.assert_array_equal(SoftmaxRegression.load(path).predict_proba(good["X"]), good["proba"])


# ------------------------------------------------------------------------------------------
# files that cannot be opened: OSError that says so, never "not a model file"


def test_missing_directory_fifo(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model file '.*missing\.npz' does not exist"):
        SoftmaxRegression.load(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError, match=r"is a directory, not a file"):
        SoftmaxRegression.load(tmp_path)
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    started = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"not a softmaxkit model file \(not a regular file\)"):
        SoftmaxRegression.load(fifo)  # without O_NONBLOCK this would wait for a writer forever
    assert time.perf_counter() - started < FIFO_WAIT_BOUND_S


def test_the_memory_bound_would_catch_the_bomb():
    assert memory_bound(640_000) < 600e6 / 20


def test_an_unreadable_file_is_reported_as_unreadable(good, tmp_path, monkeypatch, capsys):
    path = tmp_path / "model.npz"
    path.write_bytes(good["bytes"])
    if os.geteuid() != 0:  # root reads anything: there the refusal is simulated below only
        path.chmod(0)
        with pytest.raises(PermissionError, match=r"cannot read model file '.*model\.npz': Permission denied"):
            SoftmaxRegression.load(path)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    real_open = os.open

    def refuse(file, flags, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionError, match=r"cannot read model file '.*model\.npz': Permission denied") as info:
        SoftmaxRegression.load(path)
    assert not isinstance(info.value, ValueError)
    assert main(["predict", str(path), str(good["folder"] / "data.csv")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read model file" in err and "Permission denied" in err
    assert "not a softmaxkit model file" not in err


def test_model_file_error_is_public():
    assert softmaxkit.ModelFileError is ModelFileError and "ModelFileError" in softmaxkit.__all__
    assert issubclass(ModelFileError, ValueError) and ModelFileError.__module__ == "softmaxkit"
    assert (
        softmaxkit.linear_model.ModelFileError is ModelFileError and "ModelFileError" in softmaxkit.linear_model.__all__
    )


# ------------------------------------------------------------------------------------------
# the estimator's own checks of a record's values (softmaxkit/linear_model/_model_file.py)

RECORD_VALUES = {
    "unknown solver": {"params": {"solver": "magic"}},
    "n_features_in that does not fit coef": {"n_features_in": 7},
    "loss_curve of lists": {"loss_curve": [[1, 2]]},
    "extra_metadata not a dict": {"extra_metadata": 3},
    "params not a dict": {"params": 3},
    "class_weight not pairs": {"params": {"class_weight": [[1]]}},
    "n_iter not an integer": {"n_iter": "7"},
    "loss_curve beyond float": {"loss_curve": [10**400]},
    "classes_object not a bool": {"classes_object": "yes"},
}


@pytest.mark.parametrize("case", list(RECORD_VALUES))
def test_bad_record_values_get_one_line_from_the_command_line(good, tmp_path, capsys, case):
    path = tmp_path / "model.npz"
    path.write_bytes(_with_record(good, **RECORD_VALUES[case]))
    with pytest.raises((ValueError, TypeError)):
        SoftmaxRegression.load(path)
    assert main(["predict", str(path), str(good["folder"] / "data.csv")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("softmaxkit predict: error: ") and "Traceback" not in err


@pytest.mark.parametrize("case", list(RECORD_VALUES))
def test_bad_record_values_are_model_file_errors(good, tmp_path, case):
    path = tmp_path / "model.npz"
    path.write_bytes(_with_record(good, **RECORD_VALUES[case]))
    with pytest.raises(ModelFileError):
        SoftmaxRegression.load(path)


# ------------------------------------------------------------------------------------------
# the command line: one line for every hostile file, never a traceback


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("case", [c for c in CATALOGUE if "bomb" not in c or c.startswith("deflate bomb (")])
def test_command_line_prints_one_line_for_a_hostile_file(good, tmp_path, capsys, case, command):
    path = tmp_path / "hostile.npz"
    path.write_bytes(CATALOGUE[case][0](good))
    data = good["folder"] / "data.csv"
    assert main([command, str(path), str(data)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"softmaxkit {command}: error: ") and "Traceback" not in captured.err


# ------------------------------------------------------------------------------------------
# corruptions drawn by hypothesis

_POSITION = st.integers(0, 2**31)
CORRUPTIONS = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(_POSITION, st.integers(0, 7)), min_size=1, max_size=4)),
    st.tuples(st.just("truncate"), _POSITION),
    st.tuples(st.just("overwrite"), _POSITION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), _POSITION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _POSITION, st.integers(1, 64)),
    st.tuples(
        st.just("field"), _POSITION, st.sampled_from([0, 1, 0x7F, 0xFF, 0xFFFF, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)
    ),
)


def corrupt(data: bytes, corruption) -> bytes:
    """``data`` damaged as ``corruption`` says (positions are taken modulo the length)."""
    kind, *arguments = corruption
    out = bytearray(data)
    if kind == "flip":
        for position, bit in arguments[0]:
            out[position % len(out)] ^= 1 << bit
    elif kind == "truncate":
        del out[arguments[0] % len(out) :]
    elif kind == "overwrite":
        position = arguments[0] % len(out)
        out[position : position + len(arguments[1])] = arguments[1]
    elif kind == "insert":
        position = arguments[0] % (len(out) + 1)
        out[position:position] = arguments[1]
    elif kind == "delete":
        position = arguments[0] % len(out)
        del out[position : position + arguments[1]]
    else:
        fields = header_fields(data)
        position, width = fields[arguments[0] % len(fields)]
        out[position : position + width] = (arguments[1] % (1 << (8 * width))).to_bytes(width, "little")
    return bytes(out)


@given(corruption=CORRUPTIONS)
@budget(2.0)
def test_corrupted_file_is_refused_or_loads_identically(good, tmp_path_factory, corruption):
    path = tmp_path_factory.getbasetemp() / "corrupted.npz"
    path.write_bytes(corrupt(good["bytes"], corruption))
    outcome, seconds, peak = _load_measured(path)
    _report(seconds, peak)
    _check_bounds(seconds, peak, path, repr(corruption))
    _refused_or_identical(outcome, good, repr(corruption))


_DESCRS = ["<f8", "<f4", ">f8", "<i8", "|b1", "<c16", "<U5", "|S3", "|O", "<M8[ns]", "|V8", "<f2", "|u1"]
_DIMENSION = st.sampled_from([0, 1, 2, 3, 4, 2**31, 2**62, 10**12]) | st.integers(0, 1 << 20)


@given(
    member=st.sampled_from(["coef.npy", "intercept.npy", "classes.npy", "feature_names.npy", METADATA]),
    descr=st.sampled_from(_DESCRS),
    shape=st.lists(_DIMENSION, max_size=3).map(tuple),
    fortran=st.booleans(),
    fill=st.sampled_from(["none", "declared", "original"]),
)
@budget(1.0)
def test_crafted_header_is_refused_or_loads_within_the_bounds(
    good, tmp_path_factory, member, descr, shape, fortran, fill
):
    """A member whose header declares any dtype and shape, CRCs valid: refused, or loaded as some model."""
    header = npy_header(descr, shape, fortran=fortran)
    if fill == "declared":  # as many data bytes as declared, where that is small
        n_bytes = int(np.prod(shape, dtype=object)) * np.dtype(descr).itemsize if shape else np.dtype(descr).itemsize
        body = header + bytes(n_bytes) if n_bytes < 1 << 16 else header
    elif fill == "original":
        original = good["members"][member]
        body = header + original[original.index(b"\n") + 1 :]
    else:
        body = header
    path = tmp_path_factory.getbasetemp() / "crafted.npz"
    path.write_bytes(_rebuilt(good, replace={member: body}))
    outcome, seconds, peak = _load_measured(path)
    _report(seconds, peak)
    _check_bounds(seconds, peak, path, f"{member} {descr} {shape}")
    if not isinstance(outcome, SoftmaxRegression):
        assert isinstance(outcome, (ModelFileError, ValueError, TypeError)), f"{type(outcome).__name__}: {outcome}"
        if not isinstance(outcome, ModelFileError):  # the estimator's own checks, for part 2 (see above)
            assert "model file" in str(outcome) or isinstance(outcome, TypeError), str(outcome)


@given(corruption=CORRUPTIONS)
@budget(0.5)
def test_command_line_prints_one_line_for_a_corrupted_file(good, tmp_path_factory, corruption):
    path = tmp_path_factory.getbasetemp() / "corrupted-cli.npz"
    path.write_bytes(corrupt(good["bytes"], corruption))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["predict", str(path), str(good["folder"] / "data.csv")])
    assert status in (0, 1)
    if status == 1:
        assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("softmaxkit predict: error: "), (
            err.getvalue()
        )


def test_load_model_file_is_the_same_reader(good, tmp_path):
    """The low-level reader refuses as the estimator does (one reader behind both)."""
    path = tmp_path / "bomb.npz"
    path.write_bytes(_bomb(good))
    with pytest.raises(ModelFileError, match="expands to"):
        load_model_file(path, estimator="SoftmaxRegression")
    json.dumps(record_of(good["members"]))  # the helper reads the record the writer wrote
