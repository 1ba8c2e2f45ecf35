"""Arrow tables to batches: exact-size re-batching and the conversion of a table's columns to ``X, y, w``.

Shared by the CSV and Parquet sources; pyarrow is imported by the callers, lazily.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from softmaxkit._sources._base import Batch, batch_nbytes
from softmaxkit._sources._columns import ColumnPlan, check_finite, check_weights, to_labels
from softmaxkit._sources._errors import DataError


@dataclass
class RowLimit:
    """The rows of the next batch: first from the row width known in advance, then from the batches' own bytes.

    String labels are as wide as their longest name, which a stream learns only by reading; a batch
    found wider than the budget is split once (:func:`~softmaxkit._sources._base.split_to_budget`)
    and the next ones are sized to fit.
    """

    rows: int
    max_bytes: int

    def learn(self, batch: Batch) -> None:
        n = batch.X.shape[0]
        if n:
            per_row = -(-batch_nbytes(batch) // n)
            self.rows = max(1, min(self.rows, self.max_bytes // per_row))


@dataclass
class LabelKind:
    """The kind of a stream's labels (``"int"`` or ``"str"``), fixed by its first batch and held to after."""

    requested: str = "infer"
    seen: str | None = None

    def check(self, y: np.ndarray, *, name: str, source: str, first_row: int) -> np.ndarray:
        kind = "str" if y.dtype.kind == "U" else "int"
        if self.seen is None:
            self.seen = kind
        elif kind != self.seen:
            raise DataError(
                f"{source}: target column {name!r} holds names from data row {first_row} on ({str(y[0])!r}, ...) "
                "after whole numbers in the rows before; read it with label_type='str' to take every label as a name"
                if kind == "str"
                else f"{source}: target column {name!r} holds whole numbers from data row {first_row} on after names "
                "in the rows before; read it with label_type='str' to take every label as a name"
            )
        return y


def column_labels(column, *, name: str, source: str, first_row: int, kind: LabelKind) -> np.ndarray:
    """An Arrow column of labels as int64 or str, by :func:`~softmaxkit._sources._columns.to_labels`'s rule.

    A text column (CSV's, or Parquet's strings) counts as numbers when every value of the batch
    parses as one, as a whole-file reader would see it; leading blanks are dropped.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.utf8_ltrim_whitespace(column)
        if column.null_count == 0 and len(column) and pc.any(pc.equal(column, "")).as_py():
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
        if kind.requested != "str" and kind.seen != "str":
            for numeric in (pa.int64(), pa.float64()):
                try:
                    column = pc.cast(column, numeric)
                    break
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype == object and column.null_count == 0 and (pa.types.is_string(column.type)):
        values = values.astype(str)
    y = to_labels(values, name=name, source=source, first_row=first_row, label_type=kind.requested)
    return kind.check(y, name=name, source=source, first_row=first_row)


def assemble_batches(
    record_batches: Iterable, plan: ColumnPlan, *, limit: RowLimit, dtype: np.dtype, source: str, kind: LabelKind
) -> Iterator[Batch]:
    """Batches of exactly ``limit.rows`` rows (the last one fewer) from Arrow record batches of any size.

    Each record batch (a block of text, a slice of a row group) is converted as it arrives into the
    batch being filled, so the Arrow data of one block is alive at a time beside the batch: about
    one batch in all, not two. Features must be finite, labels valid, weights finite and non-negative.
    """
    d = len(plan.features)
    X = np.empty((limit.rows, d), dtype=dtype)
    labels: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    filled = 0
    row = 1  # the data row number of X's first row

    def finish(X, filled):
        y = np.concatenate(labels) if plan.target is not None else None
        w = np.concatenate(weights) if plan.weight is not None else None
        return Batch(X if filled == X.shape[0] else X[:filled].copy(), y, w)

    for record_batch in record_batches:
        start, n = 0, record_batch.num_rows
        while start < n:
            take = min(n - start, X.shape[0] - filled)
            part = record_batch.slice(start, take)
            here = row + filled
            block = X[filled : filled + take]
            for j, name in enumerate(plan.features):
                block[:, j] = part.column(name).to_numpy(zero_copy_only=False)  # numbers; nulls are NaN
            check_finite(block, plan.features, source=source, first_row=here)
            if plan.target is not None:
                column = part.column(plan.target)
                labels.append(column_labels(column, name=plan.target, source=source, first_row=here, kind=kind))
            if plan.weight is not None:
                w = np.ascontiguousarray(part.column(plan.weight).to_numpy(zero_copy_only=False), dtype=np.float64)
                check_weights(w, name=plan.weight, source=source, first_row=here)
                weights.append(w)
            filled += take
            start += take
            if filled == X.shape[0]:
                batch = finish(X, filled)
                yield batch
                limit.learn(batch)
                row += filled
                X, labels, weights, filled = np.empty((limit.rows, d), dtype=dtype), [], [], 0
    if filled:
        yield finish(X, filled)


def numeric_type(arrow_type) -> bool:
    """Whether an Arrow column type holds numbers a feature may be (integers, floats, booleans)."""
    import pyarrow as pa

    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)
