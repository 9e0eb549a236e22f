-- Online learning and alerts (docs/tables.md). Every row is one event with a deterministic
-- event_id: a redelivery, a re-emission after a crash or a replay has the same id, and
-- ReplacingMergeTree keeps one row per id (query with FINAL for exact counts).

CREATE TABLE IF NOT EXISTS predictions
(
    event_id           UUID,
    prediction_time    DateTime64(3, 'UTC'),
    market_id          String,
    selection_id       String,
    model              LowCardinality(String),
    probability        Float64,
    market_probability Float64,
    edge               Float64,
    fair_price         Float64,
    best_odds          Float64,
    best_bookmaker     LowCardinality(String),
    expected_move_pct  Float64,
    horizon_ms         Int64,
    labels_learned     Int64,
    features           Map(String, Float64),
    inserted_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(prediction_time)
ORDER BY (market_id, selection_id, prediction_time, event_id);

CREATE TABLE IF NOT EXISTS value_signals
(
    event_id           UUID,
    event_time         DateTime64(3, 'UTC'),
    market_id          String,
    selection_id       String,
    bookmaker          LowCardinality(String),
    odds               Float64,
    model_probability  Float64,
    market_probability Float64,
    book_probability   Float64,
    edge               Float64,
    expected_value     Float64,
    confidence         Float64,
    inserted_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (market_id, selection_id, bookmaker, event_time, event_id);

CREATE TABLE IF NOT EXISTS model_metrics
(
    event_id                     UUID,
    event_time                   DateTime64(3, 'UTC'),
    model                        LowCardinality(String),
    source_partition             Int32,
    labels                       Int64,
    log_loss                     Nullable(Float64),
    brier                        Nullable(Float64),
    roc_auc                      Nullable(Float64),
    ece                          Nullable(Float64),
    mae                          Nullable(Float64),
    baseline_mae                 Nullable(Float64),
    calibration_count            Array(Int64),
    calibration_mean_probability Array(Float64),
    calibration_observed_rate    Array(Float64),
    baseline_log_loss            Map(String, Float64),
    baseline_brier               Map(String, Float64),
    inserted_at                  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (model, source_partition, labels, event_id);

CREATE TABLE IF NOT EXISTS model_drift
(
    event_id         UUID,
    event_time       DateTime64(3, 'UTC'),
    model            LowCardinality(String),
    source_partition Int32,
    labels           Int64,
    error_mean       Float64,
    adwin_width      Int64,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (model, source_partition, labels, event_id);

CREATE TABLE IF NOT EXISTS alerts
(
    event_id         UUID,
    event_time       DateTime64(3, 'UTC'),
    fingerprint      String,
    rule             LowCardinality(String),
    status           LowCardinality(String),
    severity         LowCardinality(String),
    value            Float64,
    labels           Map(String, String),
    group_key        String,
    starts_at        DateTime64(3, 'UTC'),
    signals          Int64,
    summary          String,
    source_partition Int32,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (fingerprint, event_time, event_id);

-- The latest notification per alert (and partition): what is firing now.
CREATE VIEW IF NOT EXISTS alerts_current AS
SELECT
    fingerprint,
    source_partition,
    argMax(rule, (event_time, signals))     AS rule,
    argMax(status, (event_time, signals))   AS status,
    argMax(severity, (event_time, signals)) AS severity,
    argMax(labels, (event_time, signals))   AS labels,
    argMax(summary, (event_time, signals))  AS summary,
    min(starts_at)                          AS first_started,
    max(event_time)                         AS last_change
FROM alerts FINAL
GROUP BY fingerprint, source_partition;
