"""Final window results -> rows of the *_windows_1m tables (and their copies per spec). Pure.

Each builder takes an event's record (as decoded, or as the worker's processor produced it,
so ``oddstream replay`` fills the same tables the same way) and returns the table's rows.
A result of an extra window spec (its ``spec`` field, streams/specs.py) goes to the same
tables named for the spec: ``bet_windows_1m`` becomes ``bet_windows_5m_every_1m``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from consumers.store.insight_rows import INSIGHT_COLUMNS, INSIGHT_ROWS
from streams.specs import EVENT_TYPE_OF_KIND, PRIMARY, WindowSpec

Row = tuple[Any, ...]


def _exact(r: dict[str, Any], name: str) -> Decimal:
    """Money field ``name`` as the exact decimal; from a v1 record (no ``name_exact``), its
    double rounded to the cent (the worker's doubles are cents / 100)."""
    exact: Decimal | None = r.get(f"{name}_exact")
    return exact if exact is not None else Decimal(repr(round(r[name], 2)))


def _market(r: dict[str, Any]) -> dict[str, list[Row]]:
    consensus = {c["selection_id"]: c for c in r.get("consensus", [])}
    windows = []
    for s in r["selections"]:
        c = consensus.get(s["selection_id"])
        windows.append(
            (
                r["market_id"], s["selection_id"], r["window_start"], r["window_end"], r["version"],
                s["changes"], s["open"], s["high"], s["low"], s["last"], s["implied_probability"],
                r["overround"], c and c["probability"], c and c["fair_price"], c["books"] if c else 0,
                c["steam"] if c else 0, r["window_id"],
            )
        )  # fmt: skip
    books = [
        (
            r["market_id"], b["bookmaker"], p["selection_id"], r["window_start"], r["window_end"],
            p["last"], p["implied_probability"], b["overround"], p["fair_probability"],
            p["shin_probability"], r["version"], r["window_id"],
        )
        for b in r.get("bookmakers", [])
        for p in b["prices"]
    ]  # fmt: skip
    return {"market_windows_1m": windows, "market_books_1m": books}


def _price(r: dict[str, Any]) -> dict[str, list[Row]]:
    row = (
        r["market_id"], r["selection_id"], r["bookmaker"], r["window_start"], r["window_end"],
        r["changes"], r["open"], r["high"], r["low"], r["last"], r["implied_probability"],
        r["velocity_pct_per_min"], r["open_time"], r["last_time"], r["version"], r["window_id"],
    )  # fmt: skip
    return {"price_windows_1m": [row]}


def _bets(r: dict[str, Any]) -> dict[str, list[Row]]:
    market = (
        r["bets"], _exact(r, "turnover"), r["average_stake"], _exact(r, "worst_case_liability"),
        r["cancelled"], _exact(r, "cancelled_stakes"), r["cashed_out"], _exact(r, "cash_out_paid"),
    )  # fmt: skip
    rows = [
        (
            r["market_id"], s["selection_id"], r["window_start"], r["window_end"], s["bets"],
            _exact(s, "stakes"), s["vwap"], _exact(s, "liability"), s["money_share"], s["cancelled"],
            _exact(s, "cancelled_stakes"), s["cashed_out"], _exact(s, "cash_out_paid"), *market,
            r["version"], r["window_id"],
        )
        for s in r["selections"]
    ]  # fmt: skip
    return {"bet_windows_1m": rows}


def _service(r: dict[str, Any]) -> dict[str, list[Row]]:
    row = (
        r["service"], r["window_start"], r["window_end"], r["calls"], r["errors"], r["error_rate"],
        r["heartbeats"], r["events_per_second"], r["max_heartbeat_gap_ms"], r["version"], r["window_id"],
    )  # fmt: skip
    return {"service_windows_1m": [row]}


def _route(r: dict[str, Any]) -> dict[str, list[Row]]:
    row = (
        r["service"], r["route"], r["window_start"], r["window_end"], r["calls"], r["errors"],
        r["error_rate"], r["latency_p50_ms"], r["latency_p95_ms"], r["latency_p99_ms"],
        r["latency_max_ms"], r["version"], r["window_id"],
    )  # fmt: skip
    return {"route_windows_1m": [row]}


def _user(r: dict[str, Any]) -> dict[str, list[Row]]:
    row = (
        r["user_id"], r["source_partition"], r["window_start"], r["window_end"], r["bets"],
        _exact(r, "staked"), r["settled"], r["won"], r["sum_t"], r["sum_tt"], r["sum_s"], r["sum_ts"],
        r["version"], r["window_id"],
    )  # fmt: skip
    return {"user_window_parts_1m": [row]}


FINAL_ROWS: dict[str, Callable[[dict[str, Any]], dict[str, list[Row]]]] = {
    "OddsWindowUpdated": _market,
    "PriceWindowUpdated": _price,
    "BetWindowUpdated": _bets,
    "ServiceWindowUpdated": _service,
    "RouteWindowUpdated": _route,
    "UserWindowUpdated": _user,
}

FINAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "market_windows_1m": (
        "market_id", "selection_id", "window_start", "window_end", "quotes", "changes", "open", "high",
        "low", "last", "implied_probability", "market_overround", "consensus_probability",
        "consensus_fair_price", "books", "steam", "window_id",
    ),
    "market_books_1m": (
        "market_id", "bookmaker", "selection_id", "window_start", "window_end", "last",
        "implied_probability", "overround", "fair_probability", "shin_probability", "version", "window_id",
    ),
    "price_windows_1m": (
        "market_id", "selection_id", "bookmaker", "window_start", "window_end", "changes", "open", "high",
        "low", "last", "implied_probability", "velocity_pct_per_min", "open_time", "last_time", "version",
        "window_id",
    ),
    "bet_windows_1m": (
        "market_id", "selection_id", "window_start", "window_end", "bets", "stakes", "vwap", "liability",
        "money_share", "cancelled", "cancelled_stakes", "cashed_out", "cash_out_paid", "market_bets",
        "market_turnover", "market_average_stake", "worst_case_liability", "market_cancelled",
        "market_cancelled_stakes", "market_cashed_out", "market_cash_out_paid", "version", "window_id",
    ),
    "service_windows_1m": (
        "service", "window_start", "window_end", "calls", "errors", "error_rate", "heartbeats",
        "events_per_second", "max_heartbeat_gap_ms", "version", "window_id",
    ),
    "route_windows_1m": (
        "service", "route", "window_start", "window_end", "calls", "errors", "error_rate",
        "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms", "version", "window_id",
    ),
    "user_window_parts_1m": (
        "user_id", "source_partition", "window_start", "window_end", "bets", "staked", "settled", "won",
        "sum_t", "sum_tt", "sum_s", "sum_ts", "version", "window_id",
    ),
}  # fmt: skip

# every table a derived event fills: the final windows, then predictions, metrics and alerts
DERIVED_COLUMNS: dict[str, tuple[str, ...]] = {**FINAL_COLUMNS, **INSIGHT_COLUMNS}

LATE_COLUMNS = (
    "origin_topic", "origin_partition", "origin_offset", "kind", "event_time", "watermark",
    "window_start", "window_end", "original",
)  # fmt: skip


# the window kind of each window event, and the tables its finals fill
KIND_OF_EVENT = {event_type: kind for kind, event_type in EVENT_TYPE_OF_KIND.items()}
TABLES_OF_KIND = {
    "market": ("market_windows_1m", "market_books_1m"),
    "price": ("price_windows_1m",),
    "bets": ("bet_windows_1m",),
    "service": ("service_windows_1m",),
    "route": ("route_windows_1m",),
    "user": ("user_window_parts_1m",),
}


def spec_table(table: str, spec: str) -> str:
    """The table of ``spec`` that copies the one-minute ``table``."""
    return table if spec == PRIMARY else f"{table.removesuffix('_1m')}_{spec}"


def spec_tables(specs: tuple[WindowSpec, ...]) -> dict[str, str]:
    """Every extra spec's table -> the one-minute table whose columns and engine it copies."""
    return {spec_table(t, s.name): t for s in specs for kind in s.kinds for t in TABLES_OF_KIND[kind]}


def base_table(table: str) -> str:
    """The one-minute table a spec's table copies (``bet_windows_5m_every_1m`` ->
    ``bet_windows_1m``); any other table is its own."""
    if table in DERIVED_COLUMNS:
        return table
    return next((base for base in FINAL_COLUMNS if table.startswith(base.removesuffix("1m"))), table)


def derived_columns(specs: tuple[WindowSpec, ...]) -> dict[str, tuple[str, ...]]:
    """DERIVED_COLUMNS with the spec tables of ``specs``."""
    return {**DERIVED_COLUMNS, **{t: FINAL_COLUMNS[base] for t, base in spec_tables(specs).items()}}


def final_rows(event_type: str, record: dict[str, Any]) -> dict[str, list[Row]]:
    """table -> rows of a final window result, a prediction, a model metric or an alert. A
    window of an extra spec fills that spec's tables; the caller checks the spec is one it runs."""
    build = FINAL_ROWS.get(event_type) or INSIGHT_ROWS[event_type]
    rows = build(record)
    spec = record.get("spec") or PRIMARY
    if spec == PRIMARY:
        return rows
    return {spec_table(table, spec): table_rows for table, table_rows in rows.items()}
