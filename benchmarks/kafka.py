"""The broker a benchmark runs against: KAFKA_BOOTSTRAP_SERVERS if set, else a local one."""

from __future__ import annotations

import os
from pathlib import Path

from infra.broker import LocalKafka, free_port


def kafka_for_benchmark(work: Path) -> tuple[str, LocalKafka | None]:
    """(bootstrap, the broker started here or None); stop the broker when done."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        return bootstrap, None
    broker = LocalKafka(work / "kafka", port=free_port())
    broker.start()
    return broker.bootstrap, broker
