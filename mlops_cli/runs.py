"""Gating, locking and audit of pipeline steps, on the pipeline_runs table.

Every step (load, train, evaluate, promote, rollback, drift, alert, ...) runs through `run_step`:
  1. running rows whose database session is gone are marked failed (abandoned);
  2. the step's advisory lock is taken, or a 'skipped' row says another run is in progress;
  3. a 'running' row is committed, so people and the UI see the step live;
  4. the step body does its work in one transaction, and the final status is written in that
     same transaction: data and audit row land together or not at all;
  5. on error the transaction is rolled back and the row is marked failed with the error.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time
import zlib
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import store
from .errors import AlreadyRunning, TransientError
from .vocab import Pipeline, TriggeredBy, values

log = logging.getLogger(__name__)

TRIGGERS = values(TriggeredBy)
PIPELINES = values(Pipeline)

# A test hook that production never sets: called with the step's name right before its body, so
# that the crash and failure tests can make a step fail, hang or raise a TransientError
# (tests/faults.py installs it, in the test process and in the processes the tests start).
FAULT_HOOK: Callable[[str], None] | None = None


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Trigger:
    """Who and what started a step: recorded on every pipeline_runs row."""

    triggered_by: str = "cli"
    actor: str | None = None
    pipeline: str = "manual"
    parent_run_id: int | None = None
    slot: str | None = None

    def __post_init__(self):
        if self.triggered_by not in TRIGGERS:
            raise ValueError(f"triggered_by must be one of {', '.join(TRIGGERS)}, not {self.triggered_by!r}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {', '.join(PIPELINES)}, not {self.pipeline!r}")

    @classmethod
    def from_env(cls, by: str | None = None, **kw) -> "Trigger":
        """CLI default: MLOPS_TRIGGERED_BY (the crontab sets 'cron'), actor from --by or user@host."""
        from .errors import Invalid

        triggered_by = (os.environ.get("MLOPS_TRIGGERED_BY") or "").strip() or "cli"
        if triggered_by not in TRIGGERS:
            raise Invalid(f"MLOPS_TRIGGERED_BY must be one of {', '.join(TRIGGERS)}, got {triggered_by!r}")
        return cls(
            triggered_by=triggered_by,
            # a blank --by is no name: the next source names who acts
            actor=(by or "").strip() or (os.environ.get("MLOPS_ACTOR") or "").strip() or default_actor(),
            **kw,
        )

    def child(self, **kw) -> "Trigger":
        values = dict(self.__dict__)
        values.update(kw)
        return Trigger(**values)


@dataclass
class StepResult:
    step: str
    status: str  # succeeded | failed | skipped
    pipeline_run_id: int | None  # this step's pipeline_runs row (None: never recorded)
    message: str = ""
    outputs: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("succeeded", "skipped")

    def as_dict(self) -> dict:
        return {"step": self.step, "status": self.status, "pipeline_run_id": self.pipeline_run_id,
                "message": self.message, "outputs": self.outputs}


class StepRun:
    """Handle given to a step body: record outputs, consume an upstream run, or skip."""

    def __init__(self, conn, pipeline_run_id: int, step: str):
        self.conn = conn
        self.pipeline_run_id = pipeline_run_id
        self.step = step
        self.outputs: dict = {}
        self.status = "succeeded"
        self.message = ""

    def consume(self, upstream_run_id: int | None) -> None:
        """Record which upstream run this step uses (the gate: it is then 'consumed')."""
        if upstream_run_id is not None:
            store.set_upstream_run(self.conn, self.pipeline_run_id, upstream_run_id)

    def skip(self, message: str) -> None:
        self.status = "skipped"
        self.message = message


class StepFailed(Exception):
    """Raised by run_step after the failure is recorded; wraps the original error."""

    def __init__(self, result: StepResult, cause: BaseException):
        super().__init__(result.message)
        self.result = result
        self.cause = cause


def lock_key(name: str) -> int:
    """A stable 63-bit advisory lock key for a name such as 'step:load' or 'pipeline:weekly'."""
    return (0x6D6C << 48) | zlib.crc32(name.encode()) << 8


@contextmanager
def advisory_lock(conn, name: str) -> Iterator[None]:
    """Session-level advisory lock; AlreadyRunning when another session holds it.

    Session-level so that a crash releases it: PostgreSQL drops it with the connection.
    """
    key = lock_key(name)
    got = store.try_advisory_lock(conn, key)
    conn.commit()
    if not got:
        raise AlreadyRunning(f"another {name.split(':', 1)[-1]} run is in progress")
    try:
        yield
    finally:
        try:
            store.advisory_unlock(conn, key)
            conn.commit()
        except Exception:  # connection already broken: the server released the lock with it
            pass


def recover_abandoned(conn) -> list[int]:
    ids = store.mark_abandoned_runs(conn)
    conn.commit()
    return ids


def record_skip(conn, trigger: Trigger, step: str, message: str, params: dict | None = None) -> StepResult:
    run_id = store.insert_run(
        conn, pipeline=trigger.pipeline, step=step, status="skipped", triggered_by=trigger.triggered_by,
        actor=trigger.actor, params=params, parent_run_id=trigger.parent_run_id, slot=trigger.slot,
        pid=os.getpid(), hostname=socket.gethostname(), outputs={"message": message},
    )
    conn.commit()
    return StepResult(step, "skipped", run_id, message, {"message": message})


def run_step(
    conn,
    trigger: Trigger,
    step: str,
    body: Callable[[StepRun], None],
    *,
    params: dict | None = None,
    upstream_run_id: int | None = None,
    lock: bool = True,
) -> StepResult:
    """Run `body` as one audited, locked, transactional step. See the module docstring.

    Returns the StepResult (succeeded or skipped); raises StepFailed after recording a failure.
    """
    recover_abandoned(conn)
    lock_cm = advisory_lock(conn, f"step:{step}") if lock else nullcontext()
    try:
        lock_cm.__enter__()
    except AlreadyRunning as exc:
        holder = store.running_runs(conn, step)
        conn.rollback()
        msg = f"{exc} (run #{holder[-1]['id']})" if holder else str(exc)
        return record_skip(conn, trigger, step, f"skipped: {msg}", params)
    try:
        run_id = store.insert_run(
            conn, pipeline=trigger.pipeline, step=step, status="running",
            triggered_by=trigger.triggered_by, actor=trigger.actor, params=params,
            upstream_run_id=upstream_run_id, parent_run_id=trigger.parent_run_id, slot=trigger.slot,
            pid=os.getpid(), hostname=socket.gethostname(),
        )
        conn.commit()
        handle = StepRun(conn, run_id, step)
        # The step's own measure of its duration, recorded beside finished_at - started_at so
        # the audit row can be checked against it.
        started = time.perf_counter()
        try:
            if FAULT_HOOK is not None:
                FAULT_HOOK(step)
            body(handle)
            outputs = dict(handle.outputs)
            if handle.message:
                outputs.setdefault("message", handle.message)
            outputs["step_seconds"] = round(time.perf_counter() - started, 3)
            store.finish_run(conn, run_id, handle.status, outputs)
            conn.commit()
        except BaseException as exc:
            message = _error_text(exc)
            handle.outputs["step_seconds"] = round(time.perf_counter() - started, 3)
            try:
                conn.rollback()
                store.finish_run(conn, run_id, "failed", handle.outputs, error=message)
                conn.commit()
            except Exception as lost:
                # the connection itself is gone (the cause, or after it): the row stays running
                # until the next step start finds its session ended (store.mark_abandoned_runs);
                # the cause is what the caller is told, and what decides a retry
                log.error("step %s (run #%s) failed: %s; the failure could not be recorded: %s",
                          step, run_id, message, _error_text(lost))
                message += f" (not recorded in run #{run_id}: {_error_text(lost)})"
            result = StepResult(step, "failed", run_id, message, dict(handle.outputs))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise StepFailed(result, exc) from exc
        return StepResult(step, handle.status, run_id, handle.message, outputs)
    finally:
        lock_cm.__exit__(None, None, None)


def _error_text(exc: BaseException) -> str:
    # PostgreSQL text cannot hold NUL: an error quoting a binary file's bytes would otherwise make
    # finish_run fail and leave the run to be found abandoned
    from .db import redact

    # and no password: an MLflow client error quotes the URL it called, user:password@ included;
    # this text goes to pipeline_runs.error, the API's answers and the failure notification
    text = redact(str(exc).strip() or type(exc).__name__).replace("\x00", "\\x00")
    return text if len(text) < 4000 else text[:4000] + "..."



# SQLSTATE classes worth retrying: 08 connection, 40 transaction rollback (serialization,
# deadlock), 53 insufficient resources, 57 operator intervention (a shutdown, a cancel).
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the database or the MLflow server was unreachable for a moment.
    The one rule for the steps (with_retries) and the serving writer (serving/inference_log.py
    adds only what is particular to a writer that starts before the schema)."""
    cause = exc.cause if isinstance(exc, StepFailed) else exc
    if isinstance(cause, TransientError):
        return True
    try:
        import psycopg2

        if isinstance(cause, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return True
        if isinstance(cause, psycopg2.Error) and (cause.pgcode or "")[:2] in TRANSIENT_SQLSTATE_CLASSES:
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import requests

        if isinstance(cause, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    from . import registry

    return registry.unreachable(cause)  # by MLflow's error code, never by the message


def with_retries(settings, attempt: Callable[[object], StepResult], *, attempts: int | None = None,
                 delay: float | None = None) -> StepResult:
    """Call attempt(conn) with a fresh migrated connection; retry transient failures with backoff.

    Each failed attempt leaves its own failed pipeline_runs row (when it got that far); after the
    last attempt the error propagates (the CLI exits non-zero).
    """
    from . import db

    attempts = attempts if attempts is not None else max(1, settings.step_retries)
    delay = delay if delay is not None else settings.step_retry_delay
    for n in range(1, attempts + 1):
        try:
            conn = db.open_db(settings)
        except Exception as exc:
            if n < attempts and is_transient(exc):
                log.warning("attempt %d/%d: %s; retrying in %.1fs", n, attempts, exc, delay)
                time.sleep(delay)
                delay *= 2
                continue
            raise
        try:
            return attempt(conn)
        except Exception as exc:
            if n < attempts and is_transient(exc):
                log.warning("attempt %d/%d failed (transient): %s; retrying in %.1fs", n, attempts,
                            exc, delay)
                time.sleep(delay)
                delay *= 2
                continue
            raise
        finally:
            try:
                conn.close()
            except Exception:
                pass
    raise AssertionError("unreachable")
