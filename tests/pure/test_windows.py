"""Window assignment and the odds window fold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.market import implied_probability, overround
from streams.odds_window import Quote, WindowState, fold, window_result
from streams.windows import TumblingWindow

pytestmark = pytest.mark.pure
MINUTE = TumblingWindow(60_000)


@given(st.integers(1, 200_000), st.integers(0, 4 * 10**12))
def test_tumbling_assignment_matches_brute_force(size: int, t: int) -> None:
    window = TumblingWindow(size)
    start = window.start_of(t)
    assert start % size == 0 and start <= t < window.end_of(t)
    # brute force: the one multiple of size in (t - size, t]
    assert [s for s in range(t - size + 1, t + 1) if s % size == 0] == [start]


def test_window_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TumblingWindow(0)


def q(selection: str, odds: float, ms: int, offset: int, market: str = "m1") -> Quote:
    return Quote(market, selection, odds, ms, offset)


def run(quotes: list[Quote]) -> tuple[WindowState | None, list[bool]]:
    state: WindowState | None = None
    late = []
    for quote in quotes:
        outcome = fold(state, quote, MINUTE)
        state = outcome["state"]
        late.append(outcome["late"])
    return state, late


def test_open_high_low_last_follow_event_time_not_arrival() -> None:
    state, _ = run([q("home", 2.0, 10_000, 1), q("home", 2.4, 30_000, 2), q("home", 1.8, 5_000, 3)])
    assert state is not None
    home = state["selections"]["home"]
    assert (home["open"], home["high"], home["low"], home["last"], home["changes"]) == (
        1.8,
        2.4,
        1.8,
        2.4,
        3,
    )
    assert state["version"] == 3


def test_redelivered_quote_changes_nothing() -> None:
    quotes = [q("home", 2.0, 1_000, 1), q("away", 3.0, 2_000, 2)]
    state, _ = run(quotes)
    again = fold(state, quotes[1], MINUTE)
    assert again["duplicate"] and again["state"] == state


def test_later_window_replaces_and_earlier_is_late_never_merged() -> None:
    state, late = run([q("home", 2.0, 59_999, 1), q("home", 2.2, 60_000, 2), q("home", 9.9, 59_000, 3)])
    assert late == [False, False, True]
    assert state is not None and state["window_start"] == 60_000
    assert state["selections"]["home"]["high"] == 2.2 and state["version"] == 1


def test_window_result_has_overround_and_implied_probabilities() -> None:
    state, _ = run([q("home", 2.0, 1, 1), q("draw", 3.5, 2, 2), q("away", 4.0, 3, 3)])
    assert state is not None
    result = window_result(state)
    assert [s["selection_id"] for s in result["selections"]] == ["away", "draw", "home"]
    assert result["overround"] == pytest.approx(1 / 2 + 1 / 3.5 + 1 / 4 - 1)
    assert result["selections"][2]["implied_probability"] == 0.5


def test_market_math_hand_worked() -> None:
    assert implied_probability(4.0) == 0.25
    assert overround([1.9, 1.9]) == pytest.approx(0.052631578947)  # a classic 10/11 two-way market
    with pytest.raises(ValueError):
        implied_probability(1.0)
