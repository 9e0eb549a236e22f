"""Create oddstream's topics (idempotently) on the configured cluster."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

from oddstream.errors import BrokerError
from oddstream.settings import Settings
from schemas.topics import SOURCE_TOPICS, Topics


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every missing oddstream topic; return the names created.

    Source topics (bets, odds, system, users) are the source of truth, so they keep
    their records for ``source_retention_ms`` (default -1: forever) and get the broker's
    append time as record timestamp, which the consumers' far-future check compares event
    times with: a producer cannot choose it. ``bets.by-user`` (the bets by user, which the
    user windows are rebuilt from) is kept the same way. Topics that exist already are left as they
    are (docs/operations.md says how to change them)."""
    topics = Topics(settings.topic_prefix)
    compacted = topics.compacted()
    sources = {topics.name(s) for s in SOURCE_TOPICS} | {topics.bets_by_user}
    created = create_missing(
        settings,
        {n: n in compacted for n in topics.all() if n in sources},
        timeout_s,
        source_config(settings),
    )
    others = {n: n in compacted for n in topics.all() if n not in sources}
    return created + create_missing(settings, others, timeout_s)


def partition_counts(settings: Settings, names: list[str], timeout_s: float = 30.0) -> dict[str, int]:
    """topic -> its number of partitions, for the ``names`` that exist."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    try:
        metadata = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics on {settings.bootstrap}: {exc}") from exc
    return {name: len(metadata[name].partitions) for name in names if name in metadata}


def source_config(settings: Settings) -> dict[str, str]:
    """Topic configs of the source topics oddstream creates."""
    return {
        "retention.ms": str(settings.source_retention_ms),
        "retention.bytes": "-1",
        "message.timestamp.type": "LogAppendTime",
    }


def create_missing(
    settings: Settings,
    wanted_topics: dict[str, bool],
    timeout_s: float = 30.0,
    config: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics (name -> compacted?) that do not exist, with the configured partitions
    and any extra topic ``config``."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics on {settings.bootstrap}: {exc}") from exc
    wanted = []
    for name, compact in wanted_topics.items():
        if name in existing:
            continue
        topic_config = {"cleanup.policy": "compact"} if compact else {}
        topic_config.update(config or {})
        wanted.append(
            NewTopic(name, settings.topic_partitions, settings.topic_replication, config=topic_config)
        )
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc
    _wait_for_leaders(admin, [t.topic for t in wanted], timeout_s)
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Return once every partition of ``names`` is served by its leader.

    Metadata names a new partition's leader before that broker has opened its log; until
    then requests get 'not leader'. An idempotent producer with several requests in flight
    can then lose records silently: a later batch lands first, the broker (before Kafka 4.5,
    KAFKA-15591) accepts it as the producer's first, and the earlier batch is never written
    (seen here: two acknowledged events missing from a fresh topic). A ListOffsets answer
    comes from the leader's log, so once every partition answers one, produces are safe.
    """
    deadline = time.monotonic() + timeout_s
    pending: set[TopicPartition] = set()
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=timeout_s).topics
        if all(
            name in metadata
            and metadata[name].error is None
            and metadata[name].partitions
            and all(p.leader >= 0 and p.error is None for p in metadata[name].partitions.values())
            for name in names
        ):
            pending = {TopicPartition(name, p) for name in names for p in metadata[name].partitions}
            break
        time.sleep(0.1)
    else:
        raise BrokerError(f"topics {names} have no leader after {timeout_s:.0f} s")
    while pending and time.monotonic() < deadline:
        # a request that meets a broker not ready yet must fail soon and be asked again: by
        # default it may take socket.timeout.ms (60 s), longer than the whole wait (seen in CI,
        # a fresh 3-node cluster: every partition still pending after 30 s)
        attempt_s = max(min(5.0, deadline - time.monotonic()), 0.5)
        latest = {tp: OffsetSpec.latest() for tp in pending}  # type: ignore[no-untyped-call]
        answers = admin.list_offsets(latest, request_timeout=attempt_s)
        for tp, future in answers.items():
            try:
                future.result(max(deadline - time.monotonic(), 0.1))
                pending.discard(tp)
            except (KafkaException, TimeoutError):
                pass
        if pending:
            time.sleep(0.1)
    if pending:
        example = sorted(pending, key=lambda tp: (tp.topic, tp.partition))[0]
        raise BrokerError(
            f"{len(pending)} new partition(s) not served by their leader after {timeout_s:.0f} s "
            f"(e.g. {example.topic}[{example.partition}])"
        )
