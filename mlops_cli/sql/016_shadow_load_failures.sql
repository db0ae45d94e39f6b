-- 016: a challenger the API's shadow cannot load (docs/shadow.md "A challenger that cannot be
-- loaded"). The shadow worker keeps the reason in memory (GET /health, the metrics); a row here
-- lets promotion say why a challenger waiting for live evidence has none.
--
-- shadow_load_failures  one row per (model, version, host) whose load failed: the first and last
--                       time the worker saw it fail and its error; resolved_at once that version
--                       loaded. Written by the worker on a change only, never per request.

CREATE TABLE shadow_load_failures (
    model_name    TEXT NOT NULL,
    model_version TEXT NOT NULL,
    host          TEXT NOT NULL,
    error         TEXT NOT NULL,
    first_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at   TIMESTAMPTZ,
    PRIMARY KEY (model_name, model_version, host)
);
