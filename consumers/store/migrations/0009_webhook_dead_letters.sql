-- Webhook messages given up on (WebhookMessageFailed on webhooks.dead-letters): every
-- attempt failed, the target was refused, or the endpoint was disabled or removed. With the
-- payload, so `oddstream webhook recover` (POST /v1/endpoints/{id}/recover) can send them
-- again. A redelivered record collapses (same event_id).
CREATE TABLE IF NOT EXISTS webhook_dead_letters
(
    event_id        UUID,
    event_time      DateTime64(3, 'UTC'),
    source          String,
    endpoint_id     String,
    message_id      String,
    event_type      String,
    payload         String,
    attempts        Int32,
    first_attempt   Nullable(DateTime64(3, 'UTC')),
    outcomes        Array(String),
    reason          String,
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (endpoint_id, event_time, message_id, event_id)
