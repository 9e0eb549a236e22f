-- Raw events, one table per event type, columns from schemas/avro (see docs/tables.md).
-- ReplacingMergeTree ordered by (partition key, event_time, event_id): replays collapse.
CREATE TABLE IF NOT EXISTS bet_placed
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    bet_id String,
    user_id String,
    market_id String,
    selection_id String,
    stake Decimal(18, 2),
    currency String,
    odds Float64,
    channel LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (market_id, event_time, event_id);

CREATE TABLE IF NOT EXISTS bet_settled
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    bet_id String,
    user_id String,
    market_id String,
    selection_id String,
    result LowCardinality(String),
    payout Decimal(18, 2),
    currency String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (market_id, event_time, event_id);

CREATE TABLE IF NOT EXISTS bet_cancelled
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    bet_id String,
    user_id String,
    market_id String,
    selection_id String,
    reason String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (market_id, event_time, event_id);

CREATE TABLE IF NOT EXISTS cash_out
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    bet_id String,
    user_id String,
    market_id String,
    selection_id String,
    amount Decimal(18, 2),
    currency String,
    odds Float64,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (market_id, event_time, event_id);

CREATE TABLE IF NOT EXISTS odds_changed
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    bookmaker String,
    market_id String,
    selection_id String,
    odds Float64,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (market_id, event_time, event_id);

CREATE TABLE IF NOT EXISTS market_status_changed
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    market_id String,
    status LowCardinality(String),
    reason Nullable(String),
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (market_id, event_time, event_id);

CREATE TABLE IF NOT EXISTS market_resulted
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    market_id String,
    winning_selection_ids Array(String),
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (market_id, event_time, event_id);

CREATE TABLE IF NOT EXISTS service_heartbeat
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    service String,
    instance String,
    sequence Int64,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (service, event_time, event_id);

CREATE TABLE IF NOT EXISTS api_call_recorded
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    service String,
    route String,
    method String,
    status Int32,
    latency_ms Float64,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (service, event_time, event_id);

CREATE TABLE IF NOT EXISTS user_activity
(
    event_id UUID,
    event_time DateTime64(3, 'UTC'),
    source String,
    user_id String,
    activity LowCardinality(String),
    amount Nullable(Decimal(18, 2)),
    currency Nullable(String),
    page Nullable(String),
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (user_id, event_time, event_id);
