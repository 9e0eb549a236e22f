"""The store's sink gathers a batch: what arrives within the wait after the first record."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from consumers.store.service import StoreService
from oddstream.settings import Settings

Script = list[tuple[float, dict[str, list[int]]]]


class ScriptedConsumer:
    """``getmany`` answers from a script: (seconds to wait first, {partition: records})."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls: list[tuple[int, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[str, list[int]]:
        self.calls.append((timeout_ms, max_records))
        if not self.script:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        delay, records = self.script.pop(0)
        await asyncio.sleep(min(delay, timeout_ms / 1000))
        if delay > timeout_ms / 1000:
            self.script.insert(0, (delay - timeout_ms / 1000, records))
            return {}
        return {tp: rs[:max_records] for tp, rs in records.items()}


def take(script: Script, **settings: Any) -> tuple[dict[str, list[int]], float]:
    service = StoreService.__new__(StoreService)  # _take needs only the settings
    service.settings = Settings(**settings)
    consumer = ScriptedConsumer(script)
    started = time.monotonic()
    batch = asyncio.run(service._take(consumer))
    return batch, time.monotonic() - started


def test_records_arriving_within_the_wait_join_the_batch_in_order() -> None:
    batch, took = take(
        [(0.0, {"odds-0": [1, 2]}), (0.02, {"odds-0": [3], "bets-1": [7]}), (0.02, {"bets-1": [8]}),
         (5.0, {"odds-0": [4]})],
        store_batch_wait_ms=150,
    )  # fmt: skip
    assert batch == {"odds-0": [1, 2, 3], "bets-1": [7, 8]}
    assert 0.14 <= took < 1.0  # waited out the wait, not the late record


def test_a_full_batch_is_inserted_without_waiting() -> None:
    batch, took = take(
        [(0.0, {"odds-0": [1, 2, 3]}), (0.0, {"odds-0": [4, 5, 6]}), (0.0, {"odds-0": [7]})],
        store_batch_wait_ms=5_000, store_batch_max_records=5,
    )  # fmt: skip
    assert batch == {"odds-0": [1, 2, 3, 4, 5]}
    assert took < 1.0


def test_no_wait_takes_one_fetch_and_nothing_is_a_quiet_poll() -> None:
    assert take([(0.0, {"odds-0": [1]}), (0.0, {"odds-0": [2]})], store_batch_wait_ms=0)[0] == {"odds-0": [1]}
    assert take([], store_batch_wait_ms=100)[0] == {}
