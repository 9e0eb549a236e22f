"""The webhook client against a loopback server: it connects to the address it checked (one
resolution, so a DNS rebinding answer never gets a connection), refuses names that resolve
to any internal address before connecting, ignores proxy variables, follows no redirect,
and reads no more than 64 KiB of an answer. No broker needed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from consumers.dispatcher.transport import MAX_ANSWER_BYTES, guarded_client
from oddstream.errors import UnsafeWebhookTarget

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class Rebinding:
    """A resolver that answers each of ``answers`` in turn (the last one from then on)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[Any]]]:
    """A loopback receiver: /ok answers 204, /redirect 302 to /admin, /huge 10 MB."""
    seen: list[Any] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("Host"), await request.read()))
        if request.path == "/redirect":
            return web.Response(status=302, headers={"Location": "/admin"})
        if request.path == "/huge":
            return web.Response(status=200, body=b"x" * 10_000_000)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port, seen
    finally:
        await runner.cleanup()


async def test_the_connection_goes_to_the_address_that_was_checked(server: Any) -> None:
    port, seen = server
    resolver = Rebinding(["127.0.0.1"], ["10.255.255.1"])  # a second answer would go elsewhere
    async with guarded_client(5.0, allow_private=True, resolve=resolver) as http:
        for _ in range(3):
            answer = await http.post(f"http://hooks.example.com:{port}/ok", b"{}", {})
            assert answer.status == 204
    assert resolver.calls == 1  # resolved once, by the guard
    assert [s[:2] for s in seen] == [("/ok", f"hooks.example.com:{port}")] * 3  # the URL's Host


@pytest.mark.parametrize("answer", [["127.0.0.1"], ["93.184.216.34", "10.0.0.7"], ["::ffff:169.254.169.254"]])
async def test_a_name_resolving_to_any_internal_address_is_refused_before_connecting(
    server: Any, answer: list[str]
) -> None:
    port, seen = server
    async with guarded_client(5.0, allow_private=False, resolve=Rebinding(answer)) as http:
        with pytest.raises(UnsafeWebhookTarget):
            await http.post(f"http://rebind.example.com:{port}/ok", b"{}", {})
    assert seen == []


async def test_metadata_is_refused_even_with_private_targets_allowed(server: Any) -> None:
    port, seen = server
    resolver = Rebinding(["169.254.169.254"])
    async with guarded_client(5.0, allow_private=True, resolve=resolver) as http:
        with pytest.raises(UnsafeWebhookTarget, match=r"169\.254\.169\.254"):
            await http.post(f"http://metadata.example.com:{port}/ok", b"{}", {})
    assert seen == []


async def test_proxy_variables_in_the_environment_are_ignored(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, seen = server
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://10.9.9.9:3128")
    async with guarded_client(5.0, True, resolve=Rebinding(["127.0.0.1"])) as http:
        assert (await http.post(f"http://hooks.example.com:{port}/ok", b"{}", {})).status == 204
    assert len(seen) == 1


async def test_redirects_are_not_followed_and_big_answers_not_read_whole(server: Any) -> None:
    port, seen = server
    async with guarded_client(5.0, True, resolve=Rebinding(["127.0.0.1"])) as http:
        answer = await http.post(f"http://hooks.example.com:{port}/redirect", b"{}", {})
        assert answer.status == 302 and answer.is_redirect and not answer.is_success
        assert (await http.post(f"http://hooks.example.com:{port}/huge", b"{}", {})).status == 200
    assert [s[0] for s in seen] == ["/redirect", "/huge"]  # never /admin
    assert MAX_ANSWER_BYTES == 64 * 1024


async def test_a_name_that_does_not_resolve_or_a_closed_port_is_a_client_error(server: Any) -> None:
    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError(0, f"{host} does not resolve: test")

    async with guarded_client(2.0, True, resolve=nowhere) as http:
        with pytest.raises(aiohttp.ClientError, match="does not resolve"):
            await http.post("http://nowhere.invalid/x", b"{}", {})
    async with guarded_client(2.0, True, resolve=Rebinding(["127.0.0.1"])) as http:
        with pytest.raises((aiohttp.ClientError, OSError)):
            await http.post("http://closed.example.com:9/x", b"{}", {})
    await asyncio.sleep(0)
