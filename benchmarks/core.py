"""Throughput of the pure core against bare baselines, on simulator data.

python -m benchmarks.core [--events 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import itertools
import time
from collections.abc import Callable
from typing import Any

from fastavro import schemaless_reader

from oddstream.simulator.model import MarketSimulator
from schemas.catalog import Event, load_catalog
from schemas.codec import SINGLE_OBJECT_HEADER, Codec
from streams.analytics import Price, PriceAggregator
from streams.engine import WindowEngine
from streams.windows import TumblingWindow

START_MS = 1_800_000_000_000


def quotes(n: int) -> list[Event]:
    events = MarketSimulator(seed=1, start_ms=START_MS, rate_per_s=500).events()
    return list(itertools.islice((e for e in events if e.type == "OddsChanged"), n))


def best_of(repeat: int, run: Callable[[], int]) -> float:
    """Events per second of the fastest of ``repeat`` runs."""
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - started))
    return best


def engine_run(rows: list[tuple[str, int, Price]]) -> int:
    engine: WindowEngine[str, Price, Any] = WindowEngine(
        TumblingWindow(60_000), PriceAggregator(), 5_000, 10_000
    )
    for n, (key, t, price) in enumerate(rows):
        engine.process(key, t, price, n)
    engine.flush()
    return len(rows)


def baseline_run(rows: list[tuple[str, int, Price]]) -> int:
    state: dict[tuple[str, int], list[float]] = {}
    for key, t, price in rows:
        slot = state.setdefault((key, t - t % 60_000), [0, price.odds, price.odds, price.odds])
        slot[0] += 1
        slot[1] = min(slot[1], price.odds)
        slot[2] = max(slot[2], price.odds)
        slot[3] = price.odds
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    events = quotes(args.events)
    rows = [
        (
            f"{e.record['market_id']}|{e.record['selection_id']}|{e.record['bookmaker']}",
            int(e.record["event_time"]),
            Price(e.record["odds"], (int(e.record["event_time"]), str(e.record["event_id"]))),
        )
        for e in events
    ]
    engine = best_of(args.repeat, lambda: engine_run(rows))
    baseline = best_of(args.repeat, lambda: baseline_run(rows))
    print(f"window engine + odds analytics: {engine:>12,.0f} events/s")
    print(f"bare dict fold (baseline):      {baseline:>12,.0f} events/s")
    print(f"ratio engine/baseline:          {engine / baseline:>12.3f}")

    codec = Codec(load_catalog())
    frames = [codec.encode(e) for e in events]
    schema = load_catalog().schema("OddsChanged").parsed

    def decode_validate() -> int:
        for frame in frames:
            codec.check_decoded(codec.decode(frame))
        return len(frames)

    def decode_only() -> int:
        for frame in frames:
            codec.decode(frame)
        return len(frames)

    def fastavro_only() -> int:
        for frame in frames:
            schemaless_reader(io.BytesIO(frame[SINGLE_OBJECT_HEADER:]), schema, None)
        return len(frames)

    full = best_of(args.repeat, decode_validate)
    decode = best_of(args.repeat, decode_only)
    bare = best_of(args.repeat, fastavro_only)
    print(f"codec decode + validate:        {full:>12,.0f} events/s")
    print(f"codec decode:                   {decode:>12,.0f} events/s")
    print(f"fastavro reader (baseline):     {bare:>12,.0f} events/s")
    print(f"ratio decode/baseline:          {decode / bare:>12.3f}")
    print(f"ratio decode+validate/baseline: {full / bare:>12.3f}")


if __name__ == "__main__":
    main()
