"""The layers of :func:`softmaxkit.torch.linear_cross_entropy` (public names in ``_linear_cross_entropy``).

``_plan``: the problem, validated once, and the chunk sizes within ``max_memory``.
``_torch_engine`` and ``_triton_engine``: the two implementations, one interface
(``forward``, ``gradients``, ``logsumexp``).
``_autograd``: the engine chosen once per call, and the ``torch.autograd.Function`` classes.
"""
