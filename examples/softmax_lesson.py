"""The classic softmax lesson, end to end, with softmaxkit.

1. a numerically stable softmax of three logits;
2. the cross-entropy of a one-hot target, and its gradient: softmax minus one-hot;
3. a check of that gradient by finite differences;
4. a softmax-regression model (a linear layer trained with cross-entropy) in NumPy,
   by plain gradient descent on scikit-learn's handwritten digits;
5. the lesson's PyTorch model: one sample of class 0, a linear layer trained with
   ``softmaxkit.torch.CrossEntropyLoss`` and SGD on the best available device ("auto");
6. the same estimator, ``SoftmaxRegression``, with the NumPy and the torch backends.

Run it with ``python examples/softmax_lesson.py``. Parts 5 and 6 need PyTorch (the ``torch``
extra) and are skipped, with a note, without it.
"""

import numpy as np
from sklearn.datasets import load_digits

import softmaxkit as sk


def numpy_part() -> None:
    logits = np.array([2.0, 1.0, 0.1])
    true_class = 0

    probabilities = sk.softmax(logits)
    print("softmax([2.0, 1.0, 0.1]) =", probabilities)

    # The lesson's formula, -log p_y, and softmaxkit's, logsumexp(x) - x_y (which never takes the
    # log of an underflowed 0), agree to the last bit or two; PyTorch prints the latter.
    print("cross-entropy with true class 0 =", float(-np.log(probabilities[true_class])))
    loss, gradient = sk.cross_entropy_with_grad(logits, np.array(true_class))
    print("softmaxkit.cross_entropy        =", float(loss))
    print("gradient (softmax - one-hot) =", gradient)

    one_hot = np.eye(3)[true_class]
    assert np.allclose(gradient, probabilities - one_hot)

    check = sk.gradcheck(
        lambda x: sk.cross_entropy(x, np.array(true_class)),
        lambda g, x: sk.cross_entropy_backward(x, np.array(true_class), g),
        logits,
    )
    print(f"finite-difference check: passed={check.passed}, largest error {check.max_abs_error:.1e}")

    # The naive softmax overflows where the stable one does not.
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp([1000.0, 0.0]) / np.exp([1000.0, 0.0]).sum()
    print("naive softmax([1000, 0]) =", naive, "  stable:", sk.softmax(np.array([1000.0, 0.0])))


def numpy_softmax_regression(*, epochs: int = 200, learning_rate: float = 0.5, seed: int = 0) -> None:
    """Full-batch gradient descent on W (classes x features) and b, NumPy only."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    X = digits.data[order] / 16.0
    y = digits.target[order]
    n_train = int(0.8 * len(y))
    X_train, y_train, X_test, y_test = X[:n_train], y[:n_train], X[n_train:], y[n_train:]

    n_classes, n_features = 10, X.shape[1]
    weights = np.zeros((n_classes, n_features))
    bias = np.zeros(n_classes)
    for epoch in range(1, epochs + 1):
        logits = X_train @ weights.T + bias
        loss, grad_logits = sk.cross_entropy_with_grad(logits, y_train)
        # The chain rule through the linear layer: dL/dW = G^T X, dL/db = sum of G's rows.
        weights -= learning_rate * grad_logits.T @ X_train
        bias -= learning_rate * grad_logits.sum(axis=0)
        if epoch % 50 == 0:
            print(f"epoch {epoch:4d}  training loss {float(loss):.4f}")
    accuracy = np.mean(np.argmax(X_test @ weights.T + bias, axis=1) == y_test)
    print(f"NumPy softmax regression on the digits: test accuracy {accuracy:.3f}")


def torch_part(*, epochs: int = 100, learning_rate: float = 0.1, seed: int = 0) -> None:
    """The lesson's PyTorch loop: the seed is set before the model exists, so every run prints the same."""
    import torch

    from softmaxkit.torch import CrossEntropyLoss, SoftmaxRegressionModule, resolve_device

    device = resolve_device("auto")  # CUDA if available, else MPS, else the CPU
    print("device:", device.type)
    x = torch.tensor([[2.0, 1.0, 0.1]], device=device)  # one sample ...
    y = torch.tensor([0], device=device)  # ... of class 0
    torch.manual_seed(seed)
    model = SoftmaxRegressionModule(n_features=3, n_classes=3).to(device)
    loss_fn = CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    for epoch in range(1, epochs + 1):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if epoch % 10 == 0:
            print(f"epoch {epoch:3d}  loss {loss.item():.6f}")
    probabilities = model.predict_proba(x)[0].cpu().numpy()
    print("final probabilities =", np.round(probabilities, 4))
    print("predicted class =", int(model.predict(x)[0]))


def estimator_part() -> None:
    """``SoftmaxRegression`` on the digits with both backends: the same optimum, NumPy arrays after fit."""
    from softmaxkit.linear_model import SoftmaxRegression

    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    X_train, y_train, X_test, y_test = X[:1400], y[:1400], X[1400:], y[1400:]
    options = {"alpha": 1e-3, "solver": "newton-cg", "tol": 1e-6}
    numpy_model = SoftmaxRegression(**options).fit(X_train, y_train)
    torch_model = SoftmaxRegression(**options, backend="torch", device="auto").fit(X_train, y_train)
    for name, model in (("numpy", numpy_model), ("torch", torch_model)):
        print(
            f"backend={name:5s}  test accuracy {model.score(X_test, y_test):.3f}  "
            f"coef_ is a {type(model.coef_).__module__}.{type(model.coef_).__name__}"
        )
    agree = np.mean(numpy_model.predict(X_test) == torch_model.predict(X_test))
    print(f"the two backends agree on {100 * agree:.1f}% of the test digits")


if __name__ == "__main__":
    np.set_printoptions(precision=8)
    print("== The lesson in NumPy ==")
    numpy_part()
    print()
    print("== Softmax regression in NumPy ==")
    numpy_softmax_regression()
    print()
    try:
        import torch  # noqa: F401
    except ImportError:
        print("(PyTorch is not installed: pip install 'softmaxkit[torch]' for the PyTorch part)")
    else:
        print("== The lesson in PyTorch ==")
        torch_part()
        print()
        print("== SoftmaxRegression, NumPy and torch backends ==")
        estimator_part()
