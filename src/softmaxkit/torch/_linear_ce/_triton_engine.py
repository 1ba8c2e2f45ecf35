"""The Triton engine of :func:`softmaxkit.torch.linear_cross_entropy` (the CUDA path).

Imported lazily by :func:`softmaxkit.torch._linear_ce._autograd.select_engine` only when this
engine is chosen, so nothing here is needed on the CPU. The math is the module docstring of
:mod:`softmaxkit.torch._linear_cross_entropy`; this file only tiles it. Its interface is the
PyTorch engine's (:mod:`~softmaxkit.torch._linear_ce._torch_engine`): :func:`forward`,
:func:`gradients`, :func:`logsumexp`; :func:`check_supported` says what it covers, once, when
it is chosen.

Two kernels, each computing its logits tile ``softcap(x_tile @ w_tile.T + b_tile)`` on the fly
from ``input`` and ``weight`` with float32 accumulation (IEEE float32 products for float32 input,
never TF32), so that no logits tensor exists in memory:

* :func:`_stats_kernel` -- one program per block of tokens, sweeping the vocabulary with an online
  log-sum-exp; writes the per-token ``lse``, the picked target logit and the (class-weighted) logit
  sum used by label smoothing. This is the whole forward pass: O(N) output.
* :func:`_grad_kernel` -- one program per (token block, vocabulary block) of a chunk of tokens;
  writes the logit gradient of that chunk (float32) into a buffer of ``rows x V`` elements bounded by
  ``max_memory``. The products ``grad_input = G @ W``, ``grad_weight += G.T @ X`` and the bias sum run
  on that chunk in PyTorch (cuBLAS), accumulated in float32 in a fixed order: deterministic. For
  bfloat16 / float16 input the weight gradient is accumulated in a ``V x d`` float32 buffer (cuBLAS
  products with a float32 result where PyTorch offers them), converted to the input dtype at the end.

Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (the tests do this on small sizes).
"""

from __future__ import annotations

import torch

from softmaxkit.torch._linear_ce._plan import LogitStats, Problem, RowScales, RowStats, scaled_coefs

try:
    import triton
    import triton.language as tl
except ImportError:  # the module still imports (docs, doctest collection); using it then raises
    triton = tl = None

__all__ = ["check_supported", "forward", "gradients", "logsumexp"]

_SUPPORTED = (torch.float32, torch.bfloat16, torch.float16)


def check_supported(x: torch.Tensor, kind: str) -> None:
    """Raise ``ValueError`` for what the kernels do not cover (the PyTorch engine does)."""
    if x.dtype not in _SUPPORTED:
        raise ValueError(
            f"backend='triton' needs float32, bfloat16 or float16 input, got {x.dtype}; use backend='torch'"
        )
    if kind == "prob":
        raise ValueError("backend='triton' needs class-index targets, got probability targets; use backend='torch'")


def _blocks(x: torch.Tensor) -> tuple[int, int, int, int]:
    """``(BLOCK_N, BLOCK_V, BLOCK_D, num_warps)``: small tiles for the CPU interpreter."""
    if x.is_cuda:
        return 64, 128, 32, 8
    return 16, 32, 16, 4


if triton is not None:  # the kernels exist only where Triton is installed; nothing else needs them

    @triton.jit
    def _tanh(u):
        e = tl.exp(-2.0 * tl.abs(u))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(u >= 0, t, -t)

    @triton.jit
    def _logits_tile(
        x_ptr,
        w_ptr,
        b_ptr,
        rows,
        cols,
        n,
        v,
        d,
        stride_x,
        stride_w,
        softcap,
        HAS_BIAS: tl.constexpr,
        SOFTCAP: tl.constexpr,
        PRECISION: tl.constexpr,
        UPCAST: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
        for k0 in range(0, d, BLOCK_D):
            ks = k0 + tl.arange(0, BLOCK_D)
            xt = tl.load(
                x_ptr + rows[:, None] * stride_x + ks[None, :], mask=(rows[:, None] < n) & (ks[None, :] < d), other=0.0
            )
            wt = tl.load(
                w_ptr + cols[:, None] * stride_w + ks[None, :], mask=(cols[:, None] < v) & (ks[None, :] < d), other=0.0
            )
            if UPCAST:  # the CPU interpreter's bfloat16 dot is not faithful; products are exact in float32
                xt, wt = xt.to(tl.float32), wt.to(tl.float32)
            acc = tl.dot(xt, tl.trans(wt), acc, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + cols, mask=cols < v, other=0.0).to(tl.float32)[None, :]
        if SOFTCAP:
            acc = softcap * _tanh(acc / softcap)
        return acc

    @triton.jit
    def _stats_kernel(
        x_ptr,
        w_ptr,
        b_ptr,
        t_ptr,
        cw_ptr,
        m_ptr,
        arg_ptr,
        rest_ptr,
        zt_ptr,
        zs_ptr,
        n,
        v,
        d,
        stride_x,
        stride_w,
        softcap,
        HAS_BIAS: tl.constexpr,
        SOFTCAP: tl.constexpr,
        HAS_TARGET: tl.constexpr,
        SMOOTH: tl.constexpr,
        HAS_CW: tl.constexpr,
        PRECISION: tl.constexpr,
        UPCAST: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        """Per token: ``m``, its column ``arg``, ``S' = sum_{c != arg} exp(z_c - m)`` and, with label
        smoothing, ``D = sum_c w_c (m - z_c)`` (see :class:`~softmaxkit.torch._linear_ce._plan.RowStats`)."""
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        m = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
        arg = tl.zeros((BLOCK_N,), dtype=tl.int32)
        rest = tl.zeros((BLOCK_N,), dtype=tl.float32)
        zt = tl.zeros((BLOCK_N,), dtype=tl.float32)
        zs = tl.zeros((BLOCK_N,), dtype=tl.float32)
        seen = tl.zeros((BLOCK_N,), dtype=tl.float32)  # the class weight of the columns swept so far
        t = tl.load(t_ptr + rows, mask=rows < n, other=-1) if HAS_TARGET else rows
        for v0 in range(0, v, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            inside = (cols < v)[None, :]
            z = _logits_tile(
                x_ptr,
                w_ptr,
                b_ptr,
                rows,
                cols,
                n,
                v,
                d,
                stride_x,
                stride_w,
                softcap,
                HAS_BIAS,
                SOFTCAP,
                PRECISION,
                UPCAST,
                BLOCK_N,
                BLOCK_V,
                BLOCK_D,
            )
            if HAS_TARGET:
                zt += tl.sum(tl.where(cols[None, :] == t[:, None], z, 0.0), 1)
            z = tl.where(inside, z, float("-inf"))
            tile_max = tl.max(z, 1)
            tile_arg = tl.argmax(z, 1, tie_break_left=True) + v0
            new_top = tile_max > m
            m_new = tl.maximum(m, tile_max)
            shifted = z - m_new[:, None]
            if SMOOTH:
                if HAS_CW:
                    cw = tl.load(cw_ptr + cols, mask=cols < v, other=0.0)
                else:
                    cw = tl.where(cols < v, 1.0, 0.0)
                # The rescale of the columns seen so far; nothing seen (m = -inf) rescales nothing.
                gap = seen * (m_new - tl.where(seen > 0, m, m_new))
                zs += gap - tl.sum(tl.where(inside, shifted, 0.0) * cw[None, :], 1)
                seen += tl.sum(cw, 0)
            e = tl.exp(shifted)
            # The new top's own exp(0) = 1 is never added: S' stays exact however confident the token.
            e = tl.where(new_top[:, None] & (cols[None, :] == tile_arg[:, None]), 0.0, e)
            scale_old = tl.exp(m - m_new)
            rest = rest * scale_old + tl.where(new_top, scale_old, 0.0) + tl.sum(e, 1)
            arg = tl.where(new_top, tile_arg, arg)
            m = m_new
        keep = rows < n
        tl.store(m_ptr + rows, m, mask=keep)
        tl.store(arg_ptr + rows, arg, mask=keep)
        tl.store(rest_ptr + rows, rest, mask=keep)
        tl.store(zt_ptr + rows, zt, mask=keep)
        tl.store(zs_ptr + rows, zs, mask=keep)

    @triton.jit
    def _grad_kernel(
        x_ptr,
        w_ptr,
        b_ptr,
        t_ptr,
        cw_ptr,
        m_ptr,
        inv_norm_ptr,
        arg_ptr,
        total_coef_ptr,
        target_coef_ptr,
        smooth_coef_ptr,
        top_ptr,
        g_ptr,
        n,
        v,
        d,
        stride_x,
        stride_w,
        softcap,
        HAS_BIAS: tl.constexpr,
        SOFTCAP: tl.constexpr,
        HAS_TARGET: tl.constexpr,
        HAS_CW: tl.constexpr,
        SMOOTH: tl.constexpr,
        PRECISION: tl.constexpr,
        UPCAST: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        """``g_nc = p_nc total_coef_n - [c == y_n] target_coef_n - smooth_coef_n w_c``, times the softcap derivative.

        ``p = exp(z - m) / (1 + S')``; at the top column ``arg_n`` the entry is ``top_n`` (no
        cancellation, see :class:`~softmaxkit.torch._linear_ce._plan.TileCoefs`). The coefficients
        come scaled per token by :func:`gradients`.
        """
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
        keep = rows < n
        inside = cols < v
        z = _logits_tile(
            x_ptr,
            w_ptr,
            b_ptr,
            rows,
            cols,
            n,
            v,
            d,
            stride_x,
            stride_w,
            softcap,
            HAS_BIAS,
            SOFTCAP,
            PRECISION,
            UPCAST,
            BLOCK_N,
            BLOCK_V,
            BLOCK_D,
        )
        m = tl.load(m_ptr + rows, mask=keep, other=0.0)
        inv_norm = tl.load(inv_norm_ptr + rows, mask=keep, other=0.0)
        total_coef = tl.load(total_coef_ptr + rows, mask=keep, other=0.0)
        g = tl.exp(z - m[:, None]) * (inv_norm * total_coef)[:, None]
        if HAS_TARGET:
            t = tl.load(t_ptr + rows, mask=keep, other=-1)
            target_coef = tl.load(target_coef_ptr + rows, mask=keep, other=0.0)
            g -= tl.where(cols[None, :] == t[:, None], target_coef[:, None], 0.0)
            if SMOOTH:
                smooth_coef = tl.load(smooth_coef_ptr + rows, mask=keep, other=0.0)
                if HAS_CW:
                    cw = tl.load(cw_ptr + cols, mask=inside, other=0.0)
                    g -= smooth_coef[:, None] * cw[None, :]
                else:
                    g -= smooth_coef[:, None]
        top = tl.load(top_ptr + rows, mask=keep, other=0.0)
        arg = tl.load(arg_ptr + rows, mask=keep, other=-1)
        g = tl.where(cols[None, :] == arg[:, None], top[:, None], g)
        if SOFTCAP:
            u = z / softcap
            g *= 1.0 - u * u
        tl.store(g_ptr + rows[:, None] * v + cols[None, :], g, mask=keep[:, None] & inside[None, :])


def _precision(x: torch.Tensor) -> str:
    return "ieee" if x.dtype == torch.float32 else "tf32"


def forward(x2, weight, bias, p: Problem, scales: RowScales | None, needs: tuple[bool, bool, bool]):
    """``(stats, grads)``: the loss statistics and, with ``scales``, ``(dx, dw, db)`` (else None)."""
    out = _stats_pass(x2, weight, bias, p)
    stats = LogitStats(RowStats(out["m"], out["arg"], out["rest"]), out["zt"], out["zs"])
    return stats, None if scales is None else gradients(x2, weight, bias, p, stats.row, scales, needs)


def logsumexp(x2, weight, bias, p: Problem) -> RowStats:
    """The per-token softmax statistics of the logits (``.lse`` is the log-sum-exp)."""
    out = _stats_pass(x2, weight, bias, p)
    return RowStats(out["m"], out["arg"], out["rest"])


def _stats_pass(x2: torch.Tensor, weight: torch.Tensor, bias, p: Problem) -> dict:
    """``{"m", "arg", "rest", "zt", "zs"}`` per token (float32; ``arg`` int64), from one sweep of the vocabulary."""
    x2, weight = x2.contiguous(), weight.contiguous()
    n, d = x2.shape
    out = {key: torch.empty(n, dtype=torch.float32, device=x2.device) for key in ("m", "rest", "zt", "zs")}
    arg = torch.empty(n, dtype=torch.int32, device=x2.device)
    if n == 0:
        out["arg"] = arg.long()
        return out
    bn, bv, bd, warps = _blocks(x2)
    has_target = p.kind == "index"
    dummy = out["m"]
    _stats_kernel[(triton.cdiv(n, bn),)](
        x2,
        weight,
        bias if bias is not None else dummy,
        p.target if has_target else dummy,
        p.class_weight if p.class_weight is not None else dummy,
        out["m"],
        arg,
        out["rest"],
        out["zt"],
        out["zs"],
        n,
        p.v,
        d,
        x2.stride(0),
        weight.stride(0),
        float(p.softcap or 1.0),
        HAS_BIAS=bias is not None,
        SOFTCAP=p.softcap is not None,
        HAS_TARGET=has_target,
        SMOOTH=has_target and p.label_smoothing > 0.0,
        HAS_CW=p.class_weight is not None,
        PRECISION=_precision(x2),
        UPCAST=not x2.is_cuda,
        BLOCK_N=bn,
        BLOCK_V=bv,
        BLOCK_D=bd,
        num_warps=warps,
    )
    out["arg"] = arg.long()
    return out


def _mm_float32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of low-precision operands with a float32 result (accumulated in float32)."""
    if a.is_cuda:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            pass
    return torch.mm(a.float(), b.float())


def gradients(x2, weight, bias, p: Problem, row: RowStats, scales: RowScales, needs: tuple[bool, bool, bool]):
    """``(dx, dw, db)`` for the per-token ``scales``, in the dtypes autograd expects (None where not needed)."""
    x2, weight = x2.contiguous(), weight.contiguous()
    want_dx, want_dw, want_db = needs
    want_db = want_db and bias is not None
    n, d = x2.shape
    device, dtype, v = x2.device, x2.dtype, p.v
    coefs = scaled_coefs(p, slice(None), row, scales)
    zeros = torch.zeros(n, dtype=p.acc, device=device)
    per_token = [coefs.total, coefs.target, coefs.smooth, coefs.top, row.m, 1 / (1 + row.rest)]
    per_token = [(zeros if t is None else t).to(torch.float32).contiguous() for t in per_token]
    total_coef, target_coef, smooth_coef, top, row_max, inv_norm = per_token
    arg = row.arg.contiguous()
    low = dtype != torch.float32
    dx = torch.empty_like(x2) if want_dx else None
    dw = torch.zeros((v, d), dtype=torch.float32, device=device) if want_dw else None
    db = torch.zeros(v, dtype=torch.float32, device=device) if want_db else None
    if n:
        bn, bv, bd, warps = _blocks(x2)
        per_row = v * (4 + (dtype.itemsize if low else 0))
        rows = max(1, min(n, p.max_memory // per_row))
        buffer = torch.empty(rows * v, dtype=torch.float32, device=device)
        has_target = p.kind == "index"
        dummy = row_max
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            m = r1 - r0
            g = buffer[: m * v].view(m, v)
            _grad_kernel[(triton.cdiv(m, bn), triton.cdiv(v, bv))](
                x2[r0:r1],
                weight,
                bias if bias is not None else dummy,
                p.target[r0:r1] if has_target else dummy,
                p.class_weight if p.class_weight is not None else dummy,
                row_max[r0:r1],
                inv_norm[r0:r1],
                arg[r0:r1],
                total_coef[r0:r1],
                target_coef[r0:r1],
                smooth_coef[r0:r1],
                top[r0:r1],
                g,
                m,
                v,
                d,
                x2.stride(0),
                weight.stride(0),
                float(p.softcap or 1.0),
                HAS_BIAS=bias is not None,
                SOFTCAP=p.softcap is not None,
                HAS_TARGET=has_target,
                HAS_CW=p.class_weight is not None,
                SMOOTH=p.kind == "index" and p.label_smoothing > 0.0,
                PRECISION=_precision(x2),
                UPCAST=not x2.is_cuda,
                BLOCK_N=bn,
                BLOCK_V=bv,
                BLOCK_D=bd,
                num_warps=warps,
            )
            x_c = x2[r0:r1]
            operand = g.to(dtype) if low else g
            if want_dx:
                torch.mm(operand, weight, out=dx[r0:r1])
            if want_dw:
                if low:
                    dw += _mm_float32(operand.T, x_c)
                else:
                    dw.addmm_(g.T, x_c)
            if want_db:
                db += g.sum(0)
    dw = dw.to(weight.dtype) if want_dw else None
    db = db.to(bias.dtype) if want_db else None
    return dx, dw, db
