"""The lesson walk-through runs and prints the lesson's numbers."""

import functools
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One BLAS / OpenMP thread: the example's arrays are small, and the suite runs beside other work.
SINGLE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run() -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "softmax_lesson.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=SINGLE_THREAD,
    )
    return result.stdout


@functools.cache
def run_lesson() -> str:
    return _run()


def test_lesson_prints_the_original_numbers():
    out = run_lesson()
    assert "softmax([2.0, 1.0, 0.1]) = [0.65900114 0.24243297 0.09856589]" in out
    assert "cross-entropy with true class 0 = 0.4170300162778335\n" in out
    assert "gradient (softmax - one-hot) = [-0.34099886  0.24243297  0.09856589]" in out
    assert "finite-difference check: passed=True" in out
    accuracy = float(out.split("test accuracy")[1].split()[0])
    assert accuracy > 0.93


def test_lesson_pytorch_part_learns_class_0_and_repeats():
    pytest.importorskip("torch", reason="the lesson's PyTorch part needs PyTorch (the torch extra)")
    out = run_lesson()
    torch_part = out.split("== The lesson in PyTorch ==\n")[1].split("\n\n")[0].splitlines()
    assert torch_part[0] in ("device: cpu", "device: cuda", "device: mps")
    epochs = [line for line in torch_part if line.startswith("epoch")]
    assert [int(line.split()[1]) for line in epochs] == list(range(10, 101, 10))  # the loss every 10 epochs
    losses = [float(line.split("loss")[1]) for line in epochs]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))  # falling
    assert losses[-1] < 0.05
    probabilities = [float(p) for p in torch_part[-2].split("[")[1].rstrip("]").split()]
    assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 1e-3 and probabilities[0] > 0.9
    assert torch_part[-1] == "predicted class = 0"
    # The seed is set before the model is created: a second run prints exactly the same lines.
    assert _run() == out


def test_lesson_estimator_part_backends_agree():
    pytest.importorskip("torch", reason="the torch backend needs PyTorch (the torch extra)")
    out = run_lesson()
    part = out.split("== SoftmaxRegression, NumPy and torch backends ==\n")[1]
    accuracies = [float(line.split("test accuracy")[1].split()[0]) for line in part.splitlines()[:2]]
    assert accuracies[0] == accuracies[1] > 0.88
    assert part.count("coef_ is a numpy.ndarray") == 2
    assert "the two backends agree on 100.0% of the test digits" in part
