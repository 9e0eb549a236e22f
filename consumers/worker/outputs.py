"""What one source record becomes: window results, late-event copies or a dead letter.

Shared by the Faust worker, its crash-recovery gap filler and ``oddstream replay``, so
every path classifies a record the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from oddstream.errors import EventError
from oddstream.kafka.deadletter import dead_letter_headers, processing_failure
from oddstream.kafka.late import late_headers
from oddstream.metrics import PROCESSING_ERRORS, REJECTED_RECORDS
from schemas.catalog import KEY_FIELD, Event
from schemas.codec import Codec
from schemas.intake import Headers, Intake
from schemas.rekeyed import REKEYED_TOPICS, WORKER_SIGNATURE, worker_signature
from schemas.topics import TOPIC_OF_EVENT, Topics
from streams.processor import Emission, Late, Output, PartitionProcessor


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int | None = None  # None: the key's


def apply_record(
    processor: PartitionProcessor,
    intake: Intake,
    origin: tuple[str, int, int],
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    kafka_ms: int,
    wall_ms: int | None = None,
) -> Output:
    """Admit (decode and check) and fold one record at ``origin`` (topic, partition, offset).

    The far-future check compares the event time with the record's Kafka timestamp (not the
    clock), so a replay rejects exactly what live did. A record that is refused, or whose
    processing raises, is reflected by the processor (its offset is passed) and comes back
    as ``rejected`` with the reason: one record never stops its partition."""
    topic, _, offset = origin
    if offset <= processor.offset:
        return Output(duplicate=True)
    try:
        event = intake.admit(topic, key, value, headers, kafka_ms)
    except EventError as exc:
        processor.skip(offset)
        REJECTED_RECORDS.labels(topic, type(exc).__name__).inc()
        return Output(rejected=exc.reason)
    now = wall_ms if wall_ms is not None else int(time.time() * 1000)
    try:
        return processor.process(offset, event.type, event.record, now)
    except Exception as exc:  # a bug meeting an input: the record is dead-lettered, the partition goes on
        processor.skip(offset)
        PROCESSING_ERRORS.labels("worker").inc()
        return Output(rejected=processing_failure(exc))


def messages(
    output: Output,
    topics: Topics,
    codec: Codec,
    source: str,
    origin: tuple[str, int, int],
    key: bytes | None,
    value: bytes | None,
    stage: str,
    state_key: bytes,
    fanout: int = 1,
) -> list[Message]:
    """The Kafka records for an output of the record at ``origin`` (topic, partition, offset);
    ``state_key`` signs what goes to bets.by-user (schemas/rekeyed.py), whose partitions
    (``fanout``) each get a clock mark."""
    topic, partition, offset = origin
    if output.rejected is not None:
        headers = dead_letter_headers(output.rejected, topic, partition, offset, stage)
        return [Message(topics.dead_letter, key, value or b"", headers)]
    out = [
        m for e in output.emissions for m in emission_messages(e, topics, codec, source, state_key, fanout)
    ]
    out += [late_message(late, topics, origin, key, value) for late in output.late]
    return out


def emission_messages(
    emission: Emission, topics: Topics, codec: Codec, source: str, state_key: bytes, fanout: int
) -> list[Message]:
    """An emission's records: one, keyed; a clock mark of bets.by-user, one to each of its
    ``fanout`` partitions (the user stage of each waits for every bets partition's clock)."""
    message = window_message(emission, topics, codec, source, state_key)
    if emission.event_type == "UserBetRecorded" and emission.record["action"] == "CLOCK":
        return [replace(message, partition=p) for p in range(fanout)]
    return [message]


def window_message(
    emission: Emission, topics: Topics, codec: Codec, source: str, state_key: bytes = b""
) -> Message:
    """An emission as a record of its topic, keyed by its partition key; one the worker reads
    back (bets.by-user) signed with ``state_key``."""
    event = Event(emission.event_type, {**emission.record, "source": source})
    topic = topics.for_event(emission.event_type)
    value = codec.encode(event, topic=topic, trusted=True)
    key = str(event.record[KEY_FIELD[event.type]]).encode()
    if TOPIC_OF_EVENT[event.type] in REKEYED_TOPICS:
        assert state_key, "a record the worker reads back is signed"
        return Message(topic, key, value, [(WORKER_SIGNATURE, worker_signature(state_key, key, value))])
    return Message(topic, key, value, [])


def late_message(
    late: Late, topics: Topics, origin: tuple[str, int, int], key: bytes | None, value: bytes | None
) -> Message:
    """The original bytes, with the window kind, times and origin in headers."""
    headers = late_headers(late.kind, late.event_ms, late.watermark, late.missed[0], origin)
    return Message(topics.late, key, value or b"", headers)
