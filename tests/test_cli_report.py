"""A run that explains itself (issue 16 item 3): metrics.json's record and the self-contained report.html.

report.html is checked twice: parsed here (its tables and embedded PNGs, no outside reference),
and rendered by a headless Chromium when one is installed (skipped, saying so, where none is).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import datetime
from html.parser import HTMLParser

import numpy as np
import pytest

from softmaxkit._version import __version__
from softmaxkit.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    argv = ["train", "--dataset", "wine", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    return out, argv


class Page(HTMLParser):
    """The tables (id -> rows of cell texts) and the images (src) of an HTML page, and every URL it names."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self.urls = {}, [], []
        self._table = self._row = None
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if name in attrs:
                self.urls.append(attrs[name])
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_metrics_json_records_the_fit_and_the_run(wine_run):
    out, argv = wine_run
    metrics = json.loads((out / "metrics.json").read_text())
    fit = metrics["fit"]
    from softmaxkit.linear_model import SoftmaxRegression

    solver = SoftmaxRegression.load(out / "model.npz").solver_  # the default 'auto' chose it
    assert fit["converged"] is True and fit["solver"] == solver in ("lbfgs", "newton-cg")
    assert fit["reason"].startswith("converged: the tolerance") and fit["n_iter"] == metrics["n_iter"] < fit["max_iter"]
    assert "verbose" not in metrics["estimator"]
    run = metrics["run"]
    assert run["command_line"] == "softmaxkit " + " ".join(argv)
    started, finished = (datetime.fromisoformat(run[k]) for k in ("started", "finished"))
    assert started.tzinfo is not None and started <= finished
    assert run["duration_s"] >= metrics["fit_time_s"] - 1e-3
    assert run["versions"]["softmaxkit"] == __version__ and run["versions"]["numpy"] == np.__version__
    assert run["machine"]["cpu_count"] >= 1 and run["machine"]["platform"]
    assert metrics["files"]["report"] == "report.html"


def test_a_fit_that_ran_out_of_iterations_says_so(tmp_path):
    assert (
        main(["train", "--dataset", "digits", "--max-iter", "3", "--quiet", "--no-plots", "--out", str(tmp_path / "r")])
        == 0
    )
    fit = json.loads((tmp_path / "r" / "metrics.json").read_text())["fit"]
    assert fit["converged"] is False and fit["n_iter"] == 3
    assert fit["reason"].startswith("max_iter reached: 3 iterations without meeting the tolerance")
    page = Page((tmp_path / "r" / "report.html").read_text())
    assert ["converged", "no"] in page.tables["fit"] and page.images == []  # --no-plots: no plots to embed


def test_early_stopping_is_the_stopping_reason(tmp_path):
    argv = ["train", "--dataset", "digits", "--solver", "sgd", "--early-stopping", "--n-iter-no-change", "2"]
    assert main([*argv, "--quiet", "--no-plots", "--out", str(tmp_path / "r")]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    fit, tol = metrics["fit"], metrics["estimator"]["tol"]
    assert fit["converged"] is True and fit["n_iter"] < fit["max_iter"]
    assert fit["reason"] == (
        f"early stopping: the validation accuracy did not improve by tol={tol:g} for n_iter_no_change=2 epochs"
    )


def test_report_html_is_self_contained_with_the_tables_and_plots(wine_run):
    out, _ = wine_run
    metrics = json.loads((out / "metrics.json").read_text())
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    scores = {row[0]: row for row in page.tables["scores"][1:]}
    for part in ("train", "test"):
        assert scores[part][1] == str(metrics[part]["n_samples"])
        assert scores[part][2] == f"{metrics[part]['accuracy']:.4f}"
        per_class = page.tables[f"per-class-{part}"]
        assert per_class[0] == ["class", "precision", "recall", "f1", "support"]
        assert [row[4] for row in per_class[1:]] == [str(c["support"]) for c in metrics[part]["per_class"]]
        confusion = page.tables[f"confusion-{part}"]
        assert [[int(v) for v in row[1:]] for row in confusion[1:]] == metrics[part]["confusion_matrix"]
    assert len(page.images) == 3
    for src, name in zip(page.images, ("loss_curve", "confusion_matrix", "weights")):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (out / f"{name}.png").read_bytes()
    assert all(url.startswith("data:") for url in page.urls)  # nothing to fetch: it opens offline
    assert ["command line", metrics["run"]["command_line"]] in page.tables["run"]


def test_evaluate_out_writes_a_report_too(wine_run, tmp_path):
    from sklearn.datasets import load_wine

    wine = load_wine()
    header = ",".join([*wine.feature_names, "target"])
    rows = "\n".join(",".join(map(str, [*x, t])) for x, t in zip(wine.data, wine.target))
    (tmp_path / "wine.csv").write_text(header + "\n" + rows + "\n")
    argv = ["evaluate", str(wine_run[0]), str(tmp_path / "wine.csv"), "--out", str(tmp_path / "eval")]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["run"]["command_line"] == "softmaxkit " + " ".join(argv)
    page = Page((tmp_path / "eval" / "report.html").read_text())
    assert page.tables["scores"][1][:2] == ["data", "178"] and len(page.tables["per-class-data"]) == 4
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def test_report_html_renders_in_a_headless_browser(wine_run, tmp_path):
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip(f"no headless browser on PATH (looked for {', '.join(BROWSERS)})")
    out, _ = wine_run
    report = (out / "report.html").resolve()
    common = [browser, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    page = Page(dom)
    assert {"scores", "per-class-train", "per-class-test", "confusion-test", "run"} <= set(page.tables)
    assert len(page.images) == 3
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*common, "--window-size=1200,3000", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes().startswith(PNG_SIGNATURE) and shot.stat().st_size > 10_000
