"""The multinomial linear loss (softmaxkit.linear_model._loss) against PyTorch float64 and finite differences,
and its preconditioners (_preconditioners) against the explicit Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softmaxkit import cross_entropy
from softmaxkit.linear_model import _loss, _preconditioners

# odd shapes on purpose: samples x features x classes
SHAPES = [(37, 5, 3), (61, 7, 11), (8, 1, 2)]


def _problem(rng, n, d, k, *, soft=False, weighted=False):
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d)
    if soft:
        target = rng.dirichlet(np.ones(k), size=n)
    else:
        target = rng.integers(0, k, size=n)
        target[:k] = np.arange(k)  # every class present
    sw = rng.uniform(0, 3, size=n) if weighted else None
    return X, target, sw


def _torch_objective(coef, X, target, sw, alpha, fit_intercept, label_smoothing=0.0):
    """The objective written independently in PyTorch float64 (materialised logits, library cross-entropy)."""
    X_t = torch.as_tensor(X, dtype=torch.float64)
    d = X.shape[1]
    W = coef[:, :d]
    logits = X_t @ W.T + (coef[:, d] if fit_intercept else 0.0)
    target_t = torch.as_tensor(target)
    if target_t.dtype.is_floating_point:
        target_t = target_t.to(torch.float64)
    per_sample = torch.nn.functional.cross_entropy(logits, target_t, reduction="none", label_smoothing=label_smoothing)
    if sw is None:
        data = per_sample.mean()
    else:
        sw_t = torch.as_tensor(sw, dtype=torch.float64)
        data = (sw_t * per_sample).sum() / sw_t.sum()
    return data + 0.5 * alpha * (W * W).sum()


def _torch_reference(coef, X, target, sw, alpha, fit_intercept, v, label_smoothing=0.0):
    coef_t = torch.as_tensor(coef, dtype=torch.float64).requires_grad_(True)

    def f(c):
        return _torch_objective(c, X, target, sw, alpha, fit_intercept, label_smoothing)

    value = f(coef_t)
    (grad,) = torch.autograd.grad(value, coef_t)
    _, hvp = torch.autograd.functional.hvp(f, coef_t.detach(), torch.as_tensor(v, dtype=torch.float64))
    return value.item(), grad.numpy(), hvp.numpy()


@pytest.mark.parametrize("n,d,k", SHAPES)
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gradient_hvp_match_torch(rng, n, d, k, fit_intercept, soft, weighted):
    X, target, sw = _problem(rng, n, d, k, soft=soft, weighted=weighted)
    coef = rng.normal(size=(k, d + int(fit_intercept)))
    v = rng.normal(size=coef.shape)
    alpha = 0.37
    value, grad, hessp = _loss.loss_gradient_hessp(coef, X, target, sw, alpha, fit_intercept=fit_intercept)
    ref_value, ref_grad, ref_hvp = _torch_reference(coef, X, target, sw, alpha, fit_intercept, v)
    assert value == pytest.approx(ref_value, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(hessp(v.T).T, ref_hvp, rtol=1e-10, atol=1e-13)
    # the three entry points agree exactly with each other
    assert _loss.loss(coef, X, target, sw, alpha, fit_intercept=fit_intercept) == value
    np.testing.assert_array_equal(_loss.gradient(coef, X, target, sw, alpha, fit_intercept=fit_intercept), grad)
    loss2, grad2 = _loss.loss_gradient(coef, X, target, sw, alpha, fit_intercept=fit_intercept)
    assert loss2 == value
    np.testing.assert_array_equal(grad2, grad)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("soft", [False, True])
def test_label_smoothing_matches_cross_entropy(rng, label_smoothing, soft):
    X, target, _ = _problem(rng, 41, 4, 5, soft=soft)
    coef = rng.normal(size=(5, 5))
    logits = X @ coef[:, :4].T + coef[:, 4]
    expected = float(cross_entropy(logits, target, label_smoothing=label_smoothing)) + 0.5 * 0.2 * np.sum(
        coef[:, :4] ** 2
    )
    got, grad = _loss.loss_gradient(coef, X, target, None, 0.2, label_smoothing=label_smoothing)
    assert got == pytest.approx(expected, rel=1e-13)
    v = rng.normal(size=coef.shape)
    _, ref_grad, ref_hvp = _torch_reference(coef, X, target, None, 0.2, True, v, label_smoothing)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)
    _, _, hessp = _loss.loss_gradient_hessp(coef, X, target, None, 0.2, label_smoothing=label_smoothing)
    np.testing.assert_allclose(hessp(v.T).T, ref_hvp, rtol=1e-10, atol=1e-13)


def test_gradient_and_hvp_by_finite_differences(rng):
    """Independent of torch: fourth-order central differences of the loss and of the gradient."""
    X, target, sw = _problem(rng, 53, 6, 4, weighted=True)
    coef = rng.normal(size=(4, 7))
    alpha, h = 0.05, 1e-3
    _, grad, hessp = _loss.loss_gradient_hessp(coef, X, target, sw, alpha)

    def f(c):
        return _loss.loss(c, X, target, sw, alpha)

    numeric = np.zeros_like(coef)
    for idx in np.ndindex(coef.shape):
        e = np.zeros_like(coef)
        e[idx] = h
        numeric[idx] = (-f(coef + 2 * e) + 8 * f(coef + e) - 8 * f(coef - e) + f(coef - 2 * e)) / (12 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-8, atol=1e-10)

    v = rng.normal(size=coef.shape)

    def g(c):
        return _loss.gradient(c, X, target, sw, alpha)

    numeric_hvp = (-g(coef + 2 * h * v) + 8 * g(coef + h * v) - 8 * g(coef - h * v) + g(coef - 2 * h * v)) / (12 * h)
    np.testing.assert_allclose(hessp(v.T).T, numeric_hvp, rtol=1e-7, atol=1e-9)


def test_one_hot_soft_labels_equal_hard_labels(rng):
    X, target, sw = _problem(rng, 29, 3, 4, weighted=True)
    coef = rng.normal(size=(4, 4))
    one_hot = np.eye(4)[target]
    hard = _loss.loss_gradient(coef, X, target, sw, 0.1)
    soft = _loss.loss_gradient(coef, X, one_hot, sw, 0.1)
    assert soft[0] == pytest.approx(hard[0], rel=1e-14)
    np.testing.assert_allclose(soft[1], hard[1], rtol=1e-13, atol=1e-16)


def test_integer_weights_equal_repeated_samples(rng):
    X, target, _ = _problem(rng, 23, 3, 3)
    counts = rng.integers(0, 4, size=23)
    counts[:3] = 1
    coef = rng.normal(size=(3, 4))
    weighted = _loss.loss_gradient(coef, X, target, counts.astype(float), 0.3)
    repeated = _loss.loss_gradient(coef, np.repeat(X, counts, axis=0), np.repeat(target, counts), None, 0.3)
    assert weighted[0] == pytest.approx(repeated[0], rel=1e-13)
    np.testing.assert_allclose(weighted[1], repeated[1], rtol=1e-12, atol=1e-15)


def _explicit_hessian(hessp, shape):
    """The Hessian as a matrix, in the solvers' (feature-major) layout of ``hessp``."""
    size = int(np.prod(shape))
    return np.stack([np.asarray(hessp(np.eye(size)[j])).ravel() for j in range(size)], axis=1)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_hessian_is_symmetric_and_its_diagonal_exact(rng, fit_intercept):
    X, target, sw = _problem(rng, 45, 3, 4, weighted=True)
    coef = rng.normal(size=(4, 3 + int(fit_intercept)))
    _, _, hessp = _loss.loss_gradient_hessp(coef, X, target, sw, 0.2, fit_intercept=fit_intercept)
    H = _explicit_hessian(hessp, coef.shape)
    np.testing.assert_allclose(H, H.T, atol=1e-14)
    np.testing.assert_allclose(np.asarray(hessp.diagonal()).ravel(), np.diag(H), rtol=1e-12)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_full_preconditioner_inverts_the_hessian(rng, fit_intercept):
    X, target, sw = _problem(rng, 45, 3, 4, weighted=True)
    coef = rng.normal(size=(4, 3 + int(fit_intercept)))
    _, _, hessp = _loss.loss_gradient_hessp(coef, X, target, sw, 0.2, fit_intercept=fit_intercept)
    H = _explicit_hessian(hessp, coef.shape)
    solve = hessp.preconditioner("full")
    v = rng.normal(size=H.shape[0])
    if fit_intercept:  # singular along the shared intercept shift: H^-1 is exact on the other directions
        np.testing.assert_allclose(H @ solve(H @ v), H @ v, rtol=1e-7, atol=1e-12)
    else:
        np.testing.assert_allclose(solve(H @ v), v, rtol=1e-7)  # (the ridge of 1e-10 x the mean diagonal)
    # from a subset of the rows (rescaled): the Hessian of those rows, not the exact one
    approx = _preconditioners.full(
        X, hessp.proba(), hessp.weighted_proba, alpha=0.2, fit_intercept=fit_intercept, max_rows=20
    )
    assert not np.allclose(approx(H @ v), solve(H @ v), rtol=1e-3)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_block_preconditioner_inverts_the_class_blocks(rng, fit_intercept):
    X, target, sw = _problem(rng, 45, 3, 4, weighted=True)
    coef = rng.normal(size=(4, 3 + int(fit_intercept)))
    _, _, hessp = _loss.loss_gradient_hessp(coef, X, target, sw, 0.2, fit_intercept=fit_intercept)
    H = _explicit_hessian(hessp, coef.shape)
    blocks = np.zeros_like(H)  # the class blocks of the explicit Hessian, the couplings between classes dropped
    for k in range(4):  # (feature-major: the entries of class k are k, k + 4, k + 8, ...)
        blocks[k::4, k::4] = H[k::4, k::4]
    v = rng.normal(size=H.shape[0])
    solve = hessp.preconditioner("block")
    np.testing.assert_allclose(solve(blocks @ v), v, rtol=1e-7)
    assert not np.allclose(solve(H @ v), v, rtol=1e-2)  # not the inverse of the whole Hessian


def test_the_factorisation_retries_with_a_larger_ridge_from_the_intact_matrix(rng):
    """An indefinite matrix (smallest eigenvalue -1e-9 of the mean diagonal) fails the first ridge, 1e-10, not 1e-7."""
    Q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    eigenvalues = np.geomspace(1.0, 1e3, 30)
    eigenvalues[0] = -1e-9 * eigenvalues.mean()
    matrix = (Q * eigenvalues) @ Q.T
    ridge = np.zeros(30)
    shifted = matrix + 1e-7 * np.trace(matrix) / 30 * np.eye(30)  # the second try's matrix
    solve = _preconditioners._factor(np.asfortranarray(matrix), ridge)
    r = rng.normal(size=30)
    np.testing.assert_allclose(solve(r), np.linalg.solve(shifted, r), rtol=1e-6)
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):
        _preconditioners._factor(-np.eye(5, order="F"), np.zeros(5))


def test_jacobi_divides_by_the_floored_diagonal():
    solve = _preconditioners.jacobi(np.array([[4.0, 0.0], [2.0, 1.0]]))
    np.testing.assert_array_equal(solve(np.array([4.0, 1e-12, 1.0, 3.0])), [1.0, 0.25, 0.5, 3.0])


def test_preconditioner_kinds_and_costs(rng):
    X, target, _ = _problem(rng, 1000, 9, 5)
    _, _, hessp = _loss.loss_gradient_hessp(rng.normal(size=(5, 10)), X, target)
    assert hessp.preconditioner_cost("diagonal") == 0.5
    # 5 classes x 10: the Hessian from min(1000, max(2 * 50, 480 * 1000 // 50)) = 1000 rows:
    # (2 C m s^2 + m P^2 / 2 + P^3 / 3) / (2 n d C + 40 n C) Hessian-vector products
    assert _preconditioners.full_rows(1000, 50) == 1000
    hessp_flops = 2 * 1000 * 9 * 5 + 40 * 1000 * 5
    expected_full = (2 * 5 * 1000 * 100 + 1000 * 50**2 / 2 + 50**3 / 3) / hessp_flops
    assert hessp.preconditioner_cost("full") == pytest.approx(expected_full)
    assert _preconditioners.full_rows(10**6, 1000) == 480_000
    assert _preconditioners.block_rows(1000, 10) == 1000 and _preconditioners.block_rows(10**7, 1001) == 1_598_401
    assert hessp.preconditioner_cost("block") == pytest.approx((2 * 5 * 1000 * 100 + 5 * 1000 / 3) / hessp_flops)
    # the memory rule: no n_params^2 matrix beyond max(2**22 numbers, the entries of X)
    assert _preconditioners.cost("full", n_samples=100, n_features=500, n_classes=10, fit_intercept=True) == np.inf
    assert np.isfinite(_preconditioners.cost("block", n_samples=100, n_features=500, n_classes=10, fit_intercept=True))
    with pytest.raises(ValueError, match="kind must be one of 'diagonal', 'block', 'full', got 'kron'"):
        hessp.preconditioner("kron")
    with pytest.raises(ValueError, match="kind must be one of 'diagonal', 'block', 'full', got 'kron'"):
        hessp.preconditioner_cost("kron")


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_curvature_bound_is_the_largest_eigenvalue_bound(rng, fit_intercept):
    X, target, _ = _problem(rng, 61, 7, 11)
    X_tilde = np.hstack([X, np.ones((61, 1))]) if fit_intercept else X
    bound = _loss.curvature_bound(X, 0.3, fit_intercept=fit_intercept)
    assert bound == pytest.approx(np.linalg.eigvalsh(X_tilde.T @ X_tilde / 61).max() / 2 + 0.3, rel=1e-10)
    for _ in range(3):  # it bounds the Hessian at any point
        coef = 3 * rng.normal(size=(11, X_tilde.shape[1]))
        _, _, hessp = _loss.loss_gradient_hessp(coef, X, target, None, 0.3, fit_intercept=fit_intercept)
        assert np.linalg.eigvalsh(_explicit_hessian(hessp, coef.shape)).max() <= bound


@pytest.mark.parametrize("soft", [False, True])
def test_intercept_only_start_is_the_intercept_only_optimum(rng, soft):
    X, target, sw = _problem(rng, 61, 7, 5, soft=soft, weighted=True)
    b = _loss.intercept_only(target, sw, 5)
    assert b.sum() == pytest.approx(0.0, abs=1e-14)
    coef = np.hstack([np.zeros((5, 7)), b[:, None]])
    grad = _loss.gradient(coef, X, target, sw, 0.1)
    np.testing.assert_allclose(grad[:, -1], 0.0, atol=1e-14)  # the intercept's gradient vanishes
    coef[0, -1] += 1e-3  # one intercept moved: its gradient no longer vanishes (the check can fail)
    assert np.abs(_loss.gradient(coef, X, target, sw, 0.1)[:, -1]).max() > 1e-5


def test_batch_estimate_is_unbiased(rng):
    """Averaged over the batches of an equal partition, the mini-batch estimate is the objective."""
    X, target, sw = _problem(rng, 60, 4, 3, weighted=True)
    sw[:6] = 0.0
    coef = rng.normal(size=(3, 5))
    theta = coef.T  # the solvers' layout, in which batch_loss_gradient works
    calls = []

    def subset(rows, weights):
        calls.append(rows)
        f, g = _loss.loss_gradient(coef, X[rows], target[rows], weights, 0.2)
        return f, g.T.ravel()

    def estimate(rows, sample_weight):
        mean = None if sample_weight is None else sample_weight.mean()
        return _loss.batch_loss_gradient(subset, theta, rows, sample_weight, mean, alpha=0.2, n_features=4)

    batches = np.array_split(rng.permutation(60), 5)
    for sample_weight in (sw, None):
        f, g = _loss.loss_gradient(coef, X, target, sample_weight, 0.2)
        estimates = [estimate(rows, sample_weight) for rows in batches]
        assert np.mean([e[0] for e in estimates]) == pytest.approx(f, rel=1e-13)
        np.testing.assert_allclose(np.mean([e[1] for e in estimates], axis=0), g.T.ravel(), rtol=1e-12, atol=1e-15)
        assert not np.isclose(estimates[0][0], f, rtol=1e-3)  # one batch alone is only an estimate
    calls.clear()
    penalty, penalty_grad = _loss.l2_penalty(theta, 0.2, 4)
    f, g = estimate(np.arange(6), sw)  # zero-weight rows: the penalty alone, no data pass
    assert (f, calls) == (penalty, []) and f == pytest.approx(0.1 * np.sum(coef[:, :4] ** 2), rel=1e-14)
    np.testing.assert_array_equal(g, penalty_grad)
    np.testing.assert_array_equal(penalty_grad.reshape(5, 3), np.vstack([0.2 * theta[:4], np.zeros((1, 3))]))


def test_float32_keeps_working_precision(rng):
    X, target, _ = _problem(rng, 30, 4, 3)
    coef = rng.normal(size=(3, 5))
    value64, grad64 = _loss.loss_gradient(coef, X, target, None, 0.1)
    value32, grad32 = _loss.loss_gradient(coef.astype(np.float32), X.astype(np.float32), target, None, 0.1)
    assert grad32.dtype == np.float32
    assert value32 == pytest.approx(value64, rel=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-5)


def test_errors(rng):
    X, target, _ = _problem(rng, 10, 3, 2)
    with pytest.raises(ValueError, match=r"coef must have shape \(n_classes, 4\)"):
        _loss.loss(np.zeros((2, 3)), X, target)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(10,\)"):
        _loss.loss(np.zeros((2, 4)), X, target, np.ones(9))
    with pytest.raises(ValueError, match="sample_weight must have a positive sum"):
        _loss.loss(np.zeros((2, 4)), X, target, np.zeros(10))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("soft", [False, True])
def test_the_fused_row_kernel_equals_its_numpy_path(rng, dtype, soft):
    """The one cross-entropy call (the compiled kernel above 2**16 entries) against the NumPy reference path."""
    m, k = 20_000, 7  # 140,000 entries: the compiled path
    z = (3 * rng.normal(size=(m, k))).astype(dtype)
    target = rng.dirichlet(np.ones(k), size=m) if soft else rng.integers(0, k, size=m)
    weights = rng.uniform(0, 2, size=m)
    weights[::17] = 0.0  # absent samples: zero rows, zero terms
    weights = (weights / weights.sum()).astype(dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for label_smoothing in (0.0, 0.2):
        kernel, reference = z.copy(), z.copy()
        on = {
            e: _loss._cross_entropy_rows(target, weights, label_smoothing, n_classes=k, dtype=dtype, engine=e)
            for e in ("kernel", "numpy")
        }
        value, expected = on["kernel"](kernel), on["numpy"](reference)
        assert value == pytest.approx(expected, rel=rtol)
        np.testing.assert_allclose(kernel, reference, rtol=rtol, atol=rtol * np.abs(reference).max())
        assert not kernel[::17].any()


def test_the_linear_loss_on_the_numpy_path_equals_the_kernel(rng, monkeypatch):
    X, target, sw = _problem(rng, 12_000, 9, 6, soft=False, weighted=True)  # 72,000 logits: the compiled path
    coef = rng.normal(size=(6, 10))
    value, grad = _loss.loss_gradient(coef, X, target, sw, 0.1)
    numpy_path = _loss.WeightedRows

    def on_numpy(*args, **options):
        return numpy_path(*args, **{**options, "engine": "numpy"})

    monkeypatch.setattr(_loss, "WeightedRows", on_numpy)
    ref_value, ref_grad = _loss.loss_gradient(coef, X, target, sw, 0.1)
    assert value == pytest.approx(ref_value, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)
