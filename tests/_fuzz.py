"""Budgets of the property-based tests: a fraction of the loaded hypothesis profile's (see conftest.py).

A NumPy call costs microseconds, a fit or a killed subprocess a good part of a second, so the
expensive tests ask for ``budget(fraction, minimum=...)`` examples: the same share of the normal
suite's small budget and of ``make fuzz``'s large one.
"""

from __future__ import annotations

from hypothesis import settings


def budget(fraction: float, *, minimum: int = 1) -> settings:
    """Settings with ``fraction`` of the current profile's ``max_examples`` (at least ``minimum``)."""
    return settings(max_examples=max(minimum, round(settings().max_examples * fraction)))
