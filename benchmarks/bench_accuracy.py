"""Benchmark: elementwise accuracy against a 50-digit oracle -- softmaxkit (torch and NumPy), PyTorch, SciPy.

Usage (from the repository root)::

    python benchmarks/bench_accuracy.py            # writes results/accuracy.{csv,json,md}
    python benchmarks/bench_accuracy.py --quick    # two families, float64 only: results/accuracy-quick.*

For each hard input family of the test suite (``tests/_reference.hard_families``: logit gaps 0..700,
magnitudes up to 1e300 (float32: 1e37), tiny spreads, random rows) and a C = 100,000 family (random
rows, one of them confident), in float64 and float32, the largest elementwise error in ulp of the
dtype (``eps`` = 2**-52 or 2**-23, relative to the exact value; see ``_reference.ulp_error``) of

* ``log_softmax``, ``softmax`` and ``logsumexp``,
* the cross-entropy loss per sample (``reduction="none"``, the target at the top class on every
  other row) and its gradient entry at the target,

against the oracle: mpmath at 50 digits (``_reference.exact_*``), extended precision
(``np.longdouble``, ~1e-19 relative) for C = 100,000. Implementations: ``softmaxkit.torch``,
softmaxkit's NumPy functions, PyTorch (``torch.log_softmax``, ``torch.softmax``, ``torch.logsumexp``,
``F.cross_entropy`` with autograd) and SciPy (``scipy.special.log_softmax`` / ``softmax`` /
``logsumexp``; its cross-entropy is ``-log_softmax`` at the target and the gradient ``softmax - 1``
there, as a SciPy user would write them). The test suite bounds softmaxkit.torch and the NumPy
functions (both their NumPy path and their compiled kernels) at 32 ulp (plus the shift rounding on
random rows, see ``tests/test_exactness.py``). Here the small families take the NumPy functions'
NumPy path and C = 100,000 their kernels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

QUANTITIES = ("log_softmax", "softmax", "logsumexp", "ce_loss", "ce_grad_at_target")
IMPLS = ("softmaxkit.torch", "softmaxkit numpy", "torch", "scipy")


def _implementations():
    import scipy.special
    import torch
    import torch.nn.functional as F

    import softmaxkit
    import softmaxkit.torch as skt

    def torch_ce(ce):
        def run(x, y):
            t = torch.tensor(x, requires_grad=True)
            loss = ce(t, torch.as_tensor(y), reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), t)
            return loss.detach().numpy(), grad.numpy()

        return run

    def numpy_ce(x, y):
        return softmaxkit.cross_entropy(x, y, reduction="none"), softmaxkit.cross_entropy_backward(
            x, y, np.ones(len(x), dtype=x.dtype), reduction="none"
        )

    def scipy_ce(x, y):
        rows = np.arange(len(x))
        grad = scipy.special.softmax(x, axis=1)
        grad[rows, y] -= 1
        return -scipy.special.log_softmax(x, axis=1)[rows, y], grad

    def torch_fn(fn):
        return lambda x: fn(torch.tensor(x), 1).numpy()

    return {
        "softmaxkit.torch": {
            "log_softmax": torch_fn(skt.log_softmax),
            "softmax": torch_fn(skt.softmax),
            "logsumexp": torch_fn(skt.logsumexp),
            "ce": torch_ce(skt.cross_entropy),
        },
        "softmaxkit numpy": {
            "log_softmax": lambda x: softmaxkit.log_softmax(x, 1),
            "softmax": lambda x: softmaxkit.softmax(x, 1),
            "logsumexp": lambda x: softmaxkit.logsumexp(x, 1),
            "ce": numpy_ce,
        },
        "torch": {
            "log_softmax": torch_fn(torch.log_softmax),
            "softmax": torch_fn(torch.softmax),
            "logsumexp": torch_fn(torch.logsumexp),
            "ce": torch_ce(F.cross_entropy),
        },
        "scipy": {
            "log_softmax": lambda x: scipy.special.log_softmax(x, axis=1),
            "softmax": lambda x: scipy.special.softmax(x, axis=1),
            "logsumexp": lambda x: scipy.special.logsumexp(x, axis=1),
            "ce": scipy_ce,
        },
    }


def _exact(x, large: bool):
    """``(rows, loss, grad at the target)`` of the oracle for the rows ``x`` and their hard targets."""
    from _reference import exact_cross_entropy, exact_softmax_rows, hard_targets, longdouble_softmax_rows

    y = hard_targets(x)
    index = np.arange(len(x))
    if large:
        rows = longdouble_softmax_rows(x)
        loss = -rows["log_softmax"][index, y]
        # p_t - 1 = -sum_{j != t} p_j, summed in extended precision.
        p = np.exp(x.astype(np.longdouble) - x.max(1, keepdims=True) - _log_norm(x)[:, None])
        p[index, y] = 0
        return rows, loss, -p.sum(1).astype(np.float64), y
    rows = exact_softmax_rows(x)
    loss, grad, _ = exact_cross_entropy(x, y, reduction="none")
    return rows, loss, grad[index, y], y


def _log_norm(x):
    """``log sum exp(x - max)`` per row in ``np.longdouble`` (log1p of the non-top terms)."""
    x = x.astype(np.longdouble)
    e = np.exp(x - x.max(1, keepdims=True))
    e[np.arange(len(x)), np.argmax(x, 1)] = 0
    return np.log1p(e.sum(1))


def families(dtype, quick: bool) -> dict[str, tuple[np.ndarray, bool]]:
    from _reference import hard_families

    out = {name: (x, False) for name, x in hard_families(dtype).items()}
    if quick:
        return {name: out[name] for name in ("gaps", "random")}
    rng = np.random.default_rng(100_000)
    large = (3 * rng.standard_normal((4, 100_000))).astype(dtype)
    large[0, 7] += 60  # one confident row
    out["C=100000"] = (large, True)
    return out


def measure(quick: bool) -> list[dict]:
    from _reference import ulp_error

    impls = _implementations()
    rows = []
    for dtype in (np.float64,) if quick else (np.float64, np.float32):
        for family, (x, large) in families(dtype, quick).items():
            exact_rows, exact_loss, exact_grad_t, y = _exact(x, large)
            index = np.arange(len(x))
            for impl, fns in impls.items():
                row = {
                    "dtype": np.dtype(dtype).name,
                    "family": family,
                    "shape": "x".join(map(str, x.shape)),
                    "impl": impl,
                }
                with np.errstate(all="ignore"):
                    for name in ("log_softmax", "softmax", "logsumexp"):
                        row[name] = float(np.max(ulp_error(fns[name](x), exact_rows[name], dtype)))
                    loss, grad = fns["ce"](x, y)
                    row["ce_loss"] = float(np.max(ulp_error(loss, exact_loss, dtype)))
                    row["ce_grad_at_target"] = float(np.max(ulp_error(grad[index, y], exact_grad_t, dtype)))
                rows.append(row)
                print(f"  {row['dtype']:8s} {family:13s} {impl:17s} " + " ".join(f"{row[q]:9.3g}" for q in QUANTITIES))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two families in float64 only, for a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results (default results/)")
    args = parser.parse_args(argv)

    from _common import RESULTS_DIR, environment, write_results

    env = environment(("softmaxkit", "numpy", "scipy", "torch", "mpmath"))
    start = time.perf_counter()
    rows = measure(args.quick)
    name = "accuracy-quick" if args.quick else "accuracy"
    write_results(
        name,
        rows,
        env,
        title="Elementwise error against a 50-digit oracle, in ulp (eps of the dtype)",
        columns=("dtype", "family", "shape", "impl", *QUANTITIES),
        notes=(
            "largest elementwise |value - exact| / (|exact| * eps) over the family; eps = 2**-52 (float64), 2**-23 (float32)",
            "oracle: mpmath at 50 digits; C = 100000: np.longdouble (~1e-19 relative)",
            "cross-entropy: reduction='none', the target at the top class on every other row; scipy's is -log_softmax at"
            " the target and softmax - 1 there",
            "inf: a result of the wrong kind (0 where the exact value is not, a NaN, an overflow); 4.5e15 = 1/eps: all"
            " relative accuracy lost",
            f"measured in {time.perf_counter() - start:.0f} s",
        ),
        results_dir=args.out or RESULTS_DIR,
    )
    print(f"wrote {(args.out or RESULTS_DIR) / name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
