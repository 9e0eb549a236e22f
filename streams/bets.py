"""The open bets of one partition: what a settlement, cancellation or cash-out closes. Pure.

A bet and its close are keyed by its market, so both reach the same partition, normally
bet first. The first close of a bet is the one that counts (a cancellation after a
settlement changes nothing). A close that arrives before its bet (out of order) is
remembered for the retention's ``late_ms`` of event time, and the bet is closed by it the
moment it arrives: it is never open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from streams.analytics import Stake

CloseKind = Literal["settled", "cancelled", "cashed_out"]


@dataclass(frozen=True)
class Close:
    """A bet's close: how, when (event time), and the cents paid for a cash-out."""

    kind: CloseKind
    event_ms: int
    paid_cents: int = 0


@dataclass
class BetBook:
    open: dict[str, dict[str, Stake]] = field(default_factory=dict)  # market -> bet_id -> bet
    closed_first: dict[tuple[str, str], Close] = field(default_factory=dict)  # (market, bet_id)
    seen: dict[str, int] = field(default_factory=dict)  # market -> newest bet event time

    def place(self, market: str, bet_id: str, bet: Stake, event_ms: int) -> Close | None:
        """Open ``bet``; if its close came first, return that close instead (the bet stays shut)."""
        self._saw(market, event_ms)
        close = self.closed_first.pop((market, bet_id), None)
        if close is None:
            self.open.setdefault(market, {})[bet_id] = bet
        return close

    def close(self, market: str, bet_id: str, close: Close) -> Stake | None:
        """Close an open bet and return it; None if it is not open (not arrived yet: the close
        is remembered; or closed already: the first close stands)."""
        self._saw(market, close.event_ms)
        bets = self.open.get(market)
        bet = bets.pop(bet_id, None) if bets else None
        if bet is None:
            self.closed_first.setdefault((market, bet_id), close)
            return None
        if not bets:
            del self.open[market]
        return bet

    def open_in(self, market: str) -> int:
        return len(self.open.get(market, ()))

    def forget_market(self, market: str) -> None:
        """A market evicted by the processor: its open bets go with it."""
        self.open.pop(market, None)
        self.seen.pop(market, None)

    def evict(self, now_ms: int, idle_market_ms: int, late_ms: int) -> None:
        """Forget markets with no bet event for ``idle_market_ms`` and closes that waited for
        their bet longer than ``late_ms`` (event time)."""
        for market in [m for m, t in self.seen.items() if now_ms - t >= idle_market_ms]:
            self.forget_market(market)
        self.closed_first = {k: c for k, c in self.closed_first.items() if now_ms - c.event_ms < late_ms}

    def _saw(self, market: str, event_ms: int) -> None:
        seen = self.seen.get(market, event_ms)
        self.seen[market] = seen if seen > event_ms else event_ms
