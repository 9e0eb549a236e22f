"""Consume-and-decode throughput from a real broker: oddstream's decode path against a
bare aiokafka + fastavro loop over the same records (the baseline issue 3's worker
benchmark compares with).

    python -m benchmarks.kafka_decode [--events 200000]

Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts a local broker on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader

from benchmarks.kafka import kafka_for_benchmark
from benchmarks.worker import consume
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from oddstream.simulator.model import MarketSimulator
from schemas.catalog import load_catalog
from schemas.codec import SINGLE_OBJECT_HEADER, Codec
from schemas.intake import Intake
from schemas.topics import Topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()

    bootstrap, broker = kafka_for_benchmark(Path(tempfile.mkdtemp(prefix="oddstream-bench-")))
    try:
        settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
        ensure_topics(settings)
        topic = Topics(settings.topic_prefix).odds
        sim = MarketSimulator(seed=3, start_ms=1_790_000_000_000, rate_per_s=500)
        quotes = itertools.islice((e for e in sim.events() if e.type == "OddsChanged"), args.events)
        with EventProducer(settings) as producer:
            for event in quotes:
                producer.publish_event(event)
        print(f"produced {producer.delivered:,} OddsChanged records to {topic}")

        catalog = load_catalog()
        codec = Codec(catalog)
        schema = catalog.schema("OddsChanged").parsed

        intake = Intake(codec, Topics(settings.topic_prefix), settings.limits())

        def bare(
            topic: str, partition: int, offset: int, key: bytes | None, value: bytes, headers: Any, ts: int
        ) -> object:
            return schemaless_reader(io.BytesIO(value[SINGLE_OBJECT_HEADER:]), schema, None)

        def oddstream_path(
            topic: str, partition: int, offset: int, key: bytes | None, value: bytes, headers: Any, ts: int
        ) -> object:
            return intake.admit(topic, key, value, headers, ts)  # decode, size, key and value checks

        baseline = asyncio.run(consume(bootstrap, [topic], producer.delivered, bare))
        ours = asyncio.run(consume(bootstrap, [topic], producer.delivered, oddstream_path))
        print(f"aiokafka + fastavro (baseline):     {baseline:>10,.0f} events/s")
        print(f"aiokafka + oddstream admission:     {ours:>10,.0f} events/s")
        print(f"ratio oddstream/baseline:           {ours / baseline:>10.3f}")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
