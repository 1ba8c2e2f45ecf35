"""``softmaxkit train --distributed``: the data-parallel fit, one process per rank, started by ``torchrun``.

Every rank runs the same command (``torchrun --nproc-per-node N -m softmaxkit train DATA
--distributed ...``) and takes its part of the data: of a file, the contiguous row range
:func:`softmaxkit.distributed.shard_rows` gives it (the file is parsed on every rank, each keeping
its rows); of a folder of Parquet files, a contiguous range of the files in name order (each rank
reads only its own files, so the data need not fit one machine). ``--test`` is split the same way;
``--test-size`` holds out that fraction of each rank's rows (stratified where it can be).

Everything global is global: the standardisation (the column means and deviations of all the
training rows), the fit (:func:`softmaxkit.distributed.fit_distributed`), the metrics (confusion
matrices and log-loss sums added over the ranks). Rank 0 alone prints and writes the output
folder; the model file and metrics.json are those of a single-process run, with the world size
recorded. A refused input on any rank stops every rank with the message of the rank that refused it.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
import warnings
from pathlib import Path

import numpy as np

from softmaxkit.cli import _checkpointing, _report, _train
from softmaxkit.cli._common import (
    METRICS_CHUNK_BYTES,
    METRICS_FILE,
    MODEL_FILE,
    CLIError,
    MetricsAccumulator,
    UsageError,
    check_out_dir,
    class_indices,
    write_json,
)
from softmaxkit.cli._read import Dataset, infer_image_shape, read_dataset

__all__ = ["extend_train", "refuse_torchrun_without_flag", "run_distributed", "run_train"]

# The variables torchrun (and Slurm, Kubernetes or Ray launchers made to look like it) sets for each rank.
_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def extend_train(parser: argparse.ArgumentParser) -> None:
    """Give ``train``'s parser the ``--distributed`` option, and :func:`run_train` as its command.

    The single-process command the parser had (in memory or streamed) stays the one run without the flag.
    """
    parser.set_defaults(run=functools.partial(run_train, single_process=parser.get_default("run")))
    parser.add_argument_group("data-parallel training").add_argument(
        "--distributed",
        action="store_true",
        help="train data-parallel over the ranks of torchrun (each rank its rows or Parquet files; rank 0 writes)",
    )


def run_train(args: argparse.Namespace, *, single_process) -> int:
    """``train``: the data-parallel run with ``--distributed``, else ``single_process(args)``."""
    refuse_torchrun_without_flag(args)
    if not args.distributed:
        return single_process(args)
    import torch.distributed as dist

    started_here = dist.is_available() and not dist.is_initialized()
    try:
        return run_distributed(args)
    finally:
        # A rank that leaves with its group alive may abort at exit ("terminate called without an active
        # exception": gloo's threads torn down by the interpreter); seen in 2 of 6 checkpointed runs.
        if started_here and dist.is_initialized():
            dist.destroy_process_group()


def refuse_torchrun_without_flag(args: argparse.Namespace) -> None:
    """Under a launcher with several ranks, every rank would train on all the data and write the same folder."""
    world = os.environ.get("WORLD_SIZE")
    if not args.distributed and world is not None and world.isdigit() and int(world) > 1:
        raise UsageError(f"train runs under a launcher with WORLD_SIZE={world}: add --distributed")


def _process_group(args: argparse.Namespace):
    """The communicator of the default group, initialised from torchrun's variables unless it already is."""
    import torch.distributed as dist

    from softmaxkit._distributed._communicator import Communicator

    if not dist.is_initialized():
        missing = [name for name in _LAUNCHER_VARIABLES if name not in os.environ]
        if missing:
            raise UsageError(
                f"--distributed must run under torchrun (e.g. torchrun --nproc-per-node 2 -m softmaxkit train ...), "
                f"got no {', '.join(missing)} in the environment"
            )
        nccl = args.backend == "torch" and str(args.device or "").startswith("cuda")
        if nccl:
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if nccl else "gloo")
    return Communicator()


def _together(comm, step):
    """:func:`softmaxkit._distributed._communicator.collectively`, another rank's refusal a :class:`CLIError`."""
    from softmaxkit._distributed._communicator import PeerError, collectively

    try:
        return collectively(comm, step)
    except PeerError as error:
        raise CLIError(str(error)) from None


def _parquet_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())
    if not files:
        raise CLIError(f"{path} is a folder without .parquet files")
    return files


def _read_part(path, comm, args: argparse.Namespace, *, target, n_features=None) -> tuple[Dataset, int]:
    """``(this rank's part of the data at path, the number of rows of all the parts)``."""
    from softmaxkit.distributed import shard_rows

    path = Path(path)
    options = {"target": target, "header": args.header, "fmt": args.fmt, "n_features": n_features}
    if path.is_dir():
        files = _parquet_files(path)
        if len(files) < comm.world_size:
            raise CLIError(f"{path} has {len(files)} Parquet files for {comm.world_size} ranks: at least one per rank")
        parts = [
            read_dataset(f, **{**options, "fmt": "parquet"})
            for f in files[shard_rows(len(files), rank=comm.rank, world_size=comm.world_size)]
        ]
        for part in parts[1:]:
            if part.feature_names != parts[0].feature_names or part.target != parts[0].target:
                raise CLIError(f"{part.name} has other columns than {parts[0].name}")
        first = parts[0]
        X = np.vstack([p.X for p in parts]) if len(parts) > 1 else first.X
        y = np.concatenate([p.y for p in parts]) if len(parts) > 1 else first.y
        data = Dataset(X, y, first.feature_names, first.target, first.target_index, path.name, first.image_shape)
    else:
        whole = read_dataset(path, **options, show_progress=not args.quiet and comm.rank == 0)
        rows = shard_rows(len(whole.y), rank=comm.rank, world_size=comm.world_size)
        data = Dataset(
            whole.X[rows],
            whole.y[rows],
            whole.feature_names,
            whole.target,
            whole.target_index,
            whole.name,
            whole.image_shape,
        )
    if data.X.shape[0] == 0:
        raise CLIError(f"rank {comm.rank} got no rows of {path} ({comm.world_size} ranks): use fewer ranks")
    return data, data.X.shape[0]


def _local_split(data: Dataset, args: argparse.Namespace, comm):
    """``(X_train, y_train, X_test, y_test)`` of this rank."""
    if args.test is not None:
        test, _ = _read_part(args.test, comm, args, target=args.target if args.target is not None else data.target)
        if test.X.shape[1] != data.X.shape[1]:
            raise CLIError(
                f"test file {test.name} has {test.X.shape[1]} features, the training data has {data.X.shape[1]}"
            )
        return data.X, data.y, test.X, test.y
    from sklearn.model_selection import train_test_split

    size = 0.2 if args.test_size is None else args.test_size
    _, counts = np.unique(data.y, return_counts=True)
    n_test = int(np.ceil(size * len(data.y)))
    stratify = data.y if counts.min() >= 2 and len(counts) <= n_test <= len(data.y) - len(counts) else None
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            data.X, data.y, test_size=size, random_state=args.seed, stratify=stratify
        )
    except ValueError as error:
        raise CLIError(f"cannot hold out a test set of {size:g} on rank {comm.rank}: {error}") from None
    return X_train, y_train, X_test, y_test


def global_standardization(X, comm) -> tuple[np.ndarray, np.ndarray]:
    """:func:`softmaxkit.cli._train.standardization` of the rows of every rank (two passes, three all-reduces)."""
    size = _train._column_sizes(comm.max(np.max(np.abs(X), axis=0, initial=0.0)))
    Z = X / size
    n = comm.sum(np.array([Z.shape[0]]))[0]
    mean = comm.sum(Z.sum(axis=0)) / n
    variance = comm.sum(np.square(Z - mean).sum(axis=0)) / n
    return mean * size, _train._scales(np.sqrt(variance) * size, mean * size)


def _global_metrics(estimator, X, y, comm, *, source: str) -> dict:
    """The metrics of :func:`softmaxkit.cli._common.classification_metrics` over every rank's rows."""
    classes = np.asarray(estimator.classes_)
    index = _together(comm, lambda: class_indices(classes, y, source=source))
    scores = MetricsAccumulator(len(classes))
    rows = max(1, METRICS_CHUNK_BYTES // (8 * len(classes)))
    for start in range(0, X.shape[0], rows):
        log_proba = np.asarray(estimator.predict_log_proba(X[start : start + rows]), dtype=np.float64)
        scores.add(log_proba, index[start : start + rows])
    totals = comm.sum(np.concatenate([scores.confusion.ravel(), [scores.log_loss_sum, scores.n]]))
    scores.confusion = np.rint(totals[:-2]).astype(np.int64).reshape(scores.confusion.shape)
    scores.log_loss_sum, scores.n = float(totals[-2]), int(np.rint(totals[-1]))
    return scores.result(classes)


def run_distributed(args: argparse.Namespace) -> int:
    """``train --distributed``: see the module docstring."""
    import scipy.sparse
    from sklearn.exceptions import ConvergenceWarning

    from softmaxkit.distributed import fit_distributed
    from softmaxkit.linear_model import SoftmaxRegression

    started = _report.now()
    if args.data is None:
        raise UsageError("--distributed needs DATA (a file, or a folder of Parquet files), not a bundled dataset")
    _train.check_estimator_options(args)
    comm = _process_group(args)
    lead = comm.rank == 0
    quiet = args.quiet or not lead
    if args.plots and lead:
        import matplotlib  # noqa: F401  (a missing matplotlib should stop the run before training)

    def output_folder():
        if not lead:
            return None
        out = args.out if args.out is not None else _train._default_out(Path(args.data).name)
        check_out_dir(
            out, overwrite=args.overwrite, ours=(MODEL_FILE, METRICS_FILE, _report.REPORT_FILE) + _train.PLOT_FILES
        )
        return out

    out = comm.broadcast(_together(comm, output_folder))
    data, _ = _together(comm, lambda: _read_part(args.data, comm, args, target=args.target))
    X_train, y_train, X_test, y_test = _together(comm, lambda: _local_split(data, args, comm))
    sizes = np.array([len(y_train), len(y_test), len(data.y)])
    n_train, n_test, n_samples = (int(v) for v in comm.sum(sizes))
    n_features = data.X.shape[1]

    notes = []
    sparse = scipy.sparse.issparse(X_train)
    standardize = args.standardize and not sparse
    if args.standardize and sparse:
        notes.append("note: sparse features are used as they are (not standardised: centring would densify them)")
    mean = scale = None
    Z_train = X_train
    if standardize:
        mean, scale = global_standardization(X_train, comm)
        Z_train = (X_train - mean) / scale
    options = {**_train.estimator_options(args), "verbose": not quiet}
    estimator = SoftmaxRegression(**options)
    if lead:
        print(
            f"training on {args.data} over {comm.world_size} ranks: {n_train} samples, {n_features} features; "
            f"test set: {n_test} samples",
            flush=True,
        )
    fit_started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        _checkpointing.fit(estimator, Z_train, y_train, args, fit_function=fit_distributed)  # rank 0 writes it
    fit_time = time.perf_counter() - fit_started
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        notes.append(_train.convergence_note(estimator, standardized=standardize or sparse))
    trained_coef = np.array(estimator.coef_, dtype=np.float64)
    if standardize:
        dtype = np.asarray(estimator.coef_).dtype
        coef, intercept = _train.fold_standardization(
            trained_coef, np.asarray(estimator.intercept_, dtype=np.float64), mean, scale
        )
        estimator.coef_, estimator.intercept_ = coef.astype(dtype), intercept.astype(dtype)
    train_metrics = _global_metrics(estimator, X_train, y_train, comm, source="the training data")
    test_metrics = _global_metrics(estimator, X_test, y_test, comm, source="the test data")
    if not lead:
        return 0

    solver = _train.solver_of(estimator)
    image_shape = data.image_shape or infer_image_shape(n_features, data.feature_names)
    report = {
        "dataset": {
            "name": data.name,
            "source": str(args.data),
            "n_samples": n_samples,
            "n_features": n_features,
            "n_classes": len(estimator.classes_),
            "classes": [_train._jsonable(c) for c in estimator.classes_],
        },
        "split": {
            "test": args.test,
            "test_size": None if args.test else (args.test_size or 0.2),
            "seed": args.seed,
            "n_train": n_train,
            "n_test": n_test,
        },
        "distributed": {"world_size": comm.world_size, "backend": comm.backend},
        "estimator": _train._jsonable({k: v for k, v in estimator.get_params().items() if k != "verbose"}),
        "standardized": standardize,
        "fit_time_s": fit_time,
        "n_iter": int(np.max(estimator.n_iter_)),
        "fit": {"solver": solver, **_report.stopping(estimator, converged=converged, solver=solver)},
        "train": train_metrics,
        "test": test_metrics,
        "loss_curve": _train._curve(estimator, "loss_curve_"),
        "validation_loss_curve": _train._curve(estimator, "validation_loss_curve_"),
        "files": {
            "model": MODEL_FILE,
            "report": _report.REPORT_FILE,
            "plots": list(_train.PLOT_FILES) if args.plots else [],
        },
    }
    metadata = {
        "dataset": data.name,
        "source": str(args.data),
        "target": data.target,
        "target_index": data.target_index,
        "header": bool(args.header),
        "feature_names": list(data.feature_names) if data.feature_names is not None else None,
        "image_shape": list(image_shape) if image_shape is not None else None,
        "standardized": standardize,
        "mean": mean.tolist() if standardize else None,
        "scale": scale.tolist() if standardize else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    estimator.save(out / MODEL_FILE, overwrite=args.overwrite, metadata=metadata)
    if args.plots:
        _train._plot(out, estimator, report, trained_coef, image_shape, data.feature_names, standardized=standardize)
    report["run"] = _report.run_record(args.argv, started, _report.now())
    write_json(out / METRICS_FILE, report)
    _report.write_report(
        out, report, title=f"softmaxkit train: {data.name}", plots=_train.PLOT_FILES if args.plots else ()
    )
    _train._print_summary(out, report, solver, notes, plots=args.plots)
    return 0
