"""The Triton kernels of linear_cross_entropy, run on the CPU under Triton's interpreter.

``TRITON_INTERPRET=1`` must be in the environment before ``triton`` is first imported, and a
pytest process (possibly an xdist worker) may already have imported it. So the test launches this
very file as a child process with the variable set; the child runs every check and exits non-zero
with a message on the first failure. Run it directly with
``TRITON_INTERPRET=1 python tests/test_linear_ce_triton.py``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (the 'triton' extra)")
def test_triton_kernels_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run(
        [sys.executable, __file__], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"child failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "all triton checks passed" in done.stdout


# --------------------------------------------------------------------------- the child


def _child() -> None:  # pragma: no cover - runs in the subprocess
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    import torch
    import torch.nn.functional as F
    from _reference import cast_value_and_grads, frobenius_error, linear_cross_entropy_ref

    from softmaxkit.torch._linear_cross_entropy import linear_cross_entropy, linear_logsumexp

    f64 = torch.float64
    g = torch.Generator().manual_seed(7)
    n, d, v = 37, 20, 70  # none a multiple of the interpreter's 16 x 32 x 16 tiles
    x = torch.randn(n, d, generator=g, dtype=f64)
    w = torch.randn(v, d, generator=g, dtype=f64) / 3
    b = torch.randn(v, generator=g, dtype=f64) * 0.2
    cw = torch.rand(v, generator=g, dtype=f64) + 0.1
    t = torch.randint(0, v, (n,), generator=g)
    t[::6] = -100
    gn = torch.rand(n, generator=g, dtype=f64) + 0.5

    def naive(x_, w_, b_, **opts):
        return linear_cross_entropy_ref(x_, w_, t, b_, **opts)

    def run(fn, dtype, grad_out):
        return cast_value_and_grads(fn, (x, w, b), dtype, grad_out)

    err = frobenius_error

    option_sets = [
        dict(),
        dict(label_smoothing=0.1, class_weight=cw, z_loss=1e-2, softcap=3.0),
        dict(label_smoothing=0.2),
    ]
    checked = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for reduction in ("mean", "sum", "none") if dtype == torch.float32 else ("mean", "none"):
            for k, opts in enumerate(option_sets if dtype == torch.float32 else option_sets[:2]):
                grad_out = gn if reduction == "none" else torch.tensor(1.0, dtype=f64)
                # A small max_memory: the gradient kernel runs over several chunks of tokens.
                ours = run(
                    lambda a, c, e: linear_cross_entropy(
                        a, c, t, e, reduction=reduction, backend="triton", max_memory=v * 4 * 12, **opts
                    ),
                    dtype,
                    grad_out,
                )
                ref = run(lambda a, c, e: naive(a, c, e, reduction=reduction, **opts), f64, grad_out)
                same = run(lambda a, c, e: naive(a, c, e, reduction=reduction, **opts), dtype, grad_out)
                for name, o, r, s in zip(("loss", "dx", "dw", "db"), ours, ref, same):
                    e_ours, e_naive = err(o, r), err(s, r)
                    bound = (
                        1e-6
                        if dtype == torch.float32
                        else max(1.5 * e_naive, 1e-3 if dtype == torch.bfloat16 else 1e-4)
                    )
                    assert e_ours <= bound, (
                        f"{dtype} {reduction} options#{k} {name}: {e_ours:.2e} > {bound:.2e} (naive {e_naive:.2e})"
                    )
                checked += 1

    # linear_logsumexp through the kernels, with its gradient.
    def ref_lse(a, c, e):
        z = F.linear(a, c, e)
        return torch.logsumexp(2.0 * torch.tanh(z / 2.0), -1)

    ours = run(lambda a, c, e: linear_logsumexp(a, c, e, softcap=2.0, backend="triton"), torch.float32, gn)
    ref = run(ref_lse, f64, gn)
    for o, r in zip(ours, ref):
        assert err(o, r) <= 1e-6, f"linear_logsumexp: {err(o, r):.2e}"

    # Deterministic: the same bits twice.
    one = run(
        lambda a, c, e: linear_cross_entropy(a, c, t, e, backend="triton", label_smoothing=0.1), torch.float32, 1.0
    )
    two = run(
        lambda a, c, e: linear_cross_entropy(a, c, t, e, backend="triton", label_smoothing=0.1), torch.float32, 1.0
    )
    assert all(torch.equal(p, q) for p, q in zip(one, two)), "not deterministic"

    # Exact against the 50-digit oracle on the hard families (issue 14): hidden states I_N and a
    # weight Z.T give the logits Z exactly and grad_weight = G.T; the kernels' online statistics
    # (m, its column, S', D) keep confident tokens and large logits exact, as the PyTorch engine's.
    import numpy as np
    from _reference import exact_cross_entropy, hard_families, hard_targets, shift_allowance, ulp_error

    for family, z in hard_families(np.float32).items():
        _, row = shift_allowance(z)
        y = hard_targets(z)
        class_weight = torch.arange(z.shape[1], dtype=torch.float32) % 3 + 0.5
        for opts in (dict(), dict(label_smoothing=0.1, class_weight=class_weight)):
            weights = opts["class_weight"].numpy() if "class_weight" in opts else None
            exact_loss, exact_grad, scale = exact_cross_entropy(
                z, y, weight=weights, reduction="none", label_smoothing=opts.get("label_smoothing", 0.0)
            )
            hidden = torch.eye(len(z), dtype=torch.float32)
            weight = torch.tensor(z.T.copy(), requires_grad=True)
            loss = linear_cross_entropy(hidden, weight, torch.as_tensor(y), reduction="none", backend="triton", **opts)
            (grad_weight,) = torch.autograd.grad(loss.sum(), weight)
            for what, value, exact, sc, bound in (
                ("loss", loss.detach(), exact_loss, None, 32 + row[:, 0]),
                ("gradient", grad_weight.T, exact_grad, scale, 32 + 2 * row),
            ):
                errors = ulp_error(value, exact, np.float32, scale=sc)
                assert np.all(errors <= bound), f"triton {family} {opts} {what}: {errors.max():.1f} ulp"
            checked += 1

    # What the kernels do not cover is refused clearly (the PyTorch path covers it).
    for bad, match in (
        (dict(target=torch.softmax(x, -1)[:, :1].expand(n, v).contiguous()), "class-index targets"),
        (dict(dtype=f64), "float32, bfloat16 or float16"),
    ):
        dtype = bad.get("dtype", torch.float32)
        target = bad.get("target", t)
        try:
            linear_cross_entropy(
                x.to(dtype), w.to(dtype), target.to(dtype) if target.is_floating_point() else target, backend="triton"
            )
        except ValueError as error:
            assert match in str(error), str(error)
        else:
            raise AssertionError(f"expected a ValueError mentioning {match!r}")
    print(f"all triton checks passed ({checked} option cases)")


if __name__ == "__main__":  # pragma: no cover
    _child()
