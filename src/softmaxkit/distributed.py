r"""Data-parallel softmax regression on ``torch.distributed``: each rank holds its rows, every rank gets the model.

Inside an initialised process group (``torch.distributed.init_process_group``, or a script started
by ``torchrun``), every rank calls :func:`fit_distributed` with the same estimator parameters and its
own shard of the rows (dense arrays or sparse matrices, shards of any sizes):

.. code-block:: python

    import torch.distributed as dist
    from softmaxkit.distributed import fit_distributed, shard_rows
    from softmaxkit.linear_model import SoftmaxRegression

    dist.init_process_group("gloo")  # torchrun sets the rank and the world size
    rows = shard_rows(len(X))  # this rank's contiguous part of the rows
    model = fit_distributed(SoftmaxRegression(alpha=1e-3), X[rows], y[rows])
    if dist.get_rank() == 0:
        model.save("model.npz")

The fit minimises the objective of :class:`~softmaxkit.linear_model.SoftmaxRegression` on the
concatenation of the ranks' rows in rank order, with the same solvers:

* lbfgs and newton-cg sum the loss and gradient, and each Hessian-vector product, over the ranks in
  float64 (one all-reduce per evaluation, of ``(n_features + fit_intercept) * n_classes + 1`` numbers),
  so the result is the single-process one up to the rounding of those sums; newton-cg is preconditioned
  by the global Hessian diagonal (Jacobi) only (the factorised preconditioners need one process's rows);
* sgd and adam draw the same global mini-batches as a single process would (the same permutation of
  the global row numbers on every rank) and sum each batch's gradient over the ranks that hold its
  rows: the same iterates as a single-process fit with the same ``random_state``, up to rounding;
* the classes (a class may occur on one rank only), ``class_weight="balanced"``, the sample weights'
  normalisation, ``solver="auto"``'s problem size, sgd's automatic step, the intercept start and the
  early-stopping scores are computed over all the rows; the early-stopping split is drawn per rank.

Every rank ends with the same model (rank 0's point, broadcast) and the same fitted attributes; only
rank 0 should write files. For a fixed world size and ``random_state`` the fit is deterministic.

**Backends.** ``backend="numpy"`` computes on the host and communicates through torch's gloo on CPU
tensors (so PyTorch is needed for the collectives, not for the arithmetic); ``backend="torch"``
computes on ``device`` and communicates through the group's backend: gloo, or NCCL with the sums on
the rank's current CUDA device (``torch.cuda.set_device(local_rank)`` first). Importing
:mod:`softmaxkit` never imports torch; this module imports it when called.

**Why a function, not an estimator parameter.** A parameter such as ``distributed="auto"`` would
change what ``fit(X, y)`` means (the whole data, or one shard of it) depending on whether some other
code initialised a process group, and a fit on one rank alone would wait forever for the others.
:func:`fit_distributed` says at the call that ``X`` is a shard and that every rank of ``group`` takes
part; the estimator keeps its parameters (``clone``, ``get_params``, pickling unchanged), and the
fitted model is an ordinary :class:`~softmaxkit.linear_model.SoftmaxRegression`.
"""

from __future__ import annotations

from softmaxkit._distributed._communicator import PeerError

__all__ = ["PeerError", "fit_distributed", "shard_rows"]


def fit_distributed(estimator, X, y, sample_weight=None, *, group=None, checkpoint=None):
    """Fit ``estimator`` data-parallel: every rank of ``group`` calls this with its own rows.

    Parameters
    ----------
    estimator : SoftmaxRegression
        The same parameters on every rank (``random_state`` included; with ``None`` rank 0's draw is
        used everywhere). ``warm_start`` continues from its fitted model as :meth:`fit` does.
    X : array-like or sparse matrix of shape (n_local_samples, n_features), or a softmaxkit.sources.Source
        This rank's rows (at least one); the same ``n_features`` on every rank. A source (``y`` and
        ``sample_weight`` None, as in :meth:`SoftmaxRegression.fit <softmaxkit.linear_model.SoftmaxRegression.fit>`)
        is streamed, each pass of every rank's source summed by one all-reduce; lbfgs and newton-cg
        (preconditioned by the Hessian's diagonal) only.
    y : array-like of shape (n_local_samples,) or (n_local_samples, n_classes)
        Labels (the classes are the union over the ranks) or class probabilities (the same number
        of columns on every rank).
    sample_weight : array-like of shape (n_local_samples,), optional
        A rank that passes none while others do counts its rows with weight 1.
    group : torch.distributed.ProcessGroup, optional
        The group whose ranks share the fit (default: the default group, which must be initialised).
    checkpoint : str, os.PathLike or Checkpoint, optional
        As in :meth:`SoftmaxRegression.fit <softmaxkit.linear_model.SoftmaxRegression.fit>`, with the same
        path on every rank: rank 0 writes it, every rank resumes from it (a path every rank can read).

    Returns
    -------
    estimator
        Fitted, the same model on every rank.

    Raises
    ------
    RuntimeError
        Without an initialised process group.
    PeerError
        (A ``RuntimeError``) on every other rank when the input of one rank is refused; that rank
        raises the input's own error.
    """
    from softmaxkit._distributed._fit import fit_data_parallel
    from softmaxkit.linear_model import SoftmaxRegression

    if not isinstance(estimator, SoftmaxRegression):
        raise TypeError(f"estimator must be a SoftmaxRegression, got {type(estimator).__name__}")
    return fit_data_parallel(estimator, X, y, sample_weight, group=group, checkpoint=checkpoint)


def shard_rows(n_samples: int, *, rank: int | None = None, world_size: int | None = None, group=None) -> slice:
    """This rank's contiguous part of ``n_samples`` rows: ``slice(rank * n // size, (rank + 1) * n // size)``.

    ``rank`` and ``world_size`` default to those of ``group`` (the default group).

    Examples
    --------
    >>> [shard_rows(10, rank=r, world_size=3) for r in range(3)]
    [slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
    """
    if rank is None or world_size is None:
        import torch.distributed as dist

        rank = dist.get_rank(group) if rank is None else rank
        world_size = dist.get_world_size(group) if world_size is None else world_size
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
    return slice(rank * n_samples // world_size, (rank + 1) * n_samples // world_size)
