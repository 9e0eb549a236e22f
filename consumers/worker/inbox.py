"""Source records in batches, taken from Faust's consumer below its per-event machinery.

Faust's fetcher hands every record on its own to the conductor (two tasks and an
``asyncio.wait`` per record), which builds an event, queues it per channel, and an agent's
stream iterates and acks it, one at a time. For the source topics that cost more than the
analytics themselves (docs/design/worker-throughput.md). So the worker's consumer puts
the records of those topics, a fetched batch at a time, into an :class:`Inbox` per topic;
the topic's task takes everything queued, processes it, and acks every record. Everything
else (offsets, gaps, commits, changelogs and tables, rebalances) stays Faust's, and the
records of other topics (table changelogs) take Faust's own path.

A topic whose inbox is full does not hold up the others: its records stay in the
fetcher's buffer while the consumer takes the other topics' (aiokafka hands out one
partition's buffered records before the next one's, up to megabytes of them, so an odds
backlog used to keep every bets partition waiting for minutes; the soak's stall watchdog
saw them at offset -1 for 121 s).

What Faust relies on still holds: records are tracked as pending before they are queued
(a rebalance waits until every tracked record is acked, so a batch in hand is finished
before its partitions go), and nothing is queued while a rebalance has the flow stopped
(Faust seeks every assigned partition back to its committed offset afterwards).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, cast

from faust.transport.drivers.aiokafka import Consumer
from faust.types import Message
from mode import Service

# how long the consumer waits for other topics' records while some inbox is full
FULL_INBOX_POLL_S = 0.02


class Inbox:
    """A bounded queue of one topic's records, taken a batch at a time."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self._records: list[Message] = []
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def full(self) -> bool:
        return len(self._records) >= self.max_records

    async def wait_for_room(self) -> None:
        """Wait while the inbox is full (the consumer's back-pressure)."""
        while self.full:
            self._room.clear()
            await self._room.wait()

    def put(self, messages: list[Message]) -> None:
        self._records.extend(messages)
        self._ready.set()

    async def take(self) -> list[Message]:
        """Every record queued so far (at least one), oldest first."""
        while not self._records:
            self._ready.clear()
            await self._ready.wait()
        batch, self._records = self._records, []
        self._room.set()
        return batch


class BatchingConsumer(Consumer):
    """Faust's Kafka consumer; records of topics with an inbox go there a batch at a time."""

    inboxes: dict[str, Inbox]

    def __init__(self, *args: Any, inboxes: dict[str, Inbox], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inboxes = inboxes

    async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:  # noqa: ASYNC109 (Faust's signature)
        """Records of the partitions whose topic can take them: a full inbox's partitions wait
        in the fetcher's buffer (and are not fetched again until taken) while the other
        topics' records flow; with every inbox full, wait briefly for room instead."""
        if active_partitions:
            full = {topic for topic, inbox in self.inboxes.items() if inbox.full}
            if full:
                active_partitions = {tp for tp in active_partitions if tp.topic not in full}
                # room comes back when a stage takes its batch: look again soon
                timeout = min(timeout, FULL_INBOX_POLL_S)
                if not active_partitions:
                    await asyncio.sleep(timeout)
                    return {}
        return await super()._getmany(active_partitions, timeout)

    async def _deliver(self, inbox: Inbox, messages: list[Message]) -> None:
        await self.app.flow_control.acquire()  # suspended while a rebalance runs
        await inbox.wait_for_room()
        for message in messages:  # a rebalance waits for their acks
            self.track_message(message)
        inbox.put(messages)
        set_read_offset = self._read_offset.__setitem__
        for message in messages:  # only now: a batch a rebalance dropped was not read
            set_read_offset(message.tp, message.offset)

    async def _drain_messages(self, fetcher: Any) -> None:  # mirrors Faust's, a batch at a time
        callback = self.callback
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        inboxes = self.inboxes
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                batches: dict[str, list[Message]] = defaultdict(list)
                taken: dict[Any, int] = {}  # the last offset of each partition in this batch
                async for tp, message in self.getmany(timeout=1.0):
                    offset = message.offset
                    r_offset = taken[tp] if tp in taken else get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # read already (Faust drops these too)
                    if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if tp.topic in inboxes:
                        batches[tp.topic].append(message)  # read once delivered (_deliver)
                        taken[tp] = offset
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                for topic, messages in batches.items():
                    # a rebalance starting meanwhile drops the batch: Faust seeks back after it
                    await self.wait_first(self._deliver(inboxes[topic], messages), self.suspend_flow.wait())
                await asyncio.sleep(0)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
