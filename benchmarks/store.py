"""The store's sink next to a raw chDB insert of the same rows, in the same run.

    make bench-store      (python -m benchmarks.store [--events 300000])

1. A seeded simulation to fresh topics (event times in the past): a backlog of raw events.
2. Baseline, in a child process with its own chDB directory (one process per chDB path):
   it reads the whole backlog, builds exactly the rows the store builds (the store's own
   admission and row code, not timed), then times only their inserts through
   clickhouse-connect, table by table in chunks of the records one store batch holds
   (``store_batch_max_records``), as the store inserts them.
3. The real store role (``oddstream store``, embedded chDB) drains the same backlog; its
   rate is the growth of ``rows_written`` (``/healthz``, polled every 50 ms) from the first
   observation to the last row, so start-up and the first batch are not counted.

Prints both rates in rows/s and their ratio. Goal (issue 10): the sink >= 0.7x the raw
insert. Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts a local broker. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer

from benchmarks.kafka import kafka_for_benchmark
from benchmarks.sql_isolation import written
from benchmarks.worker import end_offsets
from consumers.store.clickhouse import migrate
from consumers.store.service import Rows, StoreService
from infra.broker import free_port
from oddstream.errors import EventError
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings
from oddstream.simulator.run import run_simulation
from schemas.topics import SOURCE_TOPICS, Topics


def baseline(settings: Settings, total: int) -> dict[str, Any]:
    """In its own process: the store's rows for the whole backlog, then their inserts timed."""
    service = StoreService(settings)
    migrate(service.store)
    topics = [Topics(settings.topic_prefix).name(s) for s in SOURCE_TOPICS]
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": f"raw-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe(topics)
    chunk = settings.store_batch_max_records
    batches: list[dict[str, Rows]] = []
    read = refused = 0
    try:
        while read < total:
            for m in consumer.consume(1000, timeout=5):
                if m.error():
                    continue
                if read % chunk == 0:
                    batches.append(defaultdict(Rows))
                read += 1
                record = _Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
                try:
                    service._rows_of(record, set(), batches[-1])
                except EventError:
                    refused += 1
    finally:
        consumer.close()
    rows = 0
    started = time.perf_counter()
    for batch in batches:
        for table, table_rows in batch.items():
            service.store.insert(table, table_rows.values, service._columns(table))
            rows += len(table_rows.values)
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "inserts": sum(len(b) for b in batches), "refused": refused}


class _Record:
    """A confluent-kafka message in the shape the store's row code reads (aiokafka's)."""

    def __init__(self, topic: Any, partition: Any, offset: Any, key: Any, value: Any, ts: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.timestamp = key, value, ts
        self.headers: list[tuple[str, bytes]] = []


def sink_rate(settings: Settings, data: Path, rows: int) -> tuple[float, int]:
    """The real store on the backlog: (rows/s between the first observation and the last row,
    rows it had written by the first observation)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSTREAM_")}
    env.update(
        ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap, ODDSTREAM_TOPIC_PREFIX=settings.topic_prefix,
        ODDSTREAM_DATA_DIR=str(data / "store"), ODDSTREAM_STORE_PORT=str(settings.store_port),
        ODDSTREAM_LOG_LEVEL="warn",
        ODDSTREAM_STORE_BATCH_MAX_RECORDS=str(settings.store_batch_max_records),
    )  # fmt: skip
    log = data / "store.log"
    store = subprocess.Popen(
        [sys.executable, "-m", "oddstream", "store"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        url = settings.sql_endpoint
        deadline = time.monotonic() + 120
        first: tuple[float, int] | None = None
        while True:
            try:
                now, count = time.monotonic(), written(url)
            except httpx.HTTPError:
                now, count = time.monotonic(), 0
            if count and first is None:
                first = (now, count)
            if count >= rows:
                assert first is not None
                return (count - first[1]) / max(now - first[0], 1e-3), first[1]
            if store.poll() is not None or (first is None and now > deadline):
                raise SystemExit(f"the store stopped or never wrote; see {log}")
            time.sleep(0.05)
    finally:
        store.terminate()
        store.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--baseline", help=argparse.SUPPRESS)  # the child: settings as JSON
    args = parser.parse_args()
    if args.baseline:
        spec = json.loads(args.baseline)
        print(json.dumps(baseline(Settings(**spec["settings"]), spec["total"])))
        return
    data = Path(tempfile.mkdtemp(prefix="oddstream-store-"))
    bootstrap, broker = kafka_for_benchmark(data)
    try:
        settings = Settings(
            kafka_bootstrap_servers=bootstrap, topic_prefix=f"store{uuid.uuid4().hex[:8]}.", data_dir=data,
            store_port=free_port(),
        )  # fmt: skip
        ensure_topics(settings)
        start = int(time.time() * 1000) - int(args.events / settings.simulator_rate * 1000) - 600_000
        run_simulation(settings, events=args.events, realtime=False, start_ms=start, show_progress=False)
        topics = Topics(settings.topic_prefix)
        total = end_offsets(bootstrap, [topics.name(s) for s in SOURCE_TOPICS])
        print(f"backlog: {total:,} records on the source topics ({args.events:,} simulated events)")
        child = {
            "settings": {"kafka_bootstrap_servers": bootstrap, "topic_prefix": settings.topic_prefix,
                         "data_dir": str(data / "baseline"),
                         "store_batch_max_records": settings.store_batch_max_records},
            "total": total,
        }  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.store", "--baseline", json.dumps(child)],
            capture_output=True, text=True, check=False, timeout=1800,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"the baseline failed:\n{done.stdout}\n{done.stderr}")
        raw = json.loads(done.stdout.strip().splitlines()[-1])
        raw_rate = raw["rows"] / raw["seconds"]
        print(f"raw chDB insert of the same rows ({raw['inserts']} inserts of up to "
              f"{settings.store_batch_max_records:,} records' rows; {raw['refused']} records refused): "
              f"{raw_rate:>10,.0f} rows/s  (baseline)")  # fmt: skip
        rate, skipped = sink_rate(settings, data, raw["rows"])
        print(f"the store role (Kafka in, admission, rows, inserts, commits): {rate:>10,.0f} rows/s  "
              f"ratio {rate / raw_rate:.2f}  (first {skipped:,} rows not timed)")  # fmt: skip
        print(f"goal (issue 10): the sink >= 0.7x the raw insert: {rate / raw_rate:.2f}x")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
