"""Sphinx configuration of softmaxkit's documentation site (`make docs`).

Sphinx rather than MkDocs because the docstrings are numpydoc, that is reStructuredText with
``:math:`` roles and ``.. math::`` blocks: Sphinx and numpydoc render them as written, where
mkdocstrings would show the markup. The hand-written pages are Markdown (MyST), so they read the
same on GitHub; their ``>>>`` examples run in ``make test`` (pytest's ``--doctest-glob``).
"""

from softmaxkit import __version__

project = "softmaxkit"
author = "The softmaxkit developers"
copyright = "2026, The softmaxkit developers"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "images/README*"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# numpydoc: one entry per public object on its page; no autosummary stubs to keep in git.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
autodoc_typehints = "none"  # the numpydoc "Parameters" section says the types, once
autodoc_member_order = "bysource"

# Links to the libraries the docstrings name, resolved offline-tolerantly: a missing inventory is a
# warning, so the CI build (warnings as errors) would fail without the network; keep it empty there.
intersphinx_mapping: dict[str, tuple[str, None]] = {}

html_theme = "pydata_sphinx_theme"
html_title = f"softmaxkit {version}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []
