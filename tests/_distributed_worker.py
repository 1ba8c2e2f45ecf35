"""One rank of the data-parallel tests (tests/test_distributed.py): ``python _distributed_worker.py RANK WORLD DIR``.

Joins a gloo group through ``DIR/rendezvous`` (a file; a 60 s timeout, so a lost rank fails instead of
hanging), fits every case of :data:`CASES` on this rank's shard with
:func:`softmaxkit.distributed.fit_distributed`, and writes ``DIR/rank<RANK>.npz`` with each case's
coefficients, intercepts and loss curve; fits :data:`CHECKPOINTED` cases twice with a checkpoint (stopped
after 2 iterations and resumed, and uninterrupted); then checks that a refused input on one rank raises on all.
The parent builds the same data (:func:`problem`) and compares with single-process fits.
"""

from __future__ import annotations

import datetime
import os
import sys
import warnings

import numpy as np
import scipy.sparse

# (solver, options): every case uses uneven shards, a class present on the first rank only, sample
# weights (with zeros) and balanced class weights, except where its name says otherwise.
CASES = {
    "lbfgs": ("lbfgs", {"tol": 1e-12, "max_iter": 500}),
    "lbfgs-sparse": ("lbfgs", {"tol": 1e-12, "max_iter": 500}),
    "lbfgs-plain": ("lbfgs", {"tol": 1e-12, "max_iter": 500}),
    "newton-cg": ("newton-cg", {"tol": 1e-13, "max_iter": 100}),
    "sgd": ("sgd", {"max_iter": 6, "random_state": 3}),
    "adam": ("adam", {"max_iter": 6, "random_state": 3, "batch_size": 16}),
    "lbfgs-proba": ("lbfgs", {"tol": 1e-12, "max_iter": 500}),
    "lbfgs-torch": ("lbfgs", {"tol": 1e-12, "max_iter": 500, "backend": "torch", "device": "cpu", "dtype": np.float64}),
    # each rank streams an ArraySource of its rows in batches of a few rows (SOURCE_BATCH_BYTES)
    "lbfgs-source": ("lbfgs", {"tol": 1e-12, "max_iter": 500}),
    "newton-cg-source-sparse": ("newton-cg", {"tol": 1e-13, "max_iter": 100}),
}
SOURCE_BATCH_BYTES = 512
# Not comparable with one process (each rank draws its own validation split): the same scores on every rank.
EARLY_STOPPING = ("sgd", {"max_iter": 8, "random_state": 0, "early_stopping": True, "n_iter_no_change": 3})
N_SAMPLES, N_FEATURES = 97, 5
CHECKPOINTED = ("lbfgs", "newton-cg", "sgd")


def problem(case: str):
    """``(X, y, sample_weight, class_weight)`` of ``case``, the same in every process."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N_SAMPLES, N_FEATURES))
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, size=N_SAMPLES)].astype(object)
    y[:6] = "only-rank-0"  # a class whose rows all sit on the first rank
    X[:6] += 1.5
    sw = rng.uniform(0.2, 3.0, size=N_SAMPLES)
    sw[[10, 40, 70]] = 0.0
    if case.endswith("sparse"):
        X[np.abs(X) < 0.8] = 0.0
        X = scipy.sparse.csr_matrix(X)
    if case.endswith("proba"):  # rows of class probabilities; class 3 has mass on the first rank's rows only
        proba = rng.dirichlet(np.ones(4), size=N_SAMPLES)
        proba[6:, 3] = 0.0
        return X, proba / proba.sum(axis=1, keepdims=True), sw, None
    if case.endswith("plain"):
        return X, y.astype(str), None, None
    return X, y.astype(str), sw, "balanced"


def bounds(world_size: int) -> list[int]:
    """Uneven shard boundaries: the first rank a few rows, the last the most."""
    cuts = {1: [], 2: [23], 3: [11, 45]}[world_size]
    return [0, *cuts, N_SAMPLES]


def estimator(case: str):
    from softmaxkit.linear_model import SoftmaxRegression

    solver, options = EARLY_STOPPING if case == "early-stopping" else CASES[case]
    _, _, _, class_weight = problem("lbfgs" if case == "early-stopping" else case)
    return SoftmaxRegression(alpha=1e-2, solver=solver, class_weight=class_weight, **options)


def checkpointed(case: str, rows: slice, directory: str) -> dict:
    """``case`` fitted with a checkpoint: stopped after 2 iterations then resumed, and uninterrupted.

    Every rank passes the same paths and a writer that counts its calls (rank 0's alone may write).
    """
    from softmaxkit.distributed import fit_distributed
    from softmaxkit.linear_model import Checkpoint
    from softmaxkit.linear_model._checkpoint import write_checkpoint_file

    X, y, sw, _ = problem(case)
    calls = []

    def writer(path, arrays, metadata):
        calls.append(path)
        write_checkpoint_file(path, arrays, metadata)

    def fit(model, name):
        checkpoint = Checkpoint(os.path.join(directory, f"{case}-{name}.npz"), every=1, writer=writer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_distributed(model, X[rows], y[rows], sw[rows], checkpoint=checkpoint)

    writes = []
    fit(estimator(case).set_params(max_iter=2), "resumed")
    writes.append(len(calls))
    resumed = fit(estimator(case), "resumed")
    writes.append(len(calls) - sum(writes))
    uninterrupted = fit(estimator(case), "uninterrupted")
    writes.append(len(calls) - sum(writes))
    return {
        f"checkpoint-{case}/resumed": np.hstack([resumed.coef_, resumed.intercept_[:, None]]),
        f"checkpoint-{case}/uninterrupted": np.hstack([uninterrupted.coef_, uninterrupted.intercept_[:, None]]),
        f"checkpoint-{case}/n_iter": np.array([resumed.n_iter_, uninterrupted.n_iter_]),
        f"checkpoint-{case}/writes": np.array(writes),  # of the stopped, the resumed and the uninterrupted fit
    }


def main(rank: int, world_size: int, directory: str) -> None:
    import torch.distributed as dist

    from softmaxkit.distributed import fit_distributed
    from softmaxkit.sources import ArraySource

    dist.init_process_group(
        "gloo",
        init_method=f"file://{os.path.join(directory, 'rendezvous')}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    edges = bounds(world_size)
    rows = slice(edges[rank], edges[rank + 1])
    results = {}
    for case in CASES:
        X, y, sw, _ = problem(case)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sgd/adam stop at max_iter on purpose
            if "source" in case:
                source = ArraySource(X[rows], y[rows], sample_weight=sw[rows], max_bytes=SOURCE_BATCH_BYTES)
                model = fit_distributed(estimator(case), source, None)
            else:
                model = fit_distributed(estimator(case), X[rows], y[rows], None if sw is None else sw[rows])
        results[f"{case}/coef"] = model.coef_
        results[f"{case}/intercept"] = model.intercept_
        results[f"{case}/loss_curve"] = np.array(model.loss_curve_)
        results[f"{case}/classes"] = model.classes_
        results[f"{case}/solver"] = np.array(model.solver_)
    for case in CHECKPOINTED:
        results.update(checkpointed(case, rows, directory))
    X, y, sw, _ = problem("lbfgs")
    model = fit_distributed(estimator("early-stopping"), X[rows], y[rows], sw[rows])
    results["early-stopping/scores"] = np.array(model.validation_scores_)
    results["early-stopping/coef"] = model.coef_
    # a refused input on one rank: that rank raises its error, the others a RuntimeError naming it
    X, y, _, _ = problem("lbfgs-plain")
    bad_y = y[rows][:-1] if rank == world_size - 1 else y[rows]
    try:
        fit_distributed(estimator("lbfgs-plain"), X[rows], bad_y)
    except Exception as error:
        results["refused"] = np.array(f"{type(error).__name__}: {error}")
    else:
        results["refused"] = np.array("")
    np.savez(os.path.join(directory, f"rank{rank}.npz"), **results)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
