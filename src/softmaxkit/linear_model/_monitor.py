"""The per-iteration callback of :meth:`SoftmaxRegression.fit <softmaxkit.linear_model.SoftmaxRegression.fit>`.

:class:`Monitor` is the solvers' ``callback(x, f) -> bool``: it shows the progress bar and, with a
validation set, records the validation accuracy and loss, keeps the best point and asks the
solver to stop when the accuracy has not improved by ``tol`` for ``n_iter_no_change`` calls.
"""

from __future__ import annotations

import numpy as np

from softmaxkit.linear_model import _loss

__all__ = ["Monitor"]


class Monitor:
    """Progress bar and early stopping, as a solver callback.

    Parameters
    ----------
    X_val, t_val, s_val : ndarray or None
        The validation rows, their targets (class indices or probabilities) and sample weights
        (or None); ``X_val=None`` means no early stopping.
    n_classes, n_features : int
    fit_intercept : bool
    label_smoothing : float
        Of the validation loss (no penalty).
    tol : float
    n_iter_no_change : int
    dtype : numpy.dtype
        The working precision the point ``x`` is evaluated in.
    progress : dict or None
        :func:`softmaxkit._progress.progress` options (``total``, ``desc``, ``unit``) for a progress
        display on stderr (a bar in a terminal, plain lines in a log, ending at the iterations run);
        None shows none.

    Attributes
    ----------
    scores, losses : list of float
        Validation accuracy (weighted) and loss after each call.
    best_score : float
    best_x : ndarray or None
        The point of the best validation accuracy (None without a validation set).
    """

    def __init__(
        self,
        X_val,
        t_val,
        s_val,
        *,
        n_classes,
        n_features,
        fit_intercept,
        label_smoothing,
        tol,
        n_iter_no_change,
        dtype,
        progress=None,
    ):
        self.X_val, self.t_val, self.s_val = X_val, t_val, s_val
        self.fit_intercept, self.label_smoothing = fit_intercept, label_smoothing
        self.tol, self.n_iter_no_change = tol, n_iter_no_change
        self.shape = (n_features + int(fit_intercept), n_classes)  # the solvers' layout (theta of _loss)
        self.n_features, self.dtype = n_features, dtype
        self.scores, self.losses = [], []
        self.best_score, self.best_x, self.bad = -np.inf, None, 0
        self.bar = None
        if progress is not None:
            from softmaxkit._progress import progress as progress_display

            self.bar = progress_display(**progress)

    def __call__(self, x, f) -> bool:
        stop = False
        postfix = {"loss": f"{f:.6g}"}
        if self.X_val is not None:
            theta = np.asarray(x, dtype=self.dtype).reshape(self.shape)
            z = self.X_val @ theta[: self.n_features]
            if self.fit_intercept:
                z += theta[self.n_features]
            hard = self.t_val if self.t_val.ndim == 1 else np.argmax(self.t_val, axis=1)
            correct = (np.argmax(z, axis=1) == hard).astype(np.float64)
            w = None if self.s_val is None else self.s_val.astype(np.float64)
            score = float(np.average(correct, weights=w)) if w is None or w.sum() > 0 else float(correct.mean())
            loss = _loss.loss(
                theta.T,
                self.X_val,
                self.t_val,
                self.s_val if w is not None and w.sum() > 0 else None,
                0.0,
                fit_intercept=self.fit_intercept,
                label_smoothing=float(self.label_smoothing),
            )
            self.scores.append(score)
            self.losses.append(float(loss))
            self.bad = 0 if score > self.best_score + self.tol else self.bad + 1
            if score > self.best_score or self.best_x is None:
                self.best_score, self.best_x = max(score, self.best_score), np.array(x, copy=True)
            stop = self.bad >= self.n_iter_no_change
            postfix["val_acc"] = f"{score:.4f}"
        if self.bar is not None:
            self.bar.update(1, postfix)
        return stop

    def close(self, *, failed: bool = False):
        if self.bar is not None:
            self.bar.close(failed=failed)
