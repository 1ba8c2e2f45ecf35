"""The sample-weighted cross-entropy of a block of logit rows, gradient in place: the linear model's kernel.

Private: :mod:`softmaxkit.linear_model` calls :func:`weighted_cross_entropy_rows` once per loss and
gradient evaluation, between its two matrix products with ``X``.
"""

from __future__ import annotations

import numpy as np

from softmaxkit._numpy._cross_entropy import (
    _gradient,
    _kernel_loss_and_grad,
    _loss_terms,
    _row_scale,
    _Rows,
)
from softmaxkit._numpy._engine import as_rows, use_kernel
from softmaxkit._numpy._softmax import stable_exp
from softmaxkit._validation import _describe, check_label_smoothing


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
    eps = check_label_smoothing(label_smoothing)
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.integer) and target.shape == (n_samples,):
        if n_samples and (target.min() < 0 or target.max() >= n_classes):
            raise ValueError(f"target must hold class indices in [0, {n_classes}), got {target.min()}..{target.max()}")
        rows_target, is_index = target.astype(np.intp, copy=False), True
    elif np.issubdtype(target.dtype, np.floating) and target.shape == z.shape:
        rows_target, is_index = np.ascontiguousarray(target, dtype=z.dtype), False
    else:
        raise ValueError(
            f"target must be {n_samples} class indices or class probabilities of shape {z.shape}, got {_describe(target)}"
        )
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != (n_samples,):
            raise ValueError(f"sample_weight must have shape ({n_samples},), got shape {sample_weight.shape}")
    rows = _Rows(
        logits=z,
        out_dtype=z.dtype,
        input_shape=z.shape,
        class_axis=1,
        batch_shape=(n_samples,),
        target=rows_target,
        is_index=is_index,
        valid=np.ones(n_samples, dtype=bool) if is_index else None,
        weight=None,
        reduction="mean" if sample_weight is None else "none",  # the gradient's scale: 1 / N, or w_i
        label_smoothing=eps,
    )
    grad_output = 1.0 if sample_weight is None else sample_weight
    if use_kernel(engine, as_rows(z, (1,))):
        per_row, _, _ = _kernel_loss_and_grad(rows, grad_output, True, True, out=z)
    else:
        parts = stable_exp(z, (1,))
        terms = _loss_terms(rows, parts)
        per_row = terms.loss.astype(np.float64)
        z[...] = _gradient(rows, parts, terms, _row_scale(rows, terms.denominator, grad_output))
    if sample_weight is None:
        return float(np.sum(per_row) / n_samples) if n_samples else 0.0
    absent = sample_weight == 0
    if absent.any():
        per_row[absent] = 0
        z[absent] = 0
    return float(per_row @ sample_weight)
