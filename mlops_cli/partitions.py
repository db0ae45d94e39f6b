"""The day partitions of inference_log: created ahead, and the default partition drained.

Both the API (when it starts, serving/inference_log.py) and the daily pipeline's `partitions`
step (steps/retention.py) create them; neither depends on the other. Every statement that could
queue the serving writer behind an ACCESS EXCLUSIVE lock runs under lock_timeout and is retried
(under_lock_timeout): see docs/SCALING.md.
"""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta, timezone
from typing import Callable

from . import store
from .config import Settings
from .errors import TransientError

log = logging.getLogger(__name__)

LOCK_ATTEMPTS = 40          # a lock refused this many times in a row fails the step (it is retried)
BACKOFF_MAX = 2.0           # seconds between attempts, at most


def utc_today(as_of=None) -> date:
    if as_of is None:
        return datetime.now(timezone.utc).date()
    if isinstance(as_of, datetime):
        return as_of.astimezone(timezone.utc).date()
    return as_of


def _lock_refused(exc: BaseException) -> bool:
    from psycopg2 import errors

    return isinstance(exc, (errors.LockNotAvailable, errors.DeadlockDetected))


def under_lock_timeout(conn, settings: Settings, what: str, fn: Callable, attempts: int | None = None):
    """fn(conn) in its own transaction under lock_timeout, committed; refused locks are retried
    with a growing pause (the writer's COPY holds its locks for milliseconds), TransientError
    after `attempts`."""
    attempts = attempts or LOCK_ATTEMPTS  # read at call time (a test lowers it)
    pause = 0.05
    for attempt in range(1, attempts + 1):
        try:
            store.set_lock_timeout(conn, settings.inference_log_lock_timeout_ms)
            result = fn(conn)
            conn.commit()
            return result
        except Exception as exc:
            conn.rollback()
            if not _lock_refused(exc):
                raise
            log.info("%s: lock not granted within %d ms (attempt %d), retrying", what,
                     settings.inference_log_lock_timeout_ms, attempt)
            time.sleep(pause)
            pause = min(BACKOFF_MAX, pause * 2)
    raise TransientError(f"{what}: lock not granted in {attempts} attempts of "
                         f"{settings.inference_log_lock_timeout_ms} ms (INFERENCE_LOG_LOCK_TIMEOUT_MS)")


def ensure_partitions(conn, settings: Settings, *, today: date | None = None) -> dict:
    """Partitions from `today` to INFERENCE_LOG_PARTITIONS_AHEAD days ahead, and the default
    partition drained (rows of days within retention moved into their day's partition; older
    ones are retention's), for inference_log and (under "shadow") shadow_predictions. Commits
    each partition on its own. Returns what was done."""
    today = utc_today(today)
    horizon = today - timedelta(days=settings.inference_log_retention_days)
    ahead = [today + timedelta(days=k) for k in range(max(0, settings.inference_log_partitions_ahead) + 1)]
    out = _ensure_table(conn, settings, "inference_log", ahead, horizon)
    out["shadow"] = _ensure_table(conn, settings, "shadow_predictions", ahead, horizon)
    return out


def _ensure_table(conn, settings: Settings, table: str, ahead: list[date], horizon: date) -> dict:
    created, drained = [], {}
    waiting = {r["day"]: int(r["n"]) for r in store.default_partition_days(conn, table)}
    conn.rollback()
    for day in sorted(set(ahead) | {d for d in waiting if d >= horizon}):
        def one(c, day=day):
            moved = store.ensure_day_partition(c, day, table)
            if moved > 0 and table == "inference_log":
                store.delete_rollups(c, [day])  # they did not count the rows just moved in
            return moved

        moved = under_lock_timeout(conn, settings, f"{table} partition of {day}", one)
        if moved >= 0:
            created.append(day.isoformat())
        if moved > 0:
            drained[day.isoformat()] = moved
    return {"created": created, "drained": drained,
            "ahead_until": ahead[-1].isoformat(), "partitions": len(store.inference_partitions(conn, table))}


def ensure_partitions_ahead(settings: Settings, connect: Callable | None = None) -> dict | None:
    """ensure_partitions on a connection of its own (the API at start). Never raises: a failure
    is logged (the default partition takes the rows meanwhile)."""
    from . import db

    conn = None
    try:
        conn = (connect or (lambda: db.connect(settings, application_name="mlops-partitions")))()
        out = ensure_partitions(conn, settings)
        if out["created"]:
            log.info("inference_log partitions created: %s", ", ".join(out["created"]))
        return out
    except Exception as exc:  # serving goes on: rows for a missing day land in the default partition
        log.warning("inference_log partitions not created ahead: %s", str(exc).strip())
        return None
    finally:
        if conn is not None:
            try:
                conn.rollback()
                conn.close()
            except Exception:
                pass
