"""WebSocket fan-out: the gateway next to a bare ``websockets.broadcast`` server, same run.

    make bench-gateway      (python -m benchmarks.gateway [--sizes 1000,5000,10000])

For each number of subscribers, each server in its own process, the same clients:

1. Baseline: a bare server (``--raw``, about 30 lines): an aiokafka consumer on the odds
   window topic and ``websockets.broadcast`` of a frame carrying the same window JSON as the
   gateway's (so both compress the same text), with the record's Kafka timestamp, to every
   connection. No decoding, no channels, no limits;
   it reads the clients' subscribe command and ignores it (the same traffic per connection,
   so both servers pay for decompressing one client message).
2. The real gateway process (``oddstream gateway``): Avro decode and checks, channels,
   snapshot state, per-client byte limits, the broadcast write; clients subscribe to
   ``markets``.

Client processes (``--clients``; 4 of them, connections split evenly) count event frames
and time them; a publisher then writes OddsWindowUpdated events (about 940-byte frames)
as fast as it can. Deliveries/s run from the first frame any client got to the last;
latency is publish -> receive (event time, or Kafka timestamp for the bare server) over a
sample of frames, under that burst. Memory per connection is the server's RSS with every
client connected after the burst (loaded connections) minus its RSS before any connected,
divided by the connections.

Goals (issue 13): >= 0.8x the bare server's deliveries/s at every size, <= 1.1x its memory
per connection. Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts a local broker. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.kafka import kafka_for_benchmark
from gateway.protocol import event_frame
from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.jsonable import jsonable
from schemas.topics import Topics

CLIENT_PROCESSES = 4
SAMPLE_EVERY = 25  # clients parse one frame in this many for its latency


def window(n: int, now_ms: int) -> dict[str, Any]:
    selections = [
        {"selection_id": f"s{k}", "open": 2.0, "high": 2.5, "low": 1.9, "last": 2.1, "changes": 3,
         "implied_probability": 0.47} for k in range(5)
    ]  # fmt: skip
    start = now_ms // 60_000 * 60_000
    return {
        "event_id": str(uuid.uuid4()), "event_time": now_ms, "source": "bench", "window_id": f"w{n}",
        "market_id": "m1", "window_start": start, "window_end": start + 60_000, "version": n,
        "selections": selections, "overround": 1.05, "final": False, "bookmakers": [], "consensus": [],
    }  # fmt: skip


def sample_data() -> str:
    """The JSON of a window update as the gateway's frames carry it: the bare server sends it
    too, so both compress the same text (permessage-deflate is on in both)."""
    return json.dumps(jsonable(window(0, 1_767_225_600_000)))


def frame_size() -> int:
    position = json.dumps({"topic": "odds.window.1m", "partition": 0, "offset": 123456})
    return len(event_frame("markets", "OddsWindowUpdated", position, sample_data()))


# -- the bare server -------------------------------------------------------------------


async def raw_server(port: int, bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaConsumer
    from websockets.asyncio.server import broadcast, serve

    data = sample_data()

    async def handler(ws: Any) -> None:
        async for _ in ws:  # the clients' subscribe: read and ignored (no channels here)
            pass

    async with serve(handler, "127.0.0.1", port, ping_interval=20) as server:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
        )
        await consumer.start()
        for tp in consumer.assignment():
            await consumer.position(tp)
        print("ready", flush=True)  # to its log file
        async for m in consumer:
            position = f'{{"partition": {m.partition}, "offset": {m.offset}}}'
            broadcast(
                server.connections,
                f'{{"type": "event", "t": {m.timestamp}, "position": {position}, "data": {data}}}',
            )
            await asyncio.sleep(0)


# -- a client process ------------------------------------------------------------------


async def clients(url: str, count: int, expect: int, subscribe: bool, timeout_s: float) -> None:
    from websockets.asyncio.client import connect

    gate = asyncio.Semaphore(100)
    connections: list[Any] = []

    async def open_one() -> None:
        async with gate:
            ws = await connect(url, open_timeout=60, max_queue=None, ping_interval=None)
            if subscribe:
                await ws.recv()  # welcome
            # the same command to both servers (the bare one ignores it): the same traffic per connection
            await ws.send('{"op":"subscribe","channels":["markets"]}')
            if subscribe:
                while json.loads(await ws.recv())["type"] != "subscribed":
                    pass
            connections.append(ws)

    await asyncio.gather(*(open_one() for _ in range(count)))
    print("ready", flush=True)
    first: list[float] = []
    last: list[float] = []
    latencies: list[float] = []
    received = 0

    async def read(ws: Any) -> None:
        nonlocal received
        got = 0
        while got < expect:
            text = await ws.recv()
            if '"type": "event"' not in text[:20]:
                continue  # a heartbeat
            now = time.time()
            got += 1
            received += 1
            if not first:
                first.append(now)
            if received % SAMPLE_EVERY == 0:
                message = json.loads(text)
                sent_ms = message["t"] if "t" in message else message["data"]["event_time"]
                latencies.append(now * 1000 - sent_ms)
        last.append(time.time())

    with contextlib.suppress(TimeoutError):  # what arrived counts; the totals show what did not
        await asyncio.wait_for(asyncio.gather(*(read(ws) for ws in connections)), timeout_s)
    report = {"received": received, "first": first[0] if first else None, "latencies": latencies}
    print(json.dumps({**report, "last": max(last) if last else time.time()}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # connected until the server's memory is read
    for ws in connections:
        await ws.close()


# -- the run ---------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_line(process: subprocess.Popen[str], text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            raise SystemExit(f"a benchmark process exited ({process.returncode}) before {text!r}")
    raise SystemExit(f"no {text!r} within {timeout_s:g} s")


def measure(
    server: str, url: str, server_pid: int, n: int, events: int, settings: Settings
) -> dict[str, float]:
    idle = rss_kb(server_pid)
    per = [n // CLIENT_PROCESSES + (1 if k < n % CLIENT_PROCESSES else 0) for k in range(CLIENT_PROCESSES)]
    subscribe = "1" if server == "gateway" else "0"
    procs = []
    for k in per:
        cmd = [sys.executable, "-m", "benchmarks.gateway", "--clients", url, str(k), str(events), subscribe]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for p in procs:
        wait_line(p, "ready", 300)
    time.sleep(1.0)
    with EventProducer(settings) as producer:
        for i in range(events):
            producer.publish("OddsWindowUpdated", window(i, int(time.time() * 1000)))
    results = []
    for p in procs:
        assert p.stdout is not None
        results.append(json.loads(p.stdout.readline()))
    loaded = rss_kb(server_pid)  # every connection open, every frame delivered
    for p in procs:
        p.communicate("close\n", timeout=120)
    received = sum(r["received"] for r in results)
    start = min(r["first"] for r in results if r["first"])
    end = max(r["last"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    return {
        "received": received, "expected": n * events, "rate": received / max(end - start, 1e-6),
        "per_conn_kb": (loaded - idle) / n, "idle_mb": idle / 1024,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
    }  # fmt: skip


def start_server(kind: str, settings: Settings, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The server in its own process, its output to a file (a pipe nobody reads would stall it)."""
    port = free_port()
    log = work / f"{kind}-{port}.log"
    if kind == "raw":
        topic = Topics(settings.topic_prefix).windows()[0]
        cmd = [sys.executable, "-m", "benchmarks.gateway", "--raw", str(port), settings.bootstrap, topic]
        process = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        wait_in_file(process, log, "ready", 60)
        return process, f"ws://127.0.0.1:{port}/"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSTREAM_")}
    env.update({
        "ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap, "ODDSTREAM_LOG_LEVEL": "info",
        "ODDSTREAM_TOPIC_PREFIX": settings.topic_prefix, "ODDSTREAM_DATA_DIR": str(work / "data"),
        "ODDSTREAM_GATEWAY_PORT": str(port),
    })  # fmt: skip
    cmd = [sys.executable, "-m", "oddstream", "gateway"]
    process = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_in_file(process, log, "gateway consuming", 120)
    return process, f"ws://127.0.0.1:{port}/ws"


def wait_in_file(process: subprocess.Popen[bytes], log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"no {text!r} from the server; see {log}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument(
        "--deliveries", type=int, default=200_000, help="frames per run (events x subscribers)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; medians are reported")
    parser.add_argument("--raw", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--clients", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        port, bootstrap, topic = args.raw
        asyncio.run(raw_server(int(port), bootstrap, topic))
        return
    if args.clients:
        url, count, expect, subscribe = args.clients
        asyncio.run(clients(url, int(count), int(expect), subscribe == "1", 300))
        return
    work = Path(tempfile.mkdtemp(prefix="oddstream-bench-gateway-"))
    bootstrap, broker = kafka_for_benchmark(work)
    size = frame_size()
    print(f"frames of {size} bytes; {CLIENT_PROCESSES} client processes; all on this machine")
    rows = []
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            events = max(10, args.deliveries // n)
            rates, memories = [], []
            for _ in range(args.repeat):  # the two servers alternate: drift on the machine hits both
                measured = {}
                for kind in ("raw", "gateway"):
                    settings = Settings(
                        kafka_bootstrap_servers=bootstrap, topic_prefix=f"bg{uuid.uuid4().hex[:8]}."
                    )
                    ensure_topics(settings)
                    server, url = start_server(kind, settings, work)
                    try:
                        measured[kind] = measure(kind, url, server.pid, n, events, settings)
                    finally:
                        server.terminate()
                        server.wait(30)
                    m = measured[kind]
                    name = "bare broadcast" if kind == "raw" else "oddstream gateway"
                    print(
                        f"{n:>6} subscribers  {name:<18}{m['rate']:>10,.0f} deliveries/s  "
                        f"{m['per_conn_kb']:6.1f} KB/conn  idle {m['idle_mb']:6.1f} MB  "
                        f"p50 {m['p50']:7.0f} ms  p99 {m['p99']:7.0f} ms  "
                        f"({m['received']:,}/{m['expected']:,})",
                        flush=True,
                    )
                raw, ours = measured["raw"], measured["gateway"]
                rates.append(ours["rate"] / raw["rate"])
                memories.append(ours["per_conn_kb"] / max(raw["per_conn_kb"], 1e-9))
            rows.append((n, statistics.median(rates), statistics.median(memories), rates))
        print()
        print("subscribers  deliveries/s x bare  memory/conn x bare   (medians; goals: >= 0.8x, <= 1.1x)")
        for n, rate, memory, each in rows:
            print(f"{n:>11,}  {rate:>19.2f}  {memory:>18.2f}   runs: {', '.join(f'{r:.2f}' for r in each)}")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
