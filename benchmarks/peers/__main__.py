"""oddstream next to its Python peers, on one broker and one backlog, in one run.

    make bench-peers        (python -m benchmarks.peers [--events 100000])

1. A seeded simulation; its odds topic (market status changes and odds changes) is copied
   to a fresh topic prefix that every system below reads from offset 0.
2. Baselines: bare aiokafka + fastavro decode, bare confluent-kafka + fastavro decode.
3. Peers, each in its own process from .venv-peers (benchmarks/peers/requirements.txt):
   a Quix Streams app and a Bytewax dataflow computing 60 s tumbling event-time windows
   per market, open/high/low/last per selection and bookmaker (benchmarks/peers/*_app.py).
4. oddstream: the analytics path in process (models on, and off), and the real Faust
   worker process (models on, snapshots on, outputs produced and acknowledged).

Every system's processed count is checked against the backlog, and every window it
closed against a reference computed here from the decoded records (oddstream: its price
window finals). Ratios are against the bare aiokafka loop measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from fastavro import schemaless_reader

from benchmarks.kafka import kafka_for_benchmark
from benchmarks.worker import committed, consume, end_offsets
from consumers.worker.outputs import apply_record, messages
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings
from oddstream.simulator.run import run_simulation
from schemas.catalog import load_catalog
from schemas.codec import SINGLE_OBJECT_HEADER, Codec
from schemas.intake import Intake
from schemas.topics import Topics
from streams.processor import PartitionProcessor

HERE = Path(__file__).parent
PEERS_PYTHON = Path(os.environ.get("PEERS_PYTHON", ".venv-peers/bin/python"))
WINDOW_MS = 60_000
Windows = dict[tuple[str, int, str], tuple[float, float, float, float]]  # (market, start, sel|bk) -> ohlc


def from_start(bootstrap: str, topics: list[str], **config: Any) -> Consumer:
    """A consumer of ``topics`` from offset 0, in a group of its own."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **config})  # fmt: skip
    consumer.subscribe(topics)
    return consumer


def copy_topic(bootstrap: str, source: str, target: str, count: int) -> None:
    """Every record of ``source`` to the same partition of ``target``, in order."""
    consumer = from_start(bootstrap, [source])
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    copied = 0
    try:
        while copied < count:
            for m in consumer.consume(num_messages=5000, timeout=1.0):
                if m.error():
                    continue
                producer.produce(
                    target, m.value(), m.key(), partition=m.partition() or 0, headers=m.headers()
                )
                producer.poll(0)
                copied += 1
        if producer.flush(60):
            raise SystemExit("copying the backlog: records not acknowledged")
    finally:
        consumer.close()


def reference(bootstrap: str, topic: str, count: int, codec: Codec) -> Windows:
    """The windows every system should close, from the decoded records in log order."""
    consumer = from_start(bootstrap, [topic])
    out: Windows = {}
    seen = 0
    try:
        while seen < count:
            for m in consumer.consume(num_messages=5000, timeout=1.0):
                if m.error():
                    continue
                seen += 1
                event = codec.decode(m.value() or b"")
                if event.type != "OddsChanged":
                    continue
                r = event.record
                ms = int(r["event_time"].timestamp() * 1000)
                key = (r["market_id"], ms // WINDOW_MS * WINDOW_MS, f"{r['selection_id']}|{r['bookmaker']}")
                odds = float(r["odds"])
                o = out.get(key)
                out[key] = (
                    (odds, odds, odds, odds) if o is None else (o[0], max(o[1], odds), min(o[2], odds), odds)
                )
        return out
    finally:
        consumer.close()


def check(name: str, windows: Windows, expected: Windows) -> str:
    wrong = sum(1 for k, v in windows.items() if expected.get(k) != v)
    return f"{len(windows):,} windows closed, {wrong} differ from the reference"


def peer_windows(result: dict[str, Any]) -> Windows:
    out: Windows = {}
    for market, start, book in result["windows"]:
        for slot, ohlc in book.items():
            out[(market, int(start), slot)] = (ohlc[0], ohlc[1], ohlc[2], ohlc[3])
    return out


def run_peer(app: str, bootstrap: str, topic: str, count: int, schemas: Path, work: Path) -> dict[str, Any]:
    out = work / f"{app}.json"
    log = (work / f"{app}.log").open("wb")
    done = subprocess.run(
        [str(PEERS_PYTHON), str(HERE / f"{app}.py"), bootstrap, topic, str(count), str(schemas), str(out)],
        stdout=log, stderr=subprocess.STDOUT, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"{app} failed (exit {done.returncode}): see {work / f'{app}.log'}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def confluent_decode(bootstrap: str, topic: str, count: int, catalog: Any) -> float:
    consumer = from_start(bootstrap, [topic], **{"fetch.max.bytes": 64 * 1024 * 1024})
    seen = 0
    started = 0.0
    try:
        while seen < count:
            batch = consumer.consume(num_messages=2_000, timeout=0.1)  # returns at whichever comes first
            if batch and not started:
                started = time.perf_counter()
            for m in batch:
                value = m.value()
                if m.error() or value is None:
                    continue
                schema = catalog.by_fingerprint[value[2:SINGLE_OBJECT_HEADER]].parsed
                schemaless_reader(io.BytesIO(value[SINGLE_OBJECT_HEADER:]), schema, None)
                seen += 1
        return seen / (time.perf_counter() - started)
    finally:
        consumer.close()


def worker_run(settings: Settings, count: int, codec: Codec, data: Path) -> tuple[float, Windows]:
    """The real worker over the odds topic: events/s (first output to last current update)
    and its price window finals."""
    topics = Topics(settings.topic_prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSTREAM_")}
    env.update(ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap,
               ODDSTREAM_TOPIC_PREFIX=settings.topic_prefix, ODDSTREAM_DATA_DIR=str(data),
               ODDSTREAM_WORKER_ID=settings.worker_id,
               ODDSTREAM_LOG_LEVEL="warn", ODDSTREAM_WORKER_METRICS_PORT="0",
               ODDSTREAM_DEVELOPMENT="true")  # fmt: skip
    log = (data / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "oddstream", "worker"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)  # fmt: skip
    try:
        while committed(settings.bootstrap, settings.worker_id, [topics.odds]) < count:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited: see {data / 'worker.log'}")
            time.sleep(1)
        time.sleep(3)  # the last batch's outputs
    finally:
        worker.terminate()
        worker.wait(30)
    consumer = from_start(settings.bootstrap, topics.windows())
    first, last = 2**62, 0
    finals: Windows = {}
    quiet = time.monotonic()
    try:
        while time.monotonic() - quiet < 5:
            for m in consumer.consume(num_messages=5000, timeout=0.5):
                if m.error():
                    continue
                quiet = time.monotonic()
                ts = m.timestamp()[1]
                first = min(first, ts)
                event = codec.decode(m.value() or b"")
                r = event.record
                if not r["final"]:
                    last = max(last, ts)
                elif event.type == "PriceWindowUpdated":
                    start = int(r["window_start"].timestamp() * 1000)
                    key = (r["market_id"], start, f"{r['selection_id']}|{r['bookmaker']}")
                    finals[key] = (r["open"], r["high"], r["low"], r["last"])
    finally:
        consumer.close()
    return count / max((last - first) / 1000, 1e-3), finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    if not PEERS_PYTHON.exists():
        raise SystemExit(f"{PEERS_PYTHON} is missing: run `make bench-peers` (it builds .venv-peers)")
    work = Path(tempfile.mkdtemp(prefix="oddstream-peers-"))
    bootstrap, broker = kafka_for_benchmark(work)
    try:
        run = uuid.uuid4().hex[:8]
        sim = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"sim{run}.", data_dir=work)
        ensure_topics(sim)
        start = int(time.time() * 1000) - int(args.events / sim.simulator_rate * 1000) - 120_000
        run_simulation(sim, events=args.events, realtime=False, start_ms=start, show_progress=False)
        settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"peers{run}.", data_dir=work,
                            worker_id=f"peers-{run}")  # fmt: skip
        ensure_topics(settings)
        topic = Topics(settings.topic_prefix).odds
        count = end_offsets(bootstrap, [Topics(sim.topic_prefix).odds])
        copy_topic(bootstrap, Topics(sim.topic_prefix).odds, topic, count)
        print(f"backlog: {count:,} records on {topic} ({settings.topic_partitions} partitions), "
              f"from a seeded simulation of {args.events:,} events")  # fmt: skip

        catalog = load_catalog()
        codec = Codec(catalog)
        schemas = work / "schemas.json"
        schemas.write_text(json.dumps({v.fingerprint.hex(): [v.event_type, v.source]
                                       for v in catalog.by_fingerprint.values()}))  # fmt: skip
        expected = reference(bootstrap, topic, count, codec)

        def bare(t: str, p: int, o: int, k: bytes | None, value: bytes, h: Any, ts: int) -> object:
            schema = catalog.by_fingerprint[value[2:SINGLE_OBJECT_HEADER]].parsed
            return schemaless_reader(io.BytesIO(value[SINGLE_OBJECT_HEADER:]), schema, None)

        intake = Intake(codec, Topics(settings.topic_prefix), settings.limits())

        def in_process(insights: bool) -> float:
            processors: dict[int, PartitionProcessor] = {}

            def handle(t: str, p: int, o: int, k: bytes | None, value: bytes, h: Any, ts: int) -> object:
                processor = processors.get(p)
                if processor is None:
                    processor = processors[p] = PartitionProcessor(settings.window_config(), partition=p,
                                                                   insights=insights)  # fmt: skip
                origin = (t, p, o)
                output = apply_record(processor, intake, origin, k, value, h, ts, 0)
                return messages(
                    output, Topics(settings.topic_prefix), codec, "bench", origin, k, value, "bench", b"bench"
                )

            return asyncio.run(consume(bootstrap, [topic], count, handle))

        rows: list[tuple[str, float, str]] = []
        baseline = asyncio.run(consume(bootstrap, [topic], count, bare))
        rows.append(("bare aiokafka + fastavro decode", baseline, f"{count:,} processed"))
        confluent = confluent_decode(bootstrap, topic, count, catalog)
        rows.append(("bare confluent-kafka + fastavro decode", confluent, f"{count:,} processed"))
        peers: dict[str, float] = {}
        for app, label in (
            ("quix_app", "Quix Streams 3.28 app"),
            ("bytewax_app", "Bytewax 0.21 dataflow, 1 worker"),
        ):
            result = run_peer(app, bootstrap, topic, count, schemas, work)
            peers[app] = result["processed"] / result["seconds"]
            note = f"{result['processed']:,} processed; " + check(app, peer_windows(result), expected)
            rows.append((label, peers[app], note))
        rows.append(("oddstream analytics in process (models on)", in_process(True), f"{count:,} processed"))
        rows.append(
            ("oddstream analytics in process (models off)", in_process(False), f"{count:,} processed")
        )
        worker_rate, finals = worker_run(settings, count, codec, work)
        worker_note = f"{count:,} committed; price window finals: " + check("worker", finals, expected)
        rows.append(("oddstream Faust worker (models, snapshots, outputs)", worker_rate, worker_note))

        print(f"\n{'system':<52} {'events/s':>9} {'x bare':>7} {'x Quix':>7} {'x Bytewax':>9}  checked")
        for name, rate, note in rows:
            print(f"{name:<52} {rate:>9,.0f} {rate / baseline:>7.3f} {rate / peers['quix_app']:>7.2f} "
                  f"{rate / peers['bytewax_app']:>9.2f}  {note}")  # fmt: skip
        print("\ngoals for the worker: >= 0.25x bare, >= 1.5x Quix, >= 1.0x Bytewax "
              "(resolve at >= 1.0x Quix): "
              f"{worker_rate / baseline:.3f}x bare, {worker_rate / peers['quix_app']:.2f}x Quix, "
              f"{worker_rate / peers['bytewax_app']:.2f}x Bytewax")  # fmt: skip
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
