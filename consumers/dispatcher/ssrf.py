"""Which webhook URLs and addresses may be called. Pure: no resolution happens here.

A URL must be https (http only for local development), carry no credentials and name a
valid port. An address must be public; with ``allow_private`` (local development)
loopback and private networks are allowed too, but never these, whatever the setting:

* the unspecified addresses (``0.0.0.0``, ``::``, all of ``0.0.0.0/8``), which reach the
  machine itself;
* link-local (``169.254.0.0/16``, ``fe80::/10``), where cloud metadata services live;
* the other metadata addresses (AWS ``fd00:ec2::254``, Alibaba ``100.100.100.200``,
  Oracle ``192.0.0.192``), multicast and reserved ranges.

IPv6 forms that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
``2002:AABB:CCDD::``, Teredo, NAT64 ``64:ff9b::/96``) are judged by the IPv4 address
they carry; the local-use NAT64 prefix ``64:ff9b:1::/48`` is refused (its embedding
varies by network).

Example::

    check_url("https://hooks.example.com/x", allow_private=False)   # ("hooks.example.com", 443)
    check_address("::ffff:127.0.0.1", allow_private=False)          # raises UnsafeWebhookTarget
"""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlparse, urlunparse

from oddstream.errors import UnsafeWebhookTarget

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254",
                                      "100.100.100.200", "192.0.0.192")
)  # fmt: skip
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
MAX_URL_CHARS = 2048


@functools.lru_cache(maxsize=4096)  # checked at each attempt: the answer for a URL never changes
def check_url(url: str, allow_private: bool) -> tuple[str, int]:
    """Return (host, port) of an acceptable URL; raise :class:`UnsafeWebhookTarget` otherwise."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        size = len(url) if isinstance(url, str) else "?"
        raise UnsafeWebhookTarget(f"URL of {size} characters; at most {MAX_URL_CHARS}")
    shown = redact_url(url)
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError as exc:  # a port out of range or not a number, a bad IPv6 literal
        raise UnsafeWebhookTarget(f"{shown!r}: {exc}") from None
    if parsed.scheme not in ("https", "http"):
        raise UnsafeWebhookTarget(f"{shown!r}: scheme must be https (or http for local development)")
    if parsed.scheme == "http" and not allow_private:
        raise UnsafeWebhookTarget(f"{shown!r}: plain http is allowed only for local development")
    if not parsed.hostname:
        raise UnsafeWebhookTarget(f"{shown!r}: no host")
    if parsed.username or parsed.password:
        raise UnsafeWebhookTarget(f"{shown!r}: credentials in the URL are not allowed")
    if port == 0:
        raise UnsafeWebhookTarget(f"{shown!r}: port 0")
    try:
        ipaddress.ip_address(parsed.hostname.split("%", 1)[0])
    except ValueError:
        pass  # a name: its addresses are checked when it is resolved, at each delivery
    else:
        check_address(parsed.hostname, allow_private)  # an address literal: refused now, not at delivery
    return parsed.hostname, port or (443 if parsed.scheme == "https" else 80)


def check_address(address: str, allow_private: bool) -> None:
    """Refuse every address a webhook must not reach (see the module docstring)."""
    try:
        outer = ipaddress.ip_address(address.split("%", 1)[0])  # a zone id ("fe80::1%eth0") aside
    except ValueError:
        raise UnsafeWebhookTarget(f"{address!r} is not an IP address") from None
    if outer in LOCAL_NAT64:
        raise UnsafeWebhookTarget(f"{address} is a local-use NAT64 address")
    ip = carried_ipv4(outer) or outer
    where = address if ip == outer else f"{address} (carrying {ip})"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in THIS_NETWORK):
        raise UnsafeWebhookTarget(f"{where} is an unspecified address (this machine)")
    if ip in METADATA or ip.is_link_local:
        raise UnsafeWebhookTarget(f"{where} is link-local or a cloud metadata address")
    if ip.is_multicast or (ip.is_reserved and not ip.is_loopback):  # ::1 lies in reserved ::/8
        raise UnsafeWebhookTarget(f"{where} is a multicast or reserved address")
    if ip.is_global:
        return
    if allow_private and (ip.is_loopback or ip.is_private):
        return
    raise UnsafeWebhookTarget(f"{where} is not a public address")


def carried_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo client, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@functools.lru_cache(maxsize=4096)
def redact_url(url: str) -> str:
    """The URL without user, password and query values: what logs and delivery records show."""
    try:
        parsed = urlparse(url)
        netloc = parsed.netloc.rsplit("@", 1)[-1]
        if parsed.username or parsed.password:
            netloc = f"***@{netloc}"
        query = "&".join(f"{part.split('=', 1)[0]}=***" for part in parsed.query.split("&") if part)
        return urlunparse((parsed.scheme, netloc, parsed.path, "", query, ""))
    except ValueError:
        return "<unparsable URL>"
