r"""Per-token statistics of the logits ``input @ weight.T + bias`` without materialising them: for RL and distillation.

With the logits of :mod:`softmaxkit.torch._linear_cross_entropy` divided by a temperature
:math:`T`, :math:`z_{nc} = \kappa \tanh(u_{nc} / \kappa) / T` (or :math:`u_{nc} / T`), and
:math:`p_{nc} = e^{z_{nc} - \operatorname{lse}_n}`, :func:`linear_token_stats` returns per token

.. math::

    \log p_{n y_n} = z_{n y_n} - \operatorname{lse}_n, \qquad
    H_n = -\sum_c p_{nc} \log p_{nc} = \operatorname{lse}_n - \sum_c p_{nc} z_{nc}, \qquad
    \operatorname{lse}_n = \log \sum_c e^{z_{nc}},

from one pass over the vocabulary. In the forms of :mod:`softmaxkit.torch._stable` (``m`` the
largest logit, :math:`S'` the other exponentials): :math:`-\log p_{ny} = \operatorname{log1p}(S')
+ (m - z_{ny})` and :math:`H = \operatorname{log1p}(S') + E / (1 + S')` with :math:`E =
\sum_c e^{z_c - m} (m - z_c)`, sums of non-negative terms: a confident token keeps a full-precision
log-probability and entropy, however small.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from softmaxkit.torch._checks import (
    check_backend,
    check_finite_real,
    check_ignore_index64,
    check_linear_target,
)
from softmaxkit.torch._linear_ce._autograd import LinearTokenStats
from softmaxkit.torch._linear_ce._plan import check_max_memory_option
from softmaxkit.torch._linear_cross_entropy import amp_operands

__all__ = ["TokenStats", "linear_token_stats"]


class TokenStats(NamedTuple):
    """:func:`linear_token_stats`' result: three tensors of the tokens' shape, float32 (float64 for float64 input)."""

    logprob: torch.Tensor  # log p(target) at the temperature; 0 where the target is ignore_index; differentiable
    entropy: torch.Tensor  # the entropy of the token's distribution; no gradient
    lse: torch.Tensor  # the log-sum-exp of the (tempered) logits; differentiable


def linear_token_stats(
    input: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    softcap: float | None = None,
    max_memory: int | None = None,
    backend: str = "auto",
) -> TokenStats:
    r"""Per-token target log-probability, entropy and log-sum-exp of ``input @ weight.T + bias``, never materialised.

    The math is in the module docstring. For RL (policy-gradient losses and their entropy bonus at
    a sampling temperature) and distillation, where the per-token log-probabilities are needed
    rather than a reduced loss; for training with a z-loss use :func:`linear_cross_entropy`, and
    log ``z_loss * (stats.lse ** 2)`` over the kept tokens from here (the same pass gives it).

    Parameters
    ----------
    input : torch.Tensor, shape (..., d)
        Hidden states, as for :func:`linear_cross_entropy` (the same precisions and autocast rules).
    weight : torch.Tensor, shape (V, d)
    target : torch.Tensor of integers, shape (...)
        The class (token) whose log-probability is returned.
    bias : torch.Tensor, shape (V,), optional
    temperature : float > 0, default 1.0
        The logits are divided by it (after the softcap).
    ignore_index : int, default -100
        Tokens whose target equals it get ``logprob = 0`` and no gradient through it; their
        entropy and log-sum-exp are still computed.
    softcap, max_memory, backend
        As for :func:`linear_cross_entropy` (a temperature other than 1 runs on the PyTorch engine).

    Returns
    -------
    TokenStats
        ``(logprob, entropy, lse)``. Gradients flow from ``logprob`` and ``lse`` to ``input``,
        ``weight`` and ``bias``; ``entropy`` carries none.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from softmaxkit.torch import linear_token_stats
    >>> g = torch.Generator().manual_seed(0)
    >>> x, w = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(9, 4, generator=g, dtype=torch.float64)
    >>> t = torch.tensor([1, 0, 8, 3, 3])
    >>> stats = linear_token_stats(x, w, t, temperature=0.7)
    >>> logp = F.log_softmax(x @ w.T / 0.7, dim=-1)
    >>> bool(torch.allclose(stats.logprob, logp.gather(1, t[:, None])[:, 0], rtol=1e-12))
    True
    >>> bool(torch.allclose(stats.entropy, -(logp.exp() * logp).sum(1), rtol=1e-12))
    True
    """
    input, weight, bias = amp_operands(input, weight, bias)
    ignore_index = check_ignore_index64(ignore_index)
    temperature = check_finite_real(temperature, "temperature", low=0.0, allow_none=True)
    if temperature is None:
        raise ValueError("temperature must be a finite real number, got None")
    softcap = check_finite_real(softcap, "softcap", low=0.0, allow_none=True)
    if check_linear_target(target, tuple(input.shape[:-1]), weight.shape[0]):
        raise ValueError("target must hold integer class indices (the tokens whose log-probability is returned)")
    max_memory, backend = check_max_memory_option(max_memory), check_backend(backend)
    out = LinearTokenStats.apply(input, weight, bias, target, ignore_index, softcap, max_memory, backend, temperature)
    return TokenStats(*out[:3])
