"""The producer SDK: validated, framed events onto the right topic with the right key.

Idempotent producer with ``acks=all``: a broker retry never duplicates or
reorders a record. A bad event raises :class:`InvalidEvent` at ``publish``
(nothing is sent); records Kafka did not acknowledge raise
:class:`DeliveryFailed` at ``flush``.

Example::

    with EventProducer(settings) as producer:
        producer.publish("OddsChanged", {"event_id": str(uuid4()), "event_time": now_ms,
                                         "source": "feed", "bookmaker": "pinnacle",
                                         "market_id": "m1", "selection_id": "home", "odds": 2.1})
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from oddstream.codecs import build_codec
from oddstream.errors import DeliveryFailed
from oddstream.settings import Settings
from schemas.catalog import Event
from schemas.codec import Codec
from schemas.topics import Topics


class EventProducer:
    """Publishes events; keeps count of what was acknowledged."""

    def __init__(self, settings: Settings, codec: Codec | None = None, **config: Any) -> None:
        self._codec = codec or build_codec(settings)
        self._topics = Topics(settings.topic_prefix)
        self._producer = Producer(
            {
                "bootstrap.servers": settings.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "client.id": "oddstream-producer",
                **config,
            }
        )
        self._failures: list[tuple[bytes | None, str]] = []
        self.delivered = 0

    @property
    def codec(self) -> Codec:
        """The codec this producer frames events with (for callers that add headers)."""
        return self._codec

    def publish(self, event_type: str, record: dict[str, Any], now_ms: int | None = None) -> None:
        """Validate, encode and queue one event. Raises :class:`InvalidEvent` if it is bad."""
        self.publish_event(Event(event_type, record), now_ms)

    def publish_event(self, event: Event, now_ms: int | None = None) -> None:
        topic = self._topics.for_event(event.type)
        value = self._codec.encode(event, topic=topic, now_ms=now_ms)
        self.produce_raw(topic, event.key, value)

    def produce_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Send bytes as they are (replays, dead letters, tests of bad input), to ``partition``
        or the one the key hashes to."""
        while True:
            try:
                if partition is None:
                    self._producer.produce(
                        topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                    )
                else:
                    self._producer.produce(
                        topic, value, key, partition, headers=headers, on_delivery=self._on_delivery
                    )
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain
        self._producer.poll(0)

    def partitions(self, topic: str, timeout_s: float = 10.0) -> int:
        """How many partitions ``topic`` has."""
        metadata = self._producer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None or not metadata.partitions:
            raise DeliveryFailed([(None, f"topic {topic} is not available: {metadata.error}")])
        return len(metadata.partitions)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append((message.key(), str(error)))
        else:
            self.delivered += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record; raise :class:`DeliveryFailed` if any was not acknowledged."""
        remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining:
            failures.append((None, f"{remaining} record(s) still queued after {timeout_s:.0f} s"))
        if failures:
            raise DeliveryFailed(failures)

    async def acknowledged(self, timeout_s: float = 30.0) -> None:
        """:meth:`flush` for an event loop: poll without blocking it until every queued record
        was acknowledged; raise :class:`DeliveryFailed` as flush does."""
        deadline = time.monotonic() + timeout_s
        while (remaining := self._producer.flush(0)) and time.monotonic() < deadline:  # noqa: ASYNC110 - librdkafka has no awaitable
            await asyncio.sleep(0.005)
        failures, self._failures = self._failures, []
        if remaining:
            failures.append((None, f"{remaining} record(s) still queued after {timeout_s:.0f} s"))
        if failures:
            raise DeliveryFailed(failures)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
