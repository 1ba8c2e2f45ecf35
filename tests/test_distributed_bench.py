"""benchmarks/bench_distributed.py still runs: its quick form on 2 ranks and its NCCL check's CPU dry run.

The timings mean nothing here; what is checked is that both modes run end to end (in parallel, each
killed after a timeout), that an evaluation moves the ``((d + 1) C + 1) * 8`` bytes the README's model
uses, and that the dry run of the NCCL check finds the data-parallel model equal to the single-process one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_distributed.py"


def test_the_distributed_benchmark_runs(tmp_path):
    commands = {
        "quick": [sys.executable, str(BENCH), "--quick", "--ranks", "2", "--repeats", "1", "--out", str(tmp_path)],
        "nccl": [sys.executable, str(BENCH), "--nccl-check", "--dry-run", "--out", str(tmp_path)],
    }
    runs = {
        name: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, c in commands.items()
    }
    try:
        outputs = {name: run.communicate(timeout=300)[0] for name, run in runs.items()}
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
    for name, run in runs.items():
        assert run.returncode == 0, outputs[name]
    (row,) = json.loads((tmp_path / "distributed-quick.json").read_text())["rows"]
    assert row["ranks"] == 2 and row["rows_per_rank"] == 3000
    assert row["bytes_per_evaluation"] == ((54 + 1) * 7 + 1) * 8
    assert row["compute_ms"] > 0 and row["allreduce_ms"] > 0 and row["n_iter"] > 0
    assert (tmp_path / "distributed-quick.md").stat().st_size > 0
    (check,) = json.loads((tmp_path / "nccl_check-dry-run.json").read_text())["rows"]
    assert check["passed"] and check["backend"] == "gloo" and check["relative_coef_difference"] <= 1e-10
