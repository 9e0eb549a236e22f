"""A market's prices in a window, across bookmakers: books, de-vig, consensus, steam. Pure.

The window aggregate is each (bookmaker, selection)'s :class:`~streams.analytics.PriceStats`,
so it is order-insensitive like them. A bookmaker's book counts as *complete* when it
quoted, within the window, every selection anyone quoted in it (and at least two):
only complete books get an overround and de-vigged probabilities, and only they enter
the consensus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streams.analytics import Price, PriceAggregator, PriceStats
from streams.market import fair_price, fair_probabilities, is_steam_move, overround

Book = dict[tuple[str, str], PriceStats]  # (bookmaker, selection) -> prices in the window
_PRICES = PriceAggregator()


@dataclass(frozen=True)
class Quote:
    bookmaker: str
    selection_id: str
    price: Price


class BookAggregator:
    def zero(self) -> Book:
        return {}

    def add(self, agg: Book, value: Quote, event_ms: int) -> Book:
        key = (value.bookmaker, value.selection_id)
        book = dict(agg)
        book[key] = _PRICES.add(agg.get(key) or _PRICES.zero(), value.price, event_ms)
        return book


def across_bookmakers(book: Book) -> dict[str, PriceStats]:
    """Open/high/low/last per selection over every bookmaker's prices."""
    merged: dict[str, PriceStats] = {}
    for (_, selection), stats in sorted(book.items()):
        seen = merged.get(selection)
        if seen is None:
            merged[selection] = stats
            continue
        assert seen.first and seen.last and stats.first and stats.last
        merged[selection] = PriceStats(
            first=min(seen.first, stats.first, key=lambda p: p.stamp),
            last=max(seen.last, stats.last, key=lambda p: p.stamp),
            high=max(seen.high, stats.high),
            low=min(seen.low, stats.low),
            changes=seen.changes + stats.changes,
        )
    return merged


def complete_books(book: Book) -> dict[str, dict[str, float]]:
    """bookmaker -> selection -> last price, for the books that quote every selection seen."""
    selections = {s for _, s in book}
    by_bookmaker: dict[str, dict[str, float]] = {}
    for (bookmaker, selection), stats in book.items():
        assert stats.last is not None
        by_bookmaker.setdefault(bookmaker, {})[selection] = stats.last.odds
    if len(selections) < 2:
        return {}
    return {b: prices for b, prices in sorted(by_bookmaker.items()) if set(prices) == selections}


def book_record(book: Book, final: bool) -> dict[str, object]:
    """The OddsWindowUpdated fields computed from a window's book.

    De-vigging (Shin solves an equation per book) runs for the final result only; current
    updates carry the prices across bookmakers and leave ``bookmakers``/``consensus`` empty.
    """
    selections = across_bookmakers(book)
    lasts = {s: stats.last.odds for s, stats in selections.items() if stats.last}
    books = complete_books(book) if final else {}
    bookmakers = []
    sums: dict[str, float] = {}
    for bookmaker, prices in books.items():
        names = sorted(prices)
        odds = [prices[s] for s in names]
        normalised = fair_probabilities(odds, "normalise")
        shin = fair_probabilities(odds, "shin")
        for s, p in zip(names, normalised, strict=True):
            sums[s] = sums.get(s, 0.0) + p
        bookmakers.append(
            {
                "bookmaker": bookmaker,
                "overround": overround(odds),
                "prices": [
                    {
                        "selection_id": s,
                        "last": d,
                        "implied_probability": 1.0 / d,
                        "fair_probability": n,
                        "shin_probability": z,
                    }
                    for s, d, n, z in zip(names, odds, normalised, shin, strict=True)
                ],
            }
        )
    consensus = []
    for selection in sorted(sums):  # empty unless some book is complete
        probability = sums[selection] / len(books)
        moves = {
            b: (stats.last.odds / stats.first.odds - 1.0) * 100.0
            for (b, s), stats in book.items()
            if s == selection and stats.first and stats.last
        }
        consensus.append(
            {
                "selection_id": selection,
                "probability": probability,
                "fair_price": fair_price(probability),
                "books": len(books),
                "steam": is_steam_move(moves),
            }
        )
    return {
        "selections": [
            {
                "selection_id": s,
                "open": stats.first.odds if stats.first else math.nan,
                "high": stats.high,
                "low": stats.low,
                "last": stats.last.odds if stats.last else math.nan,
                "changes": stats.changes,
                "implied_probability": stats.implied_probability,
            }
            for s, stats in sorted(selections.items())
        ],
        "overround": overround(lasts.values()) if len(lasts) >= 2 else None,
        "bookmakers": bookmakers,
        "consensus": consensus,
    }
