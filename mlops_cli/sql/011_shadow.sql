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
--                     Partitioned by UTC day like inference_log (RANGE on logged_at, partitions
--                     shadow_predictions_pYYYYMMDD made ahead with inference_log's, a default
--                     partition for a day without one): the daily retention drops whole days
--                     older than INFERENCE_LOG_RETENTION_DAYS, never a row-by-row DELETE.
-- day_partition_ensure  inference_log_ensure_partition (009) for any day-partitioned table; the
--                     009 function now calls it.
-- drift_reports.shadow the daily report's shadow section of the window (shadow_report.py):
--                     agreement, the classes they disagree on most, live weighted F1 of both on
--                     the same labelled requests; NULL when the window has no shadow prediction.

-- 009's inference_log_ensure_partition, for any table partitioned by UTC day on logged_at (its
-- partitions <parent>_pYYYYMMDD, its default partition <parent>_default): see 009 for why a table
-- built apart and ATTACHed, and for the return value.
CREATE OR REPLACE FUNCTION day_partition_ensure(parent text, d date) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    part  text := format('%s_p%s', parent, to_char(d, 'YYYYMMDD'));
    dflt  text := parent || '_default';
    lo    timestamptz := d::timestamp AT TIME ZONE 'UTC';
    hi    timestamptz := (d + 1)::timestamp AT TIME ZONE 'UTC';
    moved bigint := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(7164529010301);
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = parent::regclass AND c.relname = part) THEN
        RETURN -1;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN  -- detached by retention and not yet dropped: never reuse it
        RAISE EXCEPTION 'table % exists but is not a partition of %', part, parent;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING STORAGE)', part, parent);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (logged_at >= %L AND logged_at < %L)',
                   part, part || '_bound', lo, hi);
    IF to_regclass(dflt) IS NOT NULL THEN
        EXECUTE format('LOCK TABLE %I IN EXCLUSIVE MODE', dflt);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE logged_at >= $1 AND logged_at < $2 '
                       'RETURNING *) INSERT INTO %I SELECT * FROM moved', dflt, part) USING lo, hi;
        GET DIAGNOSTICS moved = ROW_COUNT;
    END IF;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_bound');
    RETURN moved;
END $$;

CREATE OR REPLACE FUNCTION inference_log_ensure_partition(d date) RETURNS bigint
LANGUAGE sql AS $$ SELECT day_partition_ensure('inference_log', d) $$;

CREATE TABLE IF NOT EXISTS shadow_predictions (
    id                  BIGSERIAL,
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
    scored_at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (id, logged_at)              -- unique keys of a partitioned table hold its key
) PARTITION BY RANGE (logged_at);
CREATE TABLE IF NOT EXISTS shadow_predictions_default PARTITION OF shadow_predictions DEFAULT;

-- the daily window's counts: an index-only scan on the window's rows
CREATE INDEX IF NOT EXISTS shadow_predictions_window ON shadow_predictions (logged_at)
    INCLUDE (champion_version, challenger_version, champion_code, predicted_code);
-- labelled requests: from the (few) feedback rows to their shadow rows
CREATE INDEX IF NOT EXISTS shadow_predictions_request ON shadow_predictions (request_id);
-- the promotion's live evidence: every row of one (challenger, champion) pair
CREATE INDEX IF NOT EXISTS shadow_predictions_pair ON shadow_predictions (challenger_version, champion_version)
    INCLUDE (champion_code, predicted_code, logged_at);

ALTER TABLE drift_reports ADD COLUMN IF NOT EXISTS shadow JSONB;
