"""The wire codec: both framings, round trips, bad bytes."""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oddstream.errors import EventError, UndecodableEvent
from schemas.catalog import Event, load_catalog
from schemas.codec import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, Codec, types_on_topic_of
from schemas.jsonable import jsonable
from tests.pure.registry_double import InMemoryIds
from tests.strategies import records

pytestmark = pytest.mark.pure
CATALOG = load_catalog()
TYPES = CATALOG.types()


def normalised(record: dict[str, Any]) -> Any:
    """What a decoded record looks like as JSON (timestamps as ms, decimals as strings)."""
    return json.loads(json.dumps(jsonable(record)))


def test_crc64_avro_fingerprint_matches_the_avro_spec_vector() -> None:
    from fastavro.schema import fingerprint

    # the Avro spec's CRC-64-AVRO of the schema "null" is 0x63dd24e7cc258f8a, written little-endian
    assert bytes.fromhex(fingerprint('"null"', "CRC-64-AVRO")) == struct.pack("<Q", 0x63DD24E7CC258F8A)


@pytest.mark.parametrize("event_type", TYPES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_single_object_round_trip(event_type: str, data: st.DataObject) -> None:
    record = data.draw(records(event_type))
    codec = Codec(CATALOG)
    frame = codec.encode(Event(event_type, record))
    assert frame[:2] == SINGLE_OBJECT_MAGIC
    assert frame[2:10] == CATALOG.schema(event_type).fingerprint
    back = codec.decode(frame)
    assert back.type == event_type
    assert normalised(back.record) == normalised(record)


TOPIC_OF = {
    "BetPlaced": "oddstream.bets",
    "OddsChanged": "oddstream.odds",
    "UserActivity": "oddstream.users",
    "OddsWindowUpdated": "oddstream.odds.window.1m",
}


@pytest.mark.parametrize("event_type", sorted(TOPIC_OF))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_confluent_round_trip_and_both_framings_on_one_topic(event_type: str, data: st.DataObject) -> None:
    record = data.draw(records(event_type))
    ids = InMemoryIds()
    topic = TOPIC_OF[event_type]
    registry_codec = Codec(CATALOG, ids)
    confluent = registry_codec.encode(Event(event_type, record), topic=topic)
    assert confluent[:1] == CONFLUENT_MAGIC
    schema_id = struct.unpack(">I", confluent[1:5])[0]
    assert ids.subjects[-1] == f"{topic}-value"  # Confluent's default topic name strategy
    registered = json.loads(ids.schemas[schema_id])
    if isinstance(registered, list):  # a topic with several event types: their union
        assert [r["name"] for r in registered] == list(types_on_topic_of(event_type))
        assert confluent[5] == 2 * registered.index(next(r for r in registered if r["name"] == event_type))
    else:
        assert registered["name"] == event_type
    single = Codec(CATALOG).encode(Event(event_type, record))
    reader = Codec(CATALOG, ids)  # another process: knows the id only from the registry
    for frame in (confluent, single):  # one reader, either framing
        assert normalised(reader.decode(frame).record) == normalised(record)
        assert reader.decode(frame).type == event_type


@pytest.mark.parametrize("event_type", ["BetSettled", "MarketResulted", "ApiCallRecorded"])
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_a_union_frame_written_by_plain_fastavro_decodes(event_type: str, data: st.DataObject) -> None:
    """Any Avro writer of the subject's union (as Confluent's serializer is) is read."""
    record = data.draw(records(event_type))
    ids = InMemoryIds()
    schema_json, branch = Codec(CATALOG).subject_schema(event_type)
    assert branch >= 0
    schema_id = ids.id_for("t-value", schema_json)
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(
        out, fastavro.parse_schema(json.loads(schema_json)), (f"oddstream.events.{event_type}", record)
    )
    back = Codec(CATALOG, ids).decode(out.getvalue())
    assert back.type == event_type
    assert normalised(back.record) == normalised(record)


@pytest.mark.parametrize(
    "registered, frame_tail, reason",
    [
        (None, b"\x02", "schema id 7 is not in the Schema Registry"),
        ('"string"', b"\x02a", "schema id 7: the schema is not a record"),
        ('["null", "string"]', b"\x00", "schema id 7: union branch 0 is not a record"),
        ('{"type": "record", "name": "Nope", "fields": []}', b"", "'Nope', not an event known here"),
        ("not json", b"", "its schema is not JSON"),
        (json.dumps([CATALOG.schema("BetPlaced").source]), b"\x04", "union branch 2 of schema id 7"),
        (json.dumps([CATALOG.schema("BetPlaced").source]), b"\x80", "ends inside its union branch index"),
    ],
)
def test_bad_registry_schemas_and_frames_are_refused_with_a_reason(
    registered: str | None, frame_tail: bytes, reason: str
) -> None:
    ids = InMemoryIds()
    if registered is not None:
        ids.schemas[7] = registered
    codec = Codec(CATALOG, ids)
    with pytest.raises(UndecodableEvent, match=re.escape(reason)):
        codec.decode(b"\x00\x00\x00\x00\x07" + frame_tail)


def test_ids_to_learn_are_the_unknown_ones_and_a_missing_id_is_asked_once() -> None:
    ids = InMemoryIds()
    codec = Codec(CATALOG, ids)
    schema_json, _ = codec.subject_schema("UserActivity")
    known = ids.id_for("x-value", schema_json)
    frames = [b"\x00" + struct.pack(">I", i) + b"\x00" for i in (known, 9, 9)] + [
        b"\xc3\x01",
        b"",
        b"\x00\x00",
    ]
    assert codec.confluent_ids_to_learn(frames) == {known, 9}
    calls: list[int] = []
    original = ids.schema_for

    def counted(schema_id: int) -> str | None:
        calls.append(schema_id)
        return original(schema_id)

    ids.schema_for = counted  # type: ignore[method-assign]
    codec.learn(known)
    codec.learn(9)
    codec.learn(9)
    assert calls == [known, 9]
    assert codec.confluent_ids_to_learn(frames) == set()
    assert Codec(CATALOG).confluent_ids_to_learn(frames) == set()  # no registry: nothing to learn


def test_confluent_frame_without_a_registry_is_a_clear_error() -> None:
    with pytest.raises(UndecodableEvent, match="no Schema Registry"):
        Codec(CATALOG).decode(b"\x00\x00\x00\x00\x07" + b"\x02")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "not an oddstream frame"),
        (b"{json}", "not an oddstream frame"),
        (b"\xc3\x01\x00", "shorter than its 10-byte header"),
        (b"\xc3\x01" + b"\xff" * 8 + b"\x00", "unknown schema fingerprint"),
    ],
)
def test_bad_frames_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableEvent, match=reason):
        Codec(CATALOG).decode(data)


def test_truncated_body_is_undecodable() -> None:
    record = {
        "event_id": "7d4b5f0e-2c9a-4c3e-9a0f-6f1d2e3c4b5a", "event_time": 1_700_000_000_000,
        "source": "t", "bookmaker": "b", "market_id": "m", "selection_id": "s", "odds": 2.0,
    }  # fmt: skip
    frame = Codec(CATALOG).encode(Event("OddsChanged", record))
    with pytest.raises(UndecodableEvent):
        Codec(CATALOG).decode(frame[:-6])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_only_ever_raise_event_errors(data: bytes) -> None:
    codec = Codec(CATALOG)
    for candidate in (data, SINGLE_OBJECT_MAGIC + CATALOG.schema("BetPlaced").fingerprint + data):
        with contextlib.suppress(EventError):
            codec.decode(candidate)


def test_decoded_times_are_utc_datetimes() -> None:
    record = {
        "event_id": "7d4b5f0e-2c9a-4c3e-9a0f-6f1d2e3c4b5a", "event_time": 1_700_000_000_123,
        "source": "t", "bookmaker": "b", "market_id": "m", "selection_id": "s", "odds": 2.0,
    }  # fmt: skip
    codec = Codec(CATALOG)
    back = codec.decode(codec.encode(Event("OddsChanged", record)))
    assert back.record["event_time"] == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
