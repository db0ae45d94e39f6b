-- 007: the serving API's additions: the control-API audit trail, and feedback that names a
-- prediction by its request_id (resolved to the inference_log row once that row is written:
-- with several API workers, the prediction may still be in another worker's log buffer).

CREATE TABLE api_audit (
    id              BIGSERIAL PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    actor           TEXT NOT NULL,             -- body `by`, else X-Actor, else 'api' (as claimed)
    authenticated   BOOLEAN NOT NULL,          -- false: refused (no token, wrong token, disabled)
    method          TEXT NOT NULL,
    route           TEXT NOT NULL,             -- route template, e.g. /api/alerts/{alert_id}/acknowledge
    path            TEXT NOT NULL,             -- the path as requested
    params          JSONB NOT NULL DEFAULT '{}'::jsonb,   -- path + query parameters and JSON body
    status_code     INTEGER NOT NULL,
    detail          TEXT,                      -- error detail, or a short result
    pipeline_run_id BIGINT,                    -- run started or written by the action, if any
    client          TEXT,                      -- client address
    duration_ms     DOUBLE PRECISION
);
CREATE INDEX api_audit_at ON api_audit (at DESC);
CREATE INDEX api_audit_route ON api_audit (route, at DESC);

ALTER TABLE feedback ADD COLUMN request_id TEXT;
ALTER TABLE feedback DROP CONSTRAINT IF EXISTS feedback_check;
ALTER TABLE feedback ADD CONSTRAINT feedback_names_a_prediction
    CHECK (inference_id IS NOT NULL OR productid IS NOT NULL OR request_id IS NOT NULL);
CREATE INDEX feedback_unresolved ON feedback (request_id)
    WHERE inference_id IS NULL AND request_id IS NOT NULL;
