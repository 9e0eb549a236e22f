"""Webhook targets: every address form judged by what it reaches, one resolution per
connection (no DNS rebinding window), no proxies from the environment, no redirects.

The network below the guard is httpcore's mock backend: this tier does no I/O."""

from __future__ import annotations

from typing import Any

import httpcore
import pytest

from consumers.dispatcher.ssrf import check_address, check_url, redact_url
from consumers.dispatcher.transport import guarded_client
from oddstream.errors import UnsafeWebhookTarget

pytestmark = pytest.mark.pure
NO_CONTENT = [b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"]


class Recording(httpcore.AsyncMockBackend):
    """The mock network, remembering which address each connection went to."""

    def __init__(self, buffer: list[bytes]) -> None:
        super().__init__(buffer)
        self.connected: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.connected.append((host, port))
        return await super().connect_tcp(host, port, *args, **kwargs)


class Rebinding:
    """A resolver that answers a public address first and loopback after that."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


async def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    resolver = Rebinding(["93.184.216.34"], ["127.0.0.1"])
    network = Recording(NO_CONTENT)
    async with guarded_client(5.0, allow_private=False, resolver=resolver, inner=network) as http:
        response = await http.post("http://hooks.example.com:8080/x", content=b"{}")
    assert response.status_code == 204
    assert resolver.calls == 1  # resolved once, by the guard; the client never asks again
    assert network.connected == [("93.184.216.34", 8080)]


@pytest.mark.parametrize("answer", [["127.0.0.1"], ["93.184.216.34", "10.0.0.7"], ["::ffff:169.254.169.254"]])
async def test_a_name_resolving_to_any_internal_address_is_refused_before_connecting(
    answer: list[str],
) -> None:
    network = Recording(NO_CONTENT)
    async with guarded_client(5.0, allow_private=False, resolver=Rebinding(answer), inner=network) as http:
        with pytest.raises(UnsafeWebhookTarget):
            await http.post("http://rebind.example.com/x", content=b"{}")
    assert network.connected == []


async def test_proxy_variables_in_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://10.9.9.9:3128")
    network = Recording(NO_CONTENT)
    async with guarded_client(5.0, False, resolver=Rebinding(["93.184.216.34"]), inner=network) as http:
        assert (await http.post("http://hooks.example.com/x", content=b"{}")).status_code == 204
    assert network.connected == [("93.184.216.34", 80)]


async def test_redirects_are_not_followed() -> None:
    redirect = [b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1/admin\r\nContent-Length: 0\r\n\r\n"]
    network = Recording(redirect)
    async with guarded_client(5.0, False, resolver=Rebinding(["93.184.216.34"]), inner=network) as http:
        response = await http.post("http://hooks.example.com/x", content=b"{}")
    assert response.status_code == 302 and response.is_redirect
    assert network.connected == [("93.184.216.34", 80)]


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0", "0.1.2.3", "::",  # unspecified: this machine
        "169.254.169.254", "169.254.170.2", "fe80::1", "fe80::1%eth0",  # link-local, metadata
        "fd00:ec2::254", "100.100.100.200", "192.0.0.192",  # metadata elsewhere
        "::ffff:169.254.169.254", "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe",  # metadata, wrapped
        "::ffff:0.0.0.0", "2002::1", "64:ff9b::",  # unspecified, wrapped
        "64:ff9b:1::7f00:1", "224.0.0.1", "ff02::1", "240.0.0.1",  # local NAT64, multicast, reserved
    ],
)  # fmt: skip
def test_addresses_refused_even_for_local_development(address: str) -> None:
    with pytest.raises(UnsafeWebhookTarget):
        check_address(address, allow_private=True)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.0.0.5", "192.168.1.1", "::1", "fd12:3456::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::1", "2002:c0a8:0101::1",  # mapped, 6to4
        "64:ff9b::7f00:1", "64:ff9b::a00:1",  # NAT64 of loopback and 10/8
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo; its client is 127.0.0.1
    ],
)  # fmt: skip
def test_internal_addresses_in_every_form_are_refused_in_production(address: str) -> None:
    with pytest.raises(UnsafeWebhookTarget):
        check_address(address, allow_private=False)
    check_address(address, allow_private=True)  # and allowed for local development


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"]
)
def test_public_addresses_pass(address: str) -> None:
    check_address(address, allow_private=False)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://x.example.com:99999/", "out of range"),
        ("https://x.example.com:0/", "port 0"),
        ("https://x.example.com:http/", "not"),
        ("https://[::1/", "Invalid IPv6"),
        ("https://" + "a" * 3000 + ".com/", "at most 2048"),
        ("gopher://x.example.com/", "scheme"),
        ("https://u:p@x.example.com/", "credentials"),
    ],
)
def test_garbage_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeWebhookTarget, match=reason):
        check_url(url, allow_private=False)


def test_delivery_records_never_show_credentials_or_query_values() -> None:
    assert redact_url("https://user:secret@hooks.example.com/p?token=abc&x=1") == (
        "https://***@hooks.example.com/p?token=***&x=***"
    )
    assert redact_url("https://hooks.example.com/p") == "https://hooks.example.com/p"
    assert "secret" not in redact_url("https://user:secret@[::1/")
