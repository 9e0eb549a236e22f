"""``create_app(settings)``: the Faust app of the stream worker. No module-level app.

One agent per source topic (odds, bets, system) feeds each partition's records, in offset
order, to that partition's :class:`~streams.processor.PartitionProcessor` (see
``consumers/worker/partitions.py`` for how its state survives crashes and rebalances).
Out come the window topics (current updates and one final per window), the late-events
topic and the dead-letter topic. A timer closes the windows of quiet partitions.

The bets stage also writes every bet placed or settled to ``bets.by-user``, keyed by the
user; a fourth agent, the user stage, reads it back the same way and runs the per-user
windows and rules there, so each user's bets meet in one partition (a repartition, as
Faust's ``group_by`` does, with the worker's own crash-safety rules: a bets snapshot waits
for these sends too, and the user stage folds each source offset once).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from typing import Any

import faust
from mode.utils import logging as mode_logging
from prometheus_client import start_http_server

from consumers.worker.inbox import BatchingConsumer, Inbox
from consumers.worker.partitions import SourceAnalytics, SourceRecord
from oddstream.codecs import build_codec
from oddstream.errors import ConfigError
from oddstream.kafka.admin import create_missing, partition_counts
from oddstream.kafka.registry import register_subjects
from oddstream.settings import DEVELOPMENT_STATE_KEY, Settings
from schemas.topics import DERIVED_TYPES, Topics
from streams.processor import WindowConfig

log = logging.getLogger(__name__)
# source topic suffix -> its stage (the name of its agent, snapshot table and dead letters);
# bets.by-user is the bets stage's UserBetRecorded output, read back by the user stage
STAGES = {"odds": "odds-analytics", "bets": "bets-analytics", "system": "system-analytics",
          "bets.by-user": "user-analytics"}  # fmt: skip
ANALYSED_SOURCES = tuple(STAGES)
SNAPSHOT_MAX_BYTES = 16 * 1024 * 1024
STALLED_EXIT_CODE = 3
GC_YOUNG_THRESHOLD = 50_000  # new container objects per young-generation pass (Python's default: 700)
# an inbox holds at most this many records; a batch is what it holds when the last is done
BATCH_MAX_RECORDS = 2_000


def create_app(settings: Settings) -> faust.App:
    """Build the worker's Faust app and its agents for ``settings``."""
    topics = Topics(settings.topic_prefix)
    codec = build_codec(settings)
    # Faust's default is "<id>-data" in the working directory; keep it with the rest of the
    # state (Faust creates only the last level)
    datadir = settings.data_dir / "faust" / settings.worker_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        settings.worker_id,
        broker=[f"kafka://{host}" for host in settings.bootstrap.split(",")],
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        producer_acks=-1,
        producer_max_request_size=SNAPSHOT_MAX_BYTES,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        # a SIGKILLed worker stays in the group until its session expires; Faust's default
        # (60 s) stalls a restarted worker that long (measured, docs/design/state-and-recovery.md)
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        # larger fetches and buffers: the worker is CPU-bound, not fetch-bound (benchmarks/worker.py)
        broker_max_poll_records=2_000,
        stream_buffer_maxsize=16_384,
        consumer_max_fetch_size=8 * 1024 * 1024,
    )
    # the user stage waits for every bets partition's clock, and each partition of bets.by-user
    # gets the bets stage's clock marks: as many as the topics have (settings' if not there yet)
    counts = partition_counts(settings, [topics.bets, topics.bets_by_user])
    config = replace(
        settings.window_config(), source_partitions=counts.get(topics.bets, settings.topic_partitions)
    )
    user_partitions = counts.get(topics.bets_by_user, settings.topic_partitions)
    analytics: list[SourceAnalytics] = []
    for suffix, stage in STAGES.items():
        topic = topics.name(suffix)
        analytics.append(_source_agent(app, settings, codec, topic, stage, config, user_partitions))

    async def close_quiet_windows() -> None:
        for source in analytics:
            await source.on_idle()

    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = args[0] if args else kwargs.get("revoked", set())
        for source in analytics:
            source.forget({tp.partition for tp in revoked if tp.topic == source.topic})

    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", set())
        for source in analytics:
            source.retain({tp.partition for tp in assigned if tp.topic == source.topic})

    async def watch_for_stalls() -> None:
        """A partition with records waiting and no progress for worker_stall_timeout_s: say where
        every task is waiting, then exit, so the supervisor restarts the worker (recovery is
        exact: snapshot + log). Seen once in CI: a worker stopped receiving its odds partitions
        after three SIGKILLs in a row, with no error, for ten minutes."""
        stalls = [s for source in analytics for s in source.stalled(settings.worker_stall_timeout_s)]
        if stalls:
            log.critical("worker stalled, exiting for a restart: %s", "; ".join(stalls))
            mode_logging.cry(file=sys.stderr)  # every thread and task, where it waits
            sys.stderr.flush()
            os._exit(STALLED_EXIT_CODE)

    async def release_held_commits() -> None:
        for source in analytics:
            await source.release_held_commits()

    async def send_held_back_updates() -> None:
        for source in analytics:
            await source.publish_due_currents()

    for source in analytics:
        app.task(source.write_snapshots)
    app.timer(interval=1.0)(close_quiet_windows)
    # the throttle's trailing edge: a held-back update leaves at most this much after it is due
    app.timer(interval=max(settings.worker_update_interval_ms, 20) / 4000)(send_held_back_updates)
    app.timer(interval=5.0)(watch_for_stalls)
    app.timer(interval=5.0)(release_held_commits)
    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_assigned)

    app.analytics = analytics  # type: ignore[attr-defined]
    return app


class WorkerApp(faust.App):
    """The worker's Faust app: its consumer hands the source topics' records to inboxes."""

    inboxes: dict[str, Inbox]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.inboxes = {}
        super().__init__(*args, **kwargs)

    def _new_consumer(self) -> BatchingConsumer:
        return BatchingConsumer(
            self.transport,
            callback=self.topics.on_message,
            loop=self.loop,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            inboxes=self.inboxes,
        )


def _source_agent(
    app: WorkerApp,
    settings: Settings,
    codec: Any,
    topic: str,
    name: str,
    config: WindowConfig,
    user_partitions: int,
) -> SourceAnalytics:
    """The analytics of one source topic: its snapshot table, its inbox and the task that
    drains the inbox a batch at a time (consumers/worker/inbox.py)."""
    table: Any = app.Table(
        f"{name}-state", partitions=settings.topic_partitions, key_type=bytes, value_type=bytes
    )
    table.key_serializer = table.value_serializer = "raw"  # snapshots are our own bytes
    analytics = SourceAnalytics(app, settings, codec, topic, table, name, config, user_partitions)
    analytics.ready = False  # nothing is written before the subjects it writes under are registered
    inbox = app.inboxes[topic] = Inbox(BATCH_MAX_RECORDS)
    app.topics.add(
        app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    )

    async def drain_inbox() -> None:
        ack = app.consumer.ack
        inbound = app.monitor.stream_inbound_time
        try:
            await register_subjects(codec, Topics(settings.topic_prefix), DERIVED_TYPES, name)
            analytics.ready = True
            while True:
                batch = await inbox.take()
                await analytics.on_batch(
                    [
                        SourceRecord(
                            m.partition, m.offset, m.key, m.value, m.headers, round(m.timestamp * 1000)
                        )
                        for m in batch
                    ]
                )
                for message in batch:  # processed (or halted): Faust may commit past them
                    ack(message)
                # Faust's own check of a partition whose stream stopped reads this (events of its
                # agents' streams set it): without it every busy source partition is "not started"
                now = time.monotonic()
                inbound.update((tp, now) for tp in {m.tp for m in batch})
        except Exception as exc:  # not one record's fault (those are dead letters): restart the worker
            log.exception("%s stopped", name)
            await app.crash(exc)

    app.task(drain_inbox)
    return analytics


def changelog_topics(app: faust.App) -> dict[str, bool]:
    """Changelog topic name -> compacted (always)."""
    return {table.changelog_topic.get_topic_name(): True for table in app.tables.values()}


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGINT/SIGTERM (Faust handles the signals and commits on stop)."""
    check_state_key(settings)
    app = create_app(settings)
    tune_gc()
    # Faust creates changelog topics itself, but an event can arrive before the new
    # topic shows in metadata (PartitionsMismatch: "0 partitions"); create them first,
    # with room for a partition's snapshot.
    create_missing(settings, changelog_topics(app), config={"max.message.bytes": str(SNAPSHOT_MAX_BYTES)})
    if settings.worker_metrics_port:
        # dead letters, processing errors and halted partitions of this worker, for Prometheus
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    worker = WorkerProcess(app, settings.worker_stop_deadline_s, loglevel=settings.log_level, quiet=True)
    # Faust's terminal spinner turns on every debug record of every library to spin on
    # (root logger at DEBUG when the level is warn or higher): 10 % of a busy worker's time
    worker.spinner = None
    worker.execute_from_commandline()


def tune_gc() -> None:
    """Fewer, cheaper passes of Python's cyclic garbage collector.

    The analytics make no reference cycles (their objects die by reference counting), yet
    with Python's default threshold (a young-generation pass per 700 new container objects)
    the collector made 1,255 passes over 150k simulated events in process (2.6 s of a 40 s
    run, the longest 233 ms), landing on whatever ran then (a snapshot, a batch). Objects
    alive at start (modules, River, Faust) are frozen out of every pass; a young pass waits
    for GC_YOUNG_THRESHOLD new objects: 14 passes, 0.38 s, the longest 76 ms
    (docs/design/worker-throughput.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def check_state_key(settings: Settings) -> None:
    """Snapshots are authenticated with the state key: with the public development default,
    anyone who can write to the changelog could have a worker load their bytes."""
    if settings.worker_state_key.get_secret_value() == DEVELOPMENT_STATE_KEY and not settings.development:
        raise ConfigError(
            "refusing to start: ODDSTREAM_WORKER_STATE_KEY is the public development default; "
            "set a key of your own (ODDSTREAM_DEVELOPMENT=true allows it for local development)"
        )


class WorkerProcess(faust.Worker):
    """``faust.Worker`` with a bounded stop, so `up`, Docker and Kubernetes get a stop they can
    plan for. A signal starts a deadline (``worker_stop_deadline_s``, 4 s): a worker still
    stopping then (a commit or a flush waiting on a busy broker) exits at once.
    That loses nothing: what was not committed is read again, and recovery from the last
    snapshot and the log is exact, as after a SIGKILL (tests/integration/test_exactness.py).
    mode's own shutdown also sleeps a second before closing the loop for nothing the worker
    runs; that sleep is skipped."""

    def __init__(self, app: faust.App, stop_deadline_s: float, **kwargs: Any) -> None:
        self.stop_deadline_s = stop_deadline_s
        super().__init__(app, **kwargs)

    def _schedule_shutdown(self, signum: signal.Signals) -> None:
        if not self._signal_stop_time:
            deadline = threading.Timer(self.stop_deadline_s, _exit_past_deadline, (self.stop_deadline_s,))
            deadline.daemon = True
            deadline.start()
        super()._schedule_shutdown(signum)

    async def _sentinel_task(self) -> None:
        return None


def _exit_past_deadline(deadline_s: float) -> None:
    log.warning(
        "worker still stopping %g s after the signal; exiting now (the next start reads again "
        "from the last commit and snapshot, exactly as after a crash)",
        deadline_s,
    )
    logging.shutdown()
    os._exit(0)
