"""Standard Webhooks signing, and per-endpoint secrets derived from one master secret.

Secrets are never stored on Kafka: ``endpoint_secret(master, endpoint_id)`` gives the
same ``whsec_...`` secret to the dispatcher (which signs) and to the operator
(who hands it to the endpoint's owner).

Example::

    secret = endpoint_secret("master", "ep1")
    headers = sign(secret, "msg_1", 1_700_000_000, b'{"type":"x"}')
    Webhook(secret).verify(b'{"type":"x"}', headers)   # standardwebhooks verifies
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def endpoint_secret(master_secret: str, endpoint_id: str) -> str:
    digest = hmac.new(master_secret.encode(), f"webhook:{endpoint_id}".encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


REGISTRY_SIGNATURE = "oddstream-registry-signature"


def registry_signature(master_secret: str, key: bytes, value: bytes | None) -> bytes:
    """The header that authenticates one record of the endpoint registry topic: an HMAC of
    its key and value (or of the deletion, for a tombstone) with a key derived from the
    master secret, so only a holder of the master secret can add, change or delete an
    endpoint. Anyone else who can write to the topic gets a refused, logged record."""
    signing_key = hmac.new(master_secret.encode(), b"oddstream:webhook-registry", hashlib.sha256).digest()
    body = len(key).to_bytes(4, "big") + key + (b"\x00" if value is None else b"\x01" + value)
    return base64.b64encode(hmac.new(signing_key, body, hashlib.sha256).digest())


def registry_record_is_authentic(
    master_secret: str, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]] | None
) -> bool:
    given = [v for name, v in headers or [] if name == REGISTRY_SIGNATURE]
    if len(given) != 1 or not isinstance(given[0], bytes):
        return False
    return hmac.compare_digest(given[0], registry_signature(master_secret, key, value))


def sign(secret: str, message_id: str, timestamp_s: int, payload: bytes) -> dict[str, str]:
    """The webhook-id, webhook-timestamp and webhook-signature headers for one delivery."""
    when = datetime.fromtimestamp(timestamp_s, UTC)
    signature = Webhook(secret).sign(message_id, when, payload.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
