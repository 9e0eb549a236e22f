"""The API's OpenAPI 3.1 document, with each event's JSON body derived from its Avro schema. Pure."""

from __future__ import annotations

from typing import Any

from schemas.catalog import SchemaCatalog
from schemas.topics import SOURCE_EVENT_TYPES, TOPIC_OF_EVENT

JSON_OF_PRIMITIVE = {
    "null": {"type": "null"},
    "boolean": {"type": "boolean"},
    "int": {"type": "integer", "format": "int32"},
    "long": {"type": "integer", "format": "int64"},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "string": {"type": "string"},
    "bytes": {"type": "string"},
}


def json_schema(avro: Any, names: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of what the API takes for an Avro type (gateway/api/convert.py)."""
    names = {} if names is None else names
    if isinstance(avro, list):
        return {"anyOf": [json_schema(branch, names) for branch in avro]}
    if isinstance(avro, str):
        return dict(JSON_OF_PRIMITIVE.get(avro) or json_schema(names[avro], names))
    logical, kind = avro.get("logicalType"), avro["type"]
    described = {"description": avro["doc"]} if "doc" in avro else {}
    if logical == "decimal":
        scale = avro.get("scale", 0)
        return {
            "type": ["string", "number"],
            "pattern": rf"^-?\d+(\.\d{{1,{scale}}})?$",
            "description": f"a decimal amount with at most {scale} decimal places, best as a string",
            "examples": ["12.50"],
        }
    if logical == "timestamp-millis":
        return {
            "type": "integer",
            "format": "int64",
            "description": "milliseconds since the Unix epoch (UTC)",
        }
    if logical == "uuid":
        return {"type": "string", "format": "uuid"}
    if kind == "record":
        names[avro["name"]] = avro
        fields = avro["fields"]
        return {
            "type": "object",
            "additionalProperties": False,
            "required": [f["name"] for f in fields if "default" not in f],
            "properties": {f["name"]: {**json_schema(f["type"], names), **_doc(f)} for f in fields},
            **described,
        }
    if kind == "enum":
        names[avro["name"]] = avro
        return {"type": "string", "enum": list(avro["symbols"]), **described}
    if kind == "array":
        return {"type": "array", "items": json_schema(avro["items"], names)}
    if kind == "map":
        return {"type": "object", "additionalProperties": json_schema(avro["values"], names)}
    return json_schema(kind, names)


def _doc(field: dict[str, Any]) -> dict[str, Any]:
    return {"description": field["doc"]} if "doc" in field else {}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi(catalog: SchemaCatalog) -> dict[str, Any]:
    events = {
        name: {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "record"],
            "properties": {
                "type": {"const": name},
                "record": json_schema(catalog.schema(name).source),
            },
            "description": f"goes to the `{TOPIC_OF_EVENT[name]}` topic",
        }
        for name in SOURCE_EVENT_TYPES
    }
    one_of = {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in SOURCE_EVENT_TYPES]}
    endpoint = {
        "type": "object",
        "properties": {
            "endpoint_id": {"type": "string"},
            "url": {"type": "string", "description": "credentials removed"},
            "event_types": {"type": "array", "items": {"type": "string"}},
            "active": {"type": "boolean"},
            "every_window_update": {"type": "boolean"},
            "secret_rotating_until": {"type": ["integer", "null"]},
            "rate_limit": {"type": "integer", "description": "deliveries per second at most (0: none)"},
            "disabled_reason": {"type": "string", "description": "why the dispatcher disabled it"},
        },
    }
    changeable = {
        "url": {"type": "string"},
        "event_types": {"type": "array", "items": {"type": "string"}},
        "every_window_update": {"type": "boolean"},
        "rate_limit": {"type": "integer", "minimum": 0, "maximum": 10_000},
    }
    scheduled = {
        "type": "object",
        "properties": {"endpoint_id": {"type": "string"}, "message_id": {"type": "string"}},
    }
    secret = {
        "type": "object",
        "properties": {
            "endpoint_id": {"type": "string"},
            "secret": {"type": "string", "description": "whsec_..., shown once"},
        },
    }
    bad = {
        "400": _error("not JSON"),
        "401": _error("missing or wrong bearer token"),
        "404": _error("no such endpoint"),
        "422": _error("refused: the field and the reason"),
    }
    history = [
        {"name": "outcome", "in": "query", "schema": {"enum": ["all", "delivered", "failed"]}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    ]
    path_id = [{"name": "endpoint_id", "in": "path", "required": True, "schema": {"type": "string"}}]

    def ok(schema: dict[str, Any], description: str = "done", status: str = "200") -> dict[str, Any]:
        return {status: {"description": description, "content": {"application/json": {"schema": schema}}}}

    def body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
        return {"required": required, "content": {"application/json": {"schema": schema}}}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "oddstream API",
            "version": "1",
            "description": "Ingest events onto Kafka and manage webhook endpoints. docs/api.md.",
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **events,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "event_type": {"type": "string"},
                        "field": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
                "Endpoint": endpoint,
                "Secret": secret,
            },
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Publish one event, or a batch (all or nothing)",
                    "requestBody": body(
                        {"anyOf": [one_of, {"type": "array", "items": one_of, "minItems": 1}]}
                    ),
                    "responses": {
                        **ok(
                            {
                                "type": "object",
                                "properties": {
                                    "accepted": {"type": "integer"},
                                    "records": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "topic": {"type": "string"},
                                                "partition": {"type": "integer"},
                                                "offset": {"type": "integer"},
                                            },
                                        },
                                    },
                                },
                            },
                            "acknowledged by Kafka",
                        ),
                        "413": _error("body or batch too large"),
                        "503": _error("Kafka or the Schema Registry unavailable: retry"),
                        **bad,
                    },
                }
            },
            "/v1/endpoints": {
                "get": {
                    "summary": "List webhook endpoints",
                    "responses": {
                        **ok(
                            {
                                "type": "object",
                                "properties": {
                                    "endpoints": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Endpoint"},
                                    }
                                },
                            }
                        ),
                        **bad,
                    },
                },
                "post": {
                    "summary": "Create a webhook endpoint",
                    "requestBody": body(
                        {
                            "type": "object",
                            "required": ["url"],
                            "additionalProperties": False,
                            "properties": changeable,
                        }
                    ),
                    "responses": {**ok({"$ref": "#/components/schemas/Secret"}, "created", "201"), **bad},
                },
            },
            "/v1/endpoints/{endpoint_id}": {
                "parameters": path_id,
                "get": {
                    "summary": "One endpoint",
                    "responses": {**ok({"$ref": "#/components/schemas/Endpoint"}), **bad},
                },
                "patch": {
                    "summary": "Change any of active, url, event types, every window update, rate limit",
                    "requestBody": body(
                        {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": False,
                            "properties": {"active": {"type": "boolean"}, **changeable},
                        }
                    ),
                    "responses": {**ok({"$ref": "#/components/schemas/Endpoint"}), **bad},
                },
                "delete": {"summary": "Delete", "responses": {**ok({"type": "object"}), **bad}},
            },
            "/v1/endpoints/{endpoint_id}/rotate": {
                "parameters": path_id,
                "post": {
                    "summary": "A new secret; the old one stays valid for overlap_hours (24)",
                    "requestBody": body(
                        {
                            "type": "object",
                            "properties": {"overlap_hours": {"type": "number", "minimum": 0, "maximum": 720}},
                        },
                        required=False,
                    ),
                    "responses": {**ok({"$ref": "#/components/schemas/Secret"}), **bad},
                },
            },
            "/v1/endpoints/{endpoint_id}/attempts": {
                "parameters": [*path_id, *history],
                "get": {
                    "summary": "Delivery attempts, newest first (webhook_attempts)",
                    "responses": {**ok({"type": "object"}), **bad},
                },
            },
            "/v1/endpoints/{endpoint_id}/messages": {
                "parameters": [*path_id, *history],
                "get": {
                    "summary": "Messages (one per webhook-id): attempts and where each stands",
                    "responses": {**ok({"type": "object"}), **bad},
                },
            },
            "/v1/endpoints/{endpoint_id}/test": {
                "parameters": path_id,
                "post": {
                    "summary": "Send a test message (type WebhookTest) through the delivery schedule",
                    "responses": {
                        **ok(scheduled, "scheduled", "202"),
                        "409": _error("endpoint disabled"),
                        **bad,
                    },
                },
            },
            "/v1/endpoints/{endpoint_id}/messages/{message_id}/resend": {
                "parameters": [
                    *path_id,
                    {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "post": {
                    "summary": "Send a given-up message again (fresh schedule, same webhook-id)",
                    "responses": {
                        **ok(scheduled, "scheduled", "202"),
                        "409": _error("endpoint disabled"),
                        **bad,
                    },
                },
            },
            "/v1/endpoints/{endpoint_id}/recover": {
                "parameters": path_id,
                "post": {
                    "summary": "Send again every message given up since a time and not delivered since",
                    "requestBody": body(
                        {
                            "type": "object",
                            "required": ["since"],
                            "properties": {
                                "since": {
                                    "type": ["string", "integer"],
                                    "description": "ISO 8601 with a zone, or epoch milliseconds",
                                }
                            },
                        }
                    ),
                    "responses": {
                        **ok(
                            {
                                "type": "object",
                                "properties": {
                                    "endpoint_id": {"type": "string"},
                                    "scheduled": {"type": "integer"},
                                    "more": {"type": "boolean", "description": "call again for the rest"},
                                },
                            },
                            "scheduled",
                            "202",
                        ),
                        "409": _error("endpoint disabled"),
                        **bad,
                    },
                },
            },
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": ok({"type": "object"})}},
            "/openapi.json": {
                "get": {"summary": "This document", "security": [], "responses": ok({"type": "object"})}
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
            },
        },
    }
