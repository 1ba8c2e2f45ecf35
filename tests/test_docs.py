"""The documentation pages cannot rot: their commands run, their files exist.

The ``>>>`` examples of ``docs/*.md`` run as doctests (pytest's ``--doctest-glob`` in pyproject.toml);
this module runs every ``$ softmaxkit ...`` line of ``docs/cli.md``, in order, in one temporary folder
(with the ``iris.csv`` the page names), and checks that each succeeds and writes what it says.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from sklearn.datasets import load_iris

from softmaxkit.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMMAND = re.compile(r"^\$ softmaxkit (.+)$", re.M)


def _cli_commands() -> list[str]:
    return COMMAND.findall((DOCS / "cli.md").read_text())


def test_the_cli_page_has_commands():
    assert len(_cli_commands()) >= 4


def test_every_command_of_the_cli_page_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("pandas")
    iris = load_iris(as_frame=True).frame  # the bundled dataset's feature names, the target last
    iris.to_csv(tmp_path / "iris.csv", index=False)
    monkeypatch.chdir(tmp_path)
    for command in _cli_commands():
        assert main(shlex.split(command)) == 0, command
    assert (tmp_path / "run" / "model.npz").is_file()
    predictions = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(predictions) == len(iris) + 1  # a header, then one line per row
    assert "accuracy" in capsys.readouterr().out


def test_the_included_files_exist():
    """Every ``{include}`` of a page names a file that is there (Sphinx would fail on it in CI too)."""
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"```\{include\} (\S+)", page.read_text()):
            assert (page.parent / target).is_file(), (page.name, target)
