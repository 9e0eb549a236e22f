-- The per-user stream (bets.by-user). The worker's bets stage writes every bet placed and
-- every settlement (other than VOID) to bets.by-user, keyed by the user; its user stage
-- reads it back and computes the user windows and per-user rules there, so one user has
-- one window per minute and one alert lifecycle.
--
-- user_bets is that topic as written, every record with its Kafka position. After a worker
-- crash a bets partition writes again what it wrote since its last snapshot, so one
-- (source_partition, source_offset) can appear at two positions: the user stage folds the
-- first, and so does a recomputation (per bets.by-user partition, in offset order, a record
-- whose source_offset is not above every earlier one of its source_partition is a re-send).
-- Rows with action CLOCK are the bets partitions' clock marks (source_clock; idle when one
-- went quiet): the user windows close by the slowest bets partition's clock.
CREATE TABLE IF NOT EXISTS user_bets
(
    event_id         UUID,
    event_time       DateTime64(3, 'UTC'),
    source           String,
    user_id          String,
    bet_id           String,
    market_id        String,
    action           LowCardinality(String),
    stake            Nullable(Decimal(18, 2)),
    won              Nullable(Bool),
    source_partition Int32,
    source_offset    Int64,
    source_clock     Int64,
    idle             Bool,
    kafka_partition  UInt32,
    kafka_offset     UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (user_id, kafka_partition, kafka_offset);

-- user_window_parts_1m now holds one row per (user, window): source_partition is the user's
-- bets.by-user partition. The rows of the per-bets-partition partials written before are
-- removed: the worker rebuilds every partition from the source log when it meets snapshots
-- of the previous state version, and writes the user windows again (CHANGELOG, upgrading).
TRUNCATE TABLE IF EXISTS user_window_parts_1m;
