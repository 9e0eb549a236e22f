"""WebSocket protocol messages and fan-out, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from gateway.fanout import Client, Hub
from gateway.protocol import ProtocolError, channels_of, parse_command

pytestmark = pytest.mark.pure


def test_subscribe_parses_and_deduplicates() -> None:
    command = parse_command('{"op":"subscribe","channels":["market:m1","markets","market:m1"]}')
    assert command.op == "subscribe" and command.channels == ("market:m1", "markets")


@pytest.mark.parametrize(
    "frame, code",
    [
        ("not json", "bad_request"),
        ("[1,2]", "bad_request"),
        ('{"op":"dance"}', "unknown_op"),
        ('{"op":"subscribe"}', "bad_request"),
        ('{"op":"subscribe","channels":[]}', "bad_request"),
        ('{"op":"subscribe","channels":["secrets"]}', "unknown_channel"),
        ('{"op":"subscribe","channels":["market:../etc"]}', "unknown_channel"),
        ('{"op":"subscribe","channels":["market:m1@5M"]}', "unknown_channel"),
        ('{"op":"subscribe","channels":["markets@5m_every_1m"]}', "unknown_channel"),
        ('{"op":"subscribe","channels":["alerts:r@5m"]}', "unknown_channel"),
    ],
)
def test_bad_frames_get_a_coded_error(frame: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_command(frame)
    assert caught.value.code == code


def test_window_updates_go_to_the_market_and_the_all_markets_channel() -> None:
    assert channels_of("OddsWindowUpdated", {"market_id": "m7"}) == ["markets", "market:m7"]
    assert channels_of("BetWindowUpdated", {"market_id": "m7"}) == ["market:m7"]
    assert channels_of("RouteWindowUpdated", {"service": "api"}) == ["services", "service:api"]
    assert channels_of("BetPlaced", {"market_id": "m7"}) == []


def test_a_window_of_an_extra_spec_goes_to_its_own_channel_only() -> None:
    assert channels_of("OddsWindowUpdated", {"market_id": "m7", "spec": "1m"}) == ["markets", "market:m7"]
    assert channels_of("OddsWindowUpdated", {"market_id": "m7", "spec": "5m_every_1m"}) == [
        "market:m7@5m_every_1m"
    ]
    assert channels_of("PriceWindowUpdated", {"market_id": "m7", "spec": "60s_sliding"}) == [
        "market:m7@60s_sliding"
    ]
    assert channels_of("ServiceWindowUpdated", {"service": "api", "spec": "15m"}) == ["service:api@15m"]
    command = parse_command('{"op":"subscribe","channels":["market:m7@5m_every_1m","service:api@15m"]}')
    assert command.channels == ("market:m7@5m_every_1m", "service:api@15m")


class Sockets:
    """What the hub writes to: per connection, the frames written and the bytes not yet sent."""

    def __init__(self) -> None:
        self.frames: dict[str, list[str]] = {}
        self.unsent: dict[str, int] = {}
        self.writes = 0

    def write_many(self, connections: list[str], frame: str) -> None:
        self.writes += 1
        for name in connections:
            self.frames.setdefault(name, []).append(frame)
            self.unsent[name] = self.unsent.get(name, 0) + len(frame)

    def connect(self, hub: Hub, name: str) -> Client:
        return hub.connect(name, lambda: self.unsent.get(name, 0))


def test_a_frame_is_written_once_to_every_subscriber_and_nobody_else() -> None:
    sockets = Sockets()
    hub = Hub(sockets.write_many)
    a, b, c = (sockets.connect(hub, name) for name in "abc")
    hub.subscribe(a, ("markets",))
    hub.subscribe(b, ("markets", "market:m1"))
    hub.subscribe(c, ("alerts",))
    assert hub.publish("markets", "f1") == [] and hub.publish("market:m1", "f2") == []
    assert hub.publish("market:m9", "nobody") == []
    assert (
        sockets.frames == {"a": ["f1"], "b": ["f1", "f2"]} and sockets.writes == 2
    )  # one write call per frame
    assert hub.delivered_total == 3


def test_a_slow_client_is_cut_by_the_bytes_its_socket_holds_and_the_others_keep_receiving() -> None:
    sockets = Sockets()
    hub = Hub(sockets.write_many, max_bytes=1000)
    slow, fast = sockets.connect(hub, "slow"), sockets.connect(hub, "fast")
    cut: list[str] = []
    slow.on_drop = lambda: cut.append("slow")
    for client in (slow, fast):
        hub.subscribe(client, ("markets",))
    for _ in range(3):
        hub.publish("markets", "x" * 300)
        sockets.unsent["fast"] = 0  # the fast reader's kernel took everything
    assert not slow.dropped and sockets.unsent["slow"] == 900
    assert hub.publish("markets", "x" * 300) == [slow]  # 1,200 bytes would be held
    assert cut == ["slow"] and slow.dropped and not fast.dropped and slow not in hub.clients
    assert len(sockets.frames["fast"]) == 4 and hub.dropped_total == 1
    assert hub.publish("markets", "after") == [] and sockets.frames["fast"][-1] == "after"


def test_live_frames_wait_while_a_snapshot_is_sent_then_follow_in_order() -> None:
    sockets = Sockets()
    hub = Hub(sockets.write_many, max_bytes=1000, max_pending=3)
    client = sockets.connect(hub, "a")
    hub.subscribe(client, ("markets",))
    client.paused = True
    hub.publish("markets", "live 1")
    hub.publish("markets", "live 2")
    assert "a" not in sockets.frames and client.pending_bytes == 12  # nothing written meanwhile
    sent = []
    while (frame := client.take_pending()) is not None:
        sent.append(frame)
        if frame == "live 1":
            hub.publish("markets", "live 3")  # arrives while the waiting ones go out: waits too
    assert sent == ["live 1", "live 2", "live 3"] and not client.paused and client.pending_bytes == 0
    hub.publish("markets", "live 4")
    assert sockets.frames["a"] == ["live 4"]
    client.paused = True
    for n in range(3):
        assert hub.publish("markets", f"wait {n}") == []
    assert hub.publish("markets", "one too many") == [client] and client.dropped  # bounded in frames


def test_predictions_models_and_alerts_have_their_channels() -> None:
    assert channels_of("PredictionMade", {"market_id": "m1"}) == ["predictions", "market:m1"]
    assert channels_of("ValueSignalRaised", {"market_id": "m1"}) == ["predictions", "market:m1"]
    assert channels_of("ModelEvaluated", {"model": "outcome"}) == ["models"]
    assert channels_of("AlertChanged", {"rule": "steam_move"}) == ["alerts", "alerts:steam_move"]
    for channel in ("predictions", "models", "alerts", "alerts:latency_spike"):
        assert parse_command(f'{{"op":"subscribe","channels":["{channel}"]}}').channels == (channel,)


def test_channels_nobody_listens_to_are_not_kept() -> None:
    async def scenario() -> None:
        hub = Hub(Sockets().write_many)
        a, b = hub.connect(), hub.connect()
        hub.unsubscribe(a, tuple(f"market:m{n}" for n in range(100)))  # never subscribed
        assert hub.channels == 0
        hub.subscribe(a, ("markets", "market:m1"))
        hub.subscribe(b, ("markets",))
        assert hub.channels == 2
        hub.unsubscribe(a, ("market:m1",))
        assert hub.channels == 1 and not hub.has_subscribers("market:m1")
        hub.disconnect(a)
        hub.disconnect(b)
        assert hub.channels == 0 and not hub.clients

    asyncio.run(scenario())


def test_a_client_holds_at_most_its_subscription_limit_all_or_nothing() -> None:
    async def scenario() -> None:
        hub = Hub(Sockets().write_many, max_subscriptions=3)
        client = hub.connect()
        hub.subscribe(client, ("markets", "market:m1"))
        with pytest.raises(ProtocolError) as refused:
            hub.subscribe(client, ("market:m2", "market:m3"))
        assert refused.value.code == "too_many_subscriptions" and "at most 3" in str(refused.value)
        assert client.channels == {"markets", "market:m1"} and hub.channels == 2  # nothing added
        hub.subscribe(client, ("markets", "market:m2"))  # one new: within the limit
        assert hub.channels == 3

    asyncio.run(scenario())


def test_an_event_frame_built_from_parts_is_the_event_message() -> None:
    import json

    from gateway.protocol import event_frame, event_message

    data = {"market_id": 'm"1', "selections": [{"odds": 2.5}], "text": "é\n"}
    position = {"topic": "t", "partition": 1, "offset": 7}
    frame = event_frame("market:m1", "OddsWindowUpdated", json.dumps(position), json.dumps(data))
    assert json.loads(frame) == event_message("market:m1", "OddsWindowUpdated", "t", 1, 7, data)


def test_the_command_rate_is_a_token_bucket() -> None:
    from gateway.fanout import TokenBucket

    bucket = TokenBucket(rate=10.0, burst=20.0)
    assert sum(bucket.allow(100.0) for _ in range(30)) == 20  # the burst, then nothing
    assert not bucket.allow(100.05)
    assert bucket.allow(100.1)  # 0.1 s later: one more token
    assert sum(bucket.allow(110.0) for _ in range(30)) == 20  # refilled, never past the burst
