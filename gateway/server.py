"""The gateway process: a websockets server fed by an aiokafka consumer.

It reads the derived topics from their end (no consumer group: every gateway
instance sees every partition) and fans each event out to its channels. A client that
subscribes with the positions it last saw gets what it missed read back from Kafka first
(gateway/resume.py, gateway/history.py). Protocol and close codes: docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlparse

from aiokafka import AIOKafkaConsumer, TopicPartition
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway.auth import OPEN, Authenticator, AuthError, Grant
from gateway.epoch import log_epoch
from gateway.fanout import Client, Hub, TokenBucket
from gateway.health import HEALTH_EVERY_S, Reading, health
from gateway.history import History
from gateway.latest import Held, Latest
from gateway.protocol import (
    CHANNEL_HELP,
    Command,
    Position,
    ProtocolError,
    channels_of,
    error_message,
    event_frame,
    parse_command,
    positions_message,
)
from gateway.resume import NotRecovered, plan_resume
from oddstream.codecs import build_codec
from oddstream.errors import EventError
from oddstream.kafka.registry import learn_schema_ids
from oddstream.metrics import (
    GATEWAY_BYTES,
    GATEWAY_CHANNELS,
    GATEWAY_CLIENTS,
    GATEWAY_DROPPED,
    GATEWAY_FRAMES,
    GATEWAY_LAG,
    GATEWAY_REPLAYED,
    GATEWAY_RESUMES,
    GATEWAY_SUBSCRIPTIONS,
    PROCESSING_ERRORS,
    REJECTED_RECORDS,
    exposition,
)
from oddstream.settings import Settings
from schemas.catalog import Event
from schemas.intake import Intake
from schemas.jsonable import jsonable
from schemas.topics import Topics

log = logging.getLogger(__name__)
HEARTBEAT_S = 15.0
SOCKET_SEND_BUFFER = 64 * 1024
MAX_REFUSED_COMMANDS = 100  # rate-limited commands a client may still send before it is closed (1008)
CONCURRENT_REPLAYS = 4  # resumes reading Kafka at once; the others wait their turn
DASHBOARD = (resources.files("gateway") / "dashboard.html").read_bytes()  # docs/gateway.md#dashboard
TOKEN_EXPIRED = 4001  # close code: the connection's JWT expired (docs/gateway.md)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.intake = Intake(build_codec(settings), self.topics, settings.limits())
        self.hub = Hub(
            lambda connections, frame: broadcast(connections, frame),
            max_bytes=settings.gateway_client_max_bytes,
            max_subscriptions=settings.gateway_max_subscriptions,
            max_pending=settings.gateway_client_queue,
        )
        self.auth = Authenticator(
            settings.api_keys(),
            settings.gateway_jwt_secret.get_secret_value() if settings.gateway_jwt_secret else None,
            settings.jwt_public_key(),
        )
        self.connections: Counter[str] = Counter()  # open connections per key or JWT subject
        self._closing: set[asyncio.Task[None]] = set()
        self.consuming = False  # the topics' positions are resolved: every later event is seen
        self.epoch = ""  # names the log the offsets refer to (gateway/epoch.py)
        # per topic-partition, the next offset the live fan-out hands to clients: every record
        # before it has been fanned out, every record from it on will be
        self.live_next: dict[Position, int] = {}
        self._replays = asyncio.Semaphore(CONCURRENT_REPLAYS)
        self.latest = Latest()  # every channel's current state, for snapshots on subscribe
        GATEWAY_SUBSCRIPTIONS.set_function(lambda: self.hub.subscriptions)
        GATEWAY_CHANNELS.set_function(lambda: self.hub.channels)

    def grant(self, request: Request) -> Grant:
        """The request's grant (gateway/auth.py); AuthError says why there is none."""
        query = parse_qs(urlparse(request.path).query)
        return self.auth.from_request(query, request.headers)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlparse(request.path).path
        if path == "/healthz":
            body = json.dumps(
                {"status": "ok", "clients": len(self.hub.clients), "channels": self.hub.channels,
                 "consuming": self.consuming}
            )  # fmt: skip
            return connection.respond(HTTPStatus.OK, body + "\n")
        if path in ("/", "/dashboard"):  # the page holds no data: its WebSocket needs the credential
            headers = Headers({"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"})
            return Response(200, "OK", headers, DASHBOARD)
        if path not in ("/metrics", "/ws"):
            return connection.respond(HTTPStatus.NOT_FOUND, "WebSocket endpoint is /ws\n")
        try:
            grant = self.grant(request)
        except AuthError as exc:
            return connection.respond(HTTPStatus.UNAUTHORIZED, f"{exc}\n")
        if path == "/metrics":
            if not grant.everything or grant.expires_at is not None:  # operators: a key for every channel
                return connection.respond(HTTPStatus.FORBIDDEN, "metrics need an API key for every channel\n")
            metrics, content_type = exposition()
            return Response(200, "OK", Headers({"Content-Type": content_type}), metrics)
        origin = request.headers.get("Origin")
        allowed = self.settings.gateway_allowed_origins
        if origin is not None and allowed and origin not in allowed:
            return connection.respond(HTTPStatus.FORBIDDEN, f"origin {origin[:200]!r} is not allowed\n")
        if (
            grant is not OPEN
            and self.connections[grant.subject] >= self.settings.gateway_max_connections_per_key
        ):
            limit = self.settings.gateway_max_connections_per_key
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, f"at most {limit} connections per key\n")
        if not self.consuming:  # no positions to hand out yet
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "gateway starting; retry shortly\n")
        return None

    async def handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        try:
            grant = self.grant(connection.request)
        except AuthError as exc:  # expired since the handshake
            await connection.close(TOKEN_EXPIRED, str(exc)[:120])
            return
        client = self.hub.connect(connection, connection.transport.get_write_buffer_size)
        client.grant = grant
        self.connections[grant.subject] += 1
        self._expire_at(connection, client)
        client.on_drop = lambda: self._cut(connection)
        rate = self.settings.gateway_commands_per_s
        client.commands = TokenBucket(rate, burst=2 * rate)
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:  # a small kernel buffer: what a slow reader holds up is counted by us
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
        GATEWAY_CLIENTS.inc()
        try:
            welcome = {"type": "welcome", "channels": CHANNEL_HELP, "epoch": self.epoch}
            await connection.send(json.dumps(welcome))
            async for frame in connection:
                await self._on_frame(connection, client, frame)
        except ConnectionClosed:
            pass
        finally:
            self.hub.disconnect(client)
            self.connections[grant.subject] -= 1
            if not self.connections[grant.subject]:
                del self.connections[grant.subject]
            if client.expiry is not None:
                client.expiry.cancel()
            GATEWAY_CLIENTS.dec()

    async def _on_frame(self, connection: ServerConnection, client: Client, frame: str | bytes) -> None:
        if not client.commands.allow(time.monotonic()):
            client.refused_commands += 1
            if client.refused_commands > MAX_REFUSED_COMMANDS:
                await connection.close(1008, "too many commands: rate limit ignored")
                return
            limit = self.settings.gateway_commands_per_s
            await _error(connection, "rate_limited", f"at most {limit:g} commands a second")
            return
        try:
            command = parse_command(frame)
        except ProtocolError as exc:
            await _error(connection, exc.code, str(exc))
            return
        if command.op == "ping":
            await connection.send(json.dumps({"type": "pong"}))
            return
        if command.op == "refresh":
            await self._refresh(connection, client, command.token)
            return
        denied = client.grant.denied(command.channels) if command.op == "subscribe" else []
        if denied:
            message = f"not allowed for this key or token: {denied[:10]}"
            await _error(connection, "forbidden", message)
            return
        if command.op == "subscribe" and command.since is not None:
            async with self._replays:
                await self._resume(connection, client, command)
        elif command.op == "subscribe":
            new = [c for c in command.channels if c not in client.channels]
            try:
                self.hub.subscribe(client, command.channels)
            except ProtocolError as exc:
                await _error(connection, exc.code, str(exc))
                return
            # taken with the subscription (no await between): the live frames continue it
            live_next, snapshot = dict(self.live_next), self._snapshot_frames(self._state(new))
            client.paused = True  # the snapshot first: a live frame is newer than any of it
            try:
                for frame in snapshot:
                    await connection.send(frame)
                reply = self._subscribed(command.channels, live_next, snapshot=len(snapshot))
                await connection.send(json.dumps(reply))
            finally:
                await self._go_live(connection, client)
        else:
            self.hub.unsubscribe(client, command.channels)
            await connection.send(json.dumps({"type": "unsubscribed", "channels": list(command.channels)}))

    async def _refresh(self, connection: ServerConnection, client: Client, token: str) -> None:
        """A fresh token for the same subject: new expiry and patterns, without reconnecting.
        Channels the new patterns no longer allow are unsubscribed (and listed)."""
        try:
            grant = self.auth.from_token(token)
        except AuthError as exc:
            await _error(connection, "unauthorized", str(exc))
            return
        if grant.subject != client.grant.subject:
            message = "a refreshed token must have the same subject (sub) as the connection's"
            await _error(connection, "unauthorized", message)
            return
        client.grant = grant
        dropped = tuple(sorted(c for c in client.channels if not grant.allows(c)))
        self.hub.unsubscribe(client, dropped)
        self._expire_at(connection, client)
        reply = {"type": "refreshed", "expires_at": grant.expires_at, "unsubscribed": list(dropped)}
        await connection.send(json.dumps(reply))

    def _expire_at(self, connection: ServerConnection, client: Client) -> None:
        """Close with 4001 when the connection's token expires (a refresh moves this)."""
        if client.expiry is not None:
            client.expiry.cancel()
            client.expiry = None
        if client.grant.expires_at is None:
            return
        delay = max(0.0, client.grant.expires_at + self.auth.leeway_s - time.time())

        client.expiry = asyncio.get_running_loop().call_later(
            delay, self._close_later, connection, TOKEN_EXPIRED, "token expired; connect with a fresh one"
        )

    @staticmethod
    def _subscribed(
        channels: tuple[str, ...], live_next: dict[Position, int], **outcome: Any
    ) -> dict[str, Any]:
        """The reply to a subscribe; its positions are where the live frames start (keep them,
        update them from each frame's position, and send them back to resume)."""
        positions = {tp: offset - 1 for tp, offset in live_next.items()}
        return {
            "type": "subscribed",
            "channels": list(channels),
            "positions": positions_message(positions),
            **outcome,
        }

    async def _resume(self, connection: ServerConnection, client: Client, command: Command) -> None:
        """Subscribe from a position: replay ``[position + 1, live_next)`` from Kafka, then live.

        Between reading ``live_next`` and subscribing the client nothing else runs (no await),
        so the live frames it gets start exactly where the replay ends. It is paused until the
        replay is sent (live frames wait in its pending list), so every replayed frame comes
        before every live one."""
        assert command.since is not None
        new = frozenset(c for c in command.channels if c not in client.channels)  # already live: not replayed
        async with History(self.settings.bootstrap) as history:
            try:
                log_start = await history.log_starts(list(self.live_next))
            except Exception as exc:  # Kafka unreachable: plan without; the read fails if too old
                log.warning("resume: could not read the log's first offsets: %r", exc)
                log_start = {}
            live_next, state = dict(self.live_next), self._state(new)
            plan = plan_resume(
                command.since, self.epoch, live_next, log_start, self.settings.gateway_resume_max_records
            )
            try:
                self.hub.subscribe(client, command.channels)
            except ProtocolError as exc:
                await _error(connection, exc.code, str(exc))
                return
            client.paused = True
            try:
                replayed = 0
                if not isinstance(plan, NotRecovered):
                    try:
                        async for m in history.read(plan.ranges):
                            for _, frame in self._frames(m, new.__contains__):
                                await connection.send(frame)
                                replayed += 1
                    except Exception as exc:
                        log.warning("resume: replay failed after %d frames: %r", replayed, exc)
                        plan = NotRecovered("replay_failed", f"reading the missed records failed: {exc!r}")
                GATEWAY_REPLAYED.inc(replayed)
                if isinstance(plan, NotRecovered):  # what the client has may be stale: the state now
                    snapshot = self._snapshot_frames(state)
                    for frame in snapshot:
                        await connection.send(frame)
                    GATEWAY_RESUMES.labels(plan.code).inc()
                    outcome: dict[str, Any] = {"recovered": False, "code": plan.code, "reason": plan.reason}
                    outcome["snapshot"] = len(snapshot)
                else:
                    GATEWAY_RESUMES.labels("recovered").inc()
                    outcome = {"recovered": True, "replayed": replayed}
                await connection.send(json.dumps(self._subscribed(command.channels, live_next, **outcome)))
            finally:
                await self._go_live(connection, client)

    async def sample_health(self) -> None:
        """Every HEALTH_EVERY_S: the gateway's consumer lag for /metrics and, while someone listens
        to the ``health`` channel, Kafka's offsets turned into rates and lags (gateway/health.py)."""
        previous: Reading | None = None
        readers: tuple[AIOKafkaConsumer, AIOKafkaConsumer] | None = None
        try:
            while True:
                await asyncio.sleep(HEALTH_EVERY_S)
                listened = self.hub.has_subscribers("health")
                try:
                    if readers is None:
                        readers = await self._offset_readers()
                    if listened:
                        reading = await self._read_offsets(*readers)
                        derived_ends = reading.derived_ends
                    else:
                        derived_ends = await self._derived_ends(readers[0])
                except Exception as exc:  # the next round tries again with new readers
                    log.warning("health: could not read offsets: %r", exc)
                    if readers is not None:
                        for reader in readers:
                            await reader.stop()
                    readers = None
                    continue
                GATEWAY_LAG.set(
                    sum(max(0, end - self.live_next.get(tp, end)) for tp, end in derived_ends.items())
                )
                if not listened:
                    previous = None
                    continue
                data = health(previous, reading, self.live_next)
                previous = reading
                frame = {"type": "health", "channel": "health", "time": int(time.time() * 1000), "data": data}
                self.hub.publish("health", json.dumps(frame))
        finally:
            if readers is not None:
                for reader in readers:
                    await reader.stop()

    async def _derived_ends(self, ends: AIOKafkaConsumer) -> dict[Position, int]:
        tps = [TopicPartition(t, p) for t, p in self.live_next]
        return {(tp.topic, tp.partition): int(end) for tp, end in (await ends.end_offsets(tps)).items()}

    async def _offset_readers(self) -> tuple[AIOKafkaConsumer, AIOKafkaConsumer]:
        """One consumer for end offsets, one for the worker group's commits (it never joins)."""
        ends = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=None, enable_auto_commit=False
        )
        commits = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=self.settings.worker_id,
            enable_auto_commit=False,
        )
        await ends.start()
        await commits.start()
        return ends, commits

    async def _read_offsets(self, ends: AIOKafkaConsumer, commits: AIOKafkaConsumer) -> Reading:
        # fresh metadata of every topic (consumer.topics() does not keep what it fetched)
        cluster = await ends._client.fetch_all_metadata()

        def partitions(topic: str) -> list[TopicPartition]:
            return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]

        sources = [
            tp
            for t in (self.topics.odds, self.topics.bets, self.topics.name("system"))
            for tp in partitions(t)
        ]
        derived = [TopicPartition(t, p) for t, p in self.live_next]
        dead = partitions(self.topics.dead_letter)
        offsets = await ends.end_offsets([*sources, *derived, *dead])

        def of(tps: list[TopicPartition]) -> dict[Position, int]:
            return {(tp.topic, tp.partition): int(offsets[tp]) for tp in tps}

        committed = {(tp.topic, tp.partition): await commits.committed(tp) for tp in sources}
        return Reading(time.monotonic(), of(sources), committed, of(derived), of(dead))

    async def heartbeats(self) -> None:
        """Every HEARTBEAT_S, one heartbeat frame written to every live client at once."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            frame = json.dumps({"type": "heartbeat", "time": int(time.time() * 1000)})
            broadcast([c.connection for c in self.hub.clients if not c.paused], frame)

    @staticmethod
    async def _go_live(connection: ServerConnection, client: Client) -> None:
        """Send the live frames that waited while the client was paused, then write to it
        live again (no await between the last pending frame and going live)."""
        while (frame := client.take_pending()) is not None:
            await connection.send(frame)

    def _cut(self, connection: ServerConnection) -> None:
        """A client fell behind (its socket holds more than its byte limit, or the frames
        waiting for its snapshot or replay passed their limit): close it with 1013."""
        self._close_later(connection, 1013, "client too slow; reconnect and resume")

    def _close_later(self, connection: ServerConnection, code: int, reason: str) -> None:
        """Close from outside any send of the client's own, which may be stuck on a full socket;
        websockets aborts the TCP connection if the close does not complete in close_timeout."""
        task = asyncio.create_task(connection.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _admit(self, m: Any) -> tuple[Event, list[str]]:
        """Record ``m`` as an event and its channels (EventError if it is not a valid event)."""
        event = self.intake.admit(m.topic, m.key, m.value, m.headers, m.timestamp)
        return event, channels_of(event.type, event.record)

    def _frames(self, m: Any, wanted: Callable[[str], bool]) -> list[tuple[str, str]]:
        """(channel, frame) of record ``m`` for the channels ``wanted`` accepts."""
        event, channels = self._admit(m)
        return _encode(
            event.type, event.record, m.topic, m.partition, m.offset, [c for c in channels if wanted(c)]
        )

    def _fan_out(self, m: Any) -> None:
        event, channels = self._admit(m)
        self.latest.add(channels, Held(event.type, event.record, m.topic, m.partition, m.offset))
        wanted = [c for c in channels if self.hub.has_subscribers(c)]
        delivered, written = self.hub.delivered_total, self.hub.delivered_bytes
        for channel, frame in _encode(event.type, event.record, m.topic, m.partition, m.offset, wanted):
            dropped = self.hub.publish(channel, frame)
            GATEWAY_DROPPED.inc(len(dropped))
        GATEWAY_FRAMES.inc(self.hub.delivered_total - delivered)
        GATEWAY_BYTES.inc(self.hub.delivered_bytes - written)

    def _state(self, channels: Iterable[str]) -> list[tuple[str, Held]]:
        """The channels' current states (gateway/latest.py), as they are now: cheap to take
        with the subscription, encoded only if they are sent."""
        return [(channel, held) for channel in channels for held in self.latest.snapshot(channel)]

    @staticmethod
    def _snapshot_frames(state: list[tuple[str, Held]]) -> list[str]:
        return [
            frame
            for channel, h in state
            for _, frame in _encode(h.event_type, h.record, h.topic, h.partition, h.offset, [channel], True)
        ]

    async def _warm_up(self) -> None:
        """Read the last ``gateway_snapshot_warm_records`` of every partition, so snapshots are
        full from the start rather than after the next event of each thing."""
        per_partition = self.settings.gateway_snapshot_warm_records
        if not per_partition:
            return
        started, kept = time.monotonic(), 0
        async with History(self.settings.bootstrap) as history:
            starts = await history.log_starts(list(self.live_next))
            ranges = {
                tp: (max(starts.get(tp, 0), end - per_partition), end)
                for tp, end in self.live_next.items()
                if end > 0
            }
            async for m in history.read({tp: r for tp, r in ranges.items() if r[0] < r[1]}):
                await learn_schema_ids(self.intake.codec, (m.value,), "gateway")
                try:
                    event, channels = self._admit(m)
                except EventError as exc:  # skipped here as live: counted, not kept
                    REJECTED_RECORDS.labels(m.topic, type(exc).__name__).inc()
                    continue
                self.latest.add(channels, Held(event.type, event.record, m.topic, m.partition, m.offset))
                kept += 1
        log.info("gateway snapshots warmed from %d records in %.1f s", kept, time.monotonic() - started)

    async def consume(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.topics.windows(),
            *self.topics.insights(),
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        for tp in consumer.assignment():
            # resolve "latest" now, so nothing after this line is missed
            self.live_next[(tp.topic, tp.partition)] = await consumer.position(tp)
        self.epoch = await asyncio.to_thread(log_epoch, self.settings, sorted({t for t, _ in self.live_next}))
        await self._warm_up()  # read up to live_next: the live fan-out goes on from there
        self.consuming = True
        log.info("gateway consuming %s", ", ".join([*self.topics.windows(), *self.topics.insights()]))
        try:
            async for m in consumer:
                await learn_schema_ids(self.intake.codec, (m.value,), "gateway")
                try:
                    self._fan_out(m)
                except EventError as exc:
                    # the store dead-letters bad records of these topics; the gateway skips them
                    REJECTED_RECORDS.labels(m.topic, type(exc).__name__).inc()
                    log.warning("skipping %s[%s]@%s: %s", m.topic, m.partition, m.offset, exc.reason)
                except Exception:  # one record never stops the fan-out
                    PROCESSING_ERRORS.labels("gateway").inc()
                    log.exception("skipping %s[%s]@%s: fan-out failed", m.topic, m.partition, m.offset)
                self.live_next[(m.topic, m.partition)] = m.offset + 1  # no await since the fan-out
                # the consumer hands out a fetched batch without yielding: let the clients'
                # senders drain between events, so a burst does not count against a fast reader
                await asyncio.sleep(0)
        finally:
            await consumer.stop()


async def run_gateway(settings: Settings) -> None:
    gateway = Gateway(settings)
    async with serve(
        gateway.handle,
        settings.gateway_host,
        settings.gateway_port,
        process_request=gateway.process_request,
        max_size=64 * 1024,
        ping_interval=20,
        close_timeout=2,
    ):
        log.info("gateway on ws://%s:%s/ws", settings.gateway_host, settings.gateway_port)
        background = [asyncio.create_task(gateway.heartbeats()), asyncio.create_task(gateway.sample_health())]
        try:
            await gateway.consume()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)  # their Kafka readers close


def _encode(
    event_type: str,
    record: dict[str, Any],
    topic: str,
    partition: int,
    offset: int,
    channels: list[str],
    snapshot: bool = False,
) -> list[tuple[str, str]]:
    """(channel, frame) for each of ``channels``; nothing is encoded for none."""
    if not channels:
        return []
    data_json = json.dumps(jsonable(record))  # once per event, not per channel
    position_json = json.dumps({"topic": topic, "partition": partition, "offset": offset})
    return [(c, event_frame(c, event_type, position_json, data_json, snapshot)) for c in channels]


async def _error(connection: ServerConnection, code: str, message: str) -> None:
    """Refuse a command with a coded reason; the connection goes on."""
    await connection.send(json.dumps(error_message(code, message)))
