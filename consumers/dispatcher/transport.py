"""The HTTP client webhooks go out through: the address it connects to is the one it checked.

A guard that resolves a name, checks the answer and then lets the HTTP client resolve
it again leaves a window for DNS rebinding (the second answer can be 127.0.0.1). Here
the check happens inside the connection itself: :class:`GuardedBackend` resolves the
host once, refuses the connection unless *every* address in the answer is acceptable
(:func:`consumers.dispatcher.ssrf.check_address`), and connects to those addresses, not
to the name. TLS still verifies the certificate against the URL's host name (httpcore
passes it as the server name) and the Host header is the URL's, so nothing else changes
for the receiver. Proxy variables in the environment are ignored (``trust_env=False``)
and redirects are never followed.

Example::

    async with guarded_client(timeout_s=5.0, allow_private=False) as http:
        await http.post("https://hooks.example.com/x", content=b"{}")
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from consumers.dispatcher.ssrf import check_address
from oddstream.errors import UnsafeWebhookTarget

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (one lookup), or httpcore's ConnectError."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to checked addresses of one resolution."""

    def __init__(
        self,
        allow_private: bool,
        resolver: Resolver = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.resolver(host, port)
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:  # all of them: a mixed answer is a rebinding attempt
            check_address(address, self.allow_private)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeWebhookTarget("a unix socket is not a webhook target")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a :class:`GuardedBackend` pool (no proxies, no env)."""

    def __init__(self, backend: GuardedBackend, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        # the same pool httpx builds, with the network backend swapped: httpx has no
        # parameter for it (tests/pure/test_webhook_transport.py checks it is used)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def guarded_client(
    timeout_s: float,
    allow_private: bool,
    resolver: Resolver = resolve,
    inner: httpcore.AsyncNetworkBackend | None = None,
    max_connections: int = 100,
) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=20)
    transport = GuardedTransport(GuardedBackend(allow_private, resolver, inner), limits)
    return httpx.AsyncClient(transport=transport, timeout=timeout_s, follow_redirects=False, trust_env=False)
