"""What a producer, an analyst or the broker hands a role, against the real broker and store:
hostile SQL, a future-stamped event, an output the broker refuses, the source topics' configs."""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from consumers.worker.snapshots import load_state, open_sealed
from oddstream.kafka.admin import ensure_topics
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.topics import SOURCE_TOPICS, Topics
from tests.integration.kafka_read import read_all
from tests.integration.roles import Role, wait_for
from tests.pure.test_sql_guard import HOSTILE

pytestmark = pytest.mark.integration


def post_sql(settings: Settings, query: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{settings.sql_endpoint}/sql", content=query, headers=headers, timeout=60)


def rows(settings: Settings, query: str) -> list[list[Any]]:
    response = post_sql(settings, query)
    assert response.status_code == 200, response.text
    return response.json()["rows"]  # type: ignore[no-any-return]


def activity(user: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "event_time": int(time.time() * 1000) - 1_000, "source": "test",
        "user_id": user, "activity": "LOGIN", "amount": None, "currency": None,
    }  # fmt: skip


def test_hostile_sql_is_refused_one_by_one_and_the_sink_inserts_after_each(settings: Settings) -> None:
    settings = settings.model_copy(update={"sql_max_execution_s": 2.0})
    ensure_topics(settings)
    store = Role(settings, "store")
    try:
        wait_for("the store's endpoint", lambda: _answers(settings), 90, [store])
        with EventProducer(settings) as producer:
            for n, statement in enumerate(HOSTILE):
                answer = post_sql(settings, statement)
                assert answer.status_code == 400, (statement, answer.text)
                assert "query refused" in answer.json()["error"], (statement, answer.text)
                # the sink's next insert lands: the refused statement changed nothing of its session
                user = f"u-after-{n}"
                producer.publish("UserActivity", activity(user))
                producer.flush()
                counted = f"SELECT count() FROM user_activity WHERE user_id = '{user}'"
                wait_for(f"an insert after {statement!r}", partial(_one, settings, counted), 30, [store])
        # the engine's own read-only mode is the second line: a statement the guard lets through
        # cannot write either (here: a query whose table function is not on the guard's list)
        answer = post_sql(settings, "SELECT * FROM generateRandom('a Int8') LIMIT 1")
        assert answer.status_code in (200, 400)
        heavy = post_sql(settings, "SELECT count() FROM numbers(1000000000000) AS a, numbers(1000000) AS b")
        assert heavy.status_code == 400 and "query exceeded" in heavy.json()["error"], heavy.text
        assert rows(settings, "SELECT 1") == [[1]]
        assert store.alive()
    finally:
        store.stop()


def test_sql_endpoint_asks_for_the_bearer_token_when_one_is_set(settings: Settings) -> None:
    settings = settings.model_copy(update={"sql_token": "s3cret-token"})
    store = Role(settings, "store")
    try:
        wait_for("the store's endpoint", lambda: _answers(settings), 90, [store])
        assert post_sql(settings, "SELECT 1").status_code == 401
        assert post_sql(settings, "SELECT 1", token="wrong").status_code == 401
        answer = post_sql(settings, "SELECT 1", token="s3cret-token")
        assert answer.status_code == 200 and answer.json()["rows"] == [[1]]
    finally:
        store.stop()


def test_settings_refuse_an_sql_endpoint_beyond_loopback_without_a_token() -> None:
    with pytest.raises(ValueError, match="ODDSTREAM_SQL_TOKEN"):
        Settings(store_host="0.0.0.0")
    assert Settings(store_host="0.0.0.0", sql_token="t").store_host == "0.0.0.0"  # type: ignore[arg-type]


def test_settings_refuse_a_gateway_beyond_loopback_without_credentials() -> None:
    with pytest.raises(ValueError, match="ODDSTREAM_GATEWAY_API_KEYS"):
        Settings(gateway_host="0.0.0.0")
    assert Settings(gateway_host="0.0.0.0", gateway_api_keys=["k"]).gateway_host == "0.0.0.0"  # type: ignore[list-item]
    assert Settings(gateway_host="0.0.0.0", gateway_jwt_secret="s" * 64).gateway_host == "0.0.0.0"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ODDSTREAM_GATEWAY_API_KEYS"):  # an empty secret is no secret
        Settings(gateway_host="0.0.0.0", gateway_jwt_secret="")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 32 characters"):
        Settings(gateway_jwt_secret="short")  # type: ignore[arg-type]


def test_a_future_stamped_event_cannot_drag_the_watermark(settings: Settings) -> None:
    settings = settings.model_copy(update={"window_size_ms": 10_000, "window_idle_timeout_ms": 3_000})
    ensure_topics(settings)
    roles = [Role(settings, "store"), Role(settings, "worker")]
    now = int(time.time() * 1000)
    try:
        wait_for("the store's endpoint", lambda: _answers(settings), 90, roles)
        with EventProducer(settings) as producer:
            producer.publish("MarketStatusChanged", {
                "event_id": str(uuid.uuid4()), "event_time": now - 20_000, "source": "test",
                "market_id": "mF", "status": "OPEN", "reason": None,
            })  # fmt: skip
            quote = {"source": "test", "bookmaker": "pinnacle", "market_id": "mF", "selection_id": "home"}
            producer.publish(
                "OddsChanged",
                {
                    **quote,
                    "event_id": str(uuid.uuid4()),
                    "event_time": now + 290_000,
                    "odds": 2.0,
                },
            )  # fmt: skip  -- 290 s ahead: within the producer SDK's check, far beyond the consumers'
            for n in range(40):  # genuine quotes that follow, 10 s of event time up to now
                producer.publish("OddsChanged", {
                    **quote, "event_id": str(uuid.uuid4()), "event_time": now - 10_000 + n * 250,
                    "odds": 2.0 + n / 100,
                })  # fmt: skip
        wait_for(
            "the future quote dead-lettered by the worker",
            lambda: rows(settings, "SELECT reason FROM dead_letters WHERE stage = 'odds-analytics'"),
            90,
            roles,
        )
        [[reason]] = rows(settings, "SELECT reason FROM dead_letters FINAL WHERE stage = 'odds-analytics'")
        assert "in the future" in reason and "at most 5,000 ms ahead" in reason
        wait_for(
            "the genuine quotes in closed price windows",
            lambda: (
                rows(settings, "SELECT sum(changes) FROM price_windows_1m FINAL WHERE market_id = 'mF'")
                == [[40]]
            ),
            90,
            roles,
        )
        assert rows(settings, "SELECT count() FROM late_events") == [[0]]  # none became late
    finally:
        for role in reversed(roles):
            role.stop()


def test_a_refused_output_halts_its_partition_before_any_snapshot_passes_it(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"worker_checkpoint_interval_s": 0.2, "worker_update_interval_ms": 0}
    )
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    # every window result is larger than this: the broker refuses each one
    resource = ConfigResource(
        "topic", topics.name("analytics.prices.1m"), set_config={"max.message.bytes": "200"}
    )
    admin.alter_configs([resource])[resource].result(30)
    worker = Role(settings, "worker")
    now = int(time.time() * 1000)
    try:
        with EventProducer(settings) as producer:
            producer.publish("MarketStatusChanged", {
                "event_id": str(uuid.uuid4()), "event_time": now - 20_000, "source": "test",
                "market_id": "mH", "status": "OPEN", "reason": None,
            })  # fmt: skip
            producer.flush()
            changelog = f"{settings.worker_id}-odds-analytics-state-changelog"
            wait_for(  # the status change is snapshotted on its own, before any quote
                "the status change's snapshot",
                lambda: _has_records(settings, changelog),
                120,
                [worker],
            )
            for n in range(5):
                producer.publish("OddsChanged", {
                    "event_id": str(uuid.uuid4()), "event_time": now - 10_000 + n, "source": "test",
                    "bookmaker": "pinnacle", "market_id": "mH", "selection_id": "home", "odds": 2.0 + n / 10,
                })  # fmt: skip
        wait_for("the partition to halt", lambda: "HALTED" in worker.output(), 90, [worker])
        time.sleep(2)  # more checkpoint intervals pass: none may snapshot past the lost output
        assert worker.alive(), "a halted partition stops itself, not the worker"
        assert "not acknowledged" in worker.output() or "not sent" in worker.output()
        odds = [(m.partition() or 0, m.offset() or 0) for m in read_all(settings.bootstrap, topics.odds)]
        partition = odds[0][0]
        first_quote = min(offset for p, offset in odds if p == partition and offset > 0)
        key = f"{topics.odds}:{partition}".encode()
        secret = settings.worker_state_key.get_secret_value().encode()
        snapshots = [
            load_state(open_sealed(m.value() or b"", key, secret))
            for m in read_all(settings.bootstrap, changelog)
            if m.key() == key
        ]
        assert snapshots, "the status change before the quotes was snapshotted"
        assert max(s.offset for s in snapshots) < first_quote, "a snapshot moved past a lost output"
    finally:
        worker.stop()


def test_source_topics_keep_their_log_forever_with_broker_timestamps(settings: Settings) -> None:
    ensure_topics(settings)
    limited = settings.model_copy(
        update={"topic_prefix": settings.topic_prefix + "week.", "source_retention_ms": 604_800_000}
    )
    ensure_topics(limited)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    for s, retention in ((settings, "-1"), (limited, "604800000")):
        topics = Topics(s.topic_prefix)
        for suffix in SOURCE_TOPICS:
            resource = ConfigResource("topic", topics.name(suffix))
            config = admin.describe_configs([resource])[resource].result(30)
            assert config["retention.ms"].value == retention, (suffix, config["retention.ms"].value)
            assert config["retention.bytes"].value == "-1"
            assert config["message.timestamp.type"].value == "LogAppendTime"
        derived = ConfigResource("topic", topics.odds_window_1m)
        config = admin.describe_configs([derived])[derived].result(30)
        assert config["message.timestamp.type"].value == "CreateTime"  # outputs are ours: untouched


def _has_records(settings: Settings, topic: str) -> bool:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    if topic not in admin.list_topics(timeout=10).topics:
        return False
    return bool(read_all(settings.bootstrap, topic, timeout_s=2))


def _one(settings: Settings, query: str) -> bool:
    return rows(settings, query) == [[1]]


def _answers(settings: Settings) -> bool:
    try:
        return httpx.get(f"{settings.sql_endpoint}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
