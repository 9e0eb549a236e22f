"""Send messages again, or a test message, through the durable schedule (the API's replay).

Each message becomes a signed WebhookMessagePending due now, with a fresh schedule
(attempts 0), on its endpoint's partition of ``webhooks.retries``; the dispatcher that owns
the partition delivers it like any retry, with the same ``webhook-id`` as before, so a
receiver that got it already can tell.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from consumers.dispatcher.retries import Message
from consumers.dispatcher.schedule import retry_partition
from consumers.dispatcher.signing import RETRY_SIGNATURE, retry_signature
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.topics import Topics

TEST_EVENT_TYPE = "WebhookTest"


@dataclass(frozen=True)
class Replay:
    endpoint_id: str
    message_id: str
    event_type: str
    payload: str


def test_message(endpoint_id: str) -> Replay:
    """A message an endpoint's owner can use to check their receiver and its verification."""
    now = datetime.now(UTC).isoformat()
    body = {"type": TEST_EVENT_TYPE, "timestamp": now, "data": {"endpoint_id": endpoint_id, "test": True}}
    message_id = f"msg_test_{uuid.uuid4()}"
    return Replay(endpoint_id, message_id, TEST_EVENT_TYPE, json.dumps(body, separators=(",", ":")))


def schedule_now(settings: Settings, replays: list[Replay]) -> None:
    """Write each replay to the retry schedule, due now; acknowledged when this returns."""
    if not replays:
        return
    topic = Topics(settings.topic_prefix).webhook_retries
    master = settings.webhook_master_secret.get_secret_value()
    now = int(time.time() * 1000)
    with EventProducer(settings) as producer:
        partitions = producer.partitions(topic)
        for replay in replays:
            message = Message(
                replay.endpoint_id, replay.message_id, replay.event_type, replay.payload.encode()
            )
            value = producer.codec.encode(message.pending(now, "api", now, None), topic=topic, trusted=True)
            key = message.key.encode()
            producer.produce_raw(
                topic,
                key,
                value,
                headers=[(RETRY_SIGNATURE, retry_signature(master, key, value))],
                partition=retry_partition(replay.endpoint_id, partitions),
            )
