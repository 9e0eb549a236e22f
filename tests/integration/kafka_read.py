"""Read whole topics back from the real broker."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from oddstream.kafka.read import end_offset
from oddstream.kafka.read import read_topic as read_all

__all__ = ["group_lag", "read_all"]


def group_lag(bootstrap: str, group: str, topics: list[str], timeout_s: float = 10.0) -> int:
    """Records in ``topics`` that ``group`` has not committed yet (0: fully caught up)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        ]
        try:
            committed = consumer.committed(partitions, timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].retriable() or exc.args[0].code() == KafkaError.NOT_COORDINATOR:
                return -1  # the group's coordinator is still loading: not known to be caught up
            raise
        lag = 0
        for tp in committed:
            end = end_offset(consumer, TopicPartition(tp.topic, tp.partition), timeout_s)
            lag += end - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()
