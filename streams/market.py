"""Market math on decimal odds. Pure functions, no I/O.

Conventions: ``odds`` are European decimal prices (> 1.0); a "book" is the prices of
every selection of one market from one bookmaker; probabilities are floats in [0, 1].

Example::

    >>> round(overround([2.0, 3.5, 4.0]), 4)
    0.0357
    >>> [round(p, 4) for p in fair_probabilities([1.9, 1.9])]
    [0.5, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

DevigMethod = Literal["normalise", "power", "shin"]
_BISECTION_STEPS = 200


def implied_probability(odds: float) -> float:
    """The probability a decimal price implies, margin included: 1/odds."""
    if not odds > 1.0 or not math.isfinite(odds):
        raise ValueError(f"decimal odds must be a finite number greater than 1.0, got {odds}")
    return 1.0 / odds


def overround(prices: Iterable[float]) -> float:
    """The bookmaker's margin in a complete market: sum of implied probabilities minus 1."""
    return sum(implied_probability(p) for p in prices) - 1.0


def fair_probabilities(prices: Sequence[float], method: DevigMethod = "normalise") -> list[float]:
    """Remove the margin from a complete book; the result sums to 1.

    * ``normalise``: divide each implied probability by their sum (margin spread in
      proportion to probability).
    * ``power``: find k with sum (1/d_i)^k = 1 (more margin on long shots).
    * ``shin``: Shin's model of insider trading; solves for the insider share z.
    """
    if len(prices) < 2:
        raise ValueError("a book needs at least two selections")
    implied = [implied_probability(p) for p in prices]
    total = sum(implied)
    if method == "normalise":
        return [q / total for q in implied]
    if method == "power":
        if total <= 1.0:
            return [q / total for q in implied]  # no margin to remove: nothing to solve
        k = _solve_increasing(lambda k: 1.0 - sum(q**k for q in implied), 1.0, 100.0)
        return [q**k for q in implied]
    if method == "shin":
        if total <= 1.0:
            return [q / total for q in implied]
        z = _solve_increasing(lambda z: 1.0 - sum(_shin(q, total, z) for q in implied), 0.0, 0.999)
        return [_shin(q, total, z) for q in implied]
    raise ValueError(f"unknown de-vig method {method!r}")


def _shin(q: float, total: float, z: float) -> float:
    return (math.sqrt(z * z + 4.0 * (1.0 - z) * q * q / total) - z) / (2.0 * (1.0 - z))


def _solve_increasing(f: Callable[[float], float], low: float, high: float) -> float:
    """Root of an increasing function on [low, high] by bisection (deterministic, no tolerance games)."""
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2.0
        if f(middle) < 0.0:
            low = middle
        else:
            high = middle
        if high - low <= 1e-15:
            break
    return (low + high) / 2.0


def consensus_probabilities(
    books: Mapping[str, Mapping[str, float]], method: DevigMethod = "normalise"
) -> dict[str, float]:
    """Fair probability per selection across bookmakers: mean of each complete book's fair
    probabilities, renormalised. Books missing a selection that others quote are left out.

    ``books`` is bookmaker -> selection -> decimal odds.
    """
    selections = sorted({s for book in books.values() for s in book})
    complete = [book for book in books.values() if set(book) == set(selections)]
    if not complete:
        raise ValueError("no bookmaker quotes every selection")
    sums = dict.fromkeys(selections, 0.0)
    for book in complete:
        for selection, p in zip(
            selections, fair_probabilities([book[s] for s in selections], method), strict=True
        ):
            sums[selection] += p
    total = sum(sums.values())
    return {s: v / total for s, v in sums.items()}


def fair_price(probability: float) -> float:
    """Decimal odds with no margin for a probability."""
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"probability must be in (0, 1], got {probability}")
    return 1.0 / probability


def liabilities(bets: Iterable[tuple[str, float, float]], selections: Iterable[str] = ()) -> dict[str, float]:
    """Operator's net payout if each selection wins, from (selection, stake, odds) bets.

    Net payout if s wins = sum(stake * odds of bets on s) - all stakes taken on the market.
    Positive means the operator loses that much. Selections with no bets are included
    when named in ``selections`` (their liability is minus the whole handle).
    """
    handle = 0.0
    payouts: dict[str, float] = dict.fromkeys(selections, 0.0)
    for selection, stake, odds in bets:
        handle += stake
        payouts[selection] = payouts.get(selection, 0.0) + stake * odds
    return {s: payout - handle for s, payout in payouts.items()}


def worst_case_liability(by_selection: Mapping[str, float]) -> float:
    """The largest net payout over the outcomes (the market's worst case for the operator)."""
    return max(by_selection.values()) if by_selection else 0.0


def money_shares(stakes: Mapping[str, float]) -> dict[str, float]:
    """Share of the money on each selection."""
    total = sum(stakes.values())
    return {s: (v / total if total else 0.0) for s, v in stakes.items()}


def closing_line_value(odds_taken: float, closing_odds: float) -> float:
    """CLV of a bet: odds taken over the closing price, minus 1 (> 0 beat the close)."""
    return implied_probability(closing_odds) / implied_probability(odds_taken) - 1.0


def velocity_per_minute(first_price: float, last_price: float, first_ms: int, last_ms: int) -> float:
    """Percent change of a price per minute of event time (0 for a single instant)."""
    if last_ms <= first_ms:
        return 0.0
    return (last_price - first_price) / first_price * 100.0 * 60_000.0 / (last_ms - first_ms)


def is_steam_move(moves: Mapping[str, float], min_bookmakers: int = 3, min_move_pct: float = 3.0) -> int:
    """+1 (shortening) or -1 (drifting) when at least ``min_bookmakers`` moved the same
    selection the same way by at least ``min_move_pct`` percent; 0 otherwise.

    ``moves`` is bookmaker -> percent price change over the same short interval.
    """
    shortened = sum(1 for m in moves.values() if m <= -min_move_pct)
    drifted = sum(1 for m in moves.values() if m >= min_move_pct)
    if shortened >= min_bookmakers and shortened > drifted:
        return 1
    if drifted >= min_bookmakers and drifted > shortened:
        return -1
    return 0
