"""Checkpoints of :meth:`SoftmaxRegression.fit <softmaxkit.linear_model.SoftmaxRegression.fit>`: resume a killed fit exactly.

``fit(X, y, checkpoint=path)`` (or ``checkpoint=Checkpoint(path, every=..., seconds=...)``) writes
the solver's whole state to ``path`` every ``every`` iterations (epochs for sgd and adam) or
``seconds`` seconds, whichever comes first; the same call in a new process, after a crash or a
``SIGKILL``, finds the file and continues from it, and ends with the model the uninterrupted fit
would have reached, bit for bit where the fit is deterministic (a fixed ``random_state``, the same
machine, library versions and thread counts). What is saved, per solver:

* lbfgs: the point, its objective and gradient, the curvature pairs (the checkpointed fit runs
  :func:`._lbfgs.minimize_lbfgs_resumable`, whose state can be saved; SciPy's cannot);
* newton-cg: the point, its objective and gradient, the last CG count and the point whose
  Hessian factorisation is kept as the preconditioner (rebuilt from it on resume);
* sgd, adam: the point, the :class:`~._solvers.StochasticState` (momentum or moments, rate,
  counters) and the state of the shuffling random generator; a checkpoint is taken between epochs;
* with ``early_stopping``: the validation scores and the best point so far.

The file is a model-file archive (:mod:`softmaxkit._model_io`: ``.npz`` of plain arrays and a JSON
record, written atomically, read with every check and never unpickled) whose record names the
estimator ``"SoftmaxRegression checkpoint"`` and holds a fingerprint (BLAKE2b) of everything the
trajectory depends on: the training data (and validation split), the targets and weights, the
start point, the solver, dtype, backend and the estimator's parameters except ``verbose`` and
``max_iter`` (a resumed fit may run longer or shorter than the killed one).

A file at ``path`` that is not a checkpoint of this very fit (damaged, another format, another
fit's) is an error, :class:`CheckpointError`, never ignored: ignoring it would overwrite it at the
first checkpoint, and it may be another fit's hours of work or a file the user saved there by
mistake. The message says what to do (remove the file or choose another path). Since every write
is atomic, a fit killed while writing leaves the previous checkpoint intact.

For a data-parallel fit the state is the same on every rank; ``Checkpoint(writer=...)`` replaces
the function that writes the file (the data-parallel layer passes one that writes on rank 0 only),
and every rank reads the file to resume. Each rank fingerprints its own shard; ``Checkpoint(combine=...)``
turns that digest into the one every rank agrees on (the data-parallel layer gathers the ranks'
digests and hashes them in rank order), so that the file matches on every rank.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from softmaxkit._model_io import ModelFileError, load_model_file, save_model_file
from softmaxkit.linear_model._lbfgs import LbfgsState, minimize_lbfgs_resumable
from softmaxkit.linear_model._solvers import NewtonState, StochasticState, minimize_newton_cg

__all__ = ["CHECKPOINT_VERSION", "Checkpoint", "CheckpointError", "CheckpointRun", "open_checkpoint"]

ESTIMATOR = "SoftmaxRegression checkpoint"
CHECKPOINT_VERSION = 1
# The parameters that do not change the trajectory up to where a fit stops.
_NOT_FINGERPRINTED = ("verbose", "max_iter")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be resumed by this fit: damaged, foreign, or written by another fit."""

    __module__ = "softmaxkit.linear_model"


def write_checkpoint_file(path, arrays: dict, metadata: dict) -> None:
    """The default writer: the model-file archive, atomically (see :mod:`softmaxkit._atomic`)."""
    save_model_file(path, arrays, metadata, overwrite=True)


@dataclass(frozen=True)
class Checkpoint:
    """Where and how often :meth:`SoftmaxRegression.fit` saves its state (see :mod:`._checkpoint`).

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file (``.npz`` is customary); its folder is created if needed.
    every : int or None, default None
        Write after every ``every`` iterations (epochs for sgd and adam).
    seconds : float or None, default 60.0
        Write when ``seconds`` have passed since the fit started or last wrote (at the end of an iteration).
    writer : callable or None
        ``writer(path, arrays, metadata)`` writes the file; None: the atomic model-file writer.
        The data-parallel fit passes one that writes on rank 0 only.
    combine : callable or None
        ``combine(digest) -> digest``: the fingerprint (a hex string) of the whole fit from this
        process's (the data-parallel fit combines those of its ranks); None keeps it.

    Examples
    --------
    >>> Checkpoint("fit.npz", every=10)
    Checkpoint(path='fit.npz', every=10, seconds=60.0, writer=None, combine=None)
    """

    __module__ = "softmaxkit.linear_model"

    path: str | os.PathLike
    every: int | None = None
    seconds: float | None = 60.0
    writer: Callable[[Path, dict, dict], None] | None = None
    combine: Callable[[str], str] | None = None


def as_checkpoint(value) -> Checkpoint:
    """``value`` (a path or a :class:`Checkpoint`) as a checked :class:`Checkpoint`."""
    if isinstance(value, (str, os.PathLike)):
        value = Checkpoint(value)
    if not isinstance(value, Checkpoint):
        raise TypeError(f"checkpoint must be a path, a Checkpoint or None, got {type(value).__name__}")
    if not isinstance(value.path, (str, os.PathLike)):
        raise TypeError(f"Checkpoint path must be a str or os.PathLike, got {type(value.path).__name__}")
    every, seconds = value.every, value.seconds
    if every is not None and not (isinstance(every, (int, np.integer)) and not isinstance(every, bool) and every >= 1):
        raise ValueError(f"Checkpoint every must be an int >= 1 or None, got {every!r}")
    if seconds is not None and not (
        isinstance(seconds, (int, float, np.floating)) and not isinstance(seconds, bool) and 0 <= seconds < math.inf
    ):
        raise ValueError(f"Checkpoint seconds must be a finite number >= 0 or None, got {seconds!r}")
    if every is None and seconds is None:
        raise ValueError("Checkpoint every and seconds must not both be None, got every=None and seconds=None")
    for name in ("writer", "combine"):
        if getattr(value, name) is not None and not callable(getattr(value, name)):
            raise TypeError(f"Checkpoint {name} must be callable or None, got {type(getattr(value, name)).__name__}")
    return value


# --------------------------------------------------------------------------------------------
# the fingerprint


def _hash_array(digest, name: str, array) -> None:
    if array is None:
        digest.update(f"{name}:none;".encode())
        return
    if scipy.sparse.issparse(array):
        digest.update(f"{name}:sparse{array.shape};".encode())
        for part in (array.data, array.indices, array.indptr):
            _hash_array(digest, name, part)
        return
    array = np.ascontiguousarray(array)
    digest.update(f"{name}:{array.dtype.str}{array.shape};".encode())
    digest.update(memoryview(array).cast("B"))


def fingerprint(estimator, *, solver: str, dtype, arrays: dict) -> str:
    """The BLAKE2b digest of what a fit's trajectory depends on (see the module docstring)."""
    random_state = estimator.random_state
    if not (random_state is None or isinstance(random_state, (int, np.integer))):
        raise ValueError(
            "random_state must be an int or None with a checkpoint (a RandomState changes as it is used), "
            f"got {type(random_state).__name__}"
        )
    if estimator.early_stopping and random_state is None:
        raise ValueError(
            "random_state must be an int with a checkpoint and early_stopping (a resumed fit must split off "
            "the same validation set), got None"
        )
    params = {k: v for k, v in estimator.get_params().items() if k not in _NOT_FINGERPRINTED}
    digest = hashlib.blake2b(digest_size=16)
    text = repr(sorted((k, repr(v)) for k, v in params.items()))
    digest.update(f"{type(estimator).__name__};{solver};{np.dtype(dtype).str};{text};".encode())
    for name, array in arrays.items():
        _hash_array(digest, name, array)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# reading and checking


def _fail(path, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {str(path)!r} {what}; remove it to start the fit afresh, or pass another checkpoint path"
    )


def _read(path, *, key: str, solver: str, n_params: int) -> tuple[dict, dict] | None:
    """``(arrays, metadata)`` of the checkpoint at ``path`` if it is one of this fit; None if there is no file."""
    if not os.path.lexists(path):
        return None
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint path must be a file, got the directory {str(path)!r}")
    try:
        arrays, metadata = load_model_file(path, estimator=ESTIMATOR)
    except ModelFileError as error:
        raise _fail(path, f"cannot be resumed ({error})") from None
    if metadata.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise _fail(path, f"has checkpoint version {metadata.get('checkpoint_version')!r}, not {CHECKPOINT_VERSION}")
    if metadata.get("fingerprint") != key or metadata.get("solver") != solver:
        raise _fail(path, "was written by a fit of other data, parameters or start")
    x = arrays.get("x")
    if x is None or x.dtype != np.float64 or x.shape != (n_params,) or not np.all(np.isfinite(x)):
        raise _fail(path, f"is corrupt (no finite float64 point of {n_params} parameters)")
    curve = arrays.get("curve")
    if curve is None or curve.dtype != np.float64 or curve.ndim != 1 or curve.size != metadata.get("n_iter"):
        raise _fail(path, "is corrupt (its objective curve does not match its iteration count)")
    return arrays, metadata


def _vector(path, arrays, name, n_params, *, optional=False):
    value = arrays.get(name)
    if value is None and optional:
        return None
    if value is None or value.dtype != np.float64 or value.shape != (n_params,) or not np.all(np.isfinite(value)):
        raise _fail(path, f"is corrupt (its {name!r} is not a finite float64 vector of {n_params} numbers)")
    return value.copy()


def _number(path, metadata, name, kind=float, *, low=-math.inf):
    value = metadata.get(name)
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low
    if not ok:
        raise _fail(path, f"is corrupt (its {name!r} is {value!r})")
    return kind(value)


def _step_bound(path, fields) -> float:
    """A Newton-CG checkpoint's step bound: ``inf`` where none is saved (none set yet, or an older checkpoint)."""
    if "step_bound" not in fields:
        return math.inf
    bound = _number(path, fields, "step_bound")
    if not bound > 0:
        raise _fail(path, f"is corrupt (its 'step_bound' is {bound!r})")
    return bound


# --------------------------------------------------------------------------------------------
# one checkpointed fit


class CheckpointRun:
    """The checkpoint of one fit: the state to resume from (if any) and the writers the solvers call.

    Built by :func:`open_checkpoint`; :func:`._fitting.run_full_batch` calls its ``run_full_batch``,
    :func:`._solvers.minimize_stochastic` its ``resume_stochastic`` and ``save_stochastic``.
    """

    def __init__(self, options: Checkpoint, key: str, solver: str, n_params: int, monitor):
        self.path = Path(options.path)
        self.every, self.seconds = options.every, options.seconds
        self.writer = options.writer or write_checkpoint_file
        self.key, self.solver, self.n_params, self.monitor = key, solver, n_params, monitor
        self.saved = _read(self.path, key=key, solver=solver, n_params=n_params)
        self.written_at = None if self.saved is None else self.saved[1]["n_iter"]
        self.clock = time.monotonic()
        if self.saved is not None and monitor is not None:
            self._restore_monitor(*self.saved)

    # ---------------------------------------------------------------- writing

    def _due(self, n_iter: int) -> bool:
        if n_iter == self.written_at:
            return False
        last = self.written_at or 0
        if self.every is not None and n_iter - last >= self.every:
            return True
        return self.seconds is not None and time.monotonic() - self.clock >= self.seconds

    def _write(self, n_iter: int, curve, arrays: dict, fields: dict) -> None:
        arrays = {"x": arrays.pop("x"), "curve": np.asarray(curve, dtype=np.float64), **arrays}
        metadata = {
            "estimator": ESTIMATOR,
            "checkpoint_version": CHECKPOINT_VERSION,
            "fingerprint": self.key,
            "solver": self.solver,
            "n_iter": int(n_iter),
            "state": fields,
        }
        if self.monitor is not None and self.monitor.X_val is not None:
            m = self.monitor
            arrays["monitor_scores"] = np.asarray(m.scores, dtype=np.float64)
            arrays["monitor_losses"] = np.asarray(m.losses, dtype=np.float64)
            if m.best_x is not None:
                arrays["monitor_best_x"] = np.asarray(m.best_x, dtype=np.float64)
            metadata["monitor"] = {"best_score": None if m.best_x is None else float(m.best_score), "bad": int(m.bad)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer(self.path, arrays, metadata)
        self.written_at, self.clock = n_iter, time.monotonic()

    def _restore_monitor(self, arrays, metadata) -> None:
        m, path = self.monitor, self.path
        if m.X_val is None:
            return
        record = metadata.get("monitor")
        scores, losses = arrays.get("monitor_scores"), arrays.get("monitor_losses")
        if not isinstance(record, dict) or scores is None or losses is None or scores.shape != losses.shape:
            raise _fail(path, "is corrupt (its validation record is missing or malformed)")
        m.scores, m.losses = scores.tolist(), losses.tolist()
        m.bad = _number(path, record, "bad", int, low=0)
        m.best_x = _vector(path, arrays, "monitor_best_x", self.n_params, optional=True)
        if m.best_x is not None:
            m.best_score = _number(path, record, "best_score")

    def run_full_batch(self, solver: str, objective, x0, **options):
        """lbfgs (:func:`._lbfgs.minimize_lbfgs_resumable`: SciPy's state cannot be saved) or newton-cg, resumed and saved."""
        if solver == "lbfgs":
            state, save = self.lbfgs_state(), self.save_lbfgs
            return minimize_lbfgs_resumable(objective.loss_gradient, x0, state=state, on_iteration=save, **options)
        state, save = self.newton_state(), self.save_newton
        return minimize_newton_cg(objective.loss_gradient_hessp, x0, state=state, on_iteration=save, **options)

    # ---------------------------------------------------------------- lbfgs

    def lbfgs_state(self) -> LbfgsState | None:
        if self.saved is None:
            return None
        arrays, metadata = self.saved
        path, n = self.path, self.n_params
        S, Y = arrays.get("pairs_s"), arrays.get("pairs_y")
        if S is None or Y is None or S.shape != Y.shape or S.ndim != 2 or S.shape[1] != n or S.dtype != np.float64:
            raise _fail(path, "is corrupt (its curvature pairs are missing or malformed)")
        pairs = [(S[i].copy(), Y[i].copy()) for i in range(S.shape[0])]
        f = _number(path, metadata.get("state", {}), "f")
        return LbfgsState(
            x=arrays["x"].copy(),
            f=f,
            g=_vector(path, arrays, "g", n),
            pairs=pairs,
            n_iter=metadata["n_iter"],
            curve=arrays["curve"].tolist(),
        )

    def save_lbfgs(self, state: LbfgsState) -> None:
        if not self._due(state.n_iter):
            return
        empty = np.zeros((0, state.x.size))
        S = np.array([s for s, _ in state.pairs]) if state.pairs else empty
        Y = np.array([y for _, y in state.pairs]) if state.pairs else empty
        arrays = {"x": state.x, "g": state.g, "pairs_s": S, "pairs_y": Y}
        self._write(state.n_iter, state.curve, arrays, {"f": float(state.f)})

    # ---------------------------------------------------------------- newton-cg

    def newton_state(self) -> NewtonState | None:
        if self.saved is None:
            return None
        arrays, metadata = self.saved
        path, fields = self.path, metadata.get("state", {})
        kind = fields.get("factor_kind")
        factor_x = _vector(path, arrays, "factor_x", self.n_params, optional=True)
        if (factor_x is None) != (kind is None) or not (kind is None or isinstance(kind, str)):
            raise _fail(path, f"is corrupt (its factor_kind {kind!r} does not match its factor point)")
        return NewtonState(
            x=arrays["x"].copy(),
            f=_number(path, fields, "f"),
            g=_vector(path, arrays, "g", self.n_params),
            n_iter=metadata["n_iter"],
            curve=arrays["curve"].tolist(),
            cg_used=_number(path, fields, "cg_used", int, low=0),
            step_bound=_step_bound(path, fields),
            factor_x=factor_x,
            factor_kind=kind,
        )

    def save_newton(self, state: NewtonState) -> None:
        if not self._due(state.n_iter):
            return
        arrays = {"x": state.x, "g": state.g}
        if state.factor_x is not None:
            arrays["factor_x"] = state.factor_x
        fields = {"f": float(state.f), "cg_used": int(state.cg_used), "factor_kind": state.factor_kind}
        if math.isfinite(state.step_bound):
            fields["step_bound"] = float(state.step_bound)
        self._write(state.n_iter, state.curve, arrays, fields)

    # ---------------------------------------------------------------- sgd, adam

    def resume_stochastic(self, x0, state: StochasticState, rng: np.random.Generator):
        """``(x, curve)`` to start from: ``(x0, [])``, or the saved ones with ``state`` and ``rng`` restored in place."""
        if self.saved is None:
            return x0, []
        return self._restore_stochastic(state, rng)

    def _restore_stochastic(self, state: StochasticState, rng: np.random.Generator):
        arrays, metadata = self.saved
        path, fields, n = self.path, metadata.get("state", {}), self.n_params
        if fields.get("method") != state.method:
            raise _fail(path, f"is corrupt (its method {fields.get('method')!r} is not {state.method!r})")
        generator = fields.get("rng")
        if (
            not isinstance(generator, dict)
            or generator.get("bit_generator") != rng.bit_generator.state["bit_generator"]
        ):
            raise _fail(path, "is corrupt (its random generator state is missing or of another kind)")
        try:
            rng.bit_generator.state = generator
        except (TypeError, ValueError, KeyError) as error:
            raise _fail(path, f"is corrupt (its random generator state: {error})") from None
        state.learning_rate = _number(path, fields, "learning_rate", low=0.0)
        state.epoch = _number(path, fields, "epoch", int, low=0)
        state.step = _number(path, fields, "step", int, low=0)
        state.bad_epochs = _number(path, fields, "bad_epochs", int, low=0)
        state.best_loss = math.inf if fields.get("best_loss") is None else _number(path, fields, "best_loss")
        state.velocity = _vector(path, arrays, "velocity", n, optional=True)
        state.second_moment = _vector(path, arrays, "second_moment", n, optional=True)
        return arrays["x"].copy(), arrays["curve"].tolist()

    def save_stochastic(self, x, curve, state: StochasticState, rng: np.random.Generator) -> None:
        if not self._due(len(curve)):
            return
        arrays = {"x": np.asarray(x, dtype=np.float64)}
        for name in ("velocity", "second_moment"):
            if getattr(state, name) is not None:
                arrays[name] = np.asarray(getattr(state, name), dtype=np.float64)
        fields = {
            "method": state.method,
            "learning_rate": float(state.learning_rate),
            "epoch": int(state.epoch),
            "step": int(state.step),
            "bad_epochs": int(state.bad_epochs),
            "best_loss": None if not math.isfinite(state.best_loss) else float(state.best_loss),
            "rng": json.loads(json.dumps(rng.bit_generator.state)),
        }
        self._write(len(curve), curve, arrays, fields)


def open_checkpoint(checkpoint, estimator, solver: str, dtype, x0, monitor, *, data: tuple):
    """The :class:`CheckpointRun` of this fit (None without ``checkpoint``); resumes what the file holds.

    ``data`` is ``(X, target, sample_weight)`` of the training rows; the validation rows are the ``monitor``'s.

    Raises :class:`CheckpointError` for a file at the path that is not a checkpoint of this fit.
    """
    if checkpoint is None:
        return None
    options = as_checkpoint(checkpoint)
    arrays = dict(zip(("X", "target", "sample_weight"), data), x0=x0)
    arrays.update(X_val=monitor.X_val, t_val=monitor.t_val, s_val=monitor.s_val)
    key = fingerprint(estimator, solver=solver, dtype=dtype, arrays=arrays)
    if options.combine is not None:
        key = str(options.combine(key))
    return CheckpointRun(options, key, solver, int(np.asarray(x0).size), monitor)
