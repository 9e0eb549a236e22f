"""``oddstream replay``: rebuild every final window table from offset 0, then compare with live.

Reads the source topics (odds, bets, system) and ``bets.by-user`` (the bets by user, which
the user windows come from) from their first offset up to the end offsets seen at start,
through the same per-partition processors and the same record handling as the worker
(``consumers.worker.outputs.apply_record``), and writes the final window rows and late
events into a fresh namespace:

* embedded chDB: a new database directory ``<data_dir>/replays/<name>`` (the live one is
  owned by the store process);
* a ClickHouse server: a new database ``oddstream_replay_<name>`` on that server.

At the end of the input every window still open is closed (a bounded input has no
future). Against a running stack, live goes on past the replay's input, so the comparison
draws a horizon (:class:`Horizon`): per source topic, the newest event time the replay saw
on its slowest partition, minus the window delay and grace. A row whose window ended (or
whose event time lies) before the horizon is *settled*: the same log gives the same row
live and replayed, and any difference is reported as one (exit 1), naming the table and
the row. A row after the horizon, or a late event past the replay's end offsets, may
still change live: it is counted as "open", not as a difference. Before comparing, the
replay waits (up to ``wait_s``) until the live worker and store have caught up with its
input, so a lagging stack is not mistaken for a lossy one.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from confluent_kafka import Consumer, TopicPartition
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consumers.store.clickhouse import Store, create_spec_tables, migrate
from consumers.store.insight_rows import INSIGHT_COLUMNS
from consumers.store.window_rows import (
    FINAL_COLUMNS,
    LATE_COLUMNS,
    base_table,
    derived_columns,
    final_rows,
    spec_tables,
)
from consumers.worker.app import ANALYSED_SOURCES
from consumers.worker.outputs import apply_record
from oddstream.codecs import build_codec
from oddstream.errors import OddstreamError, StoreError
from oddstream.kafka.admin import partition_counts
from oddstream.kafka.lag import committed_offsets, end_offsets
from oddstream.settings import Settings
from schemas.intake import Intake
from schemas.topics import Topics
from streams.processor import Emission, Output, PartitionProcessor
from streams.specs import WindowSpec

TIME_FIELDS = ("window_start", "window_end", "open_time", "last_time", "event_time", "starts_at")
TIME_COLUMNS = {
    "window_start", "window_end", "open_time", "last_time", "event_time", "watermark", "starts_at",
    "prediction_time",
}  # fmt: skip
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Rows = set[tuple[Any, ...]]
LIVE_PAGE_ROWS = 50_000
READ_BATCH = 2_000  # records per consume() call
PROGRESS_EVERY = 1_000  # records per progress bar update


@dataclass
class Rebuilt:
    """What one replay wrote, and where its input ended."""

    target: str
    records: int = 0
    rejected: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> end offset
    newest: dict[tuple[str, int], int] = field(default_factory=dict)  # -> newest event time seen
    owner: dict[tuple[str, str], int] = field(default_factory=dict)  # (topic, market or service) -> partition


def compared_tables(specs: tuple[WindowSpec, ...]) -> tuple[str, ...]:
    """Every table a replay rebuilds: the derived ones of every spec, and the late events."""
    return (*derived_columns(specs), "late_events")


# the source topic whose partitions' time decides whether a table's row is settled
TOPIC_OF_TABLE = {
    "market_windows_1m": "odds", "market_books_1m": "odds", "price_windows_1m": "odds",
    "predictions": "odds", "value_signals": "odds", "model_metrics": "odds", "model_drift": "odds",
    "bet_windows_1m": "bets", "user_window_parts_1m": "bets.by-user",
    "service_windows_1m": "system", "route_windows_1m": "system",
}  # fmt: skip
TIME_COLUMN = {"predictions": "prediction_time"}  # insights: the column that dates a row
ENTITY_COLUMNS = ("market_id", "service")  # what a table's rows are about, and so their partition


@dataclass(frozen=True)
class Horizon:
    """Which rows the replay's input settles: see the module docstring.

    A row belongs to the source partition that produced it: the one the replay saw its
    market or service on (user partials, model metrics and alerts name their partition).
    It is settled if its time lies at least the window delay + grace before the newest
    event time the replay read from that partition. A row of a market or service the
    replay never saw is measured against the topic's slowest partition."""

    prefix: str
    margin_ms: int  # window delay + grace: what may still arrive for a time after the newest
    ends: dict[tuple[str, int], int]
    newest: dict[tuple[str, int], int]
    owner: dict[tuple[str, str], int]

    @classmethod
    def of(cls, rebuilt: Rebuilt, settings: Settings) -> Horizon:
        margin = settings.window_delay_ms + settings.window_grace_ms
        return cls(
            settings.topic_prefix, margin, dict(rebuilt.ends), dict(rebuilt.newest), dict(rebuilt.owner)
        )

    def cutoff(self, suffix: str | None, partition: int | None = None) -> int:
        """Rows up to this time are settled: of one partition, or the slowest of a topic (or
        of every source topic when ``suffix`` is None)."""
        times = [
            t
            for (topic, p), t in self.newest.items()
            if (suffix is None or topic == self.prefix + suffix) and (partition is None or p == partition)
        ]
        return min(times) - self.margin_ms if times else -(2**62)

    def describe(self) -> str:
        """The slowest partition's cutoff of each source topic."""
        return ", ".join(
            f"{suffix} {_dt(ms).isoformat(timespec='milliseconds') if ms > 0 else 'nothing'}"
            for suffix in ANALYSED_SOURCES
            for ms in [self.cutoff(suffix)]
        )

    def settled(self, table: str, columns: list[str], row: list[Any]) -> bool:
        named = dict(zip(columns, row, strict=True))
        if table == "late_events":
            end = self.ends.get((named["origin_topic"], named["origin_partition"]))
            return end is not None and named["origin_offset"] < end
        suffix = TOPIC_OF_TABLE.get(base_table(table))  # None: alerts, from any source topic
        partition = named.get("source_partition")
        if partition is None and suffix is not None:
            entity = next((named[c] for c in ENTITY_COLUMNS if c in named), None)
            partition = self.owner.get((self.prefix + suffix, str(entity)))
        cutoff = self.cutoff(suffix, partition)
        when = named.get("window_end", named.get(TIME_COLUMN.get(table, "event_time")))
        return isinstance(when, int) and when <= cutoff


def replay(settings: Settings, name: str, show_progress: bool = True) -> tuple[Rebuilt, Store]:
    """Rebuild the final tables into a fresh namespace ``name``; return the counts and its store."""
    if not re.fullmatch(r"[a-zA-Z0-9_]+", name):
        raise OddstreamError(f"replay name {name!r}: use letters, digits and '_'")
    target = _fresh_store(settings, name)
    migrate(target)
    create_spec_tables(target, spec_tables(settings.specs()))
    derived = derived_columns(settings.specs())
    state_key = settings.worker_state_key.get_secret_value().encode()  # bets.by-user is signed with it
    intake = Intake(build_codec(settings), Topics(settings.topic_prefix), settings.limits(), state_key)
    rebuilt = Rebuilt(redacted(target.dsn))
    pending: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    def flush_rows() -> None:
        for table, rows in pending.items():
            columns = LATE_COLUMNS if table == "late_events" else derived[table]
            target.insert(table, rows, columns)
            rebuilt.rows[table] = rebuilt.rows.get(table, 0) + len(rows)
        pending.clear()

    def collect(emissions: list[Emission], topic: str, partition: int) -> None:
        for e in emissions:
            if e.event_type == "UserBetRecorded":
                continue  # the user stage's input: the replay reads bets.by-user as it was written live
            entity = next((e.record[c] for c in ENTITY_COLUMNS if c in e.record), None)
            if entity is not None:
                rebuilt.owner[(topic, str(entity))] = partition
            if e.final:
                for table, rows in final_rows(e.event_type, _with_datetimes(e.record)).items():
                    pending[table].extend(rows)

    topics = [f"{settings.topic_prefix}{suffix}" for suffix in ANALYSED_SOURCES]
    ends = _end_offsets(settings, topics)
    bets = Topics(settings.topic_prefix).bets  # the user stage waits for each of its partitions, as live
    config = replace(
        settings.window_config(),
        source_partitions=partition_counts(settings, [bets]).get(bets, settings.topic_partitions),
    )
    processors: dict[tuple[str, int], PartitionProcessor] = {}
    with Progress(
        TextColumn("[bold]replaying[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not show_progress,
    ) as progress:  # fmt: skip
        task = progress.add_task("replay", total=sum(ends.values()))
        for message in _read(settings, ends):
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            processor = processors.get((topic, partition)) or processors.setdefault(
                (topic, partition),
                PartitionProcessor(config, partition=partition, currents=False),
            )
            output: Output = apply_record(
                processor, intake, (topic, partition, offset), message.key(), message.value(),
                message.headers(), message.timestamp()[1], 0,
            )  # fmt: skip
            rebuilt.records += 1
            rebuilt.rejected += output.rejected is not None
            collect(output.emissions, topic, partition)
            for late in output.late:
                start, end = late.missed[0]
                pending["late_events"].append(
                    (topic, partition, offset, late.kind, _dt(late.event_ms), _dt(late.watermark), _dt(start),
                     _dt(end), message.value() or b"")
                )  # fmt: skip
            if rebuilt.records % PROGRESS_EVERY == 0:
                progress.advance(task, PROGRESS_EVERY)
                if rebuilt.records % 20_000 == 0:
                    flush_rows()
        progress.update(task, completed=rebuilt.records)
        rebuilt.ends = dict(ends)
        by_user = Topics(settings.topic_prefix).bets_by_user
        for (topic, partition), processor in processors.items():
            newest = max(e.max_event_ms for e in processor.engines.values())
            if topic == by_user:  # the user windows close by the slowest bets partition's clock
                newest = min(newest, processor.engines["user"].watermark + config.delay_ms)
            rebuilt.newest[(topic, partition)] = newest
            collect(processor.flush(), topic, partition)
        flush_rows()
    return rebuilt, target


@dataclass
class Comparison:
    table: str
    equal: int
    only_replayed: int  # settled rows the live table lacks
    only_live: int  # settled rows the replay lacks
    different: int  # settled rows whose values differ
    open: int = 0  # unsettled rows that differ or are on one side only (still changing live)
    examples: list[str] = field(default_factory=list)  # the first differences, by key

    @property
    def ok(self) -> bool:
        return self.only_live == 0 and self.different == 0 and self.only_replayed == 0


def compare(
    replayed: Callable[[str], list[Any]],
    live: Callable[[str], list[Any]],
    tables: tuple[str, ...],
    horizon: Horizon | None = None,
) -> list[Comparison]:
    """Table by table: settled rows equal, only in the replay, only live, or different; rows
    past the ``horizon`` are compared too, but a mismatch there counts as open."""
    out = []
    for table in tables:
        key_length, query, columns = comparison_query(table)
        a = {tuple(r[:key_length]): r for r in _normal(replayed(query))}
        b = {tuple(r[:key_length]): r for r in _normal(live(query))}
        result = Comparison(table, 0, 0, 0, 0)
        for key in sorted(set(a) | set(b), key=str):
            mine, theirs = a.get(key), b.get(key)
            if mine == theirs:
                result.equal += 1
                continue
            row = mine if mine is not None else theirs
            assert row is not None
            if horizon is not None and not horizon.settled(table, columns, row):
                result.open += 1
                continue
            if theirs is None:
                result.only_replayed += 1
                what = "missing live"
            elif mine is None:
                result.only_live += 1
                what = "only live"
            else:
                result.different += 1
                what = "differs: " + ", ".join(
                    f"{c} {x!r} live {y!r}" for c, x, y in zip(columns, mine, theirs, strict=True) if x != y
                )
            if len(result.examples) < 5:
                shown = ", ".join(f"{c}={v}" for c, v in zip(columns[:key_length], key, strict=True))
                result.examples.append(f"{table} ({shown}) {what}")
        out.append(result)
    return out


def comparison_query(table: str) -> tuple[int, str, list[str]]:
    """(number of key columns, SELECT, column names) of a table's comparable columns (times
    as ms, ids as text)."""
    if table == "late_events":
        columns = [c for c in LATE_COLUMNS if c != "original"]
        keys = 4
    elif table in INSIGHT_COLUMNS:
        columns = list(INSIGHT_COLUMNS[table])
        keys = 1  # the deterministic event_id
    else:
        columns = list(FINAL_COLUMNS[base_table(table)])
        keys = next(i for i, c in enumerate(columns) if c == "window_end")  # key columns + window_start
    rendered = [
        f"toUnixTimestamp64Milli({c})"
        if c in TIME_COLUMNS
        else f"toString({c})"
        if c in ("window_id", "event_id")
        else c
        for c in columns
    ]
    select = f"SELECT {', '.join(rendered)} FROM {table} FINAL ORDER BY {', '.join(rendered[:keys])}"
    return keys, select, columns


def digests(read: Callable[[str], list[Any]], tables: tuple[str, ...]) -> dict[str, str]:
    """table -> SHA-256 of its comparable rows in key order: equal digests, identical tables."""
    out = {}
    for table in tables:
        _, query, _ = comparison_query(table)
        out[table] = hashlib.sha256(json.dumps(_normal(read(query))).encode()).hexdigest()[:16]
    return out


def wait_for_live(settings: Settings, ends: dict[tuple[str, int], int], wait_s: float) -> str | None:
    """Wait until the live worker has committed the replay's input and the store has
    committed what the worker wrote by then; None when it has, else why not."""
    deadline = time.monotonic() + wait_s
    behind = 0
    while time.monotonic() < deadline:
        committed = committed_offsets(settings, settings.worker_id, list(ends))
        behind = sum(max(end - max(committed.get(tp, -1), 0), 0) for tp, end in ends.items())
        if behind == 0:
            break
        time.sleep(0.5)
    else:
        return f"the live worker is {behind:,} records behind the replay's input after {wait_s:g} s"
    topics = Topics(settings.topic_prefix)
    derived = end_offsets(settings, [*topics.windows(), *topics.insights(), topics.late])
    while time.monotonic() < deadline:
        committed = committed_offsets(settings, f"{settings.topic_prefix}store", list(derived))
        behind = sum(max(end - max(committed.get(tp, -1), 0), 0) for tp, end in derived.items())
        if behind == 0:
            return None
        time.sleep(0.5)
    return f"the live store is {behind:,} records behind the worker's output after {wait_s:g} s"


def store_reader(store: Store) -> Callable[[str], list[Any]]:
    return lambda sql: [list(r) for r in store.query(sql, readonly=True)[1]]


def live_reader(settings: Settings) -> Callable[[str], list[Any]]:
    """The live tables: through the store's endpoint when it owns the embedded database."""
    if not settings.clickhouse_is_embedded:
        return store_reader(Store(settings.clickhouse))

    headers = {}
    if settings.sql_token is not None:
        headers["Authorization"] = f"Bearer {settings.sql_token.get_secret_value()}"

    def query(sql: str) -> list[Any]:
        # in pages, so a large table stays within the endpoint's result limits
        rows: list[Any] = []
        while True:
            page = f"{sql} LIMIT {LIVE_PAGE_ROWS} OFFSET {len(rows)}"
            response = httpx.post(f"{settings.sql_endpoint}/sql", content=page, headers=headers, timeout=300)
            if response.status_code != 200:
                raise OddstreamError(f"live query failed: {response.text}")
            got = response.json()["rows"]
            rows += got
            if len(got) < LIVE_PAGE_ROWS:
                return rows

    try:
        httpx.get(f"{settings.sql_endpoint}/healthz", timeout=5)
    except httpx.HTTPError:
        try:
            return store_reader(Store(settings.clickhouse))  # no store running: open it ourselves
        except StoreError as exc:
            raise OddstreamError(f"cannot read the live tables: {exc}") from exc
    return query


def redacted(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        parts = parts._replace(netloc=f"{parts.username}:***@{parts.hostname}:{parts.port}")
    return urlunsplit(parts)


def default_name() -> str:
    return datetime.now(UTC).strftime("r%Y%m%d_%H%M%S")


# -- internals -------------------------------------------------------------------


def _fresh_store(settings: Settings, name: str) -> Store:
    if settings.clickhouse_is_embedded:
        path = settings.data_dir.resolve() / "replays" / name
        if path.exists():
            raise OddstreamError(f"{path} exists: replays go into a fresh namespace, pick another --name")
        return Store(f"chdb://{path}")
    parts = urlsplit(settings.clickhouse)
    database = f"oddstream_replay_{name}"
    Store(settings.clickhouse).command(f"CREATE DATABASE {database}")  # fails if it exists: fresh only
    return Store(urlunsplit(parts._replace(path=f"/{database}")))


def _end_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "oddstream-replay"})
    try:
        ends = {}
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=30).topics[topic]
            if metadata.error is not None:
                raise OddstreamError(f"cannot read {topic}: {metadata.error}")
            for partition in metadata.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                if high > low:
                    ends[(topic, partition)] = high
        return ends
    finally:
        consumer.close()


def _read(settings: Settings, ends: dict[tuple[str, int], int]) -> Iterator[Any]:
    """Every record below the end offsets, each partition in offset order."""
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap, "group.id": "oddstream-replay", "enable.auto.commit": False,
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    remaining = dict(ends)
    try:
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        idle_since = time.monotonic()
        while remaining:
            batch = consumer.consume(num_messages=READ_BATCH, timeout=1.0)
            if not batch:
                if time.monotonic() - idle_since > 60:
                    raise OddstreamError(f"replay stalled with {len(remaining)} partitions unread")
                continue
            idle_since = time.monotonic()
            for message in batch:
                if message.error():
                    raise OddstreamError(f"replay read failed: {message.error()}")
                key = (message.topic(), message.partition())
                end = remaining.get(key)  # type: ignore[arg-type]
                if end is None or message.offset() >= end:  # type: ignore[operator]
                    continue
                yield message
                if message.offset() + 1 >= end:  # type: ignore[operator]
                    del remaining[key]  # type: ignore[arg-type]
    finally:
        consumer.close()


def _dt(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)  # integer arithmetic: no float rounding


def _with_datetimes(record: dict[str, Any]) -> dict[str, Any]:
    return {k: _dt(v) if k in TIME_FIELDS and isinstance(v, int) else v for k, v in record.items()}


def _normal(rows: list[Any]) -> list[list[Any]]:
    """Both sides as JSON would carry them, so a direct read and an HTTP read compare equal."""
    return json.loads(json.dumps([list(r) for r in rows], default=str))  # type: ignore[no-any-return]
