"""Read whole topics back from the real broker."""

from __future__ import annotations

from confluent_kafka import Consumer, Message, TopicPartition


def read_all(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Message]:
    """Every record currently in ``topic``, all partitions, from offset 0."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=timeout_s)[1] for p in partitions}
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
            if message.offset() + 1 >= remaining.get(message.partition(), 0):
                remaining.pop(message.partition(), None)
        return messages
    finally:
        consumer.close()
