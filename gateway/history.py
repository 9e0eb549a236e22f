"""Reading a range of the derived topics back for a resuming client: the log is the history."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from gateway.protocol import Position

QUIET_LIMIT_S = 10.0  # no record for this long while some are still due: the read fails


class History:
    """One reader for one resume: the log's first offsets, then ranges of records."""

    def __init__(self, bootstrap: str) -> None:
        # offsets out of range raise instead of jumping elsewhere: a replay is exact or fails
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="none"
        )

    async def __aenter__(self) -> History:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def log_starts(self, positions: list[Position]) -> dict[Position, int]:
        tps = [TopicPartition(t, p) for t, p in positions]
        starts = await self.consumer.beginning_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): int(offset) for tp, offset in starts.items()}

    async def read(self, ranges: dict[Position, tuple[int, int]]) -> AsyncIterator[ConsumerRecord]:
        """The records of each ``[start, end)``, each partition's in offset order."""
        ends = {TopicPartition(t, p): end for (t, p), (_, end) in ranges.items()}
        if not ends:
            return
        self.consumer.assign(list(ends))
        for (topic, partition), (start, _) in ranges.items():
            self.consumer.seek(TopicPartition(topic, partition), start)
        pending = set(ends)
        heard = time.monotonic()
        while pending:
            batch = await self.consumer.getmany(*pending, timeout_ms=500, max_records=2_000)
            if batch:
                heard = time.monotonic()
            elif time.monotonic() - heard > QUIET_LIMIT_S:
                raise TimeoutError(
                    f"no record for {QUIET_LIMIT_S:g} s while reading {sorted(map(str, pending))}"
                )
            for tp, records in batch.items():
                for m in records:
                    if m.offset >= ends[tp]:
                        break
                    yield m
            for tp in list(pending):
                if await self.consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    self.consumer.pause(tp)
