"""Out-of-core training: `softmaxkit train` on a generated CSV and a folder of Parquet files under a memory budget.

One command::

    python benchmarks/bench_out_of_core.py            # 10,000,000 x 50 floats, 10 classes, --max-memory 512MiB

generates the table under the temporary folder (the CSV is about 9 GB at 10 million rows: check
the free space first; the data is deleted at the end), then, each in a fresh process whose peak
resident memory (VmHWM of /proc/self/status) is recorded:

* ``softmaxkit train data.csv --max-memory 512MiB --cache`` (the CSV parsed once into a float32 cache),
* ``softmaxkit train parts/ --max-memory 512MiB`` (the Parquet folder streamed at every pass),

and, on the first ``--check-rows`` rows, the full-batch fit from a source against the same fit
in memory (relative differences of the objective and of the coefficients; the target is 1e-8).
Results: ``results/out_of_core.{csv,json,md}`` (``out_of_core-partial`` for any other size).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, environment, write_results

from softmaxkit.cli._stream import batch_bytes, memory_size

_TRAIN = """
import json, sys, time
from softmaxkit.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - start
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print("BENCH " + json.dumps({"code": code, "seconds": seconds, "peak": peak}))
"""

_CHECK = """
import json, sys, warnings
import numpy as np, pyarrow.csv
from softmaxkit.linear_model import SoftmaxRegression
from softmaxkit.sources import CsvSource
path, max_bytes, solver = sys.argv[1], int(sys.argv[2]), sys.argv[3]
options = {"solver": solver, "alpha": 1e-4, "tol": 1e-12, "max_iter": 1000}
streamed = SoftmaxRegression(**options).fit(CsvSource(path, target="label", max_bytes=max_bytes))
table = pyarrow.csv.read_csv(path)
X = np.column_stack([table.column(n).to_numpy() for n in table.column_names if n != "label"])
memory = SoftmaxRegression(**options).fit(X, table.column("label").to_numpy())
print("BENCH " + json.dumps({
    "objective_rel_diff": abs(streamed.loss_curve_[-1] - memory.loss_curve_[-1]) / abs(memory.loss_curve_[-1]),
    "coef_rel_diff": float(np.abs(streamed.coef_ - memory.coef_).max() / np.abs(memory.coef_).max()),
    "n_iter": [streamed.n_iter_, memory.n_iter_],
}))
"""


def generate(folder: Path, n_rows: int, n_features: int, n_classes: int, *, chunk: int = 500_000) -> dict:
    """The CSV, the Parquet folder (one file per chunk of rows) and the CSV of the first chunk, from one stream."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(n_features, n_classes)) / np.sqrt(n_features)
    scales = rng.uniform(0.5, 5.0, size=n_features)
    csv_path, parts = folder / "data.csv", folder / "parts"
    parts.mkdir()
    names = [f"x{j}" for j in range(n_features)]
    with pa.OSFile(str(csv_path), "wb") as sink:
        writer = None
        for k, start in enumerate(range(0, n_rows, chunk)):
            n = min(chunk, n_rows - start)
            X = rng.normal(size=(n, n_features)) * scales
            y = np.argmax((X / scales) @ weights * 2.0 + rng.gumbel(size=(n, n_classes)), axis=1)
            table = pa.table({**{name: X[:, j] for j, name in enumerate(names)}, "label": y})
            if writer is None:
                writer = pyarrow.csv.CSVWriter(sink, table.schema)
            writer.write_table(table)
            pq.write_table(table, parts / f"part-{k:05d}.parquet", row_group_size=65_536)
            if k == 0:
                pyarrow.csv.write_csv(table, folder / "subset.csv")
        writer.close()
    return {"csv": csv_path, "parquet": parts, "subset": folder / "subset.csv"}


def run_child(script: str, *argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines or json.loads(lines[-1][len("BENCH ") :]).get("code", 0) != 0:
        raise RuntimeError(f"{argv} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH ") :])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--max-memory", default="512MiB", help="the commands' --max-memory (default 512MiB)")
    parser.add_argument("--check-rows", type=int, default=500_000, help="rows of the streamed-vs-in-memory check")
    parser.add_argument("--quick", action="store_true", help="20,000 rows (a smoke run)")
    parser.add_argument("--tmp", type=Path, default=None, help="where the data is generated (default: the temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    defaults = all(getattr(args, k) == parser.get_default(k) for k in ("rows", "features", "classes", "max_memory"))
    stem = "out_of_core" if defaults and not args.quick else "out_of_core-partial"
    if args.quick:
        args.rows, args.check_rows = 20_000, 5_000
    chunk = min(args.check_rows, args.rows)
    env = environment(("softmaxkit", "numpy", "scipy", "pyarrow"))
    folder = Path(tempfile.mkdtemp(prefix="bench-out-of-core-", dir=args.tmp))
    rows_out = []
    try:
        start = time.perf_counter()
        paths = generate(folder, args.rows, args.features, args.classes, chunk=chunk)
        size = paths["csv"].stat().st_size
        print(
            f"generated {args.rows} x {args.features} ({size / 1e9:.2f} GB of CSV) in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
        cases = [
            ("csv", paths["csv"], ["--cache"]),
            ("parquet folder", paths["parquet"], []),
        ]
        for fmt, path, extra in cases:
            out = folder / f"run-{fmt.split()[0]}"
            command = ["train", str(path), "--max-memory", args.max_memory, "--stream", "--no-plots", "--quiet"]
            command += ["--out", str(out)]
            result = run_child(_TRAIN, *command, *extra)
            report = json.loads((out / "metrics.json").read_text())
            row = {
                "data": fmt,
                "rows": args.rows,
                "options": " ".join(["--max-memory", args.max_memory, "--stream", *extra]),
                "streamed": bool(report["dataset"].get("streamed")),
                "solver": report["fit"]["solver"],
                "n_iter": report["n_iter"],
                "seconds": round(result["seconds"], 1),
                "fit_s": round(report["fit_time_s"], 1),
                "peak_MiB": round(result["peak"] / 2**20, 1),
                "test_accuracy": round(report["test"]["accuracy"], 4),
            }
            rows_out.append(row)
            print(row, flush=True)
        budget = batch_bytes(memory_size(args.max_memory))  # the batches of the commands above
        for solver in ("lbfgs", "newton-cg"):
            check = run_child(_CHECK, str(paths["subset"]), str(budget), solver)
            rows_out.append(
                {
                    "data": f"csv, first {chunk} rows",
                    "rows": chunk,
                    "options": f"fit(CsvSource) vs fit(X, y), {solver}, tol 1e-12",
                    "solver": solver,
                    "n_iter": "/".join(map(str, check["n_iter"])),
                    "objective_rel_diff": f"{check['objective_rel_diff']:.1e}",
                    "coef_rel_diff": f"{check['coef_rel_diff']:.1e}",
                }
            )
            print(rows_out[-1], flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    columns = [
        "data",
        "rows",
        "options",
        "streamed",
        "solver",
        "n_iter",
        "seconds",
        "fit_s",
        "peak_MiB",
        "test_accuracy",
        "objective_rel_diff",
        "coef_rel_diff",
    ]
    notes = [
        "command: "
        + " ".join(["python", "benchmarks/bench_out_of_core.py", *(sys.argv[1:] if argv is None else argv)]),
        f"table: {args.rows} x {args.features} float64 normal features (scales 0.5-5), {args.classes} classes from "
        "a random linear model with Gumbel noise; CSV by pyarrow's writer, Parquet in files of "
        f"{chunk} rows (row groups of 65,536)",
        "seconds: the whole `softmaxkit train` run (cache, standardisation passes, fit, metrics passes); "
        "peak_MiB: its peak resident memory (VmHWM), interpreter and libraries included",
        "the last rows: the full-batch fit from a source against the same fit in memory (target 1e-8)",
    ]
    paths = write_results(
        stem, rows_out, env, title="Out-of-core training", columns=columns, notes=notes, results_dir=args.out
    )
    print(f"wrote {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
