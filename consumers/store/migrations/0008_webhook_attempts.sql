-- Every webhook delivery attempt (WebhookAttempted on webhooks.attempts). URLs never carry
-- credentials or query values. A redelivered attempt record collapses (same event_id).
CREATE TABLE IF NOT EXISTS webhook_attempts
(
    event_id        UUID,
    event_time      DateTime64(3, 'UTC'),
    source          String,
    endpoint_id     String,
    message_id      String,
    event_type      String,
    attempt         Int32,
    outcome         LowCardinality(String),
    status          Nullable(Int32),
    duration_ms     Float64,
    error           String,
    url             String,
    next_retry      Nullable(DateTime64(3, 'UTC')),
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (endpoint_id, message_id, attempt, event_id)
