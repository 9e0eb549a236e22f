"""The per-market odds window: open/high/low/last per selection over event time.

The state is a plain dict (it lives in a changelog-backed table) and folding is
idempotent: the state remembers the source offset it reflects, and an event at
or below it (a redelivery after a crash) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from streams.market import implied_probability, overround
from streams.windows import TumblingWindow


class SelectionState(TypedDict):
    open: float
    open_ms: int
    high: float
    low: float
    last: float
    last_ms: int
    changes: int


class WindowState(TypedDict):
    market_id: str
    window_start: int
    window_end: int
    version: int
    offset: int
    selections: dict[str, SelectionState]


@dataclass(frozen=True)
class Quote:
    """One OddsChanged, reduced to what the window needs."""

    market_id: str
    selection_id: str
    odds: float
    event_ms: int
    offset: int  # position in the source partition, for idempotent folding


class Outcome(TypedDict):
    """What folding one quote did: ``state`` to keep, and whether it was ``late``/a ``duplicate``."""

    state: WindowState | None
    late: bool
    duplicate: bool


def fold(state: WindowState | None, quote: Quote, window: TumblingWindow) -> Outcome:
    """Fold a quote into the market's current window.

    A quote for a later window starts a new one (the old one is finished). A
    quote for an earlier window than the current one is late and never merged.
    """
    if state is not None and quote.offset <= state["offset"]:
        return {"state": state, "late": False, "duplicate": True}
    start = window.start_of(quote.event_ms)
    if state is not None and start < state["window_start"]:
        advanced = dict(state, offset=quote.offset)
        return {"state": advanced, "late": True, "duplicate": False}  # type: ignore[typeddict-item]
    if state is None or start > state["window_start"]:
        state = {
            "market_id": quote.market_id,
            "window_start": start,
            "window_end": start + window.size_ms,
            "version": 0,
            "offset": -1,
            "selections": {},
        }
    selections = dict(state["selections"])
    previous = selections.get(quote.selection_id)
    if previous is None:
        current: SelectionState = {
            "open": quote.odds,
            "open_ms": quote.event_ms,
            "high": quote.odds,
            "low": quote.odds,
            "last": quote.odds,
            "last_ms": quote.event_ms,
            "changes": 1,
        }
    else:
        is_latest = quote.event_ms >= previous["last_ms"]
        is_earliest = quote.event_ms < previous["open_ms"]
        current = {
            "open": quote.odds if is_earliest else previous["open"],
            "open_ms": quote.event_ms if is_earliest else previous["open_ms"],
            "high": max(previous["high"], quote.odds),
            "low": min(previous["low"], quote.odds),
            "last": quote.odds if is_latest else previous["last"],
            "last_ms": quote.event_ms if is_latest else previous["last_ms"],
            "changes": previous["changes"] + 1,
        }
    selections[quote.selection_id] = current
    new_state: WindowState = {
        **state,
        "version": state["version"] + 1,
        "offset": quote.offset,
        "selections": selections,
    }
    return {"state": new_state, "late": False, "duplicate": False}


def window_result(state: WindowState) -> dict[str, Any]:
    """The OddsWindowUpdated fields (without envelope) for a window state."""
    selections = [
        {
            "selection_id": selection_id,
            "open": s["open"],
            "high": s["high"],
            "low": s["low"],
            "last": s["last"],
            "changes": s["changes"],
            "implied_probability": implied_probability(s["last"]),
        }
        for selection_id, s in sorted(state["selections"].items())
    ]
    lasts = [s["last"] for s in state["selections"].values()]
    return {
        "market_id": state["market_id"],
        "window_start": state["window_start"],
        "window_end": state["window_end"],
        "version": state["version"],
        "selections": selections,
        "overround": overround(lasts) if len(lasts) >= 2 else None,
    }
