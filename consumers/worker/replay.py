"""``oddstream replay``: rebuild every final window table from offset 0, then compare with live.

Reads the source topics (odds, bets, system) from their first offset up to the end offsets
seen at start, through the same per-partition processors and the same record handling as
the worker (``consumers.worker.outputs.apply_record``), and writes the final window rows and
late events into a fresh namespace:

* embedded chDB: a new database directory ``<data_dir>/replays/<name>`` (the live one is
  owned by the store process);
* a ClickHouse server: a new database ``oddstream_replay_<name>`` on that server.

At the end of the input every window still open is closed (a bounded input has no
future), so a replay may hold finals for windows that are still open live: those are
reported, not counted as differences.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from confluent_kafka import Consumer, TopicPartition
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from consumers.store.clickhouse import Store, migrate
from consumers.store.insight_rows import INSIGHT_COLUMNS
from consumers.store.window_rows import DERIVED_COLUMNS, FINAL_COLUMNS, LATE_COLUMNS, final_rows
from consumers.worker.app import ANALYSED_SOURCES
from consumers.worker.outputs import apply_record
from oddstream.codecs import build_codec
from oddstream.errors import OddstreamError, StoreError
from oddstream.settings import Settings
from schemas.intake import Intake
from schemas.topics import Topics
from streams.processor import Emission, Output, PartitionProcessor

TIME_FIELDS = ("window_start", "window_end", "open_time", "last_time", "event_time", "starts_at")
TIME_COLUMNS = {
    "window_start", "window_end", "open_time", "last_time", "event_time", "watermark", "starts_at",
    "prediction_time",
}  # fmt: skip
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COMPARED_TABLES = (*DERIVED_COLUMNS, "late_events")
Rows = set[tuple[Any, ...]]


@dataclass
class Rebuilt:
    """What one replay wrote."""

    target: str
    records: int = 0
    rejected: int = 0
    rows: dict[str, int] = field(default_factory=dict)


def replay(settings: Settings, name: str, show_progress: bool = True) -> tuple[Rebuilt, Store]:
    """Rebuild the final tables into a fresh namespace ``name``; return the counts and its store."""
    if not re.fullmatch(r"[a-zA-Z0-9_]+", name):
        raise OddstreamError(f"replay name {name!r}: use letters, digits and '_'")
    target = _fresh_store(settings, name)
    migrate(target)
    intake = Intake(build_codec(settings), Topics(settings.topic_prefix), settings.limits())
    rebuilt = Rebuilt(redacted(target.dsn))
    pending: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    def flush_rows() -> None:
        for table, rows in pending.items():
            columns = LATE_COLUMNS if table == "late_events" else DERIVED_COLUMNS[table]
            target.insert(table, rows, columns)
            rebuilt.rows[table] = rebuilt.rows.get(table, 0) + len(rows)
        pending.clear()

    def collect(emissions: list[Emission]) -> None:
        for e in emissions:
            if e.final:
                for table, rows in final_rows(e.event_type, _with_datetimes(e.record)).items():
                    pending[table].extend(rows)

    topics = [f"{settings.topic_prefix}{suffix}" for suffix in ANALYSED_SOURCES]
    ends = _end_offsets(settings, topics)
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
                (topic, partition), PartitionProcessor(settings.window_config(), partition=partition)
            )
            output: Output = apply_record(
                processor, intake, (topic, partition, offset), message.key(), message.value(),
                message.headers(), message.timestamp()[1], 0,
            )  # fmt: skip
            processor.discard_currents()
            rebuilt.records += 1
            rebuilt.rejected += output.rejected is not None
            collect(output.emissions)
            for late in output.late:
                start, end = late.missed[0]
                pending["late_events"].append(
                    (topic, partition, offset, late.kind, _dt(late.event_ms), _dt(late.watermark), _dt(start),
                     _dt(end), message.value() or b"")
                )  # fmt: skip
            if rebuilt.records % 20_000 == 0:
                flush_rows()
            progress.advance(task)
        for processor in processors.values():
            collect(processor.flush())
        flush_rows()
    return rebuilt, target


@dataclass
class Comparison:
    table: str
    equal: int
    only_replayed: int  # windows final in the replay, still open live
    only_live: int
    different: int

    @property
    def ok(self) -> bool:
        return self.only_live == 0 and self.different == 0


def compare(replayed: Callable[[str], list[Any]], live: Callable[[str], list[Any]]) -> list[Comparison]:
    """Table by table: rows equal, only in the replay, only live, and keys whose values differ."""
    out = []
    for table in COMPARED_TABLES:
        key_length, query = comparison_query(table)
        a = {tuple(r[:key_length]): tuple(r[key_length:]) for r in _normal(replayed(query))}
        b = {tuple(r[:key_length]): tuple(r[key_length:]) for r in _normal(live(query))}
        both = set(a) & set(b)
        different = sum(1 for k in both if a[k] != b[k])
        out.append(
            Comparison(table, len(both) - different, len(set(a) - set(b)), len(set(b) - set(a)), different)
        )
    return out


def comparison_query(table: str) -> tuple[int, str]:
    """(number of key columns, SELECT) of a table's comparable columns (times as ms, ids as text)."""
    if table == "late_events":
        columns = [c for c in LATE_COLUMNS if c != "original"]
        keys = 4
    elif table in INSIGHT_COLUMNS:
        columns = list(INSIGHT_COLUMNS[table])
        keys = 1  # the deterministic event_id
    else:
        columns = list(FINAL_COLUMNS[table])
        keys = next(i for i, c in enumerate(columns) if c == "window_end")  # key columns + window_start
    rendered = [
        f"toUnixTimestamp64Milli({c})"
        if c in TIME_COLUMNS
        else f"toString({c})"
        if c in ("window_id", "event_id")
        else c
        for c in columns
    ]
    return keys, f"SELECT {', '.join(rendered)} FROM {table} FINAL ORDER BY {', '.join(rendered[:keys])}"


def digests(read: Callable[[str], list[Any]]) -> dict[str, str]:
    """table -> SHA-256 of its comparable rows in key order: equal digests, identical tables."""
    out = {}
    for table in COMPARED_TABLES:
        _, query = comparison_query(table)
        out[table] = hashlib.sha256(json.dumps(_normal(read(query))).encode()).hexdigest()[:16]
    return out


def store_reader(store: Store) -> Callable[[str], list[Any]]:
    return lambda sql: [list(r) for r in store.query(sql, readonly=True)[1]]


def live_reader(settings: Settings) -> Callable[[str], list[Any]]:
    """The live tables: through the store's endpoint when it owns the embedded database."""
    if not settings.clickhouse_is_embedded:
        return store_reader(Store(settings.clickhouse))

    def query(sql: str) -> list[Any]:
        response = httpx.post(f"{settings.sql_endpoint}/sql", content=sql, timeout=300)
        if response.status_code != 200:
            raise OddstreamError(f"live query failed: {response.text}")
        return list(response.json()["rows"])

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
            message = consumer.poll(1.0)
            if message is None:
                if time.monotonic() - idle_since > 60:
                    raise OddstreamError(f"replay stalled with {len(remaining)} partitions unread")
                continue
            idle_since = time.monotonic()
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
