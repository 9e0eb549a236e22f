-- Which migrations ran. Every migration is idempotent (IF NOT EXISTS), so a crash
-- between running one and recording it only runs it again, harmlessly.
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
