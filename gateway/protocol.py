"""WebSocket protocol messages. Pure: parse what clients send, build what they receive.

Client -> server (JSON text frames)::

    {"op": "subscribe", "channels": ["market:m000001"]}
    {"op": "subscribe", "channels": [...], "since": {"epoch": "9f0c...", "positions": {
        "odds.window.1m": [41, 17, -1, ...], ...}}}
    {"op": "unsubscribe", "channels": ["market:m000001"]}
    {"op": "refresh", "token": "<a fresh JWT>"}
    {"op": "ping"}

Server -> client::

    {"type": "welcome", "channels": ["markets", "market:<market_id>"], "epoch": "9f0c..."}
    {"type": "subscribed", "channels": [...], "positions": {"<topic>": [offset per partition]},
     "recovered": true, "replayed": 12}          # or "recovered": false, "code", "reason"
    {"type": "unsubscribed", "channels": [...]}
    {"type": "refreshed", "expires_at": 1767229200, "unsubscribed": [...]}
    {"type": "event", "channel": "market:m1", "event_type": "OddsWindowUpdated",
     "position": {"topic": "...", "partition": 0, "offset": 42}, "data": {...}}
    (on subscribe, before "subscribed": the channel's current state as event frames with
     "snapshot": true; gateway/latest.py)
    {"type": "health", "channel": "health", "time": 1700000000000, "data": {"events_in_per_s": ...}}
    {"type": "heartbeat", "time": 1700000000000} / {"type": "pong"}
    {"type": "error", "code": "bad_request", "message": "..."}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

CHANNEL = re.compile(
    r"^(markets|services|predictions|alerts|models|health|(market|service|alerts):[A-Za-z0-9_.\-]{1,128}"
    r"|(market|service):[A-Za-z0-9_.\-]{1,128}@[a-z0-9_]{1,32})$"
)
CHANNEL_HELP = [
    "markets", "market:<market_id>", "market:<market_id>@<spec>", "services", "service:<service>",
    "service:<service>@<spec>", "predictions", "alerts", "alerts:<rule>", "models", "health",
]  # fmt: skip
MAX_CHANNELS_PER_MESSAGE = 100
MAX_TOKEN_CHARS = 8_192


class ProtocolError(ValueError):
    """A client message is malformed; ``code`` goes back in the error message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Position = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Since:
    """Where a resuming client was: per topic-partition, the offset of the last event it
    accounted for (from its frames, or from its last ``subscribed`` message)."""

    epoch: str
    positions: dict[Position, int]


@dataclass(frozen=True)
class Command:
    op: str
    channels: tuple[str, ...] = ()
    since: Since | None = None
    token: str = ""


def parse_command(text: str | bytes) -> Command:
    """Parse one client frame; raise :class:`ProtocolError` with a reason if it is bad."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("bad_request", "frames must be JSON objects") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("bad_request", 'expected {"op": "subscribe" | "unsubscribe" | "ping", ...}')
    op = message["op"]
    if op == "ping":
        return Command("ping")
    if op == "refresh":
        token = message.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise ProtocolError(
                "bad_request", f"refresh needs a token (a JWT of at most {MAX_TOKEN_CHARS} characters)"
            )
        return Command("refresh", token=token)
    if op not in ("subscribe", "unsubscribe"):
        raise ProtocolError("unknown_op", f"unknown op {op[:50]!r}")
    channels = message.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        raise ProtocolError("bad_request", f"{op} needs a non-empty list of channel names")
    if len(channels) > MAX_CHANNELS_PER_MESSAGE:
        raise ProtocolError("bad_request", f"at most {MAX_CHANNELS_PER_MESSAGE} channels per message")
    unknown = [c for c in channels if not CHANNEL.match(c)]
    if unknown:
        raise ProtocolError("unknown_channel", f"unknown channel(s) {unknown}; channels: {CHANNEL_HELP}")
    since = message.get("since")
    if since is not None and op != "subscribe":
        raise ProtocolError("bad_request", '"since" goes with subscribe only')
    return Command(op, tuple(dict.fromkeys(channels)), None if since is None else parse_since(since))


MAX_POSITIONS = 1_000


def parse_since(since: Any) -> Since:
    """A subscribe's ``since``; :class:`ProtocolError` (``bad_request``) says what is wrong.

    ``positions`` maps each topic to the offsets of its partitions in partition order, as
    ``subscribed`` gives them: ``{"odds.window.1m": [41, 17, -1], ...}``."""
    if not isinstance(since, dict) or not isinstance(since.get("epoch"), str) or len(since["epoch"]) > 64:
        raise ProtocolError("bad_request", 'since must be {"epoch": "<from welcome>", "positions": {...}}')
    positions = since.get("positions")
    if not isinstance(positions, dict):
        raise ProtocolError(
            "bad_request", 'since.positions must be {"<topic>": [offset of partition 0, ...]}'
        )
    parsed: dict[Position, int] = {}
    for topic, offsets in positions.items():
        if not (
            isinstance(topic, str)
            and 0 < len(topic) <= 249
            and isinstance(offsets, list)
            and all(type(o) is int and -1 <= o < 2**63 for o in offsets)
        ):
            raise ProtocolError(
                "bad_request",
                f"since.positions[{json.dumps(topic)[:100]}] must be a list of offsets (integers >= -1), "
                f"one per partition; got {json.dumps(offsets)[:200]}",
            )
        parsed.update({(topic, partition): offset for partition, offset in enumerate(offsets)})
        if len(parsed) > MAX_POSITIONS:
            raise ProtocolError("bad_request", f"since.positions holds more than {MAX_POSITIONS} positions")
    return Since(since["epoch"], parsed)


def positions_message(positions: dict[Position, int]) -> dict[str, list[int]]:
    """Positions as ``subscribed`` gives them: per topic, the offsets in partition order."""
    topics: dict[str, dict[int, int]] = {}
    for (topic, partition), offset in positions.items():
        topics.setdefault(topic, {})[partition] = offset
    return {
        topic: [by_partition.get(p, -1) for p in range(max(by_partition) + 1)]
        for topic, by_partition in sorted(topics.items())
    }


def channels_of(event_type: str, record: dict[str, Any]) -> list[str]:
    """The channels an event is published on. A window of an extra spec (streams/specs.py)
    goes only to its entity's channel named for the spec: ``market:<id>@5m_every_1m``."""
    spec = record.get("spec")
    if spec and spec != "1m":
        if event_type in ("OddsWindowUpdated", "PriceWindowUpdated", "BetWindowUpdated"):
            return [f"market:{record['market_id']}@{spec}"]
        if event_type in ("ServiceWindowUpdated", "RouteWindowUpdated"):
            return [f"service:{record['service']}@{spec}"]
        return []
    if event_type == "OddsWindowUpdated":
        return ["markets", f"market:{record['market_id']}"]
    if event_type in ("PriceWindowUpdated", "BetWindowUpdated"):
        return [f"market:{record['market_id']}"]
    if event_type in ("ServiceWindowUpdated", "RouteWindowUpdated"):
        return ["services", f"service:{record['service']}"]
    if event_type in ("PredictionMade", "ValueSignalRaised"):
        return ["predictions", f"market:{record['market_id']}"]
    if event_type in ("ModelEvaluated", "ModelDriftDetected"):
        return ["models"]
    if event_type == "AlertChanged":
        return ["alerts", f"alerts:{record['rule']}"]
    return []


def event_message(
    channel: str, event_type: str, topic: str, partition: int, offset: int, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "type": "event",
        "channel": channel,
        "event_type": event_type,
        "position": {"topic": topic, "partition": partition, "offset": offset},
        "data": data,
    }


def event_frame(
    channel: str, event_type: str, position_json: str, data_json: str, snapshot: bool = False
) -> str:
    """The JSON text of :func:`event_message`, from parts encoded once per event (the data
    is the bulk of a frame; only the channel differs between an event's frames). A snapshot
    frame (a channel's state sent on subscribe) says ``"snapshot": true``."""
    tail = ', "snapshot": true}' if snapshot else "}"
    return (
        f'{{"type": "event", "channel": {json.dumps(channel)}, "event_type": {json.dumps(event_type)}, '
        f'"position": {position_json}, "data": {data_json}{tail}'
    )


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}
