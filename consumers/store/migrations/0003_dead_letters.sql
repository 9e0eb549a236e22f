-- Records that were rejected, with the reason and the original bytes (base64 free: String holds bytes).
-- (origin_topic, origin_partition, origin_offset) identifies a rejection; replays collapse.
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
ORDER BY (origin_topic, origin_partition, origin_offset)
