"""The analytics of one source partition: which windows an event feeds, and what comes out. Pure.

A :class:`PartitionProcessor` is fed the decoded events of one Kafka partition in offset
order. It remembers the last offset it reflects, so a redelivered event changes nothing,
and it is a plain picklable value, so a snapshot of it plus the log after the snapshot's
offset rebuilds it exactly (``consumers/worker`` does that; ``oddstream replay`` runs the
same code from offset 0).

Windows (all one-minute tumbling windows over event time, watermark per partition):

=========  ====================================  =====================
kind       key                                   event type emitted
=========  ====================================  =====================
market     market_id                             OddsWindowUpdated
price      (market_id, selection_id, bookmaker)  PriceWindowUpdated
bets       market_id                             BetWindowUpdated
service    service                               ServiceWindowUpdated
route      (service, route)                      RouteWindowUpdated
user       user_id                               UserWindowUpdated
=========  ====================================  =====================

Bets are keyed by market, so one user's bets spread over the bets partitions. A bets
partition therefore does not fold them into user windows: it emits each placement and
settlement as a ``UserBetRecorded`` to ``bets.by-user``, keyed by the user, and the
processors of *that* topic's partitions (the user stage) run the user windows and the
per-user rules, so one user has one window per period and one alert lifecycle. A bets
partition re-sends after a crash what it wrote since its last snapshot; the user stage
folds each (bets partition, offset) once (see ``_on_user_bet``).

Every window id and event id is a UUIDv5 of the window and its version, so a replay or a
re-emission after a crash produces byte-identical results.

Besides windows, the same pass feeds the partition's online models
(:class:`~streams.predictor.Predictor`: forecasts, value signals, evaluations, drift) and
its anomaly detectors (:class:`~streams.detectors.Detectors`: alert notifications). They
are part of the processor value, so they are snapshotted with the offset they reflect.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from schemas.validation import as_millis
from streams.alerts import AlertEvent
from streams.analytics import (
    ApiCall,
    BetAggregator,
    BetClosed,
    BetStats,
    Price,
    PriceAggregator,
    PriceStats,
    Stake,
    SystemAggregator,
    SystemStats,
    UserAction,
    UserAggregator,
    UserStats,
)
from streams.bets import BetBook, Close, CloseKind
from streams.book import Book, BookAggregator, Quote, book_record
from streams.detectors import DetectorConfig, Detectors
from streams.engine import NEVER, WindowEngine, WindowResult
from streams.ids import uuid5
from streams.money import as_decimal, cents
from streams.predictor import Predictor, PredictorConfig
from streams.specs import DEFAULT_SPECS, EVENT_TYPE_OF_KIND, PRIMARY, WindowSpec, engine_name
from streams.windows import HoppingWindow, SlidingWindow, TumblingWindow, Window

NAMESPACE = uuid.UUID("6f1c1f0e-4c1e-4f53-9a53-6f6464737472")
NOTICE_KIND = {
    "PredictionMade": "prediction",
    "ValueSignalRaised": "prediction",
    "ModelEvaluated": "model",
    "ModelDriftDetected": "model",
}
CLOSE_KIND: dict[str, CloseKind] = {
    "BetSettled": "settled",
    "BetCancelled": "cancelled",
    "CashOut": "cashed_out",
}
WON = {"WON": True, "HALF_WON": True, "LOST": False, "HALF_LOST": False}  # VOID settles nothing
CLOCK_EVERY_MS = 1_000  # a bets partition tells every bets.by-user partition its clock this often


@dataclass(frozen=True)
class Retention:
    """How long state with no new events is kept, in event time (the partition's newest
    event). docs/design/state-and-recovery.md lists what each rule evicts."""

    resulted_market_ms: int = 3_600_000  # a market, after its result
    idle_market_ms: int = 7 * 86_400_000  # a market with no event at all (never resulted)
    idle_user_ms: int = 30 * 86_400_000  # a user's stake baseline
    idle_service_ms: int = 86_400_000  # a service's or route's statistics and heartbeats
    late_ms: int = 3_600_000  # out-of-order events this much older than the newest still find state
    sweep_every_ms: int = 60_000


FOREVER = 2**62
KEEP_FOREVER = Retention(FOREVER, FOREVER, FOREVER, FOREVER, FOREVER, FOREVER)  # nothing is evicted


@dataclass(frozen=True)
class WindowConfig:
    """How the partition's windows behave, and its state's retention. ``size_ms`` is the
    primary spec's (``1m``, tumbling, every kind); ``specs`` are the extra ones
    (streams/specs.py). Delay, grace and idle timeout are the same for every spec."""

    size_ms: int = 60_000
    delay_ms: int = 5_000  # watermark = max event time - delay
    grace_ms: int = 10_000  # a window closes when the watermark passes end + grace
    idle_timeout_ms: int = 30_000  # a silent partition's watermark follows the clock after this
    retention: Retention = Retention()
    specs: tuple[WindowSpec, ...] = DEFAULT_SPECS
    # partitions of the bets topic: the user stage's watermark waits for each one's clock
    source_partitions: int = 1


@dataclass(frozen=True)
class Emission:
    """One window result as an event: its type and record (``source`` is the caller's).
    ``kind`` is the engine's name: the window kind, ``<kind>@<spec>`` for an extra spec."""

    kind: str
    event_type: str
    record: dict[str, Any]

    @property
    def final(self) -> bool:
        """Window results can be current or final; predictions, evaluations and alerts are final."""
        return bool(self.record.get("final", True))


@dataclass(frozen=True)
class Late:
    """An event that missed a closed window of ``kind`` (``<kind>@<spec>`` for an extra
    spec); never merged into it."""

    kind: str
    event_ms: int
    watermark: int
    missed: tuple[Window, ...]


@dataclass
class Output:
    emissions: list[Emission] = field(default_factory=list)  # finals (currents: take_currents())
    late: list[Late] = field(default_factory=list)
    rejected: str | None = None  # a reason: the record goes to the dead-letter topic
    duplicate: bool = False  # at or below the reflected offset: already counted


@lru_cache(maxsize=65_536)
def window_id(kind: str, key: Any, start: int, end: int) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return uuid5(NAMESPACE, f"{kind}:{'|'.join(parts)}:{start}:{end}")


def result_id(window: str, version: int, final: bool) -> str:
    return uuid5(NAMESPACE, f"{window}:{version}:{'final' if final else 'current'}")


@dataclass
class PartitionProcessor:
    """Every window engine one source partition feeds, plus the markets it has seen."""

    config: WindowConfig = field(default_factory=WindowConfig)
    partition: int = -1  # the source partition (bets.by-user's names the user windows)
    offset: int = -1
    markets: dict[str, str] = field(default_factory=dict)  # market_id -> latest status
    market_seen: dict[str, int] = field(default_factory=dict)  # market_id -> newest event time
    resulted: dict[str, int] = field(default_factory=dict)  # market_id -> event time of its result
    bets: BetBook = field(default_factory=BetBook)  # open bets: what a cancellation takes back
    # the bets stage: it writes bets.by-user, with clock marks (see _mark_clock and on_idle)
    repartitions: bool = False
    clock_sent_ms: int = NEVER  # the clock last sent to every bets.by-user partition
    idle_sent: bool = False  # an idle mark was sent and no record came since
    last_wall_ms: int | None = None  # wall-clock ms of the last record (the idle mark's quiet)
    # the user stage: per bets partition the highest of its offsets folded, its clock (newest
    # event time) and, while it is idle, the clock it went idle at (one entry per bets partition)
    folded: dict[int, int] = field(default_factory=dict)
    source_clocks: dict[int, int] = field(default_factory=dict)
    idle_sources: dict[int, int] = field(default_factory=dict)
    clock_ms: int = 0  # the newest event time seen: eviction's clock
    evicted_markets: int = 0
    _next_sweep_ms: int = 0
    engines: dict[str, WindowEngine[Any, Any, Any]] = field(default_factory=dict)  # by engine name
    lanes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> its engines' names
    spec_of: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # engine -> kind, spec, size
    # engines whose current updates are one per key, not per window (see _feed), and which of
    # an event's updates that is: hopping 0 (the oldest window it joined), sliding -1 (the newest)
    current_of_key: dict[str, int] = field(default_factory=dict)
    # windows updated and not yet sent as a current update (see take_currents)
    _pending: dict[tuple[str, Any, int], WindowResult[Any, Any]] = field(default_factory=dict)
    # wall-clock ms of each open window's last current update (the throttle's memory)
    _sent_at: dict[tuple[str, Any, int], int] = field(default_factory=dict)
    predictor_config: PredictorConfig = field(default_factory=PredictorConfig)
    detector_config: DetectorConfig = field(default_factory=DetectorConfig)
    predictor: Predictor | None = None
    detectors: Detectors | None = None
    insights: bool = True  # False: windows only (benchmarks measure the models' cost this way)
    currents: bool = True  # False: finals only, no current updates kept (a replay)

    def __post_init__(self) -> None:
        if self.predictor is None:
            self.predictor = Predictor(self.predictor_config, self.partition)
        if self.detectors is None:
            self.detectors = Detectors(self.detector_config)
        if not self.engines:
            c = self.config
            lanes: dict[str, list[str]] = {kind: [] for kind in AGGREGATORS}
            primary = [(kind, PRIMARY, TumblingWindow(c.size_ms), c.size_ms) for kind in AGGREGATORS]
            extra = [(kind, s.name, s.window(), s.size_ms) for s in c.specs for kind in s.kinds]
            for kind, spec, shape, size in primary + extra:
                name = engine_name(kind, spec)
                aggregator = AGGREGATORS[kind](size)
                self.engines[name] = WindowEngine(
                    shape, aggregator, c.delay_ms, c.grace_ms, c.idle_timeout_ms, clocked=kind == "user"
                )
                lanes[kind].append(name)
                self.spec_of[name] = (kind, spec, size)
                if isinstance(shape, HoppingWindow) and shape.hop_ms < shape.size_ms:
                    self.current_of_key[name] = 0
                elif isinstance(shape, SlidingWindow):
                    self.current_of_key[name] = -1
            self.lanes = {kind: tuple(names) for kind, names in lanes.items()}

    # -- feeding -------------------------------------------------------------

    def process(self, offset: int, event_type: str, record: dict[str, Any], wall_ms: int) -> Output:
        """Fold one decoded, contract-checked event at ``offset``; ``wall_ms`` only times idleness."""
        if offset <= self.offset:
            return Output(duplicate=True)
        self.offset = offset
        self.last_wall_ms = wall_ms
        out = Output()
        event_ms = as_millis(record["event_time"])
        if event_ms > self.clock_ms:
            self.clock_ms = event_ms
            if event_ms >= self._next_sweep_ms:
                self.evict(event_ms)
        if event_type == "MarketStatusChanged":
            market = record["market_id"]
            self.markets[market] = record["status"]
            self.market_seen[market] = max(self.market_seen.get(market, event_ms), event_ms)
        elif event_type == "OddsChanged":
            market = record["market_id"]
            if market not in self.markets:
                out.rejected = (
                    f"OddsChanged.market_id: unknown market {market!r} "
                    "(no MarketStatusChanged, or evicted: resulted or idle past its retention)"
                )
                return out
            seen = self.market_seen.get(market, event_ms)
            self.market_seen[market] = seen if seen > event_ms else event_ms
            price = Price(float(record["odds"]), (event_ms, record["event_id"]))
            key = (market, record["selection_id"], record["bookmaker"])
            self._feed(out, "price", key, event_ms, price, wall_ms)
            self._feed(out, "market", market, event_ms, Quote(key[2], key[1], price), wall_ms)
        elif event_type == "BetPlaced":
            market = record["market_id"]
            stake = Stake(
                record["selection_id"], record["user_id"], cents(record["stake"]), float(record["odds"])
            )
            close = self.bets.place(market, record["bet_id"], stake, event_ms)
            if close is None or close.kind == "settled":
                self._feed(out, "bets", market, event_ms, stake, wall_ms)
            else:  # its cancellation or cash-out came first: booked with it
                shut = BetClosed(stake, close.kind == "cashed_out", close.paid_cents, placed=True)
                self._feed(out, "bets", market, event_ms, shut, wall_ms)
            out.emissions.append(self._user_bet(offset, record, event_ms, record["stake"], None))
            self._mark_clock(out)
            if self.insights:
                self._on_bet(out, record, stake, event_ms, opened=close is None)
            return out
        elif event_type in CLOSE_KIND:
            market, kind = record["market_id"], CLOSE_KIND[event_type]
            paid = cents(record["amount"]) if kind == "cashed_out" else 0
            bet = self.bets.close(market, record["bet_id"], Close(kind, event_ms, paid))
            if bet is not None and kind != "settled":
                self._feed(out, "bets", market, event_ms, BetClosed(bet, kind == "cashed_out", paid), wall_ms)
            won = WON.get(record["result"]) if kind == "settled" else None
            if won is not None:
                out.emissions.append(self._user_bet(offset, record, event_ms, None, won))
            self._mark_clock(out)
            if self.insights:
                self._on_bet_closed(out, market, bet, event_ms)
            return out
        elif event_type == "UserBetRecorded":
            self._on_user_bet(out, record, event_ms, wall_ms)
            return out
        elif event_type == "ApiCallRecorded":
            call = ApiCall(record["route"], int(record["status"]), float(record["latency_ms"]))
            self._feed(out, "service", record["service"], event_ms, call, wall_ms)
            self._feed(out, "route", (record["service"], record["route"]), event_ms, call, wall_ms)
        elif event_type == "ServiceHeartbeat":
            self._feed(out, "service", record["service"], event_ms, None, wall_ms)
        elif event_type == "MarketResulted":
            market = record["market_id"]
            self.resulted[market] = max(self.resulted.get(market, event_ms), event_ms)
        if self.insights:
            self._insights(out, event_type, record, event_ms)
        return out

    def _insights(self, out: Output, event_type: str, record: dict[str, Any], event_ms: int) -> None:
        """Feed the online models and the anomaly detectors; add what they publish to ``out``."""
        assert self.predictor is not None and self.detectors is not None
        models, alerts = self.predictor, self.detectors
        notices: list[tuple[str, dict[str, Any]]] = []
        if event_type == "MarketStatusChanged":
            notices = models.on_status(record["market_id"], record["status"], event_ms)
            if record["status"] == "CLOSED":  # a suspension keeps the last prices: moves span it
                alerts.on_market_closed(record["market_id"])
            raised = alerts.tick(event_ms)
        elif event_type == "OddsChanged":
            market, selection, bookmaker = record["market_id"], record["selection_id"], record["bookmaker"]
            odds = float(record["odds"])
            notices = models.on_quote(market, selection, bookmaker, odds, event_ms)
            raised = alerts.on_quote(market, selection, bookmaker, odds, event_ms)
        elif event_type == "MarketResulted":
            notices = models.on_result(record["market_id"], list(record["winning_selection_ids"]), event_ms)
            raised = alerts.tick(event_ms)
        elif event_type == "ApiCallRecorded":
            raised = alerts.on_call(
                record["service"],
                record["route"],
                int(record["status"]),
                float(record["latency_ms"]),
                event_ms,
            )
        elif event_type == "ServiceHeartbeat":
            raised = alerts.on_heartbeat(record["service"], event_ms)
        else:
            raised = alerts.tick(event_ms)
        if notices:
            out.emissions.extend(Emission(NOTICE_KIND[t], t, r) for t, r in notices)
        self._raise(out, raised)

    def _on_bet(self, out: Output, record: dict[str, Any], bet: Stake, event_ms: int, opened: bool) -> None:
        assert self.detectors is not None
        raised = self.detectors.on_bet(
            record["market_id"], bet.selection_id, bet.user_id, bet.stake, bet.odds, event_ms, opened
        )
        self._raise(out, raised)

    def _on_bet_closed(self, out: Output, market: str, bet: Stake | None, event_ms: int) -> None:
        """The detectors after a close: the closed bet leaves the exposure; an unknown one
        (not arrived yet, or closed already) only moves their clock."""
        assert self.detectors is not None
        if bet is None:
            self._raise(out, self.detectors.tick(event_ms))
            return
        last = self.bets.open_in(market) == 0
        raised = self.detectors.on_bet_closed(
            market, bet.selection_id, bet.cents, bet.payout_cents, event_ms, last
        )
        self._raise(out, raised)

    def _user_bet(
        self, offset: int, record: dict[str, Any], event_ms: int, stake: Any, won: bool | None
    ) -> Emission:
        """A bet placed (``stake``) or settled (``won``), for the user stage: ``bets.by-user``,
        keyed by the user. Its id is the source record's position, so a re-send is the same."""
        user_bet = {
            "event_id": uuid5(NAMESPACE, f"user_bet:{self.partition}:{offset}"),
            "event_time": event_ms,
            "user_id": record["user_id"],
            "bet_id": record["bet_id"],
            "market_id": record["market_id"],
            "action": "PLACED" if won is None else "SETTLED",
            "stake": stake,
            "won": won,
            "source_partition": self.partition,
            "source_offset": offset,
            "source_clock": self.clock_ms,
            "idle": False,
        }
        return Emission("user_bet", "UserBetRecorded", user_bet)

    def _mark_clock(self, out: Output, idle: bool = False, wall_ms: int = 0) -> None:
        """The bets stage tells every bets.by-user partition how far its event time has come,
        once per CLOCK_EVERY_MS of it (``idle``: it has gone quiet, do not wait for it): the
        user stage's watermark is its slowest bets partition's (see _advance_users). The
        worker sends a clock mark to every partition of bets.by-user."""
        self.idle_sent = idle
        if not self.repartitions or (not idle and self.clock_ms < self.clock_sent_ms + CLOCK_EVERY_MS):
            return
        self.clock_sent_ms = max(self.clock_sent_ms, self.clock_ms)
        mark = {
            "event_id": uuid5(NAMESPACE, f"user_clock:{self.partition}:{self.offset}:{self.clock_ms}:{idle}"),
            "event_time": self.clock_ms if self.clock_ms > 0 else wall_ms,  # nothing yet: the clock's
            "user_id": "",
            "bet_id": "",
            "market_id": "",
            "action": "CLOCK",
            "stake": None,
            "won": None,
            "source_partition": self.partition,
            "source_offset": self.offset,
            "source_clock": self.clock_ms,
            "idle": idle,
        }
        out.emissions.append(Emission("user_clock", "UserBetRecorded", mark))

    def _on_user_bet(self, out: Output, record: dict[str, Any], event_ms: int, wall_ms: int) -> None:
        """The user stage (a partition of ``bets.by-user``): fold a user's bet or settlement
        into the user windows and the per-user rules, once. A bets partition re-sends what
        it wrote after its last snapshot when it restarts; per bets partition, the records
        arrive in offset order, so one at or below the highest offset folded was folded."""
        source, at = int(record["source_partition"]), int(record["source_offset"])
        if record["action"] == "CLOCK":
            self._advance_users(out, source, int(record["source_clock"]), bool(record["idle"]))
            return
        if at <= self.folded.get(source, -1):
            out.duplicate = True
            return
        self.folded[source] = at
        user = record["user_id"]
        if record["action"] == "PLACED":
            amount = cents(record["stake"])
            self._feed(out, "user", user, event_ms, UserAction(stake_cents=amount), wall_ms)
            if self.insights:
                assert self.detectors is not None
                self._raise(out, self.detectors.on_user_bet(user, amount / 100, event_ms))
        else:
            self._feed(out, "user", user, event_ms, UserAction(won=bool(record["won"])), wall_ms)
            if self.insights:
                assert self.detectors is not None
                self._raise(out, self.detectors.tick(event_ms))
        self._advance_users(out, source, int(record["source_clock"]), False, fresh=True)

    def _advance_users(self, out: Output, source: int, clock: int, idle: bool, fresh: bool = False) -> None:
        """The user stage's watermark: bets partitions reach bets.by-user at their own pace (a
        backlog is read a batch of one partition at a time, a worker may be down), so the
        event time a partition of bets.by-user has seen says little about what is still to
        come. Its windows close by the slowest bets partition's clock instead (as a Flink
        operator takes the minimum of its inputs' watermarks): each one's newest event time,
        learned from its records and clock marks; one that went idle is not waited for until
        it sends a new record or its clock moves; one never heard of is waited for. All of it
        comes from the bets.by-user log, so a replay closes the same windows at the same
        records."""
        if clock > self.source_clocks.get(source, NEVER):
            self.source_clocks[source] = clock
        newest = self.source_clocks.get(source, NEVER)
        if idle and clock >= newest:
            self.idle_sources[source] = clock
        elif source in self.idle_sources and (fresh or clock > self.idle_sources[source]):
            del self.idle_sources[source]  # active again: a new record, or a clock that moved
        sources = set(range(self.config.source_partitions)) | set(self.source_clocks)
        waiting = [self.source_clocks.get(s, NEVER) for s in sources if s not in self.idle_sources]
        slowest = min(waiting) if waiting else max(self.source_clocks.values())
        if slowest == NEVER:
            return
        for name in self.lanes["user"]:
            finals = self.engines[name].advance_to(slowest - self.config.delay_ms)
            out.emissions.extend(self._final(name, r) for r in finals)

    def _raise(self, out: Output, raised: list[AlertEvent]) -> None:
        if raised:
            out.emissions.extend(
                Emission("alert", "AlertChanged", alert_record(a, self.partition)) for a in raised
            )

    def evict(self, now_ms: int) -> None:
        """Forget, by event time, what the retention rules say is done: markets resulted or
        idle that long (their status, models' views and forecasts, detectors' prices and
        exposure), idle users and services, and expired alert resolutions. Run once per
        ``sweep_every_ms`` of event time; the same events evict the same state in a replay."""
        r = self.config.retention
        self._next_sweep_ms = now_ms + r.sweep_every_ms
        gone = {m for m, t in self.resulted.items() if now_ms - t >= r.resulted_market_ms}
        gone |= {m for m, t in self.market_seen.items() if now_ms - t >= r.idle_market_ms}
        for market in sorted(gone):
            self.markets.pop(market, None)
            self.market_seen.pop(market, None)
            self.resulted.pop(market, None)
            self.bets.forget_market(market)
            if self.predictor is not None:
                self.predictor.evict(market)
            if self.detectors is not None:
                self.detectors.forget_market(market)
        self.evicted_markets += len(gone)
        self.bets.evict(now_ms, r.idle_market_ms, r.late_ms)
        if self.predictor is not None:  # markets the models heard of only by quotes: idle ones
            for market in self.predictor.idle_markets(now_ms, r.idle_market_ms):
                self.predictor.evict(market)
        if self.detectors is not None:
            self.detectors.evict(now_ms, r.idle_market_ms, r.idle_user_ms, r.idle_service_ms, r.late_ms)

    def skip(self, offset: int) -> None:
        """A record at ``offset`` was rejected before reaching the windows: reflect it anyway."""
        self.offset = max(self.offset, offset)

    def on_idle(self, wall_ms: int) -> list[Emission]:
        """Finals of windows a quiet partition's watermark has passed (see WindowEngine.on_idle);
        for a quiet bets partition, once, an idle clock mark (the user stage stops waiting
        for it). The caller calls this only when the partition is caught up."""
        out = Output()
        quiet = self.last_wall_ms is None or wall_ms - self.last_wall_ms >= self.config.idle_timeout_ms
        if self.repartitions and quiet and not self.idle_sent:
            self._mark_clock(out, idle=True, wall_ms=wall_ms)
        out.emissions += [
            self._final(name, r) for name, e in self.engines.items() for r in e.on_idle(wall_ms)
        ]
        return out.emissions

    def take_currents(self, wall_ms: int = 0, interval_ms: int = 0) -> list[Emission]:
        """The current updates due now, oldest change first: a throttle with a leading edge.

        A window changed since its last update is due if it has had no update for
        ``interval_ms`` (or never had one): the first update of a window leaves at once,
        later ones at most once per interval, each the newest version (ten changes within an
        interval make one update). A window that is not due stays pending for a later call,
        so its last change is never lost; a window that closed meanwhile yields only its
        final. ``interval_ms`` 0 takes every pending update."""
        if not self._pending:
            return []
        if interval_ms <= 0:
            due, self._pending = self._pending, {}
            return [self._emission(name, result) for (name, _, _), result in due.items()]
        sent_at = self._sent_at
        due = {}
        for slot, result in self._pending.items():
            last = sent_at.get(slot)
            if last is None or wall_ms - last >= interval_ms:
                due[slot] = result
        for slot in due:
            del self._pending[slot]
            sent_at[slot] = wall_ms
        return [self._emission(name, result) for (name, _, _), result in due.items()]

    def resumed(self, wall_ms: int) -> None:
        """Restored from a snapshot: the silence before now was a restart, not a quiet market."""
        self.__dict__.setdefault("_sent_at", {})  # snapshots written before the throttle had it
        if self.predictor is not None:  # ... or before the predictor kept its market views
            self.predictor.__dict__.setdefault("views", {})
        for engine in self.engines.values():
            if engine.last_arrival_ms is not None:
                engine.last_arrival_ms = wall_ms

    def flush(self) -> list[Emission]:
        """Finals of every open window (the end of a bounded input)."""
        return [self._final(name, r) for name, e in self.engines.items() for r in e.flush()]

    @property
    def has_pending_currents(self) -> bool:
        return bool(self._pending)

    @property
    def late_events(self) -> dict[str, int]:
        """Late events per engine (kind, or ``<kind>@<spec>``)."""
        return {name: e.late_events for name, e in self.engines.items()}

    @property
    def open_windows(self) -> int:
        return sum(e.open_windows for e in self.engines.values())

    def _feed(self, out: Output, kind: str, key: Any, event_ms: int, value: Any, wall_ms: int) -> None:
        """Fold a value into every engine of ``kind`` (one per spec that names it)."""
        for name in self.lanes[kind]:
            result = self.engines[name].process(key, event_ms, value, wall_ms)
            if self.currents:
                pending = self._pending
                updates = result.updates
                pick = self.current_of_key.get(name)
                if updates and pick is not None:
                    # one current per key: a hopping event updates size / advance windows and a
                    # screen wants the one that closes first (the whole size up to now); a
                    # sliding spec opens a window per event and a screen wants the newest. The
                    # throttle's slot is the key's (start -1), so a busy key's windows coalesce.
                    update = updates[pick]
                    slot = (name, update.key, -1)
                    pending.pop(slot, None)
                    pending[slot] = update
                else:
                    for update in updates:
                        slot = (name, update.key, update.start)
                        pending.pop(slot, None)  # re-inserted last: the order of take_currents()
                        pending[slot] = update
            if result.finals:
                out.emissions.extend(self._final(name, r) for r in result.finals)
            if result.late is not None:
                late = result.late
                out.late.append(Late(name, late.event_ms, late.watermark, late.missed))

    def _final(self, name: str, result: WindowResult[Any, Any]) -> Emission:
        slot = (name, result.key, result.start)
        if name in self.current_of_key:  # one slot per key
            slot = (name, result.key, -1)
            pending = self._pending.get(slot)
            if pending is not None and pending.start != result.start:
                return self._emission(name, result)  # a newer window's update is still due
        self._pending.pop(slot, None)  # the final supersedes it
        self._sent_at.pop(slot, None)  # closed: the throttle forgets it
        return self._emission(name, result)

    def _emission(self, name: str, result: WindowResult[Any, Any]) -> Emission:
        kind, spec, size_ms = self.spec_of[name]
        key = (result.key, str(self.partition)) if kind == "user" else result.key
        wid = window_id(name, key, result.start, result.end)  # the 1m ids as they always were
        record: dict[str, Any] = {
            "event_id": result_id(wid, result.version, result.final),
            # a final happens when its window ends (event time); a current update at its newest event
            "event_time": result.end - 1 if result.final else _newest_ms(kind, result.aggregate, result.end),
            "window_id": wid,
            "window_start": result.start,
            "window_end": result.end,
            "version": result.version,
            "final": result.final,
            "spec": spec,
        }
        record.update(FIELDS_OF_KIND[kind](result.key, result.aggregate, size_ms, result.final))
        if kind == "user":
            record["source_partition"] = self.partition
        return Emission(name, EVENT_TYPE_OF_KIND[kind], record)


def alert_record(alert: AlertEvent, partition: int) -> dict[str, Any]:
    """An AlertChanged record. Its id covers the partition: one user's bets span partitions,
    so two partitions may notify about the same fingerprint."""
    name = f"alert:{alert.fingerprint}:{alert.status}:{alert.event_ms}:{alert.signals}:{partition}"
    return {
        "event_id": uuid5(NAMESPACE, name),
        "event_time": alert.event_ms,
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "status": alert.status,
        "severity": alert.severity,
        "value": alert.value,
        "labels": dict(alert.labels),
        "group_key": alert.group,
        "starts_at": alert.starts_ms,
        "signals": alert.signals,
        "summary": alert.summary,
        "source_partition": partition,
    }


def _newest_ms(kind: str, aggregate: Any, end: int) -> int:
    if kind == "price" and aggregate.last is not None:
        return int(aggregate.last.stamp[0])
    if kind == "market":
        return max((int(s.last.stamp[0]) for s in aggregate.values() if s.last), default=end - 1)
    return end - 1


def _price_fields(key: tuple[str, str, str], stats: PriceStats, size_ms: int, final: bool) -> dict[str, Any]:
    assert stats.first is not None and stats.last is not None
    return {
        "market_id": key[0],
        "selection_id": key[1],
        "bookmaker": key[2],
        "open": stats.first.odds,
        "high": stats.high,
        "low": stats.low,
        "last": stats.last.odds,
        "changes": stats.changes,
        "implied_probability": stats.implied_probability,
        "velocity_pct_per_min": stats.velocity_pct_per_min,
        "open_time": stats.first.stamp[0],
        "last_time": stats.last.stamp[0],
    }


def _market_fields(key: str, book: Book, size_ms: int, final: bool) -> dict[str, Any]:
    return {"market_id": key, **book_record(book, final)}


def _money(name: str, amount_cents: int) -> dict[str, Any]:
    """A money figure twice: exact (``<name>_exact``, decimal) and as the double v1 readers know."""
    return {name: amount_cents / 100, f"{name}_exact": as_decimal(amount_cents)}


def _bet_fields(key: str, stats: BetStats, size_ms: int, final: bool) -> dict[str, Any]:
    liabilities = stats.liabilities_cents()
    shares = stats.money_shares()
    return {
        "market_id": key,
        "bets": stats.count,
        "average_stake": stats.average_stake,
        "cancelled": stats.cancelled,
        "cashed_out": stats.cashed_out,
        **_money("turnover", stats.turnover_cents),
        **_money("worst_case_liability", stats.worst_case_liability_cents),
        **_money("cancelled_stakes", stats.cancelled_cents),
        **_money("cash_out_paid", stats.paid_cents),
        "selections": [
            {
                "selection_id": s.selection_id,
                "bets": s.bets,
                "vwap": s.vwap,
                "money_share": shares[s.selection_id],
                "cancelled": s.cancelled,
                "cashed_out": s.cashed_out,
                **_money("stakes", s.net_stakes_cents),
                **_money("liability", liabilities[s.selection_id]),
                **_money("cancelled_stakes", s.cancelled_cents),
                **_money("cash_out_paid", s.paid_cents),
            }
            for s in stats.by_selection
        ],
    }


def _service_fields(key: str, stats: SystemStats, size_ms: int, final: bool) -> dict[str, Any]:
    return {
        "service": key,
        "calls": stats.calls,
        "errors": stats.errors,
        "error_rate": stats.error_rate,
        "heartbeats": len(stats.heartbeats),
        "events_per_second": stats.events_per_second(size_ms),
        "max_heartbeat_gap_ms": stats.max_heartbeat_gap_ms,
    }


def _route_fields(key: tuple[str, str], stats: SystemStats, size_ms: int, final: bool) -> dict[str, Any]:
    return {
        "service": key[0],
        "route": key[1],
        "calls": stats.calls,
        "errors": stats.errors,
        "error_rate": stats.error_rate,
        "latency_p50_ms": stats.latency_percentile(50),
        "latency_p95_ms": stats.latency_percentile(95),
        "latency_p99_ms": stats.latency_percentile(99),
        "latency_max_ms": stats.latencies[-1],
    }


def _user_fields(key: str, stats: UserStats, size_ms: int, final: bool) -> dict[str, Any]:
    return {
        "user_id": key,
        "bets": stats.bets,
        **_money("staked", stats.staked_cents),
        "settled": stats.settled,
        "won": stats.won,
        "sum_t": stats.sum_t,
        "sum_tt": stats.sum_tt,
        "sum_s": stats.sum_s,
        "sum_ts": stats.sum_ts,
    }


# kind -> its aggregator, given the window size
AGGREGATORS: dict[str, Any] = {
    "market": lambda size: BookAggregator(),
    "price": lambda size: PriceAggregator(),
    "bets": lambda size: BetAggregator(),
    "service": lambda size: SystemAggregator(),
    "route": lambda size: SystemAggregator(),
    "user": lambda size: UserAggregator(period_ms=size),
}

FIELDS_OF_KIND: dict[str, Any] = {
    "market": _market_fields,
    "price": _price_fields,
    "bets": _bet_fields,
    "service": _service_fields,
    "route": _route_fields,
    "user": _user_fields,
}
