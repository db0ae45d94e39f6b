"""All SQL of the application, as named functions. Callers own the transaction (commit/rollback).

Each function takes an open psycopg2 connection first. Rows come back as dicts.
Sections: pipeline runs, catalogue & loads, then one section per capability.
"""

from __future__ import annotations

import io
import json
from typing import Any, Callable, Iterable, Sequence

from psycopg2.extras import Json, RealDictCursor

from .jsonvalues import jsonable, storable


def _all(conn, sql: str, params: Sequence | dict | None = None) -> list[dict]:
    with conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute(sql, params)
        return [dict(r) for r in cur.fetchall()]


def _one(conn, sql: str, params: Sequence | dict | None = None) -> dict | None:
    rows = _all(conn, sql, params)
    return rows[0] if rows else None


def _scalar(conn, sql: str, params: Sequence | dict | None = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
        return row[0] if row else None


def _exec(conn, sql: str, params: Sequence | dict | None = None) -> int:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.rowcount


# === pipeline runs ==============================================================================
RUN_COLUMNS = (
    "id, pipeline, step, status, triggered_by, actor, slot, started_at, finished_at, params, "
    "outputs, error, upstream_run_id, parent_run_id, pid, hostname, backend_pid"
)


def insert_run(
    conn,
    *,
    pipeline: str,
    step: str,
    status: str,
    triggered_by: str,
    actor: str | None,
    params: dict | None = None,
    upstream_run_id: int | None = None,
    parent_run_id: int | None = None,
    slot: str | None = None,
    pid: int | None = None,
    hostname: str | None = None,
    outputs: dict | None = None,
    error: str | None = None,
) -> int:
    """Insert a pipeline_runs row; the session's backend pid/start identify its owner."""
    finished = status != "running"
    return _scalar(
        conn,
        """INSERT INTO pipeline_runs (pipeline, step, status, triggered_by, actor, slot, params,
               outputs, error, upstream_run_id, parent_run_id, pid, hostname, backend_pid,
               backend_start, finished_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, pg_backend_pid(),
               (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
               CASE WHEN %s THEN clock_timestamp() END)
           RETURNING id""",
        (pipeline, step, status, triggered_by, actor, slot, Json(params or {}), Json(outputs or {}),
         error, upstream_run_id, parent_run_id, pid, hostname, finished),
    )


def finish_run(conn, run_id: int, status: str, outputs: dict | None = None, error: str | None = None) -> None:
    n = _exec(
        conn,
        """UPDATE pipeline_runs SET status = %s, outputs = outputs || %s, error = %s, finished_at = clock_timestamp()
           WHERE id = %s AND status = 'running'""",
        # jsonb cannot hold NUL either: outputs quoting a binary file's bytes would fail the update
        (status, Json(storable(outputs or {})), error, run_id),
    )
    if n != 1:
        raise RuntimeError(f"pipeline run {run_id} is not running (already finished or abandoned)")


def set_upstream_run(conn, run_id: int, upstream_run_id: int) -> None:
    _exec(conn, "UPDATE pipeline_runs SET upstream_run_id = %s WHERE id = %s", (upstream_run_id, run_id))


def get_run(conn, run_id: int) -> dict | None:
    return _one(conn, f"SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE id = %s", (run_id,))


def list_runs(conn, *, limit: int = 20, pipeline: str | None = None, step: str | None = None,
              status: str | None = None, parent_run_id: int | None = None) -> list[dict]:
    return _all(
        conn,
        f"""SELECT {RUN_COLUMNS},
                   extract(epoch FROM coalesce(finished_at, now()) - started_at) AS duration_s
            FROM pipeline_runs
            WHERE (%(pipeline)s::text IS NULL OR pipeline = %(pipeline)s)
              AND (%(step)s::text IS NULL OR step = %(step)s)
              AND (%(status)s::text IS NULL OR status = %(status)s)
              AND (%(parent)s::bigint IS NULL OR parent_run_id = %(parent)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"pipeline": pipeline, "step": step, "status": status, "parent": parent_run_id, "limit": limit},
    )


def mark_abandoned_runs(conn) -> list[int]:
    """Running rows whose owning database session is gone: the process died (crash, kill -9), or
    its connection was lost before it could record the step's end (runs.run_step)."""
    rows = _all(
        conn,
        """UPDATE pipeline_runs r
           SET status = 'failed', finished_at = clock_timestamp(),
               error = 'abandoned: the database session running this step ended (its process died, '
                       || 'or lost its connection before it could record the failure)'
           WHERE r.status = 'running'
             AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                             WHERE a.pid = r.backend_pid AND a.backend_start = r.backend_start)
           RETURNING r.id""",
    )
    return [r["id"] for r in rows]


def latest_unconsumed(conn, step: str, consumer_step: str, *, unless: str | None = None) -> dict | None:
    """The newest succeeded `step` run, if no running/succeeded `consumer_step` run consumed it.

    Only the newest counts: a consumer always works on the latest output (train on everything
    loaded, evaluate the newest challenger), so older unconsumed runs are superseded, not queued.
    unless: runs whose outputs have this key true are passed over, as if they did not exist
    (promote: an evaluation of the champion, `of_champion`, is not a challenger's).
    """
    return _one(
        conn,
        f"""SELECT {RUN_COLUMNS} FROM (
                SELECT * FROM pipeline_runs WHERE step = %s AND status = 'succeeded'
                  AND (%s::text IS NULL OR coalesce(outputs->>%s, '') <> 'true')
                ORDER BY id DESC LIMIT 1) r
            WHERE NOT EXISTS (SELECT 1 FROM pipeline_runs c
                              WHERE c.upstream_run_id = r.id AND c.step = %s
                                AND c.status IN ('running', 'succeeded'))""",
        (step, unless, unless, consumer_step),
    )


def latest_run(conn, step: str, status: str | None = None) -> dict | None:
    return _one(
        conn,
        f"""SELECT {RUN_COLUMNS} FROM pipeline_runs
            WHERE step = %s AND (%s::text IS NULL OR status = %s) ORDER BY id DESC LIMIT 1""",
        (step, status, status),
    )


def running_runs(conn, step: str | None = None) -> list[dict]:
    return _all(
        conn,
        f"""SELECT {RUN_COLUMNS} FROM pipeline_runs
            WHERE status = 'running' AND (%s::text IS NULL OR step = %s) ORDER BY id""",
        (step, step),
    )


def newest_run_id(conn) -> int:
    """The highest pipeline_runs id so far (0 when none): rows made later have higher ones."""
    return int(_scalar(conn, "SELECT coalesce(max(id), 0) FROM pipeline_runs") or 0)


def pipeline_row_of_pid(conn, pid: int, pipeline_kind: str, hostname: str, after_id: int) -> dict | None:
    """The pipeline-level row a just-launched process created (launch() waits for it): of its pid
    on this host, made after `after_id` (pids are reused: a container's start again from 1)."""
    return _one(
        conn,
        f"""SELECT {RUN_COLUMNS} FROM pipeline_runs
            WHERE step = 'pipeline' AND pid = %s AND pipeline = %s AND hostname = %s AND id > %s
            ORDER BY id DESC LIMIT 1""",
        (pid, pipeline_kind, hostname, after_id),
    )


def try_advisory_lock(conn, key: int) -> bool:
    return bool(_scalar(conn, "SELECT pg_try_advisory_lock(%s)", (key,)))


def advisory_unlock(conn, key: int) -> None:
    _scalar(conn, "SELECT pg_advisory_unlock(%s)", (key,))


# === catalogue and loads ========================================================================
def batch_for_slot(conn, slot: str) -> dict | None:
    return _one(conn, "SELECT * FROM load_batches WHERE slot = %s AND NOT forced ORDER BY id LIMIT 1", (slot,))


def last_batch(conn, sources_x: list[str] | None = None) -> dict | None:
    """The batch that went furthest into any of `sources_x` (the spellings of one X file's path;
    any source when None)."""
    return _one(
        conn,
        """SELECT * FROM load_batches WHERE (%s::text[] IS NULL OR source_x = ANY(%s::text[]))
           ORDER BY end_offset DESC, id DESC LIMIT 1""",
        (sources_x, sources_x),
    )


def batches_from(conn, sources_x: list[str]) -> list[dict]:
    """Every batch loaded from any of `sources_x` (the spellings of one X file's path), oldest first."""
    return _all(conn, """SELECT id, source_key, source_rows, start_offset, end_offset FROM load_batches
                         WHERE source_x = ANY(%s::text[]) ORDER BY id""", (sources_x,))


def rejected_productids_of_batches(conn, batch_ids: list[int]) -> set[str]:
    """The productids (as the file wrote them, stripped) of the rows these batches rejected."""
    if not batch_ids:
        return set()
    return {r["p"] for r in _all(conn, """SELECT DISTINCT btrim(raw->>'productid') AS p FROM rejected_rows
                                          WHERE batch_id = ANY(%s::int[]) AND raw ? 'productid'""",
                                 (list(batch_ids),))}


def productids_of_batches(conn, batch_ids: list[int]) -> set[int]:
    """The catalogue products these batches loaded."""
    if not batch_ids:
        return set()
    return {r["productid"] for r in _all(conn, """SELECT productid FROM products
                                                  WHERE batch_id = ANY(%s::int[]) AND source = 'catalogue'""",
                                         (list(batch_ids),))}


def batch_sources(conn) -> list[str]:
    """Every X path a batch was loaded from, as it was recorded."""
    return [r["source_x"] for r in _all(conn, "SELECT DISTINCT source_x FROM load_batches")]


def rows_loaded_since_training(conn, upto_run_id: int) -> int:
    """Rows the load runs after the newest one a training used, up to `upto_run_id`, added."""
    return int(_scalar(conn, """SELECT coalesce(sum(b.rows_loaded), 0) FROM load_batches b
                                WHERE b.pipeline_run_id <= %(upto)s
                                  AND b.pipeline_run_id > coalesce((SELECT max(t.upstream_run_id) FROM pipeline_runs t
                                                                    WHERE t.step = 'train'
                                                                      AND t.status IN ('running', 'succeeded')), 0)""",
                           {"upto": upto_run_id}))


def insert_batch(conn, **cols) -> int:
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    return _scalar(conn, f"INSERT INTO load_batches ({names}) VALUES ({marks}) RETURNING id", list(cols.values()))


def existing_productids(conn, productids: Iterable[int]) -> dict[int, int]:
    """productid -> batch_id for those already in the catalogue (a load batch's rows: a row added
    from feedback is replaced by the catalogue's, see replace_feedback_products)."""
    ids = list(productids)
    if not ids:
        return {}
    rows = _all(
        conn, "SELECT productid, batch_id FROM products WHERE productid = ANY(%s::bigint[]) AND source = 'catalogue'",
        (ids,)
    )
    return {r["productid"]: r["batch_id"] for r in rows}


def copy_products(conn, rows: Iterable[tuple]) -> int:
    """COPY (productid, designation, description, prdtypecode, imageid, batch_id, loaded_at) rows in."""
    buf = io.StringIO()
    n = 0
    for productid, designation, description, code, imageid, batch_id, loaded_at in rows:
        buf.write(
            "\t".join(
                [str(productid), _copy_text(designation), _copy_text(description), str(code),
                 "\\N" if imageid is None else str(imageid), str(batch_id), loaded_at.isoformat()]
            )
        )
        buf.write("\n")
        n += 1
    buf.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(
            "COPY products (productid, designation, description, prdtypecode, imageid, batch_id, loaded_at) "
            "FROM STDIN WITH (FORMAT text)",
            buf,
        )
    return n


def _copy_text(value: str) -> str:
    # COPY text format: escape backslash first, then the characters that delimit fields/rows.
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def insert_rejected(conn, batch_id: int, rejected: Iterable[tuple[str, dict, str]]) -> int:
    """rejected: (source_index, raw row dict, reason)."""
    data = [(batch_id, idx, json.dumps(raw, ensure_ascii=False), reason) for idx, raw, reason in rejected]
    if not data:
        return 0
    from psycopg2.extras import execute_values

    with conn.cursor() as cur:
        execute_values(
            cur, "INSERT INTO rejected_rows (batch_id, source_index, raw, reason) VALUES %s", data,
            template="(%s, %s, %s::jsonb, %s)", page_size=1000,
        )
    return len(data)


def catalogue_counts(conn) -> dict:
    return _one(
        conn,
        """SELECT (SELECT count(*) FROM products WHERE source = 'catalogue') AS products,
                  (SELECT count(*) FROM products WHERE source = 'feedback') AS feedback_rows,
                  (SELECT count(*) FROM load_batches) AS batches,
                  (SELECT count(*) FROM rejected_rows) AS rejected""",
    )


def catalogue_growth(conn) -> list[dict]:
    """Catalogue size after each batch (for the overview chart)."""
    return _all(
        conn,
        """SELECT b.id AS batch_id, b.slot, b.created_at, b.rows_loaded,
                  sum(b.rows_loaded) OVER (ORDER BY b.id) AS catalogue_rows
           FROM load_batches b ORDER BY b.id""",
    )


def table_counts(conn, tables: Sequence[str]) -> dict[str, int]:
    out = {}
    for t in tables:
        if not t.isidentifier():
            raise ValueError(t)
        out[t] = _scalar(conn, f"SELECT count(*) FROM {t}")
    return out


# === promotion decisions ========================================================================
DECISION_COLUMNS = (
    "id, pipeline_run_id, model_name, model_version, mlflow_run_id, decision, metric, candidate_score, "
    "champion_version, champion_score, threshold, min_improvement, rule, justification, decided_by, "
    "triggered_by, previous_champion, restored_version, created_at"
)


def champion_lock(conn, key: int) -> None:
    """Wait for the transaction-level advisory lock `key` (promote, approve and rollback all move
    the champion alias: they take it so that they never interleave). Released at commit/rollback."""
    _scalar(conn, "SELECT pg_advisory_xact_lock(%s)", (key,))


def insert_decision(conn, **cols) -> int:
    """Insert a model_decisions row (see sql/006_decisions.sql); returns its id."""
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    return _scalar(conn, f"INSERT INTO model_decisions ({names}) VALUES ({marks}) RETURNING id",
                   list(cols.values()))


def latest_decision_for_version(conn, model_name: str, model_version: str) -> dict | None:
    return _one(
        conn,
        f"""SELECT {DECISION_COLUMNS} FROM model_decisions WHERE model_name = %s AND model_version = %s
            ORDER BY id DESC LIMIT 1""",
        (model_name, str(model_version)),
    )


def latest_decisions_by_version(conn, model_name: str) -> dict[str, dict]:
    """model_version -> its latest model_decisions row."""
    rows = _all(
        conn,
        f"""SELECT DISTINCT ON (model_version) {DECISION_COLUMNS} FROM model_decisions
            WHERE model_name = %s ORDER BY model_version, id DESC""",
        (model_name,),
    )
    return {r["model_version"]: r for r in rows}


def list_decisions(conn, model_name: str, limit: int = 50, decision: str | None = None) -> list[dict]:
    return _all(
        conn,
        f"""SELECT {DECISION_COLUMNS} FROM model_decisions
            WHERE model_name = %(name)s AND (%(decision)s::text IS NULL OR decision = %(decision)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"name": model_name, "decision": decision, "limit": limit},
    )


def versions_ever_champion(conn, model_name: str) -> list[str]:
    """Versions that have been in production: promoted (auto or manual), or restored by a rollback.
    Ordered by when they first got there."""
    rows = _all(
        conn,
        """SELECT v AS version, min(id) AS first_id FROM (
               SELECT model_version AS v, id FROM model_decisions
               WHERE model_name = %s AND decision IN ('promoted', 'manual_promotion')
               UNION ALL
               SELECT restored_version AS v, id FROM model_decisions
               WHERE model_name = %s AND decision = 'rolled_back' AND restored_version IS NOT NULL
           ) x GROUP BY v ORDER BY first_id""",
        (model_name, model_name),
    )
    return [r["version"] for r in rows]


def latest_production_change(conn, model_name: str) -> dict | None:
    """The newest recorded change of production (champion_audit.py): a promotion, a manual
    promotion, or a rollback; `version` is the one it put in production."""
    return _one(
        conn,
        """SELECT id, decision, decided_by, created_at,
                  CASE WHEN decision = 'rolled_back' THEN restored_version ELSE model_version END AS version
           FROM model_decisions
           WHERE model_name = %s AND (decision IN ('promoted', 'manual_promotion')
                                      OR (decision = 'rolled_back' AND restored_version IS NOT NULL))
           ORDER BY id DESC LIMIT 1""",
        (model_name,),
    )


def notification_sent(conn, event: str, subject: str) -> bool:
    """Whether a notification of `event` with this subject was already recorded (any channel)."""
    return bool(_scalar(conn, "SELECT EXISTS (SELECT 1 FROM notifications WHERE event = %s AND subject = %s)",
                        (event, subject)))


def last_promotion_of(conn, model_name: str, model_version: str) -> dict | None:
    """The latest promoted/manual_promotion row of a version (its champion_version is the champion it
    replaced)."""
    return _one(
        conn,
        f"""SELECT {DECISION_COLUMNS} FROM model_decisions
            WHERE model_name = %s AND model_version = %s AND decision IN ('promoted', 'manual_promotion')
            ORDER BY id DESC LIMIT 1""",
        (model_name, str(model_version)),
    )


def latest_succeeded_evaluation(conn, model_name: str, model_version: str) -> dict | None:
    """The newest purpose='evaluation' row of a version written by a succeeded step, with the id of
    that step's pipeline run (`run_step`) and its step name."""
    return _one(
        conn,
        """SELECT e.*, r.step AS run_step FROM model_evaluations e
           JOIN pipeline_runs r ON r.id = e.pipeline_run_id
           WHERE e.model_name = %s AND e.model_version = %s AND e.purpose = 'evaluation'
             AND r.status = 'succeeded'
           ORDER BY e.id DESC LIMIT 1""",
        (model_name, str(model_version)),
    )


def latest_evaluate_run_for_version(conn, model_name: str, model_version: str) -> int | None:
    """The newest succeeded `evaluate` run that scored this version (the promote gate)."""
    return _scalar(
        conn,
        """SELECT r.id FROM pipeline_runs r JOIN model_evaluations e ON e.pipeline_run_id = r.id
           WHERE r.step = 'evaluate' AND r.status = 'succeeded' AND e.purpose = 'evaluation'
             AND e.model_name = %s AND e.model_version = %s
           ORDER BY r.id DESC LIMIT 1""",
        (model_name, str(model_version)),
    )


def latest_evaluations_by_version(conn, model_name: str) -> dict[str, dict]:
    """model_version -> its newest model_evaluations row (any purpose)."""
    rows = _all(
        conn,
        """SELECT DISTINCT ON (model_version) model_version, purpose, weighted_f1, macro_f1, accuracy,
                  holdout_rows, holdout_hash, evaluated_at
           FROM model_evaluations WHERE model_name = %s ORDER BY model_version, id DESC""",
        (model_name,),
    )
    return {r["model_version"]: r for r in rows}


# === serving ====================================================================================
INFERENCE_COLUMNS = (
    "logged_at", "request_id", "source", "model_version", "productid", "designation", "description",
    "designation_len", "description_len", "n_tokens", "n_oov", "script", "lang", "predicted_code",
    "confidence", "top_k", "latency_ms",
)


def _copy_value(value: Any) -> str:
    """One field in COPY text format (None -> \\N; NUL bytes, which TEXT cannot hold, removed)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return _copy_text(value.replace("\x00", ""))
    if isinstance(value, (dict, list)):
        return _copy_text(json.dumps(value, ensure_ascii=False, default=str))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def inference_copy_line(row: dict) -> str:
    """One inference_log row (a dict keyed by INFERENCE_COLUMNS) as a line of COPY text.

    `top_k` is a list (stored as JSONB). Missing keys are NULL (or the column default for
    `source`, which must then be given: COPY does not apply defaults to listed columns).
    """
    return "\t".join([_copy_value(row.get(c)) for c in INFERENCE_COLUMNS]) + "\n"


def insert_inference_rows(conn, rows: Sequence[dict]) -> int:
    """Write inference_log rows with one COPY; returns the count. A row's line is its
    `_copy_line` when the caller made it already (inference_copy_line), else made here."""
    if not rows:
        return 0
    buf = io.StringIO("".join([r.get("_copy_line") or inference_copy_line(r) for r in rows]))
    with conn.cursor() as cur:
        cur.copy_expert(
            f"COPY inference_log ({', '.join(INFERENCE_COLUMNS)}) FROM STDIN WITH (FORMAT text)", buf
        )
    return len(rows)


def lock_request_links(conn, *, shared: bool) -> None:
    """The transaction-level lock between the two places a label given by request_id meets its
    prediction: the serving writer takes it shared before it logs a batch (and ties the labels
    waiting for those ids, resolve_pending_feedback), POST /feedback exclusive before it looks the
    prediction up. Whichever comes second sees what the first committed: without it, each could
    miss the other's uncommitted row, and the label would wait for ever for a logged prediction."""
    from .runs import lock_key

    _scalar(conn, f"SELECT pg_advisory_xact_lock{'_shared' if shared else ''}(%s)",
            (lock_key("feedback:request-link"),))


def resolve_pending_feedback(conn, request_ids: Sequence[str] | None = None) -> int:
    """Attach feedback given by request_id to its inference_log row once that row exists, by the
    rule of ops.feedback._tied (a label is never tied to a prediction of another product).

    With `request_ids`, only those (the rows just written); without, every pending one. The
    serving writer calls it after every batch: when no feedback waits for these ids (nearly
    always), inference_log (every partition) is not even planned.
    """
    if request_ids is not None and not _scalar(
            conn, """SELECT EXISTS (SELECT 1 FROM feedback WHERE inference_id IS NULL AND request_id IS NOT NULL
                                    AND request_id = ANY(%s::text[]))""", (list(request_ids),)):
        return 0
    return _exec(
        conn,
        # per label, the rule POST /feedback applies when it is recorded (ops.feedback._tied): the
        # newest prediction of its productid (or one without a product: no contradiction); with no
        # productid, the newest, unless the id's predictions are about several products (a client
        # that reused its X-Request-ID: which one was meant cannot be told, the label stays pending)
        f"""UPDATE feedback f
            SET inference_id = c.id, inference_logged_at = c.logged_at, predicted_code = c.predicted_code,
                model_version = c.model_version, productid = coalesce(f.productid, c.productid)
            FROM feedback p
            CROSS JOIN LATERAL (
                SELECT i.id, i.logged_at, i.predicted_code, i.model_version, i.productid FROM inference_log i
                WHERE i.request_id = p.request_id
                  AND (p.productid IS NULL OR i.productid IS NULL OR i.productid = p.productid)
                ORDER BY i.productid IS NOT DISTINCT FROM p.productid DESC, i.id DESC LIMIT 1) c
            WHERE f.id = p.id AND p.inference_id IS NULL AND p.request_id IS NOT NULL
              AND (%(ids)s::text[] IS NULL OR p.request_id = ANY(%(ids)s::text[]))
              AND (p.productid IS NOT NULL OR (SELECT count(DISTINCT {_product_key("o")}) FROM inference_log o
                                               WHERE o.request_id = p.request_id) = 1)""",
        {"ids": list(request_ids) if request_ids is not None else None},
    )


def inference_of_request(conn, request_id: str, productid: int | None = None) -> dict | None:
    """The newest logged prediction with that request_id (the log's, else the rows retention
    kept), of `productid` when given."""
    params = {"r": request_id, "p": productid}
    where = "request_id = %(r)s AND (%(p)s::bigint IS NULL OR productid = %(p)s)"
    return _one(conn, f"SELECT * FROM inference_log WHERE {where} ORDER BY id DESC LIMIT 1", params) or \
        _one(conn, f"SELECT {_LOG_COLUMNS} FROM inference_log_retained WHERE {where} ORDER BY id DESC LIMIT 1",
             params)


def request_subjects(conn, request_id: str) -> int:
    """How many products (by productid, else by text) the logged predictions with that
    request_id are about, counted up to 2: more than one when a client reused its X-Request-ID."""
    return int(_scalar(conn, f"""SELECT count(*) FROM (
                                     SELECT {_product_key("i")} FROM inference_log i WHERE request_id = %(r)s
                                     UNION
                                     SELECT {_product_key("r")} FROM inference_log_retained r WHERE request_id = %(r)s
                                     LIMIT 2) s""", {"r": request_id}))


def find_inference(conn, *, inference_id: int | None = None, request_id: str | None = None) -> dict | None:
    """One inference_log row by id, or the newest with that request_id."""
    if inference_id is not None:
        return _one(conn, "SELECT * FROM inference_log WHERE id = %s", (inference_id,)) or \
            _one(conn, f"SELECT {_LOG_COLUMNS} FROM inference_log_retained WHERE id = %s", (inference_id,))
    if request_id is not None:
        return inference_of_request(conn, request_id)
    return None


def insert_feedback(conn, *, true_code: int, inference_id: int | None = None,
                    request_id: str | None = None, productid: int | None = None,
                    predicted_code: int | None = None, model_version: str | None = None,
                    submitted_by: str | None = None, note: str | None = None) -> dict:
    """Insert a feedback row; returns it."""
    return _one(
        conn,
        """INSERT INTO feedback (inference_id, request_id, productid, true_code, predicted_code,
                                 model_version, submitted_by, note, inference_logged_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s,
                   (SELECT logged_at FROM inference_log WHERE id = %s
                    UNION ALL SELECT logged_at FROM inference_log_retained WHERE id = %s LIMIT 1))
           RETURNING id, inference_id, productid, true_code, predicted_code, model_version, submitted_by,
                     note, created_at, request_id""",
        (inference_id, request_id, productid, true_code, predicted_code, model_version, submitted_by, note,
         inference_id, inference_id),
    )


# --- the labelling queue (ops/labelling.py ranks what these return) ---------------------------------
# Two lists of one prediction per product (per productid, or per title + description when there
# is none), each in one total order, the same for the product's representative and for the rank
# (labelling_pool.py merges days' lists with these orders: a product in a window's top N is then
# in its own day's top N):
#   'c' the least confident: its least confident prediction, by (confidence, newest, id)
#   'o' the most out-of-vocabulary: its prediction with the largest share of unknown tokens
#       (n_oov / n_tokens > 0), by (that share descending, then the 'c' order)
CANDIDATE_ORDERS = {"c": "confidence, logged_at DESC, inference_id",
                    "o": "oov DESC, confidence, logged_at DESC, inference_id"}
_CANDIDATE_COLUMNS = "inference_id, logged_at, request_id, productid, product_key, confidence, oov"
# labelled texts: a prediction with no productid is labelled when a label names a prediction of
# the same title + description in the window [%(ls)s, %(le)s]
def _text_key(alias: str) -> str:
    """The product key of a prediction with no productid: its text (labelling_candidates.product_key)."""
    return f"md5({alias}.designation || E'\\n' || {alias}.description)"


def _product_key(alias: str) -> str:
    """What a logged prediction is about: its product, else its text (labelling_candidates.product_key)."""
    return f"CASE WHEN {alias}.productid IS NOT NULL THEN 'p' || {alias}.productid::text ELSE {_text_key(alias)} END"


_LABELLED_TEXTS = f"""labelled_texts AS (
               SELECT {_text_key("j")} AS k
               FROM feedback f JOIN inference_log j ON j.id = f.inference_id AND j.logged_at = f.inference_logged_at
               WHERE f.productid IS NULL AND f.inference_logged_at >= %(ls)s AND f.inference_logged_at <= %(le)s
                 AND j.logged_at >= %(ls)s AND j.logged_at <= %(le)s)"""


def labelling_candidate_lists(conn, lo, hi, pool: int, *, lo_incl: bool = True, hi_incl: bool = True,
                              labels_lo=None, labels_hi=None) -> list[dict]:
    """The two candidate lists (CANDIDATE_ORDERS) of the unlabelled served predictions logged in
    one range [lo, hi] (bounds as lo_incl / hi_incl say), the first `pool` of each, in no order
    (labelling_pool ranks them): rows {list, inference_id, logged_at, request_id, productid, product_key, confidence, oov}.
    A prediction is labelled when a feedback row is tied to it (inference_id), names its product,
    or is tied to a prediction of the same text in [labels_lo, labels_hi] (default: the range).
    Not by request_id: every label stores its prediction's, and a client that reused its
    X-Request-ID would have one label hide the predictions of other products; a label given by
    request_id is tied to its prediction when recorded, or once it is logged
    (resolve_pending_feedback, in the serving writer's transaction).

    The logged_at bounds prune the partitions; each list is a top-N (no full ordering), and no
    long text column is returned."""
    return _all(
        conn,
        f"""WITH {_LABELLED_TEXTS}, y AS (
               SELECT * FROM (
                   SELECT i.id AS inference_id, i.logged_at, i.request_id, i.productid, i.confidence,
                          CASE WHEN i.n_tokens > 0 AND i.n_oov IS NOT NULL
                               THEN i.n_oov::float8 / i.n_tokens END AS oov,
                          {_product_key("i")} AS product_key
                   FROM (SELECT * FROM inference_log WHERE {_range_sql(lo_incl, hi_incl)}) i
                   WHERE NOT EXISTS (SELECT 1 FROM feedback f WHERE f.inference_id = i.id)
                     AND (i.productid IS NULL
                          OR NOT EXISTS (SELECT 1 FROM feedback f WHERE f.productid = i.productid))) x
               WHERE product_key NOT IN (SELECT k FROM labelled_texts)
           ), c AS (
               SELECT DISTINCT ON (product_key) {_CANDIDATE_COLUMNS} FROM y
               ORDER BY product_key, {CANDIDATE_ORDERS["c"]}
           ), o AS (
               SELECT DISTINCT ON (product_key) {_CANDIDATE_COLUMNS} FROM y WHERE oov > 0
               ORDER BY product_key, {CANDIDATE_ORDERS["o"]}
           )
           (SELECT 'c' AS list, {_CANDIDATE_COLUMNS} FROM c
            ORDER BY {CANDIDATE_ORDERS["c"]} LIMIT %(pool)s)
           UNION ALL
           (SELECT 'o', {_CANDIDATE_COLUMNS} FROM o
            ORDER BY {CANDIDATE_ORDERS["o"]} LIMIT %(pool)s)""",
        {"lo": lo, "hi": hi, "pool": int(pool),
         "ls": lo if labels_lo is None else labels_lo, "le": hi if labels_hi is None else labels_hi},
    )


def labelling_days_state(conn, days: Sequence) -> dict:
    """{day: {n_rows, max_id, pool, n_c, n_o, computed_at, late}} of the days whose candidate lists
    are stored;
    `late`: a row of the day with an id above max_id arrived since (the lists are stale)."""
    rows = _all(conn, """SELECT day, n_rows, max_id, pool, n_c, n_o, computed_at FROM labelling_candidate_days
                         WHERE day = ANY(%s::date[])""", (list(days),))
    now = day_max_ids(conn, [r["day"] for r in rows])
    for r in rows:
        m = now.get(r["day"])
        r["late"] = m is not None and (r["max_id"] is None or m > r["max_id"])
    return {r["day"]: r for r in rows}


def max_feedback_id(conn) -> int | None:
    return _scalar(conn, "SELECT max(id) FROM feedback")


def replace_labelling_day(conn, day, *, n_rows: int, max_id: int | None, pool: int, rows: Sequence[dict],
                          feedback_id: int | None = None, pipeline_run_id: int | None = None) -> None:
    """Store (replacing) one day's candidate lists (rows as labelling_candidate_lists returns, each
    with its rank in its list); feedback_id: the newest label when they were computed (read
    before: a later one is looked at by labelling_days_worn)."""
    from psycopg2.extras import execute_values

    n = {name: sum(1 for r in rows if r["list"] == name) for name in CANDIDATE_ORDERS}
    _exec(conn, "DELETE FROM labelling_candidate_days WHERE day = %s", (day,))
    _exec(conn, """INSERT INTO labelling_candidate_days (day, n_rows, max_id, pool, n_c, n_o, feedback_id,
                                                         pipeline_run_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
          (day, int(n_rows), max_id, int(pool), n["c"], n["o"], feedback_id, pipeline_run_id))
    if rows:
        with conn.cursor() as cur:
            execute_values(
                cur, f"INSERT INTO labelling_candidates (day, list, rank, {_CANDIDATE_COLUMNS}) VALUES %s",
                [(day, r["list"], int(r["rank"]), r["inference_id"], r["logged_at"], r["request_id"],
                  r["productid"], r["product_key"], r["confidence"], r["oov"]) for r in rows], page_size=2000)


def labelling_days_worn(conn, days: Sequence, worn_at: int) -> list:
    """The days (of `days` with stored lists) whose lists labels given since they were computed
    have worn: `worn_at` entries or more of one list labelled, or one entry labelled while its
    product was not (a label naming the prediction or its request alone, where the product's next
    prediction would take its place): the queue would read on, or scan the day, until they are
    stored again. Read from the labels since (few), a seq scan of the days' entries."""
    # the labels after the oldest day's lists: one older than a day's lists was applied to them,
    # but for a text label of another day's prediction, counted too (the day stored again early)
    return [r["day"] for r in _all(
        conn,
        f"""WITH h AS (SELECT day, coalesce(feedback_id, 0) AS fid FROM labelling_candidate_days
                      WHERE day = ANY(%(days)s::date[])),
                nf AS (SELECT f.id, f.inference_id, f.request_id, f.productid,
                              CASE WHEN f.productid IS NULL THEN {_text_key("j")} END AS text_key
                       FROM feedback f
                       LEFT JOIN inference_log j ON j.id = f.inference_id AND j.logged_at = f.inference_logged_at
                       WHERE f.id > (SELECT coalesce(min(fid), 0) FROM h)),
                hit AS (SELECT c.day, c.list,
                               c.inference_id IN (SELECT inference_id FROM nf WHERE inference_id IS NOT NULL) AS by_row,
                               CASE WHEN c.productid IS NOT NULL
                                    THEN c.productid IN (SELECT productid FROM nf WHERE productid IS NOT NULL)
                                    ELSE c.product_key IN (SELECT text_key FROM nf WHERE text_key IS NOT NULL)
                               END AS by_product
                        FROM labelling_candidates c JOIN h ON h.day = c.day
                        WHERE EXISTS (SELECT 1 FROM nf)),
                per AS (SELECT day, list, count(*) AS n, bool_or(by_row AND NOT by_product) AS gap
                        FROM hit WHERE by_row OR by_product GROUP BY day, list)
           SELECT day FROM per GROUP BY day HAVING bool_or(gap) OR max(n) >= %(worn)s ORDER BY day""",
        {"days": list(days), "worn": int(worn_at)})]


def mark_labelling_day_stale(conn, day) -> None:
    """Forget the lists' max_id: the queue scans the day until the next rollup computes them again."""
    _exec(conn, "UPDATE labelling_candidate_days SET max_id = NULL WHERE day = %s", (day,))


def stored_labelling_candidates(conn, ranges: dict, labels_lo, labels_hi) -> list[dict]:
    """The stored entries {(day, list): (lo, hi]} of rank, each with its lists' computed_at and
    what is known of it now:
    `row_labelled` (a label is tied to the prediction) and `product_labelled` (a label
    names its product, or a prediction of its text in [labels_lo, labels_hi])."""
    if not ranges:
        return []
    keys = list(ranges)
    return _all(
        conn,
        f"""WITH {_LABELLED_TEXTS}
            SELECT c.day, c.list, c.rank, {", ".join("c." + k for k in _CANDIDATE_COLUMNS.split(", "))},
                   h.computed_at,
                   EXISTS (SELECT 1 FROM feedback f WHERE f.inference_id = c.inference_id) AS row_labelled,
                   CASE WHEN c.productid IS NOT NULL
                        THEN EXISTS (SELECT 1 FROM feedback f WHERE f.productid = c.productid)
                        ELSE c.product_key IN (SELECT k FROM labelled_texts) END AS product_labelled
            FROM unnest(%(days)s::date[], %(lists)s::char(1)[], %(los)s::int[], %(his)s::int[]) AS q(day, list, lo, hi)
            JOIN labelling_candidates c ON c.day = q.day AND c.list = q.list AND c.rank > q.lo AND c.rank <= q.hi
            JOIN labelling_candidate_days h ON h.day = c.day
            ORDER BY c.day, c.list, c.rank""",
        {"ls": labels_lo, "le": labels_hi, "days": [k[0] for k in keys], "lists": [k[1] for k in keys],
         "los": [int(ranges[k][0]) for k in keys], "his": [int(ranges[k][1]) for k in keys]},
    )


def inference_rows_for_labelling(conn, keys: Sequence[tuple]) -> list[dict]:
    """The logged predictions (inference_id, logged_at) the labelling queue scores, with their
    texts, least confident first.

    One primary-key probe per key, in its own partition: as a plain join the planner, unable to
    estimate the keys, merges them with every partition's rows (the whole log read for 1,000 rows)."""
    if not keys:
        return []
    return _all(
        conn,
        """SELECT i.id AS inference_id, i.logged_at, i.request_id, i.source, i.model_version, i.productid,
                  i.designation, i.description, i.n_tokens, i.n_oov, i.predicted_code, i.confidence
           FROM unnest(%s::bigint[], %s::timestamptz[]) AS k(id, logged_at)
           CROSS JOIN LATERAL (SELECT * FROM inference_log j WHERE j.id = k.id AND j.logged_at = k.logged_at
                               LIMIT 1) i
           ORDER BY i.confidence, i.id""",
        ([int(k[0]) for k in keys], [k[1] for k in keys]),
    )


def latest_ok_drift_report(conn) -> dict | None:
    """The newest drift report with scores (status ok), details included."""
    return _one(conn, f"SELECT {DRIFT_REPORT_COLUMNS} FROM drift_reports WHERE status = 'ok' "
                      "ORDER BY as_of DESC, id DESC LIMIT 1")


EXPORT_INFERENCE_COLUMNS = ("id",) + INFERENCE_COLUMNS


def export_inference_log(conn, out, since=None) -> int:
    """COPY inference_log rows logged at or after `since` (all when None), oldest first, as CSV
    with a header into the text file object `out`; returns the number of rows."""
    sql = (f"COPY (SELECT {', '.join(EXPORT_INFERENCE_COLUMNS)} FROM inference_log "
           "WHERE logged_at >= {since} ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true)")
    with conn.cursor() as cur:
        since_sql = cur.mogrify("%s::timestamptz", (since,)).decode() if since is not None else "'-infinity'"
        cur.copy_expert(sql.format(since=since_sql), out)
        return cur.rowcount


def ping(conn) -> bool:
    """True when the database answers (for /health)."""
    return _scalar(conn, "SELECT 1") == 1


def count_inference_rows(conn) -> int:
    return _scalar(conn, "SELECT count(*) FROM inference_log")


def insert_api_audit(conn, *, actor: str, authenticated: bool, method: str, route: str, path: str,
                     params: dict | None, status_code: int, detail: str | None = None,
                     pipeline_run_id: int | None = None, client: str | None = None,
                     duration_ms: float | None = None, role: str | None = None) -> int:
    return _scalar(
        conn,
        """INSERT INTO api_audit (actor, authenticated, method, route, path, params, status_code,
                                  detail, pipeline_run_id, client, duration_ms, role)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (actor, authenticated, method, route, path,
         Json(params or {}, dumps=lambda o: json.dumps(o, default=str)), status_code, detail,
         pipeline_run_id, client, duration_ms, role),
    )


# === identities: API tokens and control room sign-ins (sql/013_access.sql) ====================
def insert_api_token(conn, *, name: str, role: str, token_sha256: str, created_by: str,
                     note: str | None = None) -> dict:
    return _one(
        conn,
        """INSERT INTO api_tokens (name, role, token_sha256, created_by, note)
           VALUES (%s, %s, %s, %s, %s)
           RETURNING id, name, role, note, created_at, created_by""",
        (name, role, token_sha256, created_by, note),
    )


def use_api_token(conn, token_sha256: str) -> dict | None:
    """The active token with this hash (name, role), its last use stamped; None when unknown or
    revoked. The stamp is written at most once a minute per token."""
    row = _one(conn, "SELECT id, name, role, last_used_at FROM api_tokens "
                     "WHERE token_sha256 = %s AND revoked_at IS NULL", (token_sha256,))
    if row is not None:
        _exec(conn, "UPDATE api_tokens SET last_used_at = clock_timestamp() WHERE id = %s AND "
                    "(last_used_at IS NULL OR last_used_at < clock_timestamp() - interval '1 minute')",
              (row["id"],))
    return row


def has_active_api_token(conn) -> bool:
    return bool(_scalar(conn, "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE revoked_at IS NULL)"))


def list_api_tokens(conn, include_revoked: bool = False) -> list[dict]:
    return _all(
        conn,
        """SELECT id, name, role, note, created_at, created_by, last_used_at, revoked_at, revoked_by
           FROM api_tokens WHERE %(all)s OR revoked_at IS NULL ORDER BY name, id""",
        {"all": include_revoked},
    )


def revoke_api_token(conn, name: str, revoked_by: str) -> dict | None:
    return _one(
        conn,
        """UPDATE api_tokens SET revoked_at = clock_timestamp(), revoked_by = %s
           WHERE name = %s AND revoked_at IS NULL RETURNING id, name, role, revoked_at, revoked_by""",
        (revoked_by, name),
    )


def insert_ui_user_change(conn, *, name: str, change: str, role_before: str | None, role: str | None,
                          password_changed: bool, users_file: str, actor: str, triggered_by: str) -> int:
    """A control room user added, changed or removed (migration 019)."""
    return _scalar(
        conn,
        """INSERT INTO ui_user_changes (name, change, role_before, role, password_changed, users_file, actor,
                                        triggered_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (name, change, role_before, role, password_changed, users_file, actor, triggered_by),
    )


def ui_user_changes(conn, limit: int = 100) -> list[dict]:
    """The latest changes of control room users, newest first."""
    return _all(conn, "SELECT * FROM ui_user_changes ORDER BY at DESC, id DESC LIMIT %s", (int(limit),))


def insert_ui_sign_in(conn, *, name: str, method: str, ok: bool, role: str | None = None,
                      reason: str | None = None, client: str | None = None) -> int:
    return _scalar(
        conn,
        "INSERT INTO ui_sign_ins (name, method, ok, role, reason, client) VALUES (%s, %s, %s, %s, %s, %s) "
        "RETURNING id",
        (name, method, ok, role, reason, client),
    )


EVERY_CLIENT = object()  # failed_sign_ins_since_success: the name's attempts from anywhere


def failed_sign_ins_since_success(conn, name: str, within_seconds: float, client=EVERY_CLIENT) -> tuple[int, Any]:
    """(refused sign-ins of `name` from `client` (an address, None: unknown; EVERY_CLIENT: from
    anywhere) since its last successful one from there, within the last `within_seconds`; the time
    of the latest of them). Attempts refused during a pause ('throttled') do not count: whoever
    keeps trying cannot make the pause longer."""
    every = client is EVERY_CLIENT
    row = _one(
        conn,
        """SELECT count(*) AS n, max(at) AS latest FROM ui_sign_ins
           WHERE name = %(name)s AND NOT ok AND reason IS DISTINCT FROM 'throttled'
             AND (%(every)s OR client IS NOT DISTINCT FROM %(client)s)
             AND at > clock_timestamp() - make_interval(secs => %(within)s)
             AND at > coalesce((SELECT max(at) FROM ui_sign_ins WHERE name = %(name)s AND ok
                                  AND (%(every)s OR client IS NOT DISTINCT FROM %(client)s)), '-infinity')""",
        {"name": name, "within": float(within_seconds), "every": every, "client": None if every else client},
    )
    return int(row["n"]), row["latest"]


def lock_ui_users(conn) -> None:
    """One change of the control room's users file at a time (until the transaction ends)."""
    _scalar(conn, "SELECT pg_advisory_xact_lock(hashtext('ui-users'))")


def lock_thresholds(conn) -> None:
    """One change of the drift thresholds at a time (until the transaction ends): a partial change
    is merged with the values in force, read under it."""
    _scalar(conn, "SELECT pg_advisory_xact_lock(hashtext('drift-thresholds'))")


def lock_sign_in(conn, name: str) -> None:
    """One sign-in attempt of `name` at a time (until the transaction ends): the throttle's count
    is read and the attempt recorded under it."""
    _scalar(conn, "SELECT pg_advisory_xact_lock(hashtext('ui-sign-in:' || %s))", (name,))


def database_now(conn):
    return _scalar(conn, "SELECT clock_timestamp()")


def list_ui_sign_ins(conn, limit: int = 100) -> list[dict]:
    return _all(conn, "SELECT * FROM ui_sign_ins ORDER BY id DESC LIMIT %s", (limit,))


def list_api_audit(conn, limit: int = 100, route: str | None = None) -> list[dict]:
    return _all(
        conn,
        """SELECT * FROM api_audit WHERE (%(route)s::text IS NULL OR route = %(route)s)
           ORDER BY id DESC LIMIT %(limit)s""",
        {"route": route, "limit": limit},
    )


# === drift and alerts ===========================================================================
# model_references, drift_reports, alerts, alert_actions, app_settings (sql/005_drift.sql), the
# window aggregates read by the drift check, and the simulator's bulk inserts.
def _jsonb(value: Any) -> Json:
    """JSONB parameter: NaN/inf -> null, numpy scalars and datetimes made plain (jsonvalues.jsonable)."""
    return Json(jsonable(value))


def insert_model_reference(conn, *, model_name: str, model_version: str, mlflow_run_id: str | None,
                           summary: dict) -> int:
    """Store (or replace) the drift reference of a model version; returns its id."""
    return _scalar(
        conn,
        """INSERT INTO model_references (model_name, model_version, mlflow_run_id, summary)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (model_name, model_version) DO UPDATE
             SET mlflow_run_id = EXCLUDED.mlflow_run_id, summary = EXCLUDED.summary, created_at = now()
           RETURNING id""",
        (model_name, str(model_version), mlflow_run_id, _jsonb(summary)),
    )


def referenced_versions(conn, model_name: str) -> set[str]:
    """The versions of `model_name` the database knows: evaluated or given a drift reference (a
    train step records both in its transaction; orphan_versions.py sweeps the others)."""
    rows = _all(
        conn,
        """SELECT model_version FROM model_references WHERE model_name = %(m)s
           UNION SELECT model_version FROM model_evaluations WHERE model_name = %(m)s""",
        {"m": model_name},
    )
    return {r["model_version"] for r in rows}


def get_model_reference(conn, model_name: str, model_version: str) -> dict | None:
    return _one(
        conn,
        """SELECT id, model_name, model_version, mlflow_run_id, summary, created_at
           FROM model_references WHERE model_name = %s AND model_version = %s""",
        (model_name, str(model_version)),
    )


# the grouping sets of inference_window_aggregates, in GROUPING() argument order
_WINDOW_SETS = ("predicted_code", "script", "lang", "model_version", "title_length",
                "description_length", "n_tokens", "confidence")


def inference_window_aggregates(conn, end, windows: Sequence[int], edges: dict[str, list[float]], *,
                                prediction_version: str | None = None) -> dict:
    """Counts of the inference_log rows of each window (end - days, end], in one scan of the longest.

    `edges`: the inner bin edges (ascending, without the infinite ends) of title_length,
    description_length, n_tokens and confidence; bins are numbered like stats.histogram (0 = below
    the first edge). Returns {"by_feature": [{feature, key, counts: {days: n}}] for every
    predicted_code / script / lang / model_version / bin, "totals": {days: {n, n_empty (empty
    descriptions), oov_sum, oov_tokens (sum of n_tokens where n_oov is known), oov_rows}}}.

    Reads only the narrow covering index inference_log_drift (index-only scan), the counts in
    one hashed GROUPING SETS pass with one FILTERed count per window, the totals in a second,
    parallel, plain aggregate: ~1-2 s for 10^6 rows on 2 cores.
    """
    windows = sorted({int(d) for d in windows})
    params: dict = {"end": end, "start": end - _days(windows[-1]),
                    "title": list(edges["title_length"]), "desc": list(edges["description_length"]),
                    "tok": list(edges["n_tokens"]), "conf": list(edges["confidence"]),
                    "pv": prediction_version}
    for d in windows:
        params[f"s{d}"] = end - _days(d)
    # p_<d>: the rows of prediction_version only (all rows when None), for predicted_code / confidence
    counts = ", ".join(f"count(*) FILTER (WHERE logged_at > %(s{d})s) AS n_{d}, "
                       f"count(*) FILTER (WHERE logged_at > %(s{d})s AND (%(pv)s::text IS NULL "
                       f"OR model_version = %(pv)s::text)) AS p_{d}" for d in windows)
    rows = _all(
        conn,
        f"""SELECT GROUPING(predicted_code, script, lang, model_version, b_title, b_desc, b_tok, b_conf) AS g,
                   predicted_code, script, lang, model_version, b_title, b_desc, b_tok, b_conf, {counts}
            FROM (SELECT logged_at, predicted_code, script, lang, model_version,
                         width_bucket(designation_len::float8, %(title)s::float8[]) AS b_title,
                         width_bucket(description_len::float8, %(desc)s::float8[]) AS b_desc,
                         width_bucket(n_tokens::float8, %(tok)s::float8[]) AS b_tok,
                         width_bucket(confidence, %(conf)s::float8[]) AS b_conf
                  FROM inference_log
                  WHERE logged_at > %(start)s AND logged_at <= %(end)s) w
            GROUP BY GROUPING SETS ((predicted_code), (script), (lang), (model_version), (b_title),
                                    (b_desc), (b_tok), (b_conf))""",
        params,
    )
    columns = ("predicted_code", "script", "lang", "model_version", "b_title", "b_desc", "b_tok", "b_conf")
    n_sets = len(_WINDOW_SETS)
    by_feature = []
    for r in rows:
        g = int(r["g"])
        i = next(i for i in range(n_sets) if not g & (1 << (n_sets - 1 - i)))
        feature = _WINDOW_SETS[i]
        col = "p" if feature in ("predicted_code", "confidence") else "n"
        by_feature.append({"feature": feature, "key": r[columns[i]],
                           "counts": {d: int(r[f"{col}_{d}"]) for d in windows}})
    totals_sql = ", ".join(
        f"""count(*) FILTER (WHERE logged_at > %(s{d})s) AS n_{d},
            count(*) FILTER (WHERE logged_at > %(s{d})s AND description_len = 0) AS n_empty_{d},
            coalesce(sum(n_oov) FILTER (WHERE logged_at > %(s{d})s), 0) AS oov_sum_{d},
            coalesce(sum(n_tokens) FILTER (WHERE logged_at > %(s{d})s AND n_oov IS NOT NULL), 0) AS oov_tokens_{d},
            count(n_oov) FILTER (WHERE logged_at > %(s{d})s) AS oov_rows_{d}""" for d in windows)
    tot = _one(conn, f"SELECT {totals_sql} FROM inference_log WHERE logged_at > %(start)s AND logged_at <= %(end)s",
               params)
    totals = {d: {k: int(tot[f"{k}_{d}"]) for k in ("n", "n_empty", "oov_sum", "oov_tokens", "oov_rows")}
              for d in windows}
    return {"by_feature": by_feature, "totals": totals}


def _days(n: int):
    from datetime import timedelta

    return timedelta(days=int(n))


def recent_titles(conn, start, end, limit: int) -> list[str]:
    """The designations of the newest `limit` predictions with start < logged_at <= end."""
    rows = _all(
        conn,
        """SELECT designation FROM inference_log WHERE logged_at > %s AND logged_at <= %s
           ORDER BY logged_at DESC LIMIT %s""",
        (start, end, int(limit)),
    )
    return [r["designation"] for r in rows]


def window_model_versions(conn, start, end) -> list[dict]:
    """[{model_version, n}] of the predictions in the window, most frequent first."""
    return _all(
        conn,
        """SELECT model_version, count(*) AS n FROM inference_log
           WHERE logged_at > %s AND logged_at <= %s GROUP BY model_version ORDER BY n DESC""",
        (start, end),
    )


# "The latest label wins" wherever labels are read (training, the realized F1 and the performance
# estimate of drift, shadow scoring): the label given last (feedback.created_at), ties (labels of
# one transaction) by id. One ordering, so that the label a model trains on is the label it is
# scored against. The training's index feedback_product is in this order.
def latest_label_first(alias: str = "") -> str:
    """The ORDER BY terms that put the latest label first (of feedback `alias`)."""
    a = f"{alias}." if alias else ""
    return f"{a}created_at DESC, {a}id DESC"


def window_feedback_pairs(conn, start, end, version: str | None = None,
                          unpicked_only: bool = False) -> list[tuple[int, int, int]]:
    """(true_code, predicted_code, count) over the window's predictions that got feedback.

    Feedback is matched to its prediction by inference_id (the latest feedback row of each
    prediction counts); the prediction's logged_at places it in the window. version: only the
    predictions of that model version (the feedback row carries it, copied from the prediction).
    unpicked_only: leave out the predictions the labelling queue offered before that label
    (labelling_offers): the queue picks likely errors, not a sample of the traffic.
    """
    with conn.cursor() as cur:
        cur.execute(
            # Feedback carries its prediction's logged_at and predicted code (copied when it is
            # tied to it): the window's labels are read from feedback alone, at a cost that follows
            # the number of labels, not of predictions; the log is read (one partition, by its
            # primary key) only for a label whose predicted code was not copied.
            f"""SELECT true_code, predicted_code, count(*) FROM (
                   SELECT DISTINCT ON (f.inference_id) f.inference_id, f.created_at, f.true_code,
                          -- a scalar subquery (never turned into a join over the window's rows),
                          -- evaluated only when the code was not copied
                          coalesce(f.predicted_code,
                                   (SELECT i.predicted_code FROM inference_log i
                                    WHERE i.id = f.inference_id AND i.logged_at = f.inference_logged_at)) AS predicted_code
                   FROM feedback f
                   WHERE f.inference_id IS NOT NULL
                     AND f.inference_logged_at > %(s)s AND f.inference_logged_at <= %(e)s
                     AND (%(v)s::text IS NULL OR f.model_version = %(v)s::text)
                   ORDER BY f.inference_id, {latest_label_first("f")}) x
               WHERE predicted_code IS NOT NULL
                 AND NOT (%(unpicked)s AND EXISTS (SELECT 1 FROM labelling_offers o
                                                   WHERE o.inference_id = x.inference_id
                                                     AND o.offered_at <= x.created_at))
               GROUP BY 1, 2""",
            {"s": start, "e": end, "v": version, "unpicked": bool(unpicked_only)},
        )
        return [(int(a), int(b), int(n)) for a, b, n in cur.fetchall()]


def record_labelling_offers(conn, inference_ids: Sequence[int], offered_to: str) -> None:
    """The predictions the labelling queue offered to `offered_to` (the first offer of each is kept)."""
    if inference_ids:
        _exec(conn, """INSERT INTO labelling_offers (inference_id, offered_to) SELECT unnest(%s::bigint[]), %s
                       ON CONFLICT (inference_id) DO NOTHING""", (list(map(int, inference_ids)), offered_to))


def prune_labelling_offers(conn, before) -> int:
    """Drop the offers made before `before` (their predictions are gone with retention)."""
    return _exec(conn, "DELETE FROM labelling_offers WHERE offered_at < %s", (before,))


def products_loaded_between(conn, start, end, limit: int) -> list[dict]:
    """Labelled catalogue rows loaded in the window, newest first (at most `limit`)."""
    return _all(
        conn,
        """SELECT productid, designation, description, prdtypecode, loaded_at FROM products
           WHERE loaded_at > %s AND loaded_at <= %s AND source = 'catalogue'
           ORDER BY loaded_at DESC, productid LIMIT %s""",
        (start, end, int(limit)),
    )


# the label-free performance estimate of a report (migration 012, performance_estimate.py)
ESTIMATE_COLUMNS = ("estimated_weighted_f1", "estimated_f1_low", "estimated_f1_high", "reference_estimated_f1",
                    "estimated_performance_drift_score", "realized_weighted_f1", "realized_n",
                    "realized_estimated_f1")
DRIFT_REPORT_COLUMNS = (
    "id, report_date, data_drift_score, prediction_drift_score, performance_drift_score, drift_detected, "
    "details, created_at, window_days, as_of, model_version, n_inferences, n_feedback, status, level, "
    "pipeline_run_id, " + ", ".join(ESTIMATE_COLUMNS)
)


def insert_drift_report(conn, *, pipeline_run_id: int | None, report_date, window_days: int, as_of,
                        model_version: str | None, n_inferences: int, n_feedback: int, status: str,
                        level: str, data_drift_score: float | None, prediction_drift_score: float | None,
                        performance_drift_score: float | None, drift_detected: bool, details: dict,
                        **more) -> int:
    """`more`: the performance estimate's columns (ESTIMATE_COLUMNS; missing: NULL, realized_n 0);
    other keys are ignored."""
    estimate = [more.get(c, 0 if c == "realized_n" else None) for c in ESTIMATE_COLUMNS]
    return _scalar(
        conn,
        f"""INSERT INTO drift_reports (report_date, data_drift_score, prediction_drift_score,
               performance_drift_score, drift_detected, details, window_days, as_of, model_version,
               n_inferences, n_feedback, status, level, pipeline_run_id, {", ".join(ESTIMATE_COLUMNS)})
           VALUES ({", ".join(["%s"] * (14 + len(ESTIMATE_COLUMNS)))}) RETURNING id""",
        (report_date, data_drift_score, prediction_drift_score, performance_drift_score, drift_detected,
         _jsonb(details), window_days, as_of, model_version, n_inferences, n_feedback, status, level,
         pipeline_run_id, *estimate),
    )


def get_drift_report(conn, report_id: int) -> dict | None:
    return _one(conn, f"SELECT {DRIFT_REPORT_COLUMNS} FROM drift_reports WHERE id = %s", (report_id,))


def drift_reports_for_run(conn, pipeline_run_id: int) -> list[dict]:
    return _all(
        conn,
        f"SELECT {DRIFT_REPORT_COLUMNS} FROM drift_reports WHERE pipeline_run_id = %s ORDER BY window_days, id",
        (pipeline_run_id,),
    )


def list_drift_reports(conn, *, limit: int = 100, window_days: int | None = None) -> list[dict]:
    return _all(
        conn,
        f"""SELECT {DRIFT_REPORT_COLUMNS} FROM drift_reports
            WHERE (%(w)s::int IS NULL OR window_days = %(w)s) ORDER BY id DESC LIMIT %(limit)s""",
        {"w": window_days, "limit": limit},
    )


def drift_score_history(conn, *, days: int = 90, window_days: int | None = None) -> list[dict]:
    """Scores and levels of the reports of the last `days` days, oldest first, no details."""
    return _all(
        conn,
        f"""SELECT id, report_date, as_of, window_days, status, level, drift_detected, data_drift_score,
                  prediction_drift_score, performance_drift_score, n_inferences, n_feedback, model_version,
                  pipeline_run_id, {", ".join(ESTIMATE_COLUMNS)}
           FROM drift_reports
           WHERE as_of > now() - make_interval(days => %(days)s)
             AND (%(w)s::int IS NULL OR window_days = %(w)s)
           ORDER BY as_of, window_days, id""",
        {"days": int(days), "w": window_days},
    )


ALERT_COLUMNS = ("id, level, cause, status, report_id, first_seen, last_seen, count, last_notified_at, "
                 "message, resolved_at, details")


def active_alert(conn, cause: str) -> dict | None:
    """The open or acknowledged alert of `cause` (at most one), locked for update."""
    return _one(
        conn,
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE cause = %s AND status <> 'resolved' FOR UPDATE",
        (cause,),
    )


def newest_alert_id(conn, cause: str) -> int | None:
    return _scalar(conn, "SELECT max(id) FROM alerts WHERE cause = %s", (cause,))


def alerts_owing_resolution(conn, cause: str, days: float) -> list[dict]:
    """The resolved alerts of `cause`, resolved within `days`, whose resolution failed on a
    channel (details.resolution_undelivered), locked for update."""
    return _all(
        conn,
        f"""SELECT {ALERT_COLUMNS} FROM alerts WHERE cause = %s AND status = 'resolved'
              AND details ? 'resolution_undelivered' AND resolved_at >= now() - make_interval(secs => %s)
            ORDER BY id FOR UPDATE""",
        (cause, float(days) * 86400),
    )


def active_alerts(conn) -> list[dict]:
    return _all(conn, f"SELECT {ALERT_COLUMNS} FROM alerts WHERE status <> 'resolved' ORDER BY id FOR UPDATE")


def insert_alert(conn, *, level: str, cause: str, report_id: int | None, message: str, details: dict,
                 notified: bool) -> int:
    return _scalar(
        conn,
        """INSERT INTO alerts (level, cause, report_id, message, details, last_notified_at)
           VALUES (%s, %s, %s, %s, %s, CASE WHEN %s THEN now() END) RETURNING id""",
        (level, cause, report_id, message, _jsonb(details), notified),
    )


def update_alert(conn, alert_id: int, **cols) -> None:
    """Set the given columns; special values: count='+1', last_seen/last_notified_at/resolved_at='now'."""
    sets, params = [], []
    for col, value in cols.items():
        if col not in ("level", "status", "report_id", "count", "last_seen", "last_notified_at", "message",
                       "resolved_at", "details"):
            raise ValueError(col)
        if col == "count" and value == "+1":
            sets.append("count = count + 1")
        elif col in ("last_seen", "last_notified_at", "resolved_at") and value == "now":
            sets.append(f"{col} = now()")
        else:
            sets.append(f"{col} = %s")
            params.append(_jsonb(value) if col == "details" else value)
    if not sets:
        return
    params.append(alert_id)
    _exec(conn, f"UPDATE alerts SET {', '.join(sets)} WHERE id = %s", params)


def get_alert(conn, alert_id: int, *, for_update: bool = False) -> dict | None:
    """for_update: locked until the transaction ends (waits for the alert step, which holds an
    alert it notifies about, and reads the row as that step left it)."""
    return _one(conn, f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = %s{' FOR UPDATE' if for_update else ''}",
                (alert_id,))


def list_alerts(conn, status: str | None = None, limit: int = 100) -> list[dict]:
    return _all(
        conn,
        f"""SELECT {ALERT_COLUMNS} FROM alerts WHERE (%(status)s::text IS NULL OR status = %(status)s)
            ORDER BY (status = 'resolved'), last_seen DESC, id DESC LIMIT %(limit)s""",
        {"status": status, "limit": limit},
    )


def insert_alert_action(conn, *, alert_id: int | None, action: str, actor: str, note: str | None,
                        params: dict | None) -> int:
    return _scalar(
        conn,
        """INSERT INTO alert_actions (alert_id, action, actor, note, params) VALUES (%s, %s, %s, %s, %s)
           RETURNING id""",
        (alert_id, action, actor, note, _jsonb(params or {})),
    )


def list_alert_actions(conn, alert_id: int | None = None, limit: int = 100) -> list[dict]:
    return _all(
        conn,
        """SELECT id, alert_id, action, actor, note, params, created_at FROM alert_actions
           WHERE (%(a)s::bigint IS NULL OR alert_id = %(a)s) ORDER BY id DESC LIMIT %(limit)s""",
        {"a": alert_id, "limit": limit},
    )


def get_app_settings(conn, keys: Sequence[str]) -> dict[str, dict]:
    """{key: {key, value, updated_by, updated_at}} for the keys that are set."""
    rows = _all(conn, "SELECT key, value, updated_by, updated_at FROM app_settings WHERE key = ANY(%s)",
                (list(keys),))
    return {r["key"]: r for r in rows}


def upsert_app_setting(conn, key: str, value: Any, updated_by: str | None) -> None:
    _exec(
        conn,
        """INSERT INTO app_settings (key, value, updated_by) VALUES (%s, %s, %s)
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by,
                                          updated_at = now()""",
        (key, _jsonb(value), updated_by),
    )


def delete_app_settings(conn, keys: Sequence[str]) -> int:
    return _exec(conn, "DELETE FROM app_settings WHERE key = ANY(%s)", (list(keys),))


def _sim_field(value: Any) -> str:
    """One field in COPY text format (simulated rows: text, numbers, NULL)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return _copy_text(value.replace("\x00", ""))
    if isinstance(value, (dict, list)):  # top_k
        return _copy_text(json.dumps(value))
    return str(value)


SIMULATED_STATIC_COLUMNS = (
    "source", "model_version", "productid", "designation", "description", "designation_len",
    "description_len", "n_tokens", "n_oov", "script", "lang", "predicted_code", "confidence", "top_k",
)


def copy_repeated_inferences(conn, templates: Sequence[dict], index: Sequence[int], logged_at: Sequence[str],
                             request_ids: Sequence[str], chunk: int = 100_000) -> int:
    """Bulk-write inference_log rows that repeat a few templates (the traffic simulator's path for
    10^5-10^6 rows): row i is templates[index[i]] (keys SIMULATED_STATIC_COLUMNS) logged at
    logged_at[i] (ISO text) with request_ids[i]. Each template is encoded once; one COPY per chunk."""
    if len(logged_at):  # bulk rows of past days get their day partitions, not the default one
        from datetime import date as _date

        first, last = _date.fromisoformat(min(logged_at)[:10]), _date.fromisoformat(max(logged_at)[:10])
        for k in range((last - first).days + 1):
            ensure_inference_partition(conn, first + _days(k))
    encoded = ["\t".join(_sim_field(t.get(c)) for c in SIMULATED_STATIC_COLUMNS) for t in templates]
    sql = (f"COPY inference_log (logged_at, request_id, {', '.join(SIMULATED_STATIC_COLUMNS)}) "
           "FROM STDIN WITH (FORMAT text)")
    n = len(index)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        buf = io.StringIO()
        buf.write("".join(f"{logged_at[i]}\t{_copy_text(request_ids[i])}\t{encoded[index[i]]}\n"
                          for i in range(lo, hi)))
        buf.seek(0)
        with conn.cursor() as cur:
            cur.copy_expert(sql, buf)
    return n


def insert_simulated_feedback(conn, request_ids: Sequence[str], true_codes: Sequence[int],
                              submitted_by: str = "simulation", delay_hours: float = 2.0) -> int:
    """Feedback (true labels) for the inference_log rows with these request ids: one row each,
    given `delay_hours` after the prediction. Rows whose request id is not logged are skipped."""
    if not request_ids:
        return 0
    return _exec(
        conn,
        """INSERT INTO feedback (inference_id, inference_logged_at, productid, true_code, predicted_code,
                                 model_version, submitted_by, created_at)
           SELECT i.id, i.logged_at, i.productid, t.true_code, i.predicted_code, i.model_version, %s,
                  i.logged_at + make_interval(secs => %s)
           FROM unnest(%s::text[], %s::int[]) AS t(request_id, true_code)
           JOIN inference_log i ON i.request_id = t.request_id""",
        (submitted_by, float(delay_hours) * 3600.0, list(request_ids), [int(c) for c in true_codes]),
    )


# === shadow challenger (migration 011, shadow_report.py, serving/shadow.py) =======================
SHADOW_ROW_COLUMNS = ("logged_at", "request_id", "item_index", "champion_version", "champion_code",
                      "challenger_version", "predicted_code", "confidence", "top_k", "latency_ms")


def insert_shadow_rows(conn, rows: Sequence[dict]) -> int:
    """shadow_predictions rows (dicts with SHADOW_ROW_COLUMNS; top_k a list) with one COPY."""
    if not rows:
        return 0
    buf = io.StringIO("".join(["\t".join([_copy_value(r.get(c)) for c in SHADOW_ROW_COLUMNS]) + "\n" for r in rows]))
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY shadow_predictions ({', '.join(SHADOW_ROW_COLUMNS)}) FROM STDIN WITH (FORMAT text)", buf)
    return len(rows)


# The latest label of each labelled request of a time range (%(lo)s, %(hi)s]: feedback names a
# request by its request_id, or by the inference_log row it was tied to (whose request_id is
# then read by primary key, from the log or from the rows retention kept). A label given by a
# request_id that is logged but not tied is one the rule refused to tie (another product's
# prediction, or a reused id's several): it counts for no shadow row either. Driven by feedback,
# so its cost follows the number of labels, not of predictions.
_SHADOW_LABELS = f"""
    labels AS (
        SELECT DISTINCT ON (rid) rid, true_code FROM (
            SELECT f.id, f.created_at, f.true_code,
                   coalesce(f.request_id,
                            (SELECT i.request_id FROM inference_log i
                             WHERE i.id = f.inference_id AND i.logged_at = f.inference_logged_at),
                            (SELECT r.request_id FROM inference_log_retained r WHERE r.id = f.inference_id)) AS rid
            FROM feedback f
            WHERE (f.inference_logged_at > %(lo)s AND f.inference_logged_at <= %(hi)s)
               OR (f.inference_id IS NULL AND f.request_id IS NOT NULL  -- not tied (yet): few
                   AND NOT EXISTS (SELECT 1 FROM inference_log o WHERE o.request_id = f.request_id))) x
        WHERE rid IS NOT NULL
        ORDER BY rid, {latest_label_first()})"""
_SHADOW_FILTER = """s.logged_at > %(start)s AND s.logged_at <= %(end)s
        AND (%(challenger)s::text IS NULL OR s.challenger_version = %(challenger)s::text)
        AND (%(champion)s::text IS NULL OR s.champion_version = %(champion)s::text)"""


def record_shadow_load(conn, *, model_name: str, model_version: str, host: str, error: str | None) -> None:
    """The shadow worker's load of a challenger version on `host`: failed with `error` (a row,
    resolved_at cleared), or loaded (error None: an open row resolved)."""
    if error is None:
        _exec(conn, """UPDATE shadow_load_failures SET resolved_at = now()
                       WHERE model_name = %s AND model_version = %s AND host = %s AND resolved_at IS NULL""",
              (model_name, str(model_version), host))
        return
    _exec(conn, """INSERT INTO shadow_load_failures (model_name, model_version, host, error)
                   VALUES (%s, %s, %s, %s)
                   ON CONFLICT (model_name, model_version, host) DO UPDATE
                     SET error = EXCLUDED.error, last_at = now(),
                         first_at = CASE WHEN shadow_load_failures.resolved_at IS NULL
                                         THEN shadow_load_failures.first_at ELSE now() END,
                         resolved_at = NULL""",
          (model_name, str(model_version), host, storable(error)[:4000]))


def shadow_load_failures(conn, model_name: str, model_version: str, *, seen_within: float) -> list[dict]:
    """The hosts whose shadow cannot load this version now: unresolved rows whose failure was
    seen in the last `seen_within` seconds (serving/shadow.load_failures says why), oldest first."""
    return _all(conn, """SELECT host, error, first_at, last_at FROM shadow_load_failures
                         WHERE model_name = %s AND model_version = %s AND resolved_at IS NULL
                           AND last_at >= now() - make_interval(secs => %s)
                         ORDER BY first_at, host""", (model_name, str(model_version), float(seen_within)))


def prune_shadow_load_failures(conn, before) -> int:
    """Drop the load failures last seen before `before` (resolved or not: a host that stopped
    failing or stopped); how many. The retention step's, at the inference log's horizon."""
    return _exec(conn, "DELETE FROM shadow_load_failures WHERE last_at < %s", (before,))


def shadow_counts(conn, start, end, *, champion_version: str | None = None,
                  challenger_version: str | None = None) -> tuple[list[dict], list[dict]]:
    """The shadow rows of start < logged_at <= end (None: unbounded), optionally of one
    (champion, challenger) pair, grouped: ([{champion_version, challenger_version, champion_code,
    predicted_code, n}], the labelled ones [{..., true_code, n}] with each request's latest label)."""
    from datetime import timedelta

    params = {"start": start, "end": end, "champion": champion_version, "challenger": challenger_version}
    if start is None or end is None:
        bounds = _one(conn, """SELECT min(logged_at) AS lo, max(logged_at) AS hi FROM shadow_predictions
                               WHERE (%(challenger)s::text IS NULL OR challenger_version = %(challenger)s::text)
                                 AND (%(champion)s::text IS NULL OR champion_version = %(champion)s::text)""", params)
        if bounds["lo"] is None:
            return [], []
        if start is None:
            params["start"] = bounds["lo"] - timedelta(microseconds=1)
        if end is None:
            params["end"] = bounds["hi"]
    counts = _all(conn, f"""SELECT s.champion_version, s.challenger_version, s.champion_code, s.predicted_code,
                                   count(*) AS n
                            FROM shadow_predictions s WHERE {_SHADOW_FILTER} GROUP BY 1, 2, 3, 4""", params)
    if not counts:
        return [], []
    # the labels' window a little wider than the rows': a shadow row's time is its request's, taken
    # within a millisecond of the champion's inference_log row
    params.update(lo=params["start"] - timedelta(minutes=1), hi=params["end"] + timedelta(minutes=1))
    labelled = _all(conn, f"""WITH {_SHADOW_LABELS}
                              SELECT s.champion_version, s.challenger_version, l.true_code, s.champion_code,
                                     s.predicted_code, count(*) AS n
                              FROM labels l JOIN shadow_predictions s ON s.request_id = l.rid
                              WHERE {_SHADOW_FILTER}
                                -- a request_id a client reused names several requests: which one the
                                -- label is about cannot be told from the shadow rows, so none counts
                                AND NOT EXISTS (
                                    SELECT 1 FROM shadow_predictions d
                                    WHERE d.request_id = s.request_id AND d.challenger_version = s.challenger_version
                                      AND (d.logged_at, d.item_index) IS DISTINCT FROM (s.logged_at, s.item_index))
                                -- ...and so does one whose other requests have no shadow row (dropped,
                                -- errored, before the challenger): the log holds them all
                                AND (SELECT count(*) FROM (
                                         SELECT o.id FROM inference_log o WHERE o.request_id = s.request_id
                                         UNION SELECT r.id FROM inference_log_retained r
                                         WHERE r.request_id = s.request_id) c) <= 1
                              GROUP BY 1, 2, 3, 4, 5""", params)
    return counts, labelled


def set_drift_report_shadow(conn, report_id: int, shadow: dict | None) -> None:
    _exec(conn, "UPDATE drift_reports SET shadow = %s WHERE id = %s", (_jsonb(shadow) if shadow else None, report_id))


def drift_report_shadows(conn, *, limit: int = 60) -> list[dict]:
    """The shadow sections of the latest drift reports that have one, newest first."""
    return _all(conn, """SELECT id, report_date, as_of, window_days, model_version, shadow FROM drift_reports
                         WHERE shadow IS NOT NULL ORDER BY id DESC LIMIT %s""", (int(limit),))


def purge_shadow_default_before(conn, horizon) -> int:
    """Shadow rows older than `horizon` waiting in the default partition (a day that had no
    partition): deleted (nothing of the shadow outlives retention). How many."""
    return _exec(conn, "DELETE FROM shadow_predictions_default WHERE logged_at < %s", (horizon,))


def drop_table_rows(conn, name: str) -> int:
    """DROP a detached day partition; the rows it held."""
    n = count_table_rows(conn, name)
    drop_detached_table(conn, name)
    return n


# === notifications ==============================================================================
NOTIFICATION_COLUMNS = (
    "id, event, channel, target, subject, status, attempts, error, payload, pipeline_run_id, sent_at"
)


def insert_notification(conn, **cols) -> int:
    """Insert a notifications row (event, channel, target, subject, status, attempts, error,
    payload, pipeline_run_id); returns its id. `payload` is a dict stored as JSONB."""
    if "payload" in cols:
        cols["payload"] = Json(cols["payload"] or {}, dumps=lambda o: json.dumps(o, default=str))
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    return _scalar(
        conn, f"INSERT INTO notifications ({names}) VALUES ({marks}) RETURNING id", list(cols.values())
    )


def list_notifications(conn, limit: int = 50, event: str | None = None,
                       channel: str | None = None) -> list[dict]:
    return _all(
        conn,
        f"""SELECT {NOTIFICATION_COLUMNS} FROM notifications
            WHERE (%(event)s::text IS NULL OR event = %(event)s)
              AND (%(channel)s::text IS NULL OR channel = %(channel)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"event": event, "channel": channel, "limit": limit},
    )


# === training and evaluation ====================================================================
def read_products(conn, columns: Sequence[str] = ("productid", "designation", "description",
                                                    "prdtypecode", "batch_id", "loaded_at")):
    """The whole catalogue as a DataFrame, through COPY (fast for 100k rows of long text)."""
    import pandas as pd

    for c in columns:
        if not c.isidentifier():
            raise ValueError(c)
    buf = io.StringIO()
    with conn.cursor() as cur:
        cur.copy_expert(
            f"COPY (SELECT {', '.join(columns)} FROM products ORDER BY productid) TO STDOUT "
            "WITH (FORMAT csv, HEADER true)",
            buf,
        )
    buf.seek(0)
    dtypes = {"designation": str, "description": str}
    df = pd.read_csv(buf, dtype=dtypes, keep_default_na=False)
    for c in ("productid", "prdtypecode"):
        if c in df.columns:
            df[c] = df[c].astype("int64")
    if "batch_id" in df.columns:  # NULL for the rows added from feedback (source 'feedback')
        df["batch_id"] = pd.to_numeric(df["batch_id"], errors="coerce").astype("Int64")
    return df


def insert_evaluation(conn, **cols) -> int:
    cols = {k: (Json(v) if isinstance(v, dict) else v) for k, v in cols.items()}
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    return _scalar(conn, f"INSERT INTO model_evaluations ({names}) VALUES ({marks}) RETURNING id",
                   list(cols.values()))


def latest_evaluation(conn, model_name: str, model_version: str, holdout_hash: str | None = None) -> dict | None:
    return _one(
        conn,
        """SELECT * FROM model_evaluations WHERE model_name = %s AND model_version = %s
             AND (%s::text IS NULL OR holdout_hash = %s) ORDER BY id DESC LIMIT 1""",
        (model_name, str(model_version), holdout_hash, holdout_hash),
    )


# === inference log partitions, retention and rollups (sql/009) ===================================
# inference_log is partitioned by UTC day (inference_log_pYYYYMMDD, plus inference_log_default).
# Statements that take a lock the serving writer could queue behind (ATTACH takes ACCESS
# EXCLUSIVE on the default partition, DETACH on inference_log itself) run under `lock_timeout`:
# the caller retries later rather than stall the writer (steps/retention.py).
PARTITION_PREFIX = "inference_log_p"
DEFAULT_PARTITION = "inference_log_default"
# the tables partitioned by UTC day on logged_at (partitions.py creates their days, retention
# drops them): the inference log, and the shadow challenger's rows (migration 011)
DAY_PARTITIONED = ("inference_log", "shadow_predictions")
_LOG_COLUMNS = "id, " + ", ".join(INFERENCE_COLUMNS)
_RANGE_OPS = {(False, False): (">", "<"), (True, False): (">=", "<"), (False, True): (">", "<="),
              (True, True): (">=", "<=")}


def partition_name(day, table: str = "inference_log") -> str:
    return f"{_day_partitioned(table)}_p{day:%Y%m%d}"


def _day_partitioned(table: str) -> str:
    if table not in DAY_PARTITIONED:
        raise ValueError(f"not a day-partitioned table: {table!r}")
    return table


def partition_day(name: str):
    """The day of a day partition's name (<table>_pYYYYMMDD)."""
    from datetime import datetime as _dt

    return _dt.strptime(_check_partition(name).rsplit("_p", 1)[1], "%Y%m%d").date()


def set_lock_timeout(conn, ms: int) -> None:
    """lock_timeout for the rest of the caller's transaction."""
    _exec(conn, "SELECT set_config('lock_timeout', %s, true)", (f"{max(1, int(ms))}ms",))


def ensure_inference_partition(conn, day) -> int:
    """Create the partition of `day` if missing (moving that day's rows out of the default
    partition): the rows moved, or -1 when it existed. Commit soon: until then the default
    partition stays locked."""
    return ensure_day_partition(conn, day, "inference_log")


def ensure_day_partition(conn, day, table: str) -> int:
    """ensure_inference_partition for any of DAY_PARTITIONED."""
    return int(_scalar(conn, "SELECT day_partition_ensure(%s, %s::date)", (_day_partitioned(table), day)))


def inference_partitions(conn, table: str = "inference_log") -> list[dict]:
    """Every partition of inference_log (or another of DAY_PARTITIONED): {name, is_default,
    lower, upper} (bounds as timestamptz, None for the default), oldest first, the default last."""
    return _all(
        conn,
        """SELECT c.relname AS name, b.bound = 'DEFAULT' AS is_default,
                  CASE WHEN b.bound <> 'DEFAULT'
                       THEN substring(b.bound FROM 'FROM \\(''([^'']+)''\\)')::timestamptz END AS lower,
                  CASE WHEN b.bound <> 'DEFAULT'
                       THEN substring(b.bound FROM 'TO \\(''([^'']+)''\\)')::timestamptz END AS upper
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
           WHERE i.inhparent = %s::regclass
           ORDER BY b.bound = 'DEFAULT', 3""", (_day_partitioned(table),),
    )


def detached_partition_tables(conn, table: str = "inference_log") -> list[str]:
    """Tables named like a day partition that are not attached (a drop interrupted after its
    detach committed): retention finishes dropping them."""
    rows = _all(
        conn,
        """SELECT c.relname AS name FROM pg_class c
           WHERE c.relkind = 'r' AND c.relname ~ ('^' || %s || '_p[0-9]{8}$')
             AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
           ORDER BY 1""", (_day_partitioned(table),),
    )
    return [r["name"] for r in rows]


def default_partition_days(conn, table: str = "inference_log") -> list[dict]:
    """[{day, n}] of the rows waiting in the default partition (days that had no partition)."""
    return _all(
        conn,
        f"""SELECT (logged_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM {_day_partitioned(table)}_default
            GROUP BY 1 ORDER BY 1""",
    )


def _check_partition(name: str) -> str:
    import re

    if not re.fullmatch(r"(inference_log|shadow_predictions)_(p\d{8}|default)", name):
        raise ValueError(f"not a day partition: {name!r}")
    return name


_KEPT_ROWS_SQL = """
    SELECT k.id, array_agg(DISTINCT k.reason ORDER BY k.reason) AS reasons FROM (
        SELECT f.inference_id AS id, 'feedback' AS reason FROM feedback f
        WHERE f.inference_id IS NOT NULL AND f.created_at >= %(lo)s
        UNION ALL
        SELECT p.id, 'feedback' FROM feedback f JOIN {table} p ON p.request_id = f.request_id
        WHERE f.inference_id IS NULL AND f.request_id IS NOT NULL AND f.created_at >= %(lo)s
        UNION ALL
        -- a label by productid alone that is not tied to a prediction (given before labels were
        -- tied at record time, ops/feedback.py): the product's newest row of the partition, its text
        SELECT (SELECT p.id FROM {table} p WHERE p.productid = f.productid
                ORDER BY p.logged_at DESC, p.id DESC LIMIT 1), 'feedback' FROM feedback f
        WHERE f.inference_id IS NULL AND f.request_id IS NULL AND f.productid IS NOT NULL
          AND f.created_at >= %(lo)s
        UNION ALL
        SELECT h.inference_id, 'hold:' || h.reason FROM inference_log_holds h
    ) k JOIN {table} p ON p.id = k.id {where}
    GROUP BY k.id"""


def copy_kept_rows(conn, table: str, lo, before=None) -> int:
    """Copy the rows of partition `table` that must outlive it (feedback names them, or a hold)
    into inference_log_retained; returns how many (re-copying a row updates its reasons).
    `lo`: the partition's lower bound (feedback is never older than its prediction); `before`:
    only rows logged before it."""
    table = _check_partition(table)
    kept = _KEPT_ROWS_SQL.format(table=table, where="" if before is None else "WHERE p.logged_at < %(before)s")
    cols = ", ".join(f"p.{c}" for c in _LOG_COLUMNS.split(", "))
    return _exec(
        conn,
        f"""INSERT INTO inference_log_retained ({_LOG_COLUMNS}, reasons)
            SELECT {cols}, k.reasons FROM ({kept}) k JOIN {table} p ON p.id = k.id
            ON CONFLICT (id) DO UPDATE SET reasons = EXCLUDED.reasons""",
        {"lo": lo, "before": before},
    )


def detach_partition(conn, name: str, table: str = "inference_log") -> None:
    """ALTER TABLE inference_log DETACH PARTITION (ACCESS EXCLUSIVE on inference_log for an
    instant: set a lock_timeout first). Not CONCURRENTLY: PostgreSQL refuses it while a default
    partition exists."""
    _exec(conn, f"ALTER TABLE {_day_partitioned(table)} DETACH PARTITION {_check_partition(name)}")


def drop_detached_table(conn, name: str) -> None:
    _exec(conn, f"DROP TABLE IF EXISTS {_check_partition(name)}")


def copy_table_csv(conn, name: str, out) -> int:
    """COPY a (detached) day partition, by id, as CSV with a header into text file `out`."""
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY (SELECT {_LOG_COLUMNS} FROM {_check_partition(name)} ORDER BY id) TO STDOUT "
                        "WITH (FORMAT csv, HEADER true)", out)
        return cur.rowcount


def iter_table_rows(conn, name: str, batch: int = 50_000):
    """The rows of a (detached) day partition by id, in lists of dicts (a server-side cursor)."""
    with conn.cursor(name=f"export_{name}", cursor_factory=RealDictCursor) as cur:
        cur.itersize = batch
        cur.execute(f"SELECT {_LOG_COLUMNS} FROM {_check_partition(name)} ORDER BY id")
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            yield [dict(r) for r in rows]


def iter_inference_day_rows(conn, lo, hi, batch: int = 50_000):
    """The rows of lo <= logged_at < hi (inference_log, then inference_log_retained for a day
    already dropped), by id, in lists of dicts."""
    with conn.cursor(name="export_day", cursor_factory=RealDictCursor) as cur:
        cur.itersize = batch
        cur.execute(
            f"""SELECT {_LOG_COLUMNS} FROM inference_log WHERE logged_at >= %(lo)s AND logged_at < %(hi)s
                UNION ALL SELECT {_LOG_COLUMNS} FROM inference_log_retained r
                WHERE r.logged_at >= %(lo)s AND r.logged_at < %(hi)s
                  AND NOT EXISTS (SELECT 1 FROM inference_log i WHERE i.id = r.id AND i.logged_at = r.logged_at)
                ORDER BY id""", {"lo": lo, "hi": hi})
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            yield [dict(r) for r in rows]


def count_table_rows(conn, name: str) -> int:
    return int(_scalar(conn, f"SELECT count(*) FROM {_check_partition(name)}"))


def insert_partition_drop(conn, **cols) -> int:
    """An inference_log_drops audit row (see sql/009); returns its id."""
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    return _scalar(conn, f"INSERT INTO inference_log_drops ({names}) VALUES ({marks}) RETURNING id",
                   list(cols.values()))


def list_partition_drops(conn, limit: int = 100) -> list[dict]:
    return _all(conn, "SELECT * FROM inference_log_drops ORDER BY id DESC LIMIT %s", (limit,))


def purge_default_before(conn, horizon) -> tuple[int, int]:
    """Rows older than `horizon` waiting in the default partition (a day past retention that
    never had a partition): kept rows copied to inference_log_retained, the rest deleted (the
    default partition is small: only rows of days without a partition). (kept, deleted)."""
    kept = copy_kept_rows(conn, DEFAULT_PARTITION, "-infinity", before=horizon)
    deleted = _exec(conn, f"DELETE FROM {DEFAULT_PARTITION} WHERE logged_at < %s", (horizon,))
    return kept, deleted


def active_alert_windows(conn) -> list[dict]:
    """The window of the report each active alert names: {alert_id, report_id, as_of, window_days}."""
    return _all(conn, """SELECT a.id AS alert_id, r.id AS report_id, r.as_of, r.window_days
                         FROM alerts a JOIN drift_reports r ON r.id = a.report_id
                         WHERE a.status <> 'resolved' ORDER BY a.id""")


def add_inference_hold(conn, inference_id: int, reason: str, held_by: str | None = None) -> None:
    """Keep inference_log row `inference_id` past retention (an alert, a report, a training run
    needs it)."""
    _exec(conn, """INSERT INTO inference_log_holds (inference_id, reason, held_by) VALUES (%s, %s, %s)
                   ON CONFLICT DO NOTHING""", (inference_id, reason, held_by))


def retained_inference(conn, inference_id: int) -> dict | None:
    return _one(conn, "SELECT * FROM inference_log_retained WHERE id = %s", (inference_id,))


def copy_inference_day_csv(conn, out, lo, hi) -> int:
    """COPY the rows with lo <= logged_at < hi, from inference_log and (for a day already
    dropped) inference_log_retained, as CSV with a header into text file `out`, by id."""
    sql = (f"COPY (SELECT {_LOG_COLUMNS} FROM inference_log WHERE logged_at >= {{lo}} AND logged_at < {{hi}} "
           f"UNION ALL SELECT {_LOG_COLUMNS} FROM inference_log_retained r WHERE r.logged_at >= {{lo}} "
           "AND r.logged_at < {hi} AND NOT EXISTS (SELECT 1 FROM inference_log i WHERE i.id = r.id "
           "AND i.logged_at = r.logged_at) ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true)")
    with conn.cursor() as cur:
        lo_sql = cur.mogrify("%s::timestamptz", (lo,)).decode()
        hi_sql = cur.mogrify("%s::timestamptz", (hi,)).decode()
        cur.copy_expert(sql.format(lo=lo_sql, hi=hi_sql), out)
        return cur.rowcount


# --- rollups: the drift check's counts of one UTC day, computed once -------------------------------
def lock_day_for_rollup(conn, day) -> None:
    """SHARE lock on the day's partition (the default partition when it has none) until commit:
    writers of THAT day (late rows only, for a closed day) wait, and the rows counted are all
    committed ones. Today's writers are not affected. Set a lock_timeout first."""
    name = partition_name(day)
    exists = _scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (name,))
    _exec(conn, f"LOCK TABLE {_check_partition(name if exists else DEFAULT_PARTITION)} IN SHARE MODE")


def inference_log_writers(conn) -> list[str]:
    """The transactions of other sessions inside a write to inference_log (RowExclusiveLock on the
    parent, held or awaited), as their virtualtransaction ids. A writer draws its rows' ids before
    it routes them to a day's partition: one of these may still add a row of a day just rolled up
    with an id below that day's max_id (steps/retention.rollup_days)."""
    rows = _all(conn, """SELECT DISTINCT virtualtransaction AS vxid FROM pg_locks
                         WHERE locktype = 'relation' AND relation = 'inference_log'::regclass
                           AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid()""")
    return [r["vxid"] for r in rows]


def transactions_running(conn, vxids: Sequence[str]) -> bool:
    """True while any of these virtualtransactions still holds a lock (it has not ended)."""
    return bool(vxids) and bool(_scalar(conn, """SELECT EXISTS (SELECT 1 FROM pg_locks
                                                WHERE virtualtransaction = ANY(%s))""", (list(vxids),)))


def day_row_count(conn, day) -> int:
    """The rows of one UTC day (its partition, or the default partition's rows of that day)."""
    name = partition_name(day)
    if _scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (name,)):
        return count_table_rows(conn, name)
    return int(_scalar(conn, f"""SELECT count(*) FROM {DEFAULT_PARTITION}
                                 WHERE logged_at >= %s::date AND logged_at < %s::date + 1""", (day, day)))


def mark_rollup_stale(conn, bins_key: str, day) -> None:
    """Forget the rollup's max_id: the day is scanned by the drift check and rolled up again."""
    _exec(conn, "UPDATE inference_rollup_days SET max_id = NULL WHERE bins_key = %s AND day = %s", (bins_key, day))


def upsert_rollup_bins(conn, bins_key: str, bins: dict) -> None:
    _exec(conn, """INSERT INTO inference_rollup_bins (bins_key, bins) VALUES (%s, %s)
                   ON CONFLICT (bins_key) DO NOTHING""", (bins_key, _jsonb(bins)))


def _range_sql(lo_incl: bool, hi_incl: bool) -> str:
    lo_op, hi_op = _RANGE_OPS[(bool(lo_incl), bool(hi_incl))]
    return f"logged_at {lo_op} %(lo)s AND logged_at {hi_op} %(hi)s"


_PIECE_SETS = ("predicted_code", "script", "lang", "title_length", "description_length", "n_tokens", "confidence")


def inference_range_counts(conn, lo, hi, edges: dict[str, list[float]], *, lo_incl: bool = True,
                           hi_incl: bool = False) -> list[tuple]:
    """The drift counts of the rows in one range of logged_at (one day, or the part of a day in a
    window), per model version: [(model_version, feature, key, n)] with feature one of
    _PIECE_SETS (key: the class, category or bin number as text, None for a NULL value) or a total
    (n, n_empty, oov_sum, oov_tokens, oov_rows; key None). Bins are numbered like
    inference_window_aggregates (width_bucket on the reference's inner edges)."""
    params = {"lo": lo, "hi": hi, "title": list(edges["title_length"]), "desc": list(edges["description_length"]),
              "tok": list(edges["n_tokens"]), "conf": list(edges["confidence"])}
    rows = _all(
        conn,
        f"""SELECT GROUPING(predicted_code, script, lang, b_title, b_desc, b_tok, b_conf) AS g, model_version,
                   predicted_code, script, lang, b_title, b_desc, b_tok, b_conf, count(*) AS n,
                   count(*) FILTER (WHERE description_len = 0) AS n_empty,
                   coalesce(sum(n_oov), 0) AS oov_sum,
                   coalesce(sum(n_tokens) FILTER (WHERE n_oov IS NOT NULL), 0) AS oov_tokens,
                   count(n_oov) AS oov_rows
            FROM (SELECT model_version, predicted_code, script, lang, description_len, n_oov, n_tokens,
                         width_bucket(designation_len::float8, %(title)s::float8[]) AS b_title,
                         width_bucket(description_len::float8, %(desc)s::float8[]) AS b_desc,
                         width_bucket(n_tokens::float8, %(tok)s::float8[]) AS b_tok,
                         width_bucket(confidence, %(conf)s::float8[]) AS b_conf
                  FROM inference_log WHERE {_range_sql(lo_incl, hi_incl)}) w
            GROUP BY GROUPING SETS ((model_version), (model_version, predicted_code), (model_version, script),
                                    (model_version, lang), (model_version, b_title), (model_version, b_desc),
                                    (model_version, b_tok), (model_version, b_conf))""",
        params,
    )
    columns = ("predicted_code", "script", "lang", "b_title", "b_desc", "b_tok", "b_conf")
    n_sets = len(_PIECE_SETS)
    out = []
    for r in rows:
        g = int(r["g"])
        mv = r["model_version"]
        if g == (1 << n_sets) - 1:  # the (model_version) set: the totals
            out.extend((mv, k, None, int(r[k])) for k in ("n", "n_empty", "oov_sum", "oov_tokens", "oov_rows"))
            continue
        i = next(i for i in range(n_sets) if not g & (1 << (n_sets - 1 - i)))
        key = r[columns[i]]
        out.append((mv, _PIECE_SETS[i], None if key is None else str(key), int(r["n"])))
    return out


# The classes a logged row lists besides its predicted one: its top_k entries (at most
# EST_TOP_K_MAX, the API's largest top_k) other than the predicted code, probability clipped to
# [0, 1]; an entry that is not {"prdtypecode": number, "probability": number} and a top_k that is
# not an array are skipped. Read by position, as plain expressions: no set-returning function and
# no subquery per row (~4x cheaper than jsonb_array_elements).
EST_TOP_K_MAX = 10


def _est_listed_sql(where: str, slots: int = EST_TOP_K_MAX) -> str:
    """SELECT mv, c, conf, oc0..ocN, q0..qN, n, s of the rows of `where`: oc_j / q_j the j-th listed
    class other than the predicted one and its probability (NULL where not), n how many, s their
    probability. Each level is kept apart (OFFSET 0) so that an entry is read once, not once per
    expression using it. slots: how many entries are read (entries past the longest top_k of the
    rows are NULL: fewer slots, the same sums)."""
    j_range = range(max(1, min(int(slots), EST_TOP_K_MAX)))
    entries = ", ".join(f"CASE WHEN len > {j} THEN tk->{j} END AS e{j}" for j in j_range)
    fields = ", ".join(f"e{j}->'prdtypecode' AS pc{j}, e{j}->'probability' AS pp{j}" for j in j_range)
    parsed = ", ".join(
        f"CASE WHEN jsonb_typeof(pc{j}) = 'number' AND jsonb_typeof(pp{j}) = 'number' "
        f"THEN pc{j}::numeric::int END AS code{j}, pp{j}" for j in j_range)
    others = ", ".join(f"CASE WHEN code{j} <> c THEN code{j} END AS oc{j}, "
                       f"CASE WHEN code{j} <> c THEN least(greatest(pp{j}::float8, 0), 1) END AS q{j}"
                       for j in j_range)
    return f"""
        SELECT *, {" + ".join(f"(q{j} IS NOT NULL)::int" for j in j_range)} AS n,
               {" + ".join(f"coalesce(q{j}, 0)" for j in j_range)} AS s
        FROM (SELECT mv, c, conf, len, {others}
              FROM (SELECT mv, c, conf, len, {parsed}
                    FROM (SELECT mv, c, conf, len, {fields}
                          FROM (SELECT mv, c, conf, len, {entries}
                                FROM (SELECT model_version AS mv, predicted_code AS c,
                                             least(greatest(confidence, 0), 1) AS conf, top_k AS tk,
                                             CASE WHEN jsonb_typeof(top_k) = 'array' THEN jsonb_array_length(top_k)
                                                  ELSE 0 END AS len
                                      FROM inference_log WHERE {where} OFFSET 0) l0
                                OFFSET 0) l1
                          OFFSET 0) l2
                    OFFSET 0) l3
              OFFSET 0) l4"""


def _estimate_sums_sql(where: str, slots: int) -> str:
    """inference_range_estimate_sums' query, reading `slots` top_k entries per row; its rows also
    carry maxlen (per predicted class: the longest top_k seen; NULL on the listed-class rows)."""
    listed = " UNION ALL ".join(
        f"""SELECT mv, oc{j}, NULL::bigint, NULL::numeric, NULL::numeric, sum(round((q{j} - t) * %(sc)s)::bigint),
                   sum(round((q{j} * q{j} - t * t) * %(sc)s)::bigint), NULL::numeric, NULL::numeric, NULL::numeric,
                   NULL::int
            FROM r WHERE q{j} IS NOT NULL GROUP BY mv, oc{j}""" for j in range(slots))
    return f"""
        WITH r AS MATERIALIZED (
            SELECT *, greatest(0, 1 - conf - s) AS rest,
                   CASE WHEN %(k)s > 1 + n THEN greatest(0, 1 - conf - s) / (%(k)s - 1 - n) ELSE 0 END AS t
            FROM ({_est_listed_sql(where, slots)}) x
        )
        SELECT mv, c AS code, count(*) AS pred,
               sum(round(conf * %(sc)s)::bigint) AS tp, sum(round(conf * conf * %(sc)s)::bigint) AS tp2,
               sum(round((conf - t) * %(sc)s)::bigint) AS s, sum(round((conf * conf - t * t) * %(sc)s)::bigint) AS s2,
               sum(round(t * %(sc)s)::bigint) AS tail, sum(round(t * t * %(sc)s)::bigint) AS tail2,
               sum(round(rest * %(sc)s)::bigint) AS rest, max(len) AS maxlen
        FROM r GROUP BY mv, c
        UNION ALL {listed}"""


def inference_range_estimate_sums(conn, lo, hi, n_classes: int, *, lo_incl: bool = True,
                                  hi_incl: bool = False) -> list[tuple]:
    """The performance estimate's additive sums of the rows in one range of logged_at, per model
    version: [(model_version, feature, key, n)] with the features of performance_estimate.FEATURES
    (the same terms as performance_estimate.row_sums, each rounded to 1/SCALE before summing, so
    that any split of the rows into ranges sums to the same integers). n_classes: K, the classes
    the mass the listed classes leave is spread over evenly. One pass over the rows (after a cheap
    one for the longest top_k)."""
    from .performance_estimate import SCALE, empty_sums, sums_rows

    where = _range_sql(lo_incl, hi_incl)
    params = {"lo": lo, "hi": hi, "k": int(n_classes), "sc": SCALE}
    # the entries read: as many as the longest top_k of these rows (the API's default 3 reads 3 of
    # the EST_TOP_K_MAX slots: ~25% of the cost). The main query also returns the longest it saw: a
    # row committed between the two statements with a longer top_k (a day still being written)
    # makes it run again with every slot, so the sums are always exact.
    slots = _scalar(conn, f"""SELECT coalesce(max(jsonb_array_length(top_k)), 0) FROM inference_log
                              WHERE {where} AND jsonb_typeof(top_k) = 'array'""", params)
    slots = max(1, min(int(slots), EST_TOP_K_MAX))
    rows = _all(conn, _estimate_sums_sql(where, slots), params)
    if slots < EST_TOP_K_MAX and max((int(r["maxlen"] or 0) for r in rows), default=0) > slots:
        rows = _all(conn, _estimate_sums_sql(where, EST_TOP_K_MAX), params)
    by_version: dict = {}
    for r in rows:
        sums = by_version.setdefault(r["mv"], empty_sums())
        cls = sums["classes"].setdefault(int(r["code"]), {})
        for name in ("pred", "tp", "tp2", "s", "s2"):
            if r[name] is not None:
                cls[name] = cls.get(name, 0) + int(r[name])
        if r["pred"] is not None:
            sums["n"] += int(r["pred"])
            for name in ("tail", "tail2", "rest"):
                sums[name] += int(r[name])
    return [row for mv, sums in by_version.items() for row in sums_rows(sums, mv)]


def window_feedback_predictions(conn, start, end, version: str | None = None,
                                limit: int | None = None) -> list[tuple]:
    """(true_code, predicted_code, confidence, top_k, logged_at) of the window's predictions that
    got feedback (the latest label of each; version: that model version's predictions only): the
    realized F1 and the estimate on the same rows. limit: the `limit` most recently served of
    them only (ties: the higher id), found through the feedback index on the prediction's time, so that
    the cost does not follow the window's number of labels; each is read from the log by primary
    key, one partition each (a lateral lookup: never a join over the window's rows)."""
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT DISTINCT ON (x.inference_id) l.true_code, i.predicted_code, i.confidence, i.top_k,
                      x.inference_logged_at
               FROM (SELECT DISTINCT f.inference_logged_at, f.inference_id FROM feedback f
                     WHERE f.inference_id IS NOT NULL
                       AND f.inference_logged_at > %(s)s AND f.inference_logged_at <= %(e)s
                       AND (%(v)s::text IS NULL OR f.model_version = %(v)s::text)
                     ORDER BY f.inference_logged_at DESC, f.inference_id DESC
                     LIMIT %(n)s) x  -- the newest predictions, each once however many labels it got
               JOIN feedback l ON l.inference_id = x.inference_id  -- its latest label
               -- LIMIT 1 (the key is unique anyway) keeps the planner from flattening the lookup
               -- into a hash join over every partition of the window, which it does up to a few
               -- million rows: 0.2 s at 1M for 1,000 labels, against ~5 ms by primary key
               CROSS JOIN LATERAL (SELECT predicted_code, confidence, top_k FROM inference_log i
                                   WHERE i.id = x.inference_id AND i.logged_at = x.inference_logged_at
                                   LIMIT 1) i
               ORDER BY x.inference_id, {latest_label_first("l")}""",
            {"s": start, "e": end, "v": version, "n": limit},
        )
        return [(int(t), int(p), float(c), k, at) for t, p, c, k, at in cur.fetchall()]


def inference_range_titles(conn, lo, hi, limit: int, *, lo_incl: bool = True,
                           hi_incl: bool = False) -> list[tuple]:
    """(model_version, designation) of the newest `limit` rows of a range (ties by id): the token
    sample of that day (or part of a day)."""
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT model_version, designation FROM inference_log WHERE {_range_sql(lo_incl, hi_incl)}
                ORDER BY logged_at DESC, id DESC LIMIT %(limit)s""",
            {"lo": lo, "hi": hi, "limit": int(limit)},
        )
        return cur.fetchall()


def window_day_sample_titles(conn, start, end, per_day: int) -> list[tuple]:
    """(model_version, designation) of the newest `per_day` rows of each UTC day of the window
    start < logged_at <= end (ties by id): the drift check's token sample, as one row scan (the
    reference the rollups are checked against)."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT model_version, designation FROM (
                   SELECT model_version, designation,
                          row_number() OVER (PARTITION BY (logged_at AT TIME ZONE 'UTC')::date
                                             ORDER BY logged_at DESC, id DESC) AS rank
                   FROM inference_log WHERE logged_at > %s AND logged_at <= %s) s
               WHERE rank <= %s""",
            (start, end, int(per_day)),
        )
        return cur.fetchall()


def count_rows_at(conn, at) -> int:
    """Rows logged at exactly `at` (a window's excluded start that is a day boundary)."""
    return int(_scalar(conn, "SELECT count(*) FROM inference_log WHERE logged_at = %s", (at,)))


def day_max_ids(conn, days: Sequence) -> dict:
    """{day: the highest id of its rows (None: no row)}, from each day's partition by name (its
    primary key's last entry: one index probe, whatever the day's volume) and from the default
    partition (rows of a day without a partition)."""
    days = list(days)
    if not days:
        return {}
    attached = {p["name"] for p in inference_partitions(conn)}
    parts = [(d, partition_name(d)) for d in days if partition_name(d) in attached]
    out: dict = {d: None for d in days}
    if parts:
        sql = " UNION ALL ".join(f"SELECT %s::date, (SELECT max(id) FROM {_check_partition(name)})" for _d, name in parts)
        with conn.cursor() as cur:
            cur.execute(sql, [d for d, _n in parts])
            out.update({d: m for d, m in cur.fetchall()})
    with conn.cursor() as cur:
        cur.execute(f"""SELECT (logged_at AT TIME ZONE 'UTC')::date, max(id) FROM {DEFAULT_PARTITION}
                        WHERE (logged_at AT TIME ZONE 'UTC')::date = ANY(%s::date[]) GROUP BY 1""", (days,))
        for d, m in cur.fetchall():
            out[d] = m if out.get(d) is None else max(out[d], m)
    return out


def rollup_days_state(conn, bins_key: str, days: Sequence) -> dict:
    """{day: {n_rows, max_id, late}} of the stored rollups of these days; `late` is true when a
    row of the day with an id above max_id arrived since (the rollup is stale)."""
    rows = _all(conn, """SELECT day, n_rows, max_id FROM inference_rollup_days
                         WHERE bins_key = %s AND day = ANY(%s::date[])""", (bins_key, list(days)))
    now = day_max_ids(conn, [r["day"] for r in rows])
    for r in rows:
        m = now.get(r["day"])
        r["late"] = m is not None and (r["max_id"] is None or m > r["max_id"])
    return {r["day"]: r for r in rows}


def replace_rollup_day(conn, bins_key: str, day, *, n_rows: int, max_id: int | None, rows: Sequence[tuple],
                       pipeline_run_id: int | None = None) -> None:
    """Store (replacing) the rollup of one day: rows (model_version, feature, key, n)."""
    from psycopg2.extras import execute_values

    _exec(conn, "DELETE FROM inference_rollup_days WHERE bins_key = %s AND day = %s", (bins_key, day))
    _exec(conn, """INSERT INTO inference_rollup_days (bins_key, day, n_rows, max_id, pipeline_run_id)
                   VALUES (%s, %s, %s, %s, %s)""", (bins_key, day, int(n_rows), max_id, pipeline_run_id))
    if rows:
        with conn.cursor() as cur:
            execute_values(cur, "INSERT INTO inference_rollups (bins_key, day, model_version, feature, key, n) VALUES %s",
                           [(bins_key, day, mv, f, k, int(n)) for mv, f, k, n in rows], page_size=2000)


def read_rollups(conn, bins_key: str, days: Sequence) -> dict:
    """{day: [(model_version, feature, key, n)]} of the stored rollups of these days."""
    out: dict = {d: [] for d in days}
    with conn.cursor() as cur:
        cur.execute("""SELECT day, model_version, feature, key, n FROM inference_rollups
                       WHERE bins_key = %s AND day = ANY(%s::date[])""", (bins_key, list(days)))
        for day, mv, f, k, n in cur.fetchall():
            out.setdefault(day, []).append((mv, f, k, int(n)))
    return out


def delete_rollups(conn, days: Sequence) -> int:
    """Forget the rollups (every bins) and the labelling candidate lists of these days: their rows
    changed (drained, dropped)."""
    _exec(conn, "DELETE FROM labelling_candidate_days WHERE day = ANY(%s::date[])", (list(days),))
    return _exec(conn, "DELETE FROM inference_rollup_days WHERE day = ANY(%s::date[])", (list(days),))


# === feedback as training data (migration 010) ==================================================
# A label is usable when it names a product (feedback.productid, copied from its prediction) with
# a known code, and the product is in `products` or has logged text to train on. The latest label
# of a product (created_at, then id) wins. Products are counted once however many labels they got.
_LOGGED_TEXT = """
    SELECT c.designation, c.description FROM (
        SELECT i.designation, i.description, 0 AS pref, i.logged_at, i.id FROM inference_log i
        WHERE i.id = {l}.inference_id AND i.logged_at = {l}.inference_logged_at
        UNION ALL
        SELECT r.designation, r.description, 0, r.logged_at, r.id FROM inference_log_retained r
        WHERE r.id = {l}.inference_id
        UNION ALL
        SELECT i.designation, i.description, 1, i.logged_at, i.id FROM inference_log i
        WHERE i.productid = {l}.productid
        UNION ALL
        SELECT r.designation, r.description, 1, r.logged_at, r.id FROM inference_log_retained r
        WHERE r.productid = {l}.productid
    ) c WHERE btrim(c.designation) <> ''
    ORDER BY c.pref, c.logged_at DESC, c.id DESC LIMIT 1"""


def newest_inference_of_product(conn, productid: int, title_ok: Callable[[str], bool] | None = None,
                                look: int = 20) -> dict | None:
    """The product's newest logged prediction (the log or the rows retention kept), or None.
    title_ok: the newest of its `look` newest whose title passes it (the rule a title must pass to
    be trained on), the newest when none does."""
    rows = _all(
        conn,
        f"""SELECT * FROM (
                (SELECT {_LOG_COLUMNS} FROM inference_log WHERE productid = %(p)s
                 ORDER BY logged_at DESC, id DESC LIMIT %(n)s)
                UNION ALL
                (SELECT {_LOG_COLUMNS} FROM inference_log_retained WHERE productid = %(p)s
                 ORDER BY logged_at DESC, id DESC LIMIT %(n)s)) x
            ORDER BY logged_at DESC, id DESC LIMIT %(n)s""",
        {"p": int(productid), "n": 1 if title_ok is None else int(look)})
    return next((r for r in rows if title_ok is None or title_ok(r["designation"] or "")), rows[0] if rows else None)


def product_labelled_before(conn, productid: int) -> bool:
    """True when some feedback proves the product was served or catalogued once (a label tied to
    its prediction, or one given by productid alone: accepted for no other product), so if it is
    neither now, retention dropped its predictions. A label waiting for its request_id to be
    logged proves nothing: nobody checked its productid."""
    return bool(_scalar(conn, """SELECT EXISTS (SELECT 1 FROM feedback WHERE productid = %s
                                                AND (inference_id IS NOT NULL OR request_id IS NULL))""",
                        (int(productid),)))


def label_recency(conn) -> dict[int, int]:
    """{productid: rank} of the products whose code comes from a human label, 0 for the latest
    label (latest_label_first): which labels the class cap keeps first (dataset.balanced)."""
    with conn.cursor() as cur:
        cur.execute(f"""SELECT p.productid FROM products p JOIN feedback f ON f.id = p.label_feedback_id
                        ORDER BY {latest_label_first("f")}""")
        return {int(pid): k for k, (pid,) in enumerate(cur.fetchall())}


def product_was_served(conn, productid: int) -> bool:
    """True when the product is in the catalogue or the inference log (kept rows included)."""
    return bool(_scalar(
        conn, """SELECT EXISTS (SELECT 1 FROM products WHERE productid = %(p)s)
                     OR EXISTS (SELECT 1 FROM inference_log WHERE productid = %(p)s)
                     OR EXISTS (SELECT 1 FROM inference_log_retained WHERE productid = %(p)s)""",
        {"p": int(productid)}))


def feedback_label_counts(conn, codes: Sequence[int]) -> dict:
    """What the next training would take from feedback: new_labels (products with a label no
    training used yet), new_feedback (those labels, as rows), feedback_rows (products it would add
    with their logged text), overrides (products whose code the latest label would change),
    max_feedback_id (the newest usable label)."""
    return _one(
        conn,
        f"""WITH labels AS (
                SELECT f.id, f.productid, f.true_code, f.created_at, f.inference_id, f.inference_logged_at,
                       NOT EXISTS (SELECT 1 FROM feedback_used u WHERE u.feedback_id = f.id) AS is_new
                FROM feedback f WHERE f.productid IS NOT NULL AND f.true_code = ANY(%(codes)s::int[])),
            latest AS (
                SELECT DISTINCT ON (productid) * FROM labels ORDER BY productid, {latest_label_first()}),
            state AS (
                SELECT l.productid, l.true_code, p.prdtypecode, p.productid IS NOT NULL AS in_products,
                       p.productid IS NULL AND EXISTS ({_LOGGED_TEXT.format(l="l")}) AS addable
                FROM latest l LEFT JOIN products p USING (productid)),
            usable AS (SELECT * FROM state WHERE in_products OR addable)
            SELECT (SELECT count(DISTINCT n.productid) FROM labels n JOIN usable s USING (productid)
                    WHERE n.is_new) AS new_labels,
                   (SELECT count(*) FROM labels n JOIN usable s USING (productid) WHERE n.is_new) AS new_feedback,
                   (SELECT count(*) FROM usable WHERE addable) AS feedback_rows,
                   (SELECT count(*) FROM usable WHERE in_products AND prdtypecode <> true_code) AS overrides,
                   (SELECT max(n.id) FROM labels n JOIN usable s USING (productid)) AS max_feedback_id""",
        {"codes": [int(c) for c in codes]},
    )


def apply_feedback_labels(conn, pipeline_run_id: int, codes: Sequence[int],
                          title_ok: Callable[[str], bool] | None = None) -> dict:
    """Make the labels training rows, in the caller's transaction (the train step's): every
    labelled product in `products` takes its latest label (each change audited in
    label_overrides), a product seen only in traffic is added with its logged text (source
    'feedback', no batch), and the labels used are recorded in feedback_used. State-based, so
    running it twice changes nothing the second time. All labels are read in one statement (one
    snapshot): a label committed meanwhile is neither applied nor marked used.

    title_ok: the rule a title must pass to be trained on (features.has_letter_or_digit, the
    load's rule): a feedback row whose logged title fails it is not kept (nor one an earlier
    training added), counted in feedback_rows_no_text; its label is marked used all the same (it
    was considered: it must not reopen the feedback gate at every count).

    label_disagreements: the products trained on whose labellers disagree (label_disagreements)."""
    params = {"codes": [int(c) for c in codes], "run": pipeline_run_id}
    _exec(conn, "DROP TABLE IF EXISTS fb_labels, fb_latest, fb_applied")
    _exec(conn, """CREATE TEMP TABLE fb_labels ON COMMIT DROP AS
                   SELECT f.id, f.productid, f.true_code, f.submitted_by, f.created_at, f.inference_id,
                          f.inference_logged_at,
                          NOT EXISTS (SELECT 1 FROM feedback_used u WHERE u.feedback_id = f.id) AS is_new
                   FROM feedback f WHERE f.productid IS NOT NULL AND f.true_code = ANY(%(codes)s::int[])""",
          params)
    _exec(conn, f"""CREATE TEMP TABLE fb_latest ON COMMIT DROP AS
                    SELECT DISTINCT ON (productid) * FROM fb_labels ORDER BY productid, {latest_label_first()}""")
    _exec(conn, "CREATE TEMP TABLE fb_applied (productid BIGINT PRIMARY KEY) ON COMMIT DROP")
    _exec(conn, "INSERT INTO fb_applied SELECT p.productid FROM products p JOIN fb_latest l USING (productid)")
    # a row that came from feedback takes the text of the prediction its latest label names, as
    # when it was added (else it would keep an older label's text, whichever training ran between)
    overrides = _exec(
        conn,
        f"""WITH target AS (
               SELECT p.productid, p.prdtypecode AS old_code, l.true_code, l.id AS feedback_id, l.submitted_by,
                      l.created_at, t.designation, t.description
               FROM products p JOIN fb_latest l USING (productid)
               LEFT JOIN LATERAL ({_LOGGED_TEXT.format(l="l")}) t ON p.source = 'feedback'
               WHERE p.prdtypecode <> l.true_code OR p.label_feedback_id IS DISTINCT FROM l.id
               FOR UPDATE OF p),
           changed AS (
               UPDATE products p SET prdtypecode = t.true_code, label_feedback_id = t.feedback_id,
                                     designation = coalesce(t.designation, p.designation),
                                     description = CASE WHEN t.designation IS NULL THEN p.description
                                                        ELSE t.description END
               FROM target t WHERE p.productid = t.productid)
           INSERT INTO label_overrides (productid, old_code, new_code, feedback_id, actor, labelled_at,
                                        pipeline_run_id)
           SELECT productid, old_code, true_code, feedback_id, submitted_by, created_at, %(run)s
           FROM target WHERE old_code <> true_code""",
        params,
    )
    added = _all(
        conn,
        f"""WITH added AS (
                INSERT INTO products (productid, designation, description, prdtypecode, batch_id, loaded_at,
                                      source, label_feedback_id)
                SELECT l.productid, t.designation, t.description, l.true_code, NULL, now(), 'feedback', l.id
                FROM fb_latest l CROSS JOIN LATERAL ({_LOGGED_TEXT.format(l="l")}) t
                WHERE NOT EXISTS (SELECT 1 FROM fb_applied a WHERE a.productid = l.productid)
                ON CONFLICT (productid) DO NOTHING
                RETURNING productid)
            INSERT INTO fb_applied SELECT productid FROM added RETURNING productid""",
    )
    added_ids = {r["productid"] for r in added}
    no_text: list[int] = []
    if title_ok is not None:
        no_text = [r["productid"] for r in _all(conn, "SELECT productid, designation FROM products "
                                                      "WHERE source = 'feedback'") if not title_ok(r["designation"])]
        if no_text:
            _exec(conn, "DELETE FROM products WHERE source = 'feedback' AND productid = ANY(%s::bigint[])", (no_text,))
    used = _one(
        conn,
        """WITH used AS (
               INSERT INTO feedback_used (feedback_id, productid, pipeline_run_id)
               SELECT l.id, l.productid, %(run)s FROM fb_labels l JOIN fb_applied a USING (productid)
               WHERE l.is_new
               ON CONFLICT (feedback_id) DO NOTHING
               RETURNING feedback_id, productid)
           SELECT count(*) AS labels, count(DISTINCT productid) AS products,
                  (SELECT max(l.id) FROM fb_labels l JOIN fb_applied a USING (productid)) AS max_feedback_id
           FROM used""",
        params,
    )
    disputed = _scalar(conn, f"""SELECT count(DISTINCT d.productid) FROM ({_disputed("fb_labels")}) d
                                  JOIN fb_applied a USING (productid) WHERE d.productid <> ALL(%s::bigint[])""",
                       (no_text,))
    return {"feedback_rows_added": len(added_ids - set(no_text)), "label_overrides": overrides,
            "label_disagreements": int(disputed or 0),
            "labels_used": used["labels"], "labelled_products_used": used["products"],
            "feedback_max_id": used["max_feedback_id"], "feedback_rows_no_text": len(no_text)}


def _disputed(source: str) -> str:
    """Each labeller's latest label of each product in `source` (rows with productid,
    submitted_by, true_code, created_at, id), kept only for the products whose labellers' latest
    labels name more than one code. A labeller who changes their own mind corrects, not disputes;
    labels with no name count as one labeller."""
    return f"""SELECT * FROM (
                   SELECT d.*, min(d.true_code) OVER w <> max(d.true_code) OVER w AS disputed
                   FROM (SELECT DISTINCT ON (productid, COALESCE(submitted_by, '')) *
                         FROM {source} ORDER BY productid, COALESCE(submitted_by, ''), {latest_label_first()}) d
                   WINDOW w AS (PARTITION BY d.productid)) x
               WHERE disputed"""


def label_disagreements(conn, codes: Sequence[int], limit: int = 50) -> list[dict]:
    """The labelled products whose labellers disagree (`_disputed`), the most recently labelled
    first: each labeller's latest label (newest first), the code training takes (the latest
    label), the title (the catalogue's, else the logged one) and `total`, every such product."""
    return _all(
        conn,
        f"""WITH labels AS (
                SELECT f.id, f.productid, f.submitted_by, f.true_code, f.created_at, f.inference_id,
                       f.inference_logged_at
                FROM feedback f WHERE f.productid IS NOT NULL AND f.true_code = ANY(%(codes)s::int[])),
            disputed AS ({_disputed("labels")}),
            latest AS (SELECT DISTINCT ON (productid) * FROM disputed ORDER BY productid, {latest_label_first()}),
            grouped AS (
                SELECT productid, count(*) OVER () AS total,
                       jsonb_agg(jsonb_build_object('submitted_by', submitted_by, 'prdtypecode', true_code,
                                                    'created_at', created_at, 'feedback_id', id)
                                 ORDER BY {latest_label_first()}) AS labels
                FROM disputed GROUP BY productid)
            SELECT g.productid, g.total, g.labels, l.true_code AS latest_code, l.created_at AS last_labelled_at,
                   p.prdtypecode AS training_code,
                   COALESCE(p.designation, (SELECT t.designation FROM ({_LOGGED_TEXT.format(l="l")}) t)) AS designation
            FROM grouped g JOIN latest l USING (productid) LEFT JOIN products p USING (productid)
            ORDER BY l.created_at DESC, l.id DESC LIMIT %(limit)s""",
        {"codes": [int(c) for c in codes], "limit": int(limit)},
    )


def label_overrides(conn, *, productid: int | None = None, pipeline_run_id: int | None = None,
                    limit: int = 100) -> list[dict]:
    """The audit of code changes by human labels, newest first."""
    return _all(
        conn,
        """SELECT id, productid, old_code, new_code, feedback_id, actor, labelled_at, pipeline_run_id, at
           FROM label_overrides
           WHERE (%(p)s::bigint IS NULL OR productid = %(p)s) AND (%(r)s::bigint IS NULL OR pipeline_run_id = %(r)s)
           ORDER BY id DESC LIMIT %(limit)s""",
        {"p": productid, "r": pipeline_run_id, "limit": int(limit)},
    )


def replace_feedback_products(conn, productids: Sequence[int]) -> int:
    """Delete the feedback rows of products a catalogue batch now brings (the catalogue row takes
    their place: its text and batch; the human label is applied again by the next training)."""
    ids = [int(p) for p in productids]
    if not ids:
        return 0
    return _exec(conn, "DELETE FROM products WHERE source = 'feedback' AND productid = ANY(%s::bigint[])", (ids,))
