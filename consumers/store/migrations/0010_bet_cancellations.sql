-- Bet windows with the bet lifecycle (BetWindowUpdated v2): bets cancelled and cashed out in
-- the window, per selection and for the market. `stakes` and `market_turnover` are now net of
-- cancellations and `liability` counts cash-outs (docs/tables.md); rows written before this
-- migration read 0 in the new columns.
ALTER TABLE bet_windows_1m
    ADD COLUMN IF NOT EXISTS cancelled UInt64 DEFAULT 0 AFTER money_share,
    ADD COLUMN IF NOT EXISTS cancelled_stakes Float64 DEFAULT 0 AFTER cancelled,
    ADD COLUMN IF NOT EXISTS cashed_out UInt64 DEFAULT 0 AFTER cancelled_stakes,
    ADD COLUMN IF NOT EXISTS cash_out_paid Float64 DEFAULT 0 AFTER cashed_out,
    ADD COLUMN IF NOT EXISTS market_cancelled UInt64 DEFAULT 0 AFTER worst_case_liability,
    ADD COLUMN IF NOT EXISTS market_cancelled_stakes Float64 DEFAULT 0 AFTER market_cancelled,
    ADD COLUMN IF NOT EXISTS market_cashed_out UInt64 DEFAULT 0 AFTER market_cancelled_stakes,
    ADD COLUMN IF NOT EXISTS market_cash_out_paid Float64 DEFAULT 0 AFTER market_cashed_out;
