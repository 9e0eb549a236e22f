"""The per-partition analytics processor: values in, window results out."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from oddstream.simulator.model import MarketSimulator, disorder
from schemas.catalog import Event, load_catalog
from schemas.codec import Codec
from streams.market import fair_probabilities
from streams.processor import Emission, Output, PartitionProcessor, WindowConfig, window_id
from tests.pure.test_snapshots import through_the_changelog

pytestmark = pytest.mark.pure
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a minute boundary
CONFIG = WindowConfig(size_ms=60_000, delay_ms=5_000, grace_ms=10_000, idle_timeout_ms=30_000, specs=())


class Feed:
    """One source partition's processor, and a user stage (a ``bets.by-user`` partition's
    processor) that gets its UserBetRecorded emissions, as the worker routes them."""

    def __init__(self, users_partition: int = 0) -> None:
        self.processor = PartitionProcessor(CONFIG)
        self.users = PartitionProcessor(CONFIG, partition=users_partition)
        self.offset = 0
        self.users_offset = 0
        self.emissions: list[Emission] = []
        self.rejected: list[str] = []
        self.late: list[Any] = []
        self.n = 0

    def send(self, event_type: str, ms: int, **fields: Any) -> None:
        self.n += 1
        record = {"event_id": f"e{self.n:05d}", "event_time": T0 + ms, "source": "t", **fields}
        out = self.processor.process(self.offset, event_type, record, wall_ms=0)
        self.offset += 1
        self.emissions += self.processor.take_currents() + out.emissions
        self.late += out.late
        if out.rejected:
            self.rejected.append(out.rejected)
        for user_bet in [e for e in out.emissions if e.event_type == "UserBetRecorded"]:
            self.deliver(user_bet.record)

    def deliver(self, user_bet: dict[str, Any]) -> Output:
        """A UserBetRecorded record arrives at the user stage (again, if re-sent)."""
        out = self.users.process(self.users_offset, "UserBetRecorded", user_bet, wall_ms=0)
        self.users_offset += 1
        self.emissions += self.users.take_currents() + out.emissions
        return out

    def flush(self) -> None:
        self.emissions += self.processor.flush() + self.users.flush()

    def odds(self, ms: int, selection: str, odds: float, bookmaker: str = "b1", market: str = "m1") -> None:
        self.send("OddsChanged", ms, bookmaker=bookmaker, market_id=market, selection_id=selection, odds=odds)

    def finals(self, kind: str) -> list[dict[str, Any]]:
        return [e.record for e in self.emissions if e.kind == kind and e.final]


def opened(feed: Feed, market: str = "m1") -> Feed:
    feed.send("MarketStatusChanged", 0, market_id=market, status="OPEN", reason=None)
    return feed


def test_price_window_follows_event_time_not_arrival_and_emits_one_final() -> None:
    feed = opened(Feed())
    feed.odds(30_000, "home", 2.10)
    feed.odds(10_000, "home", 2.00)  # arrives second, happened first: the open
    feed.odds(50_000, "home", 2.30)
    feed.odds(40_000, "home", 1.90)
    feed.odds(60_000 + 15_000 + 5_000, "home", 2.5)  # next window; watermark 75 s = end + grace
    [final] = feed.finals("price")
    assert (final["open"], final["high"], final["low"], final["last"], final["changes"]) == (
        2.0,
        2.3,
        1.9,
        2.3,
        4,
    )
    assert final["window_start"] == T0 and final["window_end"] == T0 + 60_000 and final["version"] == 4
    assert final["velocity_pct_per_min"] == pytest.approx((2.3 - 2.0) / 2.0 * 100 * 60 / 40)
    currents = [e for e in feed.emissions if e.kind == "price" and not e.final]
    assert [c.record["version"] for c in currents] == [1, 2, 3, 4, 1]


def test_event_later_than_grace_is_never_merged_and_names_the_window_it_missed() -> None:
    feed = opened(Feed())
    feed.odds(10_000, "home", 2.0)
    feed.odds(80_000, "home", 2.1)  # watermark 75 s: [0, 60 s) closes (60 + 10 <= 75)
    feed.odds(59_999, "home", 9.0)  # late
    assert [f["version"] for f in feed.finals("price")] == [1]
    kinds = sorted(late.kind for late in feed.late)
    assert kinds == ["market", "price"]
    assert all(late.missed == ((T0, T0 + 60_000),) and late.watermark == T0 + 75_000 for late in feed.late)
    assert feed.processor.late_events["price"] == 1
    feed.processor.flush()
    assert all(9.0 not in (f["high"], f["last"]) for f in feed.finals("price"))


def test_event_within_grace_still_counts() -> None:
    feed = opened(Feed())
    feed.odds(10_000, "home", 2.0)
    feed.odds(74_000, "home", 2.1)  # watermark 69 s < 60 + 10: still open
    feed.odds(59_000, "home", 3.0)
    assert feed.late == []
    feed.emissions += feed.processor.flush()
    assert [f["changes"] for f in feed.finals("price")] == [2, 1]


def test_redelivered_offset_changes_nothing() -> None:
    feed = opened(Feed())
    feed.odds(1_000, "home", 2.0)
    again = feed.processor.process(1, "OddsChanged", {"event_time": T0 + 1_000}, wall_ms=0)
    assert again.duplicate and again.emissions == []


def test_quote_for_unknown_market_is_rejected_and_touches_no_window() -> None:
    feed = Feed()
    feed.odds(1_000, "home", 2.0, market="mX")
    assert feed.rejected == [
        "OddsChanged.market_id: unknown market 'mX' "
        "(no MarketStatusChanged, or evicted: resulted or idle past its retention)"
    ]
    assert feed.emissions == [] and feed.processor.open_windows == 0


def test_market_window_devigs_complete_books_and_builds_the_consensus() -> None:
    feed = opened(Feed())
    for bookmaker, prices in {"b1": (2.0, 3.5, 4.0), "b2": (2.1, 3.4, 3.8), "b3": (2.0, 3.6)}.items():
        for selection, odds in zip(("away", "draw", "home"), prices, strict=False):
            feed.odds(1_000, selection, odds, bookmaker=bookmaker)
    feed.emissions += feed.processor.flush()
    [market] = feed.finals("market")
    assert [b["bookmaker"] for b in market["bookmakers"]] == ["b1", "b2"]  # b3 quoted 2 of 3
    b1 = market["bookmakers"][0]
    assert b1["overround"] == pytest.approx(1 / 2 + 1 / 3.5 + 1 / 4 - 1)
    assert [p["fair_probability"] for p in b1["prices"]] == fair_probabilities([2.0, 3.5, 4.0])
    assert sum(p["shin_probability"] for p in b1["prices"]) == pytest.approx(1.0)
    home = market["consensus"][2]
    expected = (fair_probabilities([2.0, 3.5, 4.0])[2] + fair_probabilities([2.1, 3.4, 3.8])[2]) / 2
    assert home["selection_id"] == "home" and home["probability"] == pytest.approx(expected, rel=1e-12)
    assert home["fair_price"] == pytest.approx(1 / expected) and home["books"] == 2
    currents = [e.record for e in feed.emissions if e.kind == "market" and not e.final]
    assert all(c["bookmakers"] == [] for c in currents)  # de-vig on the final only


def test_steam_move_needs_three_bookmakers_moving_the_same_way() -> None:
    feed = opened(Feed())
    for bookmaker in ("b1", "b2", "b3"):
        feed.odds(1_000, "home", 2.00, bookmaker=bookmaker)
        feed.odds(20_000, "home", 1.90, bookmaker=bookmaker)  # -5 %
        feed.odds(1_000, "away", 3.0, bookmaker=bookmaker)
    feed.emissions += feed.processor.flush()
    steam = {c["selection_id"]: c["steam"] for c in feed.finals("market")[0]["consensus"]}
    assert steam == {"away": 0, "home": 1}


def test_bet_window_turnover_liability_and_shares() -> None:
    feed = Feed()
    bets = [("home", "10.00", 2.0), ("home", "30.00", 2.5), ("away", "60.00", 3.0)]
    for n, (selection, stake, odds) in enumerate(bets):
        feed.send(
            "BetPlaced", 1_000 + n, bet_id=f"b{n}", user_id="u1", market_id="m1", selection_id=selection,
            stake=Decimal(stake), currency="EUR", odds=odds, channel="WEB",
        )  # fmt: skip
    feed.emissions += feed.processor.flush()
    [window] = feed.finals("bets")
    assert (window["bets"], window["turnover"], window["average_stake"]) == (3, 100.0, 100.0 / 3)
    away, home = window["selections"]
    assert home["liability"] == pytest.approx(10 * 2.0 + 30 * 2.5 - 100)
    assert (
        away["liability"] == pytest.approx(180 - 100) and window["worst_case_liability"] == away["liability"]
    )
    assert home["vwap"] == pytest.approx(95 / 40) and home["money_share"] == 0.4


def bet(feed: Feed, ms: int, bet_id: str, selection: str, stake: str, odds: float) -> None:
    feed.send("BetPlaced", ms, bet_id=bet_id, user_id="u1", market_id="m1", selection_id=selection,
              stake=Decimal(stake), currency="EUR", odds=odds, channel="WEB")  # fmt: skip


def cancel(feed: Feed, ms: int, bet_id: str, selection: str) -> None:
    feed.send("BetCancelled", ms, bet_id=bet_id, user_id="u1", market_id="m1", selection_id=selection,
              reason="palpable error")  # fmt: skip


def cash_out(feed: Feed, ms: int, bet_id: str, selection: str, amount: str) -> None:
    feed.send("CashOut", ms, bet_id=bet_id, user_id="u1", market_id="m1", selection_id=selection,
              amount=Decimal(amount), currency="EUR", odds=1.5)  # fmt: skip


def test_a_cancellation_leaves_turnover_stakes_and_liability_in_its_own_window() -> None:
    feed = Feed()
    bet(feed, 1_000, "b0", "home", "10.00", 2.0)
    bet(feed, 2_000, "b1", "away", "40.00", 3.0)
    cancel(feed, 61_000, "b1", "away")  # the next minute: the first window stays as it was
    bet(feed, 62_000, "b2", "home", "5.00", 4.0)
    feed.emissions += feed.processor.flush()
    first, second = sorted(feed.finals("bets"), key=lambda w: w["window_start"])
    assert (first["bets"], first["turnover"], first["cancelled"]) == (2, 50.0, 0)
    # placed 5.00, cancelled 40.00: the minute's net turnover is -35.00, like a ledger's
    assert (second["bets"], second["turnover"], second["cancelled"], second["cancelled_stakes"]) == (
        1, -35.0, 1, 40.0,
    )  # fmt: skip
    away, home = second["selections"]
    assert (away["bets"], away["stakes"], away["cancelled"], away["cancelled_stakes"]) == (0, -40.0, 1, 40.0)
    assert math.isnan(away["vwap"]) and home["vwap"] == 4.0
    # if away wins: nothing more to pay on it (b1 is gone), and 35.00 went back net
    assert away["liability"] == pytest.approx(-120.0 + 35.0)
    assert home["liability"] == pytest.approx(20.0 + 35.0)
    # summed over the windows, the market's liability is its open bets' (b0, b2) against their stakes
    per_window = [{s["selection_id"]: s["liability"] for s in w["selections"]} for w in (first, second)]
    assert per_window[0]["home"] + per_window[1]["home"] == pytest.approx(10 * 2 + 5 * 4 - 15)
    assert per_window[0]["away"] + per_window[1]["away"] == pytest.approx(-15.0)


def test_a_cash_out_keeps_the_stake_pays_its_amount_and_drops_its_payout() -> None:
    feed = Feed()
    bet(feed, 1_000, "b0", "home", "10.00", 2.0)
    bet(feed, 2_000, "b1", "away", "20.00", 3.0)
    cash_out(feed, 3_000, "b1", "away", "25.50")
    feed.emissions += feed.processor.flush()
    [window] = feed.finals("bets")
    assert (window["bets"], window["turnover"], window["cashed_out"], window["cash_out_paid"]) == (
        2, 30.0, 1, 25.5,
    )  # fmt: skip
    away, home = window["selections"]
    assert (away["stakes"], away["cashed_out"], away["cash_out_paid"], away["vwap"]) == (20.0, 1, 25.5, 3.0)
    kept = 30.0 - 25.5  # the stakes taken less the cash-out paid
    assert away["liability"] == pytest.approx(0.0 - kept) and home["liability"] == pytest.approx(20.0 - kept)
    assert window["worst_case_liability"] == 15.5
    exact = {k: window[f"{k}_exact"] for k in ("turnover", "worst_case_liability", "cash_out_paid")}
    assert exact == {"turnover": Decimal("30.00"), "worst_case_liability": Decimal("15.50"),
                     "cash_out_paid": Decimal("25.50")}  # fmt: skip
    assert (away["liability_exact"], home["liability_exact"]) == (Decimal("-4.50"), Decimal("15.50"))


def test_a_close_that_overtakes_its_bet_is_booked_with_the_bet_and_only_the_first_close_counts() -> None:
    feed = Feed()
    cancel(feed, 1_000, "b0", "home")  # delivered before its bet
    bet(feed, 900, "b0", "home", "10.00", 2.0)
    bet(feed, 1_100, "b1", "home", "7.00", 2.0)
    feed.send("BetSettled", 1_200, bet_id="b1", user_id="u1", market_id="m1", selection_id="home",
              result="WON", payout=Decimal("14.00"), currency="EUR")  # fmt: skip
    cancel(feed, 1_300, "b1", "home")  # after its settlement: changes nothing
    cancel(feed, 1_400, "b9", "home")  # a bet never placed: changes nothing
    feed.emissions += feed.processor.flush()
    [window] = feed.finals("bets")
    assert (window["bets"], window["turnover"], window["cancelled"], window["version"]) == (2, 7.0, 1, 2)
    [home] = window["selections"]
    assert (home["stakes"], home["liability"]) == (7.0, pytest.approx(14.0 - 7.0))
    assert feed.processor.bets.open == {} and set(feed.processor.bets.closed_first) == {
        ("m1", "b1"),
        ("m1", "b9"),
    }


def test_service_and_route_windows() -> None:
    feed = Feed()
    for n, (status, latency) in enumerate([(200, 10.0), (500, 30.0), (200, 20.0), (503, 40.0)]):
        feed.send(
            "ApiCallRecorded", n * 1000, service="api", route="/bets", method="GET", status=status,
            latency_ms=latency,
        )  # fmt: skip
    for ms in (0, 5_000, 20_000):
        feed.send("ServiceHeartbeat", ms, service="api", instance="api-0", sequence=ms)
    feed.emissions += feed.processor.flush()
    [service] = feed.finals("service")
    assert (service["calls"], service["errors"], service["heartbeats"]) == (4, 2, 3)
    assert service["error_rate"] == 0.5 and service["max_heartbeat_gap_ms"] == 15_000
    assert service["events_per_second"] == pytest.approx(7 / 60)
    [route] = feed.finals("route")
    assert (route["latency_p50_ms"], route["latency_p95_ms"], route["latency_max_ms"]) == (20.0, 40.0, 40.0)


def test_quiet_partition_closes_windows_on_the_clock_but_not_after_a_restart() -> None:
    feed = opened(Feed())
    feed.processor.process(feed.offset, "OddsChanged", {
        "event_id": "x", "event_time": T0 + 1_000, "source": "t", "bookmaker": "b1", "market_id": "m1",
        "selection_id": "home", "odds": 2.0}, wall_ms=1_000_000)  # fmt: skip
    assert feed.processor.on_idle(1_000_000 + 29_999) == []
    feed.processor.resumed(1_000_000 + 100_000)  # a restart is not silence
    assert feed.processor.on_idle(1_000_000 + 100_000 + 29_999) == []
    finals = feed.processor.on_idle(1_000_000 + 100_000 + 90_000)
    assert {e.kind for e in finals} == {"price", "market"} and all(e.final for e in finals)


def simulated(n: int, seed: int = 3) -> list[Event]:
    sim = MarketSimulator(seed=seed, start_ms=T0, markets=6, rate_per_s=20.0)
    stream = disorder(sim.events(), seed, fraction=0.05, max_delay_ms=60_000)
    return [e for _, e in zip(range(n), stream, strict=False)]


def run(events: list[Event], processor: PartitionProcessor, start: int = 0) -> list[Emission]:
    out = []
    for offset, event in enumerate(events[start:], start):
        out += processor.process(offset, event.type, event.record, wall_ms=0).emissions
        if offset % 7 == 0:
            out += processor.take_currents()
    return out


def test_snapshot_and_replay_of_the_rest_equals_an_uninterrupted_run() -> None:
    events = simulated(6_000)
    whole = PartitionProcessor(CONFIG)
    expected = run(events, whole) + whole.flush()
    first = PartitionProcessor(CONFIG)
    before = run(events[:2_500], first)
    restored = through_the_changelog(first)
    again = run(events, restored, start=2_000)  # 2000..2499 are redelivered: skipped
    assert before + again + restored.flush() == expected
    assert sum(restored.late_events.values()) > 0  # the disorder made some events late


def test_every_emission_honours_its_contract_and_ids_are_deterministic() -> None:
    events = simulated(4_000, seed=5)
    a, b = PartitionProcessor(CONFIG), PartitionProcessor(CONFIG)
    first, second = run(events, a) + a.flush(), run(events, b) + b.flush()
    assert any(not e.final for e in first)
    assert [e.record["event_id"] for e in first] == [e.record["event_id"] for e in second]
    codec = Codec(load_catalog())
    for emission in first:
        event = Event(emission.event_type, {**emission.record, "source": "w"})
        assert codec.decode(codec.encode(event)).type == emission.event_type
    finals = [e for e in first if e.final and "window_id" in e.record]
    assert len({e.record["window_id"] for e in finals}) == len(finals)  # one final per window
    notices = [e for e in first if "window_id" not in e.record]  # predictions, metrics, alerts
    assert len({e.record["event_id"] for e in notices}) == len(notices)
    assert not any(math.isnan(v) for e in finals for v in e.record.values() if isinstance(v, float))


def test_user_windows_run_on_the_user_stage_and_void_settles_nothing() -> None:
    feed = Feed(users_partition=4)
    for n, (ms, stake) in enumerate([(6_000, "10.00"), (18_000, "20.00"), (30_000, "30.00")]):
        feed.send(
            "BetPlaced", ms, bet_id=f"b{n}", user_id="u1", market_id="m1", selection_id="home",
            stake=Decimal(stake), currency="EUR", odds=2.0, channel="WEB",
        )  # fmt: skip
    for n, result in enumerate(["WON", "LOST", "VOID", "HALF_WON"]):
        feed.send(
            "BetSettled", 40_000, bet_id=f"b{n}", user_id="u1", market_id="m1", selection_id="home",
            result=result, payout=Decimal("0.00"), currency="EUR",
        )  # fmt: skip
    feed.flush()
    [user] = feed.finals("user")
    assert (user["user_id"], user["source_partition"], user["bets"], user["staked"]) == ("u1", 4, 3, 60.0)
    assert (user["settled"], user["won"]) == (3, 2)
    assert (user["sum_t"], user["sum_tt"]) == (54_000.0, 6_000.0**2 + 18_000.0**2 + 30_000.0**2)
    n, st, stt, ss, sts = 3, user["sum_t"], user["sum_tt"], user["sum_s"], user["sum_ts"]
    trend_per_min = (n * sts - st * ss) / (n * stt - st**2) * 60_000
    assert trend_per_min == pytest.approx(50.0)  # +10 per 12 s = +50 per minute
    window = (T0, T0 + 60_000)
    assert (
        user["window_id"]
        == window_id("user", ("u1", "4"), *window)
        != window_id("user", ("u1", "5"), *window)
    )


def test_one_user_over_two_bets_partitions_has_one_window_and_one_alert_lifecycle() -> None:
    """Bets are keyed by market: a user's bets on two markets reach two bets partitions. Both
    send them to the user's partition of bets.by-user, so the user's window is one row and
    the user's stake rule one lifecycle (before, each bets partition had its own)."""
    a, b = Feed(users_partition=2), Feed()
    a.processor.partition, b.processor.partition = 0, 1
    b.deliver = a.deliver  # type: ignore[method-assign]  # one user, one bets.by-user partition
    for n in range(80):  # ordinary stakes, alternating markets (partitions)
        feed, market = (a, "m1") if n % 2 else (b, "m2")
        stake = Decimal(f"{10 + n % 5}.00")
        feed.send("BetPlaced", 1_000 + n * 100, bet_id=f"b{n}", user_id="u1", market_id=market,
                  selection_id="home", stake=stake, currency="EUR", odds=2.0)  # fmt: skip
    for n in (80, 81):  # a stake far above the user's own, on each partition
        feed, market = (a, "m1") if n % 2 else (b, "m2")
        feed.send("BetPlaced", 1_000 + n * 100, bet_id=f"b{n}", user_id="u1", market_id=market,
                  selection_id="home", stake=Decimal("5000.00"), currency="EUR", odds=2.0)  # fmt: skip
    deliveries = [e.record for e in a.emissions + b.emissions if e.event_type == "UserBetRecorded"]
    assert {r["source_partition"] for r in deliveries} == {0, 1} and len(deliveries) == 82
    a.flush()
    [window] = a.finals("user")
    assert (window["bets"], window["staked_exact"], window["source_partition"]) == (
        82,
        Decimal("10960.00"),
        2,
    )
    alerts = [e.record for e in a.emissions if e.event_type == "AlertChanged"]
    user_alerts = [r for r in alerts if r["rule"] == "user_stake_change"]
    assert [(r["status"], r["source_partition"]) for r in user_alerts] == [("firing", 2)]  # once, not twice


def test_a_re_sent_user_bet_is_folded_once() -> None:
    """After a crash a bets partition sends again what it wrote since its last snapshot: the
    user stage drops what it folded already, per bets partition, and folds what is new."""
    feed = Feed()
    for n in range(3):
        feed.send("BetPlaced", 1_000 + n, bet_id=f"b{n}", user_id="u1", market_id="m1",
                  selection_id="home", stake=Decimal("10.00"), currency="EUR", odds=2.0)  # fmt: skip
    sent = [e.record for e in feed.emissions if e.event_type == "UserBetRecorded"]
    assert [feed.deliver(r).duplicate for r in sent] == [True, True, True]
    other = {**sent[0], "source_partition": 7, "event_id": "x"}  # another bets partition: news
    assert isinstance(out := feed.deliver(other), Output) and not out.duplicate
    feed.flush()
    [window] = feed.finals("user")
    assert window["bets"] == 4 and window["staked_exact"] == Decimal("40.00")


def bets_partition(partition: int) -> PartitionProcessor:
    return PartitionProcessor(CONFIG, partition=partition, repartitions=True)


def placed(bets: PartitionProcessor, offset: int, ms: int, user: str = "u1") -> list[dict[str, Any]]:
    """A bet placed on a bets partition: what it writes to bets.by-user (the bet, clock marks)."""
    out = bets.process(offset, "BetPlaced", {
        "event_id": f"e{bets.partition}-{offset}", "event_time": T0 + ms, "source": "t",
        "bet_id": f"b{offset}", "user_id": user, "market_id": f"m{bets.partition}", "selection_id": "home",
        "stake": Decimal("10.00"), "odds": 2.0, "currency": "EUR",
    }, wall_ms=0)  # fmt: skip
    return [e.record for e in out.emissions if e.event_type == "UserBetRecorded"]


class UserStage:
    """A bets.by-user partition's processor and what it emitted."""

    def __init__(self, config: WindowConfig) -> None:
        self.processor = PartitionProcessor(config, partition=0)
        self.offset = 0
        self.emissions: list[Emission] = []
        self.late: list[Any] = []

    def read(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            out = self.processor.process(self.offset, "UserBetRecorded", record, wall_ms=0)
            self.offset += 1
            self.emissions += out.emissions
            self.late += out.late

    def finals(self) -> list[dict[str, Any]]:
        return [e.record for e in self.emissions if e.kind == "user" and e.final]


def test_user_windows_close_by_the_slowest_bets_partition_so_a_lagging_one_is_not_late() -> None:
    """A backlog is read a partition's batch at a time: bets partition 0 gets five minutes
    ahead before partition 1 says anything. Its bets still count: the user stage waits for
    the slowest partition's clock, learned from records and clock marks."""
    config = WindowConfig(**{**CONFIG.__dict__, "source_partitions": 2})
    users, fast, slow = UserStage(config), bets_partition(0), bets_partition(1)
    for n in range(300):  # partition 0: a bet a second for five minutes
        users.read(placed(fast, n, n * 1_000))
    assert users.finals() == []  # partition 1 never heard of: waited for
    assert any(r["action"] == "CLOCK" for r in placed(fast, 300, 300_000))  # marks every second
    for n in range(300):  # partition 1: the same five minutes, read after
        users.read(placed(slow, n, n * 1_000 + 500))
    assert users.late == [] and users.processor.late_events["user"] == 0
    closed = users.finals()
    assert [w["bets"] for w in closed] == [120, 120, 120, 120]  # 60 + 60 per minute, minute 5 open
    assert all(w["source_partition"] == 0 for w in closed)


def test_an_idle_bets_partition_is_not_waited_for_until_it_sends_again() -> None:
    config = WindowConfig(**{**CONFIG.__dict__, "source_partitions": 2})
    users, busy, quiet = UserStage(config), bets_partition(0), bets_partition(1)
    users.read(placed(quiet, 0, 0))
    for n in range(180):
        users.read(placed(busy, n, n * 1_000))
    assert users.finals() == []  # partition 1's clock is at 0: it may still send minute 0
    mark = [e.record for e in quiet.on_idle(wall_ms=60_000) if e.event_type == "UserBetRecorded"]
    assert [(m["action"], m["idle"], m["source_partition"]) for m in mark] == [("CLOCK", True, 1)]
    assert [e for e in quiet.on_idle(wall_ms=90_000) if e.event_type == "UserBetRecorded"] == []  # once
    users.read(mark)
    assert [w["bets"] for w in users.finals()] == [61, 60]  # closed by partition 0 alone
    users.read(placed(quiet, 1, 179_000))  # partition 1 again: waited for from now on
    for n in range(180, 300):
        users.read(placed(busy, n, n * 1_000))
    assert len(users.finals()) == 2 and users.late == []
    users.read(placed(quiet, 2, 300_000))
    assert [w["bets"] for w in users.finals()] == [61, 60, 61, 60]


def test_cancelled_cashed_out_and_settled_bets_leave_the_liability_one_by_one() -> None:
    feed = Feed()
    for n, selection in enumerate(("home", "away", "draw")):
        feed.send("BetPlaced", 1_000 + n, bet_id=f"b{n}", user_id="u1", market_id="m1",
                  selection_id=selection, stake=Decimal("10.00"), odds=2.0, currency="EUR")  # fmt: skip
    alerts, book = feed.processor.detectors, feed.processor.bets
    assert alerts is not None and set(book.open["m1"]) == {"b0", "b1", "b2"}
    feed.send(
        "BetCancelled", 2_000, bet_id="b0", user_id="u1", market_id="m1", selection_id="home", reason="x"
    )
    feed.send("CashOut", 2_001, bet_id="b1", user_id="u1", market_id="m1", selection_id="away",
              amount=Decimal("9.00"), currency="EUR", odds=2.1)  # fmt: skip
    assert set(book.open["m1"]) == {"b2"} and alerts.exposure["m1"][0] == 1_000  # cents
    feed.send("BetSettled", 3_000, bet_id="b2", user_id="u1", market_id="m1", selection_id="draw",
              result="LOST", payout=Decimal("0.00"), currency="EUR")  # fmt: skip
    assert "m1" not in book.open and "m1" not in alerts.exposure and feed.rejected == []
