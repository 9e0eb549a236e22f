"""Acceptance: final window results in ClickHouse equal a SQL recomputation from the raw events,
for a seeded simulation of 100k events with out-of-order and late events, uninterrupted and
with the worker SIGKILLed three times at random points."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from consumers.store.window_rows import TABLES_OF_KIND, spec_table
from consumers.worker.replay import compared_tables
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings
from oddstream.simulator.run import run_simulation
from schemas.topics import Topics
from streams.specs import PRIMARY, WindowSpec, engine_name
from tests.integration import window_oracle as oracle
from tests.integration.kafka_read import group_lag
from tests.integration.roles import RestartingRole, Role, environment, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]
EVENTS = 100_000
KINDS = ("price", "market", "bets", "service", "route", "user")
TABLE_OF_KIND = {kind: tables[0] for kind, tables in TABLES_OF_KIND.items()}
RAW_TABLES = (
    "odds_changed",
    "bet_placed",
    "bet_settled",
    "bet_cancelled",
    "cash_out",
    "market_status_changed",
    "market_resulted",
    "service_heartbeat",
    "api_call_recorded",
    "user_activity",
)


def sql(settings: Settings) -> Callable[[str], list[list[Any]]]:
    def query(text: str) -> list[list[Any]]:
        response = httpx.post(f"{settings.sql_endpoint}/sql", content=text, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()["rows"]  # type: ignore[no-any-return]

    return query


def analytics_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"window_idle_timeout_ms": 3_000, "worker_checkpoint_interval_s": 0.5})


def simulate(settings: Settings, events: int = EVENTS) -> None:
    """100k events over ~8 minutes of event time ending minutes ago; 3 % delivered up to 90 s late."""
    span_ms = int(events / settings.simulator_rate * 1000)
    start = int(time.time() * 1000) - span_ms - 180_000
    sent = run_simulation(
        settings,
        events=events,
        realtime=False,
        start_ms=start,
        show_progress=False,
        out_of_order=0.03,
        max_delay_ms=90_000,
        ground_truth=settings.data_dir / "truth.jsonl",
    )
    assert sent == events


def stored_kind(query: Callable[[str], list[list[Any]]], kind: str, spec: str = PRIMARY) -> dict[Any, Any]:
    """The final windows of one kind in one spec's table, keyed as the oracle keys them."""
    ms = "toUnixTimestamp64Milli"
    table = spec_table(TABLE_OF_KIND[kind], spec)
    if kind == "price":
        rows = query(
            f"SELECT market_id, selection_id, bookmaker, {ms}(window_start), changes, open, high, low, last, "
            f"{ms}(open_time), {ms}(last_time) FROM {table} FINAL"
        )
        return {tuple(r[:4]): tuple(r[4:]) for r in rows}
    if kind == "market":
        rows = query(
            f"SELECT market_id, selection_id, {ms}(window_start), quotes, changes, open, high, low, last, "
            f"market_overround, consensus_probability, books, steam FROM {table} FINAL"
        )
        return {tuple(r[:3]): tuple(r[3:]) for r in rows}
    if kind == "bets":
        rows = query(
            f"SELECT market_id, selection_id, {ms}(window_start), bets, stakes, vwap, liability, "
            "money_share, "
            "cancelled, cancelled_stakes, cashed_out, cash_out_paid, market_bets, market_turnover, "
            "market_cancelled, market_cancelled_stakes, market_cashed_out, market_cash_out_paid "
            f"FROM {table} FINAL"
        )
        return {
            tuple(r[:3]): tuple(Decimal(v) if i in oracle.MONEY else v for i, v in enumerate(r[3:]))
            for r in rows
        }
    if kind == "service":
        rows = query(
            f"SELECT service, {ms}(window_start), calls, errors, heartbeats, max_heartbeat_gap_ms "
            f"FROM {table} FINAL"
        )
        return {tuple(r[:2]): tuple(r[2:]) for r in rows}
    if kind == "route":
        rows = query(
            f"SELECT service, route, {ms}(window_start), calls, errors, latency_p50_ms, latency_p95_ms, "
            f"latency_p99_ms, latency_max_ms FROM {table} FINAL"
        )
        return {tuple(r[:3]): tuple(r[3:]) for r in rows}
    rows = query(
        f"SELECT user_id, source_partition, {ms}(window_start), bets, staked, settled, won, sum_t, sum_tt, "
        f"sum_s, sum_ts FROM {table} FINAL"
    )
    return {tuple(r[:3]): (r[3], Decimal(r[4]), *r[5:]) for r in rows}


def stored(query: Callable[[str], list[list[Any]]], specs: tuple[WindowSpec, ...]) -> dict[str, Any]:
    """What the store holds: each kind of each spec (``<kind>@<spec>``) and the late events."""
    out: dict[str, Any] = {kind: stored_kind(query, kind) for kind in KINDS}
    for spec in specs:
        for kind in spec.kinds:
            out[engine_name(kind, spec.name)] = stored_kind(query, kind, spec.name)
    late: dict[str, set[tuple[int, int]]] = {}
    for kind, p, o in query("SELECT kind, origin_partition, origin_offset FROM late_events FINAL"):
        late.setdefault(kind, set()).add((int(p), int(o)))
    out["late"] = late
    return out


def expected(query: Callable[[str], list[list[Any]]], settings: Settings) -> dict[str, Any]:
    """The oracle's windows for every kind of every spec, and the late events of each."""
    c = settings.window_config()
    prices = oracle.price_windows(query, c)
    want: dict[str, Any] = {
        "price": {k: v[:7] for k, v in prices.items()},
        "market": oracle.market_windows(prices),
        "bets": oracle.bet_windows(query, c),
        "service": oracle.service_windows(query, c),
        "route": oracle.route_windows(query, c),
        "late": oracle.late_events(query, c),
    }
    users = oracle.user_windows(query, c)
    want["user"], want["late"]["user"] = users.windows, users.late
    want["folded"] = users.folded  # what the user stage folded: checked in check_views
    for spec in c.specs:
        if spec.shape == "sliding":  # prices only (streams/specs.py)
            want[engine_name("price", spec.name)], late = oracle.sliding_price_windows(query, c, spec)
            want["late"][engine_name("price", spec.name)] = late
            continue
        want["late"].update(oracle.late_events(query, c, spec))
        spec_prices = oracle.price_windows(query, c, spec) if {"price", "market"} & set(spec.kinds) else {}
        for kind in spec.kinds:
            want[engine_name(kind, spec.name)] = (
                {k: v[:7] for k, v in spec_prices.items()} if kind == "price"
                else oracle.market_windows(spec_prices) if kind == "market"
                else oracle.bet_windows(query, c, spec) if kind == "bets"
                else oracle.service_windows(query, c, spec) if kind == "service"
                else oracle.route_windows(query, c, spec)
            )  # fmt: skip
    return want


def mismatches(
    want: dict[str, Any], got: dict[str, Any], due: Callable[[str, Any], bool] | None = None
) -> list[str]:
    """Every difference between the oracle and the store. With ``due``, a window the oracle
    has but the store lacks counts only if ``due(kind, key)``: a window whose end the clock
    has not passed yet (a live simulation's last 5-minute windows) is not final yet."""
    problems = []
    for kind in want:
        if kind not in ("late", "folded"):
            expected = want[kind]
            if due is not None:
                expected = {k: v for k, v in expected.items() if k in got[kind] or due(kind, k)}
            problems += oracle.differences(kind, expected, got[kind])
    for kind, late in want["late"].items():
        if late != got["late"].get(kind, set()):
            problems.append(f"late {kind}: expected {len(late)}, stored {len(got['late'].get(kind, set()))}")
    return problems


def due_by_clock(settings: Settings, margin_ms: int = 15_000) -> Callable[[str, Any], bool]:
    """Whether a window (keyed with its start last) must have its final by now: its end plus
    the grace has passed the clock minus the delay (where a quiet partition's idle mark is,
    streams/engine.py) with the idle timeout and ``margin_ms`` to spare."""
    c = settings.window_config()
    size = {kind: c.size_ms for kind in KINDS} | {
        engine_name(kind, s.name): s.size_ms for s in c.specs for kind in s.kinds
    }
    now = int(time.time() * 1000)
    lag = c.grace_ms + c.delay_ms + c.idle_timeout_ms + margin_ms

    def due(kind: str, key: Any) -> bool:
        return int(key[-1]) + size[kind] + lag <= now

    return due


def check_exact(settings: Settings, roles: list[Role], events: int = EVENTS) -> dict[str, Any]:
    """Wait until the worker is done, then require stored == recomputed; return the oracle."""
    query = sql(settings)
    topics = Topics(settings.topic_prefix)
    counted = " + ".join(f"(SELECT count() FROM {t} FINAL)" for t in RAW_TABLES)
    wait_for("raw events in ClickHouse", lambda: query(f"SELECT {counted}")[0][0] == events, 300, roles)
    sources = [topics.odds, topics.bets, topics.name("system")]
    wait_for(
        "the worker to catch up",
        lambda: group_lag(settings.bootstrap, settings.worker_id, sources) == 0,
        600,
        roles,
    )
    want = expected(query, settings)
    assert sum(len(v) for v in want["late"].values()) > 0, "the simulation produced no late events"
    deadline = time.monotonic() + 180
    specs = settings.specs()
    problems = mismatches(want, stored(query, specs), due_by_clock(settings))
    while problems and time.monotonic() < deadline:
        time.sleep(2)
        problems = mismatches(want, stored(query, specs), due_by_clock(settings))
    assert problems == [], "\n".join(problems)
    return want


def test_final_windows_equal_a_recomputation_from_the_raw_events(settings: Settings) -> None:
    settings = analytics_settings(settings)
    ensure_topics(settings)
    roles = [Role(settings, "store"), RestartingRole(settings, "worker")]
    try:
        simulate(settings)
        want = check_exact(settings, roles)
        windows = sum(len(rows) for kind, rows in want.items() if kind != "late")
        for spec in settings.specs():  # every default spec computed something
            assert all(want[engine_name(kind, spec.name)] for kind in spec.kinds), spec
        late = {k: len(v) for k, v in want["late"].items()}
        cancelled, cashed_out = (sum(row[i] for row in want["bets"].values()) for i in (5, 7))
        assert cancelled > 0 and cashed_out > 0, "the simulation cancelled or cashed out no bet"
        print(f"\n{windows} final windows exact ({cancelled} bets cancelled, {cashed_out} cashed out in "
              f"bet windows); late events per kind {late}")  # fmt: skip
        check_views(sql(settings), want, settings.window_size_ms)

        # replay determinism: twice from offset 0 into fresh namespaces, equal to live and to each other
        first, second = run_replay(settings, "first"), run_replay(settings, "second")
        print(first)
        assert digest_lines(first) == digest_lines(second) and len(digest_lines(first)) == len(
            compared_tables(settings.specs())
        )
        for report in (first, second):
            assert "the replay equals the live tables" in report
            compared = [line for line in report.splitlines() if "only replayed" in line]
            assert len(compared) == len(compared_tables(settings.specs())) and all(
                "0 differ, 0 only live, 0 only replayed" in c for c in compared
            )
    finally:
        for role in reversed(roles):
            role.stop()


def check_views(query: Callable[[str], list[list[Any]]], want: dict[str, Any], size_ms: int) -> None:
    """bets.by-user holds every bet placed and settled exactly once (re-sends aside); one
    user has one row per window; user_windows_1m reads it; bet_clv matches a recomputation."""
    repartitioned = want["folded"]
    sources = query(
        "SELECT kafka_partition, kafka_offset, 'PLACED' FROM bet_placed FINAL UNION ALL SELECT "
        "kafka_partition, kafka_offset, 'SETTLED' FROM bet_settled FINAL WHERE result != 'VOID'"
    )
    assert len(repartitioned) == len(sources) > 0
    assert {tuple(r) for r in repartitioned} == {tuple(r) for r in sources}
    merged: dict[tuple[str, int], list[Any]] = {}
    for (user, _, w), partial in want["user"].items():
        sums = merged.setdefault((user, w), [0, Decimal(0), *[0.0] * 6])
        for i, value in enumerate(partial):
            sums[i] += value
    assert len(merged) == len(want["user"])  # one row per user and window: a user is in one partition
    view = query(
        "SELECT user_id, toUnixTimestamp64Milli(window_start), bets, staked, settled, won, win_rate, "
        "stake_trend_per_min, bet_rate_per_min FROM user_windows_1m"
    )
    assert len(view) == len(merged) > 0
    for user, w, bets, staked, settled, won, win_rate, trend, rate in view:
        n, st, se, wo, t, tt, s, ts = merged[(user, int(w))]
        assert (bets, settled, won, Decimal(staked)) == (n, se, wo, st)  # money: exact
        assert win_rate == (pytest.approx(wo / se) if se else None)
        assert rate == pytest.approx(n * 60_000 / size_ms)
        denominator = n * tt - t * t
        expected_trend = (n * ts - t * s) / denominator * 60_000 if n >= 2 and denominator > 0 else 0.0
        assert trend == pytest.approx(expected_trend, rel=1e-6, abs=1e-6)

    closed = "SELECT market_id, min(toUnixTimestamp64Milli(event_time)) FROM market_status_changed FINAL "
    closes = dict(query(closed + "WHERE status = 'CLOSED' GROUP BY market_id"))
    last: dict[tuple[str, str, str], tuple[tuple[int, str], float]] = {}
    quotes = query("SELECT market_id, selection_id, bookmaker, toUnixTimestamp64Milli(event_time), "
                   "toString(event_id), odds FROM odds_changed FINAL")  # fmt: skip
    for market, selection, bookmaker, t, event_id, odds in quotes:
        if market in closes and int(t) <= int(closes[market]):
            key, stamp = (market, selection, bookmaker), (int(t), event_id)
            if key not in last or stamp > last[key][0]:
                last[key] = (stamp, odds)
    closing: dict[tuple[str, str], float] = {}
    for (market, selection, _), (_, odds) in last.items():
        closing[(market, selection)] = max(closing.get((market, selection), 0.0), odds)
    bets = query("SELECT bet_id, market_id, selection_id, odds FROM bet_placed FINAL")
    settled = {b for (b,) in query("SELECT bet_id FROM bet_settled FINAL")}
    expected_clv = {b: o / closing[(m, s)] - 1 for b, m, s, o in bets if (m, s) in closing and b in settled}
    stored_clv = dict(query("SELECT bet_id, clv FROM bet_clv"))
    assert set(stored_clv) == set(expected_clv) and expected_clv
    assert all(oracle.close(stored_clv[b], v, 1.0) for b, v in expected_clv.items())


def run_replay(settings: Settings, name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "oddstream", "replay", "--name", name, "--no-progress"],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def digest_lines(report: str) -> list[str]:
    return [
        line.split("digest")[0].split()[0] + line.split("digest")[1]
        for line in report.splitlines()
        if "digest" in line
    ]


def restores(worker: Role) -> int:
    text = worker.log.read_text(errors="replace")
    return text.count("restored snapshot") + text.count("no snapshot")


def test_three_sigkills_and_a_cut_short_stop_lose_nothing_and_count_nothing_twice(settings: Settings) -> None:
    settings = analytics_settings(settings)
    ensure_topics(settings)
    store = Role(settings, "store")
    workers = []
    rng = random.Random(20261122)
    # the fourth stop is a SIGTERM whose stop deadline passes at once: the worker exits
    # mid-stop, with whatever its commit and flush had reached
    cut_short = settings.model_copy(update={"worker_stop_deadline_s": 0.01})
    stops = [(settings, signal.SIGKILL)] * 3 + [(cut_short, signal.SIGTERM)]
    try:
        simulate(settings)  # the whole backlog first, so every kill lands mid-stream
        for role_settings, signum in stops:
            worker = Role(role_settings, "worker")  # every worker appends to the same log
            workers.append(worker)
            before = restores(worker)
            wait_for(
                "the worker to take its partitions",
                lambda w=worker, b=before: restores(w) > b,  # type: ignore[misc]
                120,
                [store, worker],
            )
            time.sleep(rng.uniform(1.0, 4.0))
            worker.process.send_signal(signum)
            worker.process.wait(30)
        assert "exiting now" in workers[-1].log.read_text(errors="replace"), "the stop deadline never passed"
        assert workers[-1].process.returncode == 0
        last = RestartingRole(settings, "worker")
        workers.append(last)
        check_exact(settings, [store, last])
        log = last.log.read_text(errors="replace")
        assert log.count("restored snapshot") >= 3, "no worker restored a snapshot: the kills tested nothing"
        # the models and detectors restored from snapshots: predictions, metrics and alerts
        # equal to an uninterrupted run from offset 0 (the replay)
        report = run_replay(settings, "after_kills")
        print(report)
        assert "the replay equals the live tables" in report, report
        assert all("0 differ, 0 only live" in line for line in report.splitlines() if "only replayed" in line)
        assert "predictions" in report and "alerts" in report
        print(
            f"\nrestores: {log.count('restored snapshot')}, gaps replayed: {log.count('replaying offsets')}"
        )
    finally:
        for role in [*workers, store]:
            role.stop()
