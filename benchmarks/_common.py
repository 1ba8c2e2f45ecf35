"""Small helpers shared by the benchmarks in this folder (not part of the package).

The whole API:

* ``measure(candidates, repeats=5, warmup=1)``: time several callables that do the same job,
  interleaved (one call of each per round, so that load from other processes hits them alike),
  after ``warmup`` untimed rounds; returns a :class:`Timing` (median, min, max, spread of the wall
  time, and the median CPU time of this process, all threads) per name. On a shared machine the
  CPU time of single-threaded code is the steadier number; wall time is what users wait for.
* ``environment()``: machine, CPU, thread settings, library versions and the date, as a dict.
* ``copy_references(x)``: the memory-bandwidth references for a kernel that reads ``x`` and writes an
  array of its size: ``"copy"`` (``x.copy()``: the same bytes read and written, into a fresh array as
  every such function returns, page faults included) and ``"copyto"`` (``np.copyto`` into an array
  written before: the bandwidth alone); time them in the same ``measure`` rounds as the kernels.
* ``write_results(name, rows, env, *, title, columns, notes=())``: writes ``results/<name>.csv``,
  ``results/<name>.json`` and ``results/<name>.md`` (a Markdown table under a header with ``env``).
  Existing result files of the same name are replaced: they are this script's own output.

Example::

    timings = measure({"ours": lambda: f(x), "scipy": lambda: g(x)}, repeats=5)
    rows = [{"case": "x", "impl": k, "median_s": t.median, "spread_s": t.spread} for k, t in timings.items()]
    write_results("example", rows, environment(), title="Example", columns=["case", "impl", "median_s"])
"""

from __future__ import annotations

import csv
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repeats; ``spread`` is ``max - min`` of the wall time;
    ``cpu_median`` is the median CPU time of the process (summed over its threads)."""

    median: float
    min: float
    max: float
    spread: float
    cpu_median: float
    repeats: int


def measure(candidates: Mapping[str, Callable[[], object]], *, repeats: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Median (and spread) of the wall time of each callable, calls interleaved round by round."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    cpu_samples: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + repeats):
        for name, fn in candidates.items():
            gc.collect()
            cpu_start, start = time.process_time(), time.perf_counter()
            result = fn()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            del result
            if round_index >= warmup:
                samples[name].append(elapsed)
                cpu_samples[name].append(cpu)
    return {
        name: Timing(
            statistics.median(s), min(s), max(s), max(s) - min(s), statistics.median(cpu_samples[name]), len(s)
        )
        for name, s in samples.items()
    }


def copy_references(x) -> dict[str, Callable[[], object]]:
    """``{"copy": x.copy(), "copyto": np.copyto into a preallocated array}``: see the module docstring."""
    import numpy as np

    target = np.empty_like(x)
    target[...] = 0  # written once, so that no page fault is left for the timed copies
    return {"copy": lambda: x.copy(), "copyto": lambda: np.copyto(target, x)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(packages: Sequence[str] = ("softmaxkit", "numpy", "scipy", "torch")) -> dict:
    """Where and with what the numbers were measured."""
    env = {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in packages},
        "env": {
            k: os.environ.get(k)
            for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        },
    }
    try:
        import threadpoolctl

        env["thread_pools"] = [
            {k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for info in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        pass
    return env


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_results(
    name: str,
    rows: Sequence[Mapping],
    env: Mapping,
    *,
    title: str,
    columns: Sequence[str],
    notes: Sequence[str] = (),
    results_dir: Path = RESULTS_DIR,
) -> dict[str, Path]:
    """Write ``<name>.csv`` (all fields), ``<name>.json`` (env + rows) and ``<name>.md`` (``columns``)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: results_dir / f"{name}.{ext}" for ext in ("csv", "json", "md")}
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps({"environment": env, "rows": list(rows)}, indent=2, default=str) + "\n")
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    lines = [
        f"# {title}",
        "",
        f"- date: {env.get('date_utc')}",
        f"- machine: {env.get('cpu')}, {env.get('logical_cpus')} logical CPUs, {env.get('platform')}"
        f" (1-minute load average at the start: {env.get('load_average_1m')})",
        f"- Python {env.get('python')}; {versions}",
        f"- environment: {', '.join(f'{k}={v}' for k, v in env.get('env', {}).items())}",
    ]
    if env.get("thread_pools"):
        pools = "; ".join(
            f"{p['internal_api']} {p.get('version') or ''} {p['num_threads']} threads {p.get('architecture') or ''}".strip()
            for p in env["thread_pools"]
        )
        lines.append(f"- thread pools: {pools}")
    lines += [f"- {note}" for note in notes]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row.get(c)) for c in columns) + " |" for row in rows]
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths


__all__ = ["RESULTS_DIR", "Timing", "copy_references", "environment", "measure", "write_results"]
