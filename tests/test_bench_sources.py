"""benchmarks/bench_sources.py still runs: its quick form into a temporary folder (timings not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_bench_sources_quick(tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_sources.py", "--quick", "--no-news20", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for ext in ("csv", "json", "md"):
        assert (tmp_path / f"sources-partial.{ext}").stat().st_size > 0
    rows = json.loads((tmp_path / "sources-partial.json").read_text())["rows"]
    readers = {(r["format"], r["reader"]) for r in rows}
    assert ("csv", "softmaxkit.sources") in readers and ("csv", "pandas.read_csv") in readers
    assert ("parquet", "softmaxkit.sources") in readers and ("npy", "np.load") in readers
    # every reader saw every row of the generated table
    assert {r["rows"] for r in rows} == {20_000}
