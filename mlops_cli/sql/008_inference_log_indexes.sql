-- 008: one index fewer for the serving writer to maintain on every logged prediction.
-- inference_log_drift (005) has logged_at as its key too: every range scan on logged_at can use
-- it, so inference_log_time only cost each insert an index entry (and WAL) for nothing.
DROP INDEX IF EXISTS inference_log_time;
