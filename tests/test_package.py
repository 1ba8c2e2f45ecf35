"""The package as users see it: what ``import softmaxkit`` pulls in, the public names, the version."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import softmaxkit

SRC = Path(softmaxkit.__file__).resolve().parent


def _modules_after_import(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(result.stdout.split())


def test_import_pulls_in_neither_torch_nor_matplotlib():
    modules = _modules_after_import("import softmaxkit")
    heavy = sorted(m for m in modules if m.split(".")[0] in {"torch", "matplotlib", "triton"})
    assert heavy == [], f"import softmaxkit imported {heavy}"
    assert "softmaxkit" in modules  # the probe itself worked


def test_import_works_without_the_optional_extras():
    """A core-only install (numpy, scipy, scikit-learn) can import the package: the extras are blocked here."""
    blocked = ("torch", "matplotlib", "triton", "pandas", "pyarrow")
    block = (
        "import importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import softmaxkit"
    )
    modules = _modules_after_import(block)
    assert "softmaxkit" in modules
    assert not any(m.split(".")[0] in blocked for m in modules)


def test_public_names():
    expected = {
        "softmax",
        "log_softmax",
        "logsumexp",
        "softmax_backward",
        "log_softmax_backward",
        "cross_entropy",
        "nll_loss",
        "cross_entropy_backward",
        "cross_entropy_with_grad",
        "nll_loss_backward",
        "gradcheck",
        "GradcheckResult",
    }
    assert expected <= set(softmaxkit.__all__)
    for name in softmaxkit.__all__:
        assert hasattr(softmaxkit, name), name
        obj = getattr(softmaxkit, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_version_matches_the_installed_metadata():
    assert softmaxkit.__version__ == metadata.version("softmaxkit")


def test_package_never_refers_to_the_shared_datasets():
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "shared/datasets" in path.read_text(encoding="utf-8")
        or 'shared" / "datasets' in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
