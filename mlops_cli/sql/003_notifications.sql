-- 003: the notifications audit table: one row per channel per message (sent or failed).
-- Secrets never land here: `target` is an address, a redacted webhook host or the last 4
-- characters of a PagerDuty routing key; `payload` is the message as sent, minus secrets.

CREATE TABLE notifications (
    id              BIGSERIAL PRIMARY KEY,
    event           TEXT NOT NULL,             -- promotion, rollback, pipeline_failed, drift_alert, drift_resolved
    channel         TEXT NOT NULL,             -- log, email, slack, pagerduty
    target          TEXT,                      -- recipients / 'https://hooks.slack.com/***' / '***abcd'
    subject         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 1,
    error           TEXT,                      -- last error (failed), or a partial-delivery note (sent)
    payload         JSONB NOT NULL DEFAULT '{}'::jsonb,
    pipeline_run_id BIGINT REFERENCES pipeline_runs (id),
    -- clock_timestamp(), not now(): the row is written inside the caller's (possibly long)
    -- transaction and must carry the time of the delivery, not the transaction's start.
    sent_at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX notifications_sent_at ON notifications (sent_at DESC);
CREATE INDEX notifications_event_sent_at ON notifications (event, sent_at DESC);
CREATE INDEX notifications_pipeline_run ON notifications (pipeline_run_id);
