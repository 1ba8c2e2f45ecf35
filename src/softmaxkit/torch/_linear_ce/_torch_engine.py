"""The pure-PyTorch engine of the fused linear cross-entropy: chunked tiles and passes, on any device.

The math is in :mod:`softmaxkit.torch._linear_cross_entropy`; this engine computes it so.
The tokens are processed in chunks of ``rows`` and, when even a few rows of the full vocabulary do
not fit ``max_memory``, the vocabulary in blocks of ``cols`` with an online log-sum-exp (the chunk
sizes are :class:`~softmaxkit.torch._linear_ce._plan.Plan`'s); no tensor of ``N x V`` elements is
ever allocated. Every intermediate of the softmax is float32 (float64 for float64 input); the
matrix products run in the input's dtype with float32 accumulation.

* float32 and float64 input: one pass. Each chunk computes its logits, its loss terms and its
  logit gradient, then ``grad_input`` rows and a float32 ``addmm`` into ``grad_weight``: three
  ``N V d`` products, as the naive computation.
* bfloat16 and float16 input: the statistics and the input gradient come from one token pass (each
  row's gradient is one matrix product over the whole vocabulary), the weight and bias gradients
  from a second pass over vocabulary blocks (each block's gradient is one matrix product over all
  tokens, accumulated in float32 inside the product). No ``V x d`` float32 buffer is needed; the
  price is one more logits product: four ``N V d`` products instead of three. (Summing
  the weight gradient over token chunks instead would need float32 product outputs, which PyTorch
  offers on CUDA only, or a ``V x d`` float32 buffer fed by rounded partial products.)

When even ``_MIN_ROWS`` rows of the whole vocabulary do not fit ``max_memory``, a chunk's
statistics are gathered over vocabulary tiles first and its gradient tiles recompute the logits:
one more product in either case.

The engine's interface, shared with :mod:`~softmaxkit.torch._linear_ce._triton_engine`:
:func:`forward` (the statistics of the loss, and the gradients too when ``scales`` are given),
:func:`gradients` and :func:`logsumexp`.
"""

from __future__ import annotations

import math

import torch

from softmaxkit.torch._linear_ce._plan import LogitStats, Problem, RowScales

__all__ = ["forward", "gradients", "logsumexp"]


def forward(x2, weight, bias, p: Problem, scales: RowScales | None, needs: tuple[bool, bool, bool]):
    """``(stats, grads)``: the loss statistics and, with ``scales``, ``(dx, dw, db)`` (else None).

    One token pass computes the statistics and the input gradient together (and, for float32 /
    float64, the weight and bias gradients too); low-precision input gets its weight and bias
    gradients from the vocabulary-outer pass.
    """
    if scales is None:
        stats, _, _, _ = _token_pass(x2, weight, bias, p)
        return _logit_stats(stats), None
    low = x2.dtype != p.acc
    stats, dx, dw, db = _token_pass(
        x2, weight, bias, p, scales=scales, want_dx=needs[0], want_dw_db=(needs[1] or needs[2]) and not low
    )
    if low and (needs[1] or needs[2]):
        lse = _finish_lse(stats, slice(None))
        dw, db = _weight_pass(x2, weight, bias, p, lse, scales, want_db=needs[2] and bias is not None)
    return _logit_stats(stats), _finish_grads(dx, dw, db, weight, bias, needs)


def logsumexp(x2, weight, bias, p: Problem) -> torch.Tensor:
    """The per-token log-sum-exp of the logits."""
    stats, _, _, _ = _token_pass(x2, weight, bias, p)
    return _finish_lse(stats, slice(None))


def _logit_stats(stats: dict) -> LogitStats:
    return LogitStats(_finish_lse(stats, slice(None)), stats["zt"], stats["zs"])


# --------------------------------------------------------------------------------------------
# Tiles: logits, their statistics, their gradient. All in place in preallocated scratch.
# --------------------------------------------------------------------------------------------


class _Scratch:
    """Flat buffers reused by every tile, so the loop allocates nothing of size n x v."""

    def __init__(self, rows: int, cols: int, dtype: torch.dtype, p: Problem, device) -> None:
        size = rows * cols
        self.z = torch.empty(size, dtype=p.acc, device=device)
        self.low = torch.empty(size, dtype=dtype, device=device) if dtype != p.acc else None
        self.deriv = torch.empty(size, dtype=p.acc, device=device) if p.softcap is not None else None
        self.prob_coef = torch.empty(size, dtype=p.acc, device=device) if p.kind == "prob" else None

    @staticmethod
    def view(buffer: torch.Tensor, n: int, v: int) -> torch.Tensor:
        """An ``n x v`` tile stored vocabulary-major (its transpose is contiguous).

        The logits product is then ``weight_block @ x_chunk.T``, which BLAS runs markedly faster
        than ``x_chunk @ weight_block.T`` when the chunk has few rows (measured: 156 against 111
        GFLOP/s for 128 x 2048 x 65536 float32 on two cores), and every tile of a pass shares
        the one layout, so elementwise ops between tiles stay contiguous.
        """
        return buffer[: n * v].view(v, n).T


def _logits(x_c, weight, bias, j0, j1, p: Problem, s: _Scratch) -> torch.Tensor:
    """``softcap(x_c @ weight[j0:j1].T + bias[j0:j1])`` in the accumulation dtype, in ``s.z``."""
    n, v = x_c.shape[0], j1 - j0
    z = s.view(s.z, n, v)
    w_b = weight[j0:j1]
    if s.low is None:
        if bias is None:
            torch.mm(w_b, x_c.T, out=z.T)
        else:
            torch.addmm(bias[j0:j1].to(p.acc)[:, None], w_b, x_c.T, out=z.T)
    else:
        low = s.view(s.low, n, v)
        torch.mm(w_b, x_c.T, out=low.T)
        z.copy_(low)
        if bias is not None:
            z.add_(bias[j0:j1].to(p.acc))
    if p.softcap is not None:
        z.div_(p.softcap).tanh_()
        deriv = s.view(s.deriv, n, v)
        torch.mul(z, z, out=deriv)
        deriv.neg_().add_(1.0)
        z.mul_(p.softcap)
    return z


def _tile_stats(z, r0, j0, p: Problem, stats: dict, s: _Scratch) -> None:
    """Add this tile's contribution to the online log-sum-exp and the target terms.

    Consumes the tile: on return ``z`` holds ``exp(z - shift)`` with ``shift`` the running row max
    (0 where that is not finite), which a one-block pass turns into probabilities by ``/ s``.
    """
    n, v = z.shape
    rows = slice(r0, r0 + n)
    if p.kind == "index":
        t = p.target[rows]
        inside = (t >= j0) & (t < j0 + v)
        if bool(inside.any()):
            local = (t - j0).clamp(0, v - 1)
            picked = z.gather(1, local[:, None])[:, 0]
            stats["zt"][rows] += torch.where(inside, picked, torch.zeros_like(picked))
        if p.label_smoothing > 0.0:
            stats["zs"][rows] += z @ p.class_weight[j0 : j0 + v] if p.class_weight is not None else z.sum(1)
    elif p.kind == "prob":
        prob_coef = _prob_coef_tile(p, rows, j0, s.view(s.prob_coef, n, v))
        stats["zs"][rows] += (prob_coef.mul_(z)).sum(1)
    m_old = stats["m"][rows]
    m_new = torch.maximum(m_old, z.amax(1))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    old_shift = torch.where(torch.isfinite(m_old), m_old, torch.zeros_like(m_old))
    z.sub_(shift[:, None]).exp_()
    stats["s"][rows] = stats["s"][rows] * torch.exp(old_shift - shift) + z.sum(1)
    stats["m"][rows] = m_new


def _prob_coef_tile(p: Problem, rows: slice, j0: int, out: torch.Tensor) -> torch.Tensor:
    """``prob_coef`` of a tile, in ``out``: ``a_nc = w_c t'_nc``, the weighted, smoothed target distribution."""
    v = out.shape[1]
    prob_coef = out.copy_(p.target[rows, j0 : j0 + v])
    eps = p.label_smoothing
    if eps > 0.0:
        prob_coef.mul_(1.0 - eps).add_(eps / p.v)
    if p.class_weight is not None:
        prob_coef.mul_(p.class_weight[j0 : j0 + v])
    return prob_coef


def _tile_grad(z, r0, j0, lse_c, ce_scale_c, extra_c, p: Problem, s: _Scratch, inv_s=None) -> torch.Tensor:
    """Overwrite the logits tile ``z`` with d(loss)/d(pre-softcap logits), scaled per row.

    With ``inv_s``, ``z`` already holds ``exp(z - shift)`` from :func:`_tile_stats` and the
    probabilities are ``z * inv_s``; otherwise they are ``exp(z - lse)``.
    """
    n, v = z.shape
    rows = slice(r0, r0 + n)
    total_coef = extra_c if p.kind == "lse" else ce_scale_c * p.total_coef[rows] + extra_c
    if inv_s is None:
        z.sub_(lse_c[:, None]).exp_()  # now the softmax probabilities
    else:
        total_coef = total_coef * inv_s
    z.mul_(total_coef[:, None])
    if p.kind == "index":
        t = p.target[rows]
        hit = ((t >= j0) & (t < j0 + v) & p.valid[rows]).nonzero()[:, 0]
        if hit.numel():
            z[hit, t[hit] - j0] -= (ce_scale_c * p.target_coef[rows])[hit]
        if p.label_smoothing > 0.0:
            smooth_coef = ce_scale_c * p.smooth_coef[rows]
            if p.class_weight is not None:
                z.addr_(smooth_coef, p.class_weight[j0 : j0 + v], alpha=-1.0)
            else:
                z.sub_(smooth_coef[:, None])
    elif p.kind == "prob":
        prob_coef = _prob_coef_tile(p, rows, j0, s.view(s.prob_coef, n, v))
        prob_coef.mul_(ce_scale_c[:, None])
        z.sub_(prob_coef)
    if p.softcap is not None:
        z.mul_(s.view(s.deriv, n, v))
    return z


# --------------------------------------------------------------------------------------------
# The passes.
# --------------------------------------------------------------------------------------------


def _new_stats(p: Problem, device) -> dict:
    return {
        "m": torch.full((p.n,), -math.inf, dtype=p.acc, device=device),
        "s": torch.zeros(p.n, dtype=p.acc, device=device),
        "zt": torch.zeros(p.n, dtype=p.acc, device=device),
        "zs": torch.zeros(p.n, dtype=p.acc, device=device),
    }


def _finish_lse(stats: dict, rows: slice) -> torch.Tensor:
    m = stats["m"][rows]
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return shift + torch.log(stats["s"][rows])


def _token_pass(
    x2, weight, bias, p: Problem, *, lse=None, scales: RowScales | None = None, want_dx=False, want_dw_db=False
):
    """Token-outer pass. Returns ``(stats or None, dx, dw, db)``.

    Without ``lse`` the statistics (log-sum-exp, picked and smoothed logits) are computed; with
    ``scales`` the gradients requested are accumulated. ``want_dw_db`` is used only where the weight
    gradient is accumulated in the input's own dtype (float32, float64).
    """
    device, dtype = x2.device, x2.dtype
    n, d = x2.shape
    plan = p.plan
    if not (want_dx or want_dw_db):
        scales = None  # no gradient wanted from this pass: no gradient tiles either
    stats = _new_stats(p, device) if lse is None else None
    dx = torch.empty_like(x2) if want_dx else None
    dw = torch.zeros(weight.shape, dtype=p.acc, device=device) if want_dw_db else None
    db = torch.zeros(p.v, dtype=p.acc, device=device) if (want_dw_db and bias is not None) else None
    if n == 0 or (stats is None and scales is None):
        return stats, dx, dw, db
    s = _Scratch(plan.rows, plan.cols, dtype, p, device)
    one_block = plan.cols >= p.v
    for r0 in range(0, n, plan.rows):
        r1 = min(n, r0 + plan.rows)
        rows = slice(r0, r1)
        x_c = x2[rows]
        if one_block:
            z = _logits(x_c, weight, bias, 0, p.v, p, s)
            inv_s = None
            if stats is not None:
                _tile_stats(z, r0, 0, p, stats, s)
                lse_c = _finish_lse(stats, rows)
                inv_s = 1.0 / stats["s"][rows]
            else:
                lse_c = lse[rows]
            if scales is not None:
                g = _tile_grad(z, r0, 0, lse_c, *scales.at(rows, lse_c), p, s, inv_s=inv_s)
                _apply_tile_grad(g, x_c, weight, 0, p, s, dx, rows, dw, db, accumulate=False)
            continue
        if stats is not None:
            for j0 in range(0, p.v, plan.cols):
                j1 = min(p.v, j0 + plan.cols)
                _tile_stats(_logits(x_c, weight, bias, j0, j1, p, s), r0, j0, p, stats, s)
            lse_c = _finish_lse(stats, rows)
        else:
            lse_c = lse[rows]
        if scales is None:
            continue
        ce_c, extra_c = scales.at(rows, lse_c)
        dx_acc = torch.zeros((r1 - r0, d), dtype=p.acc, device=device) if want_dx else None
        for j0 in range(0, p.v, plan.cols):
            j1 = min(p.v, j0 + plan.cols)
            g = _tile_grad(_logits(x_c, weight, bias, j0, j1, p, s), r0, j0, lse_c, ce_c, extra_c, p, s)
            _apply_tile_grad(g, x_c, weight, j0, p, s, dx_acc, slice(0, r1 - r0), dw, db, accumulate=True)
        if want_dx:
            dx[rows] = dx_acc
    return stats, dx, dw, db


def _apply_tile_grad(g, x_c, weight, j0, p, s, dx, rows, dw, db, *, accumulate):
    """Push a logit-gradient tile into ``dx`` (rows), ``dw`` and ``db`` (vocabulary block)."""
    n, v = g.shape
    w_b = weight[j0 : j0 + v]
    if s.low is not None:
        g_low = s.view(s.low, n, v)
        g_low.copy_(g)
        a = g_low
    else:
        a = g
    if dx is not None:
        if accumulate:
            # Vocabulary-tiled rows: float32 partial products, so nothing is rounded mid-sum.
            dx[rows].addmm_(g, w_b if s.low is None else w_b.to(p.acc))
        else:
            torch.mm(a, w_b, out=dx[rows])
    if dw is not None:
        dw[j0 : j0 + v].addmm_(g.T, x_c)
    if db is not None:
        db[j0 : j0 + v] += g.sum(0)


def _weight_pass(x2, weight, bias, p: Problem, lse, scales: RowScales, *, want_db: bool):
    """Vocabulary-outer pass for low-precision input: ``(dw in input dtype, db in float32)``."""
    device, dtype = x2.device, x2.dtype
    n, d = x2.shape
    plan = p.plan
    dw = torch.empty_like(weight)
    db = torch.zeros(p.v, dtype=p.acc, device=device) if want_db else None
    if n == 0:
        dw.zero_()
        return dw, db
    s = _Scratch(plan.w_rows, plan.w_cols, dtype, p, device)
    one_chunk = plan.w_rows >= n
    acc = None if one_chunk else torch.empty((plan.w_cols, d), dtype=p.acc, device=device)
    for j0 in range(0, p.v, plan.w_cols):
        j1 = min(p.v, j0 + plan.w_cols)
        v = j1 - j0
        if not one_chunk:
            acc[:v].zero_()
        for r0 in range(0, n, plan.w_rows):
            r1 = min(n, r0 + plan.w_rows)
            rows = slice(r0, r1)
            x_c = x2[rows]
            lse_c = lse[rows]
            g = _tile_grad(_logits(x_c, weight, bias, j0, j1, p, s), r0, j0, lse_c, *scales.at(rows, lse_c), p, s)
            if one_chunk:
                g_low = s.view(s.low, r1 - r0, v)
                g_low.copy_(g)
                torch.mm(g_low.T, x_c, out=dw[j0:j1])
            else:
                # Token-chunked blocks (tight max_memory): float32 partial products.
                acc[:v].addmm_(g.T, x_c.to(p.acc))
            if db is not None:
                db[j0:j1] += g.sum(0)
        if not one_chunk:
            dw[j0:j1] = acc[:v]
    return dw, db


def gradients(x2, weight, bias, p: Problem, lse, scales: RowScales, needs: tuple[bool, bool, bool]):
    """``(dx, dw, db)`` for the per-token ``scales``, in the dtypes autograd expects (None where not needed)."""
    want_dx, want_dw, want_db = needs
    want_db = want_db and bias is not None
    low = x2.dtype != p.acc
    _, dx, dw, db = _token_pass(
        x2, weight, bias, p, lse=lse, scales=scales, want_dx=want_dx, want_dw_db=(want_dw or want_db) and not low
    )
    if low and (want_dw or want_db):
        dw, db = _weight_pass(x2, weight, bias, p, lse, scales, want_db=want_db)
    return _finish_grads(dx, dw, db, weight, bias, needs)


def _finish_grads(dx, dw, db, weight, bias, needs):
    want_dx, want_dw, want_db = needs
    dw = dw.to(weight.dtype) if (want_dw and dw is not None) else None
    db = db.to(bias.dtype) if (want_db and db is not None and bias is not None) else None
    return (dx if want_dx else None), dw, db
