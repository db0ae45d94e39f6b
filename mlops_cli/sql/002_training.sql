-- 002: model evaluations on the current holdout (train, evaluate and promote write them).

CREATE TABLE model_evaluations (
    id               BIGSERIAL PRIMARY KEY,
    pipeline_run_id  BIGINT REFERENCES pipeline_runs (id),
    model_name       TEXT NOT NULL,
    model_version    TEXT NOT NULL,
    mlflow_run_id    TEXT,
    purpose          TEXT NOT NULL CHECK (purpose IN ('training', 'evaluation', 'champion-recheck')),
    holdout_rows     INTEGER NOT NULL,
    holdout_hash     TEXT NOT NULL,            -- identifies the exact rows scored
    weighted_f1      DOUBLE PRECISION NOT NULL,
    macro_f1         DOUBLE PRECISION NOT NULL,
    accuracy         DOUBLE PRECISION NOT NULL,
    metrics          JSONB NOT NULL DEFAULT '{}'::jsonb,
    evaluated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX model_evaluations_version ON model_evaluations (model_name, model_version, id DESC);
