"""Data-parallel fitting on ``torch.distributed``: the machinery behind :mod:`softmaxkit.distributed`.

:mod:`._communicator` wraps the process group (the only module that calls ``torch.distributed``),
:mod:`._objective` turns a rank-local :class:`~softmaxkit.linear_model._solvers.Objective` into the
global one (one all-reduce per evaluation), :mod:`._fit` is the sequence of
:meth:`SoftmaxRegression.fit <softmaxkit.linear_model.SoftmaxRegression.fit>` with every global fact
computed globally. Nothing here is imported by ``import softmaxkit``; torch is imported when a
:class:`~._communicator.Communicator` is built.
"""
