"""The HTTP API's JSON-to-Avro conversion and its OpenAPI document, with values and with
garbage: every input ends as a record or as InvalidEvent naming the field."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api.convert import record_from_json
from gateway.api.openapi import openapi
from oddstream.errors import InvalidEvent
from schemas.catalog import Event, load_catalog
from schemas.codec import Codec
from schemas.topics import SOURCE_EVENT_TYPES

pytestmark = pytest.mark.pure
CATALOG = load_catalog()
CODEC = Codec(CATALOG)


def bet(**changes: Any) -> dict[str, Any]:
    record = {
        "event_id": str(uuid.uuid4()), "event_time": 1_767_225_600_000, "source": "api", "bet_id": "b1",
        "user_id": "u1", "market_id": "m1", "selection_id": "home", "stake": "10.50", "currency": "EUR",
        "odds": 2, "channel": "WEB",
    }  # fmt: skip
    return {**record, **changes}


def convert(event_type: str, body: Any) -> dict[str, Any]:
    record = record_from_json(event_type, CATALOG.schema(event_type).source, body)
    CODEC.validate(Event(event_type, record))
    return record


def test_json_values_become_the_avro_types_exactly() -> None:
    record = convert("BetPlaced", bet())
    assert record["stake"] == Decimal("10.50") and record["odds"] == 2.0 and isinstance(record["odds"], float)
    assert convert("BetPlaced", bet(stake=10))["stake"] == Decimal("10.00")
    assert convert("BetPlaced", bet(stake=0.1))["stake"] == Decimal("0.10")  # the float's shortest repr
    resulted = {"event_id": str(uuid.uuid4()), "event_time": 1_767_225_600_000, "source": "api",
                "market_id": "m1", "winning_selection_ids": ["home"]}  # fmt: skip
    result = convert("MarketResulted", resulted)
    assert result["winning_selection_ids"] == ["home"]


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"stake": "12.345"}, "stake", "more than 2 decimal places"),
        ({"stake": "ten"}, "stake", "must be a decimal amount"),
        ({"stake": "NaN"}, "stake", "finite"),
        ({"stake": True}, "stake", "got a boolean"),
        ({"stake": "1" * 30}, "stake", "more than 18 digits"),
        ({"odds": "2.0"}, "odds", "must be a double, got a string"),
        ({"odds": float("nan")}, "odds", "finite"),
        ({"event_time": "2026-01-01T00:00:00Z"}, "event_time", "milliseconds since the epoch"),
        ({"event_time": 1.5}, "event_time", "milliseconds since the epoch"),
        ({"channel": "FAX"}, "channel", "must be one of WEB, MOBILE"),
        ({"user_id": 7}, "user_id", "must be a string, got an integer"),
        ({"user_id": None}, "user_id", "must be a string, got null"),
        ({"event_id": "not-a-uuid"}, "event_id", "UUID"),
        ({"extra": 1}, "extra", "not in the schema"),
    ],
)
def test_bad_values_are_refused_with_the_field_and_the_reason(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(InvalidEvent) as refused:
        convert("BetPlaced", bet(**changes))
    assert refused.value.field == field and reason in refused.value.problem, refused.value


def test_a_record_that_is_not_an_object_is_refused() -> None:
    bodies: list[Any] = [None, [], "x", 3]
    for body in bodies:
        with pytest.raises(InvalidEvent, match="must be a JSON object"):
            convert("BetPlaced", body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(SOURCE_EVENT_TYPES), st.dictionaries(st.text(max_size=24), JSON, max_size=12), st.data()
)
def test_any_json_is_converted_or_refused_with_a_field(
    event_type: str, junk: dict[str, Any], data: Any
) -> None:
    fields = [f["name"] for f in CATALOG.schema(event_type).source["fields"]]
    body = {**junk, **data.draw(st.dictionaries(st.sampled_from(fields), JSON, max_size=len(fields)))}
    try:
        record = convert(event_type, body)
    except InvalidEvent as exc:
        assert exc.field and exc.problem
    else:
        CODEC.encode(Event(event_type, record))  # what passed is encodable


def test_the_openapi_document_is_valid_and_describes_what_the_api_takes() -> None:
    import jsonschema
    from openapi_spec_validator import validate

    document = openapi(CATALOG)
    validate(document)
    schemas = document["components"]["schemas"]
    assert set(SOURCE_EVENT_TYPES) <= set(schemas)
    body = {"type": "BetPlaced", "record": bet()}
    jsonschema.validate(json.loads(json.dumps(body)), schemas["BetPlaced"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "BetPlaced", "record": bet(extra=1)}, schemas["BetPlaced"])
