"""The dispatcher process: Kafka events -> signed HTTPS POSTs.

Each endpoint has its own lane (consumers/dispatcher/lanes.py): a queue and a few
workers, so one endpoint failing, hanging or unresolvable never delays another's
deliveries. A source record's offset is committed once each first attempt it started has
ended (delivered, refused, or failed with its retry written to the ``webhooks.retries``
topic: consumers/dispatcher/retries.py), partition by partition up to the first record
still in flight, so a crash re-delivers rather than loses; receivers deduplicate on
``webhook-id`` (the event's id, stable across retries, restarts and replays). Retries
come from the retries topic when due (consumers/dispatcher/schedule.py: the schedule, the
circuit breaker, the rate limit). Each attempt is appended to the delivery log.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from consumers.dispatcher.endpoints import set_active
from consumers.dispatcher.lanes import CommitTracker, Lanes
from consumers.dispatcher.registry import Endpoint, EndpointRegistry
from consumers.dispatcher.retries import Message, RetryTopic
from consumers.dispatcher.schedule import Breaker, PendingBook, RateLimit, RetrySchedule
from consumers.dispatcher.signing import endpoint_secret, open_secret, registry_record_is_authentic, sign
from consumers.dispatcher.ssrf import check_url, redact_url
from consumers.dispatcher.transport import GuardedClient, guarded_client
from oddstream.codecs import build_codec
from oddstream.errors import ConfigError, EventError, MalformedRecord, UnsafeWebhookTarget
from oddstream.kafka.deadletter import dead_letter_headers, processing_failure
from oddstream.kafka.registry import learn_schema_ids
from oddstream.metrics import (
    PROCESSING_ERRORS,
    REJECTED_RECORDS,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_ENDPOINTS_DISABLED,
)
from oddstream.producer import EventProducer
from oddstream.settings import DEVELOPMENT_MASTER_SECRET, Settings
from schemas.catalog import Event
from schemas.intake import Intake
from schemas.jsonable import jsonable
from schemas.topics import Topics

log = logging.getLogger(__name__)
DELIVERED_TYPES = ("OddsWindowUpdated", "AlertChanged")
MAX_CONNECTIONS = 200  # the HTTP pool: well above the lanes' needs, so no lane waits on another's
_ids = random.Random()  # attempt record ids: unique, not secret (os.urandom per record costs)
MAX_IN_FLIGHT = 50_000  # records with deliveries still going before reading stops


def payload_of(event: Event) -> bytes:
    body = {
        "type": event.type,
        "timestamp": datetime.now(UTC).isoformat(),
        "data": jsonable(event.record),
    }
    return json.dumps(body, separators=(",", ":")).encode()


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.intake = Intake(build_codec(settings), self.topics, settings.limits())
        self._producer: AIOKafkaProducer | None = None
        self.registry = EndpointRegistry()
        self.master = settings.webhook_master_secret.get_secret_value()
        self.log_path = settings.data_dir / "logs" / "webhook-deliveries.jsonl"
        self.delivered = 0
        self.failed = 0
        self.schedule = RetrySchedule(tuple(settings.webhook_retry_schedule_s))
        self.book = PendingBook()
        self._retry_topic: RetryTopic | None = None
        self._breakers: dict[str, Breaker] = {}
        self._limits: dict[str, RateLimit] = {}
        self._failing_since: dict[str, int] = {}  # endpoint -> start of its current run of failures
        self._disabled: set[str] = set()
        self._log_file: TextIO | None = None
        self._fatal: BaseException | None = None
        self._attempts_out: EventProducer | None = None  # attempt records (librdkafka: the hot path)

    async def follow_registry(self, caught_up: asyncio.Event) -> None:
        """Read the compacted registry from the start, then keep following it."""
        consumer = AIOKafkaConsumer(
            self.topics.webhook_endpoints,
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,  # no group: every dispatcher reads every partition
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while not consumer.assignment():  # noqa: ASYNC110 - aiokafka offers no assignment event
                await asyncio.sleep(0.05)
            tps = sorted(consumer.assignment())
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                if not caught_up.is_set() and all(
                    await asyncio.gather(*(self._reached(consumer, tp, ends[tp]) for tp in tps))
                ):
                    caught_up.set()
                    log.info("webhook registry loaded: %d endpoint(s)", len(self.registry))
                batch = await consumer.getmany(timeout_ms=500)
                values = (m.value for ms in batch.values() for m in ms)
                await learn_schema_ids(self.intake.codec, values, "dispatcher (endpoints)")
                for messages in batch.values():
                    for m in messages:
                        await self._apply_registration(m)
        finally:
            await consumer.stop()

    @staticmethod
    async def _reached(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return bool(await consumer.position(tp) >= end)

    async def _apply_registration(self, m: Any) -> None:
        """One record of the registry topic: a registration, a removal (tombstone), or a
        dead letter with the reason (the registry goes on without it)."""
        try:
            endpoint_id = registration_key(m.key)
            if not registry_record_is_authentic(self.master, m.key, m.value, m.headers):
                raise MalformedRecord(
                    "registry record not signed with this deployment's master secret: not written "
                    "by `oddstream webhook add` (refused; the endpoint is unchanged)"
                )
            if m.value is None:
                self.registry.apply(endpoint_id, None)
                return
            event = self.intake.admit(m.topic, m.key, m.value, m.headers, m.timestamp)
            if event.record["endpoint_id"] != endpoint_id:
                raise MalformedRecord(
                    f"key {endpoint_id[:64]!r} is not the endpoint_id {event.record['endpoint_id'][:64]!r}"
                )
            self.registry.apply(
                endpoint_id, {**event.record, **self._open_secrets(endpoint_id, event.record)}
            )
        except EventError as exc:
            reason = exc.reason
        except Exception as exc:  # a bug meeting an input: dead letter, go on
            PROCESSING_ERRORS.labels("dispatcher").inc()
            reason = processing_failure(exc)
        else:
            return
        REJECTED_RECORDS.labels(m.topic, "registration").inc()
        log.warning("bad endpoint registration %s[%d]@%d: %s", m.topic, m.partition, m.offset, reason)
        headers = dead_letter_headers(reason, m.topic, m.partition, m.offset, "dispatcher-registry")
        await self._dead_letters().send_and_wait(
            self.topics.dead_letter, m.value or b"", key=m.key, headers=headers
        )

    def _open_secrets(self, endpoint_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """The endpoint's secrets in the clear, for signing (kept in memory only). Records
        from before sealed secrets use the one derived from the master secret."""
        try:
            sealed = record.get("secret_sealed") or ""
            secret = (
                open_secret(self.master, endpoint_id, sealed)
                if sealed
                else endpoint_secret(self.master, endpoint_id)
            )
            previous_sealed = record.get("previous_secret_sealed") or ""
            previous = open_secret(self.master, endpoint_id, previous_sealed) if previous_sealed else ""
        except ValueError as exc:
            raise MalformedRecord(f"endpoint {endpoint_id[:64]!r}: {exc}") from None
        until = record.get("previous_secret_until")
        until_ms = int(until.timestamp() * 1000) if isinstance(until, datetime) else until
        return {"secret": secret, "previous_secret": previous, "previous_until_ms": until_ms}

    def _dead_letters(self) -> AIOKafkaProducer:
        assert self._producer is not None, "the dispatcher's producer starts before the registry is read"
        return self._producer

    def _attempts(self) -> EventProducer:
        assert self._attempts_out is not None, "started in run()"
        return self._attempts_out

    def _retries(self) -> RetryTopic:
        assert self._retry_topic is not None, "the retry topic is followed before anything is attempted"
        return self._retry_topic

    async def run(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap, acks="all")
        self._attempts_out = EventProducer(self.settings, self.intake.codec, **{"client.id": "dispatcher"})
        await self._producer.start()
        try:
            await self._run()
        finally:
            await self._producer.stop()
            self._attempts_out.flush(10)

    async def _run(self) -> None:
        caught_up = asyncio.Event()
        registry_task = asyncio.create_task(self.follow_registry(caught_up))
        ready = asyncio.create_task(caught_up.wait())
        await asyncio.wait({registry_task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if registry_task.done():
            ready.cancel()
            registry_task.result()  # raises what killed it
            raise RuntimeError("the webhook registry reader stopped")
        registry_task.add_done_callback(_crash_on_failure)
        self._retry_topic = RetryTopic(self.settings, self.intake, self._dead_letters, self.book)
        retries_task = asyncio.create_task(self._retry_topic.follow())
        retries_task.add_done_callback(_crash_on_failure)
        consumer = AIOKafkaConsumer(
            self.topics.odds_window_1m,
            self.topics.alerts,
            bootstrap_servers=self.settings.bootstrap,
            group_id=f"{self.settings.topic_prefix}dispatcher",
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        while not consumer.assignment():  # noqa: ASYNC110 - aiokafka offers no assignment event
            await asyncio.sleep(0.1)  # aiokafka joins the group in the background
        unset = {}
        for tp in consumer.assignment():
            position = await consumer.position(tp)  # resolve the start offset before saying ready
            if await consumer.committed(tp) is None:
                unset[tp] = position
        if unset:  # a new group starts at the end once: from then on a restart resumes, backlog and all
            await consumer.commit(unset)
        log.info(
            "dispatcher ready: %d endpoint(s), partitions %s",
            len(self.registry),
            sorted(tp.partition for tp in consumer.assignment()),
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        tracker = CommitTracker()
        lanes = Lanes(self.settings.webhook_endpoint_concurrency)
        try:
            async with guarded_client(
                self.settings.webhook_timeout_s,
                self.settings.webhook_allow_private_targets,
                max_connections=MAX_CONNECTIONS,
            ) as http:
                firing = asyncio.create_task(self._fire_due(http, lanes))
                firing.add_done_callback(_crash_on_failure)
                while True:
                    if tracker.in_flight() >= MAX_IN_FLIGHT:  # lanes this far behind: stop reading
                        await asyncio.sleep(0.1)
                    else:
                        batch = await consumer.getmany(timeout_ms=200, max_records=500)
                        values = (m.value for ms in batch.values() for m in ms)
                        await learn_schema_ids(self.intake.codec, values, "dispatcher")
                        for tp, messages in batch.items():
                            for m in messages:
                                self._dispatch(http, lanes, tracker, tp, m)
                    await self._commit(consumer, tracker)
        finally:
            registry_task.cancel()
            retries_task.cancel()
            await lanes.close()
            if self._log_file is not None:
                self._log_file.close()
            await consumer.stop()

    def _dispatch(self, http: GuardedClient, lanes: Lanes, tracker: CommitTracker, tp: Any, m: Any) -> None:
        """Start the first attempts of one record, each on its endpoint's lane. A record that
        cannot be delivered (refused by admission, or a bug meeting it) is skipped: the store
        dead-letters what admission refuses."""
        try:
            event = self.intake.admit(m.topic, m.key, m.value, m.headers, m.timestamp)
            endpoints = []
            if event.type in DELIVERED_TYPES and event.record.get("spec", "1m") == "1m":  # not other specs
                final = bool(event.record.get("final", True))  # only window events have it
                endpoints = self.registry.for_event(event.type, final)
            body = payload_of(event) if endpoints else b""
            message_id = f"msg_{event.record['event_id']}"
        except EventError as exc:
            REJECTED_RECORDS.labels(m.topic, type(exc).__name__).inc()
            log.warning("skipping %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc.reason)
            tracker.add(tp, m.offset, 0)
            return
        except Exception as exc:  # a bug meeting an input: this record, not the dispatcher
            PROCESSING_ERRORS.labels("dispatcher").inc()
            log.warning("skipping %s[%d]@%d: %s", m.topic, m.partition, m.offset, processing_failure(exc))
            tracker.add(tp, m.offset, 0)
            return
        tracker.add(tp, m.offset, len(endpoints))
        for endpoint in endpoints:
            message = Message(endpoint.endpoint_id, message_id, event.type, body)
            lanes.submit(
                endpoint.endpoint_id,
                functools.partial(self._job, http, message),
                functools.partial(tracker.done, tp, m.offset),
            )

    async def _fire_due(self, http: GuardedClient, lanes: Lanes) -> None:
        """Hand the retries that are due to their endpoints' lanes, every 100 ms."""
        pruned = 0
        while True:
            now = _now_ms()
            if now - pruned > 60_000:
                self.book.prune(now)
                pruned = now
            for pending in self.book.due(now):
                lanes.submit(
                    pending.endpoint_id,
                    functools.partial(self._job, http, Message.waiting(pending), pending.key),
                    functools.partial(self.book.settled, pending.key),
                )
            await asyncio.sleep(0.1)

    async def _commit(self, consumer: AIOKafkaConsumer, tracker: CommitTracker) -> None:
        """Commit each partition up to its first record with a first attempt still going (a
        failed one counts once its retry is written), once the attempt records of what is
        committed were acknowledged."""
        if self._log_file is not None:
            self._log_file.flush()
        if (
            self._fatal is not None
        ):  # checked with no await before committable(): nothing past it is committed
            raise RuntimeError(
                "the retry schedule could not be written; stopping uncommitted"
            ) from self._fatal
        assigned = consumer.assignment()
        tracker.forget({tp for tp in tracker.committable_partitions() if tp not in assigned})
        offsets = {tp: offset for tp, offset in tracker.committable().items() if tp in assigned}
        if not offsets:
            return
        # the attempt records of what is committed are in Kafka (DeliveryFailed stops the role:
        # its restart delivers again from the last commit, and records the attempts)
        await self._attempts().acknowledged()
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # a rebalance meanwhile: the next owner delivers from its commit
            log.warning("commit of %s failed: %r", offsets, exc)

    async def _job(self, http: GuardedClient, message: Message, book_key: str | None = None) -> None:
        """A lane's job: one attempt. Kafka failing a write of the schedule (a retry, a dead
        letter, a tombstone) is fatal: the role stops before committing past the message (see
        :meth:`_commit`) and its restart delivers it again, rather than lose it."""
        try:
            await self.attempt(http, message, book_key)
        except (KafkaError, OSError) as exc:
            log.critical("writing the retry schedule failed for %s: %r", message.key, exc)
            self._fatal = exc
            raise

    async def attempt(self, http: GuardedClient, message: Message, book_key: str | None = None) -> bool:
        """One attempt of ``message``, unless its endpoint's circuit is open (then it waits, no
        attempt spent). A failure is written to the retry schedule, or gives the message up
        (schedule exhausted, target refused, endpoint failing too long); True if delivered."""
        retries = self._retries()
        now = _now_ms()
        endpoint = self.registry.get(message.endpoint_id)
        if endpoint is None or not endpoint.active:
            why = "endpoint removed" if endpoint is None else f"endpoint disabled {endpoint.disabled_reason}"
            await retries.give_up(message, why.strip())
            return False
        if endpoint.endpoint_id in self._disabled:  # enabled again since: its failures start afresh
            self._disabled.discard(endpoint.endpoint_id)
            self._failing_since.pop(endpoint.endpoint_id, None)
        breaker = self._breakers.setdefault(
            endpoint.endpoint_id,
            Breaker(self.settings.webhook_breaker_failures, self.settings.webhook_breaker_open_s),
        )
        if not breaker.allows(now):
            if book_key is not None:
                self.book.defer(book_key, breaker.reopens_at(now))
            else:
                await retries.schedule(
                    message, breaker.reopens_at(now), self._failing_since.get(endpoint.endpoint_id)
                )
            return False
        limit = self._limits.get(endpoint.endpoint_id)
        if limit is None or limit.per_s != endpoint.rate_limit:
            limit = self._limits[endpoint.endpoint_id] = RateLimit(endpoint.rate_limit)
        wait = limit.wait_s(now)
        if wait:
            await asyncio.sleep(wait)
        started = time.monotonic()
        outcome, status, error = await self._post(http, endpoint, message)
        now = _now_ms()
        message.attempts += 1
        message.first_attempt_ms = message.first_attempt_ms or now
        if outcome == "delivered":
            breaker.success()
            self._failing_since.pop(endpoint.endpoint_id, None)
            await self._record(endpoint, message, outcome, status, error, started)
            await retries.resolve(message)
            self.delivered += 1
            return True
        self.failed += 1
        line = f"{message.attempts} {_iso(now)} {outcome} {status or ''} {error[:200]}"
        message.outcomes.append(line.rstrip())
        if outcome == "refused":
            breaker.release()
            await self._record(endpoint, message, outcome, status, error, started)
            await retries.give_up(message, f"target refused: {error}")
            return False
        breaker.failure(now)
        since = self._failing_since.get(endpoint.endpoint_id)
        if since is None:  # the first failure seen here: the waiting messages may remember an earlier one
            since = self._failing_since[endpoint.endpoint_id] = (
                self.book.failing_since(endpoint.endpoint_id) or now
            )
        due = self.schedule.next_attempt_ms(message.attempts, now)
        if now - since >= self.settings.webhook_disable_after_s * 1000:
            await self._record(endpoint, message, outcome, status, error, started)
            await self._disable(endpoint.endpoint_id, since)
            await retries.give_up(message, "endpoint disabled after failing since " + _iso(since))
            return False
        await self._record(endpoint, message, outcome, status, error, started, due)
        if due is None:
            await retries.give_up(
                message, f"all {message.attempts} attempts failed; the last: {outcome} {error}"
            )
        else:
            await retries.schedule(message, due, since)
        return False

    async def _post(
        self, http: GuardedClient, endpoint: Endpoint, message: Message
    ) -> tuple[str, int | None, str]:
        """POST the signed message: (outcome, HTTP status, error). Never raises."""
        try:
            # the URL here; every resolved address when connecting (consumers/dispatcher/transport.py)
            check_url(endpoint.url, self.settings.webhook_allow_private_targets)
            now = time.time()
            headers = sign(
                endpoint.signing_secrets(int(now * 1000)), message.message_id, int(now), message.payload
            )
            response = await http.post(endpoint.url, message.payload, headers)
        except UnsafeWebhookTarget as exc:
            return "refused", None, str(exc)
        except (aiohttp.ClientError, OSError) as exc:  # refused, reset, timeout, TLS, DNS, ...
            return "network_error", None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # whatever an endpoint or its URL does, never the dispatcher
            return "error", None, f"{type(exc).__name__}: {exc}"
        if response.is_success:
            return "delivered", response.status, ""
        return "http_error", response.status, "redirect not followed" if response.is_redirect else ""

    async def _disable(self, endpoint_id: str, since_ms: int) -> None:
        """Disable an endpoint that has failed for ``webhook_disable_after_s``: a registry record
        (active false, with the reason) and a log line; its waiting messages are given up as
        they come due, and ``recover`` sends them again once it is enabled."""
        if endpoint_id in self._disabled:
            return
        self._disabled.add(endpoint_id)
        reason = f"every attempt failed since {_iso(since_ms)} (ODDSTREAM_WEBHOOK_DISABLE_AFTER_S)"
        log.error("disabling webhook endpoint %s: %s", endpoint_id, reason)
        WEBHOOK_ENDPOINTS_DISABLED.inc()
        try:
            await asyncio.to_thread(set_active, self.settings, endpoint_id, False, reason)
        except Exception as exc:  # the registry is unreachable: the next failure tries again
            self._disabled.discard(endpoint_id)
            log.warning("could not disable endpoint %s: %r", endpoint_id, exc)

    def _append_log(self, entry: dict[str, Any]) -> None:
        """One line, appended to the open log (flushed before each commit and at stop)."""
        if self._log_file is None:
            self._log_file = Path(self.log_path).open("a", buffering=1 << 16)  # noqa: SIM115 - kept open
        self._log_file.write(json.dumps(entry) + "\n")

    async def _record(
        self, endpoint: Endpoint, message: Message, outcome: str, status: int | None, error: str,
        started: float, next_retry_ms: int | None = None,
    ) -> None:  # fmt: skip
        """One attempt: a line in the delivery log and a WebhookAttempted event on
        webhooks.attempts (the store keeps it in webhook_attempts)."""
        WEBHOOK_ATTEMPTS.labels(outcome).inc()
        now_ms = _now_ms()
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        url = redact_url(endpoint.url)
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(),
            "endpoint_id": endpoint.endpoint_id,
            "url": url,
            "webhook_id": message.message_id,
            "attempt": message.attempts,
            "outcome": outcome,
            "status": status,
            "error": error,
            "duration_ms": duration_ms,
        }
        self._append_log(entry)
        record = {
            "event_id": str(uuid.UUID(int=_ids.getrandbits(128), version=4)), "event_time": now_ms,
            "source": "dispatcher",
            "endpoint_id": endpoint.endpoint_id, "message_id": message.message_id,
            "event_type": message.event_type, "attempt": message.attempts, "outcome": outcome,
            "status": status, "duration_ms": float(duration_ms), "error": error[:2000], "url": url[:2048],
            "next_retry": next_retry_ms,
        }  # fmt: skip
        event = Event("WebhookAttempted", record)
        topic = self.topics.webhook_attempts
        value = self.intake.codec.encode(event, topic=topic, trusted=True)
        self._attempts().produce_raw(topic, event.key, value)


def registration_key(key: bytes | None) -> str:
    """The endpoint id a registry record is keyed by (compaction keeps the last per key)."""
    if key is None:
        raise MalformedRecord("registry record without a key; it must be keyed by its endpoint_id")
    if len(key) > 256:
        raise MalformedRecord(f"registry key of {len(key)} bytes; at most 256")
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise MalformedRecord(f"registry key is not UTF-8: {key[:32]!r}") from None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _crash_on_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("a dispatcher task died (%s): %r", task.get_name(), task.exception())
        raise SystemExit(1)


async def run_dispatcher(settings: Settings) -> None:
    check_master_secret(settings)
    await Dispatcher(settings).run()


def check_master_secret(settings: Settings) -> None:
    """Every endpoint's signing secret derives from the master secret: the public development
    default would let anyone sign as oddstream. Refused outside local development."""
    if (
        settings.webhook_master_secret.get_secret_value() == DEVELOPMENT_MASTER_SECRET
        and not settings.development
    ):
        raise ConfigError(
            "refusing to start: ODDSTREAM_WEBHOOK_MASTER_SECRET is the public development default; "
            "set a secret of your own (ODDSTREAM_DEVELOPMENT=true allows it for local development)"
        )
