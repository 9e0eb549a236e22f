"""Money in integer minor units (cents). Pure.

The schemas carry money as Avro ``decimal(18, 2)``; the analytics keep it as integer cents,
so sums are exact and do not depend on the order of the events, and hand it back as
``Decimal`` for the window events and ClickHouse ``Decimal(18, 2)`` columns. A bet's
potential payout is its stake times its odds to the cent, half to even, as a settlement
pays it (the simulator's ``BetSettled`` does the same).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

_UNIT = Decimal(1)
_CENT = Decimal("0.01")


def cents(amount: Decimal | float) -> int:
    """``amount`` in cents; a float is taken as the two-decimal amount it stands for."""
    if isinstance(amount, Decimal):
        return int(amount.scaleb(2).quantize(_UNIT, ROUND_HALF_EVEN))
    return round(amount * 100)


def payout_cents(stake_cents: int, odds: float) -> int:
    """Stake times decimal odds, to the cent, half to even (the odds as they read: 1.95 is 1.95)."""
    return int((stake_cents * _as_read(odds)).quantize(_UNIT, ROUND_HALF_EVEN))


@lru_cache(maxsize=65_536)
def _as_read(odds: float) -> Decimal:
    return Decimal(repr(odds))  # prices repeat: read each once


def as_decimal(amount_cents: int) -> Decimal:
    """Cents as an exact two-decimal ``Decimal`` (what a ``decimal(18, 2)`` field holds)."""
    return Decimal(amount_cents).scaleb(-2).quantize(_CENT)
