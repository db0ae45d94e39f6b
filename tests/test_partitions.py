"""inference_log partitioned by day, on the real embedded PostgreSQL: the migration of a populated
table, partitions made ahead and the default partition drained, retention (whole partitions
dropped, labelled and held rows kept, archives, audit, an interrupted drop finished, a busy table
never waited on), the per-day archive export, and the daily pipeline's maintenance steps run
twice. The rollups' equality with the row scan is in test_drift.py (it needs a trained model).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import shutil
import threading
import uuid
from datetime import date, datetime, timedelta, timezone

import psycopg2
import pytest

from conftest import _admin, _with_db, query
from mlops_cli import db, partitions, store
from mlops_cli.errors import TransientError
from mlops_cli.runs import Trigger
from mlops_cli.steps import retention

T = Trigger(actor="pytest")
UTC = timezone.utc


def _row(at: datetime, i: int, **kw) -> dict:
    r = {"logged_at": at, "request_id": f"req-{uuid.uuid4().hex[:8]}-{i}", "source": "test",
         "model_version": "1", "productid": 1000 + i, "designation": f"titre produit {i}",
         "description": "" if i % 3 == 0 else f"description {i}", "designation_len": len(f"titre produit {i}"),
         "description_len": 0 if i % 3 == 0 else len(f"description {i}"), "n_tokens": 3, "n_oov": i % 2,
         "script": "latin", "lang": "fr", "predicted_code": 2583, "confidence": 0.5 + (i % 5) / 10,
         "top_k": [{"code": 2583, "p": 0.5}], "latency_ms": 1.5}
    r.update(kw)
    return r


def _write_days(conn, first: date, days: int, per_day: int) -> list[dict]:
    rows = []
    for d in range(days):
        day = first + timedelta(days=d)
        store.ensure_inference_partition(conn, day)
        base = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        rows += [_row(base + timedelta(seconds=60 * (k + 1)), d * per_day + k) for k in range(per_day)]
    store.insert_inference_rows(conn, rows)
    conn.commit()
    return rows


def _partitions(conn) -> dict:
    out = {p["name"]: p for p in store.inference_partitions(conn)}
    conn.rollback()
    return out


def _digest(conn, table: str = "inference_log") -> tuple:
    """(count, md5 of every row by id): the same rows, ids and values."""
    return tuple(query(conn, f"""SELECT count(*), md5(string_agg(concat_ws('|', id, logged_at, request_id, source,
                                    model_version, productid, designation, description, designation_len,
                                    description_len, n_tokens, n_oov, script, lang, predicted_code, confidence,
                                    top_k::text, latency_ms), ',' ORDER BY id)) FROM {table}""")[0])


# --- the migration ------------------------------------------------------------------------------------
@pytest.fixture
def old_schema_db(pg_server, tmp_path):
    """A database at migration 008 (inference_log not partitioned), populated."""
    admin_url, _template, _mlflow = pg_server
    name = f"mig_{uuid.uuid4().hex[:8]}"
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    old = tmp_path / "sql008"
    old.mkdir()
    for p in db.migration_files():
        if p[0] <= 8:
            shutil.copy(p[2], old / p[2].name)
    conn = psycopg2.connect(_with_db(admin_url, name))
    db.migrate(conn, old)
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO inference_log (logged_at, request_id, source, model_version, productid, designation,
                                                  description, designation_len, description_len, n_tokens, n_oov,
                                                  script, lang, predicted_code, confidence, top_k, latency_ms)
                       SELECT timestamptz '2030-03-01 00:00:00+00' + g * interval '47 minutes', 'old-' || g, 'api', '3',
                              g, 'titre ' || g, CASE WHEN g % 4 = 0 THEN '' ELSE 'desc' END, 7, 4, 2, g % 2,
                              'latin', 'fr', 10, 0.25 + (g % 7) / 10.0, '[{"code": 10}]'::jsonb, g / 3.0
                       FROM generate_series(1, 400) g""")
        cur.execute("INSERT INTO feedback (inference_id, true_code, submitted_by) VALUES (7, 40, 'alice')")
        cur.execute("INSERT INTO feedback (request_id, true_code, submitted_by) VALUES ('old-9', 50, 'bob')")
    conn.commit()
    yield conn
    conn.close()
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_converts_a_populated_table_without_losing_a_row(old_schema_db):
    conn = old_schema_db
    before = _digest(conn)
    next_before = query(conn, "SELECT last_value FROM inference_log_id_seq")[0][0]
    conn.rollback()

    # interrupted: the file is one transaction, nothing of it stays
    sql = [p for p in db.migration_files() if p[0] == 9][0][2].read_text()
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.rollback()
    assert query(conn, "SELECT count(*) FROM pg_partitioned_table")[0][0] == 0
    assert _digest(conn) == before

    assert "009_inference_log_partitions" in db.migrate(conn)
    assert query(conn, "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'inference_log'::regclass")[0][0] == 1
    assert _digest(conn) == before
    parts = _partitions(conn)
    days = {r[0] for r in query(conn, "SELECT DISTINCT (logged_at AT TIME ZONE 'UTC')::date FROM inference_log")}
    assert {store.partition_name(d) for d in days} <= set(parts) and store.DEFAULT_PARTITION in parts
    assert query(conn, f"SELECT count(*) FROM {store.DEFAULT_PARTITION}")[0][0] == 0
    # every row sits in its own day's partition
    assert query(conn, """SELECT count(*) FROM inference_log
                          WHERE tableoid::regclass::text <> 'inference_log_p' || to_char(logged_at AT TIME ZONE 'UTC', 'YYYYMMDD')""")[0][0] == 0
    # the sequence goes on; lookups by id and request_id still work and use the indexes
    store.insert_inference_rows(conn, [_row(datetime(2030, 3, 2, 5, tzinfo=UTC), 1)])
    assert query(conn, "SELECT max(id) FROM inference_log")[0][0] == next_before + 1
    assert store.find_inference(conn, inference_id=7)["request_id"] == "old-7"
    assert store.resolve_pending_feedback(conn) == 1
    assert query(conn, "SELECT inference_id FROM feedback WHERE request_id = 'old-9'")[0][0] == 9
    conn.commit()
    with conn.cursor() as cur:
        cur.execute("SET enable_seqscan = off")
        cur.execute("EXPLAIN SELECT * FROM inference_log WHERE request_id = 'old-9'")
        plan = "\n".join(r[0] for r in cur.fetchall())
    conn.rollback()
    assert "inference_log_request" in plan or "request_id_idx" in plan, plan

    # re-run on the converted table: a no-op
    with conn.cursor() as cur:
        cur.execute("DELETE FROM schema_migrations WHERE version = 9")
    conn.commit()
    after = _digest(conn)
    assert db.migrate(conn) == ["009_inference_log_partitions"]
    assert _digest(conn) == after


# --- partitions ahead, the default partition ----------------------------------------------------------
def test_partitions_ahead_and_a_day_without_partition_never_fails(conn, settings):
    today = datetime.now(UTC).date()
    out = partitions.ensure_partitions(conn, settings, today=today)
    parts = _partitions(conn)
    for k in range(settings.inference_log_partitions_ahead + 1):
        assert store.partition_name(today + timedelta(days=k)) in parts
    assert len(out["created"]) == settings.inference_log_partitions_ahead + 1
    assert partitions.ensure_partitions(conn, settings, today=today)["created"] == []  # idempotent

    far = today + timedelta(days=40)
    rows = [_row(datetime.combine(far, datetime.min.time(), tzinfo=UTC) + timedelta(hours=h), h) for h in range(5)]
    store.insert_inference_rows(conn, rows)  # no partition for that day: the default one takes them
    conn.commit()
    assert query(conn, f"SELECT count(*) FROM {store.DEFAULT_PARTITION}")[0][0] == 5
    out = partitions.ensure_partitions(conn, settings, today=today)
    assert out["drained"] == {far.isoformat(): 5}
    assert query(conn, f"SELECT count(*) FROM {store.DEFAULT_PARTITION}")[0][0] == 0
    assert query(conn, f"SELECT count(*) FROM {store.partition_name(far)}")[0][0] == 5
    assert {r["request_id"] for r in rows} == {r[0] for r in query(conn, "SELECT request_id FROM inference_log")}


def test_serving_start_creates_the_partitions_ahead(conn, settings):
    from mlops_cli.serving import InferenceLogger

    logger = InferenceLogger(settings, flush_seconds=0.05)
    logger.start()
    try:
        logger.log(_row(datetime.now(UTC), 1))
        assert logger.flush(30)
    finally:
        logger.close()
    today = datetime.now(UTC).date()
    parts = _partitions(conn)
    assert all(store.partition_name(today + timedelta(days=k)) in parts
               for k in range(settings.inference_log_partitions_ahead + 1))
    assert query(conn, f"SELECT count(*) FROM {store.partition_name(today)}")[0][0] == 1


# --- retention ----------------------------------------------------------------------------------------
@pytest.fixture
def old_days(conn, settings):
    """Five days that retention drops (100 to 96 days ago) and two it keeps, 20 rows a day, with
    feedback on two old rows (one by id, one by request_id still pending) and a hold on a third."""
    today = datetime.now(UTC).date()
    rows = _write_days(conn, today - timedelta(days=100), 5, 20)
    rows += _write_days(conn, today - timedelta(days=settings.inference_log_retention_days - 1), 2, 20)
    ids = {r[1]: r[0] for r in query(conn, "SELECT id, request_id FROM inference_log")}
    labelled, pending, held = rows[3], rows[25], rows[47]
    store.insert_feedback(conn, true_code=40, inference_id=ids[labelled["request_id"]], submitted_by="alice")
    store.insert_feedback(conn, true_code=50, request_id=pending["request_id"], submitted_by="bob")
    store.add_inference_hold(conn, ids[held["request_id"]], "alert:1", held_by="pytest")
    conn.commit()
    return {"today": today, "rows": rows, "ids": ids,
            "kept": {ids[labelled["request_id"]]: ["feedback"], ids[pending["request_id"]]: ["feedback"],
                     ids[held["request_id"]]: ["hold:alert:1"]}}


def test_retention_drops_whole_days_keeps_what_is_needed_archives_and_audits(conn, settings, old_days, tmp_path):
    s = settings.replace(inference_log_archive_dir=str(tmp_path / "archive"), inference_log_archive_format="csv.gz")
    today = old_days["today"]
    old = [today - timedelta(days=100 - k) for k in range(5)]
    for host, days in (("api-gone", s.inference_log_retention_days + 1), ("api-1", 0)):  # shadow load failures
        store.record_shadow_load(conn, model_name=s.model_name, model_version="3", host=host, error="cannot load")
        with conn.cursor() as cur:
            cur.execute("UPDATE shadow_load_failures SET last_at = now() - make_interval(days => %s) WHERE host = %s",
                        (days, host))
    conn.commit()
    r = retention.retention(conn, s, T)
    assert r.status == "succeeded", r.message
    assert r.outputs["shadow"]["load_failures_pruned"] == 1  # last seen before the horizon
    assert query(conn, "SELECT host FROM shadow_load_failures") == [("api-1",)]
    parts = _partitions(conn)
    assert not any(store.partition_name(d) in parts for d in old)
    assert store.partition_name(today - timedelta(days=s.inference_log_retention_days - 1)) in parts
    assert query(conn, "SELECT count(*) FROM inference_log")[0][0] == 40
    assert store.detached_partition_tables(conn) == []

    kept = {row[0]: list(row[1]) for row in query(conn, "SELECT id, reasons FROM inference_log_retained")}
    assert kept == old_days["kept"]
    some = next(iter(kept))
    assert store.find_inference(conn, inference_id=some)["id"] == some  # found past retention

    drops = store.list_partition_drops(conn)
    assert sorted(d["day"] for d in drops) == old
    assert sum(d["rows_dropped"] for d in drops) == 100 and sum(d["rows_kept"] for d in drops) == 3
    for d in drops:
        path = tmp_path / "archive" / f"inference_log_{d['day'].isoformat()}.csv.gz"
        assert d["archive_path"] == str(path) and d["pipeline_run_id"] == r.pipeline_run_id and d["actor"] == "pytest"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == d["archive_sha256"]
        with gzip.open(path, "rt", newline="") as f:
            got = list(csv.DictReader(f))
        assert len(got) == d["rows_dropped"] == d["archive_rows"] == 20
        assert all(g["logged_at"][:10] == d["day"].isoformat() for g in got)
    run = store.get_run(conn, r.pipeline_run_id)
    assert run["step"] == "retention" and len(run["outputs"]["dropped"]) == 5
    conn.rollback()

    again = retention.retention(conn, s, T)  # twice: nothing more to do
    assert again.status == "succeeded" and again.outputs["dropped"] == []
    assert len(store.list_partition_drops(conn)) == 5


def test_an_interrupted_drop_is_finished_by_the_next_run(conn, settings, old_days):
    name = store.partition_name(old_days["today"] - timedelta(days=100))
    store.detach_partition(conn, name)  # the process died right after its detach committed
    conn.commit()
    assert store.detached_partition_tables(conn) == [name]
    out = retention.apply_retention(conn, settings)
    assert store.detached_partition_tables(conn) == []
    assert {d["day"] for d in out["dropped"]} == {(old_days["today"] - timedelta(days=100 - k)).isoformat()
                                                   for k in range(5)}
    assert query(conn, "SELECT count(*) FROM inference_log_retained")[0][0] == 3


def test_the_days_behind_an_active_alert_are_kept_until_it_resolves(conn, settings):
    """A 7-day window 100 days back raised an alert someone acknowledged and is still on: retention
    keeps its days (attached: the report's rows stay readable) and says so, and drops them once the
    alert is resolved. The days outside the window go as usual."""
    from mlops_cli.ops.alerts import resolve

    today = datetime.now(UTC).date()
    first = today - timedelta(days=100)
    _write_days(conn, first - timedelta(days=2), 9, 20)  # two days before the window, then its 7
    as_of = datetime.combine(first + timedelta(days=7), datetime.min.time(), tzinfo=UTC)
    report = store.insert_drift_report(
        conn, pipeline_run_id=None, report_date=as_of.date(), window_days=7, as_of=as_of, model_version="1",
        n_inferences=140, n_feedback=0, status="ok", level="ALERT", data_drift_score=0.25,
        prediction_drift_score=0.0, performance_drift_score=None, drift_detected=True, details={})
    alert_id = store.insert_alert(conn, level="ALERT", cause="data_drift", report_id=report, message="Drift ALERT",
                                  details={}, notified=True)
    store.update_alert(conn, alert_id, status="acknowledged")
    conn.commit()
    r = retention.retention(conn, settings, T)
    assert [d["day"] for d in r.outputs["dropped"]] == [(first - timedelta(days=k)).isoformat() for k in (2, 1)]
    window = [(first + timedelta(days=k)).isoformat() for k in range(7)]
    assert r.outputs["held"] == [{"day": d, "by": f"alert #{alert_id} (drift report #{report})"} for d in window]
    assert r.message.endswith(f"; 7 older day(s) kept for an active alert (alert #{alert_id} (drift report "
                              f"#{report}): resolve it to let them go)")
    assert query(conn, "SELECT count(*) FROM inference_log")[0][0] == 7 * 20
    resolve(conn, settings, alert_id, by="pytest")
    again = retention.retention(conn, settings, T)
    assert [d["day"] for d in again.outputs["dropped"]] == window and again.outputs["held"] == []
    assert query(conn, "SELECT count(*) FROM inference_log")[0][0] == 0


def test_a_busy_table_is_never_waited_on_long(conn, settings, old_days, monkeypatch):
    """A long reader holds inference_log: the detach gives up after lock_timeout and retries (it
    never sits in the lock queue, where the serving writer would wait behind it); a writer goes on
    meanwhile; once the reader is done, the drop succeeds."""
    monkeypatch.setattr(partitions, "LOCK_ATTEMPTS", 3)
    s = settings.replace(inference_log_lock_timeout_ms=50)
    reader = db.connect(s)
    with reader.cursor() as cur:
        cur.execute("SELECT count(*) FROM inference_log")  # AccessShare on inference_log until commit
    failures = []

    def run_retention():
        c = db.connect(s)
        try:
            retention.apply_retention(c, s)
        except TransientError as exc:
            failures.append(str(exc))
        finally:
            c.close()

    t = threading.Thread(target=run_retention)
    t.start()
    writer = db.connect(s)
    for k in range(5):
        store.insert_inference_rows(writer, [_row(datetime.now(UTC), k)])
        writer.commit()
    t.join(120)
    writer.close()
    assert failures and "lock not granted" in failures[0]
    assert store.partition_name(old_days["today"] - timedelta(days=100)) in _partitions(conn)
    reader.rollback()
    reader.close()
    assert retention.apply_retention(conn, s)["dropped"]
    assert store.partition_name(old_days["today"] - timedelta(days=100)) not in _partitions(conn)


def test_rows_of_dropped_days_that_arrive_late_are_purged_from_the_default_partition(conn, settings, old_days):
    retention.apply_retention(conn, settings)
    late_day = old_days["today"] - timedelta(days=99)
    late = [_row(datetime.combine(late_day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=k), 900 + k)
            for k in range(3)]
    store.insert_inference_rows(conn, late)  # its partition is gone: the default partition takes them
    conn.commit()
    lid = query(conn, "SELECT id FROM inference_log WHERE request_id = %s", (late[0]["request_id"],))[0][0]
    store.insert_feedback(conn, true_code=10, inference_id=lid)
    conn.commit()
    out = retention.apply_retention(conn, settings)
    assert out["default_purged"] == 3 and out["default_kept"] == 1
    assert query(conn, f"SELECT count(*) FROM {store.DEFAULT_PARTITION}")[0][0] == 0
    assert query(conn, "SELECT count(*) FROM inference_log_retained WHERE id = %s", (lid,))[0][0] == 1


def test_retention_setting_is_validated():
    from mlops_cli.config import load_settings
    from mlops_cli.errors import MlopsError

    with pytest.raises(MlopsError, match="INFERENCE_LOG_RETENTION_DAYS"):
        load_settings({"INFERENCE_LOG_RETENTION_DAYS": "7"})
    with pytest.raises(MlopsError, match="INFERENCE_LOG_ARCHIVE_FORMAT"):
        load_settings({"INFERENCE_LOG_ARCHIVE_FORMAT": "zip"})


# --- the archive export -------------------------------------------------------------------------------
def test_export_a_day_as_csv_gz_and_parquet(conn, settings, old_days, cli, tmp_path):
    import pyarrow.parquet as pq

    day = old_days["today"] - timedelta(days=98)
    r = cli("export-inference-log", "--day", day.isoformat(), "--format", "parquet", "--out", tmp_path / "d.parquet")
    assert r.exit_code == 0, r.output
    table = pq.read_table(tmp_path / "d.parquet")
    assert table.num_rows == 20 and f"wrote 20 rows of {day}" in r.output
    assert hashlib.sha256((tmp_path / "d.parquet").read_bytes()).hexdigest() in r.output
    got = table.to_pylist()
    assert {g["request_id"] for g in got} == {x["request_id"] for x in old_days["rows"][40:60]}
    assert all(g["logged_at"].date() == day for g in got) and got[0]["top_k"].startswith("[")

    retention.apply_retention(conn, settings)  # dropped: only the kept row remains to export
    r = cli("export-inference-log", "--day", day.isoformat(), "--format", "csv.gz", "--out", tmp_path / "d.csv.gz")
    assert r.exit_code == 0 and "wrote 1 rows" in r.output
    with gzip.open(tmp_path / "d.csv.gz", "rt") as f:
        assert [row["request_id"] for row in csv.DictReader(f)] == [old_days["rows"][47]["request_id"]]

    r = cli("export-inference-log", "--since", "2030-01-01", "--format", "parquet", "--out", tmp_path / "x")
    assert r.exit_code != 0 and "--day" in r.output


# --- the daily pipeline's maintenance steps ------------------------------------------------------------
def test_daily_maintenance_steps_are_audited_and_safe_to_run_twice(conn, settings, old_days):
    from mlops_cli.pipeline import PIPELINES

    assert PIPELINES["daily"] == ("partitions", "rollup", "drift", "alert", "retention")
    first = retention.maintain_partitions(conn, settings, T)
    second = retention.maintain_partitions(conn, settings, T)
    assert first.status == second.status == "succeeded"
    assert second.outputs["created"] == [] and "partition(s) created" in second.message
    # no reference, no champion: the rollup step says so instead of failing
    r = retention.rollup(conn, settings, T)
    assert r.status == "skipped" and "reference" in r.message
    steps = [row[0] for row in query(conn, "SELECT step FROM pipeline_runs ORDER BY id")]
    assert steps == ["partitions", "partitions", "rollup"]
