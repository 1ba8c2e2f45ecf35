"""Out-of-core data sources: rows/s and peak memory per format, beside reading the whole file at once.

Usage: ``python benchmarks/bench_sources.py [--rows 1000000] [--features 50] [--max-bytes 67108864] [--quick]``

Generates a float table of ``rows x features`` (values rounded to 4 decimals, an integer label of 10
classes) as CSV, Parquet (row groups of 65,536 rows) and ``.npy``, and uses news20 (sparse svmlight,
``.gz``) from ``/work/shared/datasets``. Each measurement runs in a fresh child process, which
reports its wall time and its peak resident memory (``VmHWM``: ``ru_maxrss`` carries the forking
parent's peak over ``exec`` on Linux) over its baseline after the imports:

* ``softmaxkit.sources``: one pass over the source (every batch built and checked), and a pass over
  its float32 on-disk cache (``cache_source``), the cache written beforehand and not timed;
* the whole file at once: ``pandas.read_csv``, ``pyarrow.csv.read_csv``, ``pyarrow.parquet.read_table``
  (+ ``to_numpy``), ``np.load`` (a copy, as a reader that must hold the rows), ``load_svmlight_file``.

The default run writes ``results/sources.{csv,json,md}``; ``--quick`` or other sizes write
``results/sources-partial.*``.
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

NEWS20 = Path("/work/shared/datasets/news20/news20.svm.gz")

# The child: imports, then one job, then its time and its peak over the baseline after the imports.
CHILD = r"""
import json, sys, time


def peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


job, path, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy as np
import pyarrow, pyarrow.csv, pyarrow.parquet, pandas, sklearn.datasets, scipy.sparse
from softmaxkit import sources

if job.startswith("ours"):
    kinds = {"csv": sources.CsvSource, "parquet": sources.ParquetSource, "npy": None, "svmlight": None}
    fmt = job.split(":")[1]
    if fmt == "npy":
        source = sources.ArraySource(path, path.replace("X.npy", "y.npy"), max_bytes=max_bytes)
    elif fmt == "svmlight":
        source = sources.SvmlightSource(path, n_features=62061, zero_based=False, max_bytes=max_bytes)
    else:
        source = kinds[fmt](path, max_bytes=max_bytes)
    cached = None
    if job.startswith(("ours-cached", "ours-cache-write")):
        # the cache folder beside the data; ours-cache-write times the pass that writes it, ours-cached
        # (a later child) a pass over it, reused through its manifest
        folder = path + ".cache"
        if job.startswith("ours-cached"):
            source = cached = sources.cache_source(source, dtype=np.float32, directory=folder, max_bytes=max_bytes)
    base = peak()
    start = time.perf_counter()
    rows = batches = 0
    if job.startswith("ours-cache-write"):
        written = sources.cache_source(source, dtype=np.float32, directory=folder, max_bytes=max_bytes)
        rows, batches = written.n_rows, 0
    else:
        for X, y, w in source:
            rows += X.shape[0]
            batches += 1
    seconds = time.perf_counter() - start
    if cached is not None:
        cached.close()
else:
    base = peak()
    start = time.perf_counter()
    if job == "pandas.read_csv":
        X = pandas.read_csv(path).to_numpy()
    elif job == "pyarrow.csv.read_csv":
        X = pyarrow.csv.read_csv(path)
    elif job == "pyarrow.parquet.read_table":
        X = np.column_stack([c.to_numpy() for c in pyarrow.parquet.read_table(path).columns])
    elif job == "np.load":
        X = np.array(np.load(path))
    elif job == "load_svmlight_file":
        X, y = sklearn.datasets.load_svmlight_file(path, n_features=62061)
    seconds = time.perf_counter() - start
    rows, batches = X.shape[0] if hasattr(X, "shape") else X.num_rows, 1
print(json.dumps({"seconds": seconds, "rows": rows, "batches": batches, "peak_over_base": peak() - base, "base": base}))
"""


READERS = {
    "ours": "softmaxkit.sources",
    "ours-cache-write": "softmaxkit cache_source (write float32)",
    "ours-cached": "softmaxkit cached (float32)",
}


def generate(folder: Path, rows: int, features: int) -> dict[str, Path]:
    """The table as CSV, Parquet and .npy (written in slices, so the generator's memory stays small)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    paths = {"csv": folder / "table.csv", "parquet": folder / "table.parquet", "npy": folder / "X.npy"}
    X = np.lib.format.open_memmap(paths["npy"], mode="w+", dtype=np.float64, shape=(rows, features))
    y = np.empty(rows, dtype=np.int64)
    names = [f"f{j}" for j in range(features)] + ["label"]
    schema = pa.schema([(n, pa.float64()) for n in names[:-1]] + [("label", pa.int64())])
    step = 65_536
    with (
        pacsv.CSVWriter(paths["csv"], schema) as csv_writer,
        pq.ParquetWriter(paths["parquet"], schema) as parquet_writer,
    ):
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            block = np.round(rng.standard_normal((stop - start, features)) * 3, 4)
            labels = rng.integers(0, 10, stop - start)
            X[start:stop], y[start:stop] = block, labels
            table = pa.table([*block.T, labels], schema=schema)
            csv_writer.write_table(table)
            parquet_writer.write_table(table)
    X.flush()
    del X
    np.save(folder / "y.npy", y)
    return paths


def run_child(job: str, path: Path, max_bytes: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, job, str(path), str(max_bytes)], capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"{job} on {path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--max-bytes", type=int, default=1 << 26, help="the sources' batch budget (default 64 MiB)")
    parser.add_argument("--quick", action="store_true", help="20,000 rows (a smoke run)")
    parser.add_argument("--no-news20", action="store_true", help="skip news20")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results (default results/)")
    args = parser.parse_args(argv)
    defaults = all(getattr(args, k) == parser.get_default(k) for k in ("rows", "features", "max_bytes", "quick"))
    stem = "sources" if defaults and not args.no_news20 else "sources-partial"
    if args.quick:
        args.rows = 20_000
    env = environment(("softmaxkit", "numpy", "pyarrow", "pandas", "scikit-learn"))
    folder = Path(tempfile.mkdtemp(prefix="bench-sources-"))
    rows_out = []
    try:
        start = time.perf_counter()
        paths = generate(folder, args.rows, args.features)
        print(f"generated {args.rows} x {args.features} in {time.perf_counter() - start:.1f} s", flush=True)
        cases = [
            (
                "csv",
                paths["csv"],
                ["ours:csv", "ours-cache-write:csv", "ours-cached:csv", "pandas.read_csv", "pyarrow.csv.read_csv"],
            ),
            ("parquet", paths["parquet"], ["ours:parquet", "pyarrow.parquet.read_table"]),
            ("npy", paths["npy"], ["ours:npy", "np.load"]),
        ]
        if not args.no_news20 and NEWS20.exists():
            news20 = folder / NEWS20.name  # a copy: the cache is written beside its file
            shutil.copyfile(NEWS20, news20)
            jobs = ["ours:svmlight", "ours-cache-write:svmlight", "ours-cached:svmlight", "load_svmlight_file"]
            cases.append(("svmlight (news20)", news20, jobs))
        for fmt, path, jobs in cases:
            for job in jobs:
                result = run_child(job, path, args.max_bytes)
                row = {
                    "format": fmt,
                    "reader": READERS.get(job.split(":")[0], job),
                    "file_MB": round(path.stat().st_size / 1e6, 1),
                    "rows": result["rows"],
                    "batches": result["batches"],
                    "seconds": round(result["seconds"], 3),
                    "rows_per_s": round(result["rows"] / result["seconds"]),
                    "peak_MB": round(result["peak_over_base"] / 1e6, 1),
                    "base_MB": round(result["base"] / 1e6, 1),
                }
                rows_out.append(row)
                print(row, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    columns = ["format", "reader", "file_MB", "rows", "batches", "seconds", "rows_per_s", "peak_MB"]
    notes = [
        "command: " + " ".join(["python", "benchmarks/bench_sources.py", *(sys.argv[1:] if argv is None else argv)]),
        f"table: {args.rows} x {args.features} float64 (4 decimals) + an int label; max_bytes {args.max_bytes}",
        "peak_MB: the child's peak resident memory (VmHWM) over its baseline after the imports",
        "one pass each, in a fresh process; 'cached' reads the float32 np.memmap that the 'write' child left",
    ]
    paths = write_results(
        stem, rows_out, env, title="Data sources: one pass", columns=columns, notes=notes, results_dir=args.out
    )
    print(f"wrote {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
