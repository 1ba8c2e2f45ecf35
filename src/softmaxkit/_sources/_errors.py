"""The error type of data sources and the two helpers that keep their messages short.

:class:`DataError` is a :class:`ValueError` (a user's data, not a bug) whose message names the file
and, where it is known, the row; :func:`short_list` and :func:`one_line` keep a message on one line.
"""

from __future__ import annotations

from collections.abc import Sequence


class DataError(ValueError):
    """A problem with a user's data file, described in one line."""


def short_list(names: Sequence[object], limit: int = 8) -> str:
    """The first ``limit`` names, quoted, for a message.

    >>> short_list(["a", "b", "c"], 2)
    "'a', 'b' (and 1 more)"
    """
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def one_line(error: BaseException) -> str:
    """A library's error message on one line of at most 200 characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."
