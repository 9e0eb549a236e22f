"""The epoch of the gateway's log: names the topics the offsets refer to.

A topic deleted and created again starts its offsets anew, so a position saved before means
other records after. Kafka gives every topic a random id when it is created; the epoch is a
digest of the ids of the topics the gateway reads, so it changes exactly when one of them is
created again. Computed when the gateway starts (a topic recreated while it runs is seen at
its next start).
"""

from __future__ import annotations

import hashlib

from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient

from oddstream.settings import Settings


def epoch_of(topic_ids: dict[str, str]) -> str:
    """Pure: the epoch of topics with these ids (16 hex digits)."""
    text = "\n".join(f"{topic}={topic_ids[topic]}" for topic in sorted(topic_ids))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def log_epoch(settings: Settings, topics: list[str]) -> str:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    described = admin.describe_topics(TopicCollection(topics), request_timeout=30)
    return epoch_of({topic: str(future.result().topic_id) for topic, future in described.items()})
