"""Issue 12, point 2: the retry schedule lives in Kafka. A dispatcher killed with -9 in the
middle of a backoff resumes the schedule (the next attempt comes when it was due, numbered
as it should be, with the same webhook-id); exhausted messages go to the webhook dead-letter
topic with their payload and attempts, and come back through the API's recover and resend;
an endpoint failing for too long is disabled with a reason; retry records nobody with the
master secret wrote are refused and never delivered."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from consumers.dispatcher.endpoints import register_endpoint, registrations
from consumers.dispatcher.schedule import pending_key, retry_partition
from consumers.dispatcher.signing import RETRY_SIGNATURE, retry_signature
from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.catalog import Event
from schemas.topics import Topics
from tests.integration.roles import Role, http_role, wait_for
from tests.integration.test_dispatcher_edges import window
from tests.integration.test_skeleton import sql

pytestmark = pytest.mark.integration
TOKEN = "a-token-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Receiver:
    """Answers 500 until ``healthy`` is set; records every POST (time, webhook-id, body) and
    whether it verified with ``secret``."""

    def __init__(self) -> None:
        self.healthy = False
        self.secret = ""
        self.posts: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = False
                if owner.secret:
                    try:
                        Webhook(owner.secret).verify(body, headers)
                        verified = True
                    except Exception:
                        verified = False
                owner.posts.append({"at": time.monotonic(), "id": headers["webhook-id"], "body": body,
                                    "ok": owner.healthy, "verified": verified})  # fmt: skip
                self.send_response(204 if owner.healthy else 500)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def delivered(self) -> list[dict[str, Any]]:
        return [p for p in self.posts if p["ok"]]


def attempts_logged(settings: Settings) -> list[dict[str, Any]]:
    path = settings.data_dir / "logs" / "webhook-deliveries.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_dispatcher_killed_mid_backoff_resumes_the_schedule(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"webhook_retry_schedule_s": (15.0, 1.0), "webhook_breaker_failures": 100}
    )
    ensure_topics(settings)
    receiver = Receiver()
    register_endpoint(settings, receiver.url, ["OddsWindowUpdated"], endpoint_id="ep_durable")
    dispatcher = Role(settings, "dispatcher")
    try:
        wait_for("the registry", lambda: "ready: 1 endpoint" in dispatcher.output(), 60, [dispatcher])
        with EventProducer(settings) as producer:
            producer.publish("OddsWindowUpdated", window("mK", 1))
        wait_for("the first attempt", lambda: receiver.posts, 60, [dispatcher])
        failed_at = receiver.posts[0]["at"]
        time.sleep(3)  # its retry is written (due 15 s after it), the source offset committed
        dispatcher.process.kill()  # -9, mid-backoff
        dispatcher.process.wait()
        receiver.healthy = True
        dispatcher = Role(settings, "dispatcher")
        wait_for("the retry", receiver.delivered, 60, [dispatcher])
        [retry] = receiver.delivered()
        assert retry["id"] == receiver.posts[0]["id"]  # the same webhook-id
        waited = retry["at"] - failed_at
        assert 14.0 <= waited < 30.0, f"retried {waited:.1f} s after the failure; due after 15 s"
        time.sleep(3)
        logged = [(a["attempt"], a["outcome"]) for a in attempts_logged(settings)]
        assert logged == [(1, "http_error"), (2, "delivered")]  # resumed, not restarted from attempt 1
        assert len(receiver.posts) == 2
        assert dispatcher.alive()
    finally:
        dispatcher.stop()


def test_given_up_messages_are_dead_lettered_and_recovered_and_forged_retries_refused(
    settings: Settings,
) -> None:
    settings = settings.model_copy(
        update={
            "webhook_retry_schedule_s": (0.3, 0.3),  # three attempts
            "webhook_breaker_failures": 100,
            "api_port": free_port(),
            "api_tokens": [SecretStr(TOKEN)],
        }
    )
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    receiver = Receiver()
    url = f"http://127.0.0.1:{settings.api_port}"
    roles: list[Role] = []
    try:
        api = http_role(settings, "api", url)
        roles.append(api)
        created = httpx.post(f"{url}/v1/endpoints", headers=AUTH, timeout=30, json={
            "url": receiver.url, "event_types": ["OddsWindowUpdated"], "rate_limit": 50})  # fmt: skip
        assert created.status_code == 201, created.text
        endpoint_id, receiver.secret = created.json()["endpoint_id"], created.json()["secret"]
        dispatcher, store = Role(settings, "dispatcher"), Role(settings, "store")
        roles += [dispatcher, store]
        wait_for("the registry", lambda: "ready: 1 endpoint" in dispatcher.output(), 60, roles)
        since = datetime.now(UTC).isoformat()
        sent = [window("mD", n) for n in range(3)]
        with EventProducer(settings) as producer:
            for record in sent:
                producer.publish("OddsWindowUpdated", record)
        ids = {f"msg_{r['event_id']}" for r in sent}

        def dead() -> list[Any]:
            try:
                rows = sql(settings, "SELECT message_id, attempts, length(outcomes), reason, payload "
                                     "FROM webhook_dead_letters FINAL")  # fmt: skip
            except httpx.TransportError:  # the store's SQL endpoint is not listening yet
                return []
            return rows if len(rows) == 3 else []

        rows = wait_for("3 dead letters in ClickHouse", dead, 90, roles)
        assert {r[0] for r in rows} == ids
        assert all(r[1] == 3 and r[2] == 3 and r[3].startswith("all 3 attempts failed") for r in rows)
        assert {json.loads(r[4])["data"]["event_id"] for r in rows} == {r["event_id"] for r in sent}
        assert len(receiver.posts) == 9

        # forged retries: unsigned, and signed with another master secret; due now
        with EventProducer(settings) as producer:
            partitions = producer.partitions(topics.webhook_retries)
            for n, signer in enumerate((None, "not-the-master-secret")):
                record = {
                    "event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000), "source": "x",
                    "endpoint_id": endpoint_id, "message_id": f"msg_evil{n}", "event_type": "AlertChanged",
                    "payload": '{"evil": true}', "attempts": 0, "first_attempt": None, "outcomes": [],
                    "next_attempt": int(time.time() * 1000), "endpoint_failing_since": None,
                }  # fmt: skip
                value = producer.codec.encode(
                    Event("WebhookMessagePending", record), topic=topics.webhook_retries, trusted=True
                )
                key = pending_key(endpoint_id, f"msg_evil{n}").encode()
                headers = [] if signer is None else [(RETRY_SIGNATURE, retry_signature(signer, key, value))]
                producer.produce_raw(topics.webhook_retries, key, value, headers,  # type: ignore[arg-type]
                                     partition=retry_partition(endpoint_id, partitions))  # fmt: skip
        wait_for(
            "the forged retries refused",
            lambda: dispatcher.log.read_text().count("retry record not signed") == 2,
            60,
            roles,
        )

        receiver.healthy = True
        history = f"{url}/v1/endpoints/{endpoint_id}"
        first = sorted(ids)[0]
        resent = httpx.post(f"{history}/messages/{first}/resend", headers=AUTH, timeout=30)
        assert resent.status_code == 202, resent.text
        wait_for(
            "the resent message", lambda: [p for p in receiver.delivered() if p["id"] == first], 60, roles
        )

        def delivered_in_store() -> bool:
            found = sql(settings, f"SELECT count() FROM webhook_attempts WHERE message_id = '{first}' "
                                  "AND outcome = 'delivered'")  # fmt: skip
            return bool(found[0][0])

        wait_for("its delivery in ClickHouse", delivered_in_store, 60, roles)
        recovered = httpx.post(f"{history}/recover", json={"since": since}, headers=AUTH, timeout=30)
        assert recovered.status_code == 202 and recovered.json()["scheduled"] == 2, recovered.text
        wait_for("every message recovered", lambda: {p["id"] for p in receiver.delivered()} == ids, 60, roles)
        assert all(p["verified"] for p in receiver.delivered())
        # a message delivered since is not resent
        again = httpx.post(f"{history}/messages/{first}/resend", headers=AUTH, timeout=30)
        assert again.status_code == 404 and "not delivered since" in again.text

        # a test message, signed like any other
        tested = httpx.post(f"{history}/test", headers=AUTH, timeout=30)
        assert tested.status_code == 202
        test_id = tested.json()["message_id"]
        [test] = wait_for(
            "the test message", lambda: [p for p in receiver.delivered() if p["id"] == test_id], 60, roles
        )
        assert json.loads(test["body"])["type"] == "WebhookTest" and test["verified"]
        # the same through the CLI (a client of the API)
        import subprocess
        import sys

        from tests.integration.roles import environment

        in_store = (
            "SELECT uniqExact(message_id) FROM webhook_attempts "
            f"WHERE outcome = 'delivered' AND message_id IN {tuple(ids)}"
        )
        wait_for(
            "the recovered deliveries in ClickHouse", lambda: sql(settings, in_store)[0][0] == 3, 60, roles
        )
        commands = [
            (["test", endpoint_id], "scheduled for"),
            (["list"], "rate<=50/s"),
            (["recover", endpoint_id, "--since", since], "0 message(s) scheduled"),
        ]
        for args, shown in commands:
            command = [sys.executable, "-m", "oddstream", "webhook", *args]
            done = subprocess.run(
                command, env=environment(settings), capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0 and shown in done.stdout, done.stdout + done.stderr
        assert not any(b"evil" in p["body"] for p in receiver.posts)

        # garbage: refused with a reason, the API still serving
        for path, body, status, reason in [
            (f"{history}/recover", {"since": "yesterday"}, 422, "since"),
            (f"{history}/recover", {"since": "2026-11-26T08:00:00"}, 422, "since"),  # no zone
            (f"{history}/recover", [1], 422, "since"),
            (f"{history}/messages/msg_x'%20OR%201=1/resend", None, 404, "ids look like"),
            (f"{url}/v1/endpoints/ep_missing/test", None, 404, "no endpoint"),
        ]:
            answer = httpx.post(path, json=body, headers=AUTH, timeout=30)
            assert answer.status_code == status and reason in answer.text, (path, answer.text)
        assert httpx.patch(history, json={"rate_limit": -1}, headers=AUTH, timeout=30).status_code == 422
        assert httpx.patch(history, json={"url": "http://169.254.169.254/"}, headers=AUTH,
                           timeout=30).status_code == 422  # fmt: skip
        assert (
            httpx.patch(history, json={"active": False}, headers=AUTH, timeout=30).json()["active"] is False
        )
        assert httpx.post(f"{history}/test", headers=AUTH, timeout=30).status_code == 409
        assert all(role.alive() for role in roles)
    finally:
        for role in roles:
            role.stop()


def test_an_endpoint_failing_too_long_is_disabled_with_the_reason(settings: Settings) -> None:
    settings = settings.model_copy(
        update={
            "webhook_retry_schedule_s": (1.0,) * 20,
            "webhook_disable_after_s": 4.0,
            "webhook_breaker_failures": 100,
        }
    )
    ensure_topics(settings)
    receiver = Receiver()
    register_endpoint(settings, receiver.url, ["OddsWindowUpdated"], endpoint_id="ep_dying")
    dispatcher = Role(settings, "dispatcher")
    try:
        wait_for("the registry", lambda: "ready: 1 endpoint" in dispatcher.output(), 60, [dispatcher])
        with EventProducer(settings) as producer:
            for n in range(3):
                producer.publish("OddsWindowUpdated", window("mZ", n))
        record = wait_for(
            "the endpoint disabled",
            lambda: (r := registrations(settings).get("ep_dying")) and not r["active"] and r,
            60,
            [dispatcher],
        )
        assert record["disabled_reason"].startswith("every attempt failed since")
        assert "disabling webhook endpoint ep_dying" in dispatcher.log.read_text()
        posts = len(receiver.posts)
        time.sleep(3)  # nothing more is sent to it
        assert len(receiver.posts) == posts
        assert dispatcher.alive()
    finally:
        dispatcher.stop()


def test_a_retry_waiting_through_a_rebalance_of_two_dispatchers_is_delivered_once(settings: Settings) -> None:
    """The retries partitions move when a second dispatcher joins; whoever owns the waiting
    message's partition afterwards reads it whole again and delivers it when due, once."""
    settings = settings.model_copy(
        update={"webhook_retry_schedule_s": (10.0,), "webhook_breaker_failures": 100}
    )
    ensure_topics(settings)
    receiver = Receiver()
    register_endpoint(settings, receiver.url, ["OddsWindowUpdated"], endpoint_id="ep_moving")
    first = Role(settings, "dispatcher", name="dispatcher-1")
    roles = [first]
    try:
        wait_for("the registry", lambda: "ready: 1 endpoint" in first.output(), 60, roles)
        with EventProducer(settings) as producer:
            producer.publish("OddsWindowUpdated", window("mR", 1))
        wait_for("the first attempt", lambda: receiver.posts, 60, roles)
        failed_at = receiver.posts[0]["at"]
        second = Role(settings, "dispatcher", name="dispatcher-2")  # the groups rebalance
        roles.append(second)
        wait_for("the second dispatcher", lambda: "dispatcher ready" in second.output(), 60, roles)
        receiver.healthy = True
        wait_for("the retry", receiver.delivered, 60, roles)
        time.sleep(3)
        assert len(receiver.delivered()) == 1 and receiver.delivered()[0]["id"] == receiver.posts[0]["id"]
        assert receiver.delivered()[0]["at"] - failed_at >= 9.0  # when it was due, not before
        assert all(role.alive() for role in roles)
    finally:
        for role in roles:
            role.stop()
