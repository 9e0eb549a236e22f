"""Alerts on silence (issue 14, point 5), with the real broker and worker: one service's
heartbeats stop, and nothing else is on its partition. Its heartbeat_gap alert fires
within the rule's gap plus the idle timeout, on the worker's idle clock, and resolves when
the heartbeats resume."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from oddstream.codecs import build_codec
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.topics import Topics
from streams.detectors import DetectorConfig
from tests.integration.kafka_read import read_all
from tests.integration.roles import Role, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
GAP_S = DetectorConfig().heartbeat_gap_ms / 1000
IDLE_S = 3.0
# the worker looks at quiet partitions once a second; its alert then goes through the broker
SLACK_S = 5.0


def gap_alerts(settings: Settings) -> list[dict[str, Any]]:
    codec = build_codec(settings)
    records = [
        codec.decode(m.value()).record
        for m in read_all(settings.bootstrap, Topics(settings.topic_prefix).alerts)
    ]
    return [r for r in records if r["rule"] == "heartbeat_gap" and r["labels"] == {"service": "wallet"}]


def test_a_silent_service_fires_its_gap_alert_on_the_idle_clock_and_resolves_when_it_is_back(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={"window_idle_timeout_ms": int(IDLE_S * 1000), "worker_metrics_port": 0}
    )
    ensure_topics(settings)
    worker = Role(settings, "worker")
    system = Topics(settings.topic_prefix).name("system")
    sequence = 0

    def beat(producer: EventProducer) -> float:
        nonlocal sequence
        sent = time.time()
        producer.publish("ServiceHeartbeat", {
            "event_id": str(uuid.uuid4()), "event_time": int(sent * 1000), "source": "test",
            "service": "wallet", "instance": "w1", "sequence": sequence,
        })  # fmt: skip
        producer.flush()
        sequence += 1
        return sent

    try:
        with EventProducer(settings) as producer:
            beat(producer)
            wait_for(
                "the worker to take the heartbeats' partition",
                lambda: f"{system}[" in worker.log.read_text(errors="replace"),
                120,
                [worker],
            )
            for _ in range(5):  # alive: a heartbeat a second
                time.sleep(1)
                last = beat(producer)
            wait_for(
                "the alert of the silence",
                lambda: len(gap_alerts(settings)) > 0,
                GAP_S + IDLE_S + 60,
                [worker],
            )
            fired_after = time.time() - last
            [firing] = gap_alerts(settings)
            assert firing["status"] == "firing" and firing["severity"] == "critical", firing
            # not before the gap, and within the gap plus the idle timeout (plus the timer's slack)
            assert GAP_S - 1 <= fired_after <= GAP_S + IDLE_S + SLACK_S, fired_after
            assert worker.process.poll() is None, worker.output()

            time.sleep(3)
            assert [a["status"] for a in gap_alerts(settings)] == ["firing"]  # still silent: one alert
            back = beat(producer)  # the service is back
            wait_for("the alert to resolve", lambda: len(gap_alerts(settings)) > 1, 60, [worker])
            resolved_after = time.time() - back
            firing, resolved = gap_alerts(settings)
            assert resolved["status"] == "resolved" and round(
                resolved["event_time"].timestamp() * 1000
            ) == int(back * 1000), resolved
            assert resolved_after <= SLACK_S + 2, resolved_after
            for _ in range(3):
                time.sleep(1)
                beat(producer)
        time.sleep(2)
        assert [a["status"] for a in gap_alerts(settings)] == ["firing", "resolved"]  # alive: nothing more
        assert worker.process.poll() is None, worker.output()
        print(f"\nfired {fired_after:.1f} s after the last heartbeat (gap {GAP_S:.0f} s, idle timeout "
              f"{IDLE_S:.0f} s); resolved {resolved_after:.1f} s after the first one back")  # fmt: skip
    finally:
        worker.stop()
