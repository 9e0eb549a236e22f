"""Hypothesis strategies for valid events, driven by the Avro schemas themselves."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from schemas.catalog import load_catalog

START_MS = 946_684_800_000
END_MS = 4_102_444_800_000  # 2100

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=24)
money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999999999.99"), places=2)
BY_NAME: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.uuids(version=4).map(str),
    "window_id": st.uuids(version=5).map(str),
    "prediction_id": st.uuids(version=5).map(str),
    "event_time": st.integers(START_MS, END_MS),
    "window_start": st.integers(START_MS, END_MS),
    "window_end": st.integers(START_MS, END_MS),
    "open_time": st.integers(START_MS, END_MS),
    "last_time": st.integers(START_MS, END_MS),
    "starts_at": st.integers(START_MS, END_MS),
    "next_retry": st.integers(START_MS, END_MS),
    "previous_secret_until": st.integers(START_MS, END_MS),
    "next_attempt": st.integers(START_MS, END_MS),
    "first_attempt": st.integers(START_MS, END_MS),
    "endpoint_failing_since": st.integers(START_MS, END_MS),
    "odds": st.floats(1.01, 1000.0),
    "open": st.floats(1.01, 1000.0),
    "high": st.floats(1.01, 1000.0),
    "low": st.floats(1.01, 1000.0),
    "last": st.floats(1.01, 1000.0),
    "stake": money,
    "amount": money,
    "payout": st.decimals(min_value=Decimal("0"), max_value=Decimal("999999999.99"), places=2),
    "currency": st.sampled_from(["EUR", "GBP", "USD"]),
    "status": st.integers(100, 599),
    "latency_ms": st.floats(0, 1e6),
    "url": st.just("https://hooks.example.com/oddstream"),
}


def _for_type(avro_type: Any, name: str, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    if isinstance(avro_type, list):
        return st.one_of(*[_for_type(t, name, named) for t in avro_type])
    if avro_type == "null":
        return st.none()
    if isinstance(avro_type, str) and avro_type in named:
        avro_type = named[avro_type]
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind != "enum" and name in BY_NAME:
            return BY_NAME[name]
        if avro_type.get("logicalType") == "decimal":  # derived money (a liability can be negative)
            return st.decimals(min_value=-(10**15), max_value=10**15, places=avro_type["scale"])
        if kind == "enum":
            named[avro_type["name"]] = avro_type
            return st.sampled_from(avro_type["symbols"])
        if kind == "array":
            return st.lists(_for_type(avro_type["items"], name, named), max_size=4)
        if kind == "map":
            return st.dictionaries(ids, _for_type(avro_type["values"], "", named), max_size=3)
        if kind == "record":
            named[avro_type["name"]] = avro_type
            return st.fixed_dictionaries(
                {f["name"]: _for_type(f["type"], f["name"], named) for f in avro_type["fields"]}
            )
        return _for_type(kind, name, named)
    if name in BY_NAME:
        return BY_NAME[name]
    return {
        "string": ids,
        "long": st.integers(0, 2**53),
        "int": st.integers(-(2**31), 2**31 - 1),
        "double": st.floats(-1e6, 1e6, allow_nan=False),
        "boolean": st.booleans(),
    }[avro_type]


def records(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid records of ``event_type`` (per Avro and the domain rules)."""
    schema = load_catalog().schema(event_type).source
    base = _for_type(schema, "", {})
    if event_type == "UserActivity":
        return base.filter(
            lambda r: (
                r["activity"] not in ("DEPOSIT", "WITHDRAWAL")
                or (r["amount"] is not None and r["currency"] is not None)
            )
        )
    if event_type == "UserBetRecorded":  # a placement has a stake, a settlement its result, a clock neither
        return base.map(_user_bet)
    return base


def _user_bet(r: dict[str, Any]) -> dict[str, Any]:
    if r["action"] == "PLACED":
        return {**r, "stake": r["stake"] or Decimal("1.00"), "won": None, "idle": False}
    if r["action"] == "SETTLED":
        return {**r, "stake": None, "won": bool(r["won"]), "idle": False}
    return {**r, "stake": None, "won": None, "user_id": "", "bet_id": "", "market_id": ""}


def uuid_str() -> str:
    return str(uuid.uuid4())
