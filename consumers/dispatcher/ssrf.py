"""Which webhook URLs may be called: no internal addresses unless explicitly allowed."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

from oddstream.errors import UnsafeWebhookTarget


def check_url(url: str, allow_private: bool) -> tuple[str, int]:
    """Return (host, port) of an acceptable URL; raise :class:`UnsafeWebhookTarget` otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("https", "http"):
        raise UnsafeWebhookTarget(f"{url!r}: scheme must be https (or http for local development)")
    if parsed.scheme == "http" and not allow_private:
        raise UnsafeWebhookTarget(f"{url!r}: plain http is allowed only for local development")
    if not parsed.hostname:
        raise UnsafeWebhookTarget(f"{url!r}: no host")
    if parsed.username or parsed.password:
        raise UnsafeWebhookTarget(f"{url!r}: credentials in the URL are not allowed")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.hostname, port


def check_address(address: str, allow_private: bool) -> None:
    """Reject loopback, private, link-local, multicast and reserved addresses (cloud metadata too)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    public = ip.is_global and not (ip.is_multicast or ip.is_reserved)
    if public:
        return
    if allow_private and (ip.is_loopback or ip.is_private) and not ip.is_link_local:
        return
    raise UnsafeWebhookTarget(f"{address} is not a public address")
