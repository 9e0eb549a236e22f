"""The exactness oracle: every final window result recomputed in SQL from the raw event tables.

The raw tables keep each event's Kafka partition and offset, so the recomputation rebuilds
the watermark each event met (max event time of the events before it in its partition,
minus the delay) and classifies late events exactly as the engine must: late when its
window's end + grace is at or below that watermark. Late events are left out of every
window. Market-level figures (complete books, de-vig, consensus) are derived from the
recomputed per-bookmaker rows with the textbook formulas.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from streams.market import is_steam_move
from streams.processor import WindowConfig
from streams.specs import WindowSpec

Query = Callable[[str], list[list[Any]]]
REL = 1e-9


_PLACED = (
    "SELECT kafka_partition p, kafka_offset o, toUnixTimestamp64Milli(event_time) t, bet_id, market_id, "
    "selection_id, stake, odds, 'placed' kind, toDecimal64(0, 2) paid FROM bet_placed FINAL"
)  # money stays Decimal(18, 2): its sums are exact
# a bet's payout if it wins: stake times the odds as they read, to the cent, half to even
PAYOUT = "roundBankers(toDecimal128(stake, 2) * toDecimal128(toString(odds), 12), 2)"
_CLOSES = " UNION ALL ".join(
    "SELECT kafka_partition p, kafka_offset o, toUnixTimestamp64Milli(event_time) t, bet_id, "
    f"'{kind}' kind, {paid} paid FROM {table} FINAL"
    for table, kind, paid in (
        ("bet_settled", "settled", "toDecimal64(0, 2)"), ("bet_cancelled", "cancelled", "toDecimal64(0, 2)"),
        ("cash_out", "cashed_out", "amount"),
    )
)  # fmt: skip
# the first close of each bet in its partition's offset order (a bet and its closes share a market)
_FIRST_CLOSES = (
    "SELECT bet_id, first.1 o, first.2 p, first.3 t, first.4 kind, first.5 paid FROM "
    f"(SELECT bet_id, min((o, p, t, kind, paid)) first FROM ({_CLOSES}) GROUP BY bet_id)"
)


def _events(stream: str) -> str:
    """(kafka_partition, kafka_offset, t ms, ...) of the events one engine sees."""
    return _STREAMS[stream]


_STREAMS = {
    "odds": "SELECT kafka_partition p, kafka_offset o, toUnixTimestamp64Milli(event_time) t, market_id, "
    "selection_id, bookmaker, odds, toString(event_id) id FROM odds_changed FINAL",
    "bets": f"SELECT p, o, t, market_id, selection_id, stake, odds, kind, paid FROM ({_PLACED}) "
    "UNION ALL "
    # a bet's first close, if a cancellation or cash-out: at the close when it follows its bet,
    # else together with its bet (the close was remembered until the bet arrived)
    "SELECT if(c.o > b.o, c.p, b.p), if(c.o > b.o, c.o, b.o), if(c.o > b.o, c.t, b.t), b.market_id, "
    f"b.selection_id, b.stake, b.odds, c.kind, c.paid FROM ({_PLACED}) b "
    f"INNER JOIN ({_FIRST_CLOSES}) c ON b.bet_id = c.bet_id WHERE c.kind != 'settled'",
    "service": "SELECT kafka_partition p, kafka_offset o, toUnixTimestamp64Milli(event_time) t, service, "
    "route, status, latency_ms, 1 call FROM api_call_recorded FINAL UNION ALL "
    "SELECT kafka_partition, kafka_offset, toUnixTimestamp64Milli(event_time), service, '', 0, 0.0, 0 "
    "FROM service_heartbeat FINAL",
    "route": "SELECT kafka_partition p, kafka_offset o, toUnixTimestamp64Milli(event_time) t, service, "
    "route, status, latency_ms FROM api_call_recorded FINAL",
}


def _classified(stream: str, c: WindowConfig, spec: WindowSpec | None = None) -> str:
    """The stream's events with their window start ``w`` and ``late`` flag: one row per
    (event, window), so an event of a hopping spec has a row for each window that holds it,
    late for some of them perhaps (``spec`` None: the primary one-minute tumbling windows)."""
    size = c.size_ms if spec is None else spec.size_ms
    hop = size if spec is None or spec.shape == "tumbling" else spec.advance_ms
    assert spec is None or spec.shape in ("tumbling", "hopping"), "sliding: see sliding_windows"
    starts = f"arrayMap(i -> intDiv(t, {hop}) * {hop} - i * {hop}, range({size // hop + 1}))"
    seen = "max(t) OVER (PARTITION BY p ORDER BY o ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    return (
        f"SELECT *, arrayJoin(arrayFilter(s -> s > t - {size}, {starts})) w, "
        f"(seen > 0 AND w + {size} + {c.grace_ms} <= seen - {c.delay_ms}) late "
        f"FROM (SELECT *, {seen} seen FROM ({_events(stream)}))"
    )


# user windows: see user_windows (their watermark is not one partition's)
STREAM_OF_KIND = {"price": "odds", "market": "odds", "bets": "bets", "service": "service", "route": "route"}


def late_events(
    query: Query, c: WindowConfig, spec: WindowSpec | None = None
) -> dict[str, set[tuple[int, int]]]:
    """kind (``<kind>@<spec>`` for an extra spec) -> (partition, offset) of the events that
    missed a window beyond the grace. Sliding specs: see sliding_price_windows."""
    out: dict[str, set[tuple[int, int]]] = {}
    kinds = tuple(STREAM_OF_KIND) if spec is None else spec.kinds
    for kind in kinds:
        classified = _classified(STREAM_OF_KIND[kind], c, spec)
        rows = {(int(p), int(o)) for p, o in query(f"SELECT DISTINCT p, o FROM ({classified}) WHERE late")}
        out[kind if spec is None else f"{kind}@{spec.name}"] = rows
    return out


def price_windows(
    query: Query, c: WindowConfig, spec: WindowSpec | None = None
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = query(
        f"SELECT market_id, selection_id, bookmaker, w, count(), argMin(odds, (t, id)), max(odds), "
        f"min(odds), argMax(odds, (t, id)), min(t), max(t), min((t, id)), max((t, id)) "
        f"FROM ({_classified('odds', c, spec)}) WHERE NOT late GROUP BY market_id, selection_id, bookmaker, w"
    )
    # (changes, open, high, low, last, open ms, last ms, first stamp, last stamp)
    return {
        (m, s, b, int(w)): (int(n), o, h, lo, la, int(ot), int(lt), tuple(fs), tuple(ls))
        for m, s, b, w, n, o, h, lo, la, ot, lt, fs, ls in rows
    }


def market_windows(prices: dict[tuple[Any, ...], tuple[Any, ...]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """(market, selection, window) -> (quotes, changes, open, high, low, last, market overround,
    consensus probability, books, steam), from the per-bookmaker rows."""
    by_market: dict[tuple[str, int], dict[tuple[str, str], tuple[Any, ...]]] = defaultdict(dict)
    for (m, s, b, w), row in prices.items():
        by_market[(m, w)][(b, s)] = row
    out = {}
    for (m, w), book in by_market.items():
        selections = sorted({s for _, s in book})
        quotes = sum(r[0] for r in book.values())
        per_bookmaker: dict[str, dict[str, float]] = defaultdict(dict)
        for (b, s), r in book.items():
            per_bookmaker[b][s] = r[4]
        complete = (
            {b: p for b, p in per_bookmaker.items() if set(p) == set(selections)}
            if len(selections) > 1
            else {}
        )
        out.update(_market_rows(m, w, selections, book, complete, quotes))
    return out


Rows = dict[tuple[Any, ...], tuple[Any, ...]]


def _market_rows(
    m: str,
    w: int,
    selections: list[str],
    book: dict[tuple[str, str], tuple[Any, ...]],
    complete: dict[str, dict[str, float]],
    quotes: int,
) -> Rows:
    fair_sums: dict[str, float] = defaultdict(float)
    for prices in complete.values():
        total = sum(1.0 / prices[s] for s in selections)
        for s in selections:
            fair_sums[s] += (1.0 / prices[s]) / total
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    across: dict[str, tuple[int, float, float, float, float]] = {}
    for s in selections:
        entries = [r for (_, sel), r in book.items() if sel == s]
        across[s] = (
            sum(r[0] for r in entries),
            min(entries, key=lambda r: r[7])[1],  # by (event time, event id), across bookmakers
            max(r[2] for r in entries),
            min(r[3] for r in entries),
            max(entries, key=lambda r: r[8])[4],
        )
    overround = sum(1.0 / a[4] for a in across.values()) - 1.0 if len(across) > 1 else None
    for s in selections:
        moves = {b: (r[4] / r[1] - 1.0) * 100.0 for (b, sel), r in book.items() if sel == s}
        probability = fair_sums[s] / len(complete) if complete else None
        rows[(m, s, w)] = (quotes, *across[s], overround, probability, len(complete),
                           is_steam_move(moves) if complete else 0)  # fmt: skip
    return rows


COUNTS = (0, 5, 7, 9, 11, 13)  # the counts among a bet window's figures
MONEY = (1, 3, 6, 8, 10, 12, 14)  # and the money (exact decimals)


def bet_windows(
    query: Query, c: WindowConfig, spec: WindowSpec | None = None
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """(market, selection, window) -> (bets, net stakes, vwap, liability, money share, cancelled,
    cancelled stakes, cashed out, paid, market bets, market turnover, market cancelled, market
    cancelled stakes, market cashed out, market paid). Money in exact decimals: each bet's
    payout to the cent, sums of Decimal(18, 2)."""
    placed, cancelled, cashed = "kind = 'placed'", "kind = 'cancelled'", "kind = 'cashed_out'"
    market = "OVER (PARTITION BY market_id, w)"
    sums = (
        f"SELECT market_id, selection_id, w, countIf({placed}) n, sumIf(stake, {placed}) st, "
        f"sumIf(toFloat64(stake) * odds, {placed}) stake_odds, sumIf({PAYOUT}, {placed}) payout, "
        f"countIf({cancelled}) nc, sumIf(stake, {cancelled}) cst, sumIf({PAYOUT}, {cancelled}) cpayout, "
        f"countIf({cashed}) nx, sumIf({PAYOUT}, {cashed}) xpayout, sumIf(paid, {cashed}) xpaid, "
        f"sum(n) {market} m_n, sum(st) {market} m_st, sum(nc) {market} m_nc, sum(cst) {market} m_cst, "
        f"sum(nx) {market} m_nx, sum(xpaid) {market} m_paid "
        f"FROM ({_classified('bets', c, spec)}) WHERE NOT late GROUP BY market_id, selection_id, w"
    )
    rows = query(
        "SELECT market_id, selection_id, w, n, st - cst, if(st = 0, nan, stake_odds / toFloat64(st)), "
        "payout - cpayout - xpayout - (m_st - m_cst - m_paid), "
        "if(m_st = m_cst, 0.0, toFloat64(st - cst) / toFloat64(m_st - m_cst)), nc, cst, nx, xpaid, m_n, "
        f"m_st - m_cst, m_nc, m_cst, m_nx, m_paid FROM ({sums})"
    )
    return {
        (r[0], r[1], int(r[2])): tuple(
            int(v) if i in COUNTS else Decimal(v) if i in MONEY else v for i, v in enumerate(r[3:])
        )
        for r in rows
    }


def service_windows(
    query: Query, c: WindowConfig, spec: WindowSpec | None = None
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = query(
        f"SELECT service, w, sum(call), sumIf(1, call = 1 AND status >= 500), sum(1 - call), "
        f"arrayReduce('max', arrayDifference(arraySort(groupArrayIf(t, call = 0)))) "
        f"FROM ({_classified('service', c, spec)}) WHERE NOT late GROUP BY service, w"
    )
    return {
        (s, int(w)): (int(calls), int(errors), int(beats), int(gap or 0))
        for s, w, calls, errors, beats, gap in rows
    }


def route_windows(
    query: Query, c: WindowConfig, spec: WindowSpec | None = None
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = query(
        f"SELECT service, route, w, count(), countIf(status >= 500), arraySort(groupArray(latency_ms)) l "
        f"FROM ({_classified('route', c, spec)}) WHERE NOT late GROUP BY service, route, w"
    )

    def rank(latencies: list[float], q: int) -> float:
        return latencies[max(1, math.ceil(q / 100.0 * len(latencies))) - 1]

    return {
        (s, r, int(w)): (int(n), int(e), rank(lat, 50), rank(lat, 95), rank(lat, 99), lat[-1])
        for s, r, w, n, e, lat in rows
    }


@dataclass
class UserStage:
    """What the worker's user stage must have computed from bets.by-user (``user_bets``)."""

    windows: dict[tuple[Any, ...], tuple[Any, ...]]  # (user, partition, window) -> its figures
    late: set[tuple[int, int]]  # (partition, offset) of bets.by-user records that missed a window
    folded: list[tuple[int, int, str]]  # (bets partition, offset, action) of every record folded


def user_windows(query: Query, c: WindowConfig) -> UserStage:
    """The user windows, by their definition, from the bets.by-user log as written.

    Per partition of it, in offset order: a record whose source offset is not above every
    earlier one of its bets partition is a re-send (dropped); the watermark is the slowest
    bets partition's clock minus the delay, each bets partition's clock being the highest
    ``source_clock`` of its records and clock marks, an idle one not waited for until it
    sends a new record or its clock moves, one never heard of waited for (all
    ``c.source_partitions`` are). A bet whose minute ended at least the grace before the
    watermark it met is late."""
    rows = query(
        "SELECT kafka_partition, toUnixTimestamp64Milli(event_time), user_id, action, stake, won, "
        "source_partition, source_offset, source_clock, idle, kafka_offset FROM user_bets FINAL "
        "ORDER BY kafka_partition, kafka_offset"
    )
    size, never = c.size_ms, -(2**62)
    sums: dict[tuple[Any, ...], list[Any]] = {}
    late: set[tuple[int, int]] = set()
    folded: list[tuple[int, int, str]] = []
    state: dict[int, tuple[dict[int, int], dict[int, int], dict[int, int], list[int]]] = {}
    for p, t, user, action, stake, won, s, so, clock, idle, o in rows:
        seen, clocks, idle_at, watermark = state.setdefault(int(p), ({}, {}, {}, [never]))
        fresh = False
        if action != "CLOCK":
            if so <= seen.get(s, -1):
                continue
            seen[s] = so
            folded.append((int(s), int(so), action))
            fresh, idle = True, False
            w = t - t % size
            if w + size + c.grace_ms <= watermark[0]:
                late.add((int(p), int(o)))
            else:
                row = sums.setdefault((user, int(p), int(w)), [0, Decimal(0), 0, 0, 0.0, 0.0, 0.0, 0.0])
                rel = float(t % size)
                if action == "PLACED":
                    row[0] += 1
                    row[1] += Decimal(stake)
                    row[4:] = [
                        row[4] + rel,
                        row[5] + rel * rel,
                        row[6] + float(stake),
                        row[7] + rel * float(stake),
                    ]
                else:
                    row[2] += 1
                    row[3] += int(bool(won))
        if clock > clocks.get(s, never):
            clocks[s] = clock
        if idle and clock >= clocks[s]:
            idle_at[s] = clock
        elif s in idle_at and (fresh or clock > idle_at[s]):
            del idle_at[s]
        sources = set(range(c.source_partitions)) | set(clocks)
        waiting = [clocks.get(x, never) for x in sources if x not in idle_at]
        slowest = min(waiting) if waiting else max(clocks.values())
        if slowest != never:
            watermark[0] = max(watermark[0], slowest - c.delay_ms)
    return UserStage({k: tuple(v) for k, v in sums.items()}, late, folded)


def close(a: Any, b: Any, scale: float = 0.0) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL, abs_tol=REL * scale)
    return bool(a == b)


def differences(name: str, expected: dict[Any, tuple[Any, ...]], actual: dict[Any, tuple[Any, ...]],
                scales: tuple[float, ...] = ()) -> list[str]:  # fmt: skip
    """Human-readable mismatches between two keyed row sets (empty: equal)."""
    problems = []
    for key in sorted(set(expected) | set(actual), key=str):
        e, a = expected.get(key), actual.get(key)
        if e is None or a is None:
            problems.append(f"{name} {key}: expected {e}, stored {a}")
            continue
        scale = scales[0] if scales else 0.0
        if len(e) != len(a) or not all(close(x, y, scale) for x, y in zip(e, a, strict=True)):
            problems.append(f"{name} {key}: expected {e}, stored {a}")
    return problems[:20]


def sliding_windows(
    events: list[tuple[int, Any]], size_ms: int, delay_ms: int, grace_ms: int
) -> tuple[dict[tuple[Any, int, int], list[int]], set[int]]:
    """Sliding windows of one partition by their definition, sharing no code with the engine.

    ``events`` are (event time, key) in the partition's offset order. Returns the windows,
    ``(key, start, end) -> indices of the events in them``, and the indices of late events.
    Naive and quadratic on purpose. The rules:

    * the watermark an event meets is the newest event time before it minus the delay;
    * an event's own window is ``[t - size + 1, t + 1)``; it exists if the event is not late
      for it (end + grace above the watermark), created by the first such event;
    * an event is late if its own window is closed; it *joins* something if it is not late
      or a window of its key that exists when it arrives and is still open holds it;
    * a window holds every event of its key in its range that joins something and arrives
      before the window closes (the watermark reaching end + grace), before its creation
      included (those were buffered).
    """
    newest: int | None = None
    marks = []
    for t, _ in events:
        marks.append(-(2**62) if newest is None else newest - delay_ms)
        newest = t if newest is None else max(newest, t)
    created: dict[tuple[Any, int], int] = {}  # (key, end) -> index of the event that opened it
    late = set()
    for i, (t, key) in enumerate(events):
        if t + 1 + grace_ms > marks[i]:
            created.setdefault((key, t + 1), i)
        else:
            late.add(i)
    by_key: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    for (key, end), opener in created.items():
        by_key[key].append((end, opener))
    joined = set()
    for i, (t, key) in enumerate(events):
        if i not in late or any(
            opener < i and t < end <= t + size_ms and end + grace_ms > marks[i] for end, opener in by_key[key]
        ):
            joined.add(i)
    of_key: dict[Any, list[int]] = defaultdict(list)
    for i, (_, key) in enumerate(events):
        of_key[key].append(i)
    windows: dict[tuple[Any, int, int], list[int]] = {}
    for (key, end), _ in sorted(created.items(), key=lambda kv: kv[1]):
        windows[(key, end - size_ms, end)] = [
            i
            for i in of_key[key]
            if end - size_ms <= events[i][0] < end and i in joined and marks[i] < end + grace_ms
        ]
    return windows, late


def sliding_price_windows(
    query: Query, c: WindowConfig, spec: WindowSpec
) -> tuple[Rows, set[tuple[int, int]]]:
    """A sliding spec's price windows, ``(market, selection, bookmaker, start) -> (changes,
    open, high, low, last, open ms, last ms)``, and its late events' (partition, offset), by
    :func:`sliding_windows` over the raw quotes of each partition in offset order."""
    quotes = query(
        "SELECT kafka_partition, kafka_offset, toUnixTimestamp64Milli(event_time), market_id, selection_id, "
        "bookmaker, odds, toString(event_id) FROM odds_changed FINAL ORDER BY kafka_partition, kafka_offset"
    )
    by_partition: dict[int, list[list[Any]]] = defaultdict(list)
    for row in quotes:
        by_partition[int(row[0])].append(row)
    out: Rows = {}
    late: set[tuple[int, int]] = set()
    for partition, rows in by_partition.items():
        events = [(int(r[2]), (r[3], r[4], r[5])) for r in rows]
        windows, missed = sliding_windows(events, spec.size_ms, c.delay_ms, c.grace_ms)
        late |= {(partition, int(rows[i][1])) for i in missed}
        for (key, start, _), members in windows.items():
            stamped = sorted(((int(rows[i][2]), rows[i][7]), rows[i][6]) for i in members)
            odds = [o for _, o in stamped]
            out[(*key, start)] = (
                len(members), stamped[0][1], max(odds), min(odds), stamped[-1][1], stamped[0][0][0],
                stamped[-1][0][0],
            )  # fmt: skip
    return out, late
