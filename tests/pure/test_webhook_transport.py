"""Webhook targets: every address form judged by what it reaches; URLs and what delivery
records show of them. The client's connections (one resolution, no proxies, no redirects)
are tested against a loopback server in tests/integration/test_webhook_transport.py."""

from __future__ import annotations

import pytest

from consumers.dispatcher.ssrf import check_address, check_url, redact_url
from oddstream.errors import UnsafeWebhookTarget

pytestmark = pytest.mark.pure


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
