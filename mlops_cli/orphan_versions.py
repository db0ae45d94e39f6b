"""Model versions left in the registry by a train step that died after registering them.

`mlops train` registers a version in MLflow, points the challenger alias at it and tags it, then
commits its evaluation and drift reference in the step's transaction. The registry is not part of
that transaction: a step that fails deletes its version itself (and gives the challenger alias
back), but one that dies (kill -9, the OOM killer, a lost machine) leaves the version registered,
perhaps as the challenger, with nothing in the database: the shadow would score it and the
registry views would show it as awaiting a decision. The next step marks the run abandoned; this
sweep, at the start of every train step and in the daily alert step, deletes each version whose
training run is a failed train run and that the database never recorded, and, when one of them
held the challenger alias, gives the alias back to the version it was taken from: the newest
recorded version, while it still awaits a decision. A step that died while logging its MLflow run
left that run RUNNING: the sweep ends it as KILLED (docs/PIPELINE.md, "Locks, concurrency and
crashes").
"""

from __future__ import annotations

import logging

from . import registry, store
from .config import Settings
from .errors import Unavailable
from .runs import lock_key

log = logging.getLogger(__name__)

TRAIN_LOCK = "step:train"
# MLflow's times are the training process's clock, pipeline_runs' the database server's
CLOCK_SLACK_MS = 60_000
# a challenger that has been decided on without leaving the challenger role
STILL_CHALLENGER = (None, "needs_approval")


def sweep(conn, settings: Settings, *, holding_train_lock: bool = False) -> dict:
    """{"checked", "removed": [{version, pipeline_run_id, challenger}], "challenger" (the version
    the challenger alias was given back to, or None), "runs_ended": [{mlflow_run_id,
    pipeline_run_id, nested_runs}]}; never raises for the registry's errors (checked: false, the
    error kept).

    The train step sweeps under its own lock, on its connection. Any other caller sweeps on a
    connection of its own, and only when no train step runs (it would race that step's alias):
    the running train sweeps at its start, or the next one will."""
    if holding_train_lock:
        return _checked(conn, settings)
    from .db import connection

    key = lock_key(TRAIN_LOCK)
    with connection(settings, application_name="mlops-orphan-sweep") as own:
        if not store.try_advisory_lock(own, key):
            return {"checked": False, "error": "a train step is running: it sweeps at its start"}
        try:
            return _checked(own, settings)
        finally:
            store.advisory_unlock(own, key)  # closing the connection would release it too


def _checked(conn, settings: Settings) -> dict:
    # a side duty of its steps: an error of the registry's is reported, never fails the alerts or
    # the training (a database error is the step's own: its transaction is gone)
    try:
        return _sweep(conn, settings)
    except Unavailable as exc:
        return {"checked": False, "error": str(exc)}
    except Exception as exc:
        import psycopg2

        if isinstance(exc, psycopg2.Error):
            raise
        log.exception("the sweep of versions left by dead train steps failed")
        return {"checked": False, "error": f"{type(exc).__name__}: {exc}"[:1000]}


def _dead_train_run(conn, pipeline_run_id: int | None, at_ms: int | None) -> dict | None:
    """The pipeline_runs row of a train step that failed or died, when `at_ms` (an MLflow
    timestamp) falls within it: an id alone could be another database's (one MLflow server, or
    one experiment, shared)."""
    run = store.get_run(conn, pipeline_run_id) if pipeline_run_id is not None else None
    if run is None or run["step"] != "train" or run["status"] != "failed" or at_ms is None:
        return None
    started, finished = (t.timestamp() * 1000 if t else None for t in (run["started_at"], run["finished_at"]))
    within = started - CLOCK_SLACK_MS <= at_ms and (finished is None or at_ms <= finished + CLOCK_SLACK_MS)
    return run if within else None


def _end_dead_runs(conn, settings: Settings) -> list[dict]:
    """MLflow runs left RUNNING by a train step that died while logging them: ended as KILLED,
    with their nested runs (the search's candidates)."""
    unfinished = registry.unfinished_runs(settings)
    dead = {}
    for r in unfinished:
        run = _dead_train_run(conn, _as_int(r["tags"].get("pipeline_run_id")), r["start_time"])
        if run is not None:
            dead[r["mlflow_run_id"]] = run["id"]
    ended = []
    for run_id, pipeline_run_id in dead.items():
        children = [c["mlflow_run_id"] for c in unfinished if c["tags"].get("mlflow.parentRunId") == run_id]
        for rid in (*children, run_id):
            registry.end_run(settings, rid, "KILLED")
        log.warning("MLflow run %s of train run #%s, which died while logging it, ended as KILLED",
                    run_id, pipeline_run_id)
        ended.append({"mlflow_run_id": run_id, "pipeline_run_id": pipeline_run_id, "nested_runs": len(children)})
    return ended


def _sweep(conn, settings: Settings) -> dict:
    name = settings.model_name
    runs_ended = _end_dead_runs(conn, settings)
    versions = registry.list_versions(settings)
    recorded = store.referenced_versions(conn, name)
    removed = []
    for v in versions:
        if v["version"] in recorded:
            continue
        run_id = _pipeline_run_id(settings, v)
        run = _dead_train_run(conn, run_id, v["created_at"])
        if run is None:
            continue  # not registered by a train step, or that step still runs / succeeded
        registry.delete_version(settings, v["version"], strict=True)
        held = registry.CHALLENGER in v["aliases"]
        log.warning("deleted model %s version %s: registered by train run #%s, which %s before recording "
                    "it%s", name, v["version"], run_id, "died" if (run["error"] or "").startswith("abandoned")
                    else "failed", " (it held the challenger alias)" if held else "")
        removed.append({"version": v["version"], "pipeline_run_id": run_id, "challenger": held})
    restored = None
    if any(r["challenger"] for r in removed):
        restored = _give_back_challenger(conn, settings, recorded & {v["version"] for v in versions})
    return {"checked": True, "removed": removed, "challenger": restored, "runs_ended": runs_ended}


def _pipeline_run_id(settings: Settings, version: dict) -> int | None:
    # the run tag is set before the version exists; the version tag only once it has the alias
    tag = version["tags"].get("pipeline_run_id")
    if tag is None and version.get("mlflow_run_id"):
        tag = registry.run_info(settings, version["mlflow_run_id"])["tags"].get("pipeline_run_id")
    return _as_int(tag)


def _as_int(tag: str | None) -> int | None:
    try:
        return int(tag) if tag else None
    except ValueError:
        return None


def _give_back_challenger(conn, settings: Settings, recorded: set[str]) -> str | None:
    """The challenger alias, as the train steps that succeeded left it: on the newest recorded
    version (of those still registered), unless that one has been decided on or is the champion."""
    if not recorded or registry.version_by_alias(settings, registry.CHALLENGER) is not None:
        return None
    newest = max(recorded, key=int)
    decision = store.latest_decision_for_version(conn, settings.model_name, newest)
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    if (decision or {}).get("decision") not in STILL_CHALLENGER or (champion or {}).get("version") == newest:
        return None
    registry.set_alias(settings, registry.CHALLENGER, newest)
    log.warning("challenger alias given back to version %s", newest)
    return newest
