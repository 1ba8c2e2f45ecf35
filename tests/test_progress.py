"""Progress output (softmaxkit._progress and the fit's Monitor): it behaves in a terminal, a log and a notebook.

Issue 16 item 2: a display ends at the work done (a converged fit at its iteration count, not at
max_iter); a stream that is no terminal gets a few plain lines, never redrawn frames; a notebook
without ipywidgets gets plain text and no warning; verbose=0 and --quiet silence everything.
"""

from __future__ import annotations

import io
import re
import time
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

from softmaxkit import _progress
from softmaxkit._progress import PLAIN_INTERVAL_S, PlainProgress, progress
from softmaxkit.cli import main
from softmaxkit.linear_model import SoftmaxRegression

DIGITS = load_digits()
X, Y = DIGITS.data / 16.0, DIGITS.target


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def last_frame(text: str) -> str:
    return re.split(r"[\r\n]+", text.strip())[-1]


# ------------------------------------------------------------------------------------------
# the displays


def test_a_plain_display_writes_a_line_per_interval_and_ends_at_the_work_done():
    stream, now = io.StringIO(), [0.0]
    display = PlainProgress(total=1000, desc="work", unit="iter", stream=stream, clock=lambda: now[0], interval=5.0)
    for _ in range(120):
        now[0] += 0.25  # 30 s in all: six periodic lines
        display.update(1)
    display.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 7 and "\r" not in stream.getvalue()
    assert [line.split(":")[1].split()[0] for line in lines[:6]] == [f"{20 * k}/1,000" for k in range(1, 7)]
    assert lines[-1].startswith("work: done, 120 iter in 30.0 s, 4.0 iter/s")


def test_a_quick_plain_display_without_summary_writes_nothing_and_a_failed_one_no_summary():
    stream = io.StringIO()
    with progress(total=None, desc="reading", unit="B", stream=stream, summary=False) as display:
        display.update(10)
    assert stream.getvalue() == ""
    with pytest.raises(RuntimeError), progress(total=5, desc="fit", unit="iter", stream=stream) as display:
        display.update(1)
        raise RuntimeError
    assert stream.getvalue() == ""


def test_a_terminal_bar_ends_full_at_the_work_done():
    stream = FakeTerminal()
    display = progress(total=200, desc="fit", unit="iter", stream=stream)
    assert isinstance(display, _progress._TqdmProgress)
    for _ in range(86):
        display.update(1, {"loss": "0.1"})
    display.close()
    frame = last_frame(stream.getvalue())
    assert "86/86" in frame and "100%" in frame and "/200" not in frame


def test_a_notebook_without_ipywidgets_gets_plain_text_and_no_warning(monkeypatch, capsys):
    monkeypatch.setattr(_progress, "_in_notebook", lambda: True)
    monkeypatch.setattr(_progress, "_has_widgets", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        display = progress(total=200, desc="fit", unit="iter")
        assert isinstance(display, PlainProgress)
        for _ in range(86):
            display.update(1)
        display.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fit: done, 86 iter in ")


def test_disabled_shows_nothing(capsys):
    with progress(total=10, desc="fit", unit="iter", enabled=False) as display:
        display.update(3)
    assert capsys.readouterr() == ("", "")


# ------------------------------------------------------------------------------------------
# the estimator's fit, in a stream that is no terminal


def test_a_verbose_fit_in_a_log_writes_a_few_lines_ending_at_the_iterations_run(capsys):
    started = time.monotonic()
    model = SoftmaxRegression(verbose=True, solver="lbfgs", max_iter=500).fit(X, Y)
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert out == "" and "\r" not in err
    lines = err.splitlines()
    assert 1 <= len(lines) <= 2 + elapsed / PLAIN_INTERVAL_S, lines  # bounded by the time, not the iterations
    assert 0 < model.n_iter_ < 500  # converged early
    assert lines[-1].startswith(f"SoftmaxRegression[lbfgs]: done, {model.n_iter_} iter in ")
    assert re.search(r", loss=[0-9.e-]+$", lines[-1])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["sgd", "newton-cg"])
def test_every_solver_ends_at_its_count(solver, capsys):
    model = SoftmaxRegression(verbose=True, solver=solver, max_iter=7).fit(X[:300], Y[:300])
    unit = "epoch" if solver == "sgd" else "iter"
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith(f"SoftmaxRegression[{solver}]: done, {model.n_iter_} {unit}")
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_verbose_false_is_silent(capsys):
    SoftmaxRegression(max_iter=20).fit(X, Y)
    assert capsys.readouterr() == ("", "")


# ------------------------------------------------------------------------------------------
# the command line


def test_train_quiet_writes_nothing_on_stderr(tmp_path, capsys):
    assert main(["train", "--dataset", "iris", "--quiet", "--no-plots", "--out", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().err == ""


def test_train_in_a_log_shows_the_fit_as_plain_lines(tmp_path, capsys):
    assert main(["train", "--dataset", "iris", "--no-plots", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1].startswith("SoftmaxRegression[")


def test_reading_and_predicting_show_progress_when_slow(tmp_path, capsys, monkeypatch):
    """With a zero interval every read and batch writes a line: the counts are the file's bytes and rows."""
    monkeypatch.setattr(_progress, "PLAIN_INTERVAL_S", 0.0)
    rng = np.random.default_rng(0)
    path = tmp_path / "data.csv"
    rows = np.column_stack([rng.normal(size=(3000, 3)), rng.integers(0, 3, 3000)])
    np.savetxt(path, rows, delimiter=",", header="a,b,c,y", comments="", fmt=["%.6f", "%.6f", "%.6f", "%d"])
    assert main(["train", str(path), "--no-plots", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err.splitlines()
    reading = [line for line in err if line.startswith("reading data.csv: ")]
    from tqdm import tqdm

    assert reading and reading[-1].startswith(f"reading data.csv: done, {tqdm.format_sizeof(path.stat().st_size)} B")
    assert (
        main(["predict", str(tmp_path / "run"), str(path), "--batch-size", "1000", "--out", str(tmp_path / "p.csv")])
        == 0
    )
    err = capsys.readouterr().err.splitlines()
    predicting = [line for line in err if line.startswith("predicting data.csv: ")]
    assert [line.split(",")[0] for line in predicting[:3]] == [f"predicting data.csv: {k}.00k rows" for k in (1, 2, 3)]
    assert predicting[-1].startswith("predicting data.csv: done, 3.00k rows")
    assert main(["predict", str(tmp_path / "run"), str(path), "--quiet", "--out", str(tmp_path / "q.csv")]) == 0
    assert capsys.readouterr().err == ""
