"""End to end: producer send -> WebSocket frame, and -> ClickHouse row, at fixed rates.

    make bench-latency      (python -m benchmarks.latency [--rates 200,1000,2000,5000] [--seconds 30])

Runs every role (``oddstream up --no-simulate``: worker with models and detectors, store,
gateway, dispatcher) on one broker, opens some markets, then publishes OddsChanged events
at each fixed rate, each stamped with its send time as event time. A WebSocket client on
the ``markets`` channel and a poller of ``odds_windows_1m`` (every 50 ms, through the
store's SQL endpoint) note when each event is first reflected: the first market window
update whose newest event time reaches the event's. Prints, per rate, send -> WebSocket
and send -> ClickHouse p50/p95/p99, the share of events reflected, and whether the stack
kept up (everything reflected within 5 s of the last send, p99 under 5 s); then holds the
highest rate that kept up for 60 s to confirm it is sustained.

Latencies are measured on one clock (this machine's), so they are exact up to the
50 ms polling interval of ClickHouse. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from benchmarks.kafka import kafka_for_benchmark
from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings

MARKETS = 40
SELECTIONS = ("home", "draw", "away")
BOOKMAKERS = ("betfair", "bet365", "unibet", "pinnacle", "williamhill")
KEPT_UP_S = 5.0
SUSTAIN_S = 60


def as_ms(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


class Reflections:
    """Send times of events per market, and when each was first reflected, per path."""

    def __init__(self) -> None:
        self.sent: dict[str, list[int]] = {}  # market -> event times (= send times, ms), ascending
        self.seen: dict[str, dict[str, int]] = {"ws": {}, "ch": {}}  # path -> market -> how many reflected
        self.latency: dict[str, list[float]] = {"ws": [], "ch": []}

    def send(self, market: str, ms: int) -> None:
        self.sent.setdefault(market, []).append(ms)

    def reflect(self, path: str, market: str, newest_ms: int, now_ms: float) -> None:
        times = self.sent.get(market, [])
        done = self.seen[path].get(market, 0)
        upto = bisect.bisect_right(times, newest_ms)
        if upto > done:
            self.latency[path].extend(now_ms - t for t in times[done:upto])
            self.seen[path][market] = upto

    def reflected(self, path: str) -> int:
        return sum(self.seen[path].values())

    def total(self) -> int:
        return sum(len(t) for t in self.sent.values())


async def watch_websocket(url: str, reflections: Reflections, stop: asyncio.Event) -> None:
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": ["markets"]}))
        while not stop.is_set():
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                continue
            if frame.get("type") == "event" and frame.get("event_type") == "OddsWindowUpdated":
                data = frame["data"]
                reflections.reflect("ws", data["market_id"], as_ms(data["event_time"]), time.time() * 1000)


async def poll_clickhouse(endpoint: str, prefix: str, reflections: Reflections, stop: asyncio.Event) -> None:
    query = (
        "SELECT market_id, toUnixTimestamp64Milli(max(event_time)) FROM odds_windows_1m "
        f"WHERE market_id LIKE '{prefix}%' GROUP BY market_id"
    )
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            started = time.time() * 1000
            response = await client.post(f"{endpoint}/sql", content=query)
            if response.status_code == 200:
                for market, newest in response.json()["rows"]:
                    reflections.reflect("ch", market, int(newest), started)
            await asyncio.sleep(0.05)


def publish(producer: EventProducer, markets: list[str], rate: int, seconds: float, r: Reflections) -> None:
    """``rate`` OddsChanged events per second for ``seconds``, in 10 ms ticks, event time = now."""
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    started = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        owed += per_tick
        while owed >= 1.0:
            owed -= 1.0
            market = markets[n % len(markets)]
            now = int(time.time() * 1000)
            producer.publish(
                "OddsChanged",
                {"event_id": str(uuid.uuid4()), "event_time": now, "source": "bench", "market_id": market,
                 "selection_id": SELECTIONS[(n // len(markets)) % 3], "bookmaker": BOOKMAKERS[n % 5],
                 "odds": round(2.0 + (n % 97) / 100, 2)},
            )  # fmt: skip
            r.send(market, now)
            n += 1
        time.sleep(max(0.0, (elapsed // tick + 1) * tick - (time.perf_counter() - started)))
    producer.flush()


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:>7.0f}  p95 {q[94]:>7.0f}  p99 {q[98]:>7.0f} ms"


async def measure(settings: Settings, producer: EventProducer, rate: int, seconds: float) -> tuple[bool, str]:
    reflections = Reflections()
    markets = market_ids(settings)
    stop = asyncio.Event()
    url = f"ws://127.0.0.1:{settings.gateway_port}/ws"
    watchers = [
        asyncio.create_task(watch_websocket(url, reflections, stop)),
        asyncio.create_task(
            poll_clickhouse(settings.sql_endpoint, market_prefix(settings), reflections, stop)
        ),
    ]
    await asyncio.sleep(1)
    await asyncio.to_thread(publish, producer, markets, rate, seconds, reflections)
    deadline = time.monotonic() + 30
    total = reflections.total()
    caught_up_after = None
    last_send = time.monotonic()
    while time.monotonic() < deadline:
        if reflections.reflected("ws") >= total and reflections.reflected("ch") >= total:
            caught_up_after = time.monotonic() - last_send
            break
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*watchers, return_exceptions=True)
    ws, ch = reflections.latency["ws"], reflections.latency["ch"]
    kept_up = caught_up_after is not None and caught_up_after <= KEPT_UP_S and len(ws) > 1
    kept_up = kept_up and statistics.quantiles(ws, n=100)[98] <= KEPT_UP_S * 1000
    line = (
        f"{rate:>6,}/s x {seconds:.0f} s, {total:,} events | WebSocket {percentiles(ws)} "
        f"({len(ws) / max(total, 1):.0%}) | ClickHouse {percentiles(ch)} ({len(ch) / max(total, 1):.0%}) | "
        + (
            f"caught up {caught_up_after:.1f} s after the last send"
            if caught_up_after is not None
            else "BEHIND"
        )
    )
    return kept_up, line


def market_ids(settings: Settings) -> list[str]:
    return [f"{market_prefix(settings)}m{i:03d}" for i in range(MARKETS)]


def market_prefix(settings: Settings) -> str:
    return "L" + settings.topic_prefix.strip(".").removeprefix("lat")


def open_markets(settings: Settings, producer: EventProducer) -> None:
    now = int(time.time() * 1000) - 1000
    for market in market_ids(settings):
        producer.publish(
            "MarketStatusChanged",
            {"event_id": str(uuid.uuid4()), "event_time": now, "source": "bench", "market_id": market,
             "status": "OPEN", "reason": None},
        )  # fmt: skip
    producer.flush()


def wait_ready(settings: Settings, stack: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if stack.poll() is not None:
            raise SystemExit(f"oddstream up exited: see {log}")
        try:
            ok = httpx.post(f"{settings.sql_endpoint}/sql", content="SELECT 1", timeout=2).status_code == 200
            ok = (
                ok
                and httpx.get(f"http://127.0.0.1:{settings.gateway_port}/healthz", timeout=2).status_code
                == 200
            )
            if ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the stack did not come up in 180 s: see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="200,1000,2000,5000")
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="oddstream-latency-"))
    bootstrap, broker = kafka_for_benchmark(work)
    run = uuid.uuid4().hex[:8]
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"lat{run}.", data_dir=work / "data",
                        store_port=free_port(), gateway_port=free_port(), worker_metrics_port=free_port(),
                        webhook_receiver_port=free_port(), api_port=free_port(),
                        worker_id=f"lat-{run}")  # fmt: skip
    ensure_topics(settings)
    # the roles' own knobs (ODDSTREAM_WORKER_*, ...) pass through; where things run is set here
    env = dict(os.environ)
    roles = {
        "kafka_bootstrap_servers": bootstrap,
        "topic_prefix": settings.topic_prefix,
        "data_dir": settings.data_dir,
        "store_port": settings.store_port,
        "gateway_port": settings.gateway_port,
        "worker_id": settings.worker_id,
        "worker_metrics_port": settings.worker_metrics_port,
        "webhook_receiver_port": settings.webhook_receiver_port,
        "api_port": settings.api_port,
        "log_level": "warn",
    }
    env.update({f"ODDSTREAM_{k.upper()}": str(v) for k, v in roles.items()})
    log = work / "stack.log"
    command = [sys.executable, "-m", "oddstream", "up", "--no-simulate"]
    stack = subprocess.Popen(
        command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_ready(settings, stack, log)
        with EventProducer(settings) as producer:
            open_markets(settings, producer)
            time.sleep(3)
            print(
                f"every role running ({settings.topic_partitions} partitions, {MARKETS} markets); log {log}"
            )
            best = None
            for rate in rates:
                kept_up, line = asyncio.run(measure(settings, producer, rate, args.seconds))
                print(line)
                if kept_up:
                    best = rate
            if best is not None:
                kept_up, line = asyncio.run(measure(settings, producer, best, SUSTAIN_S))
                print(f"sustained {SUSTAIN_S} s at the highest rate that kept up: "
                      + ("yes" if kept_up else "NO") + f"\n{line}")  # fmt: skip
            else:
                print("no rate kept up")
    finally:
        os.killpg(stack.pid, 15)
        stack.wait(60)
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
