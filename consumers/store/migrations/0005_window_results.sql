-- Final results of the one-minute event-time windows (docs/tables.md). One row per window
-- (per selection / bookmaker where the window has them), written when the window closes.
-- A re-emitted final (after a crash, or a replay) has the same key and the same values; a
-- window a quiet partition finalised early and an event then revised has a higher
-- version. ReplacingMergeTree(version) keeps the latest: query with FINAL for exact figures.
-- Current (provisional) updates are not stored here; odds_windows_1m keeps the market's.
ALTER TABLE odds_windows_1m ADD COLUMN IF NOT EXISTS final UInt8 DEFAULT 0;

CREATE TABLE IF NOT EXISTS price_windows_1m
(
    market_id            String,
    selection_id         String,
    bookmaker            String,
    window_start         DateTime64(3, 'UTC'),
    window_end           DateTime64(3, 'UTC'),
    changes              UInt64,
    open                 Float64,
    high                 Float64,
    low                  Float64,
    last                 Float64,
    implied_probability  Float64,
    velocity_pct_per_min Float64,
    open_time            DateTime64(3, 'UTC'),
    last_time            DateTime64(3, 'UTC'),
    version          UInt64,
    window_id            UUID,
    inserted_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (market_id, selection_id, bookmaker, window_start);

CREATE TABLE IF NOT EXISTS market_windows_1m
(
    market_id             String,
    selection_id          String,
    window_start          DateTime64(3, 'UTC'),
    window_end            DateTime64(3, 'UTC'),
    quotes                UInt64,
    changes               UInt64,
    open                  Float64,
    high                  Float64,
    low                   Float64,
    last                  Float64,
    implied_probability   Float64,
    market_overround      Nullable(Float64),
    consensus_probability Nullable(Float64),
    consensus_fair_price  Nullable(Float64),
    books                 UInt32,
    steam                 Int8,
    window_id             UUID,
    inserted_at           DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(quotes)
PARTITION BY toYYYYMM(window_start)
ORDER BY (market_id, window_start, selection_id);

CREATE TABLE IF NOT EXISTS market_books_1m
(
    market_id           String,
    bookmaker           String,
    selection_id        String,
    window_start        DateTime64(3, 'UTC'),
    window_end          DateTime64(3, 'UTC'),
    last                Float64,
    implied_probability Float64,
    overround           Float64,
    fair_probability    Float64,
    shin_probability    Float64,
    version          UInt64,
    window_id           UUID,
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (market_id, window_start, bookmaker, selection_id);

CREATE TABLE IF NOT EXISTS bet_windows_1m
(
    market_id            String,
    selection_id         String,
    window_start         DateTime64(3, 'UTC'),
    window_end           DateTime64(3, 'UTC'),
    bets                 UInt64,
    stakes               Float64,
    vwap                 Float64,
    liability            Float64,
    money_share          Float64,
    market_bets          UInt64,
    market_turnover      Float64,
    market_average_stake Float64,
    worst_case_liability Float64,
    version          UInt64,
    window_id            UUID,
    inserted_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (market_id, window_start, selection_id);

CREATE TABLE IF NOT EXISTS service_windows_1m
(
    service              String,
    window_start         DateTime64(3, 'UTC'),
    window_end           DateTime64(3, 'UTC'),
    calls                UInt64,
    errors               UInt64,
    error_rate           Float64,
    heartbeats           UInt64,
    events_per_second    Float64,
    max_heartbeat_gap_ms UInt64,
    version          UInt64,
    window_id            UUID,
    inserted_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (service, window_start);

CREATE TABLE IF NOT EXISTS route_windows_1m
(
    service        String,
    route          String,
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    calls          UInt64,
    errors         UInt64,
    error_rate     Float64,
    latency_p50_ms Float64,
    latency_p95_ms Float64,
    latency_p99_ms Float64,
    latency_max_ms Float64,
    version          UInt64,
    window_id      UUID,
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (service, route, window_start);

-- Events that arrived after a window they belong to had closed: never merged, kept here with
-- the window they missed. (origin, kind) identifies one: an odds event late for both its
-- price and its market window has two rows.
CREATE TABLE IF NOT EXISTS late_events
(
    origin_topic     String,
    origin_partition UInt32,
    origin_offset    UInt64,
    kind             String,
    event_time       DateTime64(3, 'UTC'),
    watermark        DateTime64(3, 'UTC'),
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    original         String,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (origin_topic, origin_partition, origin_offset, kind)
