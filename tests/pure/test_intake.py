"""Admission of Kafka records: every kind of bad record is refused with its reason, and
nothing but the documented rejection ever escapes (fuzzed with generated and mutated frames)."""

from __future__ import annotations

import struct
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oddstream.errors import EventError, InvalidEvent, MalformedRecord, OversizeRecord, UndecodableEvent
from schemas.catalog import Event, load_catalog
from schemas.codec import Codec
from schemas.intake import Intake, Limits
from schemas.rekeyed import WORKER_SIGNATURE, worker_signature
from schemas.topics import TOPIC_OF_EVENT, Topics
from tests.pure.registry_double import InMemoryIds
from tests.strategies import records

pytestmark = pytest.mark.pure
CATALOG = load_catalog()
TOPICS = Topics("p.")
NOW = 1_767_225_600_000
INTAKE = Intake(Codec(CATALOG), TOPICS)


def quote(**changes: Any) -> dict[str, Any]:
    record = {
        "event_id": str(uuid.uuid4()), "event_time": NOW - 1_000, "source": "feed", "bookmaker": "pinnacle",
        "market_id": "m1", "selection_id": "home", "odds": 2.1,
    }  # fmt: skip
    return {**record, **changes}


def frame(record: dict[str, Any], event_type: str = "OddsChanged") -> bytes:
    return Codec(CATALOG).encode(Event(event_type, record), trusted=True)


def admit(value: bytes | None, key: bytes | None = b"m1", topic: str = "p.odds", **kw: Any) -> Event:
    return INTAKE.admit(topic, key, value, kw.get("headers"), kw.get("kafka_ms", NOW))


def test_a_valid_record_is_admitted() -> None:
    event = admit(frame(quote()))
    assert event.type == "OddsChanged" and event.record["odds"] == 2.1


CASES = [
    ("tombstone", lambda: admit(None), UndecodableEvent, "null value"),
    ("empty value", lambda: admit(b""), UndecodableEvent, "not an oddstream frame"),
    ("trailing bytes", lambda: admit(frame(quote()) + b"\x00" * 16), UndecodableEvent, "16 trailing byte"),
    ("truncated body", lambda: admit(frame(quote())[:-5]), UndecodableEvent, "does not decode"),
    ("truncated header", lambda: admit(b"\xc3\x01\x01\x02"), UndecodableEvent, "10-byte header"),
    ("unknown fingerprint", lambda: admit(b"\xc3\x01" + b"\x42" * 8), UndecodableEvent, "fingerprint"),
    ("unknown schema id", lambda: admit(b"\x00" + struct.pack(">I", 77)), UndecodableEvent, "schema id 77"),
    ("json", lambda: admit(b'{"odds": 2.1}'), UndecodableEvent, "not an oddstream frame"),
    ("nan", lambda: admit(frame(quote(odds=float("nan")))), InvalidEvent, "finite"),
    ("infinity", lambda: admit(frame(quote(odds=float("inf")))), InvalidEvent, "finite"),
    ("odds at 1.0", lambda: admit(frame(quote(odds=1.0))), InvalidEvent, "greater than 1.0"),
    ("not a uuid", lambda: admit(frame(quote(event_id="x"))), UndecodableEvent, "UUID"),
    ("empty id", lambda: admit(frame(quote(bookmaker=" "))), InvalidEvent, "must not be empty"),
    ("seconds not ms", lambda: admit(frame(quote(event_time=1_700_000_000))), InvalidEvent, "before 2000"),
    (
        "beyond the skew",
        lambda: admit(frame(quote(event_time=NOW + 5_001))),
        InvalidEvent,
        "5,001 ms in the future",
    ),
    ("long string", lambda: admit(frame(quote(source="s" * 1_025))), InvalidEvent, "1,025 characters"),
    ("oversize value", lambda: admit(frame(quote()) + b"\x00" * 70_000), OversizeRecord, "over the limit"),
    ("no key", lambda: admit(frame(quote()), key=None), MalformedRecord, "has no key"),
    ("wrong key", lambda: admit(frame(quote()), key=b"m2"), MalformedRecord, "is not the market_id"),
    ("key not utf-8", lambda: admit(frame(quote()), key=b"\xff\xfe"), MalformedRecord, "not UTF-8"),
    ("huge key", lambda: admit(frame(quote()), key=b"k" * 300), OversizeRecord, "key of 300 bytes"),
    (
        "wrong topic",
        lambda: admit(frame(quote()), topic="p.bets"),
        MalformedRecord,
        "does not belong on p.bets",
    ),
    (
        "too many headers",
        lambda: admit(frame(quote()), headers=[("h", b"v")] * 33),
        MalformedRecord,
        "33 headers",
    ),
    (
        "huge headers",
        lambda: admit(frame(quote()), headers=[("h", b"v" * 20_000)]),
        OversizeRecord,
        "headers of",
    ),
    ("header name", lambda: admit(frame(quote()), headers=[(b"h", b"v")]), MalformedRecord, "not text"),
]  # fmt: skip


@pytest.mark.parametrize("name, call, error, reason", CASES, ids=[c[0] for c in CASES])
def test_each_kind_of_bad_record_is_refused_with_its_reason(
    name: str, call: Any, error: type, reason: str
) -> None:
    with pytest.raises(error, match=reason) as caught:
        call()
    assert isinstance(caught.value, EventError) and caught.value.reason


def test_the_skew_is_measured_from_the_records_kafka_timestamp_not_the_clock() -> None:
    old = NOW - 86_400_000  # a replay a day later reads the same timestamps
    assert admit(frame(quote(event_time=old + 4_000)), kafka_ms=old).type == "OddsChanged"
    with pytest.raises(InvalidEvent, match="in the future"):
        admit(frame(quote(event_time=old + 6_000)), kafka_ms=old)


def test_limits_are_settings() -> None:
    strict = Intake(Codec(CATALOG), TOPICS, Limits(max_string_chars=8, max_skew_ms=0))
    with pytest.raises(InvalidEvent, match="9 characters"):
        strict.admit("p.odds", b"m1", frame(quote(source="feedsfeed")), None, NOW)
    with pytest.raises(InvalidEvent, match="in the future"):
        strict.admit("p.odds", b"m1", frame(quote(source="feed", event_time=NOW + 1)), None, NOW)


def test_arrays_are_bounded_too() -> None:
    record = {
        "event_id": str(uuid.uuid4()), "event_time": NOW - 1_000, "source": "feed", "market_id": "m1",
        "winning_selection_ids": [f"s{i}" for i in range(1_025)],
    }  # fmt: skip
    with pytest.raises(InvalidEvent, match="1,025 items"):
        admit(frame(record, "MarketResulted"))


def test_derived_topics_need_a_valid_frame_but_no_source_key() -> None:
    record = quote()
    value = frame(record)
    with pytest.raises(MalformedRecord, match="does not belong"):
        INTAKE.admit(TOPICS.odds_window_1m, None, value, None, NOW)
    with pytest.raises(UndecodableEvent, match="null value"):
        INTAKE.admit(TOPICS.alerts, b"k", None, None, NOW)


@pytest.mark.parametrize("event_type", ["OddsChanged", "BetPlaced", "ApiCallRecorded", "UserActivity"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_valid_frames_only_ever_raise_event_errors(event_type: str, data: st.DataObject) -> None:
    record = data.draw(records(event_type))
    value = bytearray(Codec(CATALOG).encode(Event(event_type, record), trusted=True))
    for _ in range(data.draw(st.integers(1, 4))):
        operation = data.draw(st.sampled_from(["flip", "cut", "insert", "append"]))
        at = data.draw(st.integers(0, len(value)))
        if operation == "flip" and at < len(value):
            value[at] ^= 1 << data.draw(st.integers(0, 7))
        elif operation == "cut":
            del value[at : at + data.draw(st.integers(1, 8))]
        elif operation == "insert":
            value[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            value += data.draw(st.binary(min_size=1, max_size=8))
    topic = TOPICS.for_event(event_type)
    key = data.draw(st.one_of(st.none(), st.binary(max_size=12), st.just(Event(event_type, record).key)))
    try:
        INTAKE.admit(topic, key, bytes(value), None, NOW)
    except EventError as exc:
        assert exc.reason
    # anything else (TypeError, KeyError, MemoryError ...) fails the test


@pytest.mark.parametrize("event_type", ["OddsChanged", "BetSettled", "UserActivity", "AlertChanged"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_confluent_frames_only_ever_raise_event_errors(
    event_type: str, data: st.DataObject
) -> None:
    """Schema ids, union branch indexes and bodies mangled: refused with a reason, never a crash."""
    ids = InMemoryIds()
    topic = TOPICS.for_event(event_type)
    writer = Codec(CATALOG, ids)
    record = data.draw(records(event_type))
    value = bytearray(writer.encode(Event(event_type, record), topic=topic, trusted=True))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, min(len(value), 8)))  # the header and branch index first
        operation = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if operation == "flip" and at < len(value):
            value[at] ^= 1 << data.draw(st.integers(0, 7))
        elif operation == "cut":
            del value[at : at + data.draw(st.integers(1, 4))]
        else:
            value[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    reader = Intake(Codec(CATALOG, ids), TOPICS)
    try:
        reader.admit(topic, Event(event_type, record).key, bytes(value), None, NOW)
    except EventError as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None)
@given(
    topic=st.sampled_from(sorted({TOPICS.name(s) for s in TOPIC_OF_EVENT.values()})),
    key=st.one_of(st.none(), st.binary(max_size=40)),
    value=st.one_of(st.none(), st.binary(max_size=300)),
    headers=st.one_of(
        st.none(), st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=16)), max_size=4)
    ),
)
def test_fuzz_arbitrary_records_on_any_topic(
    topic: str, key: bytes | None, value: bytes | None, headers: Any
) -> None:
    try:
        INTAKE.admit(topic, key, value, headers, NOW)
    except EventError as exc:
        assert exc.reason


# -- bets.by-user: written by the worker, read back by it: signed ------------------------------

STATE_KEY = b"the-operators-state-key"
SIGNED_INTAKE = Intake(Codec(CATALOG), TOPICS, state_key=STATE_KEY)


def user_bet(**changes: Any) -> dict[str, Any]:
    record = {
        "event_id": str(uuid.uuid4()), "event_time": NOW - 1_000, "source": "worker", "user_id": "u1",
        "bet_id": "b1", "market_id": "m1", "action": "PLACED", "stake": Decimal("10.00"), "won": None,
        "source_partition": 0, "source_offset": 7, "source_clock": NOW - 1_000, "idle": False,
    }  # fmt: skip
    return {**record, **changes}


def admit_user_bet(
    record: dict[str, Any],
    key: bytes = b"u1",
    signing_key: bytes | None = STATE_KEY,
    intake: Intake = SIGNED_INTAKE,
) -> Event:
    value = frame(record, "UserBetRecorded")
    headers = [] if signing_key is None else [(WORKER_SIGNATURE, worker_signature(signing_key, key, value))]
    return intake.admit(TOPICS.bets_by_user, key, value, headers, NOW)


def test_a_signed_user_bet_is_admitted() -> None:
    assert admit_user_bet(user_bet()).record["stake"] == Decimal("10.00")
    assert admit_user_bet(user_bet(action="SETTLED", stake=None, won=True)).record["won"] is True


def signed_quote() -> Event:
    value = frame(quote())
    headers = [(WORKER_SIGNATURE, worker_signature(STATE_KEY, b"m1", value))]
    return SIGNED_INTAKE.admit(TOPICS.bets_by_user, b"m1", value, headers, NOW)


@pytest.mark.parametrize(
    ("why", "call", "reason"),
    [
        ("unsigned", lambda: admit_user_bet(user_bet(), signing_key=None), "not signed by a worker"),
        ("another key", lambda: admit_user_bet(user_bet(), signing_key=b"theirs"), "not signed by a worker"),
        ("no key to check", lambda: admit_user_bet(user_bet(), intake=INTAKE), "hold the worker's state key"),
        ("wrong partition key", lambda: admit_user_bet(user_bet(), key=b"u2"), "is not the user_id"),
        ("placed, no stake", lambda: admit_user_bet(user_bet(stake=None)), "must have a stake"),
        ("settled, staked", lambda: admit_user_bet(user_bet(action="SETTLED", won=False)), "must not have"),
        ("settled, no won", lambda: admit_user_bet(user_bet(action="SETTLED", stake=None)), "have a won"),
        ("a bet on the wrong topic", lambda: signed_quote(), "does not belong on"),
    ],
)  # fmt: skip
def test_a_bad_user_bet_is_refused_with_its_reason(why: str, call: Any, reason: str) -> None:
    with pytest.raises(EventError) as refused:
        call()
    assert reason in refused.value.reason, (why, refused.value.reason)
