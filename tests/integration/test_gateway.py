"""The gateway over real sockets: API keys, health, and the protocol's errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.server import run_gateway
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings

pytestmark = pytest.mark.integration


async def started(settings: Settings) -> asyncio.Task[None]:
    task = asyncio.create_task(run_gateway(settings))
    url = f"http://127.0.0.1:{settings.gateway_port}/healthz"
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            try:
                response = await client.get(url)
                if response.status_code == 200 and response.json()["consuming"]:
                    return task
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("gateway did not start")


async def test_api_keys_are_required_when_configured(settings: Settings) -> None:
    ensure_topics(settings)
    secured = settings.model_copy(update={"gateway_api_keys": [SecretStr("k-123")]})
    task = await started(secured)
    base = f"ws://127.0.0.1:{secured.gateway_port}/ws"
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            async with connect(base + "?api_key=wrong"):
                pass
        for url, headers in ((base + "?api_key=k-123", None), (base, {"Authorization": "Bearer k-123"})):
            async with connect(url, additional_headers=headers) as ws:
                assert json.loads(await ws.recv())["type"] == "welcome"
                await ws.send('{"op":"subscribe","channels":["secrets"]}')
                error = json.loads(await ws.recv())
                assert error["type"] == "error" and error["code"] == "unknown_channel"
                await ws.send('{"op":"ping"}')
                assert json.loads(await ws.recv()) == {"type": "pong"}
        async with httpx.AsyncClient() as client:
            metrics_url = f"http://127.0.0.1:{secured.gateway_port}/metrics"
            assert (await client.get(metrics_url)).status_code == 401  # metrics need a key too
            metrics = (await client.get(metrics_url, headers={"X-API-Key": "k-123"})).text
        assert "oddstream_gateway_clients" in metrics
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_client_that_never_reads_is_cut_and_the_others_keep_receiving(settings: Settings) -> None:
    import socket
    import statistics
    import time
    import uuid

    from oddstream.producer import EventProducer

    BASELINE, EVENTS = 300, 1500
    ensure_topics(settings)
    settings = settings.model_copy(
        update={"gateway_client_max_bytes": 256 * 1024, "gateway_max_subscriptions": 150}
    )
    task = await started(settings)
    base = f"ws://127.0.0.1:{settings.gateway_port}/ws"
    health = f"http://127.0.0.1:{settings.gateway_port}/healthz"
    start = 1_767_225_600_000
    selections = [
        {"selection_id": f"s{n}", "open": 2.0, "high": 2.5, "low": 1.9, "last": 2.1, "changes": 3,
         "implied_probability": 0.47} for n in range(40)
    ]  # fmt: skip
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}

    def publish(versions: range) -> None:  # in a thread: the gateway and both clients share this loop
        with EventProducer(settings) as producer:
            for n in versions:
                producer.publish("OddsWindowUpdated", {
                    "event_id": str(uuid.uuid4()), "event_time": start, "source": "test",
                    "window_id": f"w{n}", "market_id": "m1", "window_start": start,
                    "window_end": start + 60_000, "version": n, "selections": selections,
                    "overround": None, "final": False, "bookmakers": [], "consensus": [],
                })  # fmt: skip
                sent[n] = time.monotonic()
                if n % 10 == 9:
                    producer.flush()
                    time.sleep(0.02)  # a steady 500 events/s, not one burst

    def latencies(versions: range) -> list[float]:
        return sorted(arrived[n] - sent[n] for n in versions if n in arrived)

    small = socket.create_connection(("127.0.0.1", settings.gateway_port))
    small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that takes little
    try:
        async with connect(base, max_queue=1, sock=small) as stuck, connect(base) as reader:
            for ws in (stuck, reader):
                assert json.loads(await ws.recv())["type"] == "welcome"
            await reader.send('{"op":"subscribe","channels":["markets"]}')
            assert json.loads(await reader.recv())["type"] == "subscribed"
            # a subscription flood is refused past the limit, whole commands at a time
            channels = [f"market:m{n}" for n in range(100)]
            await reader.send(json.dumps({"op": "subscribe", "channels": channels}))
            assert json.loads(await reader.recv())["type"] == "subscribed"
            await reader.send(
                json.dumps({"op": "subscribe", "channels": [f"market:x{n}" for n in range(100)]})
            )
            error = json.loads(await reader.recv())
            assert error["code"] == "too_many_subscriptions", error

            async def read() -> None:
                while True:
                    message = json.loads(await reader.recv())
                    if message["type"] == "event" and message["channel"] == "markets":
                        arrived[message["data"]["version"]] = time.monotonic()

            reading = asyncio.create_task(read())
            await asyncio.to_thread(publish, range(BASELINE))  # the reader alone: its latency
            await stuck.send('{"op":"subscribe","channels":["markets"]}')  # then one that never reads
            await asyncio.sleep(0.5)
            sent_at = time.monotonic()
            # 1,500 frames of about 5.7 KB: past what the sockets buffer for the stuck client,
            # then past its 256 KiB: it is cut
            await asyncio.to_thread(publish, range(BASELINE, BASELINE + EVENTS))
            async with httpx.AsyncClient() as client:
                for _ in range(100):
                    if (
                        len(arrived) >= BASELINE + EVENTS
                        and (await client.get(health)).json()["clients"] == 1
                    ):
                        break
                    await asyncio.sleep(0.1)
                assert (await client.get(health)).json()["clients"] == 1  # the stuck one is gone
            assert len(arrived) == BASELINE + EVENTS  # ... and the reader got every frame meanwhile
            assert time.monotonic() - sent_at < 20
            reading.cancel()
            alone, beside = latencies(range(BASELINE)), latencies(range(BASELINE, BASELINE + EVENTS))
            p99 = [values[int(len(values) * 0.99)] for values in (alone, beside)]
            p50 = [statistics.median(values) * 1000 for values in (alone, beside)]
            print(
                f"\nreader latency alone: p50 {p50[0]:.1f} ms, p99 {p99[0] * 1000:.1f} ms; beside a "
                f"client that never reads: p50 {p50[1]:.1f} ms, p99 {p99[1] * 1000:.1f} ms"
            )
            # not a speed check: a reader held up by the stuck one would wait seconds, not this
            assert p99[1] < 5 * p99[0] + 1.0, (p99, "the reader waited for the stuck client")
    finally:
        small.close()
        task.cancel()


async def test_a_command_flood_is_refused_then_closed(settings: Settings) -> None:
    from websockets.exceptions import ConnectionClosed

    ensure_topics(settings)
    settings = settings.model_copy(update={"gateway_commands_per_s": 5.0})
    task = await started(settings)
    try:
        async with (
            connect(f"ws://127.0.0.1:{settings.gateway_port}/ws") as ws,
            connect(f"ws://127.0.0.1:{settings.gateway_port}/ws") as calm,
        ):
            assert json.loads(await ws.recv())["type"] == "welcome"
            assert json.loads(await calm.recv())["type"] == "welcome"
            answers = []
            started_at = asyncio.get_running_loop().time()
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(200):
                    await ws.send('{"op":"ping"}')
                    answers.append(json.loads(await ws.recv()))
            pongs = sum(a == {"type": "pong"} for a in answers)
            limited = [a for a in answers if a.get("code") == "rate_limited"]
            elapsed = asyncio.get_running_loop().time() - started_at
            assert len(limited) == 100, len(limited)  # then closed
            assert 10 <= pongs <= 10 + 5 * elapsed + 1, (pongs, elapsed)  # a burst of 10, then 5 a second
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            await calm.send('{"op":"ping"}')  # the others are unaffected
            assert json.loads(await calm.recv()) == {"type": "pong"}
            async with connect(f"ws://127.0.0.1:{settings.gateway_port}/ws", max_size=None) as big:
                await big.recv()
                with pytest.raises(ConnectionClosed) as closed:
                    await big.send(
                        json.dumps({"op": "subscribe", "channels": ["markets"], "pad": "x" * 70_000})
                    )
                    await big.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # frames <= 64 KiB
            await calm.send('{"op":"ping"}')
            assert json.loads(await calm.recv()) == {"type": "pong"}
    finally:
        task.cancel()


async def test_a_client_resumes_from_its_last_position_with_no_gap_and_no_duplicate(
    settings: Settings,
) -> None:
    import uuid

    from oddstream.producer import EventProducer

    ensure_topics(settings)
    task = await started(settings)
    base = f"ws://127.0.0.1:{settings.gateway_port}/ws"
    start = 1_767_225_600_000

    def publish(versions: range) -> None:
        with EventProducer(settings) as producer:
            for n in versions:
                producer.publish("OddsWindowUpdated", {
                    "event_id": str(uuid.uuid4()), "event_time": start, "source": "test",
                    "window_id": "w1", "market_id": "m1", "window_start": start,
                    "window_end": start + 60_000, "version": n, "selections": [],
                    "overround": None, "final": False, "bookmakers": [], "consensus": [],
                })  # fmt: skip

    positions: dict[tuple[str, int], int] = {}

    def keep(message: dict[str, Any]) -> None:
        """What a client keeps: the positions of `subscribed`, moved on by every frame."""
        if message["type"] == "subscribed":
            for topic, offsets in message["positions"].items():
                for partition, offset in enumerate(offsets):
                    positions[(topic, partition)] = max(offset, positions.get((topic, partition), -1))
        elif message["type"] == "event":
            p = message["position"]
            positions[(p["topic"], p["partition"])] = p["offset"]

    async def events(ws: object, count: int) -> list[int]:
        versions: list[int] = []
        while len(versions) < count:
            message = json.loads(await asyncio.wait_for(ws.recv(), 20))  # type: ignore[attr-defined]
            keep(message)
            if message["type"] == "event":
                versions.append(message["data"]["version"])
        return versions

    def since(epoch: str) -> dict[str, object]:
        topics: dict[str, list[int]] = {}
        for (topic, partition), offset in sorted(positions.items()):
            topics.setdefault(topic, []).insert(partition, offset)
        return {"epoch": epoch, "positions": topics}

    try:
        async with connect(base) as ws:
            welcome = json.loads(await ws.recv())
            epoch = welcome["epoch"]
            await ws.send('{"op":"subscribe","channels":["market:m1"]}')
            subscribed = json.loads(await ws.recv())
            keep(subscribed)
            assert subscribed["type"] == "subscribed" and subscribed["positions"], subscribed
            await asyncio.to_thread(publish, range(0, 5))
            assert await events(ws, 5) == [0, 1, 2, 3, 4]
        await asyncio.to_thread(publish, range(5, 35))  # while the client is away

        async with connect(base) as ws:
            assert json.loads(await ws.recv())["epoch"] == epoch
            # garbage first: refused with a reason, the connection goes on
            await ws.send(
                json.dumps(
                    {
                        "op": "subscribe",
                        "channels": ["market:m1"],
                        "since": {"epoch": epoch, "positions": {"t": [1, "x"]}},
                    }
                )
            )
            assert json.loads(await ws.recv())["code"] == "bad_request"
            await ws.send(json.dumps({"op": "subscribe", "channels": ["market:m1"], "since": since(epoch)}))
            replayed = await events(ws, 30)
            assert replayed == list(range(5, 35))  # exactly the missed ones, in order
            reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
            keep(reply)
            assert reply["type"] == "subscribed" and reply["recovered"] is True and reply["replayed"] == 30, (
                reply
            )
            await asyncio.to_thread(publish, range(35, 38))
            assert await events(ws, 3) == [35, 36, 37]  # then live, no duplicate
            await ws.send('{"op":"ping"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 20)) == {"type": "pong"}  # nothing more came

        async with connect(base) as ws:  # positions of another epoch: not recovered, said why
            await ws.recv()
            await ws.send(
                json.dumps({"op": "subscribe", "channels": ["market:m1"], "since": since("0" * 16)})
            )
            # what the client has may be stale: the market's state now (the latest window), then why
            state = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert state["type"] == "event" and state["snapshot"] is True and state["data"]["version"] == 37
            reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert reply["type"] == "subscribed" and reply["recovered"] is False, reply
            assert reply["code"] == "epoch_changed" and "epoch" in reply["reason"] and reply["snapshot"] == 1
            await asyncio.to_thread(publish, range(38, 40))
            assert await events(ws, 2) == [38, 39]  # live from there on

        async with connect(base) as ws:  # a new screen: complete at once
            await ws.recv()
            await ws.send('{"op":"subscribe","channels":["market:m1","alerts"]}')
            state = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert state["channel"] == "market:m1" and state["snapshot"] and state["data"]["version"] == 39
            reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert reply["type"] == "subscribed" and reply["snapshot"] == 1
            keep(reply)

        # the gateway restarts while events keep coming: the log, not the gateway, is the history
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(publish, range(40, 45))
        task = await started(settings)
        async with connect(base) as ws:
            assert json.loads(await ws.recv())["epoch"] == epoch  # same topics, same epoch
            await ws.send('{"op":"subscribe","channels":["market:m1"]}')
            state = json.loads(await asyncio.wait_for(ws.recv(), 20))  # read back at start
            assert state["snapshot"] and state["data"]["version"] == 44
            assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "subscribed"
        async with connect(base) as ws:
            await ws.recv()
            await ws.send(json.dumps({"op": "subscribe", "channels": ["market:m1"], "since": since(epoch)}))
            assert await events(ws, 5) == [40, 41, 42, 43, 44]
            reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert reply["recovered"] is True and reply["replayed"] == 5, reply
    finally:
        task.cancel()


async def test_tokens_keys_origins_and_connection_limits_are_each_refused_with_a_reason(
    settings: Settings,
) -> None:
    import time

    import jwt
    from websockets.exceptions import ConnectionClosed
    from websockets.typing import Origin

    secret = "j" * 64

    def token(channels: list[str], ttl_s: float, sub: str = "screen-1") -> str:
        return jwt.encode(
            {"sub": sub, "exp": int(time.time() + ttl_s), "channels": channels}, secret, algorithm="HS256"
        )

    ensure_topics(settings)
    settings = settings.model_copy(
        update={
            "gateway_api_keys": [SecretStr("ops"), SecretStr("k2=markets")],
            "gateway_jwt_secret": SecretStr(secret),
            "gateway_allowed_origins": ["https://screens.example"],
            "gateway_max_connections_per_key": 2,
        }
    )
    task = await started(settings)
    base = f"ws://127.0.0.1:{settings.gateway_port}/ws"
    http = f"http://127.0.0.1:{settings.gateway_port}"

    async def refused(url: str, **kwargs: object) -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(url, **kwargs):  # type: ignore[arg-type]
                pass
        return caught.value.response.status_code, caught.value.response.body.decode()

    async def command(ws: object, frame: dict[str, object]) -> dict[str, object]:
        await ws.send(json.dumps(frame))  # type: ignore[attr-defined]
        return json.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[attr-defined,no-any-return]

    try:
        assert await refused(base) == (401, "missing API key or token\n")
        assert await refused(f"{base}?token={token(['*'], -60)}") == (401, "token expired\n")
        status, body = await refused(
            f"{base}?token={jwt.encode({'sub': 'x', 'exp': 2**40, 'channels': ['*']}, 'w' * 64)}"
        )
        assert status == 401 and "Signature verification failed" in body
        assert (await refused(base + "?api_key=ops", origin=Origin("https://evil.example")))[0] == 403

        async with connect(
            f"{base}?token={token(['market:*', 'alerts'], 60)}", origin=Origin("https://screens.example")
        ) as ws:
            await ws.recv()
            error = await command(ws, {"op": "subscribe", "channels": ["market:m1", "models"]})
            assert error["code"] == "forbidden" and "models" in str(error["message"])  # the whole command
            assert (await command(ws, {"op": "subscribe", "channels": ["market:m1", "alerts"]}))[
                "type"
            ] == "subscribed"
            # refresh without reconnecting: a new expiry, and channels no longer granted are dropped
            refreshed = await command(ws, {"op": "refresh", "token": token(["market:*"], 120)})
            assert refreshed["type"] == "refreshed" and refreshed["unsubscribed"] == ["alerts"]
            other = await command(ws, {"op": "refresh", "token": token(["*"], 120, sub="someone-else")})
            assert other["code"] == "unauthorized" and "same subject" in str(other["message"])
            bad = await command(ws, {"op": "refresh", "token": "garbage"})
            assert bad["code"] == "unauthorized"

        # a token that expires closes its connection with 4001; one refreshed in time stays
        async with (
            connect(f"{base}?token={token(['*'], 1, sub='a')}") as expiring,
            connect(f"{base}?token={token(['*'], 1, sub='b')}") as kept,
        ):
            await expiring.recv()
            await kept.recv()
            await command(kept, {"op": "refresh", "token": token(["*"], 120, sub="b")})
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(expiring.recv(), 15)  # 1 s + the 5 s leeway
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
            assert await command(kept, {"op": "ping"}) == {"type": "pong"}

        # connections per key: two open, the third refused; a scoped key cannot read metrics
        async with connect(base + "?api_key=k2") as one, connect(base + "?api_key=k2") as two:
            await one.recv()
            await two.recv()
            assert await refused(base + "?api_key=k2") == (429, "at most 2 connections per key\n")
            error = await command(one, {"op": "subscribe", "channels": ["alerts"]})
            assert error["code"] == "forbidden"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{http}/metrics", headers={"X-API-Key": "k2"})).status_code == 403
            assert (
                await client.get(f"{http}/metrics", params={"token": token(["*"], 60)})
            ).status_code == 403
            metrics = await client.get(f"{http}/metrics", headers={"X-API-Key": "ops"})
            assert metrics.status_code == 200
            for name in (
                "resumes_total",
                "subscriptions",
                "channels",
                "bytes_total",
                "consumer_lag",
                "frames_total",
            ):
                assert f"oddstream_gateway_{name}" in metrics.text, name
            assert (await client.get(f"{http}/healthz")).json()["clients"] == 0  # all gone, the gateway runs
    finally:
        task.cancel()


async def test_garbage_on_its_topics_is_skipped_with_a_reason_at_start_and_live(settings: Settings) -> None:
    """Records from any Kafka client on the topics the gateway serves: read back at start (the
    snapshot's warm-up) and live. Each is skipped and counted; the gateway keeps serving."""
    import uuid

    from oddstream.producer import EventProducer
    from schemas.topics import Topics

    ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    garbage = [b"", b"\x00\x01not avro", b"\xc3\x01" + b"\xff" * 8 + b"truncated", b'{"json": "not avro"}']
    start = 1_767_225_600_000

    def window(version: int) -> dict[str, object]:
        return {
            "event_id": str(uuid.uuid4()), "event_time": start, "source": "test", "window_id": "w1",
            "market_id": "m1", "window_start": start, "window_end": start + 60_000, "version": version,
            "selections": [], "overround": None, "final": False, "bookmakers": [], "consensus": [],
        }  # fmt: skip

    with EventProducer(settings) as producer:
        producer.publish("OddsWindowUpdated", window(1))
        for value in garbage:  # after the valid one: the warm-up reads them last
            for topic in (topics.odds_window_1m, topics.alerts):
                producer.produce_raw(topic, b"m1", value)
    task = await started(settings)  # the warm-up read all of it
    base = f"ws://127.0.0.1:{settings.gateway_port}/ws"
    try:
        async with connect(base) as ws:
            await ws.recv()
            await ws.send('{"op":"subscribe","channels":["market:m1","alerts"]}')
            state = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert state["snapshot"] is True and state["data"]["version"] == 1  # the valid one only
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"

            def publish() -> None:
                with EventProducer(settings) as producer:
                    for value in garbage:
                        producer.produce_raw(topics.odds_window_1m, b"m1", value)
                    producer.publish("OddsWindowUpdated", window(2))

            await asyncio.to_thread(publish)
            live = json.loads(await asyncio.wait_for(ws.recv(), 20))  # the garbage before it: skipped
            assert live["type"] == "event" and live["data"]["version"] == 2 and "snapshot" not in live
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{settings.gateway_port}/metrics")).text
            health = (await client.get(f"http://127.0.0.1:{settings.gateway_port}/healthz")).json()
        assert health["consuming"] is True
        skipped = [
            line for line in metrics.splitlines() if line.startswith("oddstream_rejected_records_total{")
        ]
        assert any(settings.topic_prefix in line for line in skipped), skipped  # counted, with the topic
    finally:
        task.cancel()
