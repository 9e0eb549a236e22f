"""Contract checks: every rejection names the field and the reason."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from oddstream.errors import InvalidEvent, UnknownEventType
from schemas.catalog import Event, load_catalog
from schemas.codec import Codec

pytestmark = pytest.mark.pure
NOW = 1_800_000_000_000


def bet(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "7d4b5f0e-2c9a-4c3e-9a0f-6f1d2e3c4b5a", "event_time": NOW, "source": "book",
        "bet_id": "b1", "user_id": "u1", "market_id": "m1", "selection_id": "home",
        "stake": Decimal("10.00"), "currency": "EUR", "odds": 2.5, "channel": "WEB",
    }  # fmt: skip
    record.update(changes)
    return record


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"stake": Decimal("0.00")}, "stake", "greater than zero"),
        ({"stake": Decimal("-5.00")}, "stake", "greater than zero"),
        ({"odds": 1.0}, "odds", "greater than 1.0"),
        ({"odds": 0.5}, "odds", "greater than 1.0"),
        ({"odds": float("nan")}, "odds", "finite"),
        ({"odds": float("inf")}, "odds", "finite"),
        ({"channel": "PIGEON"}, "channel", "PIGEON"),
        ({"currency": "euro"}, "currency", "ISO 4217"),
        ({"event_id": "not-a-uuid"}, "event_id", "UUID"),
        ({"event_time": 1_700_000_000}, "event_time", "before 2000"),
        ({"event_time": NOW + 3_600_000}, "event_time", "in the future"),
        ({"market_id": ""}, "market_id", "empty"),
        ({"surprise": 1}, "surprise", "not in the schema"),
        ({"odds": "2.5"}, "odds", "2.5"),
    ],
)
def test_bad_values_are_rejected_with_field_and_reason(
    changes: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        Codec(load_catalog()).encode(Event("BetPlaced", bet(**changes)), now_ms=NOW)
    assert caught.value.field == field
    assert words in caught.value.reason
    assert caught.value.reason.startswith(f"BetPlaced.{field}")


def test_missing_field_is_named() -> None:
    record = bet()
    del record["stake"]
    with pytest.raises(InvalidEvent) as caught:
        Codec(load_catalog()).encode(Event("BetPlaced", record))
    assert caught.value.field == "stake"


def test_unknown_event_type() -> None:
    with pytest.raises(UnknownEventType, match="BetPlacedd"):
        Codec(load_catalog()).encode(Event("BetPlacedd", bet()))


def test_a_good_event_passes() -> None:
    Codec(load_catalog()).validate(Event("BetPlaced", bet()), now_ms=NOW)


def test_deposit_needs_an_amount() -> None:
    record = {
        "event_id": "7d4b5f0e-2c9a-4c3e-9a0f-6f1d2e3c4b5a", "event_time": NOW, "source": "s",
        "user_id": "u1", "activity": "DEPOSIT", "amount": None, "currency": None, "page": None,
    }  # fmt: skip
    with pytest.raises(InvalidEvent, match="needs an amount"):
        Codec(load_catalog()).validate(Event("UserActivity", record))


def test_fields_with_defaults_may_be_left_out() -> None:
    record = {
        "event_id": "7d4b5f0e-2c9a-4c3e-9a0f-6f1d2e3c4b5a", "event_time": NOW, "source": "s",
        "market_id": "m1", "status": "SUSPENDED",
    }  # fmt: skip
    codec = Codec(load_catalog())
    assert codec.decode(codec.encode(Event("MarketStatusChanged", record))).record["reason"] is None
