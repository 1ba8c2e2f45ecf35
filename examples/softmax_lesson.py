"""The classic softmax lesson, end to end, with softmaxkit.

1. a numerically stable softmax of three logits;
2. the cross-entropy of a one-hot target, and its gradient: softmax minus one-hot;
3. a check of that gradient by finite differences;
4. a softmax-regression model (a linear layer trained with cross-entropy) in NumPy,
   by plain gradient descent on scikit-learn's handwritten digits.

Run it with ``python examples/softmax_lesson.py``.
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


if __name__ == "__main__":
    np.set_printoptions(precision=8)
    print("== The lesson in NumPy ==")
    numpy_part()
    print()
    print("== Softmax regression in NumPy ==")
    numpy_softmax_regression()
