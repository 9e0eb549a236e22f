"""Events from HTTP onto Kafka, answered only once Kafka acknowledged them.

One idempotent ``acks=all`` producer for the role; a thread serves its delivery reports
and resolves each request's futures, so a request waits for exactly its own records.
Validation is the producer SDK's (the codec): a bad event is refused before anything of
its batch is sent.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from gateway.api.convert import record_from_json
from oddstream.codecs import build_codec
from oddstream.errors import DeliveryFailed, InvalidEvent
from oddstream.settings import Settings
from schemas.catalog import Event
from schemas.topics import SOURCE_EVENT_TYPES, Topics


class Ingest:
    def __init__(self, settings: Settings) -> None:
        self.codec = build_codec(settings)
        self.topics = Topics(settings.topic_prefix)
        self._producer = Producer({
            "bootstrap.servers": settings.bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "compression.type": "lz4", "client.id": "oddstream-api",
        })  # fmt: skip
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="api-deliveries", daemon=True)
        self._poller.start()

    def events(self, body: Any, now_ms: int) -> list[Event]:
        """The checked events of a body: one ``{"type", "record"}`` object or a list of them.
        Raises :class:`InvalidEvent` for the first bad one, with its index in a batch."""
        items = body if isinstance(body, list) else [body]
        events = []
        for index, item in enumerate(items):
            where = f"[{index}]." if isinstance(body, list) else ""
            try:
                events.append(self._event(item, now_ms))
            except InvalidEvent as exc:
                raise InvalidEvent(exc.event_type, f"{where}{exc.field}", exc.problem) from None
        return events

    def _event(self, item: Any, now_ms: int) -> Event:
        if not isinstance(item, dict) or set(item) - {"type", "record"} or "type" not in item:
            raise InvalidEvent("?", "body", 'each event must be {"type": "<EventType>", "record": {...}}')
        event_type = item["type"]
        if event_type not in SOURCE_EVENT_TYPES:
            raise InvalidEvent(
                str(event_type)[:60],
                "type",
                f"not an event producers publish; one of {', '.join(SOURCE_EVENT_TYPES)}",
            )
        schema = self.codec.catalog.schema(event_type).source
        event = Event(event_type, record_from_json(event_type, schema, item.get("record")))
        self.codec.validate(event, now_ms)
        return event

    async def publish(self, events: list[Event]) -> list[dict[str, Any]]:
        """Encode the events :meth:`events` checked, send them, and wait for Kafka's
        acknowledgements: where each one landed. Raises :class:`DeliveryFailed` if Kafka
        refused any."""
        loop = asyncio.get_running_loop()
        framed = []
        for event in events:
            topic = self.topics.for_event(event.type)
            framed.append((topic, event.key, self.codec.encode(event, topic=topic, trusted=True)))
        futures = []
        for topic, key, value in framed:
            future: asyncio.Future[Message] = loop.create_future()
            futures.append(future)
            self._produce(topic, key, value, _resolver(loop, future))
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed: list[tuple[bytes | None, str]] = [
            (framed[i][1], str(r)) for i, r in enumerate(results) if isinstance(r, BaseException)
        ]
        if failed:
            raise DeliveryFailed(failed)
        return [{"topic": m.topic(), "partition": m.partition(), "offset": m.offset()} for m in results]  # type: ignore[union-attr]

    def _produce(self, topic: str, key: bytes | None, value: bytes, callback: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=callback)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(0.1)

    def close(self) -> None:
        self._producer.flush(10)
        self._running = False
        self._poller.join(5)


def _resolver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Message]) -> Any:
    def done(error: KafkaError | None, message: Message) -> None:
        def settle() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(RuntimeError(str(error)))
            else:
                future.set_result(message)

        loop.call_soon_threadsafe(settle)

    return done
