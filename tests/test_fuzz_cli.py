"""The command line on generated bad data files: exit 0 or 1, never a traceback; every failure is one line.

The files: tables whose cells are numbers, huge numbers, blanks, NaN and inf spellings, words,
quoted commas and unicode; rows with missing or extra fields; three delimiters; headers that are
the model's column names, random names or none; gzip-compressed, and raw bytes (invalid UTF-8
included) under the csv, tsv, npz, svmlight and Parquet suffixes. Each runs through ``train``,
``evaluate`` and ``predict`` in this process: an exception that escapes ``main`` is a traceback
the user would see. Bad model files are tests/test_model_files_hostile.py.
"""

from __future__ import annotations

import contextlib
import gzip
import io

import pytest
from _fuzz import budget
from hypothesis import example, given
from hypothesis import strategies as st

from softmaxkit.cli import main

IRIS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
CELLS = st.one_of(
    st.floats(-1e3, 1e3).map(repr),
    st.integers(-5, 5).map(str),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e400", "-1e400", "NA", "None", "True", "0x1F", "1,5"]),
    st.sampled_from(['"a,b"', '"', "é", "日本", " 3 ", "--", "1e-400", "9" * 30]),
    st.text(alphabet="abc,;\t\"' 0123456789.-e", max_size=6),
)


@st.composite
def tables(draw):
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    header = draw(
        st.sampled_from(["model", "model+target", "random", "none"]).flatmap(
            lambda kind: (
                st.just(IRIS)
                if kind == "model"
                else st.just([*IRIS, "target"])
                if kind == "model+target"
                else st.lists(st.text(alphabet="abcxyz ,\"'é", max_size=5), min_size=0, max_size=6)
                if kind == "random"
                else st.just(None)
            )
        )
    )
    width = len(header) if header else draw(st.integers(1, 6))
    rows = draw(
        st.lists(
            st.lists(CELLS, min_size=max(0, width - 1), max_size=width + 1),
            min_size=0,
            max_size=8,
        )
    )
    lines = ([delimiter.join(header)] if header is not None else []) + [delimiter.join(r) for r in rows]
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"])), header is not None


NUMBERS = st.one_of(
    st.floats(-10, 10).map(lambda v: f"{v:.4g}"),
    st.integers(-3, 3).map(str),
    st.sampled_from(["1e300", "-1e300", "1e-300", "0", "-0.0", "5e-324"]),
)


@st.composite
def plausible_tables(draw):
    """Mostly good tables: the model's columns (and a target of three classes), numbers, now and then
    one bad cell or one odd label (7, 'x', 1e19, 2.5)."""
    with_target = draw(st.booleans())
    names = IRIS + (["target"] if with_target else [])
    rows = []
    for i in range(draw(st.integers(6, 40))):
        row = [draw(NUMBERS) for _ in IRIS] + ([str(i % 3)] if with_target else [])
        if draw(st.integers(0, 19)) == 0:
            row[draw(st.integers(0, len(row) - 1))] = draw(CELLS | st.sampled_from(["7", "x", "1e19", "2.5"]))
        rows.append(row)
    text = "\n".join([",".join(names)] + [",".join(r) for r in rows]) + "\n"
    return text, True


FILES = st.one_of(
    st.tuples(st.sampled_from([".csv", ".csv.gz"]), plausible_tables()),
    st.tuples(st.sampled_from([".csv", ".tsv", ".csv.gz", ".data"]), tables()),
    st.tuples(
        st.sampled_from([".csv", ".npz", ".svm", ".parquet", ".csv.gz"]),
        st.binary(max_size=300).map(lambda b: (b, True)),
    ),
)


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-fuzz")
    assert main(["train", "--dataset", "iris", "--out", str(folder / "run"), "--quiet", "--no-plots"]) == 0
    return folder / "run" / "model.npz"


def _write(path, suffix, content):
    data = content.encode("utf-8") if isinstance(content, str) else content
    if suffix.endswith(".gz") and isinstance(content, str):
        data = gzip.compress(data)
    path.write_bytes(data)


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])  # an exception escaping here is a user's traceback
    return status, err.getvalue()


@given(file=FILES, command=st.sampled_from(["train", "evaluate", "predict"]))
@example(file=(".csv", ("\n", False)), command="predict")  # once warned of a column match before failing to read
@example(file=(".svm", (b"", True)), command="train")  # an empty svmlight file was once a traceback
@budget(1.0)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_bad_data_file_gets_one_line_never_a_traceback(iris_model, tmp_path_factory, file, command):
    suffix, (content, has_header) = file
    folder = tmp_path_factory.getbasetemp() / "cli-fuzz-data"
    folder.mkdir(exist_ok=True)
    path = folder / f"data{suffix}"
    _write(path, suffix, content)
    header = [] if has_header else ["--no-header"]
    if command == "train":
        argv = [
            "train",
            path,
            *header,
            "--out",
            folder / "run",
            "--overwrite",
            "--quiet",
            "--no-plots",
            "--max-iter",
            "5",
        ]
    else:
        argv = [command, iris_model, path, *header]
    status, err = _run(argv)
    assert status in (0, 1), (status, err)
    if status == 1:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"softmaxkit {command}: error: "), err
