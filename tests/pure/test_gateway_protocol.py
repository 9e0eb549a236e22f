"""WebSocket protocol messages and fan-out, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from gateway.fanout import Hub
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


def test_a_slow_client_is_dropped_and_the_others_keep_receiving() -> None:
    async def scenario() -> None:
        hub = Hub(queue_size=2)
        slow, fast = hub.connect(), hub.connect()
        hub.subscribe(slow, ("markets",))
        hub.subscribe(fast, ("markets",))
        for n in range(5):
            hub.publish("markets", f"frame {n}")
            while not fast.queue.empty():
                fast.queue.get_nowait()  # the fast client keeps up
        assert slow.dropped and not fast.dropped
        assert slow not in hub.clients and hub.dropped_total == 1
        assert hub.publish("markets", "after") == [] and fast.queue.get_nowait() == "after"

    asyncio.run(scenario())


def test_predictions_models_and_alerts_have_their_channels() -> None:
    assert channels_of("PredictionMade", {"market_id": "m1"}) == ["predictions", "market:m1"]
    assert channels_of("ValueSignalRaised", {"market_id": "m1"}) == ["predictions", "market:m1"]
    assert channels_of("ModelEvaluated", {"model": "outcome"}) == ["models"]
    assert channels_of("AlertChanged", {"rule": "steam_move"}) == ["alerts", "alerts:steam_move"]
    for channel in ("predictions", "models", "alerts", "alerts:latency_spike"):
        assert parse_command(f'{{"op":"subscribe","channels":["{channel}"]}}').channels == (channel,)
