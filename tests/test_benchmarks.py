"""The benchmark scripts still run: each one's quick form (and the GPU scripts' CPU dry runs), into
a temporary folder (seconds each).

The timings of these tiny runs mean nothing and are not asserted; what is checked is that every
script runs end to end, writes its three result files, and that the figures a reader relies on
are there and sane (the errors, the optimum reached).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"


def run_benchmark(script: str, *args: str, out: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def rows_of(out: Path, name: str) -> list[dict]:
    for ext in ("csv", "json", "md"):
        assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext} is empty"
    return json.loads((out / f"{name}.json").read_text())["rows"]


def test_bench_numerics_quick(tmp_path):
    run_benchmark("bench_numerics.py", "--quick", "--repeats", "1", "--warmup", "0", out=tmp_path)
    rows = rows_of(tmp_path, "numerics-quick")
    assert {r["operation"] for r in rows} == {"softmax", "log_softmax", "cross_entropy+grad"}
    assert {"softmaxkit", "scipy.special", "naive numpy"} <= {r["implementation"] for r in rows}
    assert all(r["median_ms"] > 0 for r in rows)
    ours = [r for r in rows if r["implementation"] == "softmaxkit"]
    assert ours and all(math.isfinite(r["ratio_to_scipy"]) and r["ratio_to_scipy"] > 0 for r in ours)


def test_bench_linear_ce_quick(tmp_path):
    run_benchmark("bench_linear_ce.py", "--quick", "--impls", "naive,softmaxkit", out=tmp_path)
    rows = {(r["impl"], r["dtype"]): r for r in rows_of(tmp_path, "linear_ce-quick")}
    assert set(rows) == {(i, d) for i in ("naive", "softmaxkit") for d in ("float32", "bfloat16")}
    for row in rows.values():
        assert "error" not in row and row["median_s"] > 0 and row["peak_extra_MiB"] > 0
    # What the benchmark reports as accuracy: float32 at rounding level, bf16 loss exact (float32).
    assert rows["softmaxkit", "float32"]["loss_rel_err"] < 1e-6
    assert rows["softmaxkit", "bfloat16"]["loss_rel_err"] < rows["naive", "bfloat16"]["loss_rel_err"] / 10
    assert rows["softmaxkit", "bfloat16"]["dw_rel_err"] <= rows["naive", "bfloat16"]["dw_rel_err"] * 1.05


def test_bench_linear_ce_rejects_unknown_implementation(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_linear_ce.py"), "--impls", "naive,fast", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "unknown fast" in done.stderr
    assert not any(tmp_path.iterdir())


def test_bench_fit_quick(tmp_path, datasets_dir):
    run_benchmark("bench_fit.py", "--quick", "--backends", "numpy", out=tmp_path)
    rows = {r["method"]: r for r in rows_of(tmp_path, "fit-partial")}
    ours = rows["softmaxkit SoftmaxRegression(newton-cg)"]
    reference = rows["sklearn LogisticRegression(lbfgs)"]
    for row in (ours, reference):
        assert row["dataset"] == "pendigits" and row["reached"] and row["gap"] <= 1e-6
    assert ours["ratio_to_sklearn"] > 0


def test_bench_auto_quick(tmp_path):
    run_benchmark("bench_auto.py", "--quick", out=tmp_path)
    rows = rows_of(tmp_path, "auto-quick")
    assert {r["dataset"] for r in rows} == {"iris", "mc-500x5x3"}
    for row in rows:
        assert row["reached"] and row["gap"] <= 1e-6 and row["ratio_to_sklearn"] > 0, row
    assert {r["solver_used"] for r in rows if r["method"].endswith("default (auto)")} == {"newton-cg"}


@pytest.mark.parametrize("script", ["bench_numerics.py", "bench_linear_ce.py", "bench_fit.py", "bench_auto.py"])
def test_benchmark_help_names_out_option(script):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "--out" in done.stdout


def test_gpu_linear_ce_dry_run(tmp_path):
    """The GPU script's own logic, on the CPU (Triton under its interpreter), before GPU time is spent."""
    import importlib.util
    import os

    env = dict(os.environ)
    if importlib.util.find_spec("triton") is not None:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_linear_ce.py"), "--dry-run", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    passed, total = map(int, done.stdout.split("parity: ")[1].split(" checks")[0].split("/"))
    assert passed == total > 0
    rows = {r["impl"]: r for r in rows_of(tmp_path, "linear_ce_gpu-dry-run")}
    expected = {"naive", "torch_chunked", "softmaxkit_torch"}
    if "TRITON_INTERPRET" in env:
        expected.add("softmaxkit_triton")
    assert set(rows) == expected
    assert all("error" not in r and r["median_ms"] > 0 for r in rows.values())


def test_gpu_check_dry_run(tmp_path):
    """The GPU check's fit table on the CPU (small data, the CPU standing in for CUDA)."""
    run_benchmark("gpu_check.py", "--dry-run", out=tmp_path)
    rows = rows_of(tmp_path, "gpu_check-dry-run")
    assert len(rows) == 7 and all(r["seconds"] > 0 and r["gap"] >= 0 for r in rows)
    assert min(r["gap"] for r in rows) == 0.0 and max(r["gap"] for r in rows) < 1e-3  # all near one optimum


def test_bench_torch_ops_quick(tmp_path):
    run_benchmark("bench_torch_ops.py", "--quick", "--repeats", "1", "--warmup", "0", "--threads", "1", out=tmp_path)
    rows = rows_of(tmp_path, "torch_ops-quick")
    assert {r["operation"] for r in rows} == {"softmax", "log_softmax", "logsumexp", "cross_entropy"}
    assert {r["mode"] for r in rows} == {"forward", "forward+backward"}
    assert all(r[f"{k}_ms"] > 0 for r in rows for k in ("ours", "torch", "naive"))


def test_bench_lbfgs_quick(tmp_path):
    run_benchmark("bench_lbfgs.py", "--quick", out=tmp_path)
    rows = {(r["case"], r["solver"]): r for r in rows_of(tmp_path, "lbfgs-quick")}
    assert set(rows) == {(c, s) for c in ("tfidf-50-classes", "digits") for s in ("ours", "scipy")}
    for case in ("tfidf-50-classes", "digits"):
        ours, scipy = rows[case, "ours"], rows[case, "scipy"]
        assert ours["median_s"] > 0 and ours["ratio"] > 0
        # the same stopping rule to the same tol: about as many iterations, the same objective to about tol
        assert 0.7 * scipy["iterations"] - 5 <= ours["iterations"] <= 1.3 * scipy["iterations"] + 5
        assert abs(ours["objective"] - scipy["objective"]) <= 1e-5 * scipy["objective"]
