-- 015: each closed day's labelling candidates, so the labelling queue reads a bounded number of
-- rows whatever the traffic (docs/SCALING.md "The labelling queue"; mlops_cli/labelling_pool.py).
--
-- labelling_candidate_days   one row per day whose lists were computed (by the `rollup` step):
--                            the day's rows and newest id then (a row with a higher id arriving
--                            later makes the lists stale), how long a list may be and is,
--                            the newest label applied
-- labelling_candidates       the day's unlabelled predictions, one per product, in two lists:
--                            'c' the least confident, 'o' the most out-of-vocabulary, by rank
--
-- A product in a window's top N is in its own day's top N, so the queue merges the days' lists
-- and scans only the part of the window with no fresh list (today, a late day). Forgotten with
-- the day's rollups (a drained or dropped partition).

CREATE TABLE labelling_candidate_days (
    day              DATE PRIMARY KEY,
    n_rows           BIGINT NOT NULL,
    max_id           BIGINT,                              -- NULL with rows: stale
    pool             INTEGER NOT NULL CHECK (pool > 0),   -- the longest a list may be
    n_c              INTEGER NOT NULL,                    -- how long each list is (< pool: the
    n_o              INTEGER NOT NULL,                    -- day had no more candidates)
    computed_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    feedback_id      BIGINT,                              -- the newest label then: later ones may
                                                          -- wear the lists (labelling_days_worn)
    pipeline_run_id  BIGINT REFERENCES pipeline_runs (id)
);

CREATE TABLE labelling_candidates (
    day            DATE NOT NULL REFERENCES labelling_candidate_days (day) ON DELETE CASCADE,
    list           CHAR(1) NOT NULL CHECK (list IN ('c', 'o')),
    rank           INTEGER NOT NULL CHECK (rank > 0),
    inference_id   BIGINT NOT NULL,
    logged_at      TIMESTAMPTZ NOT NULL,
    request_id     TEXT NOT NULL,
    productid      BIGINT,
    product_key    TEXT NOT NULL,
    confidence     DOUBLE PRECISION NOT NULL,
    oov            DOUBLE PRECISION,
    PRIMARY KEY (day, list, rank)
);
