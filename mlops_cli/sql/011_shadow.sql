-- 011: the shadow challenger (docs/shadow.md): what the challenger answered to the requests the
-- champion served, scored off the request path by the API's shadow worker.
--
-- shadow_predictions  one row per served item the challenger scored. It names the champion's
--                     inference_log row by request_id (inference_log.request_id is already per
--                     item: a batch's items are `<id>-<index>`), with the item's position in its
--                     request (item_index) and the champion's answer copied (champion_version,
--                     champion_code): agreement and live F1 are computed from this table and
--                     feedback alone, without reading inference_log (whose day partitions are
--                     dropped by retention). logged_at is the request's time (when the champion
--                     answered, within a millisecond of its inference_log row), so a drift window
--                     selects the same requests in both tables.
--                     Bounded: the daily retention deletes rows older than
--                     INFERENCE_LOG_RETENTION_DAYS (shadow_report.apply_retention), in batches.
-- drift_reports.shadow the daily report's shadow section of the window (shadow_report.py):
--                     agreement, the classes they disagree on most, live weighted F1 of both on
--                     the same labelled requests; NULL when the window has no shadow prediction.

CREATE TABLE IF NOT EXISTS shadow_predictions (
    id                  BIGSERIAL PRIMARY KEY,
    logged_at           TIMESTAMPTZ NOT NULL,           -- the request's time (the champion's answer)
    request_id          TEXT NOT NULL,                  -- = inference_log.request_id of the champion's row
    item_index          INTEGER NOT NULL DEFAULT 0,     -- position of the item in its request
    champion_version    TEXT NOT NULL,                  -- the version that answered the client
    champion_code       INTEGER NOT NULL,               -- what it answered
    challenger_version  TEXT NOT NULL,
    predicted_code      INTEGER NOT NULL,               -- the challenger's class
    confidence          DOUBLE PRECISION NOT NULL,      -- the challenger's probability of it
    top_k               JSONB,                          -- the challenger's top classes [{prdtypecode, probability}]
    latency_ms          DOUBLE PRECISION,               -- the challenger's predict time, per item
    scored_at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
-- the daily window's counts: an index-only scan on the window's rows
CREATE INDEX IF NOT EXISTS shadow_predictions_window ON shadow_predictions (logged_at)
    INCLUDE (champion_version, challenger_version, champion_code, predicted_code);
-- labelled requests: from the (few) feedback rows to their shadow rows
CREATE INDEX IF NOT EXISTS shadow_predictions_request ON shadow_predictions (request_id);
-- the promotion's live evidence: every row of one (challenger, champion) pair
CREATE INDEX IF NOT EXISTS shadow_predictions_pair ON shadow_predictions (challenger_version, champion_version)
    INCLUDE (champion_code, predicted_code, logged_at);

ALTER TABLE drift_reports ADD COLUMN IF NOT EXISTS shadow JSONB;
