"""The lesson walk-through runs and prints the lesson's numbers."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_lesson() -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "softmax_lesson.py")],
        capture_output=True, text=True, timeout=300, check=True,
    )
    return result.stdout


def test_lesson_prints_the_original_numbers():
    out = run_lesson()
    assert "softmax([2.0, 1.0, 0.1]) = [0.65900114 0.24243297 0.09856589]" in out
    assert "cross-entropy with true class 0 = 0.4170300162778335\n" in out
    assert "gradient (softmax - one-hot) = [-0.34099886  0.24243297  0.09856589]" in out
    assert "finite-difference check: passed=True" in out
    accuracy = float(out.split("test accuracy")[1].split()[0])
    assert accuracy > 0.93
