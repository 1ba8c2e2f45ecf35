"""PNG plots of a trained softmax regression, for the command line.

matplotlib is imported only when a plot is drawn, and only its object-oriented API is used
(``matplotlib.figure.Figure`` rendered by the Agg canvas), so no pyplot state or global
backend is touched.  Each figure has a fixed pixel size (see the ``*_SIZE`` constants and
:func:`weights_size`), and each file is written atomically (:mod:`softmaxkit._atomic`), so an
interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from softmaxkit._atomic import atomic_write

DPI = 100
LOSS_CURVE_SIZE = (800, 500)
"""(width, height) in pixels of the loss-curve plot."""
CONFUSION_SIZE = (700, 700)
"""(width, height) in pixels of the confusion-matrix plot."""
_IMAGE_COLUMNS = 5
_PANEL_PIXELS = 200


def weights_size(n_classes: int, image_shape: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) in pixels of the weights plot.

    With an image grid, one panel per class, five to a row: 1000 px wide, 200 px per row
    plus 60 px for the title.  Otherwise a heatmap of 1000 x 600 px.

    Examples
    --------
    >>> weights_size(10, (8, 8)), weights_size(26, None)
    ((1000, 460), (1000, 600))
    """
    if image_shape is None:
        return (1000, 600)
    rows = math.ceil(n_classes / _IMAGE_COLUMNS)
    return (_IMAGE_COLUMNS * _PANEL_PIXELS, rows * _PANEL_PIXELS + 60)


def _figure(size: tuple[int, int]):
    from matplotlib.figure import Figure

    # A hundredth of a pixel more than asked: size / DPI * DPI can round to just below the integer
    # (460 / 100 * 100 = 459.99999999999994), which some matplotlib releases (3.7, 3.8) truncate to 459.
    return Figure(figsize=((size[0] + 0.01) / DPI, (size[1] + 0.01) / DPI), dpi=DPI, layout="constrained")


def _save(figure, path: Path) -> Path:
    """Render ``figure`` to ``path`` as a PNG, atomically (see :mod:`softmaxkit._atomic`)."""
    path = Path(path)
    with atomic_write(path) as stream:
        figure.savefig(stream, format="png", dpi=DPI)
    return path


def plot_loss_curve(
    path: str | Path,
    train_loss: Sequence[float],
    *,
    validation_loss: Sequence[float] | None = None,
    final_test_loss: float | None = None,
    xlabel: str = "iteration",
    title: str = "Training loss",
) -> Path:
    """Plot the training objective per iteration, with a validation curve or a final test point.

    Parameters
    ----------
    path : str or Path
        Where the PNG goes (:data:`LOSS_CURVE_SIZE` pixels).
    train_loss : sequence of float
        The objective after each iteration or epoch (the estimator's ``loss_curve_``).
    validation_loss : sequence of float, optional
        The held-out loss per iteration or epoch (the estimator's ``validation_loss_curve_``).
    final_test_loss : float, optional
        The test-set log-loss of the final model, drawn as a single marker at the last iteration
        when there is no validation curve.
    """
    figure = _figure(LOSS_CURVE_SIZE)
    axes = figure.add_subplot()
    train = np.asarray(train_loss, dtype=np.float64)
    steps = np.arange(1, train.size + 1)
    axes.plot(steps, train, label="training objective", color="tab:blue")
    if validation_loss is not None and len(validation_loss) > 0:
        validation = np.asarray(validation_loss, dtype=np.float64)
        axes.plot(np.arange(1, validation.size + 1), validation, label="validation loss", color="tab:orange")
    if final_test_loss is not None:
        axes.plot(
            [max(train.size, 1)],
            [final_test_loss],
            "o",
            color="tab:red",
            label=f"test log-loss of the final model ({final_test_loss:.4f})",
        )
    positive = np.concatenate([train[np.isfinite(train)], [final_test_loss or np.nan]])
    if positive.size and np.nanmin(positive) > 0 and np.nanmax(positive) / np.nanmin(positive) > 20:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, Path(path))


def plot_confusion_matrix(
    path: str | Path,
    matrix: np.ndarray,
    class_names: Sequence[object],
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Plot a confusion matrix (rows: true class, columns: predicted class).

    Colours show each row's fraction (the per-class recall on the diagonal); counts are written
    in the cells when there are at most 30 classes.  The PNG has :data:`CONFUSION_SIZE` pixels.
    """
    matrix = np.asarray(matrix)
    n = matrix.shape[0]
    totals = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    figure = _figure(CONFUSION_SIZE)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true class")
    names = [str(c) for c in class_names]
    ticks = np.arange(n)
    fontsize = 9 if n <= 12 else 6
    axes.set_xticks(ticks, names, fontsize=fontsize, rotation=90 if n > 12 else 0)
    axes.set_yticks(ticks, names, fontsize=fontsize)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if fractions[i, j] > 0.5 else "black"
                    axes.text(
                        j, i, str(int(matrix[i, j])), ha="center", va="center", color=colour, fontsize=fontsize - 1
                    )
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return _save(figure, Path(path))


def plot_weights(
    path: str | Path,
    coef: np.ndarray,
    class_names: Sequence[object],
    *,
    image_shape: tuple[int, int] | None = None,
    feature_names: Sequence[str] | None = None,
    title: str = "Learned weights per class",
) -> Path:
    """Plot the weight vector of each class, as images or as one heatmap.

    With ``image_shape`` (features are the pixels of an image), each class's weights are shown
    as an image in a diverging colour map centred on zero.  Otherwise a classes x features
    heatmap.  The PNG size is :func:`weights_size`.
    """
    coef = np.asarray(coef, dtype=np.float64)
    n_classes, n_features = coef.shape
    names = [str(c) for c in class_names]
    limit = float(np.max(np.abs(coef))) or 1.0
    figure = _figure(weights_size(n_classes, image_shape))
    if image_shape is not None:
        if image_shape[0] * image_shape[1] != n_features:
            raise ValueError(f"image_shape must have {n_features} pixels, got {image_shape}")
        rows = math.ceil(n_classes / _IMAGE_COLUMNS)
        grid = figure.subplots(rows, _IMAGE_COLUMNS, squeeze=False)
        image = None
        for k, axes in enumerate(grid.ravel()):
            axes.set_axis_off()
            if k < n_classes:
                image = axes.imshow(
                    coef[k].reshape(image_shape), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
                )
                axes.set_title(f"class {names[k]}", fontsize=10)
        figure.colorbar(image, ax=grid, shrink=0.8, label="weight")
    else:
        axes = figure.add_subplot()
        image = axes.imshow(coef, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        figure.colorbar(image, ax=axes, label="weight")
        axes.set_yticks(np.arange(n_classes), names, fontsize=9 if n_classes <= 30 else 6)
        if feature_names is not None and n_features <= 40:
            axes.set_xticks(np.arange(n_features), [str(f) for f in feature_names], rotation=90, fontsize=8)
        axes.set_xlabel("feature")
        axes.set_ylabel("class")
    figure.suptitle(title)
    return _save(figure, Path(path))
