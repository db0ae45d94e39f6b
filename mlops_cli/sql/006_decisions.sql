-- 006: promotion decisions: one row per decision on a model version (promote, approve, rollback).
-- The MLflow registry holds the current state (aliases, stage tags); this table is the history:
-- who decided what, on which scores, under which rule, and why.
--
-- champion_version / champion_score: the champion in production when the decision was taken
--   (the one the candidate was compared with; for a rollback, the version rolled back).
-- previous_champion: the version holding the previous-champion alias after the decision, for the
--   decisions that move aliases (promoted, manual_promotion, rolled_back); NULL otherwise.
-- restored_version: for a rollback, the version put back in production.

CREATE TABLE model_decisions (
    id                BIGSERIAL PRIMARY KEY,
    pipeline_run_id   BIGINT REFERENCES pipeline_runs (id),
    model_name        TEXT NOT NULL,
    model_version     TEXT NOT NULL,
    mlflow_run_id     TEXT,
    decision          TEXT NOT NULL CHECK (decision IN ('promoted', 'archived', 'needs_approval',
                                                        'rolled_back', 'manual_promotion')),
    metric            TEXT NOT NULL,
    candidate_score   DOUBLE PRECISION,
    champion_version  TEXT,
    champion_score    DOUBLE PRECISION,
    threshold         DOUBLE PRECISION,
    min_improvement   DOUBLE PRECISION,
    rule              TEXT NOT NULL,            -- the rule as evaluated, human readable
    justification     TEXT NOT NULL,            -- the sentence people read (or a rollback's reason)
    decided_by        TEXT,                     -- actor: a person, a token owner, the cron host
    triggered_by      TEXT,                     -- cron | cli | api | ui
    previous_champion TEXT,
    restored_version  TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX model_decisions_version ON model_decisions (model_name, model_version, id DESC);
CREATE INDEX model_decisions_created ON model_decisions (model_name, created_at DESC);
