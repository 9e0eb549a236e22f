"""Analytics worker throughput on a real broker, against a bare aiokafka + fastavro
consume-and-decode loop over the same records, measured in the same run.

    python -m benchmarks.worker [--events 100000]

1. Produces a seeded simulation (all event types, event times in the past) to fresh topics.
2. Baseline: aiokafka reads the source topics (odds, bets, system) and fastavro decodes
   every record with its writer schema - nothing else.
3. The analytics path in process: the same read, then the worker's per-record code
   (decode, checks, windows, result encoding), without producing.
4. ``oddstream replay`` (in process): the same records through the same handling, the
   final rows written to a fresh chDB namespace.
5. The real worker (``oddstream worker``, Faust) as a process: events per second from its
   first output record to its last current update (Kafka timestamps of the outputs), so
   start-up and the idle close at the end are not counted.

Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts a local broker on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer, TopicPartition
from fastavro import schemaless_reader

from benchmarks.kafka import kafka_for_benchmark
from consumers.worker.outputs import apply_record, messages
from consumers.worker.replay import replay
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings
from oddstream.simulator.run import run_simulation
from schemas.catalog import load_catalog
from schemas.codec import SINGLE_OBJECT_HEADER, Codec
from schemas.intake import Intake
from schemas.topics import Topics
from streams.processor import PartitionProcessor

Handle = Callable[[str, int, int, bytes | None, bytes, Any, int], object]


async def consume(bootstrap: str, topics: list[str], expected: int, handle: Handle) -> float:
    """Events per second to read and handle ``expected`` records from offset 0."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    try:
        seen = 0
        started = time.perf_counter()
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batch.items():
                for m in records:
                    handle(tp.topic, tp.partition, m.offset, m.key, m.value, m.headers, m.timestamp)
                seen += len(records)
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def end_offsets(bootstrap: str, topics: list[str]) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench"})
    try:
        total = 0
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                total += consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
        return total
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topics: list[str]) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in consumer.list_topics(t, timeout=30).topics[t].partitions
        ]
        return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=30))
    finally:
        consumer.close()


def output_span(bootstrap: str, topics: list[str], codec: Codec) -> tuple[int, int, int]:
    """(first output ms, last current-update ms, records) over the worker's output topics."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe(topics)
    first, last, n = 2**62, 0, 0
    quiet = time.monotonic()
    try:
        while time.monotonic() - quiet < 5:
            m = consumer.poll(0.5)
            if m is None or m.error():
                continue
            quiet = time.monotonic()
            n += 1
            ts = m.timestamp()[1]
            first = min(first, ts)
            if not codec.decode(m.value() or b"").record["final"]:
                last = max(last, ts)
        return first, last, n
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="oddstream-bench-"))
    bootstrap, broker = kafka_for_benchmark(data)
    try:
        settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
                            data_dir=data, worker_id=f"bench-{uuid.uuid4().hex[:8]}")  # fmt: skip
        ensure_topics(settings)
        topics = Topics(settings.topic_prefix)
        sources = [topics.odds, topics.bets, topics.name("system")]
        start = int(time.time() * 1000) - int(args.events / settings.simulator_rate * 1000) - 120_000
        run_simulation(settings, events=args.events, realtime=False, start_ms=start, show_progress=False)
        total = end_offsets(bootstrap, sources)
        print(f"produced {args.events:,} simulated events; {total:,} on the analysed topics {sources}")
        print(
            "window specs besides 1m (ODDSTREAM_WINDOW_SPECS): "
            f"{[spec.name for spec in settings.specs()] or 'none'}"
        )

        catalog = load_catalog()
        codec = Codec(catalog)
        intake = Intake(codec, topics, settings.limits())

        def bare(
            topic: str, partition: int, offset: int, key: bytes | None, value: bytes, headers: Any, ts: int
        ) -> object:
            schema = catalog.by_fingerprint[value[2:SINGLE_OBJECT_HEADER]].parsed
            return schemaless_reader(io.BytesIO(value[SINGLE_OBJECT_HEADER:]), schema, None)

        processors: dict[tuple[str, int], PartitionProcessor] = {}

        def analytics(
            topic: str, partition: int, offset: int, key: bytes | None, value: bytes, headers: Any, ts: int
        ) -> object:
            processor = processors.get((topic, partition))
            if processor is None:
                processor = processors[(topic, partition)] = PartitionProcessor(
                    settings.window_config(), partition=partition
                )
            origin = (topic, partition, offset)
            output = apply_record(processor, intake, origin, key, value, headers, ts, 0)
            return messages(output, topics, codec, "bench", origin, key, value, "bench", b"bench")

        baseline = asyncio.run(consume(bootstrap, sources, total, bare))
        in_process = asyncio.run(consume(bootstrap, sources, total, analytics))
        started = time.perf_counter()
        rebuilt, _ = replay(settings, "bench", show_progress=False)
        replay_rate = rebuilt.records / (time.perf_counter() - started)

        # the worker's own knobs (ODDSTREAM_WORKER_*) and the window specs pass through, nothing
        # else of ODDSTREAM_*
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ODDSTREAM_")
            or k.startswith("ODDSTREAM_WORKER_")
            or k == "ODDSTREAM_WINDOW_SPECS"
        }
        env.update(ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS=bootstrap, ODDSTREAM_TOPIC_PREFIX=settings.topic_prefix,
                   ODDSTREAM_DATA_DIR=str(data), ODDSTREAM_WORKER_ID=settings.worker_id,
                   ODDSTREAM_LOG_LEVEL="warn", ODDSTREAM_DEVELOPMENT="true")  # fmt: skip
        log = (data / "worker.log").open("wb")
        worker = subprocess.Popen([sys.executable, "-m", "oddstream", "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)  # fmt: skip
        try:
            # wait cheaply (committed offsets) so this process does not compete for the CPU
            while committed(bootstrap, settings.worker_id, sources) < total:
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited: see {data / 'worker.log'}")
                time.sleep(1)
            first, last, n = output_span(bootstrap, topics.windows(), codec)
        finally:
            worker.terminate()
            worker.wait(30)
        faust_rate = total / max((last - first) / 1000, 1e-3)
        print(f"aiokafka + fastavro decode (baseline):      {baseline:>9,.0f} events/s")
        print(f"analytics path in process (no produce):     {in_process:>9,.0f} events/s   "
              f"ratio {in_process / baseline:.3f}")  # fmt: skip
        print(f"oddstream replay (to a fresh chDB):         {replay_rate:>9,.0f} events/s   "
              f"ratio {replay_rate / baseline:.3f}   (goal >= 30,000 and >= 0.3)")  # fmt: skip
        print(f"oddstream worker (Faust, real outputs):     {faust_rate:>9,.0f} events/s   "
              f"ratio {faust_rate / baseline:.3f}   ({n / total:.2f} output records per event)")  # fmt: skip
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
