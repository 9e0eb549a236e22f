"""The durable retry schedule: the compacted ``webhooks.retries`` topic, and the webhook
dead-letter topic.

A message whose attempt failed is written to ``webhooks.retries`` (a signed
WebhookMessagePending, keyed ``"<endpoint_id> <message_id>"``, on the partition of its
endpoint) before the record it came from counts as resolved; it is removed by a tombstone
once delivered or given up. Dispatchers share the topic's partitions in their own
consumer group; the owner of a partition reads it from the start into its
:class:`~consumers.dispatcher.schedule.PendingBook` and fires each message when due, so a
dispatcher killed mid-backoff is followed by one (itself restarted, or another) that
resumes the schedule where it stood. Messages given up go to ``webhooks.dead-letters``
(WebhookMessageFailed, with payload and attempts) and on to the ``webhook_dead_letters``
table, from where ``recover`` sends them again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from consumers.dispatcher.schedule import Pending, PendingBook, as_ms, pending_key, retry_partition
from consumers.dispatcher.signing import RETRY_SIGNATURE, retry_record_is_authentic, retry_signature
from oddstream.errors import EventError, MalformedRecord
from oddstream.kafka.deadletter import dead_letter_headers, processing_failure
from oddstream.kafka.registry import learn_schema_ids
from oddstream.metrics import PROCESSING_ERRORS, REJECTED_RECORDS
from oddstream.settings import Settings
from schemas.catalog import Event
from schemas.intake import Intake
from schemas.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class Message:
    """One webhook message to one endpoint, as it stands between attempts."""

    endpoint_id: str
    message_id: str
    event_type: str
    payload: bytes
    attempts: int = 0
    first_attempt_ms: int | None = None
    outcomes: list[str] = field(default_factory=list)
    on_topic: bool = False  # a pending record for it may be on webhooks.retries

    @property
    def key(self) -> str:
        return pending_key(self.endpoint_id, self.message_id)

    @classmethod
    def waiting(cls, pending: Pending) -> Message:
        r = pending.record
        first = r.get("first_attempt")
        return cls(
            endpoint_id=r["endpoint_id"], message_id=r["message_id"], event_type=r["event_type"],
            payload=r["payload"].encode(), attempts=r["attempts"],
            first_attempt_ms=None if first is None else as_ms(first),
            outcomes=list(r["outcomes"]), on_topic=True,
        )  # fmt: skip

    def pending(self, now_ms: int, source: str, due_ms: int, failing_since_ms: int | None) -> Event:
        """The WebhookMessagePending that schedules its next attempt at ``due_ms``."""
        record = {
            **self.fields(now_ms, source),
            "next_attempt": due_ms,
            "endpoint_failing_since": failing_since_ms,
        }
        return Event("WebhookMessagePending", record)

    def fields(self, now_ms: int, source: str) -> dict[str, Any]:
        """The fields WebhookMessagePending and WebhookMessageFailed share."""
        return {
            "event_id": str(uuid.uuid4()), "event_time": now_ms, "source": source,
            "endpoint_id": self.endpoint_id, "message_id": self.message_id, "event_type": self.event_type,
            "payload": self.payload.decode(), "attempts": self.attempts,
            "first_attempt": self.first_attempt_ms, "outcomes": self.outcomes,
        }  # fmt: skip


class RetryTopic:
    """Reads the partitions of ``webhooks.retries`` this dispatcher owns into ``book``, and
    writes the schedule's changes (signed, acknowledged before they count)."""

    def __init__(
        self, settings: Settings, intake: Intake, producer: Callable[[], AIOKafkaProducer], book: PendingBook
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.topic = self.topics.webhook_retries
        self.intake = intake
        self._producer = producer
        self.book = book
        self.master = settings.webhook_master_secret.get_secret_value()
        self.owned: set[int] = set()
        self._partitions = 0
        self._loading: dict[TopicPartition, int] = {}  # partition -> end offset when assigned

    # -- reading -------------------------------------------------------------------------

    async def follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=f"{self.settings.topic_prefix}dispatcher-retries",
            enable_auto_commit=False,  # never committed: an owner always reads its partitions whole
            auto_offset_reset="earliest",
        )
        consumer.subscribe([self.topic], listener=_Rebalance(self, consumer))
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                await learn_schema_ids(
                    self.intake.codec, (m.value for ms in batch.values() for m in ms), "dispatcher (retries)"
                )
                for messages in batch.values():
                    for m in messages:
                        await self._apply(m)
                for tp, end in list(self._loading.items()):
                    if await consumer.position(tp) >= end:
                        del self._loading[tp]
                        self.book.loaded(tp.partition)
        finally:
            await consumer.stop()

    async def assigned(self, consumer: AIOKafkaConsumer, tps: set[TopicPartition]) -> None:
        if not tps:
            return
        ends = await consumer.end_offsets(list(tps))
        for tp in tps:
            self.owned.add(tp.partition)
            self.book.load(tp.partition)
            self._loading[tp] = ends[tp]
        for tp in tps:  # from the start, also when a rebalance gives back a partition it had
            consumer.seek(tp, 0)  # (below a compacted log's start: reset to the earliest)
        log.info("retries partitions %s assigned: reading them whole", sorted(tp.partition for tp in tps))

    def revoked(self, tps: set[TopicPartition]) -> None:
        gone = {tp.partition for tp in tps}
        self.owned -= gone
        self.book.forget(set(gone))
        for tp in tps:
            self._loading.pop(tp, None)

    async def _apply(self, m: Any) -> None:
        """One record: a message to schedule, a tombstone, or a dead letter with the reason."""
        try:
            if not retry_record_is_authentic(self.master, m.key or b"", m.value, m.headers):
                raise MalformedRecord(
                    "retry record not signed with this deployment's master secret (refused: nothing "
                    "is delivered from it)"
                )
            try:
                key = (m.key or b"").decode()
            except UnicodeDecodeError:
                raise MalformedRecord(f"retry record key is not UTF-8: {(m.key or b'')[:32]!r}") from None
            if m.value is None:
                self.book.apply(key, m.partition, None, m.timestamp)
                return
            event = self.intake.admit(m.topic, m.key, m.value, m.headers, m.timestamp)
            record = event.record
            if key != pending_key(record["endpoint_id"], record["message_id"]):
                raise MalformedRecord(f"key {key[:80]!r} is not '<endpoint_id> <message_id>' of its value")
            self.book.apply(key, m.partition, dict(record), as_ms(record["event_time"]))
            return
        except EventError as exc:
            reason = exc.reason
        except Exception as exc:  # a bug meeting an input: dead letter, go on
            PROCESSING_ERRORS.labels("dispatcher").inc()
            reason = processing_failure(exc)
        REJECTED_RECORDS.labels(m.topic, "retry").inc()
        log.warning("bad retry record %s[%d]@%d: %s", m.topic, m.partition, m.offset, reason)
        headers = dead_letter_headers(reason, m.topic, m.partition, m.offset, "dispatcher-retries")
        await self._producer().send_and_wait(
            self.topics.dead_letter, m.value or b"", key=m.key, headers=headers
        )

    # -- writing -------------------------------------------------------------------------

    async def schedule(self, message: Message, due_ms: int, failing_since_ms: int | None) -> None:
        """The message waits for an attempt at ``due_ms`` (acknowledged when this returns)."""
        now = _now_ms()
        event = message.pending(now, "dispatcher", due_ms, failing_since_ms)
        value = self.intake.codec.encode(event, topic=self.topic, trusted=True)
        await self._write(message, value, now, event.record)
        message.on_topic = True

    async def resolve(self, message: Message) -> None:
        """The message is done with (delivered or given up): a tombstone, if it was written."""
        if message.on_topic:
            await self._write(message, None, _now_ms(), None)
            message.on_topic = False

    async def give_up(self, message: Message, reason: str) -> None:
        """To the webhook dead-letter topic with its payload and attempts; off the schedule."""
        topic = self.topics.webhook_dead_letters
        event = Event(
            "WebhookMessageFailed", {**message.fields(_now_ms(), "dispatcher"), "reason": reason[:2000]}
        )
        value = self.intake.codec.encode(event, topic=topic, trusted=True)
        await self._producer().send_and_wait(topic, value, key=event.key)
        log.warning(
            "webhook %s to %s given up after %d attempt(s): %s",
            message.message_id, message.endpoint_id, message.attempts, reason[:300],
        )  # fmt: skip
        await self.resolve(message)

    async def _write(
        self, message: Message, value: bytes | None, now_ms: int, record: dict[str, Any] | None
    ) -> None:
        key = message.key.encode()
        partition = retry_partition(message.endpoint_id, await self._partition_count())
        headers = [(RETRY_SIGNATURE, retry_signature(self.master, key, value))]
        await self._producer().send_and_wait(
            self.topic, value, key=key, partition=partition, timestamp_ms=now_ms, headers=headers
        )
        if partition in self.owned:  # applied now, so a late read-back cannot fire it twice
            self.book.apply(message.key, partition, record, now_ms)

    async def _partition_count(self) -> int:
        if not self._partitions:
            self._partitions = len(await self._producer().partitions_for(self.topic))
        return self._partitions


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, retries: RetryTopic, consumer: AIOKafkaConsumer) -> None:
        self.retries, self.consumer = retries, consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.retries.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.retries.assigned(self.consumer, set(assigned))


def _now_ms() -> int:
    return int(time.time() * 1000)
