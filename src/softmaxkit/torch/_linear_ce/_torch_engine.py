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

from softmaxkit.torch._linear_ce._plan import (
    CONFIDENT,
    LogitStats,
    Problem,
    RowScales,
    RowStats,
    TileCoefs,
    scaled_coefs,
)

__all__ = ["forward", "gradients", "logsumexp"]


def forward(x2, weight, bias, p: Problem, scales: RowScales | None, needs: tuple[bool, bool, bool]):
    """``(stats, grads)``: the loss statistics and, with ``scales``, ``(dx, dw, db)`` (else None).

    One token pass computes the statistics and the input gradient together (and, for float32 /
    float64, the weight and bias gradients too); low-precision input gets its weight and bias
    gradients from the vocabulary-outer pass.
    """
    if scales is None:
        stats, _, _, _ = _token_pass(x2, weight, bias, p)
        return _logit_stats(stats, p), None
    low = x2.dtype != p.acc
    stats, dx, dw, db = _token_pass(
        x2, weight, bias, p, scales=scales, want_dx=needs[0], want_dw_db=(needs[1] or needs[2]) and not low
    )
    logit_stats = _logit_stats(stats, p)
    if low and (needs[1] or needs[2]):
        dw, db = _weight_pass(x2, weight, bias, p, logit_stats.row, scales, want_db=needs[2] and bias is not None)
    return logit_stats, _finish_grads(dx, dw, db, weight, bias, needs)


def logsumexp(x2, weight, bias, p: Problem) -> RowStats:
    """The per-token softmax statistics of the logits (``.lse`` is the log-sum-exp)."""
    stats, _, _, _ = _token_pass(x2, weight, bias, p)
    return _row_stats(stats, slice(None), p)


def _logit_stats(stats: dict, p: Problem) -> LogitStats:
    return LogitStats(_row_stats(stats, slice(None), p), stats["zt"], stats["zs"], stats.get("ent"))


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
        self.ent = torch.empty(size, dtype=p.acc, device=device) if p.entropy else None

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
    if p.temperature != 1.0:
        z.div_(p.temperature)
    return z


def _tile_stats(z, r0, j0, p: Problem, stats: dict, s: _Scratch) -> None:
    """Add this tile's contribution to the online statistics (:class:`RowStats`, the target terms).

    Per token: the running maximum ``m``, ``S'`` (the exponentials of the other columns, rescaled
    when the maximum moves) and ``D = sum_c a_c (m - z_c)`` (rescaled by ``(m_new - m_old)`` times
    the coefficients seen so far: every term is non-negative). ``S'`` is the tile's sum minus the
    new top's ``exp(0) = 1`` where that cannot cancel (``S' >= CONFIDENT``, ``p_top <= 0.8``); for
    a confident token the top column is found (``argmax`` on those rows only: along the tile's
    strided axis PyTorch's argmax costs as much as the logits product) and left out of the sum
    exactly, and kept in ``arg`` for the gradient (``-1``: not needed). Consumes the tile: on return
    ``z`` holds ``exp(z - m)`` with ``m`` the running maximum, which a one-block pass turns into
    probabilities by ``/ (1 + S')``.
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
    tile_max = z.amax(1)
    m_old = stats["m"][rows]
    new_top = tile_max > m_old
    m_new = torch.maximum(m_old, tile_max)  # NaN (from non-finite input) stays NaN
    z.sub_(m_new[:, None])  # z - m <= 0, one rounding each, whatever the magnitude of z
    if p.kind == "prob":
        prob_coef = _prob_coef_tile(p, rows, j0, s.view(s.prob_coef, n, v))
        seen = stats["seen"][rows]  # a view: updated in place after its use
        tile_coef = prob_coef.sum(1)
        stats["zs"][rows] += _times_gap(seen, m_new - m_old) - (prob_coef.mul_(z)).sum(1)
        seen += tile_coef
    elif p.kind == "index" and p.label_smoothing > 0.0:
        if p.class_weight is not None:
            seen = float(p.class_weight[:j0].double().sum())
            weighted = z @ p.class_weight[j0 : j0 + v]
        else:
            seen, weighted = float(j0), z.sum(1)
        stats["zs"][rows] += (seen * (m_new - m_old) if seen else 0.0) - weighted
    if p.entropy:
        ent = s.view(s.ent, n, v)
        torch.neg(z, out=ent)  # m - z >= 0
    z.exp_()
    if p.entropy:
        # E = sum_c exp(z_c - m)(m - z_c), carried to the new maximum: exp(m_old - m_new) (E_old + gap T_old)
        # with T_old = 1 + S'_old the exponentials seen so far relative to m_old; nothing on the first tile.
        gap = m_new - m_old
        carried = torch.exp(-gap) * (stats["ent"][rows] + gap * (stats["rest"][rows] + 1.0))
        stats["ent"][rows] = torch.where(m_old == -math.inf, 0.0, carried) + ent.mul_(z).sum(1)
    total = z.sum(1)
    rest = torch.where(new_top, total - 1.0, total)
    arg = stats["arg"][rows]
    arg.masked_fill_(new_top, -1)
    confident = (new_top & (rest < CONFIDENT)).nonzero()[:, 0]
    if confident.numel():
        sub = z[confident]  # a (k, v) copy, rows contiguous
        local = sub.argmax(1)
        sub[torch.arange(len(confident), device=z.device), local] = 0.0
        rest[confident] = sub.sum(1)
        arg[confident] = local + j0
    scale_old = torch.exp(m_old - m_new)  # 0 for the first tile (m_old = -inf)
    stats["rest"][rows] = stats["rest"][rows] * scale_old + torch.where(new_top, scale_old, 0.0) + rest
    stats["m"][rows] = m_new


def _times_gap(coef: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """``coef * (m_new - m_old)``, 0 where nothing was seen yet (the gap is then infinite)."""
    return torch.where(coef == 0, 0.0, coef * gap)


def _prob_coef_tile(p: Problem, rows: slice, j0: int, out: torch.Tensor) -> torch.Tensor:
    """``prob_coef`` of a tile, in ``out``: ``a_nc = w_c t'_nc``, the weighted, smoothed target distribution."""
    v = out.shape[1]
    prob_coef = out.copy_(p.target[rows, j0 : j0 + v])
    eps = p.label_smoothing
    if eps > 0.0:
        prob_coef.mul_(1.0 - eps).add_(eps / p.vocab)
    if p.class_weight is not None:
        prob_coef.mul_(p.class_weight[j0 : j0 + v])
    return prob_coef


def _tile_grad(z, r0, j0, row: RowStats, coefs: TileCoefs, p: Problem, s: _Scratch, *, exponentiated=False):
    """Overwrite the logits tile ``z`` with d(loss)/d(pre-softcap logits), scaled per row.

    ``row`` and ``coefs`` are those of the tile's tokens. With ``exponentiated``, ``z`` already
    holds ``exp(z - m)`` from :func:`_tile_stats`. The probabilities are ``exp(z - m) / (1 + S')``
    (never ``exp(z - lse)``: their accuracy does not depend on the magnitude of ``z``), and the
    entry at the top column is :class:`~softmaxkit.torch._linear_ce._plan.TileCoefs`' ``top``.
    """
    n, v = z.shape
    rows = slice(r0, r0 + n)
    if not exponentiated:
        z.sub_(row.m[:, None]).exp_()
    z.mul_((coefs.total / (1 + row.rest))[:, None])  # now p * total
    if p.kind == "index":
        t = p.target[rows]
        hit = ((t >= j0) & (t < j0 + v) & p.valid[rows]).nonzero()[:, 0]
        if hit.numel():
            z[hit, t[hit] - j0] -= coefs.target[hit]
        if p.label_smoothing > 0.0:
            if p.class_weight is not None:
                z.addr_(coefs.smooth, p.class_weight[j0 : j0 + v], alpha=-1.0)
            else:
                z.sub_(coefs.smooth[:, None])
    elif p.kind == "prob":
        prob_coef = _prob_coef_tile(p, rows, j0, s.view(s.prob_coef, n, v))
        prob_coef.mul_(coefs.ce[:, None])
        z.sub_(prob_coef)
    top = ((row.arg >= j0) & (row.arg < j0 + v)).nonzero()[:, 0]  # arg = -1 (not confident): no fix needed
    if top.numel():
        z[top, row.arg[top] - j0] = coefs.top[top]
    if p.softcap is not None:
        z.mul_(s.view(s.deriv, n, v))
    if p.temperature != 1.0:
        z.div_(p.temperature)
    return z


# --------------------------------------------------------------------------------------------
# The passes.
# --------------------------------------------------------------------------------------------


def _new_stats(p: Problem, device) -> dict:
    stats = {
        "m": torch.full((p.n,), -math.inf, dtype=p.acc, device=device),
        "arg": torch.zeros(p.n, dtype=torch.int64, device=device),
        "rest": torch.zeros(p.n, dtype=p.acc, device=device),
        "zt": torch.zeros(p.n, dtype=p.acc, device=device),
        "zs": torch.zeros(p.n, dtype=p.acc, device=device),
    }
    if p.kind == "prob":  # the target coefficients of the columns swept so far
        stats["seen"] = torch.zeros(p.n, dtype=p.acc, device=device)
    if p.entropy:
        stats["ent"] = torch.zeros(p.n, dtype=p.acc, device=device)
    return stats


def _row_stats(stats: dict, rows: slice, p: Problem) -> RowStats:
    return RowStats(stats["m"][rows], stats["arg"][rows], stats["rest"][rows])


def _token_pass(
    x2, weight, bias, p: Problem, *, row=None, scales: RowScales | None = None, want_dx=False, want_dw_db=False
):
    """Token-outer pass. Returns ``(stats or None, dx, dw, db)``.

    Without ``row`` (the :class:`RowStats` of a forward) the statistics are computed; with
    ``scales`` the gradients requested are accumulated. ``want_dw_db`` is used only where the weight
    gradient is accumulated in the input's own dtype (float32, float64).
    """
    device = x2.device
    n, d = x2.shape
    plan = p.plan
    if not (want_dx or want_dw_db):
        scales = None  # no gradient wanted from this pass: no gradient tiles either
    stats = _new_stats(p, device) if row is None else None
    dx = torch.empty_like(x2) if want_dx else None
    dw = torch.zeros(weight.shape, dtype=p.acc, device=device) if want_dw_db else None
    db = torch.zeros(p.v, dtype=p.acc, device=device) if (want_dw_db and bias is not None) else None
    if n == 0 or (stats is None and scales is None):
        return stats, dx, dw, db
    s = _Scratch(plan.rows, plan.cols, x2.dtype, p, device)
    one_block = plan.cols >= p.v
    for r0 in range(0, n, plan.rows):
        r1 = min(n, r0 + plan.rows)
        rows = slice(r0, r1)
        x_c = x2[rows]
        if one_block:
            z = _logits(x_c, weight, bias, 0, p.v, p, s)
            if stats is not None:
                _tile_stats(z, r0, 0, p, stats, s)
                row_c = _row_stats(stats, rows, p)
            else:
                row_c = row.rows(rows)
            if scales is not None:
                g = _tile_grad(
                    z, r0, 0, row_c, scaled_coefs(p, rows, row_c, scales), p, s, exponentiated=stats is not None
                )
                _apply_tile_grad(g, x_c, weight, 0, p, s, dx, rows, dw, db, accumulate=False)
            continue
        if stats is not None:
            for j0 in range(0, p.v, plan.cols):
                j1 = min(p.v, j0 + plan.cols)
                _tile_stats(_logits(x_c, weight, bias, j0, j1, p, s), r0, j0, p, stats, s)
            row_c = _row_stats(stats, rows, p)
        else:
            row_c = row.rows(rows)
        if scales is None:
            continue
        coefs = scaled_coefs(p, rows, row_c, scales)
        dx_acc = torch.zeros((r1 - r0, d), dtype=p.acc, device=device) if want_dx else None
        for j0 in range(0, p.v, plan.cols):
            j1 = min(p.v, j0 + plan.cols)
            g = _tile_grad(_logits(x_c, weight, bias, j0, j1, p, s), r0, j0, row_c, coefs, p, s)
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


def _weight_pass(x2, weight, bias, p: Problem, row: RowStats, scales: RowScales, *, want_db: bool):
    """Vocabulary-outer pass for low-precision input: ``(dw in input dtype, db in float32)``."""
    device = x2.device
    n, d = x2.shape
    plan = p.plan
    dw = torch.empty_like(weight)
    db = torch.zeros(p.v, dtype=p.acc, device=device) if want_db else None
    if n == 0:
        dw.zero_()
        return dw, db
    s = _Scratch(plan.w_rows, plan.w_cols, x2.dtype, p, device)
    everything = slice(None)
    coefs = scaled_coefs(p, everything, row, scales)
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
            coefs_c = TileCoefs(*(None if c is None else c[rows] for c in coefs))
            g = _tile_grad(_logits(x_c, weight, bias, j0, j1, p, s), r0, j0, row.rows(rows), coefs_c, p, s)
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


def gradients(x2, weight, bias, p: Problem, row: RowStats, scales: RowScales, needs: tuple[bool, bool, bool]):
    """``(dx, dw, db)`` for the per-token ``scales``, in the dtypes autograd expects (None where not needed)."""
    want_dx, want_dw, want_db = needs
    want_db = want_db and bias is not None
    low = x2.dtype != p.acc
    _, dx, dw, db = _token_pass(
        x2, weight, bias, p, row=row, scales=scales, want_dx=want_dx, want_dw_db=(want_dw or want_db) and not low
    )
    if low and (want_dw or want_db):
        dw, db = _weight_pass(x2, weight, bias, p, row, scales, want_db=want_db)
    return _finish_grads(dx, dw, db, weight, bias, needs)


def _finish_grads(dx, dw, db, weight, bias, needs):
    want_dx, want_dw, want_db = needs
    dw = dw.to(weight.dtype) if (want_dw and dw is not None) else None
    db = db.to(bias.dtype) if (want_db and db is not None and bias is not None) else None
    return (dx if want_dx else None), dw, db
