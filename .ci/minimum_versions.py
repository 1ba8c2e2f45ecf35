"""Print the declared dependency floors of pyproject.toml as exact pins (a pip constraints file).

``python .ci/minimum_versions.py > constraints.txt`` turns every ``name>=X`` of the core dependencies and
of the ``test`` extra into ``name==X`` (exact pins such as ``torch==2.13.0`` stay as they are), so that
``pip install -c constraints.txt -e ".[test]"`` builds the oldest environment we claim to support.
``--check`` instead compares the versions installed in the running interpreter with those pins and
exits 1 on any difference, so a floor that pip could not honour is not silently tested as a newer one.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(>=|==)\s*([0-9][^,;\s]*)\s*(;.*)?$")


def pins() -> list[tuple[str, str, str]]:
    """``(name, version, marker)`` for every floor or exact pin of the core and the test extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    out = []
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"requirement must be 'name>=X' or 'name==X' (optionally '; marker'), got {requirement!r}")
        name, _, version, marker = match.groups()
        out.append((name, version, (marker or "").lstrip("; ").strip()))
    return out


def _marker_applies(marker: str) -> bool:
    if not marker:
        return True
    from packaging.markers import Marker  # pip, setuptools and our test extra all bring packaging

    return Marker(marker).evaluate()


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        from packaging.version import Version

        wrong = []
        for name, version, marker in pins():
            if not _marker_applies(marker):
                continue
            installed = metadata.version(name)
            if Version(Version(installed).base_version) != Version(version):  # 1.24.0 == 1.24; +cpu ignored
                wrong.append(f"{name}: installed {installed}, floor {version}")
        for line in wrong:
            print(line, file=sys.stderr)
        print(f"{len(pins()) - len(wrong)} pinned floors installed, {len(wrong)} wrong")
        return 1 if wrong else 0
    if argv:
        raise SystemExit("usage: minimum_versions.py [--check]")
    for name, version, marker in pins():
        print(f"{name}=={version}" + (f"; {marker}" if marker else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
