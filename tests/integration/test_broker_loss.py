"""Issue 15, point 3: a broker lost mid-stream. On the local three-node cluster (replication
3, two in sync), with the simulator producing 100k events (3 % late and out of order, at
1,000 a second) and the store, worker, gateway and dispatcher running, one node is killed
with SIGKILL and started again a minute later, then another (never two at once). No
acknowledged record is lost (the topics hold exactly what the producer had acknowledged),
every role carries on through the leader changes (the worker's checkpoints run every
0.5 s, so leaders move under snapshots being written), and the final tables equal the SQL
recomputation from the raw events, as `oddstream replay` does."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers.dispatcher.endpoints import register_endpoint
from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings
from oddstream.simulator.run import run_simulation
from schemas.topics import SOURCE_TOPICS, Topics
from tests.integration.kafka_read import read_all
from tests.integration.roles import RestartingRole, Role, wait_for
from tests.integration.test_cluster import started_cluster
from tests.integration.test_dispatcher_edges import FlakyReceiver
from tests.integration.test_exactness import analytics_settings, check_exact, run_replay
from tests.integration.test_skeleton import metric

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(1200)]
EVENTS = 100_000
DOWN_S = 60.0


def snapshots_written(settings: Settings) -> float:
    text = httpx.get(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics", timeout=10).text
    return metric(text, "oddstream_worker_snapshots_written_total")


def test_losing_one_broker_at_a_time_under_the_whole_stack_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    cluster = started_cluster(tmp_path / "cluster")  # fails loudly (never skips) if it cannot
    settings = analytics_settings(settings).model_copy(
        update={
            "kafka_bootstrap_servers": cluster.bootstrap,
            "topic_replication": 3,
            "simulator_rate": 1_000.0,
            "worker_metrics_port": free_port(),
            "gateway_port": free_port(),
        }
    )
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    receiver = FlakyReceiver(0, 0)
    register_endpoint(settings, receiver.url, ["OddsWindowUpdated"], endpoint_id="ep_through")
    roles: list[Role] = []
    produced: dict[str, Any] = {}

    def produce() -> None:
        try:
            produced["acknowledged"] = run_simulation(
                settings, events=EVENTS, realtime=True, show_progress=False, out_of_order=0.03,
                max_delay_ms=90_000, ground_truth=settings.data_dir / "truth.jsonl",
            )  # fmt: skip
        except Exception as exc:  # the test fails with it below
            produced["error"] = exc

    try:
        roles += [Role(settings, "store"), RestartingRole(settings, "worker"), Role(settings, "gateway"),
                  Role(settings, "dispatcher")]  # fmt: skip
        wait_for("the dispatcher", lambda: "dispatcher ready" in roles[3].output(), 90, roles)
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        for node in (cluster.nodes[1], cluster.nodes[2]):
            time.sleep(5)
            written = snapshots_written(settings)
            node.kill()  # SIGKILL: a machine lost, mid-stream (it leads about a third of the partitions)
            time.sleep(DOWN_S)
            assert all(role.alive() for role in roles), [r.log.stem for r in roles if not r.alive()]
            # the worker went on writing snapshots while the partitions' leaders moved
            assert snapshots_written(settings) > written
            node.launch()
            node.wait_healthy(120)
            cluster.wait_brokers(3, 120)
        producer.join(300)
        assert "error" not in produced, produced.get("error")
        assert produced["acknowledged"] == EVENTS
        # what the source topics hold is exactly what was acknowledged: nothing lost, nothing twice
        held = sum(len(read_all(settings.bootstrap, topics.name(s), timeout_s=60)) for s in SOURCE_TOPICS)
        assert held == EVENTS
        check_exact(settings, roles)
        report = run_replay(settings, "after_broker_loss")
        print(report)
        assert "the replay equals the live tables" in report, report
        # the gateway and the dispatcher carried on: they serve and deliver after both losses
        delivered = len(receiver.arrived)
        assert delivered > 0
        health = httpx.get(f"http://{settings.gateway_host}:{settings.gateway_port}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert all(role.alive() for role in roles)
        assert "HALTED" not in roles[1].log.read_text(errors="replace")  # every output acknowledged
        print(f"\nwebhooks delivered through the losses: {delivered}")
    finally:
        for role in reversed(roles):
            role.stop()
        cluster.stop()
