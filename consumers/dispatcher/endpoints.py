"""Register endpoints (events on the compacted registry topic) and a demo receiver."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from consumers.dispatcher.signing import REGISTRY_SIGNATURE, endpoint_secret, registry_signature
from consumers.dispatcher.ssrf import check_url
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
) -> tuple[str, str]:
    """Publish a WebhookEndpoint; return (endpoint_id, its signing secret). Window events
    go out as finals only unless ``window_updates`` asks for every current update."""
    check_url(url, settings.webhook_allow_private_targets)
    endpoint_id = endpoint_id or f"ep_{uuid.uuid4().hex[:16]}"
    master = settings.webhook_master_secret.get_secret_value()
    event = Event(
        "WebhookEndpoint",
        {
            "event_id": str(uuid.uuid4()),
            "event_time": int(time.time() * 1000),
            "source": "oddstream-cli",
            "endpoint_id": endpoint_id,
            "url": url,
            "event_types": event_types,
            "active": True,
            "window_updates": window_updates,
        },
    )
    with EventProducer(settings) as producer:
        topic = Topics(settings.topic_prefix).webhook_endpoints
        value = producer.codec.encode(event, topic=topic)
        signature = registry_signature(master, event.key, value)
        producer.produce_raw(topic, event.key, value, headers=[(REGISTRY_SIGNATURE, signature)])
    return endpoint_id, endpoint_secret(master, endpoint_id)


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
