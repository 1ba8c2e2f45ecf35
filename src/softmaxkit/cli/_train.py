"""``softmaxkit train``: fit a softmax regression on a data file or a bundled dataset."""

from __future__ import annotations

import argparse
import re
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np

from softmaxkit.cli import _checkpointing, _report
from softmaxkit.cli._bundled import BUNDLED_DATASETS, DEFAULT_DATASET, load_bundled
from softmaxkit.cli._common import (
    METRICS_FILE,
    MODEL_FILE,
    CLIError,
    HelpFormatter,
    UsageError,
    add_data_options,
    check_out_dir,
    classification_metrics,
    format_table,
    write_json,
)
from softmaxkit.cli._read import Dataset, infer_image_shape, read_dataset

PLOT_FILES = ("loss_curve.png", "confusion_matrix.png", "weights.png")
DEFAULT_RUNS = Path("runs")

EPILOG = """\
examples:
  softmaxkit train                                   # the bundled handwritten digits
  softmaxkit train --dataset iris --out runs/iris
  softmaxkit train data.csv --target species --test-size 0.25
  softmaxkit train train.parquet --test test.parquet --solver sgd --max-iter 30
  softmaxkit train letter-recognition.data.gz --no-header --target 0 --alpha 1e-3
  softmaxkit train huge.csv --max-memory 512MiB --cache   # streamed: larger than the budget
  torchrun --nproc-per-node 4 -m softmaxkit train parts/ --distributed   # data-parallel, a rank per file range

Features are standardised with the training set's mean and standard deviation unless
--no-standardize; sparse (svmlight) data is used as it is, never standardised: centring would
densify it, and scaling each column by its deviation inflates rare terms of text data.  The
transform is folded into the saved model's weights, so `predict` and `evaluate` take raw
features.  The output folder gets model.npz, metrics.json (with convergence, versions, command
line and times), the plots loss_curve.png, confusion_matrix.png and weights.png, and
report.html: all of it in one file that opens offline.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a softmax regression and write the model, metrics and plots",
        description="Train a multinomial (softmax) logistic regression on DATA, or on a bundled "
        "dataset when DATA is omitted, and report train and test metrics.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "data", nargs="?", metavar="DATA", help="training data (csv, tsv, parquet, npz, svmlight); default: --dataset"
    )
    source.add_argument(
        "--dataset",
        metavar="NAME",
        choices=tuple(BUNDLED_DATASETS),
        help=f"a bundled dataset: {', '.join(BUNDLED_DATASETS)} (see `softmaxkit datasets`); default {DEFAULT_DATASET}",
    )
    add_data_options(parser, target="the last column")
    split = parser.add_argument_group("test set (one of)").add_mutually_exclusive_group()
    split.add_argument("--test", metavar="DATA", help="a separate test file, read like DATA")
    split.add_argument(
        "--test-size",
        type=fraction,
        metavar="F",
        help="fraction of DATA held out for testing, stratified (default 0.2)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="output folder (default: a new runs/NAME-DATE-TIME folder); "
        "an existing folder with files is refused unless --overwrite",
    )
    output.add_argument(
        "--overwrite", action="store_true", help="replace this command's files in an existing --out folder"
    )
    _checkpointing.add_checkpoint_options(output)
    output.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    output.add_argument("--quiet", action="store_true", help="no progress output (reading, fitting)")
    model = parser.add_argument_group("estimator (SoftmaxRegression's options and defaults)")
    default = _estimator_defaults()
    model.add_argument("--no-standardize", dest="standardize", action="store_false", help="train on the raw features")
    model.add_argument("--alpha", type=float, help=f"L2 penalty strength (default {default['alpha']})")
    model.add_argument(
        "--solver",
        choices=("auto", "lbfgs", "newton-cg", "sgd", "adam"),
        help=f"the solver (default {default['solver']})",
    )
    model.add_argument(
        "--max-iter", type=int, metavar="N", help=f"iterations, or epochs for sgd/adam (default {default['max_iter']})"
    )
    model.add_argument("--tol", type=float, help=f"stopping tolerance (default {default['tol']})")
    model.add_argument(
        "--batch-size", type=int, metavar="N", help=f"mini-batch size for sgd/adam (default {default['batch_size']})"
    )
    model.add_argument(
        "--learning-rate", type=float, metavar="LR", help=f"step size for sgd/adam (default {default['learning_rate']})"
    )
    model.add_argument(
        "--learning-rate-schedule",
        choices=("constant", "invscaling", "adaptive"),
        help=f"step-size schedule for sgd/adam (default {default['learning_rate_schedule']})",
    )
    model.add_argument("--momentum", type=float, help=f"Nesterov momentum of sgd (default {default['momentum']})")
    model.add_argument(
        "--early-stopping",
        action="store_true",
        default=None,
        help="hold out a validation fraction, stop when its accuracy stops improving, and plot its loss",
    )
    model.add_argument(
        "--validation-fraction",
        type=float,
        metavar="F",
        help=f"validation share for --early-stopping (default {default['validation_fraction']})",
    )
    model.add_argument(
        "--n-iter-no-change",
        type=int,
        metavar="N",
        help=f"patience in iterations or epochs (default {default['n_iter_no_change']})",
    )
    model.add_argument("--class-weight", choices=("balanced",), help="reweight classes (default: none)")
    model.add_argument(
        "--label-smoothing",
        type=float,
        metavar="EPS",
        help=f"label smoothing in [0, 1] (default {default['label_smoothing']})",
    )
    model.add_argument(
        "--no-intercept", dest="fit_intercept", action="store_false", default=None, help="no intercept term"
    )
    model.add_argument("--dtype", choices=("float32", "float64"), help="working precision (default float64)")
    model.add_argument("--backend", help=f"where the loss is computed (default {default['backend']})")
    model.add_argument("--device", help="device of the backend, e.g. cpu or cuda")
    model.add_argument("--seed", type=int, default=0, help="seed of the test split and the estimator (default 0)")
    parser.set_defaults(run=run, parser=parser)


def fraction(text: str) -> float:
    """An argparse ``type``: a number strictly between 0 and 1.

    >>> fraction("0.25")
    0.25
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text}")
    return value


# --------------------------------------------------------------------------------------------
# the functional core


def standardization(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales (population standard deviations; 1 where a column is constant).

    Computed on each column divided by its largest magnitude, so finite features of any size give
    finite results (the squares of values beyond about 1e154 overflow: a feature with a value of
    1e300 would get an infinite scale and be silently ignored by the model).

    >>> standardization(np.array([[1e300], [-1e300]]))
    (array([0.]), array([1.e+300]))
    """
    size = _column_sizes(np.max(np.abs(X), axis=0, initial=0.0))
    mean = (X / size).mean(axis=0) * size
    return mean, _scales((X / size).std(axis=0) * size, mean)


def _column_sizes(largest: np.ndarray) -> np.ndarray:
    """Each column's largest magnitude, the divisor that keeps the moments finite (1 for an all-zero column)."""
    size = np.array(largest, dtype=np.float64)
    size[size == 0] = 1.0
    return size


def _scales(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The standard deviations, 1 where a column is constant (to rounding) and dividing by them would amplify noise."""
    scale = np.array(std, dtype=np.float64)
    scale[scale <= np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
    return scale


def streamed_standardization(source) -> tuple[np.ndarray, np.ndarray]:
    """:func:`standardization` of the features of a :class:`softmaxkit.sources.Source`, in two streaming passes.

    The first pass finds each column's largest magnitude, the second accumulates the moments of the
    columns divided by it (Chan's update, :class:`softmaxkit.sources.RunningMoments`): the memory is
    one batch, whatever the file's size. For the fit from a source (``train`` on files larger than
    memory); sparse batches are densified a batch at a time.

    >>> from softmaxkit.sources import ArraySource
    >>> X = np.array([[1.0, 1e300], [3.0, -1e300], [5.0, 1e300]])
    >>> mean, scale = streamed_standardization(ArraySource(X, np.zeros(3, dtype=int), max_bytes=40))
    >>> bool(np.allclose(mean, X.mean(axis=0)) and np.allclose(scale, standardization(X)[1]))
    True
    """
    from softmaxkit.sources import RunningMoments

    largest = None
    for X, _, _ in source:
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        if X.shape[0] == 0:
            continue
        batch_largest = np.max(np.abs(X), axis=0)
        largest = batch_largest if largest is None else np.maximum(largest, batch_largest)
    if largest is None:
        raise CLIError(f"{getattr(source, 'name', 'the data')} has no data rows")
    size = _column_sizes(largest)
    moments = RunningMoments(len(size))
    for X, _, _ in source:
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        moments.update(np.asarray(X, dtype=np.float64) / size)
    mean = moments.mean_ * size
    return mean, _scales(np.sqrt(moments.var_) * size, mean)


def fold_standardization(
    coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Fold ``z = (x - mean) / scale`` into a linear model: the weights that take raw ``x``.

    .. math:: W z + b = (W / s) x + (b - (W / s) \mu)

    Examples
    --------
    >>> W, b = np.array([[2.0, -1.0]]), np.array([0.5])
    >>> fold_standardization(W, b, np.array([1.0, 3.0]), np.array([2.0, 0.5]))
    (array([[ 1., -2.]]), array([5.5]))
    """
    folded = coef / scale
    return folded, intercept - folded @ mean


def _estimator_defaults() -> dict:
    from softmaxkit.linear_model import SoftmaxRegression

    return SoftmaxRegression().get_params()


def estimator_options(args: argparse.Namespace) -> dict:
    """The ``SoftmaxRegression`` keyword arguments the user gave (the rest keep their defaults)."""
    names = (
        "alpha",
        "solver",
        "max_iter",
        "tol",
        "batch_size",
        "learning_rate",
        "learning_rate_schedule",
        "momentum",
        "early_stopping",
        "validation_fraction",
        "n_iter_no_change",
        "class_weight",
        "label_smoothing",
        "fit_intercept",
        "backend",
        "device",
    )
    options = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.dtype is not None:
        options["dtype"] = np.dtype(args.dtype).type
    options["random_state"] = args.seed
    options["verbose"] = not args.quiet
    return options


def check_estimator_options(args: argparse.Namespace) -> None:
    """The estimator's own parameter check, before any data is read: a value it refuses is a usage error.

    (``_check_params`` checks the parameters only, so each of its ``ValueError`` is about an option.)
    """
    from softmaxkit.linear_model import SoftmaxRegression

    try:
        SoftmaxRegression(**estimator_options(args))._check_params()
    except ValueError as error:
        raise UsageError(" ".join(str(error).split())) from None
    _checkpointing.check_checkpoint_options(args)


def _split(data: Dataset, args: argparse.Namespace):
    if args.test is not None:
        test = read_dataset(
            args.test,
            target=args.target if args.target is not None else data.target,
            header=args.header,
            fmt=args.fmt,
            n_features=data.n_features,
            show_progress=not args.quiet,
        )
        if test.n_features != data.n_features:
            raise CLIError(
                f"test file {test.name} has {test.n_features} features, the training data has {data.n_features}"
            )
        return data.X, data.y, test.X, test.y, f"{test.name} ({len(test.y)} samples)"
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
        raise CLIError(f"cannot hold out a test set of {size:g}: {error}") from None
    return X_train, y_train, X_test, y_test, f"{size:g} of the data held out ({len(y_test)} samples)"


def _default_out(name: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name.split(".")[0]).strip("-") or "run"
    base = DEFAULT_RUNS / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _curve(estimator, name: str) -> list[float] | None:
    values = getattr(estimator, name, None)
    if values is None:
        return None
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


# --------------------------------------------------------------------------------------------
# the shell


def run(args: argparse.Namespace) -> int:
    started = _report.now()
    if args.plots:
        import matplotlib  # noqa: F401  (a missing matplotlib should stop the run before training)
    check_estimator_options(args)
    data, source = _load(args)
    out = args.out if args.out is not None else _default_out(data.name)
    check_out_dir(out, overwrite=args.overwrite, ours=(MODEL_FILE, METRICS_FILE, _report.REPORT_FILE) + PLOT_FILES)
    X_train, y_train, X_test, y_test, test_note = _split(data, args)
    n_classes = len(np.unique(y_train))
    if n_classes < 2:
        raise CLIError(f"the training data must have at least two classes, got {n_classes}")
    print(
        f"training on {source}: {len(y_train)} samples, {data.n_features} features, "
        f"{n_classes} classes; test set: {test_note}",
        flush=True,
    )

    fit = _fit(args, X_train, y_train)
    estimator = fit["estimator"]
    train_metrics = classification_metrics(estimator, X_train, y_train, source="the training data")
    test_metrics = classification_metrics(estimator, X_test, y_test, source="the test data")
    image_shape = data.image_shape or infer_image_shape(data.n_features, data.feature_names)
    report = {
        "dataset": {
            "name": data.name,
            "source": source,
            "n_samples": len(data.y),
            "n_features": data.n_features,
            "n_classes": n_classes,
            "classes": [_jsonable(c) for c in estimator.classes_],
        },
        "split": {
            "test": args.test,
            "test_size": None if args.test else (args.test_size or 0.2),
            "seed": args.seed,
            "n_train": len(y_train),
            "n_test": len(y_test),
        },
        # The options of the fit; verbose only shows progress (the command's --quiet), so it is left out.
        "estimator": _jsonable({k: v for k, v in estimator.get_params().items() if k != "verbose"}),
        "standardized": fit["standardized"],
        "fit_time_s": fit["time"],
        "n_iter": int(np.max(estimator.n_iter_)),
        "fit": {
            "solver": solver_of(estimator),
            **_report.stopping(estimator, converged=fit["converged"], solver=solver_of(estimator)),
        },
        "train": train_metrics,
        "test": test_metrics,
        "loss_curve": _curve(estimator, "loss_curve_"),
        "validation_loss_curve": _curve(estimator, "validation_loss_curve_"),
        "files": {
            "model": MODEL_FILE,
            "report": _report.REPORT_FILE,
            "plots": list(PLOT_FILES) if args.plots else [],
        },
    }
    metadata = {
        "dataset": data.name,
        "source": source,
        "target": data.target,
        "target_index": data.target_index,
        "header": bool(args.header) if args.data is not None else True,
        "feature_names": list(data.feature_names) if data.feature_names is not None else None,
        "image_shape": list(image_shape) if image_shape is not None else None,
        "standardized": fit["standardized"],
        "mean": fit["mean"].tolist() if fit["standardized"] else None,
        "scale": fit["scale"].tolist() if fit["standardized"] else None,
    }

    out.mkdir(parents=True, exist_ok=True)
    estimator.save(out / MODEL_FILE, overwrite=args.overwrite, metadata=metadata)
    if args.plots:
        _plot(
            out,
            estimator,
            report,
            fit["trained_coef"],
            image_shape,
            data.feature_names,
            standardized=fit["standardized"],
        )
    report["run"] = _report.run_record(args.argv, started, _report.now())
    write_json(out / METRICS_FILE, report)
    _report.write_report(out, report, title=f"softmaxkit train: {data.name}", plots=PLOT_FILES if args.plots else ())
    _print_summary(out, report, solver_of(estimator), fit["notes"], plots=args.plots)
    return 0


def _load(args: argparse.Namespace) -> tuple[Dataset, str]:
    """The training data and a description of where it came from."""
    if args.data is None:
        if args.target is not None:
            raise UsageError("--target applies to a data file; bundled datasets have their own labels")
        data = load_bundled(args.dataset or DEFAULT_DATASET)
        return data, f"bundled dataset {data.name}"
    data = read_dataset(args.data, target=args.target, header=args.header, fmt=args.fmt, show_progress=not args.quiet)
    return data, str(args.data)


def _fit(args: argparse.Namespace, X_train: np.ndarray, y_train: np.ndarray) -> dict:
    """Standardise, fit, and fold the standardisation into the estimator's weights.

    Returns the fitted ``estimator`` (taking raw features), the ``trained_coef`` (on the
    standardised features, for the weights plot), ``mean`` and ``scale``, whether it was ``standardized``
    (never for sparse data), the fit ``time`` and
    ``notes`` (convergence warnings, as one-line notes).
    """
    import scipy.sparse
    from sklearn.exceptions import ConvergenceWarning

    from softmaxkit.linear_model import SoftmaxRegression

    mean = scale = None
    Z_train = X_train
    notes = []
    standardize = args.standardize and not scipy.sparse.issparse(X_train)
    if args.standardize and not standardize:
        notes.append("note: sparse features are used as they are (not standardised: centring would densify them)")
    if standardize:
        mean, scale = standardization(X_train)
        Z_train = (X_train - mean) / scale
    estimator = SoftmaxRegression(**estimator_options(args))
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        _checkpointing.fit(estimator, Z_train, y_train, args)
    fit_time = time.perf_counter() - started
    converged = True
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not converged:
        # Standardising is advice only for dense features the user chose not to standardise.
        notes.append(convergence_note(estimator, standardized=standardize or scipy.sparse.issparse(X_train)))
    trained_coef = np.array(estimator.coef_, dtype=np.float64)
    if standardize:
        dtype = np.asarray(estimator.coef_).dtype
        coef, intercept = fold_standardization(
            trained_coef, np.asarray(estimator.intercept_, dtype=np.float64), mean, scale
        )
        estimator.coef_, estimator.intercept_ = coef.astype(dtype), intercept.astype(dtype)
    return {
        "estimator": estimator,
        "converged": converged,
        "trained_coef": trained_coef,
        "mean": mean,
        "scale": scale,
        "standardized": standardize,
        "time": fit_time,
        "notes": notes,
    }


def solver_of(estimator) -> str:
    """The solver a fit used (``solver_`` where the estimator resolves one, else ``solver``)."""
    return str(getattr(estimator, "solver_", estimator.solver))


def convergence_note(estimator, *, standardized: bool) -> str:
    """The note printed when the solver stopped at ``max_iter``: what to change, in the command's options.

    Standardising is advised only when the features were not standardised already.
    """
    solver = solver_of(estimator)
    unit = "epochs" if solver in ("sgd", "adam") else "iterations"
    advice = "raise --max-iter or --tol"
    if not standardized:
        advice += ", or drop --no-standardize (features on very different scales slow the solver)"
    return f"note: the {solver} solver did not converge in --max-iter {estimator.max_iter} {unit}; {advice}"


def _print_summary(out: Path, report: dict, solver: str, notes: list[str], *, plots: bool) -> None:
    rows = [
        [part, report[part]["n_samples"], f"{report[part]['accuracy']:.4f}", f"{report[part]['log_loss']:.4f}"]
        for part in ("train", "test")
    ]
    print(format_table(["set", "samples", "accuracy", "log-loss"], rows))
    unit = "epochs" if solver in ("sgd", "adam") else "iterations"
    folded = ", standardised features folded into the model" if report["standardized"] else ""
    print(f"fit time {report['fit_time_s']:.2f} s ({solver}, {report['n_iter']} {unit}{folded})")
    for note in notes:
        print(note)
    print(f"model    {out / MODEL_FILE}")
    print(f"metrics  {out / METRICS_FILE}")
    print(f"report   {out / _report.REPORT_FILE}")
    if plots:
        print("plots    " + "\n         ".join(str(out / p) for p in PLOT_FILES))


def _plot(out: Path, estimator, report: dict, trained_coef, image_shape, feature_names, *, standardized: bool) -> None:
    from softmaxkit.cli import _plots

    validation = report["validation_loss_curve"]
    _plots.plot_loss_curve(
        out / "loss_curve.png",
        report["loss_curve"] or [],
        validation_loss=validation,
        final_test_loss=None if validation else report["test"]["log_loss"],
        xlabel="epoch" if solver_of(estimator) in ("sgd", "adam") else "iteration",
        title=f"Training objective, {report['dataset']['name']}",
    )
    _plots.plot_confusion_matrix(
        out / "confusion_matrix.png",
        np.asarray(report["test"]["confusion_matrix"]),
        estimator.classes_,
        title=f"Confusion matrix, test set ({report['test']['n_samples']} samples, "
        f"accuracy {report['test']['accuracy']:.3f})",
    )
    _plots.plot_weights(
        out / "weights.png",
        trained_coef,
        estimator.classes_,
        image_shape=tuple(image_shape) if image_shape is not None else None,
        feature_names=feature_names,
        title="Learned weights per class" + (" (on standardised features)" if standardized else ""),
    )
