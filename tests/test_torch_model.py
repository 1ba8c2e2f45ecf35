"""SoftmaxRegressionModule: the lesson's PyTorch model (a linear layer returning logits).

Oracles: the explicit affine map and softmax in float64, torch.nn.CrossEntropyLoss training,
and scikit-learn's LogisticRegression optimum for the same penalised objective.
"""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="softmaxkit.torch needs PyTorch (the torch extra)")

from softmaxkit.torch import CrossEntropyLoss, SoftmaxRegressionModule, cross_entropy  # noqa: E402

LESSON_X = [[2.0, 1.0, 0.1]]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lesson_run(seed=0, *, loss_fn=cross_entropy, dtype=torch.float32):
    """The lesson's loop: one sample of class 0, SGD lr 0.1, 100 epochs; the seed is set first."""
    torch.manual_seed(seed)
    model = SoftmaxRegressionModule(3, 3, dtype=dtype)
    x, y = torch.tensor(LESSON_X, dtype=dtype), torch.tensor([0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses


def test_forward_is_the_affine_map():
    torch.manual_seed(1)
    model = SoftmaxRegressionModule(4, 3, dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64)
    W, b = model.linear.weight, model.linear.bias
    logits = model(x)
    assert logits.shape == (5, 3)
    torch.testing.assert_close(logits, x @ W.T + b, rtol=1e-15, atol=1e-15)
    assert model(x[0]).shape == (3,)  # one unbatched sample
    assert model(torch.randn(2, 6, 4, dtype=torch.float64)).shape == (2, 6, 3)


def test_predict_proba_and_predict():
    torch.manual_seed(2)
    model = SoftmaxRegressionModule(4, 3, dtype=torch.float64)
    x = torch.randn(7, 4, dtype=torch.float64)
    proba = model.predict_proba(x)
    logits = (x @ model.linear.weight.T + model.linear.bias).detach()
    expected = np.exp(logits.numpy() - logits.numpy().max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(proba.numpy(), expected, rtol=1e-14)
    assert not proba.requires_grad  # inference methods record no graph
    prediction = model.predict(x)
    assert prediction.dtype == torch.int64 and torch.equal(prediction, logits.argmax(1))
    assert model.predict(x[0]).shape == ()


def test_without_bias():
    model = SoftmaxRegressionModule(3, 2, bias=False)
    assert model.linear.bias is None
    assert torch.equal(model(torch.zeros(1, 3)), torch.zeros(1, 2))
    assert "n_features=3, n_classes=2" in repr(model)


def test_lesson_training_learns_class_0_and_is_reproducible():
    model, losses = lesson_run()
    assert all(b < a for a, b in itertools.pairwise(losses))  # the loss falls every epoch
    x = torch.tensor(LESSON_X)
    assert model.predict(x).tolist() == [0]
    assert model.predict_proba(x)[0, 0].item() > 0.9
    again, losses_again = lesson_run()
    assert losses == losses_again  # bit for bit on CPU
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)


def test_lesson_training_matches_torch_cross_entropy_loss():
    ours, ours_losses = lesson_run(dtype=torch.float64, loss_fn=CrossEntropyLoss())
    theirs, their_losses = lesson_run(dtype=torch.float64, loss_fn=torch.nn.CrossEntropyLoss())
    np.testing.assert_allclose(ours_losses, their_losses, rtol=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def _fit_lbfgs(model, X, y, *, alpha, max_iter=500, tolerance_grad=1e-12):
    """Minimise sum_n CE + alpha/2 ||W||^2 (bias unpenalised), scikit-learn's objective times C."""
    optimizer = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=max_iter,
        tolerance_grad=tolerance_grad,
        tolerance_change=1e-15,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = cross_entropy(model(X), y, reduction="sum") + 0.5 * alpha * model.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return closure().item()


def test_trained_model_reaches_scikit_learn_optimum():
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=0)
    reference = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X, y)
    torch.manual_seed(0)
    model = SoftmaxRegressionModule(6, 3, dtype=torch.float64)
    _fit_lbfgs(model, torch.from_numpy(X), torch.from_numpy(y), alpha=1.0)
    # The multinomial parametrisation is unique up to a shift shared by all classes; the L2 term
    # fixes W, and the unpenalised intercepts are compared after centring.
    np.testing.assert_allclose(model.linear.weight.detach().numpy(), reference.coef_, atol=1e-6)
    b = model.linear.bias.detach().numpy()
    np.testing.assert_allclose(b - b.mean(), reference.intercept_ - reference.intercept_.mean(), atol=1e-6)
    assert np.array_equal(model.predict(torch.from_numpy(X)).numpy(), reference.predict(X))


def test_trained_on_pendigits(datasets_dir):
    path = datasets_dir / "pendigits"
    train_file = next(path.glob("*.tra*"), None)
    test_file = next(path.glob("*.tes*"), None)
    if train_file is None or test_file is None:
        pytest.skip(f"pendigits .tra/.tes files not found in {path}")
    # Every 4th training row and 30 L-BFGS iterations: accurate enough for the check, and cheap
    # (the full fit to 1e-12 took minutes under a loaded parallel suite).
    train = np.loadtxt(gzip.open(train_file), delimiter=",")[::4]
    test = np.loadtxt(gzip.open(test_file), delimiter=",")
    mean, std = train[:, :-1].mean(0), train[:, :-1].std(0)
    X, y = torch.from_numpy((train[:, :-1] - mean) / std), torch.from_numpy(train[:, -1].astype(np.int64))
    Xt, yt = torch.from_numpy((test[:, :-1] - mean) / std), test[:, -1].astype(np.int64)
    torch.manual_seed(0)
    model = SoftmaxRegressionModule(16, 10, dtype=torch.float64)
    _fit_lbfgs(model, X, y, alpha=1.0, max_iter=30, tolerance_grad=1e-6)
    accuracy = (model.predict(Xt).numpy() == yt).mean()
    assert accuracy > 0.85, accuracy  # multinomial logistic regression on pendigits: about 0.88


def test_state_dict_round_trip():
    model, _ = lesson_run()
    copy = SoftmaxRegressionModule(3, 3)
    copy.load_state_dict(model.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(copy.predict_proba(x), model.predict_proba(x))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 3), "n_features must be a positive integer, got 0"),
        ((3, "3"), "n_classes must be a positive integer, got '3'"),
        ((True, 3), "n_features must be a positive integer, got True"),
    ],
)
def test_bad_sizes(args, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxRegressionModule(*args)


def test_bad_input():
    model = SoftmaxRegressionModule(3, 2)
    with pytest.raises(ValueError, match=r"x must have n_features=3 entries in its last dimension, got shape \(2, 4\)"):
        model.predict(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        model(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got ndarray"):
        model.predict_proba(np.zeros((2, 3)))


@pytest.mark.cuda
def test_cuda_module_matches_cpu():
    model, _ = lesson_run(dtype=torch.float64)
    x = torch.randn(16, 3, dtype=torch.float64)
    gpu = SoftmaxRegressionModule(3, 3, device="cuda", dtype=torch.float64)
    gpu.load_state_dict(model.state_dict())
    torch.testing.assert_close(gpu.predict_proba(x.cuda()).cpu(), model.predict_proba(x), rtol=1e-12, atol=1e-15)
    assert torch.equal(gpu.predict(x.cuda()).cpu(), model.predict(x))
