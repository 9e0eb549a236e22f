"""The analytics aggregates against hand-worked values, and their order-insensitivity."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.analytics import (
    ApiCall,
    BetAggregator,
    BetClosed,
    Price,
    PriceAggregator,
    Stake,
    SystemAggregator,
    UserAction,
    UserAggregator,
)

pytestmark = pytest.mark.pure


def fold(aggregator: Any, values: list[tuple[Any, int]]) -> Any:
    agg = aggregator.zero()
    for value, t in values:
        agg = aggregator.add(agg, value, t)
    return agg


def test_prices_open_high_low_last_velocity() -> None:
    quotes = [
        (Price(2.0, (1_000, "a")), 1_000),
        (Price(2.4, (31_000, "c")), 31_000),
        (Price(1.8, (16_000, "b")), 16_000),
    ]
    stats = fold(PriceAggregator(), quotes)
    assert (stats.first.odds, stats.high, stats.low, stats.last.odds, stats.changes) == (
        2.0,
        2.4,
        1.8,
        2.4,
        3,
    )
    assert stats.velocity_pct_per_min == pytest.approx(40.0)  # +20% in 30 s
    assert stats.implied_probability == pytest.approx(1 / 2.4)


def test_equal_times_break_ties_by_event_id() -> None:
    a, b = Price(2.0, (5, "a")), Price(3.0, (5, "b"))
    for order in ([a, b], [b, a]):
        stats = fold(PriceAggregator(), [(p, 5) for p in order])
        assert (stats.first.odds, stats.last.odds) == (2.0, 3.0)


def test_bets_turnover_vwap_liability_and_shares() -> None:
    bets = [
        Stake("home", "u1", 10_000, 2.0),
        Stake("home", "u2", 5_000, 2.1),
        Stake("away", "u3", 20_000, 1.8),
    ]
    stats = fold(BetAggregator(), [(b, n) for n, b in enumerate(bets)])
    assert (stats.count, stats.turnover, stats.average_stake) == (3, 350.0, pytest.approx(350 / 3))
    assert stats.vwap("home") == pytest.approx((200 + 105) / 150)
    assert stats.liabilities() == pytest.approx({"home": -45.0, "away": 10.0})
    assert stats.worst_case_liability == pytest.approx(10.0)
    assert stats.money_shares() == pytest.approx({"home": 150 / 350, "away": 200 / 350})
    assert math.isnan(stats.vwap("draw"))


def test_users_rate_trend_win_rate_and_clv() -> None:
    actions = [
        (UserAction(stake_cents=1_000), 0),
        (UserAction(stake_cents=2_000), 60_000),
        (UserAction(stake_cents=3_000), 120_000),
        (UserAction(won=True, clv=0.1), 130_000),
        (UserAction(won=False, clv=-0.02), 140_000),
        (UserAction(won=True), 150_000),
    ]
    stats = fold(UserAggregator(origin_ms=0), actions)
    assert stats.bet_rate_per_min(180_000) == pytest.approx(1.0)
    assert stats.stake_trend_per_min == pytest.approx(10.0)  # +10 money per minute
    assert stats.win_rate == pytest.approx(2 / 3)
    assert stats.average_clv == pytest.approx(0.04)


def test_system_rates_percentiles_and_heartbeat_gaps() -> None:
    calls = [(ApiCall("/r", 200 if n % 10 else 503, float(n + 1)), n) for n in range(100)]
    beats = [(None, t) for t in (0, 5_000, 10_000, 22_000, 27_000)]
    stats = fold(SystemAggregator(), calls + beats)
    assert stats.error_rate == pytest.approx(0.1)
    assert (stats.latency_percentile(50), stats.latency_percentile(95), stats.latency_percentile(99)) == (
        50.0,
        95.0,
        99.0,
    )
    assert stats.max_heartbeat_gap_ms == 12_000
    assert stats.events_per_second(60_000) == pytest.approx(105 / 60)


prices = st.lists(
    st.tuples(st.floats(1.01, 50.0), st.integers(0, 10_000), st.text("abcdef", min_size=1, max_size=4)),
    min_size=1,
    max_size=30,
)


@given(prices, st.randoms(use_true_random=False))
def test_price_stats_do_not_depend_on_arrival_order(rows: list[tuple[float, int, str]], rnd: Any) -> None:
    values = [(Price(odds, (t, eid)), t) for odds, t, eid in rows]
    shuffled = values[:]
    rnd.shuffle(shuffled)
    a, b = fold(PriceAggregator(), values), fold(PriceAggregator(), shuffled)
    # ties on (time, id) with different odds are genuinely ambiguous; compare what is defined
    assert (a.high, a.low, a.changes) == (b.high, b.low, b.changes)
    assert a.first.stamp == b.first.stamp and a.last.stamp == b.last.stamp


@given(
    st.lists(
        st.tuples(st.sampled_from("hda"), st.floats(0.5, 1000), st.floats(1.01, 20)), min_size=1, max_size=30
    ),
    st.randoms(use_true_random=False),
)
def test_bet_stats_do_not_depend_on_arrival_order(rows: list[tuple[str, float, float]], rnd: Any) -> None:
    bets = [Stake(s, "u", round(stake * 100), odds) for s, stake, odds in rows]
    values: list[tuple[Stake | BetClosed, int]] = [(b, n) for n, b in enumerate(bets)]
    values += [
        (BetClosed(b, cashed_out=n % 2 == 1, paid_cents=b.cents * 9 // 10), n)
        for n, b in enumerate(bets[::3])
    ]
    shuffled = values[:]
    rnd.shuffle(shuffled)
    a, b = fold(BetAggregator(), values), fold(BetAggregator(), shuffled)
    # money in cents: the same sums exactly, whatever the order
    assert (a.count, a.cancelled, a.cashed_out) == (b.count, b.cancelled, b.cashed_out)
    assert (a.turnover_cents, a.cancelled_cents, a.paid_cents) == (
        b.turnover_cents,
        b.cancelled_cents,
        b.paid_cents,
    )
    assert a.money_shares() == b.money_shares()
    assert a.liabilities_cents() == b.liabilities_cents()
    if len(bets) == len(bets[::3]) and a.cashed_out == 0:  # every bet cancelled: nothing at all is left
        assert a.turnover == 0.0 and set(a.money_shares().values()) == {0.0}


@given(
    st.lists(
        st.tuples(st.floats(1.01, 1000.0), st.integers(0, 10**6), st.text(max_size=3)),
        min_size=1,
        max_size=20,
    )
)
def test_the_fast_price_fold_equals_the_dataclass_one(observations: list[tuple[float, int, str]]) -> None:
    """PriceAggregator.add builds PriceStats without its __init__: equal, hashed and pickled alike."""
    import pickle
    from dataclasses import replace

    from streams.analytics import Price, PriceAggregator, PriceStats

    fast = slow = PriceAggregator().zero()
    for odds, t, tie in observations:
        price = Price(odds, (t, tie))
        fast = PriceAggregator().add(fast, price, t)
        slow = PriceStats(
            first=price if slow.first is None or price.stamp < slow.first.stamp else slow.first,
            last=price if slow.last is None or price.stamp > slow.last.stamp else slow.last,
            high=max(slow.high, odds), low=min(slow.low, odds), changes=slow.changes + 1,
        )  # fmt: skip
        assert fast == slow and hash(fast) == hash(slow) and pickle.loads(pickle.dumps(fast)) == slow
    assert replace(fast, changes=0).changes == 0  # still a frozen dataclass to everything else


@given(
    st.lists(st.tuples(st.floats(1.01, 1000.0), st.integers(0, 50), st.text(max_size=1)), max_size=30),
    st.integers(0, 30),
)
def test_the_bulk_price_fold_equals_adding_one_by_one(
    observations: list[tuple[float, int, str]], cut: int
) -> None:
    """PriceAggregator.add_many (a sliding window's seed) gives what add gives, ties in
    (event time, id) included, from an empty or a partly folded aggregate. Its items are in
    event-time order, as the engine's buffer keeps them (ties in arrival order)."""
    from streams.analytics import Price, PriceAggregator

    agg = PriceAggregator()
    items = [(t, Price(odds, (t, tie))) for odds, t, tie in observations]
    items[cut:] = sorted(items[cut:], key=lambda item: item[0])  # stable: ties keep their order
    head = agg.zero()
    for t, price in items[:cut]:
        head = agg.add(head, price, t)
    one_by_one = head
    for t, price in items[cut:]:
        one_by_one = agg.add(one_by_one, price, t)
    bulk = agg.add_many(head, items[cut:])
    assert bulk == one_by_one
    assert (bulk.first is one_by_one.first) and (bulk.last is one_by_one.last)  # the same quote on ties
