"""torch.compile and torch.export see through every op: no graph break, and the eager results.

One small model holds every op (softmax, log_softmax, logsumexp, cross_entropy, nll_loss,
linear_cross_entropy, linear_logsumexp, linear_token_stats); compiling it is what costs (seconds on two cores), so
the module compiles it a few times only: ``torch._dynamo.explain`` (0 graph breaks), one
``fullgraph=True`` compile with Inductor (values and gradients equal eager), one ``torch.export``,
and the traced value checks with the ``aot_eager`` backend.
"""

from __future__ import annotations

import pytest
import torch

import softmaxkit.torch as skt

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]


class EveryOp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = torch.nn.Linear(4, 6)
        self.head = torch.nn.Parameter(torch.randn(11, 6, generator=g) / 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(6, 4, generator=g))
            self.lin.bias.copy_(torch.randn(6, generator=g))
        self.register_buffer("class_weight", torch.linspace(0.5, 1.5, 6))

    def forward(self, x, t):
        z = self.lin(x)
        t6 = t.remainder(6)
        losses = [
            skt.cross_entropy(z, t6, self.class_weight, label_smoothing=0.1),
            skt.cross_entropy(z, skt.softmax(z.detach(), 1)),
            skt.nll_loss(skt.log_softmax(z, 1), t6, reduction="sum"),
            (skt.softmax(z, 1) * torch.arange(6.0)).sum(),
            skt.logsumexp(z, (0, 1)),
            skt.linear_cross_entropy(z, self.head, t, label_smoothing=0.1, z_loss=1e-3),
            skt.linear_cross_entropy(z, self.head, t, reduction="none").sum(),
            skt.linear_logsumexp(z, self.head, softcap=5.0).mean(),
            sum(part.sum() for part in skt.linear_token_stats(z, self.head, t, temperature=0.7)),
        ]
        return torch.stack(losses)


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(7, 4, generator=g), torch.tensor([0, 3, 10, -100, 5, 7, 1])


def _run(model, x, t):
    model.zero_grad()
    out = model(x, t)
    out.sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_no_graph_breaks():
    model = EveryOp()
    explanation = torch._dynamo.explain(model)(*_inputs())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_fullgraph_compile_equals_eager():
    model = EveryOp()
    x, t = _inputs()
    want, want_grads = _run(model, x, t)
    torch._dynamo.reset()
    got, got_grads = _run(torch.compile(model, fullgraph=True), x, t)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_export_equals_eager():
    model = EveryOp()
    x, t = _inputs()
    program = torch.export.export(model, (x, t))
    torch.testing.assert_close(program.module()(x, t), model(x, t), rtol=1e-6, atol=1e-7)
    # The fused loss is one opaque node per call, not a traced loop.
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "softmaxkit.linear_cross_entropy.default" in targets
    assert "softmaxkit.linear_logsumexp.default" in targets
    assert "softmaxkit.linear_token_stats.default" in targets


def test_traced_calls_still_refuse_bad_values():
    """Value checks become graph asserts (cross_entropy) or run inside the fused op (linear CE)."""
    torch._dynamo.reset()
    z = torch.randn(3, 4)
    ce = torch.compile(lambda a, b, w: skt.cross_entropy(a, b, w), fullgraph=True, backend="aot_eager")
    good = ce(z, torch.tensor([0, 1, 3]), torch.ones(4))
    torch.testing.assert_close(good, skt.cross_entropy(z, torch.tensor([0, 1, 3])))
    with pytest.raises(RuntimeError, match=r"target must hold class indices in \[0, 4\)"):
        ce(z, torch.tensor([0, 1, 4]), torch.ones(4))
    with pytest.raises(RuntimeError, match="weight must be non-negative"):
        ce(z, torch.tensor([0, 1, 3]), torch.tensor([1.0, -1.0, 1.0, 1.0]))
    lce = torch.compile(lambda a, w, b: skt.linear_cross_entropy(a, w, b), fullgraph=True, backend="aot_eager")
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 5\) or ignore_index=-100, got 9"):
        lce(torch.randn(3, 2), torch.randn(5, 2), torch.tensor([0, 9, 1]))
