"""Conformance with PyTorch's own test inputs: every OpInfo and ModuleInfo sample of the ops we mirror (issue 14).

PyTorch ships sample inputs for its operators (``torch.testing._internal``: ``op_db`` OpInfo
entries and ``module_db`` ModuleInfo entries; they need the ``expecttest`` package). Nobody on
this project wrote them: they are the fairest test of "PyTorch's exact semantics". Every float64
sample of

* the OpInfo entries ``nn.functional.cross_entropy``, ``nn.functional.nll_loss``, ``log_softmax``,
  ``softmax``, ``logsumexp`` (each variant, ``with_dtype`` included) and
  ``nn.functional.linear_cross_entropy`` (with its ``chunked`` and ``chunked_none`` variants),
  and their error inputs where PyTorch provides them,
* the ModuleInfo entries ``CrossEntropyLoss``, ``NLLLoss``, ``LinearCrossEntropyLoss``,
  ``Softmax`` and ``LogSoftmax``,

is fed to our torch ops (``softmaxkit.torch``), our NumPy functions (the OpInfo samples of the
functions they have) and our modules (the ModuleInfo samples). Each must give one of:

* the same value and the same gradients as PyTorch (every floating input that requires grad, for
  one seeded upstream gradient) to float64 rounding (``RTOL``, relative to the largest entry);
* an error where PyTorch raises one (ours a ``ValueError``/``TypeError`` naming the argument);
* a deliberate difference, each listed once in ``DIFFERENCES`` below with its reason, recognised
  by its predicate and checked to be what we document.

Where we differ on purpose (a negative class weight refused, no gradient to a fused loss's
target), the sample is checked once more with the weights' absolute values or the target detached,
on both sides, and must then agree. A session-finish line reports the number of samples
(``tests/conftest.py``).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from _reference import RTOL, assert_close

torch = pytest.importorskip("torch", reason="the conformance suite needs PyTorch (the torch extra)")
pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest (the test extra)")

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal.common_modules import module_db  # noqa: E402
from torch.testing._internal.opinfo.core import SampleInput  # noqa: E402

import softmaxkit  # noqa: E402
import softmaxkit.torch as skt  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # PyTorch's chunked linear_cross_entropy says when its samples' options fall back to its reference path.
    pytest.mark.filterwarnings(r"ignore:linear_cross_entropy. ``options`` ignored:UserWarning"),
]

OPS = (
    "nn.functional.cross_entropy",
    "nn.functional.nll_loss",
    "log_softmax",
    "softmax",
    "logsumexp",
    "nn.functional.linear_cross_entropy",
)
MODULES = ("CrossEntropyLoss", "NLLLoss", "LinearCrossEntropyLoss", "Softmax", "LogSoftmax")
F64 = torch.float64


# --------------------------------------------------------------------------- the deliberate differences

#: key: (what PyTorch does, what we do, why, the pattern our error matches). Every sample that differs from PyTorch must match one
#: of these (``_difference``); a difference of any other kind fails the suite.
DIFFERENCES = {
    "negative class weight": (
        "accepts negative class weights (the loss becomes a difference of terms, the mean may divide by ~0)",
        "ValueError: weight must be non-negative",
        "a negative weight is almost always a bug; the package's one validator refuses it everywhere",
        r"weight must be non-negative",
    ),
    "K-dimensional linear weight": (
        "linear_cross_entropy / LinearCrossEntropyLoss with a (C, K..., d) weight or out_features != ()",
        "ValueError: weight must be a tensor of shape (V, d)",
        "the fused loss is the LLM head's (V, d) projection; K-dimensional logits are cross_entropy's job",
        r"weight must be a tensor of shape \(V, \d+\)",
    ),
    "no gradient to the target": (
        "linear_cross_entropy: differentiates probability targets and class weights that require grad",
        "ValueError: target / class_weight must not require grad (no gradient flows to it)",
        "the fused loss computes no N x V target gradient; cross_entropy, which has one, gives it",
        r"(target|class_weight) must not require grad",
    ),
    "zero total weight": (
        "reduction='mean' whose kept targets weigh 0 in total: NaN loss and NaN gradients",
        "NaN loss (0 / 0, as PyTorch) and zero gradients for the samples whose coefficients are all 0",
        "the package's documented policy: a sample that contributes nothing has no gradient",
        None,
    ),
}


def _negative_weight(weight) -> bool:
    return isinstance(weight, torch.Tensor) and bool((weight < 0).any())


# --------------------------------------------------------------------------- comparing with PyTorch


def _leaves(*values):
    """The floating tensors among ``values`` (nested in lists / dicts) that require grad."""
    found = []
    for value in values:
        if isinstance(value, dict):
            found += _leaves(*value.values())
        elif isinstance(value, (list, tuple)):
            found += _leaves(*value)
        elif isinstance(value, torch.Tensor) and value.requires_grad and value.is_floating_point():
            found.append(value)
    return found


def _run(fn, leaves):
    """``("value", out, grads)`` of ``fn()`` for a seeded upstream gradient, or ``("error", exception, None)``."""
    try:
        out = fn()
    except Exception as error:  # PyTorch's own kinds vary: RuntimeError, IndexError, ValueError
        return "error", error, None
    if not leaves or not out.requires_grad:
        return "value", out.detach(), None
    g = torch.rand(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(14)) + 0.5
    grads = torch.autograd.grad(out, leaves, g, allow_unused=True)
    return "value", out.detach(), [None if v is None else v.detach() for v in grads]


def _same(ours, theirs) -> bool:
    """Value and gradients equal to float64 rounding (the NaN / inf pattern exactly)."""
    try:
        assert_close(ours[1], theirs[1], rtol=RTOL, dtype=theirs[1].dtype)
        if theirs[2] is not None:
            for a, b in zip(ours[2] or [None] * len(theirs[2]), theirs[2]):
                b = torch.zeros_like(a) if b is None and a is not None else b
                a = torch.zeros_like(b) if a is None and b is not None else a
                assert_close(a, b, rtol=RTOL, what="gradient")
    except AssertionError:
        return False
    return True


def _zero_total_weight_policy(ours, theirs) -> bool:
    """Both losses NaN (0 / 0); ours has zero gradients where PyTorch's are NaN."""
    if not (bool(ours[1].isnan().all()) and bool(theirs[1].isnan().all())):
        return False
    return all(a is None or bool((a == 0).all()) for a in ours[2] or [])


class Outcomes:
    """What each sample gave: "agrees", "both raise", or a key of ``DIFFERENCES``."""

    def __init__(self):
        self.counts = Counter()

    def check(self, what, ours_fn, torch_fn, leaves, *, predicates):
        """Run both on the same leaves and :meth:`classify`; ``predicates``: difference key -> does it apply."""
        self.classify(what, _run(ours_fn, leaves), _run(torch_fn, leaves), predicates=predicates)

    def classify(self, what, ours, theirs, *, predicates):
        if ours[0] == "error" and not isinstance(ours[1], (ValueError, TypeError)):
            raise AssertionError(f"{what}: ours raised {type(ours[1]).__name__} (not ValueError/TypeError): {ours[1]}")
        if theirs[0] == ours[0] == "error":
            self.counts["both raise"] += 1
            return
        if theirs[0] == ours[0] == "value" and _same(ours, theirs):
            self.counts["agrees"] += 1
            return
        for key, applies in predicates.items():
            if not applies:
                continue
            if key == "zero total weight":
                if ours[0] == theirs[0] == "value" and _zero_total_weight_policy(ours, theirs):
                    self.counts[key] += 1
                    return
            elif ours[0] == "error" and theirs[0] == "value":
                assert re.search(DIFFERENCES[key][3], str(ours[1])), f"{what}: {key}: ours raised {ours[1]!r}"
                self.counts[key] += 1
                return
        detail = ours[1] if ours[0] == "error" else theirs[1] if theirs[0] == "error" else (ours[1], theirs[1])
        raise AssertionError(f"{what}: ours {ours[0]}, PyTorch {theirs[0]}: {detail}")


def _record(record_property, source, outcomes: Outcomes, minimum: int):
    total = sum(outcomes.counts.values())
    record_property("conformance_samples", (source, total, dict(outcomes.counts)))
    assert total >= minimum, f"{source}: only {total} samples (PyTorch's entries shrank?)"


# --------------------------------------------------------------------------- the OpInfo samples


def _opinfos(name):
    return [op for op in op_db if op.name == name]


def _numpy_view(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else value


def _op_call(name, sample, *, ours: bool):
    """``(fn, predicates)`` for one sample: ours or PyTorch's call of the op."""
    x, args, kwargs = sample.input, list(sample.args), dict(sample.kwargs)
    if name in ("softmax", "log_softmax"):
        dim = args[0] if args else kwargs.pop("dim")
        dtype = kwargs.pop("dtype", None)
        if not ours:
            return (lambda: getattr(torch, name)(x, dim, dtype=dtype)), {}
        ours_fn = skt.softmax if name == "softmax" else skt.log_softmax
        return (lambda: ours_fn(x if dtype is None else x.to(dtype), dim)), {}
    if name == "logsumexp":
        dim, keepdim = (list(args) + [False])[:2]
        if not ours:
            return (lambda: torch.logsumexp(x, dim, keepdim)), {}
        return (lambda: skt.logsumexp(x, tuple(dim) if isinstance(dim, (list, tuple)) else dim, keepdim=keepdim)), {}
    if name in ("nn.functional.cross_entropy", "nn.functional.nll_loss"):
        (target,) = args
        predicates = {
            "negative class weight": _negative_weight(kwargs.get("weight")),
            "zero total weight": kwargs.get("reduction", "mean") == "mean",
        }
        theirs_fn = torch.nn.functional.cross_entropy if "cross" in name else torch.nn.functional.nll_loss
        ours_fn = skt.cross_entropy if "cross" in name else skt.nll_loss
        fn = ours_fn if ours else theirs_fn
        return (lambda: fn(x, target, **kwargs)), predicates
    assert name == "nn.functional.linear_cross_entropy", name
    linear_weight, target = args
    predicates = {
        "negative class weight": _negative_weight(kwargs.get("weight")),
        "K-dimensional linear weight": linear_weight.ndim > 2,
        "no gradient to the target": bool(_leaves(target, kwargs.get("weight"))),
        "zero total weight": kwargs.get("reduction", "mean") == "mean",
    }
    if not ours:
        return (lambda: torch.nn.functional.linear_cross_entropy(x, linear_weight, target, **kwargs)), predicates
    kwargs.pop("options", None)  # PyTorch's chunking strategy; ours is max_memory (the result does not depend on it)
    ignore_index = kwargs.pop("ignore_index", None)
    opts = {
        "reduction": kwargs.pop("reduction", "mean"),
        "label_smoothing": kwargs.pop("label_smoothing", 0.0),
        "class_weight": kwargs.pop("weight", None),
        "ignore_index": -100 if ignore_index is None else ignore_index,
    }
    bias = kwargs.pop("linear_bias", None)
    assert not kwargs, kwargs
    return (lambda: skt.linear_cross_entropy(x, linear_weight, target, bias, **opts)), predicates


def _numpy_call(name, sample):
    """``(value, grad of input)`` of our NumPy function for a sample (``None`` where it has no twin)."""
    x, args, kwargs = _numpy_view(sample.input), list(sample.args), dict(sample.kwargs)
    g_shape = None
    if name in ("softmax", "log_softmax"):
        dim = args[0] if args else kwargs.pop("dim")
        forward = softmaxkit.softmax if name == "softmax" else softmaxkit.log_softmax
        backward = softmaxkit.softmax_backward if name == "softmax" else softmaxkit.log_softmax_backward
        out = forward(x, dim)
        g_shape = np.shape(out)
        return out, lambda g: backward(g, out, dim), g_shape
    if name == "logsumexp":
        dim, keepdim = (list(args) + [False])[:2]
        out = softmaxkit.logsumexp(x, tuple(dim), keepdims=keepdim)
        return out, None, np.shape(out)
    (target,) = args
    kwargs = {k: _numpy_view(v) for k, v in kwargs.items()}
    forward = softmaxkit.cross_entropy if "cross" in name else softmaxkit.nll_loss
    backward = softmaxkit.cross_entropy_backward if "cross" in name else softmaxkit.nll_loss_backward
    target = _numpy_view(target)
    out = forward(x, target, **kwargs)
    return out, lambda g: backward(x, target, g, **kwargs), np.shape(out)


def _check_numpy(name, sample, outcomes: Outcomes, what):
    """Our NumPy twin against PyTorch on the same sample: value, gradient of the input, or both raising."""
    torch_fn, predicates = _op_call(name, sample, ours=False)
    leaf = sample.input
    theirs = _run(torch_fn, [leaf] if leaf.requires_grad else [])
    try:
        value, backward, g_shape = _numpy_call(name, sample)
        grads = None
        if backward is not None and theirs[0] == "value" and theirs[2] is not None:
            g = torch.rand(theirs[1].shape, dtype=F64, generator=torch.Generator().manual_seed(14)) + 0.5
            grads = [torch.as_tensor(np.asarray(backward(g.numpy().reshape(g_shape))))]
        ours = ("value", torch.as_tensor(np.asarray(value)), grads)
    except (ValueError, TypeError) as error:
        ours = ("error", error, None)
    if ours[0] == "value" and ours[2] is None:
        theirs = (theirs[0], theirs[1], None)  # no NumPy backward (logsumexp): the value only
    outcomes.classify(what, ours, theirs, predicates=predicates)


@pytest.mark.parametrize("name", OPS)
def test_opinfo_samples(name, record_property):
    outcomes, also = Outcomes(), Outcomes()
    for op in _opinfos(name):
        for k, sample in enumerate(op.sample_inputs("cpu", F64, requires_grad=True)):
            what = f"{op.name}.{op.variant_test_name or 'default'}#{k}"
            theirs_fn, predicates = _op_call(name, sample, ours=False)
            ours_fn, _ = _op_call(name, sample, ours=True)
            leaves = _leaves(sample.input, sample.args, sample.kwargs)
            outcomes.check(what, ours_fn, theirs_fn, leaves, predicates=predicates)
            if predicates.get("negative class weight"):
                # ... and with the weights' absolute values on both sides, everything agrees.
                positive = _positive_weights(sample)
                theirs_fn, _ = _op_call(name, positive, ours=False)
                ours_fn, _ = _op_call(name, positive, ours=True)
                leaves = _leaves(positive.input, positive.args, positive.kwargs)
                also.check(what + " (|weight|)", ours_fn, theirs_fn, leaves, predicates={})
            if predicates.get("no gradient to the target"):
                # ... and with the target detached on both sides, everything else agrees.
                detached = _detach_targets(sample)
                theirs_fn, predicates = _op_call(name, detached, ours=False)
                ours_fn, _ = _op_call(name, detached, ours=True)
                leaves = _leaves(detached.input, detached.args, detached.kwargs)
                also.check(what + " (target detached)", ours_fn, theirs_fn, leaves, predicates=predicates)
    minimum = {
        "nn.functional.linear_cross_entropy": 300,
        "nn.functional.nll_loss": 60,
        "nn.functional.cross_entropy": 20,
    }
    _record(record_property, f"OpInfo {name} (torch ops)", outcomes, minimum.get(name, 7))
    retried = outcomes.counts["no gradient to the target"] + outcomes.counts["negative class weight"]
    assert also.counts["agrees"] == retried, (also.counts, outcomes.counts)
    record_property("conformance_variants", also.counts["agrees"])


def _positive_weights(sample):
    """The sample with its class weights replaced by their absolute values."""
    kwargs = dict(sample.kwargs)
    kwargs["weight"] = kwargs["weight"].detach().abs()
    return SampleInput(sample.input, args=sample.args, kwargs=kwargs)


def _detach_targets(sample):
    """The sample with its target and class weight detached (linear_cross_entropy's no-gradient inputs)."""
    linear_weight, target = sample.args
    kwargs = dict(sample.kwargs)
    if isinstance(kwargs.get("weight"), torch.Tensor):
        kwargs["weight"] = kwargs["weight"].detach()
    return SampleInput(sample.input, args=(linear_weight, target.detach()), kwargs=kwargs)


@pytest.mark.parametrize("name", [n for n in OPS if n != "nn.functional.linear_cross_entropy"])
def test_opinfo_samples_numpy(name, record_property):
    outcomes = Outcomes()
    for op in _opinfos(name):
        for k, sample in enumerate(op.sample_inputs("cpu", F64, requires_grad=True)):
            _check_numpy(name, sample, outcomes, f"numpy {op.name}.{op.variant_test_name or 'default'}#{k}")
    _record(record_property, f"OpInfo {name} (NumPy functions)", outcomes, 7)


def test_opinfo_error_inputs(record_property):
    """Where PyTorch lists inputs that must fail, ours fail too (with a ValueError / TypeError)."""
    outcomes = Outcomes()
    for name in OPS:
        for op in _opinfos(name):
            try:
                errors = list(op.error_inputs("cpu"))
            except TypeError:  # the entry has no error inputs (its generator is None)
                continue
            for k, error in enumerate(errors):
                sample = error.sample_input
                predicates = _op_call(name, sample, ours=False)[1]
                with pytest.raises(error.error_type):
                    _op_call(name, sample, ours=False)[0]()
                outcomes.check(
                    f"errors {op.name}#{k}",
                    _op_call(name, sample, ours=True)[0],
                    _op_call(name, sample, ours=False)[0],
                    [],
                    predicates=predicates,
                )
    _record(record_property, "OpInfo error inputs", outcomes, 18)


# --------------------------------------------------------------------------- the ModuleInfo samples


def _module_calls(name, module_input):
    """``(ours_fn, torch_fn, parameters, predicates)``: ours reads the parameters of PyTorch's module."""
    ctor_args, ctor_kwargs = list(module_input.constructor_input.args), dict(module_input.constructor_input.kwargs)
    args, kwargs = list(module_input.forward_input.args), dict(module_input.forward_input.kwargs)
    assert not kwargs, kwargs
    cls = next(m.module_cls for m in module_db if m.module_cls.__name__ == name)
    module = cls(*ctor_args, **ctor_kwargs)
    theirs = lambda: module(*args)
    if name in ("Softmax", "LogSoftmax"):
        mine = getattr(skt, name)(*ctor_args, **ctor_kwargs)
        return (lambda: mine(*args)), theirs, [], {}
    predicates = {
        "negative class weight": _negative_weight(ctor_kwargs.get("weight")),
        "zero total weight": ctor_kwargs.get("reduction", "mean") == "mean",
    }
    if name in ("CrossEntropyLoss", "NLLLoss"):
        mine = getattr(skt, name)(**ctor_kwargs)
        return (lambda: mine(*args)), theirs, [], predicates
    assert name == "LinearCrossEntropyLoss", name
    out_features = tuple(ctor_kwargs.get("out_features", ()))
    predicates["K-dimensional linear weight"] = out_features != ()
    ignore_index = ctor_kwargs.get("ignore_index")
    mine = skt.LinearCrossEntropyLoss(
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction=ctor_kwargs.get("reduction", "mean"),
        label_smoothing=ctor_kwargs.get("label_smoothing", 0.0),
        class_weight=ctor_kwargs.get("weight"),
    )
    input, target = args
    weight = module.linear.weight
    if out_features:  # K-dimensional: handed over as PyTorch stores it, (C * K..., d) viewed as (C, K..., d)
        weight = weight.view(ctor_args[1], *out_features, -1)
    return (lambda: mine(input, weight, target, module.linear.bias)), theirs, list(module.parameters()), predicates


@pytest.mark.parametrize("name", MODULES)
def test_moduleinfo_samples(name, record_property):
    outcomes, also = Outcomes(), Outcomes()
    (info,) = [m for m in module_db if m.module_cls.__name__ == name]
    samples = info.module_inputs_func(info, device="cpu", dtype=F64, requires_grad=True, training=True)
    for k, module_input in enumerate(samples):
        ours_fn, theirs_fn, params, predicates = _module_calls(name, module_input)
        leaves = _leaves(module_input.forward_input.args) + [p for p in params if p.requires_grad]
        outcomes.check(f"{name}#{k}", ours_fn, theirs_fn, leaves, predicates=predicates)
        if predicates.get("negative class weight") and not predicates.get("K-dimensional linear weight"):
            module_input.constructor_input.kwargs["weight"] = module_input.constructor_input.kwargs["weight"].abs()
            ours_fn, theirs_fn, params, _ = _module_calls(name, module_input)
            leaves = _leaves(module_input.forward_input.args) + [p for p in params if p.requires_grad]
            also.check(f"{name}#{k} (|weight|)", ours_fn, theirs_fn, leaves, predicates={})
    minimum = {"LinearCrossEntropyLoss": 850, "CrossEntropyLoss": 100, "NLLLoss": 28}
    _record(record_property, f"ModuleInfo {name}", outcomes, minimum.get(name, 3))
    assert also.counts["agrees"] == sum(also.counts.values()), also.counts
    record_property("conformance_variants", also.counts["agrees"])


def test_the_differences_table_is_complete():
    for key, (theirs, ours, why, pattern) in DIFFERENCES.items():
        assert theirs and ours and why, key
        assert (pattern is None) == (key == "zero total weight"), key
