-- Records that were rejected, with the reason and the original bytes (String holds any bytes).
-- (origin_topic, origin_partition, origin_offset, stage) identifies a rejection: each role
-- that rejected a record keeps its own row and reason; replays collapse.
CREATE TABLE IF NOT EXISTS dead_letters
(
    origin_topic     String,
    origin_partition UInt32,
    origin_offset    UInt64,
    stage            String,
    reason           String,
    original         String,
    rejected_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (origin_topic, origin_partition, origin_offset, stage)
