"""Out-of-core data sources (private; the public names are re-exported by :mod:`softmaxkit.sources`).

Modules, one job each: ``_errors`` (DataError, message helpers), ``_columns`` (the column rule, labels,
finite checks), ``_base`` (the Source protocol, Batch, the byte budget), ``_arrow`` (Arrow tables to
batches), ``_csv``, ``_parquet``, ``_svmlight``, ``_arrays`` (one format each), ``_cache`` (the
on-disk cache), ``_statistics`` (labels and moments in one pass), ``_open`` (a source by suffix).
"""
