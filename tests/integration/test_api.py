"""The HTTP API role against the real broker: events in (one, a batch) land on their topics
exactly as sent, answered only after Kafka acknowledged them; garbage bodies are refused with
the field and the reason and send nothing; tokens are asked for; webhook endpoints are
created, listed, changed, rotated and deleted through it. The role keeps serving through all
of it."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.catalog import load_catalog
from schemas.codec import Codec
from schemas.topics import Topics
from tests.integration.kafka_read import read_all
from tests.integration.roles import Role, http_role, wait_for

pytestmark = pytest.mark.integration
TOKEN = "a-token-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def bet(n: int, **changes: Any) -> dict[str, Any]:
    record = {
        "event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000) - 1_000, "source": "api-test",
        "bet_id": f"b{n}", "user_id": "u1", "market_id": f"m{n % 3}", "selection_id": "home",
        "stake": f"{n}.25", "currency": "EUR", "odds": 2.5, "channel": "API",
    }  # fmt: skip
    return {"type": "BetPlaced", "record": {**record, **changes}}


@pytest.fixture
def api(settings: Settings) -> Any:
    settings = settings.model_copy(update={"api_port": free_port(), "api_tokens": [SecretStr(TOKEN)],
                                           "api_max_body_bytes": 64 * 1024, "api_max_batch": 50})  # fmt: skip
    ensure_topics(settings)
    url = f"http://127.0.0.1:{settings.api_port}"
    role = http_role(settings, "api", url)
    try:
        yield settings, url, role
    finally:
        role.stop()


def test_events_land_on_their_topics_as_sent_after_kafka_acknowledged(api: Any) -> None:
    settings, url, role = api
    topics = Topics(settings.topic_prefix)
    one = httpx.post(f"{url}/v1/events", json=bet(1), headers=AUTH, timeout=30)
    assert one.status_code == 200, one.text
    [landed] = one.json()["records"]
    assert landed["topic"] == topics.bets and landed["offset"] >= 0
    batch = [bet(n) for n in range(2, 12)]
    many = httpx.post(f"{url}/v1/events", json=batch, headers=AUTH, timeout=30)
    assert many.status_code == 200 and many.json()["accepted"] == 10
    codec = Codec(load_catalog())
    stored = {m.offset(): codec.decode(m.value()).record for m in read_all(settings.bootstrap, topics.bets)
              if m.partition() == landed["partition"]}  # fmt: skip
    assert stored[landed["offset"]]["stake"] == Decimal("1.25")  # exact money, as sent
    assert len(read_all(settings.bootstrap, topics.bets)) == 11
    assert role.alive()


def test_garbage_is_refused_with_a_reason_sends_nothing_and_the_role_keeps_serving(api: Any) -> None:
    settings, url, role = api

    def post(body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{url}/v1/events", content=body, headers=headers, timeout=30)

    garbage: list[tuple[bytes, int, str]] = [
        (b"", 400, "an empty body"),
        (b"not json", 400, "not JSON"),
        (b"\xff\xfe\x00", 400, "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "bytes"),
        (b"[" * 5_000 + b"]" * 5_000, 400, "nested too deeply"),
        (b"[]", 400, "an empty batch"),
        (json.dumps([bet(n) for n in range(51)]).encode(), 413, "at most 50"),
        (b'{"type": "BetPlaced"}', 422, "must be a JSON object"),
        (b'{"record": {}}', 422, '{"type": "<EventType>", "record": {...}}'),
        (b'{"type": "AlertChanged", "record": {}}', 422, "not an event producers publish"),
        (b'{"type": "NoSuchThing", "record": {}}', 422, "not an event producers publish"),
        (b'"BetPlaced"', 422, '{"type": "<EventType>"'),
        (json.dumps(bet(1, stake="1.234")).encode(), 422, "more than 2 decimal places"),
        (json.dumps(bet(1, odds=0.5)).encode(), 422, "odds"),
        (json.dumps(bet(1, event_id="x")).encode(), 422, "event_id"),
        (json.dumps(bet(1, event_time=int(time.time() * 1000) + 3_600_000)).encode(), 422, "future"),
        (json.dumps(bet(1, hacker=True)).encode(), 422, "not in the schema"),
        (b'{"type": "BetPlaced", "record": {"stake": NaN}}', 422, "stake"),
        # one bad event in a batch: nothing of the batch is sent
        (json.dumps([bet(1), bet(2), bet(3, odds="x")]).encode(), 422, "[2].odds"),
    ]
    for body, status, reason in garbage:
        answer = post(body, headers=AUTH)
        assert answer.status_code == status and reason in answer.json()["error"], (body[:60], answer.text)
    # tokens
    assert post(json.dumps(bet(1)).encode()).status_code == 401
    assert post(json.dumps(bet(1)).encode(), headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{url}/openapi.json", timeout=10).status_code == 200  # open, like /healthz
    assert httpx.delete(f"{url}/nowhere", headers=AUTH, timeout=10).status_code == 404

    assert read_all(settings.bootstrap, Topics(settings.topic_prefix).bets) == []  # nothing was sent
    assert role.alive()
    assert post(json.dumps(bet(1)).encode(), headers=AUTH).status_code == 200  # and it still serves
    metrics = httpx.get(f"{url}/metrics", headers=AUTH, timeout=10).text
    assert 'oddstream_api_requests_total{route="/v1/events",status="422"}' in metrics


def test_webhook_endpoints_through_the_api(api: Any) -> None:
    _, url, role = api
    endpoints = f"{url}/v1/endpoints"
    created = httpx.post(endpoints, json={"url": "http://127.0.0.1:9/hook", "event_types": ["AlertChanged"]},
                         headers=AUTH, timeout=30)  # fmt: skip
    assert created.status_code == 201, created.text
    endpoint_id, secret = created.json()["endpoint_id"], created.json()["secret"]
    assert secret.startswith("whsec_")
    listed = httpx.get(endpoints, headers=AUTH, timeout=30).json()["endpoints"]
    assert [e["endpoint_id"] for e in listed] == [endpoint_id] and secret not in json.dumps(listed)
    one = httpx.get(f"{endpoints}/{endpoint_id}", headers=AUTH, timeout=30).json()
    assert one["event_types"] == ["AlertChanged"] and one["active"] is True
    changed = httpx.patch(f"{endpoints}/{endpoint_id}", json={"active": False}, headers=AUTH, timeout=30)
    assert changed.status_code == 200
    assert httpx.get(f"{endpoints}/{endpoint_id}", headers=AUTH, timeout=30).json()["active"] is False
    rotated = httpx.post(
        f"{endpoints}/{endpoint_id}/rotate", json={"overlap_hours": 1}, headers=AUTH, timeout=30
    )
    assert rotated.status_code == 200 and rotated.json()["secret"] not in (secret, "")
    assert httpx.get(f"{endpoints}/{endpoint_id}", headers=AUTH, timeout=30).json()["secret_rotating_until"]

    refused = [
        ({"url": "http://169.254.169.254/latest/meta-data"}, "metadata"),
        ({"url": "ftp://example.com/x"}, "scheme"),
        ({"url": "https://user:pw@example.com/x"}, "credentials"),
        ({"url": "https://example.com/x", "event_types": ["Nope"]}, "event_types"),
        ({"url": "https://example.com/x", "secret": "mine"}, "unknown field"),
        ({"url": 7}, "url"),
    ]
    for body, reason in refused:
        answer = httpx.post(endpoints, json=body, headers=AUTH, timeout=30)
        assert answer.status_code == 422 and reason in answer.text, (body, answer.text)
    assert (
        httpx.patch(
            f"{endpoints}/{endpoint_id}", json={"active": "yes"}, headers=AUTH, timeout=30
        ).status_code
        == 422
    )
    assert httpx.get(f"{endpoints}/ep_missing", headers=AUTH, timeout=30).status_code == 404
    assert httpx.delete(f"{endpoints}/ep_missing", headers=AUTH, timeout=30).status_code == 404

    assert httpx.delete(f"{endpoints}/{endpoint_id}", headers=AUTH, timeout=30).status_code == 200
    assert httpx.get(endpoints, headers=AUTH, timeout=30).json()["endpoints"] == []
    assert role.alive()


def test_an_endpoints_attempts_and_messages_from_clickhouse(api: Any) -> None:
    settings, url, role = api
    store = Role(settings, "store")
    now = int(time.time() * 1000)

    def attempt(message: str, n: int, outcome: str, next_retry: int | None, at: int) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()), "event_time": now + at, "source": "test", "endpoint_id": "ep_x",
            "message_id": message, "event_type": "AlertChanged", "attempt": n, "outcome": outcome,
            "status": 500 if outcome == "http_error" else (200 if outcome == "delivered" else None),
            "duration_ms": 12.5, "error": "" if outcome == "delivered" else "boom", "url": "https://h/x",
            "next_retry": next_retry,
        }  # fmt: skip

    try:
        records = [
            attempt("msg_1", 1, "http_error", now + 5_000, at=1),
            attempt("msg_1", 2, "delivered", None, at=5_001),
            attempt("msg_2", 1, "network_error", None, at=6_000),
        ]
        with EventProducer(settings) as producer:
            for record in records:
                producer.publish("WebhookAttempted", record)
        history = f"{url}/v1/endpoints/ep_x"

        def attempts() -> list[dict[str, Any]]:
            answer = httpx.get(f"{history}/attempts", headers=AUTH, timeout=30).json()
            return answer.get("attempts", [])  # type: ignore[no-any-return]

        got = wait_for("3 attempts in ClickHouse", lambda: len(found := attempts()) == 3 and found, 120,
                       [store, role])  # fmt: skip
        assert [(a["message_id"], a["attempt"], a["outcome"]) for a in got] == [
            ("msg_2", 1, "network_error"), ("msg_1", 2, "delivered"), ("msg_1", 1, "http_error"),
        ]  # fmt: skip
        failed = httpx.get(f"{history}/attempts?outcome=failed", headers=AUTH, timeout=30).json()["attempts"]
        assert {a["outcome"] for a in failed} == {"network_error", "http_error"}
        messages = httpx.get(f"{history}/messages", headers=AUTH, timeout=30).json()["messages"]
        by_id = {m["message_id"]: m for m in messages}
        assert by_id["msg_1"]["attempts"] == 2 and by_id["msg_1"]["delivered"] is True
        assert by_id["msg_2"]["last_outcome"] == "network_error" and by_id["msg_2"]["delivered"] is False
        # hostile parameters: refused before any query is built
        hostile = [
            (f"{url}/v1/endpoints/x'%20OR%201=1%20--/attempts", 404),
            (f"{history}/attempts?limit=abc", 422),
            (f"{history}/attempts?limit=100000", 422),
            (f"{history}/messages?outcome=evil", 422),
        ]
        for path, status in hostile:
            assert httpx.get(path, headers=AUTH, timeout=30).status_code == status, path
        # and the CLI's view of it, through the API
        import subprocess
        import sys

        from tests.integration.roles import environment

        shown = subprocess.run(
            [sys.executable, "-m", "oddstream", "webhook", "attempts", "ep_x", "--outcome", "failed"],
            env=environment(settings), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        lines = shown.stdout.splitlines()
        assert shown.returncode == 0 and len(lines) == 2, shown.stdout + shown.stderr
        assert (
            "msg_2  #1  network_error  -  boom" in lines[0]
            and lines[0][:4].isdigit()
            and "T" in lines[0][:12]
        )
        assert role.alive() and store.alive()
    finally:
        store.stop()


def test_the_webhook_commands_manage_endpoints_through_the_api(api: Any) -> None:
    import subprocess
    import sys

    from tests.integration.roles import environment

    settings, _, role = api

    def cli(*args: str, config: Settings = settings) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "oddstream", "webhook", *args], env=environment(config),
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    added = cli("add", "http://127.0.0.1:9/hook", "--event-type", "AlertChanged")
    assert added.returncode == 0, added.stderr
    endpoint_id = added.stdout.split()[1]
    assert "whsec_" in added.stdout
    listed = cli("list")
    assert f"{endpoint_id}  active  http://127.0.0.1:9/hook  types=AlertChanged" in listed.stdout
    assert cli("disable", endpoint_id).returncode == 0
    assert f"{endpoint_id}  disabled" in cli("list").stdout
    rotated = cli("rotate", endpoint_id, "--overlap-hours", "1")
    assert rotated.returncode == 0 and "whsec_" in rotated.stdout
    refused = cli("add", "http://169.254.169.254/x")
    assert (
        refused.returncode == 2 and "the API refused (422)" in refused.stderr and "metadata" in refused.stderr
    )
    assert cli("remove", endpoint_id).returncode == 0
    assert endpoint_id not in cli("list").stdout
    # no API where the settings point: a clear error, not a traceback
    away = cli("list", config=settings.model_copy(update={"api_port": free_port()}))
    assert away.returncode == 2 and "the HTTP API is not reachable" in away.stderr
    assert "Traceback" not in away.stderr
    assert role.alive()
