"""Contract checks beyond Avro types: the values a real event can have.

Avro says ``odds`` is a double; this module says it is a finite number above
1.0. Every rejection names the field and the reason, so a producer can fix it.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastavro.validation import ValidationError, validate

from oddstream.errors import InvalidEvent
from schemas.catalog import Event, SchemaVersion

CURRENCY = re.compile(r"^[A-Z]{3}$")
EARLIEST_EVENT_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: anything older is a unit mistake
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
ID_FIELDS = ("bet_id", "user_id", "market_id", "selection_id", "bookmaker", "service", "source")


def as_millis(value: Any) -> int:
    """Event times arrive as ints (ms) from producers and as datetimes from fastavro."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        # integer arithmetic: float seconds * 1000 can be off by one millisecond
        return int((value - EPOCH) // ONE_MS)
    return int(value)


def check_avro(event: Event, schema: SchemaVersion) -> None:
    """Types, required fields and enum symbols, per the Avro schema."""
    missing = [
        f["name"] for f in schema.source["fields"] if f["name"] not in event.record and "default" not in f
    ]
    if missing:
        raise InvalidEvent(event.type, missing[0], "required field is missing")
    unknown = set(event.record) - {f["name"] for f in schema.source["fields"]}
    if unknown:
        raise InvalidEvent(event.type, sorted(unknown)[0], "field is not in the schema")
    try:
        validate(event.record, schema.parsed, raise_errors=True)
    except ValidationError as exc:
        problems = [str(err) for err in exc.errors] or [str(exc)]
        field = _field_of(problems[0])
        raise InvalidEvent(event.type, field, "; ".join(problems)) from exc


def _field_of(problem: str) -> str:
    # fastavro reports "<record>.<field> is <value> of type ..."; keep the field
    head = problem.split(" ", 1)[0]
    return head.rsplit(".", 1)[-1] if "." in head else "record"


def check_values(event: Event, now_ms: int | None = None, max_future_ms: int = 300_000) -> None:
    """The domain rules. ``now_ms`` enables the far-future check: event time at most
    ``max_future_ms`` ahead of ``now_ms`` (the record's Kafka timestamp in consumers, the
    clock in the producer SDK)."""
    record, kind = event.record, event.type

    def bad(field: str, problem: str) -> InvalidEvent:
        return InvalidEvent(kind, field, problem)

    for name, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise bad(name, f"must be a finite number, got {value}")
        if isinstance(value, Decimal) and not value.is_finite():
            raise bad(name, f"must be a finite amount, got {value}")
    event_id = record.get("event_id")
    if not isinstance(event_id, uuid.UUID):  # the decoder makes UUIDs of the uuid logical type
        try:
            uuid.UUID(str(event_id))
        except ValueError:
            raise bad("event_id", f"must be a UUID, got {event_id!r}") from None
    event_ms = as_millis(record["event_time"])
    if event_ms < EARLIEST_EVENT_MS:
        raise bad("event_time", f"{event_ms} is before 2000-01-01; expected UTC milliseconds")
    if now_ms is not None and event_ms > now_ms + max_future_ms:
        raise bad(
            "event_time",
            f"{event_ms} is {event_ms - now_ms:,} ms in the future of the record's time {now_ms} "
            f"(at most {max_future_ms:,} ms ahead is accepted)",
        )
    ids = ("source",) if kind == "UserBetRecorded" and record["action"] == "CLOCK" else ID_FIELDS
    for name in ids:
        if name in record and not str(record[name]).strip():
            raise bad(name, "must not be empty")
    if "odds" in record and not record["odds"] > 1.0:
        raise bad("odds", f"decimal odds must be greater than 1.0, got {record['odds']}")
    for name in ("stake", "amount"):
        if record.get(name) is not None and not record[name] > 0:
            raise bad(name, f"must be greater than zero, got {record[name]}")
    if kind == "UserBetRecorded":
        _check_user_bet(record, bad)
    if "payout" in record and record["payout"] < 0:
        raise bad("payout", f"must not be negative, got {record['payout']}")
    if record.get("currency") is not None and not CURRENCY.match(str(record["currency"])):
        raise bad("currency", f"must be an ISO 4217 code like EUR, got {record['currency']!r}")
    if kind == "ApiCallRecorded":
        if not 100 <= record["status"] <= 599:
            raise bad("status", f"must be an HTTP status 100-599, got {record['status']}")
        if record["latency_ms"] < 0:
            raise bad("latency_ms", f"must not be negative, got {record['latency_ms']}")
    money_moved = kind == "UserActivity" and record["activity"] in ("DEPOSIT", "WITHDRAWAL")
    if money_moved and (record.get("amount") is None or record.get("currency") is None):
        raise bad("amount", f"{record['activity']} needs an amount and a currency")


def _check_user_bet(record: dict[str, Any], bad: Any) -> None:
    """A placement has a stake, a settlement its result, a clock mark neither and no user."""
    action = record["action"]
    wants = {"PLACED": ("stake",), "SETTLED": ("won",), "CLOCK": ()}[action]
    for name in ("stake", "won"):
        if (record[name] is not None) != (name in wants):
            should = "must have" if name in wants else "must not have"
            raise bad(name, f"a {action} record {should} a {name}, got {record[name]}")
    if action == "CLOCK" and (record["user_id"] or record["bet_id"] or record["market_id"]):
        raise bad("user_id", "a CLOCK record names no user, bet or market")
    if action != "CLOCK" and record["idle"]:
        raise bad("idle", f"only a CLOCK record can say its bets partition is idle, not a {action} one")
