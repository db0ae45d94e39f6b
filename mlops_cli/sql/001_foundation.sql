-- 001: catalogue, load batches, rejected rows and the pipeline_runs audit/gating table.

CREATE TABLE pipeline_runs (
    id              BIGSERIAL PRIMARY KEY,
    pipeline        TEXT NOT NULL CHECK (pipeline IN ('weekly', 'daily', 'manual', 'retrain')),
    step            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    triggered_by    TEXT NOT NULL CHECK (triggered_by IN ('cron', 'cli', 'api', 'ui')),
    actor           TEXT,                      -- who: a person's name, a token owner, the cron host
    slot            TEXT,                      -- schedule slot, e.g. ISO week '2026-W48' or a date
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    params          JSONB NOT NULL DEFAULT '{}'::jsonb,
    outputs         JSONB NOT NULL DEFAULT '{}'::jsonb,
    error           TEXT,
    upstream_run_id BIGINT REFERENCES pipeline_runs (id),   -- the run whose output this one consumed
    parent_run_id   BIGINT REFERENCES pipeline_runs (id),   -- the pipeline-level row ('pipeline' step)
    pid             INTEGER,
    hostname        TEXT,
    backend_pid     INTEGER,                   -- PostgreSQL session that owns the running row:
    backend_start   TIMESTAMPTZ                -- when that session ends, the run is abandoned
);
CREATE INDEX pipeline_runs_step_status ON pipeline_runs (step, status, id DESC);
CREATE INDEX pipeline_runs_upstream ON pipeline_runs (upstream_run_id);
CREATE INDEX pipeline_runs_parent ON pipeline_runs (parent_run_id);
CREATE INDEX pipeline_runs_started ON pipeline_runs (started_at DESC);

CREATE TABLE load_batches (
    id              SERIAL PRIMARY KEY,
    pipeline_run_id BIGINT NOT NULL REFERENCES pipeline_runs (id),
    slot            TEXT NOT NULL,             -- ISO week of --as-of ('2026-W48')
    as_of           DATE NOT NULL,
    forced          BOOLEAN NOT NULL DEFAULT false,
    kind            TEXT NOT NULL CHECK (kind IN ('initial', 'incremental')),
    source_x        TEXT NOT NULL,
    source_y        TEXT NOT NULL,
    source_rows     INTEGER NOT NULL,          -- rows in the whole source catalogue
    start_offset    INTEGER NOT NULL,          -- position in the seeded order over productid
    end_offset      INTEGER NOT NULL,
    rows_loaded     INTEGER NOT NULL,
    rows_rejected   INTEGER NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One scheduled batch per slot: the database, not only the lock, keeps a weekly load idempotent.
CREATE UNIQUE INDEX load_batches_one_per_slot ON load_batches (slot) WHERE NOT forced;

CREATE TABLE products (
    productid    BIGINT PRIMARY KEY,
    designation  TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    prdtypecode  INTEGER NOT NULL,
    imageid      BIGINT,
    batch_id     INTEGER NOT NULL REFERENCES load_batches (id),
    loaded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX products_batch ON products (batch_id);

CREATE TABLE rejected_rows (
    id           BIGSERIAL PRIMARY KEY,
    batch_id     INTEGER NOT NULL REFERENCES load_batches (id),
    source_index TEXT,                         -- the unnamed index column of the source files
    raw          JSONB NOT NULL,
    reason       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rejected_rows_batch ON rejected_rows (batch_id);
