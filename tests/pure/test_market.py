"""Market math against hand-worked examples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.market import (
    closing_line_value,
    consensus_probabilities,
    fair_price,
    fair_probabilities,
    implied_probability,
    is_steam_move,
    liabilities,
    money_shares,
    overround,
    velocity_per_minute,
    worst_case_liability,
)

pytestmark = pytest.mark.pure


def test_overround_of_a_classic_two_way_market() -> None:
    # 10/11 both sides = 1.909...; 2 * 11/21 - 1 = 1/21
    assert overround([21 / 11, 21 / 11]) == pytest.approx(1 / 21)


def test_normalised_fair_probabilities_hand_worked() -> None:
    # 2.0, 3.5, 4.0: implied 0.5, 0.285714, 0.25 sum 1.035714
    p = fair_probabilities([2.0, 3.5, 4.0])
    assert p == pytest.approx([0.5 / 1.0357142857, 0.2857142857 / 1.0357142857, 0.25 / 1.0357142857])


def test_power_method_puts_more_margin_on_the_long_shot() -> None:
    prices = [1.5, 4.0, 7.0]
    normal, power = fair_probabilities(prices), fair_probabilities(prices, "power")
    assert sum(power) == pytest.approx(1.0, abs=1e-12)
    k = math.log(power[0]) / math.log(1 / 1.5)
    assert power == pytest.approx([(1 / d) ** k for d in prices])  # one exponent for all
    assert power[2] < normal[2] and power[0] > normal[0]


def test_shin_hand_worked_two_way() -> None:
    # Symmetric book: Shin must return 0.5/0.5 whatever z is
    assert fair_probabilities([1.9, 1.9], "shin") == pytest.approx([0.5, 0.5])
    # Asymmetric book: sums to one, favourite gains relative to normalisation
    shin, normal = fair_probabilities([1.3, 3.4], "shin"), fair_probabilities([1.3, 3.4])
    assert sum(shin) == pytest.approx(1.0, abs=1e-12)
    assert shin[0] > normal[0]


@given(
    st.lists(st.floats(1.05, 50.0), min_size=2, max_size=8), st.sampled_from(["normalise", "power", "shin"])
)
def test_every_method_gives_a_distribution_in_price_order(prices: list[float], method: str) -> None:
    p = fair_probabilities(prices, method)  # type: ignore[arg-type]
    assert sum(p) == pytest.approx(1.0, abs=1e-9)
    assert all(0 < x < 1 for x in p)
    order = sorted(range(len(prices)), key=lambda i: prices[i])
    assert all(p[order[i]] >= p[order[i + 1]] - 1e-12 for i in range(len(order) - 1))


def test_consensus_averages_complete_books_only() -> None:
    books = {
        "a": {"home": 2.0, "away": 2.0},
        "b": {"home": 1.8, "away": 2.2},
        "c": {"home": 1.5},  # incomplete: ignored
    }
    p = consensus_probabilities(books)
    assert p["home"] == pytest.approx((0.5 + (1 / 1.8) / (1 / 1.8 + 1 / 2.2)) / 2)
    assert fair_price(p["home"]) == pytest.approx(1 / p["home"])


def test_liability_hand_worked() -> None:
    bets = [("home", 100.0, 2.0), ("home", 50.0, 2.1), ("away", 200.0, 1.8)]
    # handle 350; home wins: pays 200 + 105 = 305 -> -45; away: 360 -> +10; draw: -350
    by_selection = liabilities(bets, ["home", "draw", "away"])
    assert by_selection == pytest.approx({"home": -45.0, "draw": -350.0, "away": 10.0})
    assert worst_case_liability(by_selection) == pytest.approx(10.0)
    assert money_shares({"home": 150.0, "away": 200.0, "draw": 0.0}) == pytest.approx(
        {"home": 150 / 350, "away": 200 / 350, "draw": 0.0}
    )


def test_closing_line_value_and_velocity() -> None:
    assert closing_line_value(2.2, 2.0) == pytest.approx(0.1)  # took 2.2, closed 2.0: +10%
    assert closing_line_value(1.9, 2.0) == pytest.approx(-0.05)
    assert velocity_per_minute(2.0, 1.9, 0, 30_000) == pytest.approx(-10.0)
    assert velocity_per_minute(2.0, 1.9, 5, 5) == 0.0
    assert implied_probability(4.0) == 0.25
    with pytest.raises(ValueError):
        implied_probability(1.0)


def test_steam_needs_several_bookmakers_moving_together() -> None:
    assert is_steam_move({"a": -4.0, "b": -5.0, "c": -3.5, "d": 0.0}) == 1
    assert is_steam_move({"a": 4.0, "b": 5.0, "c": 3.5}) == -1
    assert is_steam_move({"a": -4.0, "b": -5.0, "c": 1.0}) == 0
