"""Consumer lag of oddstream's consumer groups: records in the log not yet committed by a group."""

from __future__ import annotations

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from oddstream.settings import Settings
from schemas.topics import SOURCE_TOPICS, Topics

# librdkafka at warnings: its info lines (e.g. "BGQUEUE ... Purging unserved events" when a
# short-lived admin client is dropped) would print before `oddstream status` tables
QUIET = 4


def role_groups(settings: Settings) -> dict[str, tuple[str, list[str]]]:
    """role -> (consumer group, topics it consumes) for the roles that commit offsets."""
    topics = Topics(settings.topic_prefix)
    sources = [topics.name(s) for s in SOURCE_TOPICS]
    return {
        "worker": (
            settings.worker_id,
            [topics.odds, topics.bets, topics.name("system"), topics.bets_by_user],
        ),
        "store": (
            f"{settings.topic_prefix}store",
            [
                *topics.windows(),
                *topics.insights(),
                topics.dead_letter,
                topics.late,
                topics.bets_by_user,
                *sources,
            ],
        ),
        "dispatcher": (f"{settings.topic_prefix}dispatcher", [topics.odds_window_1m, topics.alerts]),
    }


def committed_offsets(
    settings: Settings, group: str, partitions: list[tuple[str, int]], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the group's committed offset (-1 where it committed nothing)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap, "log_level": QUIET})
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in partitions])]
    try:
        answer = admin.list_consumer_group_offsets(request)[group].result(timeout_s)
    except KafkaException:
        return {tp: -1 for tp in partitions}
    return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions}


def end_offsets(settings: Settings, topics: list[str], timeout_s: float = 10.0) -> dict[tuple[str, int], int]:
    """(topic, partition) -> its end offset, for every partition of ``topics``."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap, "log_level": QUIET})
    metadata = admin.list_topics(timeout=timeout_s).topics
    partitions = [TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions]
    answers = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions})  # type: ignore[no-untyped-call]
    return {(tp.topic, tp.partition): future.result(timeout_s).offset for tp, future in answers.items()}


def group_lag(settings: Settings, group: str, topics: list[str], timeout_s: float = 10.0) -> int | None:
    """Sum over the topics' partitions of (end offset - committed offset); None if Kafka
    cannot say. A partition without a commit counts from offset 0."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap, "log_level": QUIET})
    try:
        metadata = admin.list_topics(timeout=timeout_s).topics
        partitions = [TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions]
        if not partitions:
            return None
        request = [ConsumerGroupTopicPartitions(group, partitions)]
        committed = admin.list_consumer_group_offsets(request)[group].result(timeout_s)
        ends = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions})  # type: ignore[no-untyped-call]
    except KafkaException:
        return None
    positions = {(tp.topic, tp.partition): tp.offset for tp in committed.topic_partitions}
    lag = 0
    for tp, future in ends.items():
        end = future.result(timeout_s).offset
        done = positions.get((tp.topic, tp.partition), -1)
        lag += max(end - max(done, 0), 0)
    return lag
