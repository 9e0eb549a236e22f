"""Running the partition processors of one source topic in the Faust worker, crash-safely.

The contract (docs/design/state-and-recovery.md):

* each source partition's :class:`~streams.processor.PartitionProcessor` is snapshotted
  into a changelog-backed Faust table, under the key ``<topic>:<partition>``, written to
  the changelog partition of the source partition;
* records arrive in batches from the topic's inbox (consumers/worker/inbox.py) and are acked
  after processing; a partition whose Faust commit is held is committed by the worker;
* before a snapshot that reflects offset X is written, every output of the records up to
  X has been acknowledged by Kafka (producer flush), so a snapshot never runs ahead of
  what downstream received;
* snapshots are sealed (consumers/worker/snapshots.py: versioned, HMAC-authenticated,
  chunked when large); one that is forged, outdated or unreadable is not read, and its
  partition is rebuilt from the source log's start (the same path as a gap, below);
* after a restart or rebalance the snapshot is restored and every record after X is
  processed again. Faust may resume from a committed offset *beyond* X (it commits on its
  own schedule): that gap is read with a separate consumer before going on. Re-emitted
  results have the same ids and contents, so ClickHouse collapses them;
* records at or below X (redelivered) are skipped;
* a send that fails (the broker refused an output, or the producer could not send it)
  halts its partition with a logged error: nothing of that partition is processed or
  snapshotted any more in this process, so its snapshot never moves past a lost output;
  a restart (or a rebalance) resumes it from its last snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any, NamedTuple, NoReturn

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from consumers.worker.outputs import Message, apply_record, emission_messages, messages, window_message
from consumers.worker.snapshots import (
    SnapshotRefused,
    dump_state,
    is_chunk_of,
    load_state,
    manifest_chunk_keys,
    open_sealed,
    seal,
)
from oddstream.kafka.registry import learn_schema_ids
from oddstream.metrics import HALTED_PARTITIONS, SNAPSHOT_PAUSE, SNAPSHOTS_REFUSED, SNAPSHOTS_WRITTEN
from oddstream.settings import Settings
from schemas.codec import CONFLUENT_MAGIC, Codec
from schemas.intake import Headers, Intake
from schemas.topics import Topics
from streams.processor import PartitionProcessor, WindowConfig

log = logging.getLogger(__name__)
# how often a busy partition looks for current updates that are due (a window's first update
# waits at most this long; the throttle's interval decides the rest)
CURRENTS_LOOK_S = 0.01
# a commit that has not moved this long while the worker processed past it is Faust's hole
COMMIT_HELD_S = 15.0


# a snapshot that holds the event loop longer than this is logged (the metric has them all)
SLOW_SNAPSHOT_S = 0.1


class SourceRecord(NamedTuple):
    """One record of a source topic as the consumer hands it over."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    ts_ms: int


class Snapshot(NamedTuple):
    """A partition's state at one offset, with the sends of the outputs it covers."""

    partition: int
    processor: PartitionProcessor
    state: bytes  # dump_state(processor) at the offset it reflects; sealed by the writer
    generation: int  # unique per snapshot (ns since the epoch), names its chunks
    sent: list[asyncio.Future[Any]]


class PartitionHalted(Exception):
    """An output of this partition was not acknowledged; the partition stops here."""


class SourceAnalytics:
    """The processors of one source topic's partitions in this worker."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        codec: Codec,
        topic: str,
        table: Any,
        stage: str,
        config: WindowConfig | None = None,
        user_partitions: int | None = None,
    ) -> None:
        """``config``: the window configuration (settings' by default; the worker's knows the
        bets topic's partitions); ``user_partitions``: bets.by-user's, which clock marks go to."""
        self.app = app
        self.settings = settings
        self.codec = codec
        self.topics = Topics(settings.topic_prefix)
        self._secret = settings.worker_state_key.get_secret_value().encode()
        self.intake = Intake(codec, self.topics, settings.limits(), self._secret)
        self.topic = topic
        self.table = table
        self.stage = stage
        self.config: WindowConfig = config or settings.window_config()
        self.user_partitions = user_partitions or settings.topic_partitions
        self.repartitions = topic == self.topics.bets  # the bets stage writes bets.by-user
        self.ready = True  # False until the stage may write (its subjects registered: app.py)
        self.processors: dict[int, PartitionProcessor] = {}
        self._checkpointed: dict[int, float] = {}
        self._looked_at: dict[int, float] = {}  # when due current updates were last looked for
        # snapshots waiting for their outputs' acknowledgements, written in order by one task
        self._snapshots: asyncio.Queue[Snapshot] = asyncio.Queue()
        self._feeding: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)  # one feeder per partition
        self._adopted: set[int] = set()
        self._in_flight: dict[int, list[asyncio.Future[Any]]] = defaultdict(list)
        self.halted: dict[int, str] = {}  # partition -> why its outputs stopped
        self._progress: dict[int, tuple[int, float]] = {}  # partition -> (offset, since when) for stalls
        self.gaps_filled = 0
        self._held: dict[int, tuple[int | None, float]] = {}  # partition -> (commit, since when)
        self.commits_released = 0
        self._ends: dict[int, int] = {}  # partition -> its end offset when it was assigned
        self._assignment = 0  # changes with every revocation and assignment
        self._offsets_reader: AIOKafkaConsumer | None = None
        self._chunks: dict[int, list[bytes]] = {}  # partition -> chunk keys of its last snapshot
        self.rebuilt: dict[int, str] = {}  # partition -> why its snapshot was not read

    def state_key(self, partition: int) -> bytes:
        return f"{self.topic}:{partition}".encode()

    # -- the agent's path --------------------------------------------------------

    async def on_batch(self, records: list[SourceRecord]) -> None:
        """Process a batch of records (any partitions, each partition's in offset order).

        Per partition: fill a gap Faust will not deliver, fold every record, send what is
        due (outputs, current updates past the throttle), and queue a snapshot when one is
        due. Nothing here waits for Kafka's acknowledgements: the snapshot writer does,
        before it writes (see :meth:`checkpoint`)."""
        by_partition: dict[int, list[SourceRecord]] = defaultdict(list)
        for record in records:
            by_partition[record.partition].append(record)
        for partition, batch in by_partition.items():
            if partition in self.halted:
                continue  # its snapshot stays behind these records: a restart processes them again
            async with self._feeding[partition]:
                with contextlib.suppress(PartitionHalted):
                    await self._feed(partition, batch)

    async def _feed(self, partition: int, batch: list[SourceRecord]) -> None:
        processor = self._processor(partition)
        every_change = self.settings.worker_update_interval_ms <= 0
        for r in batch:
            if r.offset > processor.offset + 1:
                start = processor.offset + 1
                await self._fill_gap(processor, partition, start, r.offset)
                await self._passed_over(partition, start, r.offset)
            await self._apply(processor, partition, r.offset, r.key, r.value, r.headers, r.ts_ms)
            if every_change:  # an update per change, none coalesced within the batch
                await self._publish_currents(partition, processor)
            elif time.monotonic() - self._looked_at.get(partition, 0.0) >= CURRENTS_LOOK_S:
                # a window's first update leaves within 10 ms even inside a long batch
                self._looked_at[partition] = time.monotonic()
                await self._publish_currents(partition, processor)
        await self._publish_currents(partition, processor)
        if (
            time.monotonic() - self._checkpointed.get(partition, 0.0)
            >= self.settings.worker_checkpoint_interval_s
        ):
            self.checkpoint(partition)

    async def _passed_over(self, partition: int, start: int, end: int) -> None:
        """Faust delivered ``end`` without the records in [start, end) (it resumed past them or
        skipped them), and they were just processed from the log. Faust will never ack them,
        and its commit stops at the first offset it has no ack for: a partition committed no
        further, ever, and a group that never catches up (seen after SIGKILL restarts). Tell
        its consumer they are a gap, as it does for offsets the log itself leaves out.
        Offsets at or below the committed one are ignored by it."""
        try:
            await self.app.consumer._add_gap(TP(self.topic, partition), start, end - 1)
        except Exception as exc:  # bookkeeping only: a commit that stays behind re-reads records
            log.warning("%s[%d]: could not mark offsets %d..%d as passed over: %r",
                        self.topic, partition, start, end - 1, exc)  # fmt: skip

    async def release_held_commits(self) -> None:
        """Commit a partition's processed offsets when the group's commit *on the broker* has not
        moved for :data:`COMMIT_HELD_S` although the worker processed past it.

        Faust commits the first offset it has no ack for, and its bookkeeping can leave a
        hole at the head of a partition's acked offsets for good (acked offsets are taken out
        before the commit is known to succeed; records it passed over are never acked). It
        also records an offset as committed when the commit failed (faust-streaming 0.15
        ``Consumer._commit_offsets`` updates ``_committed_offset`` whatever ``_commit``
        returned), so its own view is not asked: the broker's is. Either way the group never
        catches up and every restart re-reads more (seen in a test run: bets[0] committed at 582 of
        5018 for ten minutes, every record processed). Everything up to the processor's
        offset is folded and its outputs were sent (the commit flushes the producer first),
        which is all Faust's own commit promises; recovery never depends on the commit
        anyway (the snapshot plus the log, docs/design/state-and-recovery.md)."""
        if self.app.rebalancing:
            return  # the partitions in hand may be leaving; the next look after it commits
        consumer = self.app.consumer
        now = time.monotonic()
        partitions = [p for p, proc in self.processors.items() if p not in self.halted and proc.offset >= 0]
        if not partitions:
            return
        try:
            on_broker, _ = await self._committed(partitions)
        except Exception as exc:  # the next look asks again
            log.warning("%s: could not read the group's committed offsets: %r", self.topic, exc)
            return
        for partition in partitions:
            processor = self.processors.get(partition)
            if processor is None:
                continue  # revoked meanwhile
            tp = TP(self.topic, partition)
            committed = on_broker.get(partition)
            target = processor.offset + 1
            if (committed or 0) >= target:
                self._held.pop(partition, None)
                continue
            since = self._held.get(partition)
            if since is None or since[0] != committed:
                self._held[partition] = (committed, now)
                continue
            if now - since[1] < COMMIT_HELD_S:
                continue
            log.warning(
                "%s[%d]: the group's commit has stayed at %s for %.0f s while the worker processed to %d; "
                "committing %d", self.topic, partition, committed, now - since[1], processor.offset, target,
            )  # fmt: skip
            self._held.pop(partition, None)
            self.commits_released += 1
            try:
                await consumer.maybe_wait_for_commit_to_finish()
                if not await consumer._commit_offsets({tp: target}):
                    log.warning(
                        "%s[%d]: committing %d was refused; trying again", self.topic, partition, target
                    )
            except Exception as exc:  # the next look tries again; nothing is lost meanwhile
                log.warning("%s[%d]: committing %d failed: %r", self.topic, partition, target, exc)

    async def publish_due_currents(self) -> None:
        """The throttle's trailing edge: send updates that were held back and are due now."""
        if self.app.rebalancing:
            return  # the new owner of a partition that leaves sends them
        for partition, processor in list(self.processors.items()):
            if partition in self.halted or not processor.has_pending_currents:
                continue
            async with self._feeding[partition]:
                with contextlib.suppress(PartitionHalted):
                    await self._publish_currents(partition, processor)

    async def on_idle(self) -> None:
        """Close the windows of quiet partitions; snapshot what that changed.

        A partition is quiet only when it is caught up (nothing left to read) *and* has had
        no record for the idle timeout: a partition waiting behind a backlog (catching up
        after a restart, or starved by busier ones) is not quiet, so catching up never
        closes windows early. Nothing happens while a rebalance runs: the partitions in hand
        may be leaving, and the snapshots of those arriving are not recovered yet."""
        if self.app.rebalancing or not self.ready:
            return
        await self._adopt_assigned()
        if self.repartitions:  # an empty bets partition tells the user stage it is idle, too
            for partition in sorted(self._adopted - set(self.processors) - set(self.halted)):
                self._processor(partition)
        await self._learn_ends()
        for partition, processor in list(self.processors.items()):
            if partition in self.halted:
                continue
            async with self._feeding[partition]:
                try:
                    await self._publish_currents(partition, processor)  # a quiet partition's last updates
                    if not self._caught_up(partition, processor):
                        continue
                    finals = processor.on_idle(int(time.time() * 1000))
                    if finals:
                        source = self.settings.worker_id
                        for emission in finals:
                            for message in emission_messages(
                                emission, self.topics, self.codec, source, self._secret, self.user_partitions
                            ):
                                await self._send(partition, message)
                        self.checkpoint(partition)
                except PartitionHalted:
                    pass

    async def _adopt_assigned(self) -> None:
        """Read, once per assignment, what a partition's snapshot lacks below the committed offset.

        Faust resumes a partition at its committed offset, which may be past the snapshot
        (it commits on its own schedule); a partition committed to its end after a crash
        delivers nothing at all, so the agent would never restore it and its windows would
        never close. Records at or above the committed offset are Faust's to deliver; a
        record read twice is skipped by its offset."""
        assigned = self._assigned()
        new = sorted(assigned - self._adopted)
        if not new:
            return
        assignment = self._assignment
        committed, ends = await self._committed(new)
        for partition in new:
            if self.app.rebalancing or self._assignment != assignment:
                return  # a rebalance began meanwhile: its assignment decides (see retain)
            self._adopted.add(partition)
            self._ends[partition] = ends.get(partition, 0)
            end = committed.get(partition)
            if end is None:
                continue  # nothing committed: Faust delivers the partition from its start
            async with self._feeding[partition]:
                processor = self._processor(partition)
                if processor.offset + 1 < end:
                    try:
                        await self._fill_gap(processor, partition, processor.offset + 1, end)
                        self.checkpoint(partition)
                    except PartitionHalted:
                        pass

    def _assigned(self) -> set[int]:
        """This topic's partitions in the consumer's assignment now (none before it started)."""
        try:
            return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.topic}
        except Exception:  # not started yet
            return set()

    async def _learn_ends(self) -> None:
        """End offsets, from the broker, of partitions Faust has not fetched since they were
        assigned (no highwater yet): without them such a partition never counts as caught up
        and its last windows would never close. Seen after restarts: a partition committed to
        its end that Faust did not fetch."""
        unknown = [p for p in self.processors if p not in self.halted and self._highwater(p) is None]
        if not unknown:
            return
        try:
            ends = await self._end_offsets(unknown)
        except Exception as exc:  # the next look asks again
            log.warning("%s: could not read end offsets: %r", self.topic, exc)
            return
        self._ends.update({p: end for p, end in ends.items() if p in self.processors})

    async def _committed(self, partitions: list[int]) -> tuple[dict[int, int | None], dict[int, int]]:
        """The group's committed offsets of ``partitions`` on the broker, and their end offsets now."""
        reader = await self._reader()
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            committed = {tp.partition: await reader.committed(tp) for tp in tps}
            return committed, await self._end_offsets(partitions)
        except Exception:
            await self._drop_reader()
            raise

    async def _end_offsets(self, partitions: list[int]) -> dict[int, int]:
        reader = await self._reader()
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            return {tp.partition: int(end) for tp, end in (await reader.end_offsets(tps)).items()}
        except Exception:
            await self._drop_reader()
            raise

    async def _reader(self) -> AIOKafkaConsumer:
        """A consumer of this worker's that reads offsets and never joins the group."""
        if self._offsets_reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.settings.bootstrap,
                group_id=self.settings.worker_id,
                enable_auto_commit=False,
            )
            await reader.start()  # no subscription: it never joins the group
            self._offsets_reader = reader
        return self._offsets_reader

    async def _drop_reader(self) -> None:
        reader, self._offsets_reader = self._offsets_reader, None  # a fresh one next time
        if reader is not None:
            await reader.stop()

    def _processor(self, partition: int) -> PartitionProcessor:
        processor = self.processors.get(partition)
        if processor is None:
            processor = self.processors[partition] = self._restore(partition)
        return processor

    async def _publish_currents(self, partition: int, processor: PartitionProcessor) -> None:
        """Send the current updates that are due (the first at once, then at most one per
        window per ``worker_update_interval_ms``)."""
        now = int(time.time() * 1000)
        for emission in processor.take_currents(now, self.settings.worker_update_interval_ms):
            await self._send(
                partition,
                window_message(emission, self.topics, self.codec, self.settings.worker_id, self._secret),
            )

    def _highwater(self, partition: int) -> int | None:
        try:
            highwater = self.app.consumer.highwater(TP(self.topic, partition))
        except Exception:  # not assigned (any more), or no fetch yet
            return None
        return int(highwater) if highwater is not None else None

    def _caught_up(self, partition: int, processor: PartitionProcessor) -> bool:
        highwater = self._highwater(partition)
        if highwater is None:
            highwater = self._ends.get(partition)  # not fetched since assigned: the broker's end
        return highwater is not None and processor.offset + 1 >= highwater

    def stalled(self, timeout_s: float) -> list[str]:
        """Partitions with records waiting whose processing has not moved for ``timeout_s``,
        while no partition of the topic has moved either.

        A big backlog is delivered a few partitions at a time, so one partition waiting its
        turn while others move is not stalled (the soak saw a partition wait 122 s and the
        worker exit for a restart, which a long backlog would repeat forever). Adopted
        partitions with nothing committed have no processor until Faust delivers their first
        record; they count, at offset -1. Takes no lock: a partition stuck while holding its
        feeding lock is exactly what this must still see. A halted partition is stopped on
        purpose and not counted."""
        now = time.monotonic()
        offsets = {partition: processor.offset for partition, processor in list(self.processors.items())}
        offsets.update({p: -1 for p in self._adopted if p not in offsets})
        for partition, at in offsets.items():
            offset, _ = self._progress.get(partition, (None, now))
            if offset != at:
                self._progress[partition] = (at, now)
        if any(now - self._progress[p][1] <= timeout_s for p in offsets):
            return []  # something moved lately
        found = []
        for partition, at in sorted(offsets.items()):
            # the end seen at assignment counts too: a partition Faust never fetched after a
            # restart has no highwater, and its records wait all the same (seen in CI)
            waiting = max(self._highwater(partition) or 0, self._ends.get(partition, 0)) - at - 1
            if waiting > 0 and partition not in self.halted:
                since = self._progress[partition][1]
                found.append(
                    f"{self.topic}[{partition}] at offset {at}, {waiting} record(s) waiting, "
                    f"no progress for {now - since:.0f} s"
                )
        return found

    def retain(self, assigned: set[int]) -> None:
        """A new assignment: forget every partition outside it, whatever kept it in hand.

        Faust's revocation names only the partitions of the previous assignment; a processor
        taken up around a rebalance (restored for a partition the consumer was about to give
        away) would otherwise outlive it, write stale snapshots over the new owner's, and be
        taken for the partition's state when the partition came back (seen in CI: windows of
        a partition that came back never closed)."""
        stray = (set(self.processors) | self._adopted) - assigned
        if stray:
            log.warning("%s: forgetting partitions %s: not assigned here", self.topic, sorted(stray))
        self.forget(stray)  # counts the assignment (_assignment) even when nothing is stray

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: their state lives on in the changelog for the next owner."""
        self._assignment += 1
        for partition in partitions:
            self.processors.pop(partition, None)
            self._checkpointed.pop(partition, None)
            self._looked_at.pop(partition, None)
            self._adopted.discard(partition)
            self._in_flight.pop(partition, None)
            self._progress.pop(partition, None)
            self._held.pop(partition, None)
            self._ends.pop(partition, None)
            self._chunks.pop(partition, None)
            if self.halted.pop(partition, None) is not None:
                HALTED_PARTITIONS.dec()

    def checkpoint(self, partition: int) -> None:
        """Take a partition's snapshot now (offset X) and queue it for the writer.

        Callers hold the partition's feeding lock. The snapshot carries the sends of every
        output up to X; :meth:`write_snapshots` waits for their acknowledgements before it
        writes the snapshot, so processing goes on meanwhile and a snapshot still never runs
        ahead of what downstream received."""
        processor = self.processors.get(partition)
        if processor is None:
            return
        sent, self._in_flight[partition] = self._in_flight[partition], []
        started = time.perf_counter()
        state = dump_state(processor)
        pause = time.perf_counter() - started
        SNAPSHOT_PAUSE.observe(pause)
        if pause >= SLOW_SNAPSHOT_S:
            log.warning("%s[%d]: taking its snapshot held the event loop %.0f ms (%d bytes)",
                        self.topic, partition, pause * 1000, len(state))  # fmt: skip
        self._snapshots.put_nowait(Snapshot(partition, processor, state, time.time_ns(), sent))
        self._checkpointed[partition] = time.monotonic()

    async def write_snapshots(self) -> None:
        """The snapshot writer (a task of the app): one at a time, in the order taken.

        A snapshot is written once every output it covers was acknowledged; if any was not,
        its partition halts and neither it nor any later snapshot of that partition is
        written. A snapshot of a partition revoked meanwhile is dropped (the new owner's
        snapshots count; an older one in the changelog is safe, only slower to resume)."""
        while True:
            snapshot = await self._snapshots.get()
            try:
                await self._write(snapshot)
            except PartitionHalted:
                pass
            finally:
                self._snapshots.task_done()

    async def _write(self, snapshot: Snapshot) -> None:
        partition = snapshot.partition
        results = await asyncio.gather(*snapshot.sent, return_exceptions=True)
        if self.processors.get(partition) is not snapshot.processor or partition in self.halted:
            return  # revoked (or restored anew) meanwhile, or halted by an earlier snapshot
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            self._halt(partition, f"{len(failed)} output(s) not acknowledged, first: {failed[0]!r}")
        key = self.state_key(partition)
        sealed = await asyncio.to_thread(
            seal,
            snapshot.state,
            key,
            self._secret,
            generation=snapshot.generation,
            chunk_bytes=self.settings.worker_snapshot_chunk_bytes,
        )
        if self.processors.get(partition) is not snapshot.processor or partition in self.halted:
            return
        for chunk_key, chunk in sealed.chunks:  # chunks first: a manifest never names a missing chunk
            self.table.data[chunk_key] = chunk
            await self.table.send_changelog(partition, chunk_key, chunk)
        self.table.data[key] = sealed.manifest
        await self.table.send_changelog(partition, key, sealed.manifest)
        SNAPSHOTS_WRITTEN.inc()
        written = [k for k, _ in sealed.chunks]
        self._delete_chunks(partition, [k for k in self._chunks.get(partition, []) if k not in written])
        self._chunks[partition] = written

    def _delete_chunks(self, partition: int, keys: list[bytes]) -> None:
        """Tombstone chunk records no manifest refers to any more (compaction drops them)."""
        for chunk_key in keys:
            self.table.data.pop(chunk_key, None)
            self.table.send_changelog(partition, chunk_key, None)

    # -- internals -----------------------------------------------------------------

    def _restore(self, partition: int) -> PartitionProcessor:
        """The partition's processor from its snapshot; an empty one (which the gap filler
        then feeds from the log's start) when there is none or it is refused."""
        key = self.state_key(partition)
        manifest = self.table.data.get(key)
        current = manifest_chunk_keys(manifest, key) if manifest is not None else []
        stale = [k for k in list(self.table.data.keys()) if is_chunk_of(k, key) and k not in current]
        self._delete_chunks(partition, stale)  # a crash between a snapshot's chunks and its manifest
        self._chunks[partition] = current
        if manifest is None:
            log.info("%s[%d]: no snapshot, starting empty", self.topic, partition)
            return PartitionProcessor(self.config, partition=partition, repartitions=self.repartitions)
        try:
            processor = load_state(open_sealed(manifest, key, self._secret, self.table.data))
        except SnapshotRefused as refused:
            SNAPSHOTS_REFUSED.labels(refused.kind).inc()
            self.rebuilt[partition] = str(refused)
            log.log(
                logging.ERROR if refused.kind == "forged" else logging.WARNING,
                "%s[%d]: snapshot refused, %s; it is not deserialised. Rebuilding the partition from "
                "the source log's start (its outputs are sent again with the same ids)",
                self.topic, partition, refused,
            )  # fmt: skip
            return PartitionProcessor(self.config, partition=partition, repartitions=self.repartitions)
        processor.resumed(int(time.time() * 1000))
        log.info("%s[%d]: restored snapshot at offset %d", self.topic, partition, processor.offset)
        return processor

    async def _apply(
        self,
        processor: PartitionProcessor,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        ts_ms: int,
    ) -> None:
        origin = (self.topic, partition, offset)
        if value is not None and value[:1] == CONFLUENT_MAGIC:
            await learn_schema_ids(self.codec, (value,), f"worker {self.topic}[{partition}]@{offset}")
        output = apply_record(processor, self.intake, origin, key, value, headers, ts_ms)
        if output.duplicate:
            return
        for message in messages(
            output,
            self.topics,
            self.codec,
            self.settings.worker_id,
            origin,
            key,
            value,
            self.stage,
            self._secret,
            self.user_partitions,
        ):
            await self._send(partition, message)

    async def _send(self, partition: int, message: Message) -> None:
        """Hand one output to the producer; its acknowledgement is checked before the next snapshot."""
        try:
            sent = await self.app.producer.send(
                message.topic, message.key, message.value, message.partition, None, message.headers
            )
        except Exception as exc:  # refused before it left (too large for the producer, closed, ...)
            self._halt(partition, f"output to {message.topic} not sent: {exc!r}")
        self._in_flight[partition].append(sent)

    def _halt(self, partition: int, reason: str) -> NoReturn:
        processor = self.processors.get(partition)
        at = processor.offset if processor is not None else -1
        if partition not in self.halted:
            HALTED_PARTITIONS.inc()
        self.halted[partition] = reason
        log.error(
            "%s[%d] HALTED at offset %d: %s. No snapshot moves past this; the partition's records are "
            "not processed by this worker any more. Fix the cause, then restart the worker: it resumes "
            "from the last snapshot and loses nothing.",
            self.topic, partition, at, reason,
        )  # fmt: skip
        raise PartitionHalted(reason)

    async def _fill_gap(self, processor: PartitionProcessor, partition: int, start: int, end: int) -> None:
        """Process records [start, end) that Faust will not deliver again (committed past the snapshot)."""
        log.warning("%s[%d]: replaying offsets %d..%d after restore", self.topic, partition, start, end - 1)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=2000)
                for m in batch.get(tp, []):
                    if m.offset >= end:
                        break
                    await self._apply(processor, partition, m.offset, m.key, m.value, m.headers, m.timestamp)
        finally:
            await consumer.stop()
        self.gaps_filled += 1
