"""Pipelines: the weekly (load -> train -> evaluate -> promote), the daily (partitions -> rollup ->
drift -> alert -> retention: the inference log's maintenance around the drift check, see
steps/retention.py) and the on-demand retrain (train -> evaluate -> promote).

A pipeline run is a pipeline_runs row (step 'pipeline') holding the pipeline's advisory lock; its
steps are child rows (parent_run_id). Each step is gated by pipeline_runs itself (train needs a
load it has not consumed, evaluate a train, promote an evaluate), so re-running a pipeline for the
same week resumes where the last run stopped: steps already done are skipped by their gates, a
failed step runs again. A failed step stops the chain (later steps are not started), the pipeline
exits non-zero and a notification goes out. Transient errors (database or MLflow unreachable) are
retried with backoff; each step has a timeout.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Callable, Iterator

from . import db, store
from .config import Settings
from .errors import AlreadyRunning, Conflict, Invalid, MlopsError, TimedOut, Unavailable
from .runs import StepFailed, StepResult, Trigger, advisory_lock, recover_abandoned, with_retries

log = logging.getLogger(__name__)

PIPELINES: dict[str, tuple[str, ...]] = {
    "weekly": ("load", "train", "evaluate", "promote"),
    "daily": ("partitions", "rollup", "drift", "alert", "retention"),
    "retrain": ("train", "evaluate", "promote"),
}


def steps_for(name: str, settings: Settings) -> tuple[str, ...]:
    """The steps a run of pipeline `name` starts with. AUTO_RETRAIN_ON_DRIFT adds the daily
    pipeline's decision step (steps/auto_retrain.py); when it decides to retrain, the retrain
    pipeline's steps follow in the same run (its outputs.then). SHADOW_MIN_REQUESTS > 0 adds
    `promote` to the daily pipeline: a challenger waiting for live evidence is decided on again
    each day (docs/shadow.md)."""
    steps = PIPELINES[name]
    if name == "daily" and settings.shadow_min_requests > 0:
        steps += ("promote",)
    if name == "daily" and settings.auto_retrain_on_drift:
        steps += ("auto_retrain",)
    return steps


@dataclass
class PipelineResult:
    pipeline: str
    status: str  # succeeded | failed | skipped
    pipeline_run_id: int | None  # the pipeline's own pipeline_runs row
    message: str = ""
    steps: list[StepResult] = field(default_factory=list)
    error_code: str | None = None  # the failed step's cause (errors.MlopsError.code): its exit code

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def as_dict(self) -> dict:
        return {"pipeline": self.pipeline, "status": self.status, "pipeline_run_id": self.pipeline_run_id,
                "message": self.message, "error_code": self.error_code, "steps": [s.as_dict() for s in self.steps]}


class StepTimeout(TimedOut):
    """Raised in the step by time_limit's alarm."""


# How long after the alarm the watchdog waits for it to have run before it cancels the step's
# query (the handler runs within milliseconds unless the main thread is inside a C call).
CANCEL_GRACE_SECONDS = 1.0


@contextmanager
def time_limit(seconds: float, step: str, conn=None) -> Iterator[None]:
    """Raise StepTimeout in the step after `seconds` (main thread only; elsewhere no limit).

    The alarm is a signal: Python runs its handler only between bytecodes, never while a call
    waits inside libpq (a lock, a long query). So when the handler has not run shortly after the
    limit, a watchdog thread cancels the query running on the step's connection `conn`, and the
    error that ends the step is the timeout."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    message = f"step {step} timed out after {seconds:.0f}s (STEP_TIMEOUT)"
    expired, handled = threading.Event(), threading.Event()

    def on_alarm(signum, frame):
        handled.set()
        expired.set()
        raise StepTimeout(message)

    def cancel_query():
        # Only when the alarm could not run: a step that got its StepTimeout in Python is
        # recording its failure on this connection, and a cancel would fail that instead.
        if handled.is_set():
            return
        expired.set()
        try:
            conn.cancel()  # psycopg2: safe from another thread; a no-op when no query runs
        except Exception as exc:  # the connection is already gone: the alarm still fires
            log.warning("could not cancel the query of step %s at its time limit: %s", step, exc)

    watchdog = threading.Timer(seconds + CANCEL_GRACE_SECONDS, cancel_query) if conn is not None else None
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        yield
    except StepTimeout:
        raise
    except Exception as exc:
        if not expired.is_set() or (isinstance(exc, StepFailed) and isinstance(exc.cause, StepTimeout)):
            raise
        # the query cancelled at the limit, the alarm not yet run: the step timed out
        if isinstance(exc, StepFailed):
            raise StepFailed(exc.result, StepTimeout(message)) from exc
        raise StepTimeout(message) from exc
    finally:
        if watchdog is not None:
            watchdog.cancel()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# step -> (its module in mlops_cli.steps, its function, the pipeline arguments it is given).
# The module is imported when the step runs: a daily run does not import the training stack.
# partitions and retention take no as_of from the pipeline: they act on today.
STEPS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "load": ("load", "load", ("as_of",)),
    "train": ("train", "train", ("force",)),
    "evaluate": ("evaluate", "evaluate", ()),
    "promote": ("promote", "promote", ()),
    "partitions": ("retention", "maintain_partitions", ()),
    "rollup": ("retention", "rollup", ("as_of",)),
    "drift": ("drift", "drift", ("as_of",)),
    "alert": ("alert", "alert", ()),
    "retention": ("retention", "retention", ()),
    "auto_retrain": ("auto_retrain", "auto_retrain", ()),
}


def _step_callable(step: str, as_of: date | None, pipeline: str, **extra) -> Callable:
    """The library function of a step, bound to its pipeline arguments (and `extra` ones)."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}")
    module, function, takes = STEPS[step]
    fn = getattr(importlib.import_module(f"{__package__}.steps.{module}"), function)
    # A retrain is a human's "train now": it trains even without a new load.
    given = {"as_of": as_of, "force": pipeline == "retrain"}
    kwargs = {**{name: given[name] for name in takes}, **extra}
    return lambda conn, s, t: fn(conn, s, t, **kwargs)


def slot_for(name: str, as_of: date) -> str | None:
    if name == "weekly":
        year, week, _ = as_of.isocalendar()
        return f"{year}-W{week:02d}"
    if name == "daily":
        return as_of.isoformat()
    return None


def run_pipeline(settings: Settings, name: str, trigger: Trigger, *, as_of: date | None = None,
                 on_step: Callable[[StepResult], None] | None = None) -> PipelineResult:
    """Run pipeline `name` under its advisory lock; see the module docstring."""
    if name not in PIPELINES:
        raise Invalid(f"Unknown pipeline {name!r}: choose one of {', '.join(PIPELINES)}")
    as_of = as_of or datetime.now(timezone.utc).date()
    slot = slot_for(name, as_of)
    pipeline_kind = name if name in ("weekly", "daily", "retrain") else "manual"
    base = trigger.child(pipeline=pipeline_kind, slot=slot)
    session = _open_session(settings, name)
    try:
        recover_abandoned(session)
        params = {"as_of": as_of.isoformat(), "steps": list(steps_for(name, settings))}
        try:
            lock = advisory_lock(session, f"pipeline:{name}")
            lock.__enter__()
        except AlreadyRunning:
            running = [r for r in store.running_runs(session, "pipeline") if r["pipeline"] == pipeline_kind]
            holder = f" (pipeline run #{running[-1]['id']})" if running else ""
            message = f"already running: another {name} pipeline is in progress{holder}"
            run_id = store.insert_run(
                session, pipeline=pipeline_kind, step="pipeline", status="skipped",
                triggered_by=base.triggered_by, actor=base.actor, params=params, slot=slot,
                pid=os.getpid(), hostname=_host(), outputs={"message": message})
            session.commit()
            return PipelineResult(name, "skipped", run_id, message)
        try:
            return _run_locked(session, settings, name, base, as_of, params, on_step)
        finally:
            lock.__exit__(None, None, None)
    finally:
        session.close()


def error_code(exc: BaseException | None) -> str:
    """The kind of a failed step's cause (errors.MlopsError.code): a domain error's own; a
    connection lost or a service unreachable (runs.is_transient: psycopg2's, MLflow's) is
    Unavailable, whatever raised it; anything else the generic ERROR."""
    from .runs import is_transient

    if isinstance(exc, MlopsError):
        return exc.code
    return Unavailable.code if exc is not None and is_transient(exc) else MlopsError.code


def _open_session(settings: Settings, name: str):
    """The pipeline's own connection, with the steps' retries: a database that is down exits 75
    after STEP_RETRIES attempts whether it went down before the pipeline or during a step."""
    from .runs import is_transient

    delay, attempts = settings.step_retry_delay, max(1, settings.step_retries)
    for n in range(1, attempts + 1):
        try:
            return db.open_db(settings, application_name=f"mlops-pipeline-{name}")
        except Exception as exc:
            if n == attempts or not is_transient(exc):
                raise
            log.warning("attempt %d/%d to open the %s pipeline's session: %s; retrying in %.1fs",
                        n, attempts, name, exc, delay)
            time.sleep(delay)
            delay *= 2


def _host() -> str:
    import socket

    return socket.gethostname()


def _run_locked(session, settings, name, base: Trigger, as_of, params, on_step) -> PipelineResult:
    run_id = store.insert_run(
        session, pipeline=base.pipeline, step="pipeline", status="running",
        triggered_by=base.triggered_by, actor=base.actor, params=params, slot=base.slot,
        pid=os.getpid(), hostname=_host())
    session.commit()
    steps = list(steps_for(name, settings))
    log.info("%s pipeline run #%d started (%s)", name, run_id, ", ".join(steps))
    result = PipelineResult(name, "succeeded", run_id)
    child = base.child(parent_run_id=run_id)
    failed: StepResult | None = None
    extra: dict[str, dict] = {}  # step -> arguments a previous step's decision gives it
    for step in steps:  # grows when the auto retrain decision says retrain
        fn = _step_callable(step, as_of, name, **extra.get(step, {}))
        log.info("step %s", step)

        def attempt(conn, fn=fn, step=step):
            with time_limit(settings.step_timeout, step, conn):
                return fn(conn, settings, child)

        code = None
        try:
            step_result = with_retries(settings, attempt)
        except StepFailed as exc:
            step_result, code = exc.result, error_code(exc.cause)
        except Exception as exc:  # could not even record the step (database down, bad config)
            step_result = StepResult(step, "failed", None, str(exc).strip() or type(exc).__name__)
            code = error_code(exc)
        result.steps.append(step_result)
        if on_step:
            on_step(step_result)
        if step_result.status == "failed":
            failed, result.error_code = step_result, code or MlopsError.code
            break
        if step == "auto_retrain" and step_result.status == "succeeded" and step_result.outputs.get("then"):
            steps.extend(step_result.outputs["then"])
            extra["train"] = {"drift_decision_run_id": step_result.pipeline_run_id}
    if failed:
        result.status = "failed"
        not_run = steps[len(result.steps):]
        # a step refused before it started (bad input, no database) has no run of its own
        where = f"run #{failed.pipeline_run_id}" if failed.pipeline_run_id is not None else "before it started"
        result.message = (f"step {failed.step} failed ({where}): {failed.message}"
                          + (f"; not run: {', '.join(not_run)}" if not_run else ""))
    else:
        done = [s.step for s in result.steps if s.status == "succeeded"]
        result.message = f"done: {', '.join(done) or 'nothing to do'}; " + "; ".join(
            f"{s.step}: {s.message}" for s in result.steps if s.message)
    outputs = {"message": result.message, "steps": step_summary(result.steps)}
    store.finish_run(session, run_id, result.status, outputs,
                     error=result.message if failed else None)
    if failed:
        _notify_failure(session, settings, result, failed)
    session.commit()
    return result


def _notify_failure(session, settings, result: PipelineResult, failed: StepResult) -> None:
    from . import notify

    msg = notify.Message(
        event="pipeline_failed", severity="error",
        subject=f"[mlops] {result.pipeline} pipeline failed at step {failed.step}",
        context={"pipeline": result.pipeline, "pipeline_run_id": result.pipeline_run_id, "step": failed.step,
                 "step_run_id": failed.pipeline_run_id, "error": failed.message,
                 "commands": ["mlops runs --limit 20", f"mlops pipeline {result.pipeline}"]},
    )
    notify.send(session, settings, msg, kinds=("log", "email", "slack"), pipeline_run_id=result.pipeline_run_id)


def step_summary(steps: list[StepResult]) -> dict[str, dict]:
    """{step: its status and run id} in the order they ran, for the pipeline row's outputs; a step
    that ran again (the daily pipeline's promote, before and after an auto retrain) is `promote (2)`."""
    out: dict[str, dict] = {}
    for s in steps:
        key, n = s.step, 1
        while key in out:
            n += 1
            key = f"{s.step} ({n})"
        out[key] = {"status": s.status, "pipeline_run_id": s.pipeline_run_id}
    return out


# --- background launch (API, UI) -----------------------------------------------------------------
def launch(settings: Settings, pipeline: str, *, actor: str, triggered_by: str = "api",
           timeout: float = 30.0) -> int:
    """Start `mlops pipeline <pipeline>` in a background process; return its pipeline run id.

    Raises AlreadyRunning when that pipeline is running (its lock is held), so an API answers 409
    instead of queueing a second training. Never trains in the caller's process.
    """
    if pipeline not in PIPELINES:
        raise Invalid(f"Unknown pipeline {pipeline!r}")
    conn = db.open_db(settings)
    try:
        with advisory_lock(conn, f"pipeline:{pipeline}"):
            pass  # free right now; the child takes it for real
        logs = settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"pipeline-{pipeline}-{int(time.time() * 1000)}.log"
        env = dict(os.environ, MLOPS_TRIGGERED_BY=triggered_by, MLOPS_ACTOR=actor)
        env.update(_settings_env(settings))
        after = store.newest_run_id(conn)  # the child's row comes after: an older one may share its pid
        conn.rollback()
        with open(log_path, "ab") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "mlops_cli.cli", "pipeline", pipeline, "--by", actor],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = store.pipeline_row_of_pid(conn, child.pid, pipeline_kind=pipeline, hostname=socket.gethostname(),
                                            after_id=after)
            conn.rollback()
            if row:
                if row["status"] == "skipped":
                    raise AlreadyRunning(row["outputs"].get("message", f"another {pipeline} run is in progress"))
                return row["id"]
            if child.poll() is not None:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise Conflict(f"mlops pipeline {pipeline} exited with {child.returncode} before starting: {tail}")
            time.sleep(0.1)
        raise Conflict(f"mlops pipeline {pipeline} did not start within {timeout:.0f}s (log: {log_path})")
    except AlreadyRunning as exc:
        raise AlreadyRunning(f"a {pipeline} pipeline is already running: {exc}") from None
    finally:
        conn.close()


def _settings_env(settings: Settings) -> dict[str, str]:
    """The settings the child needs to see the same database, registry and home as the caller."""
    env = {"MLOPS_HOME": str(settings.home.resolve()), "MODEL_NAME": settings.model_name,
           "MLFLOW_EXPERIMENT_NAME": settings.experiment_name}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    if settings.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    if settings.artifact_root:
        env["MLFLOW_ARTIFACT_ROOT"] = settings.artifact_root
    return env
