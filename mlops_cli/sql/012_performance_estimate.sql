-- 012: the label-free performance estimate of each drift window (docs/performance_estimate.md).
--
-- drift_reports gets, per window, the weighted F1 estimated from the serving model's calibrated
-- probabilities (no label needed), its 95% band, the same estimate on the model's holdout (what
-- the estimated_performance alert compares with), the score of that fourth alert cause, and --
-- where moderators labelled some of the window's predictions -- the realized weighted F1 of those
-- predictions beside the estimate on the same rows, so a person sees how far to trust it.
--
-- The rollups need no new column: the estimate's per-day sums are integers (each row's term in
-- units of 1e-9), stored as inference_rollups rows (features est_*) in the existing BIGINT `n`;
-- drift_windows.ROLLUP_SCHEMA 2 keys them (rollups counted before are ignored and recounted).

ALTER TABLE drift_reports
    ADD COLUMN IF NOT EXISTS estimated_weighted_f1 DOUBLE PRECISION,           -- NULL: not estimated
    ADD COLUMN IF NOT EXISTS estimated_f1_low DOUBLE PRECISION,                -- the 95% band
    ADD COLUMN IF NOT EXISTS estimated_f1_high DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS reference_estimated_f1 DOUBLE PRECISION,          -- the estimate on the holdout
    ADD COLUMN IF NOT EXISTS estimated_performance_drift_score DOUBLE PRECISION,  -- the alert's score
    ADD COLUMN IF NOT EXISTS realized_weighted_f1 DOUBLE PRECISION,            -- on the labelled predictions
    ADD COLUMN IF NOT EXISTS realized_n INTEGER NOT NULL DEFAULT 0,            -- how many
    ADD COLUMN IF NOT EXISTS realized_estimated_f1 DOUBLE PRECISION;           -- the estimate on those rows

ALTER TABLE drift_reports DROP CONSTRAINT IF EXISTS drift_reports_estimated_band;
ALTER TABLE drift_reports ADD CONSTRAINT drift_reports_estimated_band CHECK (
    estimated_weighted_f1 IS NULL
    OR (estimated_f1_low <= estimated_weighted_f1 AND estimated_weighted_f1 <= estimated_f1_high));

COMMENT ON COLUMN alerts.cause IS
    'data_drift | prediction_drift | performance_drift | estimated_performance';
