"""Benchmark: the data-parallel fit (``softmaxkit.distributed``) on 1, 2 and 4 local gloo ranks.

Usage (from the repository root)::

    python benchmarks/bench_distributed.py            # writes results/distributed.{csv,json,md}
    python benchmarks/bench_distributed.py --quick    # small data, 1 and 2 ranks: results/distributed-quick.*

Each world size starts its ranks as processes of this script (``--rank``; a rendezvous file, one
BLAS thread each) on synthetic covtype-shaped data (``--rows`` rows in all, 54 features, 7 classes;
each rank a contiguous shard). Per rank count it measures, on rank 0 (medians of ``--repeats``):

* ``compute_ms``: one local loss-and-gradient pass over the rank's rows (no communication);
* ``allreduce_ms``: one all-reduce of the ``(n_features + 1) * n_classes + 1`` float64 numbers an
  evaluation sums, alone;
* ``evaluation_ms``: one global evaluation (the local pass, then the all-reduce), what L-BFGS pays
  per iteration (about one evaluation per iteration, one pass over the data: an "epoch");
* ``bytes_per_evaluation``: the all-reduce's payload per rank;
* ``fit_s``, ``n_iter``: ``fit_distributed`` with lbfgs to ``tol=1e-8`` (the same optimum for
  every world size), wall time of the fit alone.

``--nccl-check`` (run by ``gpu_check.py`` on GPU machines) is a correctness check instead: one rank per
CUDA device on NCCL, ``backend="torch"`` in float64 on each rank's GPU, lbfgs to ``tol=1e-12`` on 20,000
rows; rank 0 compares the model with the single-process NumPy fit (coefficients and objective within
1e-10 relative) and writes ``nccl_check.json``; the exit status says whether it passed. With
``--dry-run`` it runs the same logic on 2 CPU ranks over gloo (what the test suite checks).

The ranks share the machine's cores: on the 2-core development machine 4 ranks cannot be faster
than 2, and the numbers are informational. ``benchmarks/README.md`` turns them into a model of the
time per epoch at other rank counts and sizes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import environment, write_results  # noqa: E402

N_FEATURES, N_CLASSES, ALPHA = 54, 7, 1e-4
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def make_data(n_rows: int, rows: slice):
    """The rows ``rows`` of the synthetic problem (generated in blocks, so that every rank sees the same data)."""
    block = 10_000
    X_parts, y_parts = [], []
    for start in range(rows.start // block * block, rows.stop, block):
        rng = np.random.default_rng([17, start // block])
        X = rng.normal(size=(min(block, n_rows - start), N_FEATURES))
        W = np.random.default_rng(3).normal(size=(N_FEATURES, N_CLASSES)) / np.sqrt(N_FEATURES)
        logits = X @ W * 3 + rng.gumbel(size=(X.shape[0], N_CLASSES))
        y = np.argmax(logits, axis=1)
        lo, hi = max(rows.start - start, 0), min(rows.stop - start, X.shape[0])
        X_parts.append(X[lo:hi])
        y_parts.append(y[lo:hi])
    return np.vstack(X_parts), np.concatenate(y_parts)


def _median_ms(fn, repeats: int) -> float:
    for _ in range(3):  # warm-up (the row kernel loads on first use)
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def worker(rank: int, world_size: int, directory: Path, n_rows: int, repeats: int) -> None:
    import torch.distributed as dist

    from softmaxkit._distributed._communicator import Communicator
    from softmaxkit._distributed._objective import Shard, global_objective
    from softmaxkit.distributed import fit_distributed, shard_rows
    from softmaxkit.linear_model import SoftmaxRegression
    from softmaxkit.linear_model._objective import make_objective

    dist.init_process_group(
        "gloo",
        init_method=f"file://{directory / 'rendezvous'}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=300),
    )
    rows = shard_rows(n_rows, rank=rank, world_size=world_size)
    X, y = make_data(n_rows, rows)
    comm = Communicator()
    shape = (N_FEATURES + 1, N_CLASSES)
    options = {"n_classes": N_CLASSES, "fit_intercept": True, "label_smoothing": 0.0, "dtype": np.float64}
    local = make_objective("numpy", None, X, y, None, 0.0, **options)
    shard = Shard(rows.start, X.shape[0], float(X.shape[0]), n_rows, float(n_rows))
    objective = global_objective(local, comm, shard, alpha=ALPHA, n_features=N_FEATURES, shape=shape, dtype=np.float64)
    x = np.random.default_rng(0).normal(size=int(np.prod(shape))) * 0.01
    packed = np.zeros(1 + x.size)

    def timed(fn):
        dist.barrier()
        return _median_ms(fn, repeats)

    compute = timed(lambda: local.loss_gradient(x))
    allreduce = timed(lambda: comm.sum(packed))
    calls, sent = comm.calls, comm.bytes
    evaluation = timed(lambda: objective.loss_gradient(x))
    per_evaluation = (comm.bytes - sent) // max(comm.calls - calls, 1)
    dist.barrier()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit_distributed(SoftmaxRegression(alpha=ALPHA, solver="lbfgs", tol=1e-8), X, y)
    fit_s = time.perf_counter() - start
    if rank == 0:
        row = {
            "ranks": world_size,
            "rows": n_rows,
            "rows_per_rank": X.shape[0],
            "compute_ms": compute,
            "allreduce_ms": allreduce,
            "evaluation_ms": evaluation,
            "bytes_per_evaluation": int(per_evaluation),
            "fit_s": fit_s,
            "n_iter": int(model.n_iter_),
            "final_loss": float(model.loss_curve_[-1]),
        }
        (directory / "row.json").write_text(json.dumps(row))
    dist.destroy_process_group()


NCCL_ROWS = 20_000


def nccl_worker(rank: int, world_size: int, directory: Path, dry_run: bool) -> None:
    """One rank of ``--nccl-check``: the torch backend on this rank's GPU (or the CPU with gloo for a dry run)."""
    import torch
    import torch.distributed as dist

    from softmaxkit.distributed import fit_distributed, shard_rows
    from softmaxkit.linear_model import SoftmaxRegression
    from softmaxkit.linear_model._loss import loss

    if not dry_run:
        torch.cuda.set_device(rank)
    dist.init_process_group(
        "gloo" if dry_run else "nccl",
        init_method=f"file://{directory / 'rendezvous'}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=300),
    )
    rows = shard_rows(NCCL_ROWS, rank=rank, world_size=world_size)
    X, y = make_data(NCCL_ROWS, rows)
    options = {"alpha": 1e-3, "solver": "lbfgs", "tol": 1e-12, "max_iter": 1000}
    device = "cpu" if dry_run else f"cuda:{rank}"
    model = fit_distributed(SoftmaxRegression(**options, backend="torch", device=device, dtype=np.float64), X, y)
    if rank == 0:
        X_all, y_all = make_data(NCCL_ROWS, slice(0, NCCL_ROWS))
        reference = SoftmaxRegression(**options).fit(X_all, y_all)
        ours = np.hstack([model.coef_, model.intercept_[:, None]])
        theirs = np.hstack([reference.coef_, reference.intercept_[:, None]])
        f_ours, f_theirs = (loss(c, X_all, y_all, None, options["alpha"]) for c in (ours, theirs))
        row = {
            "world_size": world_size,
            "backend": dist.get_backend(),
            "device": device,
            "relative_coef_difference": float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)),
            "relative_objective_difference": float(abs(f_ours - f_theirs) / abs(f_theirs)),
            "n_iter": int(model.n_iter_),
        }
        row["passed"] = row["relative_coef_difference"] <= 1e-10 and row["relative_objective_difference"] <= 1e-10
        (directory / "row.json").write_text(json.dumps(row))
    dist.destroy_process_group()


def nccl_check(out: Path, dry_run: bool) -> int:
    """``--nccl-check``: one rank per CUDA device (2 CPU ranks for a dry run); 0 when the models agree."""
    if dry_run:
        world_size = 2
    else:
        import torch

        if not torch.cuda.is_available():
            print("--nccl-check needs CUDA: PyTorch sees no CUDA device", file=sys.stderr)
            return 2
        world_size = torch.cuda.device_count()
    extra = ["--nccl-check"] + (["--dry-run"] if dry_run else [])
    row = run_world(world_size, NCCL_ROWS, 1, extra=extra)
    print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    name = "nccl_check-dry-run.json" if dry_run else "nccl_check.json"
    (out / name).write_text(json.dumps({"environment": environment(), "rows": [row]}, indent=2) + "\n")
    return 0 if row["passed"] else 1


def run_world(world_size: int, n_rows: int, repeats: int, extra=()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        command = [sys.executable, __file__, "--rows", str(n_rows), "--repeats", str(repeats), "--dir", tmp, *extra]
        env = {**os.environ, **ONE_THREAD}
        ranks = [
            subprocess.Popen([*command, "--rank", str(r), "--world", str(world_size)], env=env)
            for r in range(world_size)
        ]
        try:
            codes = [p.wait(timeout=1800) for p in ranks]
        finally:
            for p in ranks:
                if p.poll() is None:
                    p.kill()
        if any(codes):
            raise SystemExit(f"a rank of {world_size} failed: exit codes {codes}")
        return json.loads((directory / "row.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6,000 rows, 1 and 2 ranks, 3 repeats")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--ranks", type=int, nargs="+", help="world sizes (default 1 2 4; --quick: 1 2)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--nccl-check", action="store_true", help="NCCL correctness check, one rank per GPU")
    parser.add_argument("--dry-run", action="store_true", help="with --nccl-check: 2 CPU ranks on gloo")
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        if args.nccl_check:
            nccl_worker(args.rank, args.world, args.dir, args.dry_run)
        else:
            worker(args.rank, args.world, args.dir, args.rows, args.repeats)
        return 0
    if args.nccl_check:
        return nccl_check(args.out, args.dry_run)
    if args.quick:
        args.rows, args.repeats = 6_000, min(args.repeats, 3)
    if args.ranks is None:
        args.ranks = [1, 2] if args.quick else [1, 2, 4]
    env = environment()
    rows = []
    for world_size in args.ranks:
        row = run_world(world_size, args.rows, args.repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    single = rows[0]
    for row in rows:
        # the model of benchmarks/README.md: compute per row (from the smallest world) times rows per rank, plus
        # this world's all-reduce
        per_row_ms = single["compute_ms"] / single["rows_per_rank"]
        row["model_evaluation_ms"] = per_row_ms * row["rows_per_rank"] + row["allreduce_ms"]
        row["speedup_fit"] = single["fit_s"] / row["fit_s"]
    name = "distributed-quick" if args.quick else "distributed"
    columns = [
        "ranks",
        "rows_per_rank",
        "compute_ms",
        "allreduce_ms",
        "evaluation_ms",
        "model_evaluation_ms",
        "bytes_per_evaluation",
        "n_iter",
        "fit_s",
        "speedup_fit",
        "final_loss",
    ]
    notes = [
        f"synthetic data: {args.rows} rows x {N_FEATURES} features x {N_CLASSES} classes, float64, alpha={ALPHA}; "
        "lbfgs to tol=1e-8",
        "local gloo ranks on this machine, one BLAS thread each: they share its cores",
        "model_evaluation_ms = (compute_ms / rows_per_rank of the first row) x rows_per_rank + allreduce_ms",
    ]
    write_results(
        name,
        rows,
        env,
        title="Data-parallel fit on local gloo ranks",
        columns=columns,
        notes=notes,
        results_dir=args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
