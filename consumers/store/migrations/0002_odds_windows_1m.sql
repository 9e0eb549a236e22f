-- One row per selection per update of a market's one-minute odds window: the window's
-- history. (market_id, window_start, selection_id) is the window; version counts the price
-- changes folded in, so the row with the highest version is the window's latest state.
-- A replay or redelivery writes the same (market_id, window_start, selection_id, version)
-- again and ReplacingMergeTree keeps one: use FINAL for exact counts.
CREATE TABLE IF NOT EXISTS odds_windows_1m
(
    market_id           String,
    selection_id        String,
    window_start        DateTime64(3, 'UTC'),
    window_end          DateTime64(3, 'UTC'),
    version             UInt64,
    open                Float64,
    high                Float64,
    low                 Float64,
    last                Float64,
    changes             UInt64,
    implied_probability Float64,
    overround           Nullable(Float64),
    event_id            UUID,
    event_time          DateTime64(3, 'UTC'),
    kafka_partition     UInt32,
    kafka_offset        UInt64,
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (market_id, window_start, selection_id, version)
