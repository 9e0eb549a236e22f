"""Manage endpoints (signed records on the compacted registry topic) and a demo receiver."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from consumers.dispatcher.signing import (
    REGISTRY_SIGNATURE,
    endpoint_secret,
    new_secret,
    registry_record_is_authentic,
    registry_signature,
    seal_secret,
)
from consumers.dispatcher.ssrf import check_url
from oddstream.codecs import build_codec
from oddstream.errors import ConfigError
from oddstream.kafka.read import read_topic
from oddstream.producer import EventProducer
from oddstream.settings import Settings
from schemas.catalog import Event
from schemas.topics import Topics


def register_endpoint(
    settings: Settings,
    url: str,
    event_types: list[str],
    endpoint_id: str | None = None,
    window_updates: bool = False,
    rate_limit: int = 0,
) -> tuple[str, str]:
    """Publish a WebhookEndpoint with a new random secret; return (endpoint_id, the secret),
    the only time the secret is shown. Window events go out as finals only unless
    ``window_updates`` asks for every current update."""
    check_url(url, settings.webhook_allow_private_targets)
    endpoint_id = endpoint_id or f"ep_{uuid.uuid4().hex[:16]}"
    secret = new_secret()
    record = {
        "endpoint_id": endpoint_id,
        "url": url,
        "event_types": event_types,
        "active": True,
        "window_updates": window_updates,
        "rate_limit": rate_limit,
        "disabled_reason": "",
        "secret_sealed": seal_secret(_master(settings), endpoint_id, secret),
        "previous_secret_sealed": "",
        "previous_secret_until": None,
    }
    publish_registration(settings, endpoint_id, record)
    return endpoint_id, secret


def rotate_secret(settings: Settings, endpoint_id: str, overlap_s: float) -> str:
    """A new secret for the endpoint; the current one stays valid (deliveries carry both
    signatures) for ``overlap_s``. Returns the new secret, shown this once."""
    record = _current(settings, endpoint_id)
    secret = new_secret()
    master = _master(settings)
    current = record.get("secret_sealed") or seal_secret(
        master, endpoint_id, endpoint_secret(master, endpoint_id)
    )
    record.update(
        secret_sealed=seal_secret(master, endpoint_id, secret),
        previous_secret_sealed=current,
        previous_secret_until=int(time.time() * 1000) + round(overlap_s * 1000),
    )
    publish_registration(settings, endpoint_id, record)
    return secret


def set_active(settings: Settings, endpoint_id: str, active: bool, reason: str = "") -> None:
    """Pause (False) or resume (True) deliveries to the endpoint, keeping everything else;
    ``reason`` says why the dispatcher disabled it (enabling clears it)."""
    record = _current(settings, endpoint_id)
    record["active"] = active
    record["disabled_reason"] = "" if active else reason
    publish_registration(settings, endpoint_id, record)


def update_endpoint(settings: Settings, endpoint_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change some of url, event_types, window_updates, rate_limit, active (checked by the
    caller; the URL is checked here again); return the record as it now is."""
    if "url" in changes:
        check_url(changes["url"], settings.webhook_allow_private_targets)
    record = _current(settings, endpoint_id)
    record.update(changes)
    if changes.get("active"):
        record["disabled_reason"] = ""
    publish_registration(settings, endpoint_id, record)
    return record


def remove_endpoint(settings: Settings, endpoint_id: str) -> None:
    """Delete the endpoint (a signed tombstone; compaction forgets it)."""
    _current(settings, endpoint_id)
    publish_registration(settings, endpoint_id, None)


def publish_registration(settings: Settings, endpoint_id: str, record: dict[str, Any] | None) -> None:
    """One signed record of the registry topic (``None``: the endpoint's deletion)."""
    topic = Topics(settings.topic_prefix).webhook_endpoints
    key = endpoint_id.encode()
    with EventProducer(settings) as producer:
        value = None
        if record is not None:
            event = Event(
                "WebhookEndpoint",
                {
                    **record,
                    "event_id": str(uuid.uuid4()),
                    "event_time": int(time.time() * 1000),
                    "source": "oddstream-cli",
                },
            )
            value = producer.codec.encode(event, topic=topic)
        signature = registry_signature(_master(settings), key, value)
        producer.produce_raw(topic, key, value, headers=[(REGISTRY_SIGNATURE, signature)])


def registrations(settings: Settings, timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """The endpoints as the registry topic holds them now: the last authentic record per
    endpoint id (tombstones remove; records not signed with the master secret are ignored)."""
    topic = Topics(settings.topic_prefix).webhook_endpoints
    codec = build_codec(settings)
    found: dict[str, dict[str, Any]] = {}
    for message in read_topic(settings.bootstrap, topic, timeout_s):
        key, value = message.key() or b"", message.value()
        if not registry_record_is_authentic(_master(settings), key, value, message.headers()):  # type: ignore[arg-type]
            continue
        if value is None:
            found.pop(key.decode(errors="replace"), None)
        else:
            found[key.decode(errors="replace")] = dict(codec.decode(value).record)
    for record in found.values():
        for name in ("event_id", "event_time", "source"):
            record.pop(name, None)
        until = record.get("previous_secret_until")
        if isinstance(until, datetime):
            record["previous_secret_until"] = int(until.timestamp() * 1000)
    return found


def _current(settings: Settings, endpoint_id: str) -> dict[str, Any]:
    record = registrations(settings).get(endpoint_id)
    if record is None:
        raise ConfigError(f"no endpoint {endpoint_id!r} in the registry")
    return record


def _master(settings: Settings) -> str:
    return settings.webhook_master_secret.get_secret_value()


def receiver_app(secret: str, log_path: Path) -> web.Application:
    """A local receiver that verifies each delivery's signature and appends it to ``log_path``."""
    verifier = Webhook(secret)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            return web.json_response({"error": f"bad signature: {exc}"}, status=401)
        entry = {
            "webhook_id": request.headers.get("webhook-id"),
            "verified": True,
            "body": json.loads(body),
        }
        with log_path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    return app
