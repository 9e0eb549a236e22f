"""When to try a webhook message again, and when to stop trying an endpoint. Pure.

* :class:`RetrySchedule`: attempt 1 at once, then the delays of the schedule (Svix's by
  default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), then the message is given up.
* :class:`Breaker`: after ``failures`` failed attempts in a row an endpoint's circuit
  opens for ``open_s``; nothing is sent to it meanwhile (messages wait, no attempt is
  spent); then one probe goes out, and its success closes the circuit.
* :class:`RateLimit`: a token bucket per endpoint (deliveries per second, a burst of one
  second's worth).
* :class:`PendingBook`: the messages waiting for their next attempt, as the compacted
  ``webhooks.retries`` topic holds them (the last record per key; a tombstone removes),
  so a restarted dispatcher resumes the schedule where it stood.

Times are milliseconds since the epoch (the dispatcher passes the wall clock: a retry due
in 5 minutes is due 5 minutes after it was written, whoever reads it).

Example::

    schedule = RetrySchedule((5.0, 300.0))
    schedule.next_attempt_ms(attempts_made=1, now_ms=0)   # 5_000
    schedule.next_attempt_ms(attempts_made=3, now_ms=0)   # None: give up
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

SVIX_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(frozen=True)
class RetrySchedule:
    delays_s: tuple[float, ...] = SVIX_SCHEDULE_S

    @property
    def max_attempts(self) -> int:
        return len(self.delays_s) + 1

    def next_attempt_ms(self, attempts_made: int, now_ms: int) -> int | None:
        """When the next attempt is due after ``attempts_made`` failed ones; None: give up."""
        if attempts_made >= self.max_attempts:
            return None
        return now_ms + round(self.delays_s[max(attempts_made, 1) - 1] * 1000)


@dataclass
class Breaker:
    """One endpoint's circuit: closed, open until ``open_until_ms``, then half-open."""

    failures: int = 5
    open_s: float = 30.0
    _in_a_row: int = 0
    open_until_ms: int = 0
    _probing: bool = False

    def allows(self, now_ms: int) -> bool:
        """May an attempt go out now? Half-open lets one probe through at a time."""
        if self._in_a_row < self.failures:
            return True
        if now_ms < self.open_until_ms or self._probing:
            return False
        self._probing = True
        return True

    def reopens_at(self, now_ms: int) -> int:
        """When a message held back now should be looked at again."""
        return max(self.open_until_ms, now_ms + 1000)

    def success(self) -> None:
        self._in_a_row, self._probing = 0, False

    def release(self) -> None:
        """An attempt that says nothing of the endpoint's health (its target was refused) ended:
        a probe it was lets the next one through."""
        self._probing = False

    def failure(self, now_ms: int) -> None:
        self._in_a_row += 1
        self._probing = False
        if self._in_a_row >= self.failures:
            self.open_until_ms = now_ms + round(self.open_s * 1000)

    @property
    def is_open(self) -> bool:
        return self._in_a_row >= self.failures


@dataclass
class RateLimit:
    """A token bucket: ``per_s`` deliveries a second, bursts of up to one second's worth."""

    per_s: float
    _tokens: float | None = None
    _at_ms: int = 0

    def wait_s(self, now_ms: int) -> float:
        """Take a token: 0 when one is there, else how long to wait before sending."""
        if self.per_s <= 0:
            return 0.0
        tokens = self.per_s if self._tokens is None else self._tokens
        tokens = min(self.per_s, tokens + (now_ms - self._at_ms) / 1000 * self.per_s) - 1
        self._tokens, self._at_ms = tokens, now_ms
        return 0.0 if tokens >= 0 else -tokens / self.per_s


@dataclass
class Pending:
    """A message waiting for its next attempt (a WebhookMessagePending record)."""

    key: str  # "<endpoint_id> <message_id>"
    partition: Hashable
    record: dict[str, Any]
    due_ms: int

    @property
    def endpoint_id(self) -> str:
        return str(self.record["endpoint_id"])


def pending_key(endpoint_id: str, message_id: str) -> str:
    return f"{endpoint_id} {message_id}"


@dataclass
class PendingBook:
    """The retries topic folded: the last record per key, per partition this dispatcher owns.

    A key is fired (handed to its endpoint's lane) once it is due and its partition has been
    read to the end it had when it was assigned (an older record must not fire before the
    newer one that replaces it is read). While fired it is not fired again; what the attempt
    writes next (a new pending record or a tombstone) is applied at once by the writer
    (:meth:`apply`) and again when read back; a record older than what was applied for its
    key is ignored, so a late read-back never revives a resolved message.
    """

    _entries: dict[str, Pending] = field(default_factory=dict)
    _heap: list[tuple[int, str]] = field(default_factory=list)
    _fired: set[str] = field(default_factory=set)
    _written_ms: dict[str, int] = field(default_factory=dict)  # key -> time of the newest record applied
    _loading: set[Hashable] = field(default_factory=set)

    def load(self, partition: Hashable) -> None:
        """A partition was assigned: its records are being read from the start."""
        self._loading.add(partition)

    def loaded(self, partition: Hashable) -> None:
        self._loading.discard(partition)

    def forget(self, partitions: set[Hashable]) -> None:
        """Partitions revoked: their messages are the next owner's."""
        for key in [k for k, p in self._entries.items() if p.partition in partitions]:
            del self._entries[key]
            self._fired.discard(key)
        self._loading -= partitions

    def apply(self, key: str, partition: Hashable, record: dict[str, Any] | None, written_ms: int) -> None:
        """A record of the topic (``None``: a tombstone, the message is resolved)."""
        if written_ms < self._written_ms.get(key, -1):
            return
        self._written_ms[key] = written_ms
        if record is None:
            self._entries.pop(key, None)
            return
        due = as_ms(record["next_attempt"])
        self._entries[key] = Pending(key, partition, record, due)
        if key not in self._fired:
            heapq.heappush(self._heap, (due, key))

    def defer(self, key: str, due_ms: int) -> None:
        """Hold a fired message back (its endpoint's circuit is open) until ``due_ms``,
        without writing anything: the topic still says when it was due."""
        self._fired.discard(key)
        entry = self._entries.get(key)
        if entry is not None:
            entry.due_ms = due_ms
            heapq.heappush(self._heap, (due_ms, key))

    def settled(self, key: str) -> None:
        """The fired attempt ended (what it wrote was applied before)."""
        self._fired.discard(key)
        entry = self._entries.get(key)
        if entry is not None:
            heapq.heappush(self._heap, (entry.due_ms, key))

    def due(self, now_ms: int) -> list[Pending]:
        """Messages due now, marked fired."""
        out = []
        held = []
        while self._heap and self._heap[0][0] <= now_ms:
            due, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is None or key in self._fired or entry.due_ms != due:
                continue  # resolved, already fired, or rescheduled (a newer heap item exists)
            if entry.partition in self._loading:
                held.append((due, key))
                continue
            self._fired.add(key)
            out.append(entry)
        for item in held:
            heapq.heappush(self._heap, item)
        return out

    def failing_since(self, endpoint_id: str) -> int | None:
        """The earliest start of the endpoint's failures its waiting messages remember."""
        starts = [
            as_ms(p.record["endpoint_failing_since"])
            for p in self._entries.values()
            if p.endpoint_id == endpoint_id and p.record.get("endpoint_failing_since") is not None
        ]
        return min(starts) if starts else None

    def prune(self, now_ms: int, keep_ms: int = 3_600_000) -> None:
        """Forget the write times of resolved keys older than ``keep_ms`` (read back long ago)."""
        for key in [
            k for k, t in self._written_ms.items() if k not in self._entries and t < now_ms - keep_ms
        ]:
            del self._written_ms[key]

    def __len__(self) -> int:
        return len(self._entries)


def retry_partition(endpoint_id: str, partitions: int) -> int:
    """The retries-topic partition of an endpoint's messages (the same from every writer, so
    one dispatcher owns an endpoint's schedule)."""
    digest = hashlib.sha256(endpoint_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") % partitions


def as_ms(value: Any) -> int:
    """A timestamp-millis field as decoded (datetime) or as written (int)."""
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)
