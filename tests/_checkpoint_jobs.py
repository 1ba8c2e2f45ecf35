"""Jobs of tests/test_checkpoint_kill.py, run in processes forked from a multiprocessing forkserver.

Each job builds the same small problem, runs a checkpointed fit (a checkpoint after every
iteration) and saves the model; the test kills it and runs it again.
"""

from __future__ import annotations

import io
import os
import signal
import warnings

import numpy as np
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning

from softmaxkit.linear_model import Checkpoint, SoftmaxRegression
from softmaxkit.linear_model._checkpoint import write_checkpoint_file

# Per solver: options of a fit of about a second here, stopped by max_iter or a tol at rounding level.
OPTIONS = {
    "lbfgs": {"solver": "lbfgs", "tol": 1e-14, "max_iter": 60},
    "newton-cg": {"solver": "newton-cg", "tol": 1e-300, "max_iter": 25, "alpha": 1e-7},
    "sgd": {"solver": "sgd", "max_iter": 40, "tol": 0.0, "n_iter_no_change": 1000, "batch_size": 64},
}


def problem():
    """Correlated features (mixed by a random matrix), so that newton-cg's CG slows down and keeps a factorisation."""
    X, y = make_classification(
        n_samples=2000, n_features=60, n_informative=30, n_classes=6, n_clusters_per_class=2, random_state=3
    )
    mixing = np.random.default_rng(3).normal(size=(60, 60)) * np.logspace(-1, 1, 60)
    return X @ mixing, y


def _dying_writer(write: int):
    """A checkpoint writer that dies by SIGKILL halfway through its ``write``-th file."""
    calls = [0]

    def writer(path, arrays, metadata):
        calls[0] += 1
        if calls[0] == write:
            savez = np.savez

            def half_then_die(handle, **members):
                buffer = io.BytesIO()
                savez(buffer, **members)
                handle.write(buffer.getvalue()[: buffer.tell() // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            np.savez = half_then_die
        write_checkpoint_file(path, arrays, metadata)

    return writer


def fit(solver: str, checkpoint_path, model_path, die_at_write: int | None = None) -> None:
    """The checkpointed fit of ``solver`` on :func:`problem`, its model saved to ``model_path``."""
    warnings.simplefilter("ignore", ConvergenceWarning)  # (lbfgs and sgd stop at max_iter)
    X, y = problem()
    writer = None if die_at_write is None else _dying_writer(die_at_write)
    checkpoint = Checkpoint(checkpoint_path, every=1, writer=writer)
    model = SoftmaxRegression(random_state=0, **OPTIONS[solver]).fit(X, y, checkpoint=checkpoint)
    model.save(model_path, overwrite=True)
