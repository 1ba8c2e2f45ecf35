"""benchmarks/bench_linear_ce.py --modes: the compiled and forward-only cases run and write their tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # five child processes, one of them compiling: about 25 CPU seconds
def test_modes_quick(tmp_path):
    script = REPO_ROOT / "benchmarks" / "bench_linear_ce.py"
    args = [sys.executable, str(script), "--modes", "--quick", "--out", str(tmp_path)]
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "linear_ce_modes-quick.json").read_text())["rows"]
    modes = {(r["dtype"], r["mode"]) for r in rows if "cpu_s" in r}
    assert len(modes) == 10, rows  # five modes, two dtypes, none failed
    assert all(r["cpu_s"] > 0 for r in rows)
    assert all(r["compile_s"] > 0 for r in rows if r["mode"] == "train_compiled")
    assert (tmp_path / "linear_ce_modes-quick.md").stat().st_size > 0
