-- 009: inference_log at production volume (docs/SCALING.md).
--
-- inference_log            declaratively partitioned by UTC day (RANGE on logged_at): one partition
--                          inference_log_pYYYYMMDD per day, created ahead of time by the daily
--                          pipeline and by the API at start; inference_log_default catches a row
--                          for a day that has no partition (never a failed write) until the daily
--                          pipeline drains it into that day's partition.
-- inference_log_retained   the rows of dropped days that must outlive retention: those with
--                          feedback (a label) or a hold
-- inference_log_holds      rows an alert, a report or training provenance needs (kept on drop)
-- inference_log_drops      audit of every dropped day (rows, kept rows, archive file and checksum)
-- inference_rollup_bins    the bins (reference edges and title tokens) rollups are counted on
-- inference_rollup_days    one row per rolled-up (bins, day): rows counted and the newest id seen
-- inference_rollups        the day's counts per model version, feature and bin/category
--
-- The conversion keeps every row, id and sequence value. The whole file is one transaction
-- (db.migrate): interrupted, it leaves nothing behind; re-run on a converted table, it is a no-op.
-- PostgreSQL cannot reference a partitioned table by id alone (unique keys must include the
-- partition key), so feedback.inference_id loses its foreign key; retention keeps every row that
-- feedback names (tests/test_partitions.py).

-- Create (if missing) the partition of one UTC day, moving that day's rows out of the default
-- partition first. CREATE TABLE ... PARTITION OF would take an ACCESS EXCLUSIVE lock on
-- inference_log (stalling the serving writer); a table built apart and ATTACHed takes only SHARE
-- UPDATE EXCLUSIVE on it (writers go on), plus ACCESS EXCLUSIVE on the small default partition.
-- The CHECK constraint lets ATTACH skip the validation scan. Returns the rows moved from the
-- default partition, or -1 when the partition existed already.
CREATE OR REPLACE FUNCTION inference_log_ensure_partition(d date) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    part  text := format('inference_log_p%s', to_char(d, 'YYYYMMDD'));
    lo    timestamptz := d::timestamp AT TIME ZONE 'UTC';
    hi    timestamptz := (d + 1)::timestamp AT TIME ZONE 'UTC';
    moved bigint := 0;
BEGIN
    -- API workers starting together and the daily pipeline: one creator at a time, the others
    -- then find the partition made (the wait obeys the caller's lock_timeout)
    PERFORM pg_advisory_xact_lock(7164529010301);
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'inference_log'::regclass AND c.relname = part) THEN
        RETURN -1;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN  -- detached by retention and not yet dropped: never reuse it
        RAISE EXCEPTION 'table % exists but is not a partition of inference_log', part;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE inference_log INCLUDING DEFAULTS INCLUDING STORAGE)', part);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (logged_at >= %L AND logged_at < %L)',
                   part, part || '_bound', lo, hi);
    IF to_regclass('inference_log_default') IS NOT NULL THEN
        -- writers routing a row of this day into the default partition wait until commit
        LOCK TABLE inference_log_default IN EXCLUSIVE MODE;
        EXECUTE format('WITH moved AS (DELETE FROM inference_log_default WHERE logged_at >= $1 AND logged_at < $2 '
                       'RETURNING *) INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
        GET DIAGNOSTICS moved = ROW_COUNT;
    END IF;
    EXECUTE format('ALTER TABLE inference_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_bound');
    RETURN moved;
END $$;

DO $$
DECLARE
    d date;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'inference_log'::regclass) THEN
        RETURN;  -- converted already
    END IF;
    ALTER TABLE feedback DROP CONSTRAINT IF EXISTS feedback_inference_id_fkey;
    ALTER TABLE inference_log RENAME TO inference_log_unpartitioned;
    -- its index names are reused by the partitioned table; the old table is dropped below
    DROP INDEX IF EXISTS inference_log_request, inference_log_product, inference_log_drift, inference_log_time;
    CREATE TABLE inference_log (
        id               BIGINT NOT NULL DEFAULT nextval('inference_log_id_seq'),
        logged_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
        request_id       TEXT NOT NULL,
        source           TEXT NOT NULL DEFAULT 'api',
        model_version    TEXT,
        productid        BIGINT,
        designation      TEXT NOT NULL,
        description      TEXT NOT NULL DEFAULT '',
        designation_len  INTEGER NOT NULL,
        description_len  INTEGER NOT NULL,
        n_tokens         INTEGER,
        n_oov            INTEGER,
        script           TEXT,
        lang             TEXT,
        predicted_code   INTEGER NOT NULL,
        confidence       DOUBLE PRECISION NOT NULL,
        top_k            JSONB,
        latency_ms       DOUBLE PRECISION
    ) PARTITION BY RANGE (logged_at);
    ALTER SEQUENCE inference_log_id_seq OWNED BY inference_log.id;
    CREATE TABLE inference_log_default PARTITION OF inference_log DEFAULT;
    FOR d IN SELECT DISTINCT (logged_at AT TIME ZONE 'UTC')::date FROM inference_log_unpartitioned ORDER BY 1 LOOP
        PERFORM inference_log_ensure_partition(d);
    END LOOP;
    -- indexes are built after the copy (faster than maintaining them row by row)
    INSERT INTO inference_log (id, logged_at, request_id, source, model_version, productid, designation,
                               description, designation_len, description_len, n_tokens, n_oov, script, lang,
                               predicted_code, confidence, top_k, latency_ms)
        SELECT id, logged_at, request_id, source, model_version, productid, designation, description,
               designation_len, description_len, n_tokens, n_oov, script, lang, predicted_code, confidence,
               top_k, latency_ms
        FROM inference_log_unpartitioned;
    DROP TABLE inference_log_unpartitioned;
    ALTER TABLE inference_log ADD CONSTRAINT inference_log_pkey PRIMARY KEY (id, logged_at);
END $$;

-- the same indexes as before, now one per partition
CREATE INDEX IF NOT EXISTS inference_log_request ON inference_log (request_id);
CREATE INDEX IF NOT EXISTS inference_log_product ON inference_log (productid);
CREATE INDEX IF NOT EXISTS inference_log_drift ON inference_log (logged_at)
    INCLUDE (predicted_code, confidence, designation_len, description_len, n_tokens, n_oov, script, lang,
             model_version);
-- retention looks up the labelled rows of a day by id
CREATE INDEX IF NOT EXISTS feedback_inference ON feedback (inference_id) WHERE inference_id IS NOT NULL;
-- the labelled prediction's logged_at, beside its id: the drift check's feedback join then reads
-- one partition per label (by the primary key) instead of probing every day of the window
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS inference_logged_at TIMESTAMPTZ;
UPDATE feedback f SET inference_logged_at = i.logged_at FROM inference_log i
    WHERE i.id = f.inference_id AND f.inference_logged_at IS NULL;
CREATE INDEX IF NOT EXISTS feedback_inference_logged_at ON feedback (inference_logged_at)
    WHERE inference_logged_at IS NOT NULL;

-- the same columns (no defaults: rows come with their values), plus why each was kept
CREATE TABLE IF NOT EXISTS inference_log_retained (
    LIKE inference_log,
    reasons          TEXT[] NOT NULL,             -- feedback | hold:<reason>
    retained_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS inference_log_retained_request ON inference_log_retained (request_id);

CREATE TABLE IF NOT EXISTS inference_log_holds (
    inference_id  BIGINT NOT NULL,
    reason        TEXT NOT NULL,                  -- e.g. alert:12, report:40, training:run-abc
    held_by       TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (inference_id, reason)
);

CREATE TABLE IF NOT EXISTS inference_log_drops (
    id               BIGSERIAL PRIMARY KEY,
    day              DATE NOT NULL,
    partition_name   TEXT NOT NULL,
    rows_dropped     BIGINT NOT NULL,
    rows_kept        BIGINT NOT NULL,             -- copied to inference_log_retained first
    archive_path     TEXT,                        -- NULL: no archive (INFERENCE_LOG_ARCHIVE_DIR unset)
    archive_format   TEXT,
    archive_rows     BIGINT,
    archive_sha256   TEXT,
    retention_days   INTEGER NOT NULL,
    actor            TEXT,
    pipeline_run_id  BIGINT REFERENCES pipeline_runs (id),
    dropped_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS inference_log_drops_day ON inference_log_drops (day DESC);

CREATE TABLE IF NOT EXISTS inference_rollup_bins (
    bins_key    TEXT PRIMARY KEY,                 -- sha1 of `bins`
    bins        JSONB NOT NULL,                   -- inner edges per feature, title tokens, sample size
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS inference_rollup_days (
    bins_key         TEXT NOT NULL REFERENCES inference_rollup_bins (bins_key) ON DELETE CASCADE,
    day              DATE NOT NULL,
    n_rows           BIGINT NOT NULL,
    max_id           BIGINT,                      -- a row of the day with a higher id arrived late
    computed_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    pipeline_run_id  BIGINT REFERENCES pipeline_runs (id),
    PRIMARY KEY (bins_key, day)
);

CREATE TABLE IF NOT EXISTS inference_rollups (
    bins_key       TEXT NOT NULL,
    day            DATE NOT NULL,
    model_version  TEXT,
    feature        TEXT NOT NULL,                 -- predicted_code, script, lang, title_length, ...,
                                                  -- totals (n, n_empty, oov_*) and tokens
    key            TEXT,                          -- class, category, bin number or token
    n              BIGINT NOT NULL,
    FOREIGN KEY (bins_key, day) REFERENCES inference_rollup_days (bins_key, day) ON DELETE CASCADE,
    UNIQUE NULLS NOT DISTINCT (bins_key, day, model_version, feature, key)
);
