"""The latest state of every channel, for a new subscriber's snapshot. Pure.

A screen that subscribes to ``market:m1`` should be complete at once, not blank until the
market next moves. For each channel the gateway keeps the last event of each kind of thing
it shows: the latest window per market as it goes and its latest final (whose book carries
the de-vigged consensus and steam), bets, each selection's price per bookmaker, per service
and route, the latest prediction and value signal per selection,
the latest evaluation and drift per model, and the alerts that are firing (a resolved
alert leaves). An event replaces the one it supersedes only if it is not older (a window's
start, then its version), so a late final of the previous window does not hide the current
one.

Bounded: at most ``per_channel`` states per channel and ``channels`` channels, the least
recently changed going first. Records are kept as decoded and encoded only when a
snapshot is sent, so keeping costs no encoding for channels nobody watches.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

Key = tuple[Any, ...]


@dataclass(frozen=True)
class Held:
    event_type: str
    record: dict[str, Any]
    topic: str
    partition: int
    offset: int


def state_key(event_type: str, r: dict[str, Any]) -> Key | None:
    """What an event is the state of (``None``: not kept). Windows of different specs go to
    different channels, so the spec need not be part of the key."""
    if event_type == "OddsWindowUpdated":  # the latest window as it goes, and the latest final book
        return (event_type, r["market_id"], bool(r.get("final")))  # (de-vigged consensus is in finals)
    if event_type == "BetWindowUpdated":
        return (event_type, r["market_id"])
    if event_type == "PriceWindowUpdated":
        return (event_type, r["market_id"], r["selection_id"], r["bookmaker"])
    if event_type == "ServiceWindowUpdated":
        return (event_type, r["service"])
    if event_type == "RouteWindowUpdated":
        return (event_type, r["service"], r["route"])
    if event_type == "PredictionMade":
        return (event_type, r["market_id"], r["selection_id"], r["model"])
    if event_type == "ValueSignalRaised":
        return (event_type, r["market_id"], r["selection_id"], r["bookmaker"])
    if event_type in ("ModelEvaluated", "ModelDriftDetected"):
        return (event_type, r["model"], r["source_partition"])
    if event_type == "AlertChanged":
        return (event_type, r["fingerprint"])
    return None


def _order(record: dict[str, Any]) -> tuple[int, int]:
    return (record.get("window_start") or 0, record.get("version") or 0)


class Latest:
    def __init__(self, per_channel: int = 1_000, channels: int = 20_000) -> None:
        self.per_channel = per_channel
        self.max_channels = channels
        self._states: OrderedDict[str, OrderedDict[Key, Held]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def add(self, channels: list[str], held: Held) -> None:
        key = state_key(held.event_type, held.record)
        if key is None:
            return
        gone = held.event_type == "AlertChanged" and held.record.get("status") == "resolved"
        for channel in channels:
            states = self._states.get(channel)
            if states is None:
                if gone:
                    continue
                states = self._states[channel] = OrderedDict()
            self._states.move_to_end(channel)
            if gone:
                states.pop(key, None)
                if not states:
                    del self._states[channel]
                continue
            old = states.get(key)
            if old is not None and _order(held.record) < _order(old.record):
                continue  # older than what is shown (a late final of the previous window)
            states[key] = held
            states.move_to_end(key)
            if len(states) > self.per_channel:
                states.popitem(last=False)
        while len(self._states) > self.max_channels:
            self._states.popitem(last=False)

    def snapshot(self, channel: str) -> list[Held]:
        """The channel's states, oldest change first."""
        return list(self._states.get(channel, {}).values())
