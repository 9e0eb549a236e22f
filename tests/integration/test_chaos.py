"""Chaos through the real stack: a corpus of bad records from any Kafka client, interleaved with a
seeded simulation, while the worker and the store are each SIGKILLed once under `oddstream up`.
Afterwards every role runs (restarts counted), every bad record is a dead letter with its
reason, and the final window tables equal the SQL recomputation from the raw events."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaError, Message, Producer
from fastavro import schemaless_writer

from consumers.dispatcher.signing import REGISTRY_SIGNATURE, registry_signature, seal_secret
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import DEVELOPMENT_MASTER_SECRET, DEVELOPMENT_STATE_KEY, Settings
from schemas.catalog import load_catalog
from schemas.codec import SINGLE_OBJECT_MAGIC
from schemas.rekeyed import WORKER_SIGNATURE, worker_signature
from schemas.topics import Topics
from tests.integration.roles import wait_for
from tests.integration.supervised import ROLES, Up
from tests.integration.test_exactness import analytics_settings, check_exact, simulate, sql

pytestmark = pytest.mark.integration
CATALOG = load_catalog()
NOW = int(time.time() * 1000)
EVENTS = 40_000


def body(event_type: str, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, CATALOG.schema(event_type).parsed, record)
    return out.getvalue()


def single(event_type: str, record: dict[str, Any]) -> bytes:
    """Single-object framing, written without oddstream's checks (any Avro library can)."""
    return SINGLE_OBJECT_MAGIC + CATALOG.schema(event_type).fingerprint + body(event_type, record)


def confluent(schema_id: int, event_type: str, record: dict[str, Any]) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + body(event_type, record)


def base(**fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "event_time": NOW - 600_000, "source": "chaos", **fields}


def quote(**changes: Any) -> dict[str, Any]:
    return {**base(bookmaker="rogue", market_id="m000001", selection_id="home", odds=2.0), **changes}


def bet(**changes: Any) -> dict[str, Any]:
    record = base(
        bet_id="b-chaos", user_id="u-chaos", market_id="m000001", selection_id="home",
        stake=Decimal("10.00"), currency="EUR", odds=2.0, channel="WEB",
    )  # fmt: skip
    return {**record, **changes}


def call(**changes: Any) -> dict[str, Any]:
    return {**base(service="svc-chaos", route="/x", method="GET", status=200, latency_ms=5.0), **changes}


def login(**changes: Any) -> dict[str, Any]:
    return {**base(user_id="u-chaos", activity="LOGIN", amount=None, currency=None), **changes}


def price_window(spec: str) -> dict[str, Any]:
    """A final price window of a spec nobody configured (as any producer to the topic could write)."""
    return base(
        window_id=str(uuid.uuid4()), market_id="m000001", selection_id="home", bookmaker="rogue",
        window_start=NOW - 660_000, window_end=NOW - 600_000, version=1, final=True, spec=spec, open=2.0,
        high=2.0, low=2.0, last=2.0, changes=1, implied_probability=0.5, velocity_pct_per_min=0.0,
        open_time=NOW - 630_000, last_time=NOW - 630_000,
    )  # fmt: skip


def user_bet(**changes: Any) -> dict[str, Any]:
    """A bet by user, naming an offset far ahead: folded, it would silence bets partition 0."""
    record = base(
        user_id="u-chaos", bet_id="b-chaos", market_id="m000001", action="PLACED", stake=Decimal("10.00"),
        won=None, source_partition=0, source_offset=10**12, source_clock=NOW + 10**9, idle=False,
    )  # fmt: skip
    return {**record, **changes}


def worker_signed(key: bytes, value: bytes) -> list[tuple[str, bytes]]:
    """As the worker signs bets.by-user (the tests run with the development state key)."""
    return [(WORKER_SIGNATURE, worker_signature(DEVELOPMENT_STATE_KEY.encode(), key, value))]


def signed(key: bytes, value: bytes) -> list[tuple[str, bytes]]:
    return [(REGISTRY_SIGNATURE, registry_signature(DEVELOPMENT_MASTER_SECRET, key, value))]


def endpoint(endpoint_id: str = "ep_chaos") -> dict[str, Any]:
    return base(endpoint_id=endpoint_id, url="https://hooks.example.com/x", event_types=[], active=True)


# (topic suffix, key, value, headers, a part of the reason) -- 45 bad records
CORPUS: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None, str]] = [
    ("odds", b"m000001", None, None, "null value (a tombstone)"),
    ("bets", b"m000001", b"", None, "not an oddstream frame"),
    ("users", b"u-chaos", b'{"user_id": "u-chaos"}', None, "not an oddstream frame"),
    ("odds", b"m000001", single("OddsChanged", quote()) + b"\x00" * 16, None, "16 trailing byte"),
    ("bets", b"m000001", single("BetPlaced", bet())[:-7], None, "does not decode"),
    ("system", b"svc-chaos", b"\xc3\x01" + b"\x13" * 8 + b"\x02", None, "unknown schema fingerprint"),
    ("system", b"svc-chaos", b"\xc3\x01\x01", None, "10-byte header"),
    ("odds", b"m000001", confluent(42, "OddsChanged", quote()), None, "no Schema Registry is configured"),
    ("bets", b"m000001", confluent(7, "BetPlaced", bet()), None, "no Schema Registry is configured"),
    ("users", b"u-chaos", b"\x00\x00\x01", None, "5-byte header"),
    ("odds", b"m000001", single("OddsChanged", quote(odds=float("nan"))), None, "finite number"),
    ("system", b"svc-chaos", single("ApiCallRecorded", call(latency_ms=float("inf"))), None, "finite number"),
    ("odds", b"m000001", single("OddsChanged", quote(odds=0.5)), None, "greater than 1.0"),
    ("bets", b"m000001", single("BetPlaced", bet(stake=Decimal("-5.00"))), None, "greater than zero"),
    ("bets", b"m000001", single("BetPlaced", bet(currency="euro")), None, "ISO 4217"),
    ("system", b"svc-chaos", single("ApiCallRecorded", call(status=700)), None, "HTTP status"),
    ("system", b"svc-chaos", single("ApiCallRecorded", call(event_time=1_700_000_000)), None, "before 2000"),
    ("odds", b"m000001", single("OddsChanged", quote(event_time=NOW + 3_600_000)), None, "in the future"),
    ("odds", b"m000001", single("OddsChanged", quote(bookmaker=" ")), None, "must not be empty"),
    ("users", b"u-chaos", single("UserActivity", login(activity="DEPOSIT")), None, "needs an amount"),
    ("users", b"u-chaos", single("UserActivity", login(source="s" * 2_000)), None, "2,000 characters"),
    ("odds", b"m000001", single("OddsChanged", quote(source="s" * 70_000)), None, "over the limit of 65,536"),
    (
        "odds", b"m000001",
        single("MarketResulted", base(market_id="m000001", winning_selection_ids=["s"] * 2_000)),
        None, "2,000 items",
    ),
    ("odds", None, single("OddsChanged", quote()), None, "has no key"),
    ("bets", b"m999999", single("BetPlaced", bet()), None, "is not the market_id"),
    ("system", b"\xff\xfe\xfd", single("ApiCallRecorded", call()), None, "key is not UTF-8"),
    ("odds", b"m000001", single("BetPlaced", bet()), None, "does not belong on"),
    ("users", b"u-chaos", single("UserActivity", login()), [("h", b"v")] * 40, "40 headers"),
    ("bets", b"m000001", single("BetPlaced", bet()), [("big", b"x" * 20_000)], "headers of"),
    ("webhooks.endpoints", b"\xff\xfe", single("WebhookEndpoint", endpoint()), None, "key is not UTF-8"),
    # signed (as by a holder of the master secret), so that what follows the signature is tried
    *(
        ("webhooks.endpoints", key, value, signed(key, value), reason)
        for key, value, reason in [
            (b"ep_chaos", b"garbage", "not an oddstream frame"),
            (b"ep_v", single("WebhookEndpoint", endpoint("x")), "not the endpoint_id"),
            (b"ep_chaos", single("OddsChanged", quote()), "does not belong on"),
        ]
    ),
    # a well-formed registration nobody signed: anyone who can write to the topic
    ("webhooks.endpoints", b"ep_chaos", single("WebhookEndpoint", endpoint()), None, "not signed"),
    (
        "webhooks.endpoints", b"ep_chaos", single("WebhookEndpoint", endpoint()),
        [("oddstream-registry-signature", b"forged")], "not signed",
    ),
    ("odds.window.1m", b"m000001", None, None, "null value (a tombstone)"),
    # a signed registration whose sealed secret does not open (sealed for another endpoint)
    (
        "webhooks.endpoints", b"ep_chaos", sealed_elsewhere := single("WebhookEndpoint", {
            **endpoint(), "secret_sealed": seal_secret(DEVELOPMENT_MASTER_SECRET, "ep_other", "whsec_AAAA"),
        }), signed(b"ep_chaos", sealed_elsewhere), "does not open",
    ),
    ("webhooks.attempts", b"ep_chaos", b"not an attempt", None, "not an oddstream frame"),
    # window results of a spec the store does not run: one named to be a table name's SQL
    ("analytics.prices.1m", b"m000001", single("PriceWindowUpdated", price_window("4h")), None,
     "'4h' is not a window spec"),
    ("analytics.prices.1m", b"m000001", single("PriceWindowUpdated", price_window("x; DROP TABLE alerts --")),
     None, "is not a window spec"),
    # bets.by-user: only the worker writes it (signed); what it reads back is checked like a source
    ("bets.by-user", b"u-chaos", single("UserBetRecorded", user_bet()), None, "not signed by a worker"),
    (
        "bets.by-user", b"u-chaos", single("UserBetRecorded", user_bet()),
        worker_signed(b"u-chaos", single("UserBetRecorded", user_bet(source="x"))), "not signed by a worker",
    ),
    ("bets.by-user", b"u-chaos", b"garbage", worker_signed(b"u-chaos", b"garbage"), "not an oddstream frame"),
    (
        "bets.by-user", b"u-other", forged := single("UserBetRecorded", user_bet()),
        worker_signed(b"u-other", forged), "is not the user_id",
    ),
    (
        "bets.by-user", b"u-chaos", no_stake := single("UserBetRecorded", user_bet(stake=None)),
        worker_signed(b"u-chaos", no_stake), "must have a stake",
    ),
]  # fmt: skip


class Chaos:
    """Produces the corpus with any Kafka client and remembers where each record landed."""

    def __init__(self, settings: Settings) -> None:
        self.topics = Topics(settings.topic_prefix)
        self.producer = Producer({"bootstrap.servers": settings.bootstrap, "message.max.bytes": 2_000_000})
        self.landed: list[tuple[str, int, int, str]] = []  # topic, partition, offset, reason part

    def send(self, entries: list[tuple[str, bytes | None, bytes | None, Any, str]]) -> None:
        for suffix, key, value, headers, reason in entries:

            def on_delivery(error: KafkaError | None, m: Message, reason: str = reason) -> None:
                assert error is None, error
                self.landed.append((m.topic() or "", m.partition() or 0, m.offset() or 0, reason))

            self.producer.produce(
                self.topics.name(suffix), value=value, key=key, headers=headers, on_delivery=on_delivery
            )
        assert self.producer.flush(30) == 0


def test_bad_records_and_killed_roles_stop_nothing_and_lose_nothing(settings: Settings) -> None:
    assert len(CORPUS) >= 30 and len({c[4] for c in CORPUS}) >= 25
    settings = analytics_settings(settings).model_copy(update={"webhook_receiver_port": _free_port()})
    ensure_topics(settings)
    up = Up(settings)
    chaos = Chaos(settings)
    try:
        up.wait_ready()
        chaos.send(CORPUS[:12])
        simulation = threading.Thread(target=simulate, args=(settings, EVENTS), daemon=True)
        simulation.start()
        _after(lambda: _raw_count(settings) > EVENTS // 5, "a fifth of the simulation stored")
        chaos.send(CORPUS[12:24])
        up.kill("worker")
        _after(lambda: _raw_count(settings) > EVENTS // 2, "half of the simulation stored")
        up.kill("store")
        chaos.send(CORPUS[24:])
        simulation.join(600)
        assert not simulation.is_alive(), "the simulation did not finish"

        _after(lambda: _raw_count(settings) > 0, "the restarted store answering")
        check_exact(settings, [], EVENTS)  # every final table equals the recomputation from the raw events

        status = up.status()
        assert {r["role"] for r in status["roles"] if r["state"] == "running"} == set(ROLES), status
        restarts = {r["role"]: r["restarts"] for r in status["roles"]}
        # one each for the kills (a stalled worker restarting itself would add one: see app.py)
        assert restarts["worker"] >= 1 and restarts["store"] == 1, restarts
        assert all(restarts[r] == 0 for r in ROLES if r not in ("worker", "store")), restarts

        letters = sql(settings)(
            "SELECT origin_topic, origin_partition, origin_offset, stage, reason FROM dead_letters FINAL"
        )
        by_origin: dict[tuple[str, int, int], list[tuple[str, str]]] = {}
        for topic, partition, offset, stage, reason in letters:
            by_origin.setdefault((topic, int(partition), int(offset)), []).append((stage, reason))
        missing = []
        for topic, partition, offset, part in chaos.landed:
            found = by_origin.get((topic, partition, offset), [])
            if not any(part in reason for _, reason in found):
                missing.append(f"{topic}[{partition}]@{offset} ({part!r}): {found}")
        assert not missing, "bad records without their dead letter:\n" + "\n".join(missing)
        stages = {stage for found in by_origin.values() for stage, _ in found}
        assert {
            "odds-analytics",
            "bets-analytics",
            "system-analytics",
            "user-analytics",
            "store",
            "dispatcher-registry",
        } <= stages
        metrics = httpx.get(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics", timeout=10).text
        refused = [
            line for line in metrics.splitlines() if line.startswith("oddstream_rejected_records_total{")
        ]
        assert sum(float(line.split()[-1]) for line in refused) > 0, "the worker counts what it refuses"
        print(
            f"\n{len(chaos.landed)} bad records, {len(letters)} dead letters, restarts {json.dumps(restarts)}"
        )
    finally:
        up.stop()
    assert "did not stop" not in up.output(), up.output()[-2000:]  # every role stopped on SIGTERM


def _after(check: Callable[[], bool], what: str) -> None:
    wait_for(what, check, 300)


def _raw_count(settings: Settings) -> int:
    try:
        return int(sql(settings)("SELECT count() FROM odds_changed")[0][0])
    except (AssertionError, OSError, ValueError, httpx.HTTPError):
        return 0  # the store is restarting


def _free_port() -> int:
    from infra.broker import free_port

    return free_port()
