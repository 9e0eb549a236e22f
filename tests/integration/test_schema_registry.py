"""Confluent framing against a real Schema Registry (Apicurio 2.6 from Maven, its
Confluent API): records written by confluent-kafka's stock serializer reach ClickHouse,
both framings share a topic, ids agree with the registry's, incompatible changes are
refused with the subject and field, and a registry that is down at start or goes down
mid-stream loses and mis-decodes nothing."""

from __future__ import annotations

import io
import json
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from infra.broker import free_port, port_is_open
from infra.registry import CCOMPAT_PATH, LocalRegistry, registry_is_healthy
from oddstream.errors import RegistryUnavailable, SchemaRegistryError
from oddstream.kafka.admin import ensure_topics
from oddstream.kafka.deadletter import REASON, STAGE
from oddstream.kafka.registry import ConfluentSchemaIds
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.catalog import Event, load_catalog
from schemas.codec import Codec
from schemas.topics import Topics
from tests.integration.kafka_read import read_all
from tests.integration.roles import Role, environment, http_role, wait_for

pytestmark = pytest.mark.integration
CATALOG = load_catalog()


@pytest.fixture(scope="session")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry for the session, started from Maven-fetched files; fails (never skips)
    if it cannot start."""
    registry = LocalRegistry(tmp_path_factory.mktemp("registry"), port=free_port())
    registry.start()
    try:
        yield registry.url
    finally:
        registry.stop()


def with_registry(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"schema_registry_url": url, "worker_update_interval_ms": 0})


def open_market(producer: EventProducer, market: str, t: int) -> None:
    producer.publish("MarketStatusChanged", {
        "event_id": str(uuid.uuid4()), "event_time": t, "source": "test",
        "market_id": market, "status": "OPEN", "reason": None,
    })  # fmt: skip


def quote(market: str, selection: str, price: float, t: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "event_time": t, "source": "test", "bookmaker": "pinnacle",
        "market_id": market, "selection_id": selection, "odds": price,
    }  # fmt: skip


def sql(settings: Settings, query: str) -> list[list[Any]]:
    response = httpx.post(f"{settings.sql_endpoint}/sql", content=query, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["rows"]  # type: ignore[no-any-return]


def changes_in_windows(settings: Settings, market: str) -> int:
    """Quotes counted in the market's latest window rows (-1 while the store is starting)."""
    try:
        httpx.get(f"{settings.sql_endpoint}/healthz", timeout=5)
    except httpx.TransportError:
        return -1
    rows = sql(
        settings,
        f"SELECT sum(c) FROM (SELECT changes AS c FROM odds_windows_1m FINAL WHERE market_id = '{market}' "
        "ORDER BY version DESC LIMIT 1 BY window_start, selection_id)",
    )
    return int(rows[0][0] or 0)


def test_stock_serializer_records_reach_clickhouse_beside_single_object_frames(
    settings: Settings, registry_url: str
) -> None:
    settings = with_registry(settings, registry_url)
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    client = SchemaRegistryClient({"url": registry_url})
    roles = [Role(settings, "store"), Role(settings, "worker")]
    minute = int(time.time() * 1000) // 60_000 * 60_000 - 5 * 60_000
    try:
        with EventProducer(settings) as producer:  # oddstream's SDK registers odds-value first
            open_market(producer, "mS", minute)
            producer.publish("OddsChanged", quote("mS", "home", 2.0, minute + 1_000))
        subject = f"{topics.odds}-value"
        latest = client.get_latest_version(subject)
        assert [b["name"] for b in json.loads(latest.schema.schema_str or "[]")] == [
            "OddsChanged", "MarketStatusChanged", "MarketResulted",
        ]  # fmt: skip
        config = httpx.get(f"{registry_url}/config/{subject}", timeout=10).json()
        assert config["compatibilityLevel"] == "BACKWARD_TRANSITIVE"

        # a producer that is not oddstream: confluent-kafka's own serializer, default subject
        # naming, the registered union, each record as (branch name, record)
        stock = AvroSerializer(client, conf={"auto.register.schemas": False, "use.latest.version": True})
        context = SerializationContext(topics.odds, MessageField.VALUE)
        plain = Producer({"bootstrap.servers": settings.bootstrap, "acks": "all"})
        stock_quotes = [quote("mS", "home", 2.0 + n / 10, minute + 2_000 + n) for n in range(5)]
        for record in stock_quotes:
            value = stock(("oddstream.events.OddsChanged", record), context)
            assert value is not None and value[:1] == b"\x00"
            assert struct.unpack(">I", value[1:5])[0] == latest.schema_id
            plain.produce(topics.odds, key=b"mS", value=value)
        # the other framing on the same topic, from a process with no registry
        single = Codec(CATALOG).encode(Event("OddsChanged", quote("mS", "away", 3.0, minute + 3_000)))
        plain.produce(topics.odds, key=b"mS", value=single)
        assert plain.flush(30) == 0

        # every quote (1 SDK + 5 stock + 1 single-object) is in the windows and the raw table
        wait_for("7 quotes in the windows", lambda: changes_in_windows(settings, "mS") == 7, 90, roles)
        assert sql(settings, "SELECT count() FROM odds_changed FINAL WHERE market_id = 'mS'")[0][0] == 7
        stored = sql(settings, "SELECT max(high) FROM odds_windows_1m FINAL WHERE selection_id = 'home'")
        assert stored[0][0] == pytest.approx(2.4)
        assert read_all(settings.bootstrap, topics.dead_letter) == []

        # and the other way: the worker's Confluent frames read by the stock deserializer
        windows = read_all(settings.bootstrap, topics.odds_window_1m)
        assert windows and all((m.value() or b"")[:1] == b"\x00" for m in windows)
        reader = AvroDeserializer(client)
        decoded = reader(windows[-1].value(), SerializationContext(topics.odds_window_1m, MessageField.VALUE))
        assert decoded is not None and decoded["market_id"] == "mS" and decoded["selections"]
    finally:
        for role in roles:
            role.stop()


def test_ids_agree_with_the_registry_and_incompatible_changes_are_refused(registry_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    topics = Topics(prefix)
    ids = ConfluentSchemaIds(registry_url)
    codec = Codec(CATALOG, ids)
    client = SchemaRegistryClient({"url": registry_url})
    for event_type in ("UserActivity", "BetSettled", "OddsWindowUpdated", "AlertChanged"):
        schema_id, _ = codec.confluent_id(event_type, topics.for_event(event_type))
        schema_json, _ = codec.subject_schema(event_type)
        found = client.lookup_schema(f"{topics.for_event(event_type)}-value", Schema(schema_json, "AVRO"))
        assert found.schema_id == schema_id
    # a stock serializer that registers by itself (single-type topic) lands on the same id
    stock = AvroSerializer(client, json.dumps(CATALOG.schema("UserActivity").source))
    record = {
        "event_id": str(uuid.uuid4()), "event_time": 1_700_000_000_000, "source": "test",
        "user_id": "u1", "activity": "LOGIN", "amount": None, "currency": None, "page": None,
    }  # fmt: skip
    frame = stock(record, SerializationContext(topics.for_event("UserActivity"), MessageField.VALUE))
    assert frame is not None
    assert struct.unpack(">I", frame[1:5])[0] == codec.confluent_id("UserActivity", topics.name("users"))[0]
    assert Codec(CATALOG, ConfluentSchemaIds(registry_url)).decode(frame).record["user_id"] == "u1"

    # an incompatible change: a new field without a default, in one branch of a union
    changed = json.loads(codec.subject_schema("BetSettled")[0])
    changed[1]["fields"].append({"name": "payout_currency", "type": "string"})
    subject = f"{topics.bets}-value"
    with pytest.raises(SchemaRegistryError) as refused:
        ids.id_for(subject, json.dumps(changed))
    assert subject in str(refused.value)
    assert "BetSettled.payout_currency: new field without a default" in str(refused.value)
    # a compatible one (a default) is accepted as the subject's next version
    changed[1]["fields"][-1]["default"] = "EUR"
    assert ids.id_for(subject, json.dumps(changed)) > 0
    assert len(client.get_versions(subject)) == 2


def test_registry_down_at_start_and_mid_stream_loses_and_misdecodes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    registry = LocalRegistry(tmp_path / "registry", port=free_port())
    settings = with_registry(settings, registry.url)
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    minute = int(time.time() * 1000) // 60_000 * 60_000 - 5 * 60_000

    # down at start: the producer's call says so, names the registry, and sends nothing
    with EventProducer(settings) as early, pytest.raises(RegistryUnavailable, match=registry.url):
        open_market(early, "mR", minute)
    assert read_all(settings.bootstrap, topics.odds) == []

    # and for the worker: it waits to register the subjects it writes, without crashing
    worker = Role(settings, "worker")
    store = Role(settings, "store")
    roles = [worker, store]
    producer = None
    try:
        wait_for("the worker to wait for the registry", lambda: "to register" in worker.output(), 60, roles)
        assert "waiting" in worker.output() and registry.url in worker.output()
        registry.start()
        producer = EventProducer(settings)
        open_market(producer, "mR", minute)
        for n in range(3):
            producer.publish("OddsChanged", quote("mR", "home", 2.0, minute + 1_000 + n))
        producer.flush()
        wait_for("3 quotes in the windows", lambda: changes_in_windows(settings, "mR") == 3, 90, roles)
        # the bets partitions (empty here) tell bets.by-user they are idle: a derived type the
        # store learns the id of while the registry is up (a new id is waited for, below)
        marks = "SELECT count() FROM user_bets WHERE action = 'CLOCK'"
        partitions = settings.topic_partitions
        wait_for("the idle marks stored", lambda: int(sql(settings, marks)[0][0]) >= partitions**2, 60, roles)

        # a new schema version (compatible) registered by another producer: an id the
        # worker has never seen; then the registry dies
        evolved = json.loads(Codec(CATALOG).subject_schema("OddsChanged")[0])
        evolved[0]["fields"].append({"name": "venue", "type": ["null", "string"], "default": None})
        new_id = ConfluentSchemaIds(registry.url).id_for(f"{topics.odds}-value", json.dumps(evolved))
        registry.kill()
        # known ids keep flowing while it is down (the producer's and the worker's caches)
        producer.publish("OddsChanged", quote("mR", "draw", 3.0, minute + 2_500))
        producer.flush()
        wait_for(
            "a 4th quote with the registry down", lambda: changes_in_windows(settings, "mR") == 4, 60, roles
        )
        # a record written with the new id reaches the worker, which cannot look it up
        body = io.BytesIO()
        fastavro.schemaless_writer(
            body,
            fastavro.parse_schema(evolved),
            ("oddstream.events.OddsChanged", {**quote("mR", "home", 2.5, minute + 2_000), "venue": "x"}),
        )
        plain = Producer({"bootstrap.servers": settings.bootstrap, "acks": "all"})
        plain.produce(topics.odds, key=b"mR", value=b"\x00" + struct.pack(">I", new_id) + body.getvalue())
        assert plain.flush(30) == 0
        wait_for(
            "the worker to wait for the registry",
            lambda: "waiting" in worker.output() and f"schema id {new_id}" in worker.output(),
            60,
            roles,
        )
        time.sleep(3)
        assert changes_in_windows(settings, "mR") == 4  # waits: neither decoded nor dropped
        assert read_all(settings.bootstrap, topics.dead_letter) == []

        registry.start()  # same data directory: the id means the same schema after a restart
        wait_for("the waiting quote", lambda: changes_in_windows(settings, "mR") == 5, 90, roles)
        assert read_all(settings.bootstrap, topics.dead_letter) == []
        windows = [Codec(CATALOG, ConfluentSchemaIds(registry.url)).decode(m.value()).record
                   for m in read_all(settings.bootstrap, topics.odds_window_1m)]  # fmt: skip
        assert max(s["high"] for w in windows for s in w["selections"] if s["selection_id"] == "home") == 2.5

        # an id the registry (up) does not have: a dead letter with the reason and the bytes
        bogus = b"\x00" + struct.pack(">I", 987_654) + b"\x00"
        plain.produce(topics.odds, key=b"mR", value=bogus)
        assert plain.flush(30) == 0
        letters = wait_for(
            "the dead letter", lambda: read_all(settings.bootstrap, topics.dead_letter), 60, roles
        )
        by_stage = {dict(m.headers() or [])[STAGE]: m for m in letters}
        letter = by_stage[b"odds-analytics"]
        assert letter.value() == bogus
        assert b"schema id 987654 is not in the Schema Registry" in dict(letter.headers() or [])[REASON]
        assert worker.alive() and store.alive()
    finally:
        if producer is not None:
            producer.close()
        for role in roles:
            role.stop()
        registry.stop()


def test_registry_command_starts_health_checks_and_stops(tmp_path: Path, settings: Settings) -> None:
    port = free_port()
    env = environment(settings.model_copy(update={"data_dir": tmp_path, "local_registry_port": port}))
    process = subprocess.Popen(
        [sys.executable, "-m", "oddstream", "registry", "start"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        while line and "Schema Registry (Confluent API) on" not in line:
            line = process.stdout.readline()
        url = f"http://127.0.0.1:{port}{CCOMPAT_PATH}"
        assert url in line, line
        assert registry_is_healthy(url)
        with urllib.request.urlopen(f"{url}/subjects", timeout=5) as response:
            assert json.loads(response.read()) == []
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert not port_is_open("127.0.0.1", port)
        assert (tmp_path / "registry" / "db").is_dir()  # the H2 file: schemas outlive it
    finally:
        if process.poll() is None:
            process.kill()


def test_the_http_api_registers_its_subjects_and_writes_confluent_frames(
    settings: Settings, registry_url: str
) -> None:
    settings = with_registry(settings, registry_url).model_copy(update={"api_port": free_port()})
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    url = f"http://127.0.0.1:{settings.api_port}"
    api = http_role(settings, "api", url)
    try:
        client = SchemaRegistryClient({"url": registry_url})
        subjects = set(client.get_subjects())
        assert {f"{topics.odds}-value", f"{topics.bets}-value", f"{topics.name('users')}-value"} <= subjects
        minute = int(time.time() * 1000) // 60_000 * 60_000
        body = {"type": "OddsChanged", "record": quote("mA", "home", 2.0, minute)}
        answer = httpx.post(f"{url}/v1/events", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        [record] = read_all(settings.bootstrap, topics.odds)
        value = record.value() or b""
        latest = client.get_latest_version(f"{topics.odds}-value")
        assert value[:1] == b"\x00" and struct.unpack(">I", value[1:5])[0] == latest.schema_id
        reader = AvroDeserializer(client)  # a stock Confluent reader decodes what the API wrote
        decoded = reader(value, SerializationContext(topics.odds, MessageField.VALUE))
        assert isinstance(decoded, dict) and (decoded["market_id"], decoded["odds"]) == ("mA", 2.0)
        assert Codec(CATALOG, ConfluentSchemaIds(registry_url)).decode(value).record["market_id"] == "mA"
    finally:
        api.stop()
