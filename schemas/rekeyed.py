"""Records the worker writes to be read back by itself (``bets.by-user``): signed. Pure.

Anyone who can write to a topic can write a well-formed record to it. For ``bets.by-user``
that would be worse than a wrong number: the user stage folds each (bets partition,
offset) once, so one forged record naming a high offset would make it drop the real
records of that partition after it. The worker therefore signs what it writes there (an
HMAC of key and value with a key derived from ``ODDSTREAM_WORKER_STATE_KEY``, in the
:data:`WORKER_SIGNATURE` header), and every reader (the user stage, the store, a replay)
refuses a record without a valid signature, with that reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

WORKER_SIGNATURE = "oddstream-worker-signature"
REKEYED_TOPICS = ("bets.by-user",)  # topic suffixes


def worker_signature(state_key: bytes, key: bytes, value: bytes) -> bytes:
    signing_key = hmac.new(state_key, b"oddstream:bets.by-user", hashlib.sha256).digest()
    body = len(key).to_bytes(4, "big") + key + value
    return base64.b64encode(hmac.new(signing_key, body, hashlib.sha256).digest())


def signed_by_worker(
    state_key: bytes, key: bytes, value: bytes, headers: Sequence[tuple[Any, Any]] | Mapping[Any, Any] | None
) -> bool:
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    given = [v for name, v in pairs if name in (WORKER_SIGNATURE, WORKER_SIGNATURE.encode())]
    if len(given) != 1 or not isinstance(given[0], bytes):
        return False
    return hmac.compare_digest(given[0], worker_signature(state_key, key, value))
