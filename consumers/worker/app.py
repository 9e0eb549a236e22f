"""``create_app(settings)``: the Faust app of the stream worker. No module-level app.

The odds agent folds OddsChanged events into per-market one-minute event-time
windows (``streams.odds_window``) kept in a changelog-backed table, and emits
every change as an OddsWindowUpdated event. Records that do not decode, break
their contract, lie in the future or quote a market no MarketStatusChanged has
announced go to the dead-letter topic with the reason and the original bytes;
events older than the market's current window go to the late topic. Neither
stops the agent.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import faust
from faust.types import EventT

from oddstream.codecs import build_codec
from oddstream.errors import EventError
from oddstream.kafka.admin import create_missing
from oddstream.kafka.deadletter import dead_letter_headers
from oddstream.settings import Settings
from schemas.catalog import Event
from schemas.topics import Topics
from schemas.validation import as_millis
from streams.odds_window import Quote, WindowState, fold, window_result
from streams.windows import TumblingWindow

log = logging.getLogger(__name__)
WINDOW_EVENT_NAMESPACE = uuid.UUID("6f1c1f0e-4c1e-4f53-9a53-6f6464737472")
ONE_MINUTE = TumblingWindow(60_000)


def window_event_id(market_id: str, window_start: int, version: int) -> str:
    """Deterministic id of a window update, so a replay emits the same ids."""
    return str(uuid.uuid5(WINDOW_EVENT_NAMESPACE, f"odds.1m:{market_id}:{window_start}:{version}"))


def create_app(settings: Settings) -> faust.App:
    """Build the worker's Faust app and its agents for ``settings``."""
    topics = Topics(settings.topic_prefix)
    codec = build_codec(settings)
    app = faust.App(
        settings.worker_id,
        broker=[f"kafka://{host}" for host in settings.bootstrap.split(",")],
        store="memory://",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        # a SIGKILLed worker stays in the group until its session expires; Faust's default
        # (60 s) stalls a restarted worker that long (measured, docs/design/state-and-recovery.md)
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )

    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    odds_source = raw_topic(topics.odds)
    window_sink = raw_topic(topics.odds_window_1m)
    late_sink = raw_topic(topics.odds_late)
    dead_letters = raw_topic(topics.dead_letter)
    windows = app.Table("odds-window-1m", default=None, partitions=settings.topic_partitions)
    # market_id -> latest status. MarketStatusChanged shares the odds topic and key, so a
    # market's OPEN is always ahead of its quotes in the same partition.
    markets = app.Table("market-status", default=None, partitions=settings.topic_partitions)

    async def reject(event: EventT[Any], reason: str, sink: Any, stage: str) -> None:
        message = event.message
        headers = dead_letter_headers(reason, message.topic, message.partition, message.offset, stage)
        await sink.send(key=event.key, value=event.value, headers=headers)

    @app.agent(odds_source, name="odds-window-1m")
    async def odds_windows(stream: Any) -> None:
        async for raw in stream.events():
            try:
                decoded = codec.decode(raw.value)
                codec.check_decoded(decoded, now_ms=int(time.time() * 1000))
            except EventError as exc:
                log.warning(
                    "dead letter at %s:%s: %s",
                    raw.message.partition,
                    raw.message.offset,
                    exc.reason,
                )
                await reject(raw, exc.reason, dead_letters, "odds-window-1m")
                continue
            if decoded.type == "MarketStatusChanged":
                markets[decoded.record["market_id"]] = decoded.record["status"]
                continue
            if decoded.type != "OddsChanged":
                continue
            record = decoded.record
            if markets.get(record["market_id"]) is None:
                market = record["market_id"]
                reason = f"OddsChanged.market_id: unknown market {market!r} (no MarketStatusChanged seen)"
                await reject(raw, reason, dead_letters, "odds-window-1m")
                continue
            quote = Quote(
                market_id=record["market_id"],
                selection_id=record["selection_id"],
                odds=record["odds"],
                event_ms=as_millis(record["event_time"]),
                offset=raw.message.offset,
            )
            previous: WindowState | None = windows.get(quote.market_id)
            outcome = fold(previous, quote, ONE_MINUTE)
            if outcome["duplicate"]:
                continue
            windows[quote.market_id] = outcome["state"]
            if outcome["late"]:
                await reject(raw, "event time before the market's current window", late_sink, "late")
                continue
            state = outcome["state"]
            assert state is not None
            result = window_result(state)
            update = Event(
                "OddsWindowUpdated",
                {
                    "event_id": window_event_id(quote.market_id, result["window_start"], result["version"]),
                    "event_time": quote.event_ms,
                    "source": settings.worker_id,
                    **result,
                },
            )
            value = codec.encode(update, topic=topics.odds_window_1m)
            await window_sink.send(key=update.key, value=value)

    return app


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGINT/SIGTERM (Faust handles the signals and commits on stop)."""
    app = create_app(settings)
    # Faust creates changelog topics itself, but an event can arrive before the new
    # topic shows in metadata (PartitionsMismatch: "0 partitions"); create them first.
    changelogs = {table.changelog_topic.get_topic_name(): True for table in app.tables.values()}
    create_missing(settings, changelogs)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
