"""Window aggregates for the SPEC's analytics. Pure and order-insensitive.

Each aggregate is an immutable value folded by an :class:`~streams.engine.Aggregator`;
"first"/"last" are by (event time, event id), so the same events give the same result
in any arrival order. Derived figures (VWAP, velocity, rates, percentiles) are read off
a finished aggregate by its properties.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, replace
from itertools import pairwise
from operator import attrgetter
from typing import Any

from streams import money
from streams.market import implied_probability, velocity_per_minute

Stamp = tuple[int, str]  # (event ms, event id): a total order on events


_new = object.__new__


@dataclass(frozen=True)
class Price:
    """One price observation."""

    odds: float
    stamp: Stamp


@dataclass(frozen=True)
class PriceStats:
    """Open/high/low/last of one price series (a selection at one bookmaker, or all)."""

    first: Price | None = None
    last: Price | None = None
    high: float = -math.inf
    low: float = math.inf
    changes: int = 0

    @property
    def velocity_pct_per_min(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return velocity_per_minute(self.first.odds, self.last.odds, self.first.stamp[0], self.last.stamp[0])

    @property
    def implied_probability(self) -> float:
        return implied_probability(self.last.odds) if self.last else math.nan


class PriceAggregator:
    def zero(self) -> PriceStats:
        return PriceStats()

    def add(self, agg: PriceStats, value: Price, event_ms: int) -> PriceStats:
        first, last, odds = agg.first, agg.last, value.odds
        # PriceStats(...) without the frozen dataclass's __init__ (a field at a time through
        # object.__setattr__): the same value, about 5x faster (tests/pure/test_analytics.py)
        stats: PriceStats = _new(PriceStats)
        fields = stats.__dict__
        fields["first"] = value if first is None or value.stamp < first.stamp else first
        fields["last"] = value if last is None or value.stamp > last.stamp else last
        fields["high"] = agg.high if agg.high >= odds else odds
        fields["low"] = agg.low if agg.low <= odds else odds
        fields["changes"] = agg.changes + 1
        return stats

    def add_many(self, agg: PriceStats, items: list[tuple[int, Price]]) -> PriceStats:
        """``add`` folded over ``items`` (event ms, price) **in event-time order**, as a sliding
        window's buffer holds them (streams/engine.py): the first and last quotes are among
        the items of the first and last millisecond, the high and low one pass of builtins."""
        if not items:
            return agg
        n, start, end = len(items), items[0][0], items[-1][0]
        head = 1
        while head < n and items[head][0] == start:
            head += 1
        tail = n - 1
        while tail > 0 and items[tail - 1][0] == end:
            tail -= 1
        first = items[0][1] if head == 1 else min((v for _, v in items[:head]), key=_STAMP)
        last = items[-1][1] if tail == n - 1 else max((v for _, v in items[tail:]), key=_STAMP)
        odds = [v.odds for _, v in items]
        high, low = max(odds), min(odds)
        stats: PriceStats = _new(PriceStats)
        fields = stats.__dict__
        fields["first"] = first if agg.first is None or first.stamp < agg.first.stamp else agg.first
        fields["last"] = last if agg.last is None or last.stamp > agg.last.stamp else agg.last
        fields["high"] = agg.high if agg.high >= high else high
        fields["low"] = agg.low if agg.low <= low else low
        fields["changes"] = agg.changes + n
        return stats


_STAMP = attrgetter("stamp")


@dataclass(frozen=True)
class Stake:
    """One bet as the bet analytics see it: its stake in cents (streams.money) and its odds."""

    selection_id: str
    user_id: str
    cents: int
    odds: float

    @property
    def stake(self) -> float:
        return self.cents / 100

    @property
    def payout_cents(self) -> int:
        """What the bet pays if it wins, stake included, to the cent."""
        return money.payout_cents(self.cents, self.odds)


@dataclass(frozen=True)
class BetClosed:
    """An open bet leaving the book before its result: cancelled (the stake is returned) or
    cashed out (``paid_cents`` to the bettor, the stake kept). Booked in the window of the
    close's own event time, like a ledger's reversal: a final window never changes afterwards."""

    bet: Stake
    cashed_out: bool
    paid_cents: int = 0
    placed: bool = False  # the bet arrived after its close: placed and closed at once


@dataclass(frozen=True)
class SelectionBets:
    """One selection's bets in a window: placed, and closed early (cancelled, cashed out).
    Money in integer cents; ``stake_odds`` (sum of stake * odds, a float) is for the VWAP."""

    selection_id: str
    bets: int = 0
    stakes_cents: int = 0  # placed
    stake_odds: float = 0.0  # placed
    payout_cents: int = 0  # placed: what they pay if the selection wins
    cancelled: int = 0
    cancelled_cents: int = 0
    cancelled_payout_cents: int = 0
    cashed_out: int = 0
    cashed_out_payout_cents: int = 0  # what the cashed-out bets would have paid
    paid_cents: int = 0  # paid for the cash-outs

    @property
    def net_stakes_cents(self) -> int:
        """Stakes placed minus stakes of bets cancelled."""
        return self.stakes_cents - self.cancelled_cents

    @property
    def open_payout_cents(self) -> int:
        """What the window's bets on the selection pay if it wins: placed, less those cancelled
        or cashed out."""
        return self.payout_cents - self.cancelled_payout_cents - self.cashed_out_payout_cents

    @property
    def vwap(self) -> float:
        """Stake-weighted average odds of the bets placed (NaN: none placed)."""
        return self.stake_odds * 100 / self.stakes_cents if self.stakes_cents else math.nan


@dataclass(frozen=True)
class BetStats:
    """Bets on one market in a window, per selection (sorted by selection id); money in cents."""

    count: int = 0  # bets placed
    staked_cents: int = 0  # stakes placed
    cancelled: int = 0
    cancelled_cents: int = 0
    cashed_out: int = 0
    paid_cents: int = 0
    by_selection: tuple[SelectionBets, ...] = ()

    @property
    def turnover_cents(self) -> int:
        """Stakes placed minus stakes of bets cancelled (a cash-out keeps its stake)."""
        return self.staked_cents - self.cancelled_cents

    @property
    def turnover(self) -> float:
        return self.turnover_cents / 100

    @property
    def average_stake(self) -> float:
        """Of the bets placed."""
        return self.staked_cents / 100 / self.count if self.count else 0.0

    def selection(self, selection_id: str) -> SelectionBets:
        for s in self.by_selection:
            if s.selection_id == selection_id:
                return s
        return SelectionBets(selection_id)

    def vwap(self, selection_id: str) -> float:
        """Stake-weighted average odds taken on a selection."""
        return self.selection(selection_id).vwap

    def liabilities_cents(self) -> dict[str, int]:
        """Net payout if each selection wins (positive: the operator loses that much): what
        the open bets pay on it, plus the cash-outs paid, minus the turnover kept."""
        kept = self.turnover_cents - self.paid_cents
        return {s.selection_id: s.open_payout_cents - kept for s in self.by_selection}

    def liabilities(self) -> dict[str, float]:
        return {s: c / 100 for s, c in self.liabilities_cents().items()}

    @property
    def worst_case_liability_cents(self) -> int:
        return max(self.liabilities_cents().values(), default=0)

    @property
    def worst_case_liability(self) -> float:
        return self.worst_case_liability_cents / 100

    def money_shares(self) -> dict[str, float]:
        turnover = self.turnover_cents
        return {
            s.selection_id: (s.net_stakes_cents / turnover if turnover else 0.0) for s in self.by_selection
        }


class BetAggregator:
    """Folds :class:`Stake` (a bet placed) and :class:`BetClosed` (cancelled or cashed out).
    Values are built positionally: dataclasses.replace costs ~3 us a call."""

    def zero(self) -> BetStats:
        return BetStats()

    def add(self, agg: BetStats, value: Stake | BetClosed, event_ms: int) -> BetStats:
        if isinstance(value, Stake):
            return self._placed(agg, value)
        bet = value.bet
        if value.placed:
            agg = self._placed(agg, bet)
        r, payout = agg.selection(bet.selection_id), bet.payout_cents
        if value.cashed_out:
            row = SelectionBets(
                r.selection_id, r.bets, r.stakes_cents, r.stake_odds, r.payout_cents, r.cancelled,
                r.cancelled_cents, r.cancelled_payout_cents, r.cashed_out + 1,
                r.cashed_out_payout_cents + payout, r.paid_cents + value.paid_cents,
            )  # fmt: skip
            return BetStats(
                agg.count, agg.staked_cents, agg.cancelled, agg.cancelled_cents, agg.cashed_out + 1,
                agg.paid_cents + value.paid_cents, _with_row(agg, row),
            )  # fmt: skip
        row = SelectionBets(
            r.selection_id, r.bets, r.stakes_cents, r.stake_odds, r.payout_cents, r.cancelled + 1,
            r.cancelled_cents + bet.cents, r.cancelled_payout_cents + payout, r.cashed_out,
            r.cashed_out_payout_cents, r.paid_cents,
        )  # fmt: skip
        return BetStats(
            agg.count, agg.staked_cents, agg.cancelled + 1, agg.cancelled_cents + bet.cents, agg.cashed_out,
            agg.paid_cents, _with_row(agg, row),
        )  # fmt: skip

    def _placed(self, agg: BetStats, bet: Stake) -> BetStats:
        r = agg.selection(bet.selection_id)
        row = SelectionBets(
            r.selection_id, r.bets + 1, r.stakes_cents + bet.cents, r.stake_odds + bet.cents / 100 * bet.odds,
            r.payout_cents + bet.payout_cents, r.cancelled, r.cancelled_cents, r.cancelled_payout_cents,
            r.cashed_out, r.cashed_out_payout_cents, r.paid_cents,
        )  # fmt: skip
        return BetStats(
            agg.count + 1, agg.staked_cents + bet.cents, agg.cancelled, agg.cancelled_cents, agg.cashed_out,
            agg.paid_cents, _with_row(agg, row),
        )  # fmt: skip


def _with_row(agg: BetStats, row: SelectionBets) -> tuple[SelectionBets, ...]:
    """``agg``'s selections with ``row`` in place of its selection's, sorted by selection id."""
    rows = {s.selection_id: s for s in agg.by_selection}
    rows[row.selection_id] = row
    return tuple(rows[s] for s in sorted(rows))


@dataclass(frozen=True)
class UserAction:
    """A user's bet (stake in cents > 0) or settlement (won is not None), with its CLV if known."""

    stake_cents: int = 0
    won: bool | None = None
    clv: float | None = None


@dataclass(frozen=True)
class UserStats:
    """One user's behaviour in a window. Trend sums are relative to the window start."""

    bets: int = 0
    staked_cents: int = 0
    settled: int = 0
    won: int = 0
    clv_sum: float = 0.0
    clv_count: int = 0
    sum_t: float = 0.0
    sum_tt: float = 0.0
    sum_s: float = 0.0
    sum_ts: float = 0.0

    def bet_rate_per_min(self, window_ms: int) -> float:
        return self.bets * 60_000.0 / window_ms

    @property
    def win_rate(self) -> float:
        return self.won / self.settled if self.settled else math.nan

    @property
    def average_clv(self) -> float:
        return self.clv_sum / self.clv_count if self.clv_count else math.nan

    @property
    def stake_trend_per_min(self) -> float:
        """Least-squares slope of stake against time (money per minute); 0 with < 2 bets."""
        n = self.bets
        denominator = n * self.sum_tt - self.sum_t**2
        if n < 2 or denominator <= 0:
            return 0.0
        return (n * self.sum_ts - self.sum_t * self.sum_s) / denominator * 60_000.0


@dataclass(frozen=True)
class UserAggregator:
    origin_ms: int = 0  # times are taken relative to this, to keep the sums small
    period_ms: int = 0  # > 0: relative to the start of the (aligned) window of this length instead

    def zero(self) -> UserStats:
        return UserStats()

    def add(self, agg: UserStats, value: UserAction, event_ms: int) -> UserStats:
        if value.won is not None:
            agg = replace(agg, settled=agg.settled + 1, won=agg.won + int(value.won))
            if value.clv is not None:
                agg = replace(agg, clv_sum=agg.clv_sum + value.clv, clv_count=agg.clv_count + 1)
            return agg
        t = float(
            (event_ms - self.origin_ms) % self.period_ms if self.period_ms else event_ms - self.origin_ms
        )
        a, stake = agg, value.stake_cents / 100  # a bet: every field given, in order (replace costs 6 us)
        return UserStats(
            a.bets + 1, a.staked_cents + value.stake_cents, a.settled, a.won, a.clv_sum, a.clv_count,
            a.sum_t + t, a.sum_tt + t * t, a.sum_s + stake, a.sum_ts + t * stake,
        )  # fmt: skip


@dataclass(frozen=True)
class ApiCall:
    route: str
    status: int
    latency_ms: float


@dataclass(frozen=True)
class SystemStats:
    """One service's API calls and heartbeats in a window."""

    calls: int = 0
    errors: int = 0
    latencies: tuple[float, ...] = ()  # sorted: percentiles are exact
    heartbeats: tuple[int, ...] = ()  # sorted event times

    def events_per_second(self, window_ms: int) -> float:
        return (self.calls + len(self.heartbeats)) * 1000.0 / window_ms

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    def latency_percentile(self, q: float) -> float:
        """Nearest-rank percentile (q in (0, 100]) of the latencies; NaN without calls."""
        if not self.latencies:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * len(self.latencies)))
        return self.latencies[rank - 1]

    @property
    def max_heartbeat_gap_ms(self) -> int:
        beats = self.heartbeats
        return max((b - a for a, b in pairwise(beats)), default=0)


class SystemAggregator:
    def zero(self) -> SystemStats:
        return SystemStats()

    def add(self, agg: SystemStats, value: ApiCall | None, event_ms: int) -> SystemStats:
        if value is None:  # a heartbeat
            return SystemStats(agg.calls, agg.errors, agg.latencies, _inserted(agg.heartbeats, event_ms))
        return SystemStats(
            agg.calls + 1,
            agg.errors + int(value.status >= 500),
            _inserted(agg.latencies, value.latency_ms),
            agg.heartbeats,
        )


def _inserted(values: tuple[Any, ...], value: Any) -> tuple[Any, ...]:
    """``values`` (sorted) with ``value`` in its place: what sorting them all again gives."""
    at = bisect_right(values, value)
    return (*values[:at], value, *values[at:])
