-- 010: moderators' labels become training data (docs/PIPELINE.md, "Feedback rows").
--
-- products.source            'catalogue': a row of a load batch; 'feedback': a product seen only in
--                            traffic, added by a training with its logged text. A feedback row
--                            belongs to no batch and is never counted as a weekly load.
-- products.label_feedback_id the human label the row's code comes from (NULL: the catalogue's code)
-- label_overrides            every change of a product's code by a human label: who gave it and
--                            when, the old and the new code, the training that applied it
-- feedback_used              the training that first used each label: the feedback gate counts the
--                            labels not in it (exact under concurrency, unlike a highest id seen:
--                            a feedback id is taken before its transaction commits)

ALTER TABLE products ADD COLUMN source TEXT NOT NULL DEFAULT 'catalogue';
ALTER TABLE products ADD COLUMN label_feedback_id BIGINT REFERENCES feedback (id);
ALTER TABLE products ALTER COLUMN batch_id DROP NOT NULL;
ALTER TABLE products ADD CONSTRAINT products_source_batch CHECK (
    (source = 'catalogue' AND batch_id IS NOT NULL) OR (source = 'feedback' AND batch_id IS NULL));
CREATE INDEX products_feedback_rows ON products (productid) WHERE source = 'feedback';
-- the labels of one product, newest first (the latest human label wins)
CREATE INDEX feedback_product ON feedback (productid, created_at DESC, id DESC) WHERE productid IS NOT NULL;
-- a traffic-only product's logged text, after its day's partition was dropped
CREATE INDEX IF NOT EXISTS inference_log_retained_product ON inference_log_retained (productid);

CREATE TABLE label_overrides (
    id               BIGSERIAL PRIMARY KEY,
    productid        BIGINT NOT NULL,
    old_code         INTEGER NOT NULL,          -- the code the row had (the catalogue's or an older label)
    new_code         INTEGER NOT NULL,
    feedback_id      BIGINT NOT NULL REFERENCES feedback (id),
    actor            TEXT,                      -- who gave the label (feedback.submitted_by)
    labelled_at      TIMESTAMPTZ NOT NULL,      -- when the label was given (feedback.created_at)
    pipeline_run_id  BIGINT REFERENCES pipeline_runs (id),   -- the training that applied it
    at               TIMESTAMPTZ NOT NULL DEFAULT now()       -- when it was applied
);
CREATE INDEX label_overrides_product ON label_overrides (productid, id DESC);
CREATE INDEX label_overrides_run ON label_overrides (pipeline_run_id);

CREATE TABLE feedback_used (
    feedback_id      BIGINT PRIMARY KEY REFERENCES feedback (id),
    productid        BIGINT NOT NULL,
    pipeline_run_id  BIGINT NOT NULL REFERENCES pipeline_runs (id),
    used_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX feedback_used_run ON feedback_used (pipeline_run_id);

-- the daily pipeline's decision to retrain on an active drift alert (AUTO_RETRAIN_ON_DRIFT)
ALTER TABLE alert_actions DROP CONSTRAINT IF EXISTS alert_actions_action_check;
ALTER TABLE alert_actions ADD CONSTRAINT alert_actions_action_check
    CHECK (action IN ('acknowledge', 'clear', 'resolve', 'force_retrain', 'investigate', 'adjust_thresholds',
                      'rollback', 'auto_retrain'));
