"""Money in cents: conversions, a bet's payout to the cent, and the store's rows from v1 records."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.store.window_rows import FINAL_ROWS
from streams.money import as_decimal, cents, payout_cents

pytestmark = pytest.mark.pure


def test_cents_of_decimals_and_of_the_floats_that_stand_for_them() -> None:
    assert cents(Decimal("10.25")) == 1025 and cents(Decimal("-0.01")) == -1
    assert cents(0.1 + 0.2) == 30 and cents(10.1) == 1010
    assert as_decimal(-3500) == Decimal("-35.00") and str(as_decimal(5)) == "0.05"


def test_a_payout_is_stake_times_odds_to_the_cent_half_to_even_as_a_settlement_pays() -> None:
    assert payout_cents(1025, 1.95) == 1999  # 19.9875
    assert payout_cents(250, 1.05) == 262  # 2.625 -> 2.62 (half to even), not 2.63
    assert payout_cents(350, 1.05) == 368  # 3.675 -> 3.68
    # the odds as they read: 1.015 (the float is 1.01499999...), so 1.00 pays 1.02, not 1.01
    assert payout_cents(100, 1.015) == 102 and round(100 * 1.015) == 101


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999.99"), places=2),
       st.floats(1.01, 1000.0))  # fmt: skip
def test_the_payout_agrees_with_the_simulators_settlement(stake: Decimal, odds: float) -> None:
    settled = (stake * Decimal(str(odds))).quantize(Decimal("0.01"))
    assert as_decimal(payout_cents(cents(stake), odds)) == settled


def test_bet_rows_from_a_v1_record_take_the_doubles_to_the_cent() -> None:
    record = {
        "market_id": "m1", "window_start": 0, "window_end": 60_000, "version": 3, "window_id": "w",
        "bets": 2, "turnover": 30.0, "average_stake": 15.0, "worst_case_liability": 15.499999999999998,
        "cancelled": 0, "cancelled_stakes": 0.0, "cashed_out": 1, "cash_out_paid": 25.5,
        "selections": [{"selection_id": "away", "bets": 1, "stakes": 20.0, "vwap": 3.0,
                        "liability": -4.5, "money_share": 2 / 3, "cancelled": 0, "cancelled_stakes": 0.0,
                        "cashed_out": 1, "cash_out_paid": 25.5}],
    }  # fmt: skip
    [row] = FINAL_ROWS["BetWindowUpdated"](record)["bet_windows_1m"]
    assert row[5:8] == (Decimal("20.0"), 3.0, Decimal("-4.5"))
    assert Decimal("15.50") in row and Decimal("30.0") in row
    record["turnover_exact"] = Decimal("30.00")  # a v2 record: the exact field wins
    record["turnover"] = 999.0
    [row] = FINAL_ROWS["BetWindowUpdated"](record)["bet_windows_1m"]
    assert Decimal("30.00") in row and 999.0 not in row
