"""The package as users see it (what ``import softmaxkit`` pulls in, the public names, the version)
and as its developers keep it (no import cycle, no file past 600 lines without a stated reason, one
atomic writer, NumPy tests that run without PyTorch).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from collections import deque
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import softmaxkit

SRC = Path(softmaxkit.__file__).resolve().parent
REPO_ROOT = Path(__file__).resolve().parents[1]


def _modules_after_import(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(result.stdout.split())


def test_import_pulls_in_neither_torch_nor_matplotlib_nor_numba():
    """numba is a core dependency, imported (and the kernels compiled or loaded) on first use only."""
    modules = _modules_after_import("import softmaxkit")
    heavy = sorted(m for m in modules if m.split(".")[0] in {"torch", "matplotlib", "triton", "numba", "llvmlite"})
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


# --------------------------------------------------------------------------- the import graph


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (both dotted module names) at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int


def _module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package in ``root`` (its folder), by dotted name (a package by its own name)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _runtime_imports(tree: ast.Module):
    """The Import / ImportFrom nodes that run: at module level or inside functions (lazy imports are a
    dependency too), but not under ``if TYPE_CHECKING:``, which never runs."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path, package: str) -> list[Edge]:
    """The import edges among the modules of ``package`` (folder ``root``), read from the sources with ``ast``.

    * ``import a.b.c`` is an edge to ``a.b.c``; absolute and relative imports are resolved.
    * ``from a.b import c`` is an edge to the submodule ``a.b.c`` when there is one, else to ``a.b``
      (whose ``__init__`` must then run to hand over the name ``c``).
    * The parent packages that Python initialises on the way are not edges: they are in
      ``sys.modules`` (if only partly initialised) before their submodules run, so they cannot
      close a circle by themselves.
    * Imports inside functions count (a circle that closes at call time is still a circle between two
      modules' jobs); imports under ``if TYPE_CHECKING:`` do not (they never run).
    * A package ``__init__`` importing its own submodules (to re-export their names) is not an edge:
      the ``__init__`` is only the package's front door. So a module may use its own package's public
      names (``import softmaxkit.torch as skt`` inside a function of ``softmaxkit.torch._model``)
      without that being reported as a circle.
    """
    modules = _module_names(root, package)
    edges = []
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _runtime_imports(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = source.split(".") if is_package else source.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    submodule = f"{module}.{alias.name}"
                    targets.append(submodule if submodule in modules else module)
            for target in targets:
                if target not in modules or target == source:
                    continue
                if is_package and target.startswith(source + "."):
                    continue  # the front door re-exporting its own rooms
                edges.append(Edge(source, target, path, node.lineno))
    return edges


def import_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """The circles of ``edges``: from each module, the shortest way back to it (breadth-first), once per
    set of modules."""
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    cycles, seen = [], set()
    for start in sorted(graph):
        path = _shortest_way_back(graph, start)
        if path is not None and frozenset(path) not in seen:
            seen.add(frozenset(path))
            cycles.append([graph[a][b] for a, b in zip(path, [*path[1:], start])])
    return cycles


def _shortest_way_back(graph: dict[str, dict[str, Edge]], start: str) -> list[str] | None:
    """``[start, ..., last]`` where ``last`` imports ``start``, by the fewest imports; None if there is none."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph.get(node, ())):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if successor not in parent:
                parent[successor] = node
                queue.append(successor)
    return None


def describe(cycle: list[Edge]) -> str:
    """``a -> b -> a`` and where each import is."""
    names = " -> ".join([edge.source for edge in cycle] + [cycle[0].source])
    where = "; ".join(f"{edge.source} imports {edge.target} at {edge.path.name}:{edge.line}" for edge in cycle)
    return f"{names} ({where})"


def test_no_import_cycle():
    cycles = import_cycles(import_graph(SRC, "softmaxkit"))
    assert cycles == [], "import cycles:\n" + "\n".join(describe(c) for c in cycles)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_the_cycle_check_finds_a_circle_of_any_kind(tmp_path):
    """The test of the test: absolute, relative, submodule-by-from and lazy imports all close circles."""
    package = _write_package(
        tmp_path / "fake",
        {
            "__init__.py": "from fake.a import thing\n",
            "a.py": "from fake import b\nthing = 1\n",  # from-import of a submodule: an edge to fake.b
            "b.py": "def later():\n    from .sub import c\n",  # lazy and relative
            "sub/__init__.py": "",
            "sub/c.py": "import fake.a\n",  # absolute
            "d.py": "from . import e\n",
            "e.py": "from .d import nothing\n",  # relative, a name from fake.d
        },
    )
    edges = import_graph(package, "fake")
    cycles = [describe(c) for c in import_cycles(edges)]
    assert len(cycles) == 2, cycles
    assert cycles[0].startswith("fake.a -> fake.b -> fake.sub.c -> fake.a (")
    assert "fake.b imports fake.sub.c at b.py:2" in cycles[0]
    assert cycles[1].startswith("fake.d -> fake.e -> fake.d (")


def test_the_cycle_check_lets_a_package_re_export_and_ignores_type_checking(tmp_path):
    package = _write_package(
        tmp_path / "fake",
        {
            "__init__.py": "from fake.a import one\nfrom fake.b import two\n",  # re-exports: not edges
            "a.py": "one = 1\ndef f():\n    from fake import two\n",  # a public name via the front door
            "b.py": (
                "from typing import TYPE_CHECKING\nfrom fake.a import one\ntwo = 2\n"
                "if TYPE_CHECKING:\n    from fake.c import Three\n"
            ),
            "c.py": "from fake.b import two\nclass Three: ...\n",
        },
    )
    edges = import_graph(package, "fake")
    assert {(e.source, e.target) for e in edges} == {("fake.a", "fake"), ("fake.b", "fake.a"), ("fake.c", "fake.b")}
    assert import_cycles(edges) == []


def test_the_real_graph_is_read():
    """The graph of softmaxkit itself has the edges one can see in its sources (the check is not vacuous)."""
    edges = {(e.source, e.target) for e in import_graph(SRC, "softmaxkit")}
    assert ("softmaxkit._model_io", "softmaxkit._atomic") in edges
    assert ("softmaxkit.cli._train", "softmaxkit.cli._plots") in edges  # lazy, inside a function
    assert ("softmaxkit.cli._evaluate", "softmaxkit.cli._plots") in edges  # `from softmaxkit.cli import _plots`
    assert ("softmaxkit.torch", "softmaxkit.torch._ops") not in edges  # a re-export


# --------------------------------------------------------------------------- file length

MAX_LINES = 600
LONG_FILE_REASON = "Longer than 600 lines because"
"""A line of a file's opening docstring or comment that starts with this phrase lets it be longer."""


def _states_a_reason(text: str) -> bool:
    """Whether the opening docstring, or the comment lines before any code, has a line starting with
    :data:`LONG_FILE_REASON`."""
    docstring = ast.get_docstring(ast.parse(text)) or ""
    opening_comment = []
    for line in text.splitlines():
        if not line.strip().startswith("#"):
            break
        opening_comment.append(line.strip().lstrip("#").strip())
    return any(line.strip().startswith(LONG_FILE_REASON) for line in docstring.splitlines() + opening_comment)


def long_files(root: Path) -> list[str]:
    """The ``.py`` files under ``root`` longer than :data:`MAX_LINES` lines without a stated reason."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        n_lines = len(text.splitlines())
        if n_lines > MAX_LINES and not _states_a_reason(text):
            found.append(f"{path.relative_to(root)} ({n_lines} lines)")
    return found


def test_no_long_source_file():
    found = long_files(SRC)
    assert found == [], f"over {MAX_LINES} lines with no '{LONG_FILE_REASON} ...' in the opening docstring: {found}"


def test_the_length_check_counts_lines_and_reads_only_the_opening(tmp_path):
    body = "x = 1\n" * 600
    files = {
        "exactly.py": '"""Fine."""\n' + "x = 1\n" * 599,
        "long.py": '"""No reason given."""\n' + body,
        "docstring.py": '"""Tables.\n\nLonger than 600 lines because the tables are data.\n"""\n' + body,
        "comment.py": "# A generated file.\n# Longer than 600 lines because it is generated.\n" + body,
        "late.py": '"""No reason here."""\n' + body + "# Longer than 600 lines because too late.\n",
        "sub/deep.py": body + "y = 2\n",
    }
    _write_package(tmp_path, files)
    assert long_files(tmp_path) == ["late.py (602 lines)", "long.py (601 lines)", f"sub{os.sep}deep.py (601 lines)"]


# --------------------------------------------------------------------------- one atomic writer

_FILE_MOVES = {("os", "replace"), ("os", "rename"), ("os", "link"), ("os", "umask"), ("tempfile", "mkstemp")}


def file_moves(root: Path) -> list[str]:
    """Calls of the temporary-file-and-rename primitives (``os.replace``, ``os.rename``, ``os.link``,
    ``os.umask``, ``tempfile.mkstemp``) outside ``_atomic.py``: each is a second atomic writer."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "_atomic.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in _FILE_MOVES
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_one_atomic_writer():
    assert file_moves(SRC) == [], "write files with softmaxkit._atomic.atomic_write / atomic_path"


def test_the_atomic_writer_check_sees_a_second_writer(tmp_path):
    _write_package(
        tmp_path, {"_atomic.py": "import os\nos.replace\n", "w.py": "import os, tempfile\ntempfile.mkstemp()\n"}
    )
    assert file_moves(tmp_path) == ["w.py:2 tempfile.mkstemp"]


# --------------------------------------------------------------------------- NumPy tests without torch

# The test files of the NumPy functions and of the oracle: each must run where PyTorch is not installed,
# skipping (with a reason) only its torch-parity steps.
NUMPY_TEST_FILES = [
    "test_softmax.py",
    "test_cross_entropy.py",
    "test_gradcheck.py",
    "test_reference.py",
    "test_validation.py",
]


def test_the_numpy_tests_run_without_torch():
    """PyTorch made unimportable (``sys.modules["torch"] = None``, as where it is not installed)."""
    code = "import sys\nsys.modules['torch'] = None\nimport pytest\nsys.exit(pytest.main(sys.argv[1:]))\n"
    files = [str(REPO_ROOT / "tests" / name) for name in NUMPY_TEST_FILES]
    result = subprocess.run(
        [sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-rs", *files],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 100, summary  # the NumPy checks ran, not only skips
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped and all("PyTorch parity needs PyTorch" in line for line in skipped), skipped
