"""Market math on decimal odds. Pure functions.

Example::

    >>> round(overround([2.0, 3.5, 4.0]), 4)
    0.0357
"""

from __future__ import annotations

from collections.abc import Iterable


def implied_probability(odds: float) -> float:
    """The probability a decimal price implies, margin included: 1/odds."""
    if not odds > 1.0:
        raise ValueError(f"decimal odds must be greater than 1.0, got {odds}")
    return 1.0 / odds


def overround(prices: Iterable[float]) -> float:
    """The bookmaker's margin in a complete market: sum of implied probabilities minus 1."""
    return sum(implied_probability(p) for p in prices) - 1.0
