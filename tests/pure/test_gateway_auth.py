"""Gateway credentials and channel grants, with values (real signatures, no sockets)."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import OPEN, Authenticator, AuthError, parse_key_entry

pytestmark = pytest.mark.pure

SECRET = "s" * 64


def rsa_pair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def token(claims: dict[str, object], key: str | bytes = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode({"sub": "screen-1", "exp": int(time.time()) + 60, **claims}, key, algorithm=algorithm)


def test_key_entries_grant_every_channel_or_their_patterns() -> None:
    assert parse_key_entry("k1") == ("k1", ("*",))
    assert parse_key_entry("k2=markets, market:*") == ("k2", ("markets", "market:*"))
    for bad in ("=markets", "k3=", "k3= , "):
        with pytest.raises(ValueError):
            parse_key_entry(bad)
    auth = Authenticator(["k1", "k2=markets,market:*"])
    assert auth.from_request({"api_key": ["k1"]}, {}).everything
    scoped = auth.from_request({}, {"X-API-Key": "k2"})
    assert scoped.denied(("markets", "market:m1", "alerts", "models")) == ["alerts", "models"]
    assert scoped.subject.startswith("key:") and "k2" not in scoped.subject  # the key is not shown
    assert auth.from_request({}, {"Authorization": "Bearer k1"}).everything


@pytest.mark.parametrize(
    "query, headers, reason",
    [
        ({}, {}, "missing API key or token"),
        ({"api_key": ["k9"]}, {}, "unknown API key"),
        ({}, {"Authorization": "Basic azE6"}, "missing API key or token"),
    ],
)
def test_requests_without_a_known_key_are_refused_with_a_reason(
    query: dict[str, list[str]], headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(AuthError, match=reason):
        Authenticator(["k1"]).from_request(query, headers)


def test_nothing_configured_is_open() -> None:
    assert Authenticator([]).from_request({}, {}) is OPEN and OPEN.allows("anything")


def test_a_jwt_grants_its_channel_claims_until_it_expires() -> None:
    auth = Authenticator([], jwt_secret=SECRET)
    grant = auth.from_request({"token": [token({"channels": ["market:*", "alerts"]})]}, {})
    assert grant.subject == "jwt:screen-1" and grant.expires_at is not None and grant.expires_at > time.time()
    assert grant.denied(("market:m1", "alerts", "alerts:steam", "models")) == ["alerts:steam", "models"]


def test_rs256_tokens_with_the_public_key() -> None:
    private, public = rsa_pair()
    auth = Authenticator([], jwt_public_key=public)
    assert auth.from_token(token({"channels": ["*"]}, private, "RS256")).everything
    other_private, _ = rsa_pair()
    with pytest.raises(AuthError, match="Signature verification failed"):
        auth.from_token(token({"channels": ["*"]}, other_private, "RS256"))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: token({"channels": ["*"], "exp": int(time.time()) - 60}), "token expired"),
        (lambda: token({"channels": ["*"]}, "w" * 64), "Signature verification failed"),
        (lambda: token({}), '"channels" claim'),
        (lambda: token({"channels": "markets"}), '"channels" claim'),
        (lambda: token({"channels": []}), '"channels" claim'),
        (lambda: token({"channels": [1]}), '"channels" claim'),
        (lambda: token({"channels": ["*"] * 101}), '"channels" claim'),
        (lambda: jwt.encode({"sub": "x", "channels": ["*"]}, SECRET, algorithm="HS256"), '"exp"'),
        (lambda: jwt.encode({"exp": int(time.time()) + 60, "channels": ["*"]}, SECRET), '"sub"'),
        (
            lambda: jwt.encode(
                {"sub": "x", "exp": int(time.time()) + 60, "channels": ["*"]}, "", algorithm="none"
            ),
            "not accepted",
        ),
        (lambda: token({"channels": ["*"]}, SECRET, "HS512"), "not accepted"),
        (lambda: "not.a.jwt", "malformed token"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(make: object, reason: str) -> None:
    auth = Authenticator([], jwt_secret=SECRET)
    with pytest.raises(AuthError, match=reason):
        auth.from_token(make())  # type: ignore[operator]


def test_a_jwt_where_none_is_configured_is_an_unknown_key() -> None:
    with pytest.raises(AuthError, match="unknown API key"):
        Authenticator(["k1"]).from_request({"token": [token({"channels": ["*"]})]}, {})
