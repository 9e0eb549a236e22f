"""Subscriptions and bounded per-client queues.

A client whose queue is full is dropped (told why and disconnected) so that
one slow reader never delays the others.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue[str]
    channels: set[str] = field(default_factory=set)
    dropped: bool = False


class Hub:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._subscribers: dict[str, set[Client]] = defaultdict(set)
        self.clients: set[Client] = set()
        self.dropped_total = 0

    def connect(self) -> Client:
        client = Client(asyncio.Queue(self.queue_size))
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        for channel in client.channels:
            self._subscribers[channel].discard(client)
        client.channels.clear()
        self.clients.discard(client)

    def subscribe(self, client: Client, channels: tuple[str, ...]) -> None:
        for channel in channels:
            client.channels.add(channel)
            self._subscribers[channel].add(client)

    def unsubscribe(self, client: Client, channels: tuple[str, ...]) -> None:
        for channel in channels:
            client.channels.discard(channel)
            self._subscribers[channel].discard(client)

    def publish(self, channel: str, frame: str) -> list[Client]:
        """Queue ``frame`` for every subscriber; return the clients dropped for being slow."""
        slow = []
        for client in list(self._subscribers.get(channel, ())):
            try:
                client.queue.put_nowait(frame)
            except asyncio.QueueFull:
                client.dropped = True
                slow.append(client)
                self.disconnect(client)
        self.dropped_total += len(slow)
        return slow
