"""``softmaxkit train`` on a file larger than memory: the same run as in memory, every step a streaming pass.

The steps (each a pass over the data file, or over its float32 cache with ``--cache``; see
:mod:`softmaxkit.cli._stream` for when a run streams and what ``--max-memory`` bounds):

1. the rows, the labels and each feature's largest magnitude; then the features' mean and
   standard deviation (:func:`~softmaxkit.cli._stream.streamed_moments`), as the in-memory run
   standardises them (not for sparse svmlight data);
2. the fit, ``SoftmaxRegression().fit(source)`` (:mod:`softmaxkit.linear_model._source_fit`): the
   full-batch solvers stream every evaluation, sgd and adam run by passes;
3. the metrics of the training and the test rows, batch by batch.

The test rows are ``--test FILE`` or, for ``--test-size F``, a seeded draw of each row (not
stratified: a stream cannot know the classes before it has passed). The model, metrics and report
are written only after the fit, each file atomically: a run killed midway leaves no model.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from softmaxkit.cli import _report, _train
from softmaxkit.cli._common import METRICS_FILE, MODEL_FILE, CLIError, check_out_dir, write_json
from softmaxkit.cli._stream import (
    ProgressSource,
    SplitSource,
    StandardizedSource,
    add_stream_options,
    open_data,
    should_stream,
    streamed_metrics,
    streamed_moments,
    streamed_scan,
)


def add_parser(subparsers) -> None:
    """``train``'s parser (:func:`softmaxkit.cli._train.add_parser`) with the streaming options, run by :func:`run`."""
    _train.add_parser(subparsers)
    parser = subparsers.choices["train"]
    add_stream_options(parser, cache=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``train``: streamed when :func:`~softmaxkit.cli._stream.should_stream` says so, else in memory."""
    if args.data is None or not should_stream(args.data, args):
        return _train.run(args)
    started = _report.now()
    if args.plots:
        import matplotlib  # noqa: F401  (a missing matplotlib should stop the run before training)
    _train.check_estimator_options(args)
    return run_streamed(args, started)


def _sources(args: argparse.Namespace):
    """``(data, train, test, test note, target name)``: the file's source, its training and its test rows."""
    target = args.target if args.target is not None else -1
    data = open_data(args.data, args, target=target)
    target_name = getattr(getattr(data, "plan", None), "target", None)
    if args.test is not None:
        test = open_data(args.test, args, target=target_name if target_name is not None else target)
        if test.n_features != data.n_features:
            raise CLIError(
                f"test file {test.name} has {test.n_features} features, the training data has {data.n_features}"
            )
        return data, data, test, f"{test.name}", target_name
    size = 0.2 if args.test_size is None else args.test_size
    train = SplitSource(data, fraction=size, seed=args.seed, test=False)
    test = SplitSource(data, fraction=size, seed=args.seed, test=True)
    return data, train, test, f"{size:g} of the rows held out at random", target_name


def run_streamed(args: argparse.Namespace, started) -> int:
    """``train`` streaming ``args.data`` (see the module docstring); the same outputs as in memory."""
    from sklearn.exceptions import ConvergenceWarning

    from softmaxkit.linear_model import SoftmaxRegression
    from softmaxkit.sources import cache_source

    if args.early_stopping:
        raise CLIError("--early-stopping needs the rows in memory; it is not available when streaming (see --stream)")
    if args.backend not in (None, "numpy"):
        raise CLIError(f"--backend must be numpy when streaming, got {args.backend}")
    name = Path(args.data).name
    out = args.out if args.out is not None else _train._default_out(name)
    check_out_dir(
        out, overwrite=args.overwrite, ours=(MODEL_FILE, METRICS_FILE, _report.REPORT_FILE, *_train.PLOT_FILES)
    )
    data, rows, test, test_note, target_name = _sources(args)
    train = rows
    show = not args.quiet
    cached = None
    if args.cache:
        cached = cache_source(ProgressSource(train, enabled=show, what="caching"), dtype=np.float32)
        train = cached
    try:
        train = ProgressSource(train, enabled=show)
        standardize = args.standardize and not train.sparse
        n_train, labels, largest = streamed_scan(train, standardize=standardize)
        if len(labels.classes_) < 2:
            raise CLIError(f"the training data must have at least two classes, got {len(labels.classes_)}")
        mean, scale = streamed_moments(train, largest) if standardize else (None, None)
        print(
            f"training on {args.data} (streamed, batches of {train.max_bytes / 2**20:.0f} MiB): {n_train} samples, "
            f"{train.n_features} features, {len(labels.classes_)} classes; test set: {test_note}",
            flush=True,
        )
        fitted_on = StandardizedSource(train, mean, scale) if standardize else train
        estimator = SoftmaxRegression(**_train.estimator_options(args))
        notes = []
        if args.standardize and not standardize:
            notes.append("note: sparse features are used as they are (not standardised: centring would densify them)")
        clock = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            estimator.fit(fitted_on)
        fit_time = time.perf_counter() - clock
    finally:
        if cached is not None:
            cached.close()
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for warning in caught:
        if not issubclass(warning.category, ConvergenceWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not converged:
        notes.append(_train.convergence_note(estimator, standardized=standardize or train.sparse))
    trained_coef = np.array(estimator.coef_, dtype=np.float64)
    if standardize:
        dtype = np.asarray(estimator.coef_).dtype
        coef, intercept = _train.fold_standardization(
            trained_coef, estimator.intercept_.astype(np.float64), mean, scale
        )
        estimator.coef_, estimator.intercept_ = coef.astype(dtype), intercept.astype(dtype)
    train_metrics = streamed_metrics(estimator, ProgressSource(rows, enabled=show, what="scoring"))
    test_metrics = streamed_metrics(estimator, ProgressSource(test, enabled=show, what="scoring"))
    _write(
        args,
        out,
        started,
        estimator,
        data,
        train_metrics,
        test_metrics,
        target_name,
        fit_time,
        converged,
        standardize=standardize,
        mean=mean,
        scale=scale,
        trained_coef=trained_coef,
        notes=notes,
    )
    return 0


def _write(
    args,
    out,
    started,
    estimator,
    data,
    train_metrics,
    test_metrics,
    target_name,
    fit_time,
    converged,
    *,
    standardize,
    mean,
    scale,
    trained_coef,
    notes,
) -> None:
    """The model, metrics.json, the plots and the report, as the in-memory run writes them."""
    from softmaxkit.cli._read import infer_image_shape

    name = Path(args.data).name
    train = data
    feature_names = None if train.sparse or not args.header else train.feature_names
    image_shape = infer_image_shape(train.n_features, feature_names)
    columns = getattr(data, "columns", None)
    n_train, n_test = train_metrics["n_samples"], test_metrics["n_samples"]
    solver = _train.solver_of(estimator)
    report = {
        "dataset": {
            "name": name,
            "source": str(args.data),
            "n_samples": n_train + n_test if args.test is None else n_train,
            "n_features": train.n_features,
            "n_classes": len(estimator.classes_),
            "classes": [_train._jsonable(c) for c in estimator.classes_],
            "streamed": True,
        },
        "split": {
            "test": args.test,
            "test_size": None if args.test else (args.test_size or 0.2),
            "seed": args.seed,
            "n_train": n_train,
            "n_test": n_test,
        },
        "estimator": _train._jsonable({k: v for k, v in estimator.get_params().items() if k != "verbose"}),
        "standardized": standardize,
        "fit_time_s": fit_time,
        "n_iter": int(np.max(estimator.n_iter_)),
        "fit": {"solver": solver, **_report.stopping(estimator, converged=converged, solver=solver)},
        "train": train_metrics,
        "test": test_metrics,
        "loss_curve": _train._curve(estimator, "loss_curve_"),
        "validation_loss_curve": None,
        "files": {
            "model": MODEL_FILE,
            "report": _report.REPORT_FILE,
            "plots": list(_train.PLOT_FILES) if args.plots else [],
        },
    }
    metadata = {
        "dataset": name,
        "source": str(args.data),
        "target": target_name if target_name is not None or not train.sparse else "label",  # (svmlight: as in memory)
        "target_index": columns.index(target_name) if columns is not None and target_name in columns else None,
        "header": bool(args.header),
        "feature_names": list(feature_names) if feature_names is not None else None,
        "image_shape": list(image_shape) if image_shape is not None else None,
        "standardized": standardize,
        "mean": mean.tolist() if standardize else None,
        "scale": scale.tolist() if standardize else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    estimator.save(out / MODEL_FILE, overwrite=args.overwrite, metadata=metadata)
    if args.plots:
        _train._plot(out, estimator, report, trained_coef, image_shape, feature_names, standardized=standardize)
    report["run"] = _report.run_record(args.argv, started, _report.now())
    write_json(out / METRICS_FILE, report)
    _report.write_report(out, report, title=f"softmaxkit train: {name}", plots=_train.PLOT_FILES if args.plots else ())
    _train._print_summary(out, report, solver, notes, plots=args.plots)
