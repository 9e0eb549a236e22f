"""Read a whole topic as it is now (every partition, from offset 0 to its end): the CLI's
view of the webhook registry, and the tests' view of any topic."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition


def end_offset(consumer: Consumer, partition: TopicPartition, timeout_s: float) -> int:
    """A just-created partition may answer 'not leader' for a moment; ask again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(consumer.get_watermark_offsets(partition, timeout=timeout_s)[1])
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Message]:
    """Every record currently in ``topic``, all partitions, from offset 0."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "oddstream-reader", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {p.partition: end_offset(consumer, p, timeout_s) for p in partitions}
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
