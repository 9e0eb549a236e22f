"""Subscriptions and broadcast writes. Pure: sockets are behind the callables it is given.

An event's frame is written once per event to every subscriber's socket buffer in one
call (``write_many``: ``websockets.broadcast`` in the server), with no task and no queue per
client. A client whose socket holds more than ``max_bytes`` not yet taken by the kernel is
cut (its ``on_drop`` closes the connection with 1013), so one slow reader never delays the
others and never grows the gateway.

While a client is being sent its snapshot or a replay (``paused``), its live frames wait in
its ``pending`` list, bounded by the same ``max_bytes`` and by ``max_pending`` frames; they
follow once the snapshot or replay is out, so live frames always come after it.

Channels without subscribers are not kept, so unsubscribing (even from a channel never
subscribed) cannot grow the gateway, and a client holds at most ``max_subscriptions``
channels.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import OPEN, Grant
from gateway.protocol import ProtocolError


@dataclass(eq=False)
class Client:
    connection: Any = None  # what write_many writes to
    buffered: Callable[[], int] = lambda: 0  # bytes written to its socket, not yet sent
    channels: set[str] = field(default_factory=set)
    dropped: bool = False
    on_drop: Callable[[], None] | None = None
    commands: TokenBucket = field(default_factory=lambda: TokenBucket(20.0, 40.0))
    refused_commands: int = 0
    paused: bool = False  # a snapshot or replay is being sent: live frames wait in pending
    pending: deque[str] = field(default_factory=deque)
    pending_bytes: int = 0
    grant: Grant = OPEN  # what this connection may subscribe to (gateway/auth.py)
    expiry: Any = None  # the timer that closes it when its token expires

    def take_pending(self) -> str | None:
        """The next live frame that waited while paused, or ``None``: then it is live again."""
        if not self.pending:
            self.paused = False
            return None
        frame = self.pending.popleft()
        self.pending_bytes -= len(frame)
        return frame


class Hub:
    def __init__(
        self,
        write_many: Callable[[list[Any], str], None],
        max_bytes: int = 1 << 20,
        max_subscriptions: int = 200,
        max_pending: int = 1000,
    ) -> None:
        self.write_many = write_many
        self.max_bytes = max_bytes
        self.max_subscriptions = max_subscriptions
        self.max_pending = max_pending
        self._subscribers: dict[str, set[Client]] = {}
        self.clients: set[Client] = set()
        self.dropped_total = 0
        self.delivered_total = 0  # frames written to clients' sockets (pending ones when they leave)
        self.delivered_bytes = 0

    @property
    def subscriptions(self) -> int:
        return sum(len(client.channels) for client in self.clients)

    @property
    def channels(self) -> int:
        """Channels with at least one subscriber (the only ones kept)."""
        return len(self._subscribers)

    def connect(self, connection: Any = None, buffered: Callable[[], int] = lambda: 0) -> Client:
        client = Client(connection, buffered)
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self._leave(client, tuple(client.channels))
        self.clients.discard(client)

    def subscribe(self, client: Client, channels: tuple[str, ...]) -> None:
        """All of ``channels`` or none: :class:`ProtocolError` past the client's limit."""
        if len(client.channels.union(channels)) > self.max_subscriptions:
            raise ProtocolError(
                "too_many_subscriptions",
                f"at most {self.max_subscriptions} channels per connection; "
                f"this one has {len(client.channels)}",
            )
        for channel in channels:
            client.channels.add(channel)
            self._subscribers.setdefault(channel, set()).add(client)

    def unsubscribe(self, client: Client, channels: tuple[str, ...]) -> None:
        self._leave(client, channels)

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._subscribers

    def publish(self, channel: str, frame: str) -> list[Client]:
        """Write ``frame`` to every subscriber at once; return the clients cut for being slow."""
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return []
        size = len(frame)
        ready, slow = [], []
        for client in subscribers:
            if client.paused:
                if client.pending_bytes + size > self.max_bytes or len(client.pending) >= self.max_pending:
                    slow.append(client)
                else:
                    client.pending.append(frame)
                    client.pending_bytes += size
            elif client.buffered() + size > self.max_bytes:
                slow.append(client)
            else:
                ready.append(client.connection)
        if ready:
            self.write_many(ready, frame)
            self.delivered_total += len(ready)
            self.delivered_bytes += len(ready) * size
        for client in slow:
            client.dropped = True
            self.disconnect(client)
            if client.on_drop is not None:
                client.on_drop()
        self.dropped_total += len(slow)
        return slow

    def _leave(self, client: Client, channels: tuple[str, ...]) -> None:
        for channel in channels:
            client.channels.discard(channel)
            subscribers = self._subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(client)
                if not subscribers:
                    del self._subscribers[channel]


@dataclass
class TokenBucket:
    """At most ``rate`` commands a second on average, ``burst`` at once. Pure: the caller
    passes the time."""

    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def allow(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0 - 1e-9:  # refills of fractions of a second add up inexactly
            self.tokens -= 1.0
            return True
        return False
