"""The walking skeleton end to end on the real broker and embedded ClickHouse:
producer -> Kafka -> Faust worker -> (derived topic, ClickHouse, WebSocket, signed webhook),
with a poison record going to the dead-letter topic while good records keep flowing."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastavro import schemaless_writer
from standardwebhooks.webhooks import Webhook
from websockets.sync.client import connect

from consumers.dispatcher.endpoints import register_endpoint
from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.kafka.deadletter import ORIGIN_TOPIC, REASON, STAGE
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.catalog import load_catalog
from schemas.codec import SINGLE_OBJECT_MAGIC, Codec
from schemas.topics import Topics
from tests.integration.kafka_read import read_all
from tests.integration.roles import Role, wait_for

pytestmark = pytest.mark.integration
POISON = b'{"odds": "not avro at all"}'


class Receiver:
    """A local webhook endpoint that records what it gets."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                owner.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"


def quotes(start_ms: int) -> list[tuple[str, str, float, int]]:
    """(market, selection, odds, event ms): two markets, two windows, some out of order."""
    rows = []
    for n in range(30):
        market = "mA" if n % 3 else "mB"
        selection = ["home", "draw", "away"][n % 3 if market == "mA" else n % 2]
        rows.append(
            (
                market,
                selection,
                round(1.5 + (n * 7 % 11) / 4, 2),
                start_ms + n * 3_000 - (n % 4) * 100,
            )
        )
    return rows


def quote_record(market: str, price: float, t: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "event_time": t, "source": "test", "bookmaker": "pinnacle",
        "market_id": market, "selection_id": "home", "odds": price,
    }  # fmt: skip


def unchecked_frame(record: dict[str, Any], event_type: str = "OddsChanged") -> bytes:
    """A well-framed event that skips the SDK's checks: what a foreign producer might send."""
    schema = load_catalog().schema(event_type)
    body = io.BytesIO()
    schemaless_writer(body, schema.parsed, record)
    return SINGLE_OBJECT_MAGIC + schema.fingerprint + body.getvalue()


def publish(producer: EventProducer, rows: list[tuple[str, str, float, int]]) -> None:
    for market, selection, price, t in rows:
        producer.publish("OddsChanged", {
            "event_id": str(uuid.uuid4()), "event_time": t, "source": "test", "bookmaker": "pinnacle",
            "market_id": market, "selection_id": selection, "odds": price,
        })  # fmt: skip
    producer.flush()


def sql(settings: Settings, query: str) -> list[list[Any]]:
    response = httpx.post(f"{settings.sql_endpoint}/sql", content=query, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["rows"]  # type: ignore[no-any-return]


def metric(text: str, name: str) -> float:
    """The value of one sample in the Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


def expected_rows(updates: list[Any]) -> list[Any]:
    """One ClickHouse row per selection per update."""
    codec = Codec(load_catalog())
    return [s for m in updates for s in codec.decode(m.value()).record["selections"]]


def test_skeleton_end_to_end(settings: Settings) -> None:
    # no coalescing of current updates here: one update per quote makes the counts exact
    settings = settings.model_copy(update={"worker_update_interval_ms": 0})
    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    receiver = Receiver()
    endpoint_id, secret = register_endpoint(
        settings, receiver.url, ["OddsWindowUpdated"], window_updates=True
    )
    roles = [Role(settings, name) for name in ("store", "worker", "gateway", "dispatcher")]
    try:
        wait_for("gateway and dispatcher to consume", lambda: "gateway consuming" in roles[2].output()
                 and "dispatcher ready: 1 endpoint" in roles[3].output(), 90, roles)  # fmt: skip
        ws = connect(f"ws://127.0.0.1:{settings.gateway_port}/ws", open_timeout=10)
        assert json.loads(ws.recv(10))["type"] == "welcome"
        ws.send(json.dumps({"op": "subscribe", "channels": ["market:mA"]}))
        reply = json.loads(ws.recv(10))  # nothing published yet: no snapshot frames first
        assert reply["type"] == "subscribed" and reply["channels"] == ["market:mA"] and reply["snapshot"] == 0

        minute = int(time.time() * 1000) // 60_000 * 60_000 - 5 * 60_000
        rows = quotes(minute)
        first, second = rows[:15], rows[15:]
        now = int(time.time() * 1000)
        bad_inputs = {
            b"unknown market 'mZ'": quote_record("mZ", 2.0, minute),
            b"in the future": quote_record("mA", 2.0, now + 3_600_000),
            b"greater than 1.0": quote_record("mA", 0.9, minute + 1_000),
        }
        with EventProducer(settings) as producer:
            for market in ("mA", "mB"):
                producer.publish("MarketStatusChanged", {
                    "event_id": str(uuid.uuid4()), "event_time": minute - 1, "source": "test",
                    "market_id": market, "status": "OPEN", "reason": None,
                })  # fmt: skip
            publish(producer, first)
            producer.produce_raw(topics.odds, b"mA", POISON)  # poison, on a market partition
            producer.publish("OddsChanged", bad_inputs[b"unknown market 'mZ'"])
            producer.publish("OddsChanged", bad_inputs[b"in the future"])  # the SDK has no clock rule
            producer.produce_raw(topics.odds, b"mA", unchecked_frame(bad_inputs[b"greater than 1.0"]))
            negative_stake = {
                "event_id": str(uuid.uuid4()), "event_time": minute + 2_000, "source": "test", "bet_id": "b1",
                "user_id": "u1", "market_id": "mA", "selection_id": "home", "stake": Decimal("-5.00"),
                "currency": "EUR", "odds": 2.0, "channel": "WEB",
            }  # fmt: skip
            producer.produce_raw(topics.bets, b"mA", unchecked_frame(negative_stake, "BetPlaced"))
            publish(producer, second)

        # (a) derived topic: one current update per quote, none lost behind the poison,
        # and one final per closed window
        codec = Codec(load_catalog())

        def currents() -> Any:
            messages = read_all(settings.bootstrap, topics.odds_window_1m)
            records = [(m, codec.decode(m.value() or b"").record) for m in messages]
            updates = [m for m, r in records if not r["final"] and r["spec"] == "1m"]  # the 1m windows
            return len(updates) >= len(rows) and updates

        updates = wait_for("all window updates", currents, 90, roles)
        assert len(updates) == len(rows)
        decoded = [codec.decode(m.value()).record for m in updates]
        last_of_mA = max(
            (d for d in decoded if d["market_id"] == "mA"),
            key=lambda d: (d["window_start"], d["version"]),
        )
        assert last_of_mA["version"] == sum(
            1
            for r in rows
            if r[0] == "mA" and r[3] // 60_000 * 60_000 == last_of_mA["window_start"].timestamp() * 1000
        )

        # dead letter: original bytes, reason and origin in headers
        # every role that rejects a record dead-letters it with the reason and its stage;
        # the store keeps valid events of unknown markets (it has no market state)
        expected_letters = {
            (b"not an oddstream frame", b"odds-analytics"), (b"not an oddstream frame", b"store"),
            (b"unknown market 'mZ'", b"odds-analytics"),
            (b"in the future", b"odds-analytics"), (b"in the future", b"store"),
            (b"greater than 1.0", b"odds-analytics"), (b"greater than 1.0", b"store"),
            (b"greater than zero", b"bets-analytics"), (b"greater than zero", b"store"),
        }  # fmt: skip
        letters = wait_for(
            "the dead letters",
            lambda: (m := read_all(settings.bootstrap, topics.dead_letter)) and len(m) >= 9 and m,
            30,
            roles,
        )
        seen = set()
        for letter in letters:
            headers = dict(letter.headers() or [])
            assert headers[ORIGIN_TOPIC] in (topics.odds.encode(), topics.bets.encode())
            words = next(w for w, _ in expected_letters if w in headers[REASON])
            if words == b"not an oddstream frame":
                assert letter.value() == POISON
            else:
                assert Codec(load_catalog()).decode(letter.value() or b"").record["market_id"] in ("mA", "mZ")
            seen.add((words, headers[STAGE]))
        assert seen == expected_letters and len(letters) == 9
        # the rejected bet touched no window
        assert read_all(settings.bootstrap, topics.for_event("BetWindowUpdated")) == []

        # (b) ClickHouse: the latest version of every window equals a recomputation from the quotes
        expected: dict[tuple[str, int, str], tuple[float, float, float, float, int]] = {}
        for market, selection, price, t in sorted(rows, key=lambda r: r[3]):
            key = (market, t // 60_000 * 60_000, selection)
            o, h, lo, _last, n = expected.get(key, (price, price, price, price, 0))
            expected[key] = (o, max(h, price), min(lo, price), price, n + 1)
        query = (
            "SELECT market_id, toUnixTimestamp64Milli(window_start), selection_id, "
            "open, high, low, last, changes FROM odds_windows_1m FINAL "
            "ORDER BY version DESC LIMIT 1 BY market_id, window_start, selection_id"
        )
        stored = wait_for(
            "ClickHouse rows",
            lambda: (r := sql(settings, query)) and len(r) == len(expected) and r,
            60,
            roles,
        )
        assert {(m, int(w), s): (o, h, lo, la, n) for m, w, s, o, h, lo, la, n in stored} == expected
        # per origin and stage; the store sinks the dead-letter topic on its own, so wait for it
        letters_stored = "SELECT count() FROM dead_letters FINAL"
        wait_for("9 dead letters in ClickHouse", lambda: sql(settings, letters_stored)[0][0] == 9, 60, roles)
        time.sleep(1)
        assert sql(settings, letters_stored)[0][0] == 9  # and no more
        assert sql(settings, "SELECT count() FROM odds_changed FINAL")[0][0] == len(rows) + 1  # + mZ
        refused = httpx.post(f"{settings.sql_endpoint}/sql", content="DROP TABLE odds_windows_1m", timeout=30)
        assert refused.status_code == 400 and "read-only" in refused.text.lower()

        # (c) WebSocket: updates for the subscribed market only, with their stream position
        frames = [json.loads(ws.recv(10)) for _ in range(3)]
        assert all(f["type"] == "event" and f["channel"] == "market:mA" for f in frames)
        assert all(
            f["data"]["market_id"] == "mA" and f["position"]["topic"] in topics.windows() for f in frames
        )
        ws.close()

        # (d) webhooks: signed per Standard Webhooks, verifiable with the endpoint's secret
        wait_for("webhook deliveries", lambda: len(receiver.deliveries) >= len(rows), 60, roles)
        for headers_in, body in receiver.deliveries:
            Webhook(secret).verify(body, headers_in)
            assert json.loads(body)["type"] == "OddsWindowUpdated"
        ids = {h["webhook-id"] for h, _ in receiver.deliveries}
        published = [
            codec.decode(m.value() or b"").record for m in read_all(settings.bootstrap, topics.odds_window_1m)
        ]
        # one message id per window update (every current, and the finals so far)
        assert {f"msg_{r['event_id']}" for r in decoded} <= ids <= {f"msg_{r['event_id']}" for r in published}
        assert endpoint_id.startswith("ep_")

        # (e) local state stays under data_dir: nothing in the working directory
        assert (settings.data_dir / "faust" / settings.worker_id).is_dir()
        assert not (Path.cwd() / f"{settings.worker_id}-data").exists()

        # operators: Prometheus metrics on the store and the gateway
        store_metrics = httpx.get(f"{settings.sql_endpoint}/metrics", timeout=10).text
        assert metric(store_metrics, 'oddstream_store_rows_total{table="odds_windows_1m"}') >= len(
            expected_rows(updates)
        )
        gateway_metrics = httpx.get(f"http://127.0.0.1:{settings.gateway_port}/metrics", timeout=10).text
        assert metric(gateway_metrics, "oddstream_gateway_frames_total") >= len(rows)
    finally:
        for role in reversed(roles):
            role.stop()
        receiver.server.shutdown()
