"""Admission of a Kafka record: the one decode-and-validate path every consumer uses. Pure.

Anything can be written to a topic by any Kafka client, so a record is untrusted until
:meth:`Intake.admit` has checked, in this order (the first failure is the reason):

1. the value is present (a null value, a tombstone, is no event) and within the size
   limit of its kind of topic;
2. the key and headers are well formed: on a source topic (and on ``bets.by-user``, which
   the worker reads back) the key is the event's partition key (``market_id``,
   ``service`` or ``user_id``, see :data:`~schemas.catalog.KEY_FIELD`), UTF-8 and short;
   at most ``max_headers`` headers of at most ``max_header_bytes`` in all; a record of
   ``bets.by-user`` is signed by the worker (schemas/rekeyed.py);
3. the frame is a known one and the body decodes to exactly one record (no trailing
   bytes), of an event type that belongs on this topic;
4. strings and arrays are within their limits;
5. the domain rules hold (:func:`~schemas.validation.check_values`), among them that
   the event time is at most ``max_skew_ms`` ahead of the record's Kafka timestamp: an
   event beyond it would drag its partition's watermark and make genuine events late.

Each failure raises an :class:`~oddstream.errors.EventError` whose ``reason`` names the
problem, so the caller can dead-letter the original bytes with it.

Example::

    intake = Intake(codec, Topics("oddstream."))
    event = intake.admit("oddstream.odds", key, value, headers, kafka_ms)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oddstream.errors import InvalidEvent, MalformedRecord, OversizeRecord, UndecodableEvent
from schemas.catalog import KEY_FIELD, Event
from schemas.codec import Codec
from schemas.rekeyed import REKEYED_TOPICS, WORKER_SIGNATURE, signed_by_worker
from schemas.topics import SOURCE_TOPICS, TOPIC_OF_EVENT, Topics
from schemas.validation import check_values

# aiokafka gives a sequence of (name, value) pairs, Faust may give a mapping
Headers = Sequence[tuple[Any, Any]] | Mapping[Any, Any] | None


@dataclass(frozen=True)
class Limits:
    """The documented bounds of an input record (docs/events.md, "Bad input")."""

    max_source_bytes: int = 64 * 1024  # a source event (bets, odds, system, users)
    max_derived_bytes: int = 1024 * 1024  # a derived event (window results, insights, registry)
    max_string_chars: int = 1_024  # any string field of a source event
    max_array_items: int = 1_024  # any array or map of a source event
    max_key_bytes: int = 256
    max_headers: int = 32
    max_header_bytes: int = 16 * 1024  # keys and values together
    max_skew_ms: int = 5_000  # event time ahead of the record's Kafka timestamp


class Intake:
    """Decodes and checks records for one topic prefix; see the module docstring."""

    def __init__(
        self, codec: Codec, topics: Topics, limits: Limits | None = None, state_key: bytes | None = None
    ) -> None:
        self.codec = codec
        self.limits = limits or Limits()
        self.state_key = state_key  # authenticates what the worker reads back (schemas/rekeyed.py)
        self._suffix_of = {topics.name(s): s for s in set(TOPIC_OF_EVENT.values())}
        self._sources = {topics.name(s) for s in SOURCE_TOPICS}
        # written by the worker but read back by it: checked like a source (key, sizes, values),
        # except for the far future, which the source record's admission checked
        self._rekeyed = {topics.name(suffix) for suffix in REKEYED_TOPICS}

    def admit(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, kafka_ms: int
    ) -> Event:
        """The event in the record, or an :class:`EventError` that says why there is none."""
        source = topic in self._sources
        rekeyed = topic in self._rekeyed
        limits = self.limits
        if value is None:
            raise UndecodableEvent("null value (a tombstone): this topic carries events, not deletions")
        limit = limits.max_source_bytes if source or rekeyed else limits.max_derived_bytes
        if len(value) > limit:
            raise OversizeRecord(f"value of {len(value):,} bytes is over the limit of {limit:,}")
        self._check_headers(headers)
        if rekeyed:
            if self.state_key is None:
                raise MalformedRecord(f"{topic} is read only by roles that hold the worker's state key")
            if not signed_by_worker(self.state_key, key or b"", value, headers):
                raise MalformedRecord(
                    f"not signed by a worker of this deployment ({WORKER_SIGNATURE} header, keyed by "
                    "ODDSTREAM_WORKER_STATE_KEY): only the worker writes this topic"
                )
        event = self.codec.decode(value)
        suffix = self._suffix_of.get(topic)
        if suffix is not None and TOPIC_OF_EVENT[event.type] != suffix:
            raise MalformedRecord(f"{event.type} does not belong on {topic}")
        if source or rekeyed:
            self._check_key(event, key)
            check_sizes(event, limits)
            check_values(event, now_ms=kafka_ms if source else None, max_future_ms=limits.max_skew_ms)
        return event

    def _check_key(self, event: Event, key: bytes | None) -> None:
        field = KEY_FIELD[event.type]
        expected = str(event.record[field])
        if key is None:
            raise MalformedRecord(f"{event.type} has no key; it must be keyed by its {field} {expected!r}")
        if len(key) > self.limits.max_key_bytes:
            raise OversizeRecord(f"key of {len(key)} bytes is over the limit of {self.limits.max_key_bytes}")
        try:
            text = key.decode()
        except UnicodeDecodeError:
            raise MalformedRecord(f"key is not UTF-8: {key[:32]!r}") from None
        if text != expected:
            raise MalformedRecord(
                f"key {text[:64]!r} is not the {field} {expected[:64]!r} (the key decides the partition)"
            )

    def _check_headers(self, headers: Headers) -> None:
        if not headers:
            return
        if len(headers) > self.limits.max_headers:
            raise MalformedRecord(f"{len(headers)} headers; at most {self.limits.max_headers} are accepted")
        total = 0
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, data in pairs:
            if not isinstance(name, str):
                raise MalformedRecord(f"header name is not text: {name!r:.40}")
            if data is not None and not isinstance(data, bytes | bytearray):
                raise MalformedRecord(f"header {name[:40]!r} has a value that is not bytes")
            total += len(name.encode(errors="replace")) + len(data or b"")
        if total > self.limits.max_header_bytes:
            raise OversizeRecord(
                f"headers of {total:,} bytes are over the limit of {self.limits.max_header_bytes:,}"
            )


_SIZED = (str, list, dict)  # a tuple: ``str | list | dict`` builds a union object on every call


def check_sizes(event: Event, limits: Limits) -> None:
    """Strings and arrays of a source event within their limits (nested ones too)."""
    longest = limits.max_string_chars
    for name, value in event.record.items():
        if type(value) is str:  # the common case, checked here without a call
            if len(value) > longest:
                _check_size(event.type, name, value, limits)
        elif isinstance(value, _SIZED):
            _check_size(event.type, name, value, limits)


def _check_size(event_type: str, name: str, value: Any, limits: Limits) -> None:
    if isinstance(value, str):
        if len(value) > limits.max_string_chars:
            raise InvalidEvent(
                event_type, name, f"{len(value):,} characters; at most {limits.max_string_chars:,}"
            )
    elif isinstance(value, list | dict):
        if len(value) > limits.max_array_items:
            raise InvalidEvent(event_type, name, f"{len(value):,} items; at most {limits.max_array_items:,}")
        for item in value.values() if isinstance(value, dict) else value:
            _check_size(event_type, name, item, limits)
