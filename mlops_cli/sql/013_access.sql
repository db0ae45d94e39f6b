-- 013: who may act, and how they proved it (docs/API.md "Identities and roles").
--
-- api_tokens: one row per token of the API; the token itself is never stored, only its SHA-256
-- (a random 32-byte secret: a fast hash is enough, unlike a password). Each token is one person
-- or service with one role; revoking keeps the row (the audit of who had access when).
-- ui_sign_ins: every attempt to sign in to the control room, refused ones included.
-- api_audit gets the role of the token that acted; its actor is now the token's name
-- ('unauthenticated' when none was proven), never a name the caller claims.

CREATE TABLE api_tokens (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,                 -- who acts with it (the actor of its audit rows)
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'labeller', 'operator')),
    token_sha256  TEXT NOT NULL UNIQUE,
    note          TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    created_by    TEXT NOT NULL,
    revoked_at    TIMESTAMPTZ,
    revoked_by    TEXT,
    last_used_at  TIMESTAMPTZ,
    CHECK (btrim(name) <> '' AND btrim(created_by) <> '')
);
CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE ui_sign_ins (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    name    TEXT NOT NULL,                       -- as typed (users) or the admin name (token)
    method  TEXT NOT NULL,                       -- 'password' | 'token'
    ok      BOOLEAN NOT NULL,
    role    TEXT,                                -- the role signed in with (ok only)
    reason  TEXT                                 -- why it was refused
);
CREATE INDEX ui_sign_ins_at ON ui_sign_ins (at DESC);
CREATE INDEX ui_sign_ins_name ON ui_sign_ins (name, at DESC);

ALTER TABLE api_audit ADD COLUMN role TEXT;  -- the acting token's role; NULL: refused before one was proven
