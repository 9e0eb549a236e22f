"""Per-endpoint delivery lanes, and which source offsets may be committed.

Each endpoint has its own lane: a queue and a few workers (``concurrency``), so an
endpoint that fails, hangs or cannot be resolved only ever holds up its own messages;
the others are delivered as soon as they are read. A source record is *resolved* when
every delivery it started is (delivered, refused, or given up after its attempts); the
dispatcher commits, per partition, up to the first record that is not resolved yet
(:class:`CommitTracker`), so a crash re-delivers and never loses (receivers deduplicate
on ``webhook-id``).

Example::

    tracker = CommitTracker()
    tracker.add("p0", 7, deliveries=2)
    tracker.done("p0", 7); tracker.done("p0", 7)
    tracker.committable()          # {"p0": 8}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class CommitTracker:
    """Out-of-order resolution of in-order records, per partition. Pure."""

    _open: dict[Hashable, dict[int, int]] = field(default_factory=dict)  # tp -> offset -> pending
    _next: dict[Hashable, int] = field(default_factory=dict)  # tp -> offset after the last added
    _committed: dict[Hashable, int] = field(default_factory=dict)

    def add(self, tp: Hashable, offset: int, deliveries: int) -> None:
        """A record read, with the number of deliveries it started (0: resolved already)."""
        if deliveries > 0:
            self._open.setdefault(tp, {})[offset] = deliveries
        self._next[tp] = offset + 1

    def done(self, tp: Hashable, offset: int) -> None:
        """One delivery of the record ended (delivered, refused or given up)."""
        pending = self._open.get(tp)
        if pending is None or offset not in pending:
            return  # forgotten meanwhile (its partition was revoked)
        pending[offset] -= 1
        if pending[offset] <= 0:
            del pending[offset]

    def committable(self) -> dict[Hashable, int]:
        """Per partition, the offset to commit now, where it moved since the last call."""
        out = {}
        for tp, after in self._next.items():
            pending = self._open.get(tp)
            offset = min(pending) if pending else after
            if offset > self._committed.get(tp, -1):
                out[tp] = self._committed[tp] = offset
        return out

    def committable_partitions(self) -> set[Any]:
        return set(self._next)

    def in_flight(self) -> int:
        return sum(len(p) for p in self._open.values())

    def forget(self, tps: set[Any]) -> None:
        """Partitions revoked: their unresolved records are the next owner's to deliver."""
        for tp in tps:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)


Job = Callable[[], Awaitable[Any]]


class Lanes:
    """One queue and ``concurrency`` workers per endpoint id, started on first use."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._queues: dict[str, asyncio.Queue[tuple[Job, Callable[[], None]]]] = {}
        self._workers: list[asyncio.Task[None]] = []

    def submit(self, endpoint_id: str, job: Job, done: Callable[[], None]) -> None:
        """Queue ``job`` on the endpoint's lane; ``done`` is called when it ends, whatever
        happens to it."""
        queue = self._queues.get(endpoint_id)
        if queue is None:
            queue = self._queues[endpoint_id] = asyncio.Queue()
            for _ in range(self.concurrency):
                self._workers.append(asyncio.create_task(self._work(endpoint_id, queue)))
        queue.put_nowait((job, done))

    def queued(self, endpoint_id: str) -> int:
        queue = self._queues.get(endpoint_id)
        return queue.qsize() if queue is not None else 0

    async def _work(self, endpoint_id: str, queue: asyncio.Queue[tuple[Job, Callable[[], None]]]) -> None:
        while True:
            job, done = await queue.get()
            try:
                await job()
            except Exception:  # deliver() records every failure; this is a bug meeting an input
                log.exception("delivery to %s failed unexpectedly", endpoint_id)
            finally:
                done()

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
