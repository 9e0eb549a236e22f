-- Bet windows with the bet lifecycle (BetWindowUpdated v2): bets cancelled and cashed out in
-- the window, per selection and for the market; `stakes` and `market_turnover` are net of
-- cancellations and `liability` counts cash-outs (docs/tables.md). Money columns become
-- exact Decimal(18, 2) (summed in cents by the worker); existing rows are converted, and rows
-- written before read 0 in the new columns. Means and ratios (vwap, money_share,
-- market_average_stake) stay Float64.
ALTER TABLE bet_windows_1m
    MODIFY COLUMN stakes Decimal(18, 2),
    MODIFY COLUMN liability Decimal(18, 2),
    MODIFY COLUMN market_turnover Decimal(18, 2),
    MODIFY COLUMN worst_case_liability Decimal(18, 2),
    ADD COLUMN IF NOT EXISTS cancelled UInt64 DEFAULT 0 AFTER money_share,
    ADD COLUMN IF NOT EXISTS cancelled_stakes Decimal(18, 2) DEFAULT 0 AFTER cancelled,
    ADD COLUMN IF NOT EXISTS cashed_out UInt64 DEFAULT 0 AFTER cancelled_stakes,
    ADD COLUMN IF NOT EXISTS cash_out_paid Decimal(18, 2) DEFAULT 0 AFTER cashed_out,
    ADD COLUMN IF NOT EXISTS market_cancelled UInt64 DEFAULT 0 AFTER worst_case_liability,
    ADD COLUMN IF NOT EXISTS market_cancelled_stakes Decimal(18, 2) DEFAULT 0 AFTER market_cancelled,
    ADD COLUMN IF NOT EXISTS market_cashed_out UInt64 DEFAULT 0 AFTER market_cancelled_stakes,
    ADD COLUMN IF NOT EXISTS market_cash_out_paid Decimal(18, 2) DEFAULT 0 AFTER market_cashed_out;

ALTER TABLE user_window_parts_1m MODIFY COLUMN staked Decimal(18, 2);

-- a view keeps the column types it was created with: made again for the exact staked
DROP VIEW IF EXISTS user_windows_1m;

CREATE VIEW user_windows_1m AS
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
