"""Snapshots that are forged, outdated or in the old unauthenticated format are refused
without being deserialised, and the worker rebuilds those partitions from the source log by
itself: the final tables still equal the SQL recomputation from the raw events, and the
predictions and alerts equal a replay from offset 0 (an uninterrupted run)."""

from __future__ import annotations

import itertools
import pickle
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumers.worker import snapshots
from consumers.worker.snapshots import load_state, manifest_chunk_keys, open_sealed, seal
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from oddstream.simulator.model import MarketSimulator, disorder
from schemas.topics import Topics
from tests.integration.kafka_read import group_lag, read_all
from tests.integration.roles import Role, environment, wait_for
from tests.integration.test_exactness import analytics_settings, check_exact, run_replay

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]
EVENTS = 24_000


class Trap:
    """What an attacker writes: unpickling it creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_refused_snapshots_are_rebuilt_from_the_log_and_end_equal_to_an_uninterrupted_run(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small chunks, so the real worker writes (and restores) chunked snapshots
    settings = analytics_settings(settings).model_copy(update={"worker_snapshot_chunk_bytes": 4096})
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    sources = [topics.odds, topics.bets, topics.name("system")]
    start = int(time.time() * 1000) - int(EVENTS / settings.simulator_rate * 1000) - 180_000
    sim = MarketSimulator(seed=settings.simulator_seed, start_ms=start, markets=settings.simulator_markets,
                          rate_per_s=settings.simulator_rate, anomaly_rate=0.001)  # fmt: skip
    events = list(itertools.islice(disorder(sim.events(), 3, 0.03, 90_000), EVENTS))
    store, worker = Role(settings, "store"), Role(settings, "worker")
    roles = [store, worker]
    try:
        with EventProducer(settings) as producer:
            for event in events[: EVENTS // 2]:
                producer.publish_event(event)
        wait_for("the first half processed", lambda: group_lag(settings.bootstrap, settings.worker_id,
                                                               sources) == 0, 300, roles)  # fmt: skip
        time.sleep(3)  # its last snapshots written (every 0.5 s)
        worker.stop()

        changelog = f"{settings.worker_id}-odds-analytics-state-changelog"
        latest = {m.key(): m for m in read_all(settings.bootstrap, changelog)}
        chunked = [k for k in latest if k and b"/" in k]
        assert chunked, "no chunked snapshot was written"
        secret = settings.worker_state_key.get_secret_value().encode()
        chunks = {k: m.value() for k, m in latest.items() if k and m.value() is not None}
        states = {}
        for partition in range(3):
            key = f"{topics.odds}:{partition}".encode()
            states[partition] = open_sealed(latest[key].value() or b"", key, secret, chunks)  # type: ignore[arg-type]
            assert load_state(states[partition]).offset > 0

        # partition 0: forged (a trap sealed with another key); 1: the real state sealed by an
        # older state version; 2: the real state in format 1, an unauthenticated pickle
        marker = tmp_path / "executed"
        forged = seal(pickle.dumps(Trap(marker)), f"{topics.odds}:0".encode(), b"not-the-key", 99).manifest
        monkeypatch.setattr(snapshots, "STATE_VERSION", snapshots.STATE_VERSION - 1)
        older = seal(states[1], f"{topics.odds}:1".encode(), secret, 99).manifest
        monkeypatch.undo()
        format_1 = b"OSP1" + zlib.compress(pickle.dumps(load_state(states[2]), protocol=5), 1)
        writer = Producer({"bootstrap.servers": settings.bootstrap, "acks": "all"})
        for partition, value in enumerate((forged, older, format_1)):
            writer.produce(
                changelog, key=f"{topics.odds}:{partition}".encode(), value=value, partition=partition
            )
        assert writer.flush(30) == 0

        worker = Role(settings, "worker")
        roles = [store, worker]
        with EventProducer(settings) as producer:
            for event in events[EVENTS // 2 :]:
                producer.publish_event(event)
        check_exact(settings, roles, EVENTS)

        log = worker.log.read_text(errors="replace")
        assert f"{topics.odds}[0]: snapshot refused, forged: its MAC does not match" in log
        assert f"{topics.odds}[1]: snapshot refused, outdated: written by state=" in log
        assert f"{topics.odds}[2]: snapshot refused, outdated: format 1" in log
        for partition in range(3):
            assert f"{topics.odds}[{partition}]: replaying offsets 0.." in log
        assert f"{topics.bets}[0]: restored snapshot" in log  # the others restore as before
        assert not marker.exists(), "the forged snapshot was deserialised"
        assert worker.alive()

        # chunks no manifest names any more were deleted (tombstones), so compaction drops them
        worker.stop()
        final = {m.key(): m.value() for m in read_all(settings.bootstrap, changelog)}
        named = {c for k, v in final.items() if k and v and b"/" not in k for c in manifest_chunk_keys(v, k)}
        live = {k for k, v in final.items() if k and b"/" in k and v is not None}
        assert named and live == named
        assert any(k and b"/" in k and v is None for k, v in final.items()), "no chunk was ever deleted"

        report = run_replay(settings, "after_rebuild")
        print(report)
        assert "the replay equals the live tables" in report, report
        assert all("0 differ, 0 only live" in line for line in report.splitlines() if "only replayed" in line)
    finally:
        for role in roles:
            role.stop()


def test_the_worker_command_refuses_the_development_state_key(settings: Settings) -> None:
    env = environment(settings.model_copy(update={"development": False}))
    env.pop("ODDSTREAM_WORKER_STATE_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "oddstream", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "ODDSTREAM_WORKER_STATE_KEY is the public development default" in result.stderr
