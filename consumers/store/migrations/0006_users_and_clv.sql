-- Users: the worker computes a user's window per bets partition (bets are keyed by market,
-- so one user's bets spread over partitions). The partials hold additive sufficient
-- statistics; user_windows_1m sums them and derives the rates. Exact, like the other
-- final tables (query the view; it applies FINAL to the partials).
CREATE TABLE IF NOT EXISTS user_window_parts_1m
(
    user_id          String,
    source_partition UInt32,
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    bets             UInt64,
    staked           Float64,
    settled          UInt64,
    won              UInt64,
    sum_t            Float64,
    sum_tt           Float64,
    sum_s            Float64,
    sum_ts           Float64,
    version          UInt64,
    window_id        UUID,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (user_id, window_start, source_partition);

CREATE VIEW IF NOT EXISTS user_windows_1m AS
SELECT
    user_id,
    window_start,
    window_end,
    n AS bets,
    staked_sum AS staked,
    n * 60000 / (toUnixTimestamp64Milli(window_end) - toUnixTimestamp64Milli(window_start)) AS bet_rate_per_min,
    settled_sum AS settled,
    won_sum AS won,
    if(settled_sum > 0, won_sum / settled_sum, NULL) AS win_rate,
    if(n >= 2 AND n * tt - t * t > 0, (n * ts - t * s) / (n * tt - t * t) * 60000, 0) AS stake_trend_per_min
FROM
(
    SELECT
        user_id, window_start, any(window_end) AS window_end, sum(bets) AS n, sum(staked) AS staked_sum,
        sum(settled) AS settled_sum, sum(won) AS won_sum, sum(sum_t) AS t, sum(sum_tt) AS tt,
        sum(sum_s) AS s, sum(sum_ts) AS ts
    FROM user_window_parts_1m FINAL
    GROUP BY user_id, window_start
);

-- Closing line value of every settled bet (BetSettled seen) whose market has closed: the odds taken against
-- the best price any bookmaker quoted for the selection at the close (each bookmaker's
-- last quote at or before the market's first CLOSED status). Positive: the bettor beat
-- the closing line (a sharp-bettor signal). Computed from the raw tables at query time.
CREATE VIEW IF NOT EXISTS bet_clv AS
WITH
    closes AS (
        SELECT market_id, min(event_time) AS closed_at
        FROM market_status_changed FINAL WHERE status = 'CLOSED' GROUP BY market_id
    ),
    last_quotes AS (
        SELECT q.market_id AS market_id, q.selection_id AS selection_id, q.bookmaker AS bookmaker,
               argMax(q.odds, (q.event_time, toString(q.event_id))) AS odds
        FROM odds_changed AS q FINAL
        INNER JOIN closes AS c ON q.market_id = c.market_id
        WHERE q.event_time <= c.closed_at
        GROUP BY q.market_id, q.selection_id, q.bookmaker
    ),
    closing AS (
        SELECT market_id, selection_id, max(odds) AS closing_odds FROM last_quotes GROUP BY market_id, selection_id
    )
SELECT
    b.bet_id AS bet_id, b.user_id AS user_id, b.market_id AS market_id, b.selection_id AS selection_id,
    b.event_time AS placed_at, b.stake AS stake, b.odds AS odds_taken, c.closing_odds AS closing_odds,
    b.odds / c.closing_odds - 1 AS clv, r.result AS result
FROM bet_placed AS b FINAL
INNER JOIN closing AS c ON b.market_id = c.market_id AND b.selection_id = c.selection_id
INNER JOIN (SELECT bet_id, any(result) AS result FROM bet_settled FINAL GROUP BY bet_id) AS r ON b.bet_id = r.bet_id
