-- 019: who added a control room user, changed its password or role, or removed it (docs/CONFIGURATION.md,
-- "Control room sign-in"). The users file holds the hashes; this table is the audit, written by
-- `mlops ui add-user` / `mlops ui remove-user` in the transaction that commits after the file is written.

CREATE TABLE ui_user_changes (
    id                BIGSERIAL PRIMARY KEY,
    at                TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    name              TEXT NOT NULL,              -- the user changed
    change            TEXT NOT NULL CHECK (change IN ('added', 'changed', 'removed')),
    role_before       TEXT,                       -- NULL: a new user
    role              TEXT,                       -- NULL: removed
    password_changed  BOOLEAN NOT NULL,
    users_file        TEXT NOT NULL,
    actor             TEXT NOT NULL CHECK (btrim(actor) <> ''),
    triggered_by      TEXT NOT NULL
);
CREATE INDEX ui_user_changes_name ON ui_user_changes (name, at DESC);
