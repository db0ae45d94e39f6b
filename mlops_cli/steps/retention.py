"""inference_log at production volume: daily partitions, rollups and retention (docs/SCALING.md).

Three steps of the daily pipeline (before and after `drift -> alert`), each audited in
pipeline_runs and safe to run twice or concurrently (the step's advisory lock; every operation
is idempotent):

partitions  creates the day partitions of inference_log from today to
            INFERENCE_LOG_PARTITIONS_AHEAD days ahead (the API does the same when it starts), and
            drains the default partition: rows written for a day that had no partition get that
            day's partition (the day's rollups are then forgotten: they no longer count its rows).
rollup      counts each closed UTC day of the drift windows once into inference_rollups, on the
            bins of the serving model's reference (drift_windows.compute_day_rollup), and counts
            again a day whose rollup saw a late row (a row of that day with a higher id).
retention   drops whole the partitions of the days older than INFERENCE_LOG_RETENTION_DAYS: no
            row-by-row DELETE. For each day: DETACH (an instant of ACCESS EXCLUSIVE on
            inference_log, under lock_timeout, retried), then, on the detached table only,
            archive it (INFERENCE_LOG_ARCHIVE_DIR, csv.gz or parquet, checksummed), copy the rows
            that must outlive it (feedback names them, or inference_log_holds) into
            inference_log_retained, and in one transaction: audit row (inference_log_drops),
            rollups forgotten, DROP TABLE. Interrupted after the detach, the next run finishes.
            The days of the report an active alert names are kept until it resolves (held_days).

Locks: no statement here waits longer than INFERENCE_LOG_LOCK_TIMEOUT_MS for a lock the serving
writer could queue behind (PostgreSQL queues later requests behind a waiting ACCESS EXCLUSIVE
one); it backs off and retries. DETACH ... CONCURRENTLY would avoid the ACCESS EXCLUSIVE lock,
but PostgreSQL refuses it on a table with a default partition, and the default partition is
what makes a write for a day without a partition never fail.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import time
from datetime import date, datetime, time as dtime, timedelta, timezone
from pathlib import Path
from typing import Callable

from .. import store
from ..config import Settings
from ..errors import Conflict, Invalid, TransientError
from ..labelling_pool import MAX_DAYS
from ..partitions import ensure_partitions, under_lock_timeout, utc_today
from ..runs import StepResult, StepRun, Trigger, run_step
from ..vocab import Step

log = logging.getLogger(__name__)

STEP_PARTITIONS = Step.PARTITIONS.value
STEP_ROLLUP = Step.ROLLUP.value
STEP_RETENTION = Step.RETENTION.value
FORMATS = ("csv", "csv.gz", "parquet")


def _midnight(d: date) -> datetime:
    return datetime.combine(d, dtime.min, tzinfo=timezone.utc)


def maintain_partitions(conn, settings: Settings, trigger: Trigger, *, as_of=None) -> StepResult:
    """The `partitions` step (see the module docstring)."""
    today = utc_today(None)

    def body(step: StepRun) -> None:
        out = ensure_partitions(conn, settings, today=today)
        step.outputs.update(out)
        step.message = (f"{len(out['created'])} partition(s) created, "
                        f"{sum(out['drained'].values())} row(s) drained from the default partition; "
                        f"{out['partitions']} partitions, ahead until {out['ahead_until']}")

    return run_step(conn, trigger, STEP_PARTITIONS, body, params={"today": today.isoformat()})


# --- rollups ------------------------------------------------------------------------------------------
def rollup_days(conn, settings: Settings, summary: dict, days, *, run_id: int | None = None) -> dict:
    """Roll up each of `days` (closed UTC days) whose rollup on `summary`'s bins is missing or
    stale; one transaction per day, under a SHARE lock of that day's partition (late writers of
    that day wait; a refused lock leaves the day to be scanned by the drift check)."""
    from ..drift_windows import compute_day_rollup, rollup_bins

    key, bins = rollup_bins(summary)
    store.upsert_rollup_bins(conn, key, bins)
    conn.commit()
    state = store.rollup_days_state(conn, key, list(days))
    conn.rollback()

    def store_day(c, day):
        r = compute_day_rollup(c, summary, day)
        store.replace_rollup_day(c, key, day, n_rows=r["n_rows"], max_id=r["max_id"], rows=r["rows"],
                                 pipeline_run_id=run_id)
        return r["n_rows"]

    done, fresh, busy = _each_day(conn, settings, days, state, "rollup", store_day,
                                  lambda day: store.mark_rollup_stale(conn, key, day))
    return {"bins_key": key, "rolled_up": done, "fresh": fresh, "busy": busy}


def labelling_days(conn, settings: Settings, days, *, run_id: int | None = None) -> dict:
    """Store the labelling candidate lists (labelling_pool.day_lists) of each of `days` whose lists
    are missing, stale or worn by the labels given since (store.labelling_days_worn), like
    rollup_days: one transaction per day under the day's SHARE lock."""
    from ..labelling_pool import DAY_POOL, WORN_AT, day_lists

    state = store.labelling_days_state(conn, list(days))
    worn = store.labelling_days_worn(conn, list(state), WORN_AT)
    conn.rollback()
    # shorter lists, or worn by the labels since: stored again
    state = {d: st for d, st in state.items() if st["pool"] >= DAY_POOL and d not in worn}

    def store_day(c, day):
        feedback_id = store.max_feedback_id(c)  # before the lists: a label after it is looked at again
        n_rows, max_id = store.day_row_count(c, day), store.day_max_ids(c, [day])[day]
        store.replace_labelling_day(c, day, n_rows=n_rows, max_id=max_id, pool=DAY_POOL,
                                    rows=day_lists(c, day, DAY_POOL), feedback_id=feedback_id,
                                    pipeline_run_id=run_id)
        return n_rows

    done, fresh, busy = _each_day(conn, settings, days, state, "labelling lists", store_day,
                                  lambda day: store.mark_labelling_day_stale(conn, day))
    return {"listed": done, "fresh": fresh, "busy": busy, "worn": [d.isoformat() for d in worn]}


def _each_day(conn, settings: Settings, days, state: dict, what: str, store_day, mark_stale) -> tuple:
    """Compute and store (store_day(conn, day) -> the day's rows) each day whose state is missing
    or late, in one transaction under the SHARE lock of the day's partition; a refused lock leaves
    the day busy (its readers scan it). Returns (done, fresh count, busy)."""
    done, fresh, busy = [], 0, []
    for day in days:
        st = state.get(day)
        if st is not None and not st["late"]:
            fresh += 1
            continue

        def one(c, day=day):
            store.lock_day_for_rollup(c, day)
            return store_day(c, day), store.inference_log_writers(c)

        try:
            n, writers = under_lock_timeout(conn, settings, f"{what} of {day}", one, attempts=3)
            done.append({"day": day.isoformat(), "rows": n, "recomputed": st is not None})
        except TransientError:
            busy.append(day.isoformat())
            continue
        if writers and not _confirmed(conn, day, n, writers, lambda: mark_stale(day)):
            done[-1]["stale"] = True
    return done, fresh, busy


WRITERS_WAIT = 30.0  # seconds a rollup waits for the writers in flight at its end (they take ms)


def _confirmed(conn, day, n_rows: int, writers: list[str], mark_stale, *, wait: float | None = None) -> bool:
    """Writers were inside a write to inference_log when the day's rollup was made: one of them
    may hold an id drawn before the rollup's lock for a row of this day, below its max_id, that
    the late-row test (an id above max_id) would never see. Once they have ended, the day's row
    count says whether one did; if so (or if they do not end in time) the rollup is marked stale:
    the drift check scans the day and the next rollup counts it again. False when marked."""
    deadline = time.monotonic() + (WRITERS_WAIT if wait is None else wait)
    pause = 0.01
    while store.transactions_running(conn, writers) and time.monotonic() < deadline:
        conn.rollback()
        time.sleep(pause)
        pause = min(0.5, pause * 2)
    ok = not store.transactions_running(conn, writers) and store.day_row_count(conn, day) == n_rows
    if not ok:
        mark_stale()
        log.info("rollup of %s: a writer in flight added a row of that day: marked stale", day)
    conn.commit()
    return ok


def rollup(conn, settings: Settings, trigger: Trigger, *, as_of=None, window_days=None) -> StepResult:
    """The `rollup` step: the closed days of the drift windows ending at `as_of`, on the bins of
    the reference the drift check will use."""
    from . import drift as drift_step

    when = drift_step.as_of_utc(as_of)
    longest = max(window_days or drift_step.DEFAULT_WINDOWS)
    start = when - timedelta(days=longest)
    first = start.date() if start == _midnight(start.date()) else start.date() + timedelta(days=1)
    days = [first + timedelta(days=k) for k in range((when.date() - first).days + 1)]
    days = [d for d in days if _midnight(d + timedelta(days=1)) <= when]  # whole days of the windows

    def body(step: StepRun) -> None:
        version, how = drift_step.serving_version(conn, settings, when, longest)
        ref = drift_step.reference_for(conn, settings, version, build_if_missing=False) if version else None
        conn.commit()
        if ref is not None:
            out = rollup_days(conn, settings, ref["summary"], days, run_id=step.pipeline_run_id)
            step.outputs.update(out, model_version=version, version_chosen_by=how)
            step.message = (f"{len(out['rolled_up'])} day(s) rolled up, {out['fresh']} fresh already"
                            + (f", {len(out['busy'])} busy (scanned by drift)" if out["busy"] else ""))
        # the labelling queue's lists need no reference: the queue's whole days before as_of's
        lists = labelling_days(conn, settings, [when.date() - timedelta(days=k) for k in range(MAX_DAYS, 0, -1)],
                               run_id=step.pipeline_run_id)
        step.outputs["labelling"] = lists
        listed = (f"labelling lists of {len(lists['listed'])} day(s) stored"
                  + (f" ({len(lists['worn'])} worn by labels)" if lists["worn"] else "") + f", {lists['fresh']} fresh"
                  + (f", {len(lists['busy'])} busy (scanned by the queue)" if lists["busy"] else ""))
        if ref is None:
            step.skip(f"no serving model with a stored reference: no drift counts to roll up; {listed}")
        else:
            step.message += f"; {listed}"

    return run_step(conn, trigger, STEP_ROLLUP, body,
                    params={"as_of": when.isoformat(), "days": [d.isoformat() for d in days]})


# --- archives -----------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parquet_schema():
    import pyarrow as pa

    return pa.schema([
        ("id", pa.int64()), ("logged_at", pa.timestamp("us", tz="UTC")), ("request_id", pa.string()),
        ("source", pa.string()), ("model_version", pa.string()), ("productid", pa.int64()),
        ("designation", pa.string()), ("description", pa.string()), ("designation_len", pa.int32()),
        ("description_len", pa.int32()), ("n_tokens", pa.int32()), ("n_oov", pa.int32()),
        ("script", pa.string()), ("lang", pa.string()), ("predicted_code", pa.int32()),
        ("confidence", pa.float64()), ("top_k", pa.string()), ("latency_ms", pa.float64()),
    ])


def archive_day(conn, day: date, out_path, fmt: str = "csv.gz", *, table: str | None = None) -> dict:
    """Write the rows of UTC day `day` (or of the detached partition `table`) to `out_path` as
    csv, csv.gz or parquet, atomically (a temporary file renamed); returns {path, format, rows,
    sha256}. A day already dropped still exports the rows inference_log_retained kept."""
    if fmt not in FORMATS:
        raise Invalid(f"Unknown archive format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    lo, hi = _midnight(day), _midnight(day + timedelta(days=1))
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = _parquet_schema()
            rows = 0
            batches = store.iter_table_rows(conn, table) if table else store.iter_inference_day_rows(conn, lo, hi)
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for batch in batches:
                    for r in batch:
                        if r["top_k"] is not None:
                            r["top_k"] = json.dumps(r["top_k"], ensure_ascii=False)
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    rows += len(batch)
        else:
            opener = (lambda p: gzip.open(p, "wt", encoding="utf-8", newline="", compresslevel=6)) \
                if fmt == "csv.gz" else (lambda p: open(p, "w", encoding="utf-8", newline=""))
            with opener(tmp) as f:
                rows = store.copy_table_csv(conn, table, f) if table else store.copy_inference_day_csv(conn, f, lo, hi)
        conn.rollback()
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": str(out_path), "format": fmt, "rows": int(rows), "sha256": _sha256(out_path)}


def archive_path(settings: Settings, day: date) -> Path:
    ext = {"csv.gz": "csv.gz", "parquet": "parquet"}[settings.inference_log_archive_format]
    return Path(settings.inference_log_archive_dir) / f"inference_log_{day.isoformat()}.{ext}"


# --- retention ----------------------------------------------------------------------------------------
def _drop_detached(conn, settings: Settings, name: str, actor: str | None, run_id: int | None) -> dict:
    """Archive (if configured), keep the rows that must outlive it, audit and drop a detached
    day partition. Locks only that table: the serving writer never sees it."""
    day = store.partition_day(name)
    archive = None
    if settings.inference_log_archive_dir:
        archive = archive_day(conn, day, archive_path(settings, day), settings.inference_log_archive_format,
                              table=name)
    rows = store.count_table_rows(conn, name)
    if archive is not None and archive["rows"] != rows:
        raise Conflict(f"archive of {day} has {archive['rows']} rows, the partition {rows}: not dropped")
    kept = store.copy_kept_rows(conn, name, _midnight(day))
    store.delete_rollups(conn, [day])
    drop_id = store.insert_partition_drop(
        conn, day=day, partition_name=name, rows_dropped=rows, rows_kept=kept,
        archive_path=archive and archive["path"], archive_format=archive and archive["format"],
        archive_rows=archive and archive["rows"], archive_sha256=archive and archive["sha256"],
        retention_days=settings.inference_log_retention_days, actor=actor, pipeline_run_id=run_id)
    store.drop_detached_table(conn, name)
    conn.commit()
    log.info("inference_log day %s dropped: %d rows, %d kept%s", day, rows, kept,
             f", archived to {archive['path']}" if archive else "")
    return {"day": day.isoformat(), "rows": rows, "kept": kept, "archive": archive, "drop_id": drop_id}


def held_days(conn) -> dict:
    """{day: why}: the days of the windows of the reports that active alerts name. Retention keeps
    them (attached, whole) until the alert resolves: the rows behind an open alert stay readable."""
    held: dict = {}
    for w in store.active_alert_windows(conn):
        end = w["as_of"].astimezone(timezone.utc)
        first = (end - timedelta(days=int(w["window_days"]))).date()
        for k in range((end.date() - first).days + 1):
            held.setdefault(first + timedelta(days=k), f"alert #{w['alert_id']} (drift report #{w['report_id']})")
    return held


def _drop_days(conn, settings: Settings, table: str, horizon: datetime, drop: Callable[[str], dict],
               keep: dict | None = None) -> list[dict]:
    """The day partitions of `table` wholly older than `horizon`: those a run left detached, then
    the attached ones but the days in `keep`, each DETACHed under lock_timeout; drop(name) does
    the rest of one day."""
    dropped = [drop(name) for name in store.detached_partition_tables(conn, table)  # an interrupted run's
               if store.partition_day(name) < horizon.date()]
    conn.rollback()
    old = [p for p in store.inference_partitions(conn, table) if not p["is_default"] and p["upper"] <= horizon
           and store.partition_day(p["name"]) not in (keep or {})]
    conn.rollback()
    for p in old:
        under_lock_timeout(conn, settings, f"detach of {p['name']}",
                           lambda c, name=p["name"]: store.detach_partition(c, name, table))
        dropped.append(drop(p["name"]))
    return dropped


def apply_retention(conn, settings: Settings, *, today: date | None = None, actor: str | None = None,
                    run_id: int | None = None) -> dict:
    """Drop the day partitions wholly older than INFERENCE_LOG_RETENTION_DAYS (see the module
    docstring); purge the default partition's rows of those days."""
    today = utc_today(today)
    horizon = _midnight(today - timedelta(days=settings.inference_log_retention_days))
    held = {d: why for d, why in held_days(conn).items() if d < horizon.date()}
    conn.rollback()
    dropped = _drop_days(conn, settings, "inference_log", horizon,
                         lambda name: _drop_detached(conn, settings, name, actor, run_id), keep=held)
    kept, purged = under_lock_timeout(conn, settings, "purge of the default partition",
                                      lambda c: store.purge_default_before(c, horizon))
    offers = store.prune_labelling_offers(conn, horizon)  # offered before the horizon: of dropped days
    held_now = [{"day": store.partition_day(p["name"]).isoformat(), "by": held[store.partition_day(p["name"])]}
                for p in store.inference_partitions(conn) if not p["is_default"] and p["upper"] <= horizon]
    conn.commit()
    return {"horizon": horizon.isoformat(), "retention_days": settings.inference_log_retention_days,
            "dropped": dropped, "default_purged": purged, "default_kept": kept,
            "held": held_now,
            "shadow": _shadow_retention(conn, settings, horizon), "labelling_offers_pruned": offers}


def _shadow_retention(conn, settings: Settings, horizon: datetime) -> dict:
    """The shadow challenger's rows of the same days (migration 011): whole partitions dropped
    the same way, nothing kept or archived (they are derived: the champion's row and the label
    are what an audit needs), and the shadow's load failures last seen before then. Audited in
    the step's outputs."""
    def drop(name: str) -> dict:
        out = {"day": store.partition_day(name).isoformat(), "rows": store.drop_table_rows(conn, name)}
        conn.commit()
        return out

    dropped = _drop_days(conn, settings, "shadow_predictions", horizon, drop)
    purged = under_lock_timeout(conn, settings, "purge of the shadow default partition",
                                lambda c: store.purge_shadow_default_before(c, horizon))
    failures = store.prune_shadow_load_failures(conn, horizon)  # hosts long gone, loads long fixed
    conn.commit()
    return {"dropped": dropped, "default_purged": purged, "load_failures_pruned": failures}


def retention(conn, settings: Settings, trigger: Trigger, *, as_of=None) -> StepResult:
    """The `retention` step (see the module docstring). Days are counted from today, not from a
    back-dated --as-of: re-running an old day's pipeline never drops more."""
    today = utc_today(None)

    def body(step: StepRun) -> None:
        out = apply_retention(conn, settings, today=today, actor=trigger.actor, run_id=step.pipeline_run_id)
        step.outputs.update(out)
        n = sum(d["rows"] for d in out["dropped"])
        step.message = (f"{len(out['dropped'])} day(s) older than {out['horizon'][:10]} dropped ({n} rows, "
                        f"{sum(d['kept'] for d in out['dropped'])} kept)")
        if out["held"]:
            step.message += (f"; {len(out['held'])} older day(s) kept for an active alert "
                             f"({out['held'][0]['by']}: resolve it to let them go)")
        shadow = out["shadow"]["dropped"]
        if shadow:
            step.message += f"; shadow rows: {len(shadow)} day(s) dropped ({sum(d['rows'] for d in shadow)} rows)"

    return run_step(conn, trigger, STEP_RETENTION, body,
                    params={"today": today.isoformat(), "retention_days": settings.inference_log_retention_days})
