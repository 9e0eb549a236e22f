"""Subscriptions and bounded per-client queues. Pure (asyncio queues, no I/O).

A client whose queue is full, or whose queued frames exceed ``max_bytes``, is dropped
(its ``on_drop`` closes the connection with 1013) so that one slow reader never delays
the others. Channels without subscribers are not kept, so unsubscribing (even from a
channel never subscribed) cannot grow the gateway, and a client holds at most
``max_subscriptions`` channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.auth import OPEN, Grant
from gateway.protocol import ProtocolError


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue[str]
    channels: set[str] = field(default_factory=set)
    dropped: bool = False
    queued_bytes: int = 0
    on_drop: Callable[[], None] | None = None
    commands: TokenBucket = field(default_factory=lambda: TokenBucket(20.0, 40.0))
    refused_commands: int = 0
    live: asyncio.Event = field(default_factory=_set_event)  # cleared while a resume replays
    grant: Grant = OPEN  # what this connection may subscribe to (gateway/auth.py)
    expiry: asyncio.TimerHandle | None = None  # closes it when its token expires

    def take(self, frame: str) -> None:
        """The sender took ``frame`` off the queue."""
        self.queued_bytes -= len(frame)


class Hub:
    def __init__(self, queue_size: int, max_bytes: int = 1 << 20, max_subscriptions: int = 200) -> None:
        self.queue_size = queue_size
        self.max_bytes = max_bytes
        self.max_subscriptions = max_subscriptions
        self._subscribers: dict[str, set[Client]] = {}
        self.clients: set[Client] = set()
        self.dropped_total = 0

    @property
    def channels(self) -> int:
        """Channels with at least one subscriber (the only ones kept)."""
        return len(self._subscribers)

    def connect(self) -> Client:
        client = Client(asyncio.Queue(self.queue_size))
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
        """Queue ``frame`` for every subscriber; return the clients dropped for being slow."""
        slow = []
        size = len(frame)
        for client in list(self._subscribers.get(channel, ())):
            if client.queued_bytes + size > self.max_bytes:
                slow.append(client)
                continue
            try:
                client.queue.put_nowait(frame)
                client.queued_bytes += size
            except asyncio.QueueFull:
                slow.append(client)
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
