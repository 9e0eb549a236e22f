"""Read whole topics back from the real broker."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition


def _end_offset(consumer: Consumer, partition: TopicPartition, timeout_s: float) -> int:
    """A just-created partition may answer 'not leader' for a moment; ask again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(consumer.get_watermark_offsets(partition, timeout=timeout_s)[1])
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_all(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Message]:
    """Every record currently in ``topic``, all partitions, from offset 0."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {p.partition: _end_offset(consumer, p, timeout_s) for p in partitions}
        consumer.assign(partitions)
        messages: list[Message] = []
        remaining = {p: end for p, end in ends.items() if end > 0}
        while remaining:
            message = consumer.poll(timeout_s)
            if message is None:
                break
            if message.error():
                continue
            messages.append(message)
            partition, offset = message.partition() or 0, message.offset() or 0
            if offset + 1 >= remaining.get(partition, 0):
                remaining.pop(partition, None)
        return messages
    finally:
        consumer.close()


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
            end = _end_offset(consumer, TopicPartition(tp.topic, tp.partition), timeout_s)
            lag += end - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()
