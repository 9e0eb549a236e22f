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
