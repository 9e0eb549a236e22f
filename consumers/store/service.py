"""The store role: Kafka -> ClickHouse sink plus the read-only SQL endpoint.

Offsets are committed only after the rows are in ClickHouse (at-least-once);
the tables' ReplacingMergeTree keys make a redelivered batch collapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumers.store.clickhouse import Store, migrate, redact
from consumers.store.raw_tables import RAW_EVENT_TYPES, columns, event_type_table, raw_row
from consumers.store.rows import DEAD_LETTER_COLUMNS, WINDOW_COLUMNS, window_rows
from consumers.store.window_rows import DERIVED_COLUMNS, LATE_COLUMNS, final_rows
from oddstream.codecs import build_codec
from oddstream.errors import EventError, StoreError
from oddstream.kafka import late
from oddstream.kafka.deadletter import (
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    REASON,
    STAGE,
    dead_letter_headers,
)
from oddstream.kafka.late import parse_late_headers
from oddstream.metrics import SQL_QUERIES, STORE_BATCHES, STORE_ROWS, exposition
from oddstream.settings import Settings
from schemas.catalog import load_catalog
from schemas.jsonable import jsonable
from schemas.topics import SOURCE_TOPICS, Topics

log = logging.getLogger(__name__)


class StoreService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.codec = build_codec(settings)
        self.store = Store(settings.clickhouse)
        self.rows_written = 0
        self.catalog = load_catalog()
        self._raw_columns = {
            event_type_table(t): [name for name, _ in columns(self.catalog, t)] for t in RAW_EVENT_TYPES
        }

    def _columns(self, table: str) -> Sequence[str]:
        if table == "odds_windows_1m":
            return WINDOW_COLUMNS
        if table == "dead_letters":
            return DEAD_LETTER_COLUMNS
        if table == "late_events":
            return LATE_COLUMNS
        if table in DERIVED_COLUMNS:
            return DERIVED_COLUMNS[table]
        return self._raw_columns[table]

    async def sink(self) -> None:
        window_topics = set(self.topics.windows()) | set(self.topics.insights())
        consumer = AIOKafkaConsumer(
            *window_topics,
            self.topics.dead_letter,
            self.topics.late,
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
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                if not batch:
                    continue
                rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
                for tp, messages in batch.items():
                    for m in messages:
                        if tp.topic == self.topics.dead_letter:
                            rows["dead_letters"].append(dead_letter_row(m))
                            continue
                        if tp.topic == self.topics.late:
                            rows["late_events"].append(late_row(m))
                            continue
                        try:
                            event = self.codec.decode(m.value)
                            if tp.topic in window_topics:
                                if event.type == "OddsWindowUpdated":
                                    rows["odds_windows_1m"].extend(window_rows(event, m.partition, m.offset))
                                if event.record.get("final", True):  # insights are always final
                                    for table, more in final_rows(event.type, event.record).items():
                                        rows[table].extend(more)
                            else:
                                # far future = ahead of the record's Kafka timestamp, as in the worker
                                self.codec.check_decoded(event, now_ms=m.timestamp)
                                table = event_type_table(event.type)
                                rows[table].append(raw_row(self.catalog, event, m.partition, m.offset))
                        except EventError as exc:
                            headers = dead_letter_headers(exc.reason, m.topic, m.partition, m.offset, "store")
                            await producer.send_and_wait(
                                self.topics.dead_letter, m.value, key=m.key, headers=headers
                            )
                for table, table_rows in rows.items():
                    await asyncio.to_thread(self.store.insert, table, table_rows, self._columns(table))
                    STORE_ROWS.labels(table).inc(len(table_rows))
                    self.rows_written += len(table_rows)
                await consumer.commit()
                STORE_BATCHES.inc()
        finally:
            await consumer.stop()
            await producer.stop()

    def http_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/sql", self.handle_sql)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        return app

    async def handle_sql(self, request: web.Request) -> web.Response:
        """POST a query as text (or JSON {"query": ...}); runs read-only; answers JSON."""
        body = await request.text()
        if request.content_type == "application/json":
            try:
                body = json.loads(body)["query"]
            except (ValueError, KeyError, TypeError):
                return web.json_response({"error": 'expected {"query": "..."}'}, status=400)
        if not body.strip():
            return web.json_response({"error": "empty query"}, status=400)
        try:
            columns, rows = await asyncio.to_thread(self.store.query, body, True)
        except StoreError as exc:
            SQL_QUERIES.labels("error").inc()
            return web.json_response({"error": str(exc)}, status=400)
        SQL_QUERIES.labels("ok").inc()
        return web.json_response({"columns": columns, "rows": jsonable([list(r) for r in rows])})

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
    log.info("ClickHouse %s ready, migrations applied: %s", redact(settings.clickhouse), applied)
    runner = web.AppRunner(service.http_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.store_host, settings.store_port).start()
    try:
        await service.sink()
    finally:
        await runner.cleanup()
        with contextlib.suppress(Exception):
            service.store.close()
