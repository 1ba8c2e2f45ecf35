"""The sample-weighted cross-entropy of a block of logit rows, gradient in place: the linear model's kernel.

Private: :mod:`softmaxkit.linear_model` prepares a :class:`WeightedRows` once per data set and calls it
once per block of rows and evaluation, between its two matrix products with ``X``;
:func:`weighted_cross_entropy_rows` is the same computation in one call.
"""

from __future__ import annotations

import numpy as np

from softmaxkit._numpy._cross_entropy import _gradient, _loss_terms, _row_scale, _Rows
from softmaxkit._numpy._engine import as_rows, check_engine, run, use_kernel
from softmaxkit._numpy._softmax import stable_exp
from softmaxkit._validation import _describe, check_label_smoothing


class WeightedRows:
    r""":func:`weighted_cross_entropy_rows` prepared for one target and one set of weights.

    Everything that depends only on them (their validation, the kernel's coefficients) is done here,
    once, so that a call on a block of rows costs the compiled pass and a few microseconds (the
    one-call function took about 20 us a call besides, a fifth of the row pass on blocks of 546 x 20).

    Parameters
    ----------
    target, sample_weight, label_smoothing, engine
        As in :func:`weighted_cross_entropy_rows`, for all the ``n_samples`` rows.
    n_classes : int
    dtype : float32 or float64
        The logits' dtype.

    Calling ``rows(z, start, stop)`` is ``weighted_cross_entropy_rows(z, target[start:stop],
    sample_weight[start:stop], ...)`` for the rows ``z`` of the samples ``start:stop`` (all of them by
    default), except that without sample weights each row weighs ``1 / n_samples`` (the blocks' values
    add up to the mean).
    """

    def __init__(self, target, sample_weight=None, *, n_classes, dtype, label_smoothing=0.0, engine="auto"):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.engine = check_engine(engine)
        self.label_smoothing = eps = check_label_smoothing(label_smoothing)
        self.n_classes = n_classes = int(n_classes)
        target = np.asarray(target)
        n_samples = target.shape[0] if target.ndim else 0
        if np.issubdtype(target.dtype, np.integer) and target.ndim == 1:
            if n_samples and (target.min() < 0 or target.max() >= n_classes):
                raise ValueError(
                    f"target must hold class indices in [0, {n_classes}), got {target.min()}..{target.max()}"
                )
            self.target, self.is_index = target.astype(np.intp, copy=False), True
        elif np.issubdtype(target.dtype, np.floating) and target.ndim == 2 and target.shape[1] == n_classes:
            self.target, self.is_index = np.ascontiguousarray(target, dtype=self.dtype), False
        else:
            raise ValueError(
                f"target must be class indices or class probabilities with {n_classes} columns, got {_describe(target)}"
            )
        self.n_samples = n_samples
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (n_samples,):
                raise ValueError(f"sample_weight must have shape ({n_samples},), got shape {sample_weight.shape}")
            absent = sample_weight == 0
            self._absent = absent if absent.any() else None
            # the kernel's per-row scale: the weight in the logits' dtype (as the one-call path rounds it)
            self._scale = sample_weight.astype(self.dtype).astype(np.float64)
        else:
            self._absent = None
            self._scale = np.full(1, self.dtype.type(1.0 / max(n_samples, 1)), dtype=np.float64)
        self.sample_weight = sample_weight
        self._no_class_weight = np.empty(0)
        if self.is_index:
            self._kernel, self._coefficients = (
                "cross_entropy_index_rows",
                (
                    np.full(1, 1.0 - eps, dtype=self.dtype).astype(np.float64),
                    np.full(1, self.dtype.type(eps / n_classes)).astype(np.float64),
                    self._no_class_weight,
                    float(n_classes),
                ),
            )
        else:
            self._kernel, self._coefficients = "cross_entropy_prob_rows", (eps, self._no_class_weight)

    def __call__(self, z, start: int = 0, stop: int | None = None) -> float:
        stop = self.n_samples if stop is None else stop
        if not (isinstance(z, np.ndarray) and z.dtype == self.dtype and z.shape == (stop - start, self.n_classes)):
            raise ValueError(
                f"z must be a {self.dtype} ndarray of shape ({stop - start}, {self.n_classes}), got {_describe(z)}"
            )
        if not (z.flags.c_contiguous and z.flags.writeable):
            raise ValueError("z must be C-contiguous and writeable (it receives the gradient)")
        weights = None if self.sample_weight is None else self.sample_weight[start:stop]
        target = self.target[start:stop]
        if use_kernel(self.engine, as_rows(z, (1,))):
            per_row = np.empty(z.shape[0])
            scale = self._scale if weights is None else self._scale[start:stop]
            run(self._kernel, z, target, *self._coefficients, scale, per_row, z, True, True, n_entries=z.size)
        else:
            per_row = self._numpy_path(z, target, weights)
        if weights is None:
            return float(np.sum(per_row) / self.n_samples) if self.n_samples else 0.0
        if self._absent is not None:
            absent = self._absent[start:stop]
            if absent.any():
                per_row[absent] = 0
                z[absent] = 0
        return float(per_row @ weights)

    def _numpy_path(self, z, target, weights) -> np.ndarray:
        """The per-row losses (float64) by the NumPy reference path, the gradient rows written into ``z``."""
        n_rows = z.shape[0]
        rows = _Rows(
            logits=z,
            out_dtype=z.dtype,
            input_shape=z.shape,
            class_axis=1,
            batch_shape=(n_rows,),
            target=target,
            is_index=self.is_index,
            valid=np.ones(n_rows, dtype=bool) if self.is_index else None,
            weight=None,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        scale = z.dtype.type(self._scale[0]) if weights is None else weights.astype(z.dtype)
        parts = stable_exp(z, (1,))
        terms = _loss_terms(rows, parts)
        z[...] = _gradient(rows, parts, terms, _row_scale(rows, terms.denominator, scale))
        return terms.loss.astype(np.float64)


def weighted_cross_entropy_rows(z, target, sample_weight=None, *, label_smoothing=0.0, engine="auto") -> float:
    r"""``sum_i w_i CE_i`` over the rows of ``z``, with ``z`` overwritten by the rows ``w_i dCE_i/dz_i``.

    .. math::

        \text{returns } \sum_i w_i\, \mathrm{CE}(z_i, y_i), \qquad
        z_i \leftarrow w_i\, \frac{\partial\, \mathrm{CE}(z_i, y_i)}{\partial z_i} = w_i\, (p_i A_i - a_i),

    where :math:`\mathrm{CE}` is :func:`softmaxkit.cross_entropy` of one sample with
    ``label_smoothing`` (no class weights, no ignored index), :math:`p_i = \mathrm{softmax}(z_i)`,
    :math:`a_i` the smoothed target (one-hot :math:`(1-\varepsilon)\,e_{y_i} + \varepsilon/C`, or
    :math:`(1-\varepsilon)\,t_i + \varepsilon/C` for probabilities) and :math:`A_i = \sum_c a_{ic}`
    (1 for index targets): the lesson's "softmax minus target", weighted and smoothed.

    Parameters
    ----------
    z : ndarray of shape (N, C), float32 or float64, C-contiguous
        The logits; overwritten with the gradient rows (same dtype). Nothing else is allocated at
        the size of ``z`` on the compiled path (the NumPy path, below :data:`._engine.MIN_KERNEL_SIZE`
        entries, works on a temporary and copies back).
    target : ndarray of shape (N,) of integer class indices in ``[0, C)``, or (N, C) of floats
        Hard targets, or class probabilities (rows of any sum; they are not normalised).
    sample_weight : ndarray of shape (N,), optional
        The weights :math:`w_i`, already normalised by the caller (typically ``s_i / sum_j s_j``;
        they are used as given). None means :math:`w_i = 1/N` (the mean).
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon`.
    engine : {"auto", "numpy", "kernel"}
        See :mod:`softmaxkit._numpy._engine`; "auto" is the compiled kernel where it applies.

    Returns
    -------
    float
        The weighted loss sum, accumulated in float64.

    Notes
    -----
    Non-finite logits follow the package's policy (see :func:`softmaxkit.cross_entropy`): a row
    with a ``-inf`` target logit has an infinite loss and a finite gradient, ``+inf`` logits take
    the limit, a NaN row has NaN loss and gradient. A row with :math:`w_i = 0` contributes exactly
    0 to the sum and gets a zero gradient row whatever its logits (a sample absent from the fit).
    To call it on many blocks of the same rows, prepare a :class:`WeightedRows` once.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]])
    >>> round(weighted_cross_entropy_rows(z, np.array([0, 2])), 6)  # (0.41703 + log 3) / 2
    0.757821
    >>> z  # (softmax - one-hot) / 2
    array([[-0.17049943,  0.12121649,  0.04928295],
           [ 0.16666667,  0.16666667, -0.33333333]])
    """
    if not (isinstance(z, np.ndarray) and z.ndim == 2 and z.dtype in (np.float32, np.float64)):
        raise TypeError(f"z must be a 2-D float32 or float64 ndarray, got {_describe(z)}")
    if not (z.flags.c_contiguous and z.flags.writeable):
        raise ValueError("z must be C-contiguous and writeable (it receives the gradient)")
    n_samples, n_classes = z.shape
    target = np.asarray(target)
    is_index = np.issubdtype(target.dtype, np.integer) and target.shape == (n_samples,)
    if not (is_index or (np.issubdtype(target.dtype, np.floating) and target.shape == z.shape)):
        raise ValueError(
            f"target must be {n_samples} class indices or class probabilities of shape {z.shape}, got {_describe(target)}"
        )
    rows = WeightedRows(
        target, sample_weight, n_classes=n_classes, dtype=z.dtype, label_smoothing=label_smoothing, engine=engine
    )
    return rows(z)
