"""The store role: Kafka -> ClickHouse sink plus the read-only SQL endpoint.

Offsets are committed only after the rows are in ClickHouse (at-least-once);
the tables' ReplacingMergeTree keys make a redelivered batch collapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumers.store.clickhouse import QueryBusy, QueryLimits, Store, create_spec_tables, migrate, redact
from consumers.store.raw_tables import RAW_EVENT_TYPES, columns, event_type_table, field_names, raw_row
from consumers.store.rows import DEAD_LETTER_COLUMNS, WINDOW_COLUMNS, window_rows
from consumers.store.sql_guard import QueryRefused, check_query
from consumers.store.window_rows import (
    KIND_OF_EVENT,
    LATE_COLUMNS,
    derived_columns,
    final_rows,
    spec_tables,
)
from oddstream.codecs import build_codec
from oddstream.errors import EventError, InvalidEvent, StoreError
from oddstream.kafka import late
from oddstream.kafka.deadletter import (
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    REASON,
    STAGE,
    dead_letter_headers,
    processing_failure,
)
from oddstream.kafka.late import parse_late_headers
from oddstream.kafka.registry import learn_schema_ids
from oddstream.metrics import (
    PROCESSING_ERRORS,
    REJECTED_RECORDS,
    SQL_QUERIES,
    STORE_BATCHES,
    STORE_ROWS,
    exposition,
)
from oddstream.settings import Settings
from schemas.catalog import load_catalog
from schemas.intake import Intake
from schemas.jsonable import jsonable
from schemas.topics import SOURCE_TOPICS, Topics
from streams.specs import PRIMARY

log = logging.getLogger(__name__)
# webhook delivery history: event type -> table (columns straight from the schema)
# derived topics the store keeps as they were written, each record with its Kafka position
LOGGED_TABLES = {
    "WebhookAttempted": "webhook_attempts",
    "WebhookMessageFailed": "webhook_dead_letters",
    "UserBetRecorded": "user_bets",
}


MAX_SQL_BODY_BYTES = 256 * 1024


@dataclass
class Rows:
    """A table's rows in one batch, each with the Kafka record it came from."""

    values: list[tuple[Any, ...]] = field(default_factory=list)
    origins: list[Any] = field(default_factory=list)

    def add(self, row: tuple[Any, ...], origin: Any) -> None:
        self.values.append(row)
        self.origins.append(origin)


class StoreService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.codec = build_codec(settings)
        self.intake = Intake(
            self.codec, self.topics, settings.limits(), settings.worker_state_key.get_secret_value().encode()
        )
        self.store = Store(settings.clickhouse)
        self.reader = self.store.reader(query_limits(settings))
        self.rows_written = 0
        self.catalog = load_catalog()
        self._raw_columns = {
            event_type_table(t): [name for name, _ in columns(self.catalog, t)] for t in RAW_EVENT_TYPES
        }
        for event_type, table in LOGGED_TABLES.items():
            self._raw_columns[table] = [name for name, _ in columns(self.catalog, event_type)]
        self._fields = {t: field_names(self.catalog, t) for t in (*RAW_EVENT_TYPES, *LOGGED_TABLES)}
        specs = settings.specs()
        self.spec_tables = spec_tables(specs)
        self._derived = derived_columns(specs)
        self._specs = {(kind, s.name) for s in specs for kind in s.kinds}  # the window results it stores

    def _columns(self, table: str) -> Sequence[str]:
        if table == "odds_windows_1m":
            return WINDOW_COLUMNS
        if table == "dead_letters":
            return DEAD_LETTER_COLUMNS
        if table == "late_events":
            return LATE_COLUMNS
        if table in self._derived:
            return self._derived[table]
        return self._raw_columns[table]

    async def sink(self) -> None:
        window_topics = set(self.topics.windows()) | set(self.topics.insights())
        consumer = AIOKafkaConsumer(
            *window_topics,
            self.topics.dead_letter,
            self.topics.late,
            self.topics.webhook_attempts,
            self.topics.webhook_dead_letters,
            self.topics.bets_by_user,
            *(self.topics.name(suffix) for suffix in SOURCE_TOPICS),
            bootstrap_servers=self.settings.bootstrap,
            group_id=f"{self.settings.topic_prefix}store",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap, acks="all")
        await consumer.start()
        await producer.start()
        try:
            while True:
                batch = await self._take(consumer)
                if not batch:
                    continue
                await learn_schema_ids(self.codec, (m.value for ms in batch.values() for m in ms), "store")
                rows: dict[str, Rows] = defaultdict(Rows)
                refused: list[tuple[Any, str]] = []
                for messages in batch.values():
                    for m in messages:
                        try:
                            self._rows_of(m, window_topics, rows)
                        except EventError as exc:
                            REJECTED_RECORDS.labels(m.topic, type(exc).__name__).inc()
                            refused.append((m, exc.reason))
                        except Exception as exc:  # a bug meeting an input: dead letter, go on
                            PROCESSING_ERRORS.labels("store").inc()
                            refused.append((m, processing_failure(exc)))
                for table, table_rows in rows.items():
                    refused += await self._insert(table, table_rows)
                sent = []  # the batch's dead letters in flight at once, all acknowledged before the commit
                for m, reason in refused:
                    headers = dead_letter_headers(reason, m.topic, m.partition, m.offset, "store")
                    sent.append(
                        await producer.send(
                            self.topics.dead_letter, m.value or b"", key=m.key, headers=headers
                        )
                    )
                await asyncio.gather(*sent)
                await consumer.commit()
                STORE_BATCHES.inc()
        finally:
            await consumer.stop()
            await producer.stop()

    async def _take(self, consumer: AIOKafkaConsumer) -> dict[Any, list[Any]]:
        """The records of one round of inserts: what arrives within ``store_batch_wait_ms`` of
        the first, up to ``store_batch_max_records`` (each partition's in offset order)."""
        limit = self.settings.store_batch_max_records
        batch: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=500, max_records=limit)
        count = sum(len(records) for records in batch.values())
        if not count:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.store_batch_wait_ms / 1000
        while count < limit and (left := deadline - loop.time()) > 0:
            more = await consumer.getmany(timeout_ms=max(1, round(left * 1000)), max_records=limit - count)
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                count += len(records)
        return batch

    def _rows_of(self, m: Any, window_topics: set[str], rows: dict[str, Rows]) -> None:
        """Add the rows of one record to ``rows``, or raise an :class:`EventError`."""
        if m.topic == self.topics.dead_letter:
            rows["dead_letters"].add(dead_letter_row(m), m)
            return
        if m.topic == self.topics.late:
            rows["late_events"].add(late_row(m), m)
            return
        # the same admission as the worker's: far future = ahead of the record's Kafka timestamp
        event = self.intake.admit(m.topic, m.key, m.value, m.headers, m.timestamp)
        if m.topic in window_topics:
            spec = event.record.get("spec") or PRIMARY
            if spec != PRIMARY and (KIND_OF_EVENT.get(event.type), spec) not in self._specs:
                raise InvalidEvent(
                    event.type, "spec", f"{spec!r} is not a window spec of this store's settings for "
                    f"{event.type} (ODDSTREAM_WINDOW_SPECS; it has {sorted(self._specs) or 'none'})",
                )  # fmt: skip
            if event.type == "OddsWindowUpdated" and spec == PRIMARY:
                for row in window_rows(event, m.partition, m.offset):
                    rows["odds_windows_1m"].add(row, m)
            if event.record.get("final", True):  # insights are always final
                for table, more in final_rows(event.type, event.record).items():
                    for row in more:
                        rows[table].add(row, m)
        else:
            table = LOGGED_TABLES.get(event.type) or event_type_table(event.type)
            rows[table].add(raw_row(self._fields[event.type], event, m.partition, m.offset), m)

    async def _insert(self, table: str, rows: Rows) -> list[tuple[Any, str]]:
        """Insert a table's rows; if ClickHouse refuses the batch, row by row, and return the
        records whose rows it refuses (they become dead letters). If it refuses every row,
        the store itself is broken: raise, so the role stops and is restarted."""
        columns = self._columns(table)
        try:
            await asyncio.to_thread(self.store.insert, table, rows.values, columns)
            self._written(table, len(rows.values))
            return []
        except StoreError as exc:
            log.warning(
                "ClickHouse refused a batch of %d %s rows (%s); inserting one by one",
                len(rows.values),
                table,
                exc,
            )
        refused: dict[int, tuple[Any, str]] = {}
        for row, origin in zip(rows.values, rows.origins, strict=True):
            try:
                await asyncio.to_thread(self.store.insert, table, [row], columns)
                self._written(table, 1)
            except StoreError as exc:
                refused[id(origin)] = (origin, f"ClickHouse refused its {table} row: {str(exc)[:300]}")
        if len(refused) == len({id(o) for o in rows.origins}) and len(rows.values) > 1:
            raise StoreError(f"ClickHouse refused every one of {len(rows.values)} {table} rows")
        return list(refused.values())

    def _written(self, table: str, count: int) -> None:
        STORE_ROWS.labels(table).inc(count)
        self.rows_written += count

    def http_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_SQL_BODY_BYTES)
        app.router.add_post("/sql", self.handle_sql)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        return app

    async def handle_sql(self, request: web.Request) -> web.Response:
        """POST a query as text (or JSON {"query": ...}); one read-only statement, with limits;
        answers JSON. With a token configured, asks for ``Authorization: Bearer <token>``."""
        if not self._authorised(request):
            SQL_QUERIES.labels("unauthorised").inc()
            return web.json_response(
                {"error": "missing or wrong bearer token (Authorization: Bearer <ODDSTREAM_SQL_TOKEN>)"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            body = await request.text()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"query body over {MAX_SQL_BODY_BYTES:,} bytes"}, status=413)
        except UnicodeDecodeError:
            return web.json_response({"error": "query body is not UTF-8 text"}, status=400)
        if request.content_type == "application/json":
            try:
                body = json.loads(body)["query"]
                assert isinstance(body, str)
            except (ValueError, KeyError, TypeError, AssertionError):
                return web.json_response({"error": 'expected {"query": "..."}'}, status=400)
        try:
            statement = check_query(body)
        except QueryRefused as exc:
            SQL_QUERIES.labels("refused").inc()
            return web.json_response({"error": f"query refused: {exc}"}, status=400)
        try:
            columns, rows = await asyncio.to_thread(
                self.reader.query, statement, self.settings.sql_max_execution_s
            )
        except QueryBusy as exc:
            SQL_QUERIES.labels("busy").inc()
            return web.json_response({"error": str(exc)}, status=503)
        except StoreError as exc:
            SQL_QUERIES.labels("error").inc()
            return web.json_response({"error": str(exc)}, status=400)
        SQL_QUERIES.labels("ok").inc()
        return web.json_response({"columns": columns, "rows": jsonable([list(r) for r in rows])})

    def _authorised(self, request: web.Request) -> bool:
        if self.settings.sql_token is None:
            return True
        expected = f"Bearer {self.settings.sql_token.get_secret_value()}"
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected.encode())

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body, content_type = exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "clickhouse": redact(self.settings.clickhouse),
                "rows_written": self.rows_written,
            }
        )


def dead_letter_row(message: Any) -> tuple[Any, ...]:
    headers = {k: v for k, v in (message.headers or [])}

    def text(key: str, default: str = "") -> str:
        return str(headers.get(key, default.encode()).decode(errors="replace"))

    def number(key: str) -> int:
        # anything can be written to the dead-letter topic; a bad header must not stop the sink
        value = text(key, "0")
        return int(value) if value.isdigit() else 0

    return (
        text(ORIGIN_TOPIC, message.topic),
        number(ORIGIN_PARTITION),
        number(ORIGIN_OFFSET),
        text(STAGE),
        text(REASON),
        message.value or b"",
        datetime.fromtimestamp(message.timestamp / 1000, UTC),
    )


def late_row(message: Any) -> tuple[Any, ...]:
    h = parse_late_headers(message.headers)

    def number(key: str) -> int:
        value = h.get(key, "0")
        return int(value) if value.lstrip("-").isdigit() else 0

    def when(key: str) -> datetime:
        return datetime.fromtimestamp(max(number(key), 0) / 1000, UTC)

    return (
        h.get(late.ORIGIN_TOPIC, ""),
        number(late.ORIGIN_PARTITION),
        number(late.ORIGIN_OFFSET),
        h.get(late.KIND, ""),
        when(late.EVENT_TIME),
        when(late.WATERMARK),
        when(late.WINDOW_START),
        when(late.WINDOW_END),
        message.value or b"",
    )


async def serve(settings: Settings) -> None:
    service = StoreService(settings)
    applied = await asyncio.to_thread(migrate, service.store)
    await asyncio.to_thread(create_spec_tables, service.store, service.spec_tables)
    log.info("ClickHouse %s ready, migrations applied: %s", redact(settings.clickhouse), applied)
    runner = web.AppRunner(service.http_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.store_host, settings.store_port).start()
    try:
        await service.sink()
    finally:
        await runner.cleanup()
        with contextlib.suppress(Exception):
            service.reader.close()
        with contextlib.suppress(Exception):
            service.store.close()


def query_limits(settings: Settings) -> QueryLimits:
    return QueryLimits(
        max_execution_s=settings.sql_max_execution_s,
        max_memory_bytes=settings.sql_max_memory_bytes,
        max_rows_to_read=settings.sql_max_rows_to_read,
        max_result_rows=settings.sql_max_result_rows,
        max_result_bytes=settings.sql_max_result_bytes,
        max_threads=settings.sql_max_threads,
    )
