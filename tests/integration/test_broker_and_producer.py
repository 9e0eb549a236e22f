"""The local broker, topic admin and the producer SDK against real Kafka."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec  # type: ignore[attr-defined]

from oddstream.errors import DeliveryFailed, InvalidEvent
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.catalog import load_catalog
from schemas.codec import Codec
from schemas.topics import Topics
from tests.integration.kafka_read import read_all

pytestmark = pytest.mark.integration


def odds(market: str, odds_value: float, t: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "event_time": t, "source": "test",
        "bookmaker": "pinnacle", "market_id": market, "selection_id": "home", "odds": odds_value,
    }  # fmt: skip


def test_topics_are_created_once_with_the_registry_compacted(settings: Settings) -> None:
    created = ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    assert sorted(created) == sorted(topics.all())
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    # every new partition is served by its leader when ensure_topics returns (metadata names
    # the leader earlier; producing then can lose records, see oddstream/kafka/admin.py)
    partitions = [TopicPartition(t, p) for t in created for p in range(settings.topic_partitions)]
    answers = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions})  # type: ignore[no-untyped-call]
    assert [answers[tp].result(10).offset for tp in partitions] == [0] * len(partitions)
    assert ensure_topics(settings) == []
    resource = ConfigResource(ConfigResource.Type.TOPIC, topics.webhook_endpoints)
    config = admin.describe_configs([resource])[resource].result(10)
    assert config["cleanup.policy"].value == "compact"


def test_published_events_arrive_keyed_by_market_and_decode(settings: Settings) -> None:
    ensure_topics(settings)
    sent = [odds(f"m{n % 4}", 2.0 + n / 100, 1_800_000_000_000 + n) for n in range(40)]
    with EventProducer(settings) as producer:
        for record in sent:
            producer.publish("OddsChanged", record)
    assert producer.delivered == 40
    messages = read_all(settings.bootstrap, Topics(settings.topic_prefix).odds)
    codec = Codec(load_catalog())
    assert sorted(str(codec.decode(m.value() or b"").record["event_id"]) for m in messages) == sorted(
        r["event_id"] for r in sent
    )
    partitions_by_key: dict[bytes | None, set[int | None]] = {}
    for m in messages:
        partitions_by_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions_by_key.values())  # one market, one partition, ordered


def test_a_bad_event_is_refused_before_anything_is_sent(settings: Settings) -> None:
    ensure_topics(settings)
    with EventProducer(settings) as producer, pytest.raises(InvalidEvent, match="odds"):
        producer.publish("OddsChanged", odds("m1", 0.9, 1_800_000_000_000))
    assert read_all(settings.bootstrap, Topics(settings.topic_prefix).odds) == []


def test_undeliverable_records_raise_delivery_failed(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    producer = EventProducer(unreachable, None, **{"message.timeout.ms": 1500})
    producer.publish("OddsChanged", odds("m1", 2.0, 1_800_000_000_000))
    with pytest.raises(DeliveryFailed, match="1 record"):
        producer.flush(10)


def test_local_broker_formats_with_any_cluster_id(tmp_path: Any) -> None:
    """Cluster ids are random URL-safe base64 and may start with '-' (once in 64 starts)."""
    from infra.broker import LocalKafka, free_port

    broker = LocalKafka(
        tmp_path / "kafka", port=free_port(), heap="256m", cluster_id="-wAAAAAAAAAAAAAAAAAAAA"
    )
    broker._format_once(broker._write_config())
    assert (tmp_path / "kafka" / "data" / "meta.properties").exists()
    assert "cluster.id=-" in (tmp_path / "kafka" / "data" / "meta.properties").read_text()
