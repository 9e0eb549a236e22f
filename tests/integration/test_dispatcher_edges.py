"""The dispatcher against hostile endpoints: URLs nobody could register through the CLI,
written straight to the registry topic, are attempts refused or failed with a reason,
never a crash; the healthy endpoint still gets every message; the delivery log shows
no credentials."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from consumers.dispatcher.endpoints import register_endpoint
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.catalog import Event, load_catalog
from schemas.codec import Codec
from schemas.topics import Topics
from tests.integration.roles import Role, wait_for
from tests.integration.test_skeleton import Receiver

pytestmark = pytest.mark.integration

HOSTILE = {
    "ep_nxdomain": "https://does-not-exist.invalid/hook",
    "ep_bad_port": "https://hooks.example.com:99999/hook",
    "ep_bad_ipv6": "https://[::1/hook",
    "ep_unspecified": "http://0.0.0.0:9/hook",
    "ep_6to4_metadata": "http://[2002:a9fe:a9fe::1]/latest/meta-data",
    "ep_nat64_loopback_prod": "https://[64:ff9b::7f00:1]/hook",
    "ep_credentials": "http://admin:hunter2@127.0.0.1:9/hook",
    "ep_refused": "http://127.0.0.1:9/hook",  # allowed here (local development), nothing listens
}


def window(market: str, n: int) -> dict[str, Any]:
    start = 1_767_225_600_000
    return {
        "event_id": str(uuid.uuid4()), "event_time": start + 60_000, "source": "test",
        "window_id": f"w-{market}-{n}", "market_id": market, "window_start": start,
        "window_end": start + 60_000, "version": n, "selections": [], "overround": None,
        "final": True, "bookmakers": [], "consensus": [],
    }  # fmt: skip


def test_hostile_endpoints_are_recorded_attempts_and_the_healthy_one_is_served(settings: Settings) -> None:
    settings = settings.model_copy(update={"webhook_max_attempts": 2})
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    receiver = Receiver()
    register_endpoint(settings, receiver.url, ["OddsWindowUpdated"], endpoint_id="ep_healthy")
    codec = Codec(load_catalog())
    with EventProducer(settings) as producer:
        for endpoint_id, url in HOSTILE.items():  # straight to the topic: no CLI checks
            record = {
                "event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000), "source": "x",
                "endpoint_id": endpoint_id, "url": url, "event_types": [], "active": True,
            }  # fmt: skip
            value = codec.encode(Event("WebhookEndpoint", record), trusted=True)
            producer.produce_raw(topics.webhook_endpoints, endpoint_id.encode(), value)
    dispatcher = Role(settings, "dispatcher")
    try:
        expected = len(HOSTILE) + 1
        wait_for(
            "the registry", lambda: f"ready: {expected} endpoint" in dispatcher.output(), 60, [dispatcher]
        )
        with EventProducer(settings) as producer:
            for n in range(3):
                producer.publish("OddsWindowUpdated", window("mH", n))
        wait_for("3 deliveries", lambda: len(receiver.deliveries) >= 3, 60, [dispatcher])
        log_path = settings.data_dir / "logs" / "webhook-deliveries.jsonl"

        def attempts() -> list[dict[str, Any]]:
            return [json.loads(line) for line in log_path.read_text().splitlines()]

        # 3 messages x every hostile endpoint: refused at once, or failed twice (max attempts)
        wait_for(
            "every hostile attempt", lambda: {a["endpoint_id"] for a in attempts()} >= set(HOSTILE), 60,
            [dispatcher],
        )  # fmt: skip
        time.sleep(3)  # the last retries
        by_endpoint: dict[str, list[dict[str, Any]]] = {}
        for a in attempts():
            by_endpoint.setdefault(a["endpoint_id"], []).append(a)
        for endpoint_id in (
            "ep_bad_port",
            "ep_bad_ipv6",
            "ep_unspecified",
            "ep_6to4_metadata",
            "ep_credentials",
        ):
            outcomes = {a["outcome"] for a in by_endpoint[endpoint_id]}
            assert outcomes == {"refused"}, (endpoint_id, by_endpoint[endpoint_id])
            assert all(a["error"] for a in by_endpoint[endpoint_id])
        assert "carrying 169.254.169.254" in by_endpoint["ep_6to4_metadata"][0]["error"]
        assert {a["outcome"] for a in by_endpoint["ep_nxdomain"]} == {"network_error"}
        assert "does not resolve" in by_endpoint["ep_nxdomain"][0]["error"]
        assert {a["outcome"] for a in by_endpoint["ep_refused"]} == {"network_error"}
        # NAT64 of loopback passes here only because local development allows loopback
        assert {a["outcome"] for a in by_endpoint["ep_nat64_loopback_prod"]} <= {"network_error"}
        assert "hunter2" not in log_path.read_text() and "hunter2" not in dispatcher.output()
        assert {a["outcome"] for a in by_endpoint["ep_healthy"]} == {"delivered"}
        assert dispatcher.alive()
    finally:
        dispatcher.stop()


def test_the_dispatcher_command_refuses_the_development_secret(settings: Settings) -> None:
    import subprocess
    import sys

    from tests.integration.roles import environment

    env = environment(settings.model_copy(update={"development": False}))
    env.pop("ODDSTREAM_WEBHOOK_MASTER_SECRET", None)
    result = subprocess.run(
        [sys.executable, "-m", "oddstream", "dispatcher"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "ODDSTREAM_WEBHOOK_MASTER_SECRET is the public development default" in result.stderr
