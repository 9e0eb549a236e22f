"""Who may connect to the gateway and which channels they may subscribe to. Pure.

Two kinds of credentials, each granting channel patterns (``fnmatch`` style: ``markets``,
``market:*``, ``alerts:steam``, ``*``):

* API keys (``ODDSTREAM_GATEWAY_API_KEYS``): an entry ``KEY`` grants every channel, an entry
  ``KEY=pattern,pattern`` grants those patterns only. For servers and scripts.
* JWTs, for browsers: signed HS256 with ``ODDSTREAM_GATEWAY_JWT_SECRET`` or RS256 with the
  PEM public key ``ODDSTREAM_GATEWAY_JWT_PUBLIC_KEY``. Claims: ``sub`` (who), ``exp``
  (required; the connection is closed with 4001 when it passes unless the client sent a
  fresh token with ``{"op": "refresh", "token": ...}``), ``channels`` (a list of patterns).

A request offers a credential as ``?token=`` / ``?api_key=``, ``Authorization: Bearer ...``
or ``X-API-Key``. With no key and no JWT key configured the gateway is open (local only).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

ALL = ("*",)
MAX_PATTERNS = 100


class AuthError(ValueError):
    """A credential is refused; the message says why (it goes back to the client)."""


@dataclass(frozen=True)
class Grant:
    """What one connection may do: its ``subject`` (counted for connections per key),
    channel ``patterns``, and when it ends (epoch seconds; ``None``: never)."""

    subject: str
    patterns: tuple[str, ...]
    expires_at: float | None = None

    def allows(self, channel: str) -> bool:
        return any(fnmatch.fnmatchcase(channel, pattern) for pattern in self.patterns)

    def denied(self, channels: tuple[str, ...]) -> list[str]:
        return [c for c in channels if not self.allows(c)]

    @property
    def everything(self) -> bool:
        return "*" in self.patterns


OPEN = Grant("anonymous", ALL)


def parse_key_entry(entry: str) -> tuple[str, tuple[str, ...]]:
    """``KEY`` or ``KEY=pattern,pattern`` -> (key, patterns)."""
    key, _, patterns = entry.partition("=")
    if not key:
        raise ValueError("an API key entry needs a key before '='")
    if not _:
        return key, ALL
    parsed = tuple(p.strip() for p in patterns.split(",") if p.strip())
    if not parsed:
        raise ValueError(f"API key entry {key[:4]}...= names no channel pattern")
    return key, parsed


class Authenticator:
    def __init__(
        self,
        key_entries: list[str],
        jwt_secret: str | None = None,
        jwt_public_key: str | None = None,
        leeway_s: float = 5.0,
    ) -> None:
        self.keys = [parse_key_entry(entry) for entry in key_entries]
        self.jwt_keys: list[tuple[str, str]] = []
        if jwt_secret:
            self.jwt_keys.append(("HS256", jwt_secret))
        if jwt_public_key:
            self.jwt_keys.append(("RS256", jwt_public_key))
        self.leeway_s = leeway_s

    @property
    def open(self) -> bool:
        return not self.keys and not self.jwt_keys

    def from_request(self, query: Mapping[str, list[str]], headers: Mapping[str, str]) -> Grant:
        """The grant of a connection request; :class:`AuthError` if there is none."""
        if self.open:
            return OPEN
        offered = headers.get("X-API-Key") or ""
        auth = headers.get("Authorization") or ""
        if not offered and auth.startswith("Bearer "):
            offered = auth.removeprefix("Bearer ").strip()
        offered = offered or (query.get("token") or query.get("api_key") or [""])[0]
        if not offered:
            raise AuthError("missing API key or token")
        if self.jwt_keys and offered.count(".") == 2:
            return self.from_token(offered)
        return self.from_key(offered)

    def from_key(self, offered: str) -> Grant:
        for key, patterns in self.keys:
            if hmac.compare_digest(offered.encode(), key.encode()):
                return Grant("key:" + hashlib.sha256(key.encode()).hexdigest()[:12], patterns)
        raise AuthError("unknown API key")

    def from_token(self, token: str) -> Grant:
        """A JWT's grant: signature, ``exp`` and ``channels`` checked."""
        if not self.jwt_keys:
            raise AuthError("tokens are not accepted here (no JWT key configured)")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from None
        key = next((k for alg, k in self.jwt_keys if alg == algorithm), None)
        if key is None:
            accepted = ", ".join(alg for alg, _ in self.jwt_keys)
            raise AuthError(f"token algorithm {str(algorithm)[:20]!r} is not accepted ({accepted})")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"token refused: {exc}") from None
        channels = claims.get("channels")
        if (
            not isinstance(channels, list)
            or not channels
            or len(channels) > MAX_PATTERNS
            or not all(isinstance(p, str) and 0 < len(p) <= 200 for p in channels)
        ):
            raise AuthError(f'the token\'s "channels" claim must list 1 to {MAX_PATTERNS} channel patterns')
        return Grant("jwt:" + str(claims["sub"])[:200], tuple(channels), float(claims["exp"]))
