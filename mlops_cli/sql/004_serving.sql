-- 004: what the serving API records: every prediction, moderators' feedback.

CREATE TABLE inference_log (
    id               BIGSERIAL PRIMARY KEY,
    logged_at        TIMESTAMPTZ NOT NULL DEFAULT now(),   -- when the request was answered
    request_id       TEXT NOT NULL,
    source           TEXT NOT NULL DEFAULT 'api',          -- api | batch | simulation
    model_version    TEXT,
    productid        BIGINT,
    designation      TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    designation_len  INTEGER NOT NULL,
    description_len  INTEGER NOT NULL,
    n_tokens         INTEGER,                              -- textstats.row_features, computed
    n_oov            INTEGER,                              -- off the request path by the writer
    script           TEXT,
    lang             TEXT,
    predicted_code   INTEGER NOT NULL,
    confidence       DOUBLE PRECISION NOT NULL,
    top_k            JSONB,
    latency_ms       DOUBLE PRECISION
);
CREATE INDEX inference_log_time ON inference_log (logged_at);
CREATE INDEX inference_log_request ON inference_log (request_id);
CREATE INDEX inference_log_product ON inference_log (productid);

CREATE TABLE feedback (
    id              BIGSERIAL PRIMARY KEY,
    inference_id    BIGINT REFERENCES inference_log (id),
    productid       BIGINT,
    true_code       INTEGER NOT NULL,
    predicted_code  INTEGER,
    model_version   TEXT,
    submitted_by    TEXT,
    note            TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (inference_id IS NOT NULL OR productid IS NOT NULL)
);
CREATE INDEX feedback_time ON feedback (created_at);
