"""The HTTP client webhooks go out through: the address it connects to is the one it checked.

A guard that resolves a name, checks the answer and then lets the HTTP client resolve
it again leaves a window for DNS rebinding (the second answer can be 127.0.0.1). Here
the check is the client's own resolution: :class:`GuardedResolver` is the aiohttp
connector's resolver; it resolves the host once, refuses the connection unless *every*
address in the answer is acceptable (:func:`consumers.dispatcher.ssrf.check_address`),
and hands the connector those addresses, which it connects to (and may keep in its DNS
cache: only checked answers get there). Address literals in URLs never reach a resolver:
:func:`~consumers.dispatcher.ssrf.check_url` judges them before each attempt. TLS still
verifies the certificate against the URL's host name (aiohttp passes it as the server
name) and the Host header is the URL's, so nothing else changes for the receiver.
Proxy variables in the environment are ignored (``trust_env=False``) and redirects are
never followed.

Example::

    async with guarded_client(timeout_s=5.0, allow_private=False) as http:
        answer = await http.post("https://hooks.example.com/x", b"{}", {})
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from consumers.dispatcher.ssrf import check_address

Lookup = Callable[[str, int], Awaitable[list[str]]]
MAX_ANSWER_BYTES = 64 * 1024  # read of a receiver's answer; the rest closes the connection


async def lookup(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (one lookup), or OSError saying it does not resolve."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(getattr(exc, "errno", 0) or 0, f"{host} does not resolve: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedResolver(AbstractResolver):
    """Resolves once and lets through only answers whose every address is acceptable."""

    def __init__(self, allow_private: bool, resolve: Lookup = lookup) -> None:
        self.allow_private = allow_private
        self.resolve_names = resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self.resolve_names(host, port)
        if not addresses:
            raise OSError(0, f"{host} resolves to no address")
        for address in addresses:  # all of them: a mixed answer is a rebinding attempt
            check_address(address, self.allow_private)  # UnsafeWebhookTarget
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        pass


@dataclass(frozen=True)
class Answer:
    status: int

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_redirect(self) -> bool:
        return 300 <= self.status < 400


class GuardedClient:
    """POSTs through one aiohttp session whose connector resolves with the guard."""

    def __init__(self, timeout_s: float, allow_private: bool, resolve: Lookup, max_connections: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._resolver = GuardedResolver(allow_private, resolve)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GuardedClient:
        connector = aiohttp.TCPConnector(
            resolver=self._resolver, limit=self._max_connections, limit_per_host=0, ttl_dns_cache=10
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, trust_env=False, auto_decompress=False
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST ``body``; the answer's status (its body read up to 64 KiB and dropped).
        Raises aiohttp.ClientError, OSError or TimeoutError when the endpoint is not reached,
        UnsafeWebhookTarget when its name resolves to an address it may not reach."""
        assert self._session is not None, "use the client in `async with`"
        async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            await response.content.read(MAX_ANSWER_BYTES)
            return Answer(response.status)


def guarded_client(
    timeout_s: float, allow_private: bool, resolve: Lookup = lookup, max_connections: int = 100
) -> GuardedClient:
    return GuardedClient(timeout_s, allow_private, resolve, max_connections)
