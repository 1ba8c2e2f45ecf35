#!/usr/bin/env bash
# Build the sdist, install it (not editable) with its test extra into a fresh environment, and run the
# test suite from the unpacked sdist: proof that the sdist carries what pytest needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip build
"$work/venv/bin/python" -m build --sdist --outdir "$work/dist" . >/dev/null
sdist=$(ls "$work"/dist/softmaxkit-*.tar.gz)
tar -xzf "$sdist" -C "$work"
tree=$(ls -d "$work"/softmaxkit-*/)
"$work/venv/bin/python" -m pip install --quiet "$sdist[test]"
# The unpacked tree's src/ must not shadow the installed package: run from the tree, import from site-packages.
rm -rf "$tree/src"
cd "$tree"
"$work/venv/bin/python" -m pytest -n 2 -m "not slow" -p no:cacheprovider -q -o testpaths=tests "$@"
# ... and the doctests, from the installed package.
"$work/venv/bin/python" -m pytest -p no:cacheprovider -q --pyargs softmaxkit
