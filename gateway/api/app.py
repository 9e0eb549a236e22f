"""The HTTP API role (``oddstream api``): ingest events, manage webhook endpoints.

Routes (the OpenAPI document at ``/openapi.json`` is the reference, docs/api.md the guide):

* ``POST /v1/events``: one event ``{"type": "BetPlaced", "record": {...}}`` or a list of up
  to ``api_max_batch``; validated as the producer SDK validates (4xx names the event, the
  field and the reason; nothing of a batch is sent if one event is bad); 200 only after
  Kafka acknowledged every record, with where each landed.
* ``/v1/endpoints``: create (the secret is shown once), list, get, enable/disable, delete,
  rotate the secret; secrets are never returned otherwise.
* ``/healthz`` and ``/openapi.json`` (open), ``/metrics`` (Prometheus).

Every ``/v1`` route and ``/metrics`` ask for ``Authorization: Bearer <token>`` when tokens
are configured (``ODDSTREAM_API_TOKENS``; required beyond loopback).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
from aiohttp import web

from consumers.dispatcher.endpoints import (
    register_endpoint,
    registrations,
    remove_endpoint,
    rotate_secret,
    update_endpoint,
)
from consumers.dispatcher.replay import Replay, schedule_now, test_message
from consumers.dispatcher.ssrf import redact_url
from gateway.api.ingest import Ingest
from gateway.api.openapi import openapi
from oddstream.errors import ConfigError, DeliveryFailed, InvalidEvent, OddstreamError, WebhookError
from oddstream.kafka.registry import register_subjects
from oddstream.metrics import API_REQUESTS, exposition
from oddstream.settings import Settings
from schemas.topics import SOURCE_EVENT_TYPES, TOPIC_OF_EVENT

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = ("/healthz", "/openapi.json")
ENDPOINT_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # what register_endpoint makes; nothing else is queried
ATTEMPTS_SQL = (
    "SELECT toUnixTimestamp64Milli(event_time), message_id, event_type, attempt, outcome, status, "
    "duration_ms, error, toUnixTimestamp64Milli(next_retry) FROM webhook_attempts FINAL "
    "WHERE {where} ORDER BY event_time DESC, attempt DESC LIMIT {limit}"
)
ATTEMPT_FIELDS = ("at", "message_id", "event_type", "attempt", "outcome", "status", "duration_ms", "error",
                  "next_retry")  # fmt: skip
MESSAGES_SQL = (
    "SELECT message_id, any(event_type), count(), argMax(outcome, (attempt, event_time)), "
    "toUnixTimestamp64Milli(max(event_time)), toBool(countIf(outcome = 'delivered') > 0), "
    "toUnixTimestamp64Milli(argMax(next_retry, (attempt, event_time))) FROM webhook_attempts FINAL "
    "WHERE {where} GROUP BY message_id ORDER BY max(event_time) DESC LIMIT {limit}"
)
MESSAGE_FIELDS = ("message_id", "event_type", "attempts", "last_outcome", "last_attempt_at", "delivered",
                  "next_retry")  # fmt: skip
MESSAGE_ID = re.compile(r"msg_[A-Za-z0-9_-]{1,100}")
DEAD_LETTER_SQL = (
    "SELECT message_id, argMax(event_type, event_time), argMax(payload, event_time) "
    "FROM webhook_dead_letters FINAL WHERE endpoint_id = '{endpoint}' AND {where} "
    "AND message_id NOT IN (SELECT message_id FROM webhook_attempts WHERE endpoint_id = '{endpoint}' "
    "AND outcome = 'delivered' AND {where}) GROUP BY message_id ORDER BY min(event_time) LIMIT {limit}"
)
MAX_RECOVER = 10_000
MAX_RATE_LIMIT = 10_000
CHANGEABLE = {"active", "url", "event_types", "every_window_update", "rate_limit"}
OUTCOME_FILTERS = {
    "all": "",
    "delivered": " AND outcome = 'delivered'",
    "failed": " AND outcome != 'delivered'",
}


def error(status: int, message: str, **detail: Any) -> web.Response:
    return web.json_response({"error": message, **detail}, status=status)


class Api:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ingest = Ingest(settings)
        self._tokens = [t.get_secret_value().encode() for t in settings.api_tokens]

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.api_max_body_bytes, middlewares=[self._guard, self._count]
        )
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/openapi.json", self.document)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/v1/events", self.events)
        app.router.add_post("/v1/endpoints", self.create_endpoint)
        app.router.add_get("/v1/endpoints", self.list_endpoints)
        app.router.add_get("/v1/endpoints/{endpoint_id}", self.get_endpoint)
        app.router.add_patch("/v1/endpoints/{endpoint_id}", self.change_endpoint)
        app.router.add_delete("/v1/endpoints/{endpoint_id}", self.delete_endpoint)
        app.router.add_post("/v1/endpoints/{endpoint_id}/rotate", self.rotate_endpoint)
        app.router.add_get("/v1/endpoints/{endpoint_id}/attempts", self.endpoint_attempts)
        app.router.add_get("/v1/endpoints/{endpoint_id}/messages", self.endpoint_messages)
        app.router.add_post("/v1/endpoints/{endpoint_id}/test", self.send_test)
        app.router.add_post("/v1/endpoints/{endpoint_id}/messages/{message_id}/resend", self.resend)
        app.router.add_post("/v1/endpoints/{endpoint_id}/recover", self.recover)
        app.on_startup.append(self._register_subjects)
        app.on_cleanup.append(self._close)
        return app

    # -- middleware ----------------------------------------------------------------

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = (
            request.match_info.route.resource.canonical if request.match_info.route.resource else "unknown"
        )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            API_REQUESTS.labels(route, str(exc.status)).inc()
            raise
        API_REQUESTS.labels(route, str(response.status)).inc()
        return response

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bearer tokens, and every unexpected error as a JSON 500 (the role keeps serving)."""
        if request.path not in OPEN_PATHS and not self._authorised(request):
            return web.json_response(
                {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                return error(413, f"body over {self.settings.api_max_body_bytes:,} bytes")
            if exc.status in (404, 405):
                return error(exc.status, f"{exc.reason}: {request.method} {request.path[:200]}")
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path[:200])
            return error(500, "internal error (logged); nothing was changed if no result was returned")

    def _authorised(self, request: web.Request) -> bool:
        if not self._tokens:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:].encode() if header.startswith("Bearer ") else b""
        return any(hmac.compare_digest(given, token) for token in self._tokens)

    # -- open routes -----------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "accepts": list(SOURCE_EVENT_TYPES)})

    async def document(self, request: web.Request) -> web.Response:
        return web.json_response(openapi(self.ingest.codec.catalog))

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    # -- ingest ------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if isinstance(body, list) and not body:
            return error(400, "an empty batch")
        if isinstance(body, list) and len(body) > self.settings.api_max_batch:
            return error(413, f"a batch of {len(body):,} events; at most {self.settings.api_max_batch:,}")
        try:
            events = self.ingest.events(body, int(time.time() * 1000))
            landed = await self.ingest.publish(events)
        except InvalidEvent as exc:
            return error(422, str(exc), event_type=exc.event_type, field=exc.field, reason=exc.problem)
        except DeliveryFailed as exc:
            return error(503, f"Kafka did not acknowledge: {exc}; retrying the same events is safe to "
                              "deduplicate by event_id")  # fmt: skip
        except OddstreamError as exc:  # e.g. the Schema Registry is unavailable
            return error(503, str(exc))
        return web.json_response({"accepted": len(landed), "records": landed})

    # -- endpoints ---------------------------------------------------------------------

    async def create_endpoint(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            expected = '{"url": "https://...", "event_types": [...], "every_window_update": false}'
            return error(422, f"expected {expected}", field="url")
        checked = _endpoint_fields(body, CHANGEABLE - {"active"})
        if isinstance(checked, web.Response):
            return checked
        try:
            endpoint_id, secret = await asyncio.to_thread(
                register_endpoint, self.settings, body["url"], checked.get("event_types", []),
                window_updates=checked.get("window_updates", False), rate_limit=checked.get("rate_limit", 0),
            )  # fmt: skip
        except WebhookError as exc:
            return error(422, str(exc), field="url")
        return web.json_response({"endpoint_id": endpoint_id, "secret": secret}, status=201)

    async def list_endpoints(self, request: web.Request) -> web.Response:
        found = await asyncio.to_thread(registrations, self.settings)
        return web.json_response({"endpoints": [_shown(i, r) for i, r in sorted(found.items())]})

    async def get_endpoint(self, request: web.Request) -> web.Response:
        endpoint_id = request.match_info["endpoint_id"]
        found = (await asyncio.to_thread(registrations, self.settings)).get(endpoint_id)
        if found is None:
            return error(404, f"no endpoint {endpoint_id[:100]!r}")
        return web.json_response(_shown(endpoint_id, found))

    async def change_endpoint(self, request: web.Request) -> web.Response:
        """Change any of active, url, event_types, every_window_update, rate_limit."""
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, dict) or not body:
            return error(422, f"expected an object with some of {sorted(CHANGEABLE)}")
        checked = _endpoint_fields(body, CHANGEABLE)
        if isinstance(checked, web.Response):
            return checked
        endpoint_id = request.match_info["endpoint_id"]
        try:
            record = await asyncio.to_thread(update_endpoint, self.settings, endpoint_id, checked)
        except ConfigError as exc:
            return error(404, str(exc))
        except WebhookError as exc:
            return error(422, str(exc), field="url")
        return web.json_response(_shown(endpoint_id, record))

    async def delete_endpoint(self, request: web.Request) -> web.Response:
        endpoint_id = request.match_info["endpoint_id"]
        try:
            await asyncio.to_thread(remove_endpoint, self.settings, endpoint_id)
        except ConfigError as exc:
            return error(404, str(exc))
        return web.json_response({"endpoint_id": endpoint_id, "deleted": True})

    async def rotate_endpoint(self, request: web.Request) -> web.Response:
        body = await self._json(request, empty_ok=True)
        if isinstance(body, web.Response):
            return body
        hours = (body or {}).get("overlap_hours", 24.0) if isinstance(body, dict) else None
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 <= hours <= 24 * 30:
            return error(422, "overlap_hours must be a number of hours from 0 to 720", field="overlap_hours")
        endpoint_id = request.match_info["endpoint_id"]
        try:
            secret = await asyncio.to_thread(rotate_secret, self.settings, endpoint_id, hours * 3600)
        except ConfigError as exc:
            return error(404, str(exc))
        return web.json_response(
            {"endpoint_id": endpoint_id, "secret": secret, "previous_valid_hours": hours}
        )

    async def endpoint_attempts(self, request: web.Request) -> web.Response:
        """The endpoint's delivery attempts, newest first, from ClickHouse (``webhook_attempts``)."""
        return await self._history(request, "attempts", ATTEMPTS_SQL, ATTEMPT_FIELDS)

    async def endpoint_messages(self, request: web.Request) -> web.Response:
        """The endpoint's messages (one per ``webhook-id``): attempts so far and where each stands."""
        return await self._history(request, "messages", MESSAGES_SQL, MESSAGE_FIELDS)

    # -- replay ------------------------------------------------------------------------

    async def send_test(self, request: web.Request) -> web.Response:
        """A test message to the endpoint, through the same schedule as every delivery."""
        endpoint_id = await self._active_endpoint(request)
        if isinstance(endpoint_id, web.Response):
            return endpoint_id
        message = test_message(endpoint_id)
        await asyncio.to_thread(schedule_now, self.settings, [message])
        return web.json_response({"endpoint_id": endpoint_id, "message_id": message.message_id}, status=202)

    async def resend(self, request: web.Request) -> web.Response:
        """Send one given-up message again (a fresh schedule, the same webhook-id)."""
        endpoint_id = await self._active_endpoint(request)
        if isinstance(endpoint_id, web.Response):
            return endpoint_id
        message_id = request.match_info["message_id"]
        if not MESSAGE_ID.fullmatch(message_id):
            return error(404, f"no message {message_id[:100]!r} (ids look like msg_...)")
        where = f"message_id = '{message_id}'"
        rows = await self._query(DEAD_LETTER_SQL.format(endpoint=endpoint_id, where=where, limit=1))
        if isinstance(rows, web.Response):
            return rows
        if not rows:
            return error(
                404, f"no message {message_id!r} given up for {endpoint_id!r} and not delivered since: only "
                "messages given up on keep their payload (webhook_dead_letters)",
            )  # fmt: skip
        await asyncio.to_thread(schedule_now, self.settings, [Replay(endpoint_id, *rows[0])])
        return web.json_response({"endpoint_id": endpoint_id, "message_id": message_id}, status=202)

    async def recover(self, request: web.Request) -> web.Response:
        """Send again every message given up for the endpoint since a time and not delivered
        since (Svix's "recover"): ``{"since": "2026-11-26T08:00:00Z"}`` or epoch milliseconds."""
        endpoint_id = await self._active_endpoint(request)
        if isinstance(endpoint_id, web.Response):
            return endpoint_id
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        since = _since_ms(body.get("since") if isinstance(body, dict) else None)
        if since is None:
            return error(422, 'expected {"since": "<ISO 8601 time>"} or epoch milliseconds', field="since")
        where = f"event_time >= fromUnixTimestamp64Milli(toInt64({since}))"
        sql = DEAD_LETTER_SQL.format(endpoint=endpoint_id, where=where, limit=MAX_RECOVER)
        rows = await self._query(sql)
        if isinstance(rows, web.Response):
            return rows
        await asyncio.to_thread(schedule_now, self.settings, [Replay(endpoint_id, *row) for row in rows])
        return web.json_response(
            {"endpoint_id": endpoint_id, "scheduled": len(rows), "more": len(rows) == MAX_RECOVER}, status=202
        )

    async def _active_endpoint(self, request: web.Request) -> str | web.Response:
        endpoint_id = request.match_info["endpoint_id"]
        found = (await asyncio.to_thread(registrations, self.settings)).get(endpoint_id)
        if found is None or not ENDPOINT_ID.fullmatch(endpoint_id):
            return error(404, f"no endpoint {endpoint_id[:100]!r}")
        if not found["active"]:
            return error(409, f"endpoint {endpoint_id!r} is disabled; enable it first (PATCH active: true)")
        return endpoint_id

    async def _history(
        self, request: web.Request, name: str, sql: str, fields: tuple[str, ...]
    ) -> web.Response:
        query = await self._history_query(request)
        if isinstance(query, web.Response):
            return query
        where, limit = query
        return await self._rows(sql.format(where=where, limit=limit), name, fields)

    async def _history_query(self, request: web.Request) -> tuple[str, int] | web.Response:
        """The WHERE clause and limit for an endpoint's history, from checked parameters only."""
        endpoint_id = request.match_info["endpoint_id"]
        if not ENDPOINT_ID.fullmatch(endpoint_id):
            return error(404, f"no endpoint {endpoint_id[:100]!r}")
        outcome = request.query.get("outcome", "all")
        if outcome not in OUTCOME_FILTERS:
            return error(422, f"outcome must be one of {', '.join(OUTCOME_FILTERS)}", field="outcome")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return error(422, "limit must be a whole number from 1 to 1000", field="limit")
        return f"endpoint_id = '{endpoint_id}'{OUTCOME_FILTERS[outcome]}", limit

    async def _rows(self, sql: str, name: str, columns: tuple[str, ...]) -> web.Response:
        rows = await self._query(sql)
        if isinstance(rows, web.Response):
            return rows
        return web.json_response({name: [dict(zip(columns, row, strict=True)) for row in rows]})

    async def _query(self, sql: str) -> list[Any] | web.Response:
        """Rows from the store's read-only SQL endpoint, or the 503 that says why not."""
        headers = {}
        if self.settings.sql_token is not None:
            headers["Authorization"] = f"Bearer {self.settings.sql_token.get_secret_value()}"
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(f"{self.settings.sql_endpoint}/sql", content=sql, headers=headers)
        except httpx.HTTPError as exc:
            return error(503, f"the store (ClickHouse) is not reachable: {type(exc).__name__}")
        if answer.status_code != 200:
            return error(503, f"the store answered {answer.status_code}: {answer.text[:300]}")
        return list(answer.json()["rows"])

    # -- internals -----------------------------------------------------------------------

    async def _json(self, request: web.Request, empty_ok: bool = False) -> Any:
        """The body as JSON, or the 4xx answer that says why not."""
        raw = await request.read()
        if not raw.strip():
            return None if empty_ok else error(400, "an empty body; expected JSON")
        try:
            return json.loads(raw)
        except UnicodeDecodeError:
            return error(400, "the body is not UTF-8")
        except ValueError as exc:
            return error(400, f"the body is not JSON: {exc}"[:300])
        except RecursionError:
            return error(400, "the body is nested too deeply")

    async def _register_subjects(self, app: web.Application) -> None:
        from schemas.topics import Topics

        await register_subjects(
            self.ingest.codec, Topics(self.settings.topic_prefix), SOURCE_EVENT_TYPES, "api"
        )

    async def _close(self, app: web.Application) -> None:
        await asyncio.to_thread(self.ingest.close)


def _shown(endpoint_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """An endpoint as the API shows it: no secrets, the URL without credentials."""
    return {
        "endpoint_id": endpoint_id,
        "url": redact_url(record["url"]),
        "event_types": list(record["event_types"]),
        "active": bool(record["active"]),
        "every_window_update": bool(record.get("window_updates")),
        "secret_rotating_until": record.get("previous_secret_until"),
        "rate_limit": int(record.get("rate_limit") or 0),
        "disabled_reason": record.get("disabled_reason") or "",
    }


def _endpoint_fields(body: dict[str, Any], allowed: set[str]) -> dict[str, Any] | web.Response:
    """The registry fields an endpoint body asks for, each checked, or the 422 naming the first
    bad one (``every_window_update`` is the record's ``window_updates``)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        return error(422, f"unknown field {unknown[0]!r}", field=unknown[0])
    out: dict[str, Any] = {}
    if "url" in body:
        if not isinstance(body["url"], str):
            return error(422, "url must be a string", field="url")
        out["url"] = body["url"]
    if "event_types" in body:
        types = body["event_types"]
        if not isinstance(types, list) or not all(isinstance(t, str) and t in TOPIC_OF_EVENT for t in types):
            return error(
                422, "event_types must be a list of event type names (empty: all)", field="event_types"
            )
        out["event_types"] = types
    for name, field in (("every_window_update", "window_updates"), ("active", "active")):
        if name in body:
            if not isinstance(body[name], bool):
                return error(422, f"{name} must be true or false", field=name)
            out[field] = body[name]
    if "rate_limit" in body:
        rate = body["rate_limit"]
        if isinstance(rate, bool) or not isinstance(rate, int) or not 0 <= rate <= MAX_RATE_LIMIT:
            return error(
                422, f"rate_limit must be deliveries per second from 0 (none) to {MAX_RATE_LIMIT}",
                field="rate_limit",
            )  # fmt: skip
        out["rate_limit"] = rate
    return out


def _since_ms(value: Any) -> int | None:
    """Epoch milliseconds from an ISO 8601 time (with a zone) or a whole number; None if neither."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**14:
        return value
    if isinstance(value, str) and len(value) <= 64:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is not None:
            return int(when.timestamp() * 1000)
    return None


def run_api(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM."""
    web.run_app(Api(settings).app(), host=settings.api_host, port=settings.api_port, print=None,
                access_log=None)  # fmt: skip
