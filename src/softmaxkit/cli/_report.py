"""What a run records about itself: the ``run`` section of metrics.json and the self-contained report.html.

:func:`run_record` is the provenance (command line, start and end time, library versions, machine);
:func:`stopping` says whether and why the solver stopped; :func:`write_report` writes one HTML file
that holds everything it shows (tables, and the plots as base64 PNG), so it opens offline, mailed or
archived without the folder it came from.
"""

from __future__ import annotations

import base64
import html
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from softmaxkit._atomic import atomic_write

REPORT_FILE = "report.html"

# The libraries whose versions decide a run's numbers (torch only when it was used: importing it costs seconds).
_LIBRARIES = ("numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "matplotlib", "tqdm")


def now() -> datetime:
    """The current time, timezone-aware (UTC), as run records hold it."""
    return datetime.now(UTC)


def library_versions() -> dict[str, str | None]:
    """Installed versions of softmaxkit and the libraries it runs on (``None``: not installed)."""
    from softmaxkit._version import __version__

    versions: dict[str, str | None] = {"softmaxkit": __version__, "python": platform.python_version()}
    names = _LIBRARIES + (("torch",) if "torch" in sys.modules else ())
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict:
    """The machine a run ran on: operating system, architecture, processor, CPU count."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
    }


def run_record(argv: Sequence[str], started: datetime, finished: datetime) -> dict:
    """The ``run`` section of metrics.json: how, when and where the numbers were produced."""
    return {
        "command_line": shlex.join(["softmaxkit", *argv]),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 3),
        "versions": library_versions(),
        "machine": machine(),
    }


def stopping(estimator, *, converged: bool, solver: str) -> dict:
    """Whether the fit converged and why the solver stopped, in words.

    The estimator warns (``ConvergenceWarning``) exactly when its solver ran out of ``max_iter``;
    otherwise it stopped on its own rule: the tolerance (full-batch solvers), no improvement for
    ``n_iter_no_change`` epochs (stochastic solvers), or the validation score (early stopping).
    """
    n_iter = int(estimator.n_iter_)
    epochs = solver in ("sgd", "adam")
    unit = "epochs" if epochs else "iterations"
    if not converged:
        reason = f"max_iter reached: {n_iter} {unit} without meeting the tolerance (tol={estimator.tol:g})"
    elif estimator.early_stopping:
        reason = (
            f"early stopping: the validation accuracy did not improve by tol={estimator.tol:g} "
            f"for n_iter_no_change={estimator.n_iter_no_change} {unit}"
        )
    elif epochs:
        reason = (
            f"the training loss did not improve by tol={estimator.tol:g} "
            f"for n_iter_no_change={estimator.n_iter_no_change} epochs"
        )
    else:
        reason = f"converged: the tolerance tol={estimator.tol:g} was met after {n_iter} {unit}"
    return {"converged": bool(converged), "reason": reason, "n_iter": n_iter, "max_iter": int(estimator.max_iter)}


# --------------------------------------------------------------------------------------------
# report.html

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.2em 0.7em; border: 1px solid #ddd; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #a50; } code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _cell(value, *, name: bool = False) -> str:
    if isinstance(value, float):
        value = f"{value:.4f}"
    css = ' class="name"' if name else ""
    return f"<td{css}>{html.escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, table_id: str) -> str:
    head = "".join(f"<th{' class=name' if i == 0 else ''}>{html.escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(_cell(v, name=i == 0) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _per_class(section: dict, *, table_id: str) -> str:
    rows = [[c["class"], c["precision"], c["recall"], c["f1"], c["support"]] for c in section["per_class"]]
    return _table(["class", "precision", "recall", "f1", "support"], rows, table_id=table_id)


def _confusion(section: dict, *, table_id: str) -> str:
    names = [str(c["class"]) for c in section["per_class"]]
    rows = [[f"true {n}", *r] for n, r in zip(names, section["confusion_matrix"])]
    return _table(["true \\ predicted", *names], rows, table_id=table_id)


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _run_table(run: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items() if v is not None)
    rows = [
        ["command line", run["command_line"]],
        ["started", run["started"]],
        ["finished", run["finished"]],
        ["duration", f"{run['duration_s']:.2f} s"],
        ["versions", versions],
        ["machine", f"{run['machine']['platform']}, {run['machine']['cpu_count']} CPUs"],
    ]
    return _table(["", ""], rows, table_id="run")


def write_report(folder: Path, document: dict, *, title: str, plots: Sequence[str] = ()) -> Path:
    """Write ``folder/report.html`` from a metrics document (train's or evaluate's) and the PNGs ``plots``.

    The sections: the run, the fit (train only), the scores per set, then for each set the per-class
    table and (up to 30 classes) the confusion matrix, then the plots, embedded.
    """
    parts = [f"<h1>{html.escape(title)}</h1>"]
    sets = [name for name in ("train", "test") if name in document] or ["data"]
    scores = document if sets == ["data"] else None
    if "fit" in document:
        fit = document["fit"]
        css = "" if fit["converged"] else ' class="note"'
        parts.append("<h2>Fit</h2>")
        parts.append(
            _table(
                ["", ""],
                [
                    ["solver", fit["solver"]],
                    ["converged", "yes" if fit["converged"] else "no"],
                    ["stopping reason", fit["reason"]],
                    ["iterations", f"{fit['n_iter']} of max_iter {fit['max_iter']}"],
                    ["fit time", f"{document['fit_time_s']:.2f} s"],
                ],
                table_id="fit",
            ).replace("<table", f"<table{css}", 1)
        )
    parts.append("<h2>Scores</h2>")
    rows = []
    for name in sets:
        section = scores if scores is not None else document[name]
        rows.append([name, section["n_samples"], section["accuracy"], section["log_loss"]])
    parts.append(_table(["set", "samples", "accuracy", "log-loss"], rows, table_id="scores"))
    for name in sets:
        section = scores if scores is not None else document[name]
        parts.append(f"<h2>Per class, {html.escape(name)} set</h2>")
        parts.append(_per_class(section, table_id=f"per-class-{name}"))
        if len(section["per_class"]) <= 30:
            parts.append(f"<h2>Confusion matrix, {html.escape(name)} set</h2>")
            parts.append(_confusion(section, table_id=f"confusion-{name}"))
    images = [p for p in plots if (folder / p).exists()]
    if images:
        parts.append("<h2>Plots</h2>")
        parts.extend(_image(folder / p, alt=Path(p).stem.replace("_", " ")) for p in images)
    if "run" in document:
        parts.append("<h2>Run</h2>")
        parts.append(_run_table(document["run"]))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    path = folder / REPORT_FILE
    with atomic_write(path) as stream:
        stream.write(page.encode("utf-8"))
    return path
