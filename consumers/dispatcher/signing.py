"""Standard Webhooks signing, endpoint secrets, and the registry's integrity.

* Each endpoint gets a random ``whsec_`` secret when it is created (:func:`new_secret`),
  shown once to the operator. The registry record carries it only *sealed*
  (:func:`seal_secret`: AES-GCM with a key derived from the master secret, the endpoint
  id as associated data), so it cannot be read from the topic, nor moved to another
  endpoint. Records written before sealed secrets existed use the secret derived from
  the master secret and the endpoint id (:func:`endpoint_secret`).
* During a rotation a delivery carries two signatures (``v1,<new> v1,<old>``); a
  Standard Webhooks verifier accepts either.
* Registry records are signed (:func:`registry_signature`), so only a holder of the
  master secret can create, change or delete an endpoint; so are the records of the
  retries topic (:func:`retry_signature`), so nobody else can have a payload delivered.

Example::

    secret = new_secret()
    headers = sign([secret], "msg_1", 1_700_000_000, b'{"type":"x"}')
    Webhook(secret).verify(b'{"type":"x"}', headers)   # standardwebhooks verifies
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def endpoint_secret(master_secret: str, endpoint_id: str) -> str:
    digest = hmac.new(master_secret.encode(), f"webhook:{endpoint_id}".encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


REGISTRY_SIGNATURE = "oddstream-registry-signature"


def registry_signature(master_secret: str, key: bytes, value: bytes | None) -> bytes:
    """The header that authenticates one record of the endpoint registry topic: an HMAC of
    its key and value (or of the deletion, for a tombstone) with a key derived from the
    master secret, so only a holder of the master secret can add, change or delete an
    endpoint. Anyone else who can write to the topic gets a refused, logged record."""
    return _record_signature(master_secret, b"oddstream:webhook-registry", key, value)


def registry_record_is_authentic(
    master_secret: str, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]] | None
) -> bool:
    return _authentic(headers, REGISTRY_SIGNATURE, registry_signature(master_secret, key, value))


RETRY_SIGNATURE = "oddstream-retry-signature"


def retry_signature(master_secret: str, key: bytes, value: bytes | None) -> bytes:
    """The same for a record of the retries topic (a message waiting for its next attempt):
    the dispatcher signs what it delivers, so it sends only what a holder of the master
    secret (the dispatcher, the API's replay) scheduled."""
    return _record_signature(master_secret, b"oddstream:webhook-retries", key, value)


def retry_record_is_authentic(
    master_secret: str, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]] | None
) -> bool:
    return _authentic(headers, RETRY_SIGNATURE, retry_signature(master_secret, key, value))


def _record_signature(master_secret: str, domain: bytes, key: bytes, value: bytes | None) -> bytes:
    signing_key = hmac.new(master_secret.encode(), domain, hashlib.sha256).digest()
    body = len(key).to_bytes(4, "big") + key + (b"\x00" if value is None else b"\x01" + value)
    return base64.b64encode(hmac.new(signing_key, body, hashlib.sha256).digest())


def _authentic(headers: list[tuple[str, bytes]] | None, name: str, expected: bytes) -> bool:
    given = [v for header, v in headers or [] if header == name]
    if len(given) != 1 or not isinstance(given[0], bytes):
        return False
    return hmac.compare_digest(given[0], expected)


def new_secret() -> str:
    """A random endpoint signing secret (24 bytes, as Svix's)."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def _sealing_key(master_secret: str) -> bytes:
    return hmac.new(master_secret.encode(), b"oddstream:webhook-secrets", hashlib.sha256).digest()


def seal_secret(master_secret: str, endpoint_id: str, secret: str) -> str:
    """The secret, encrypted for the registry topic (``v1:`` + base64 of nonce and ciphertext)."""
    nonce = os.urandom(12)
    sealed = AESGCM(_sealing_key(master_secret)).encrypt(nonce, secret.encode(), endpoint_id.encode())
    return "v1:" + base64.b64encode(nonce + sealed).decode()


def open_secret(master_secret: str, endpoint_id: str, sealed: str) -> str:
    """The secret sealed for ``endpoint_id``; ValueError if it was not sealed with this master
    secret for this endpoint (or was changed)."""
    if not sealed.startswith("v1:"):
        raise ValueError("not a sealed secret (v1:...)")
    try:
        raw = base64.b64decode(sealed[3:], validate=True)
        secret = AESGCM(_sealing_key(master_secret)).decrypt(raw[:12], raw[12:], endpoint_id.encode())
    except (InvalidTag, ValueError, binascii.Error) as exc:
        raise ValueError("the sealed secret does not open with this master secret and endpoint") from exc
    return secret.decode()


def sign(secrets: list[str], message_id: str, timestamp_s: int, payload: bytes) -> dict[str, str]:
    """The webhook-id, webhook-timestamp and webhook-signature headers for one delivery: one
    signature per secret (two while a rotation's overlap lasts), space-separated. Standard
    Webhooks' scheme (``v1,`` + base64 of HMAC-SHA256 over ``id.timestamp.body`` with the
    secret's bytes); tests/pure/test_webhooks.py verifies it with the reference library."""
    signed = f"{message_id}.{timestamp_s}.".encode() + payload
    signature = " ".join(
        "v1," + base64.b64encode(hmac.digest(_secret_bytes(s), signed, "sha256")).decode() for s in secrets
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


@functools.lru_cache(maxsize=4096)
def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))
