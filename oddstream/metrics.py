"""Prometheus metrics of the roles. Each role process registers only what it imports."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

STORE_ROWS = Counter("oddstream_store_rows_total", "Rows inserted into ClickHouse", ["table"])
STORE_BATCHES = Counter("oddstream_store_batches_total", "Batches committed by the store")
SQL_QUERIES = Counter("oddstream_sql_queries_total", "Read-only SQL queries", ["outcome"])
GATEWAY_CLIENTS = Gauge("oddstream_gateway_clients", "Connected WebSocket clients")
GATEWAY_SUBSCRIPTIONS = Gauge("oddstream_gateway_subscriptions", "Channel subscriptions of all clients")
GATEWAY_CHANNELS = Gauge("oddstream_gateway_channels", "Channels with at least one subscriber")
GATEWAY_BYTES = Counter(
    "oddstream_gateway_bytes_total", "Bytes of live event frames written to clients' sockets"
)
GATEWAY_LAG = Gauge(
    "oddstream_gateway_consumer_lag", "Records on the derived topics the gateway has not fanned out"
)
GATEWAY_FRAMES = Counter("oddstream_gateway_frames_total", "Live event frames written to clients' sockets")
GATEWAY_DROPPED = Counter("oddstream_gateway_dropped_clients_total", "Clients dropped for being slow")
GATEWAY_RESUMES = Counter(
    "oddstream_gateway_resumes_total",
    "Subscribes with a position: recovered, or the code of why not",
    ["outcome"],
)
GATEWAY_REPLAYED = Counter(
    "oddstream_gateway_replayed_frames_total", "Event frames replayed to resuming clients"
)
REJECTED_RECORDS = Counter(
    "oddstream_rejected_records_total", "Input records refused (dead-lettered or skipped)", ["topic", "kind"]
)
PROCESSING_ERRORS = Counter(
    "oddstream_processing_errors_total", "Unexpected exceptions caught at one record", ["stage"]
)
HALTED_PARTITIONS = Gauge(
    "oddstream_worker_halted_partitions", "Source partitions halted by an unacknowledged output"
)
SNAPSHOTS_REFUSED = Counter(
    "oddstream_worker_snapshots_refused_total",
    "Partition snapshots not read (forged, outdated or unreadable); each partition was rebuilt from the log",
    ["kind"],
)
SNAPSHOTS_WRITTEN = Counter(
    "oddstream_worker_snapshots_written_total", "Partition snapshots written to the changelog"
)
SNAPSHOT_PAUSE = Histogram(
    "oddstream_worker_snapshot_pause_seconds",
    "Time the event loop spends taking one partition snapshot (the rest is sealed in a thread)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
REGISTRY_WAITS = Counter(
    "oddstream_schema_registry_waits_total",
    "Times a consumer waited for an unavailable Schema Registry before decoding",
)
API_REQUESTS = Counter("oddstream_api_requests_total", "HTTP API requests", ["route", "status"])
WEBHOOK_ATTEMPTS = Counter("oddstream_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "oddstream_webhook_endpoints_disabled_total", "Webhook endpoints disabled after failing too long"
)


def exposition() -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
