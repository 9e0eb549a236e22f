"""Shared fixtures. Integration tests get a real Kafka broker: the one named by
KAFKA_BOOTSTRAP_SERVERS, or a local KRaft broker this session starts (or reuses,
if one from an earlier run is still listening on the test port). If it cannot
start, the tests fail; they never skip."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from infra.broker import LocalKafka, free_port, kafka_is_healthy
from oddstream.settings import Settings

# No per-example deadlines: shared CI machines are noisy and timing is not behaviour.
hypothesis_settings.register_profile("oddstream", deadline=None, print_blob=True)
hypothesis_settings.load_profile("oddstream")

TEST_KAFKA_PORT = int(os.environ.get("ODDSTREAM_TEST_KAFKA_PORT", "19092"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        if not kafka_is_healthy(configured, 10):
            pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS={configured} does not answer", pytrace=False)
        yield configured
        return
    reuse = f"127.0.0.1:{TEST_KAFKA_PORT}"
    if kafka_is_healthy(reuse, 3):
        yield reuse
        return
    data = Path(tempfile.gettempdir()) / f"oddstream-test-kafka-{TEST_KAFKA_PORT}"
    shutil.rmtree(data / "data", ignore_errors=True)
    (data / "data" / "meta.properties").unlink(missing_ok=True)
    broker = LocalKafka(data, port=TEST_KAFKA_PORT, heap="512m")
    broker.start()  # raises BrokerError (a failure, not a skip) if it cannot
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own topic prefix, data directory and ports."""
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        topic_partitions=3,
        data_dir=tmp_path / "data",
        store_port=free_port(),
        gateway_port=free_port(),
        api_port=free_port(),
        worker_metrics_port=free_port(),
        worker_id=f"worker-{uuid.uuid4().hex[:8]}",
        webhook_allow_private_targets=True,
        development=True,
        log_level="info",
    )
