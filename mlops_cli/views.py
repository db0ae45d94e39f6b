"""What the Streamlit control room shows and does, as plain functions over the library.

The pages in streamlit_app/ only render: every read goes through a function here (built on
store, models, steps.drift and steps.alert: no SQL in this module either), and every button
calls one of the `do_*` actions below, which call the same library functions as the CLI with
Trigger(triggered_by="ui", actor=<the signed-in identity>): the pages only show an action form to
a signed-in user (mlops_cli.uiauth) and pass its name; no action takes a typed-in name.

Reads take an open connection (the UI keeps one, in autocommit). Actions open their own
connection (runs.with_retries, as the CLI does, or db.connection), so that a step's advisory
lock and transaction never share a session with another user of the UI.

Action results are dicts: {"ok", "status", "message", "run_id", "run" (the pipeline_runs row,
re-read after the action), "error", ...}; a refused action (no identity, missing note or reason, or
a domain error raised before any step started) raises MlopsError with a message to show.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from . import store
from .config import Settings
from .errors import AlreadyRunning, MlopsError

PIPELINE_KINDS = ("weekly", "daily", "retrain", "manual")
STATUSES = ("running", "succeeded", "failed", "skipped")
STEPS = ("pipeline", "load", "train", "evaluate", "promote", "approve", "rollback", "drift", "alert")
LEVELS = ("CRITICAL", "ALERT", "WARNING")
CAUSES = ("data", "prediction", "performance")
PROMOTIONS = ("promoted", "manual_promotion")
UPSTREAM_DEPTH = 20


# --- connection ------------------------------------------------------------------------------------
def ping(conn) -> bool:
    """True when the connection still answers (the UI's cached connection is re-made otherwise)."""
    if getattr(conn, "closed", True):
        return False
    try:
        return store.ping(conn)
    except Exception:
        return False


def is_connection_error(exc: BaseException) -> bool:
    """The database went away under a read (the UI then drops its cached connection)."""
    import psycopg2

    return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))


# --- empty state ----------------------------------------------------------------------------------
def is_empty(conn) -> bool:
    """True when nothing happened yet: no product loaded and no pipeline run recorded."""
    counts = store.catalogue_counts(conn) or {}
    return not counts.get("products") and not counts.get("batches") and not store.list_runs(conn, limit=1)


# --- overview -------------------------------------------------------------------------------------
def champion(conn, settings: Settings, versions: list[dict] | None = None) -> dict | None:
    """The version in production: {version, weighted_f1, since, how, decided_by, justification,
    aliases, stage}; None when no version has the champion alias.

    `since` is when it last became champion: its latest promotion / approval, or the rollback
    that restored it (model_decisions), else its registry decision date.
    """
    from .models import decision_history, list_models

    versions = list_models(conn, settings) if versions is None else versions
    current = next((v for v in versions if v["is_champion"]), None)
    if current is None:
        return None
    since, how, by, why = current.get("decided_at"), current.get("decision"), current.get("decided_by"), \
        current.get("reason")
    for d in decision_history(conn, settings, limit=500):  # newest first
        if (d["decision"] in PROMOTIONS and d["model_version"] == current["version"]) or \
                (d["decision"] == "rolled_back" and d.get("restored_version") == current["version"]):
            since, how, by, why = d["created_at"], d["decision"], d["decided_by"], d["justification"]
            break
    return {"version": current["version"], "weighted_f1": current["weighted_f1"],
            "weighted_f1_source": current.get("weighted_f1_source"), "since": since, "how": how,
            "decided_by": by, "justification": why, "aliases": current["aliases"], "stage": current["stage"],
            "mlflow_run_id": current.get("mlflow_run_id")}


def last_pipeline_run(conn, pipeline: str) -> dict | None:
    """The newest pipeline-level run of `pipeline` (weekly, daily, retrain) with its steps."""
    rows = store.list_runs(conn, limit=1, pipeline=pipeline, step="pipeline")
    if not rows:
        return None
    row = rows[0]
    row["steps"] = sorted(store.list_runs(conn, limit=50, parent_run_id=row["id"]), key=lambda r: r["id"])
    return row


def open_alerts(conn) -> list[dict]:
    """Active (open or acknowledged) alerts, worst level first."""
    from .steps.alert import list_alerts

    rows = [a for a in list_alerts(conn, limit=500) if a["status"] != "resolved"]
    order = {lvl: i for i, lvl in enumerate(LEVELS)}
    return sorted(rows, key=lambda a: (order.get(a["level"], 9), -a["id"]))


def open_alerts_by_level(conn) -> dict[str, int]:
    counts = {lvl: 0 for lvl in LEVELS}
    for a in open_alerts(conn):
        counts[a["level"]] = counts.get(a["level"], 0) + 1
    return counts


def catalogue_growth(conn) -> list[dict]:
    """Catalogue size after each batch (store.catalogue_growth)."""
    return [{**r, "catalogue_rows": int(r["catalogue_rows"] or 0)} for r in store.catalogue_growth(conn)]


def catalogue_counts(conn) -> dict:
    return store.catalogue_counts(conn) or {"products": 0, "batches": 0, "rejected": 0}


# --- pipeline runs -------------------------------------------------------------------------------
def list_runs(conn, *, pipeline: str | None = None, step: str | None = None, status: str | None = None,
              limit: int = 100) -> list[dict]:
    return store.list_runs(conn, limit=int(limit), pipeline=pipeline or None, step=step or None,
                           status=status or None)


def get_run(conn, run_id: int) -> dict | None:
    return store.get_run(conn, int(run_id))


def run_detail(conn, run_id: int) -> dict | None:
    """A run with its parent, its children (the steps of a pipeline run) and its upstream chain
    (the runs it consumed: promote -> evaluate -> train -> load), nearest first."""
    run = store.get_run(conn, int(run_id))
    if run is None:
        return None
    children = sorted(store.list_runs(conn, limit=200, parent_run_id=run["id"]), key=lambda r: r["id"])
    upstream, seen = [], {run["id"]}
    nxt = run.get("upstream_run_id")
    while nxt is not None and nxt not in seen and len(upstream) < UPSTREAM_DEPTH:
        row = store.get_run(conn, nxt)
        if row is None:
            break
        upstream.append(row)
        seen.add(nxt)
        nxt = row.get("upstream_run_id")
    parent = store.get_run(conn, run["parent_run_id"]) if run.get("parent_run_id") else None
    return {"run": run, "parent": parent, "children": children, "upstream": upstream}


def run_message(run: dict | None) -> str:
    """The one-line result of a run: its error, else its outputs' message."""
    if not run:
        return ""
    return run.get("error") or (run.get("outputs") or {}).get("message") or ""


# --- models ----------------------------------------------------------------------------------------
def models(conn, settings: Settings) -> list[dict]:
    """Registered versions, newest first (models.list_models)."""
    from .models import list_models

    return list_models(conn, settings)


def decisions(conn, settings: Settings, limit: int = 200) -> list[dict]:
    from .models import decision_history

    return decision_history(conn, settings, limit=limit)


def promotion_history(conn, settings: Settings, limit: int = 500) -> list[dict]:
    """Champion changes, oldest first: promotions, approvals and rollbacks, with the score of
    the version that went to production."""
    out = []
    for d in reversed(decisions(conn, settings, limit)):
        if d["decision"] in PROMOTIONS:
            out.append({"at": d["created_at"], "decision": d["decision"], "champion": d["model_version"],
                        "replaced": d.get("champion_version"), "score": d.get("candidate_score"),
                        "metric": d.get("metric"), "by": d["decided_by"], "justification": d["justification"]})
        elif d["decision"] == "rolled_back":
            out.append({"at": d["created_at"], "decision": "rolled_back", "champion": d.get("restored_version"),
                        "replaced": d["model_version"], "score": None, "metric": d.get("metric"),
                        "by": d["decided_by"], "justification": d["justification"]})
    return out


def approvable_versions(versions: list[dict]) -> list[str]:
    """Versions a person may approve: every registered version except the champion."""
    return [v["version"] for v in versions if not v["is_champion"]]


def rollback_targets(conn, settings: Settings, versions: list[dict] | None = None) -> list[str]:
    """Former champions other than the current one (what a rollback may return to)."""
    current = next((v["version"] for v in (versions if versions is not None else models(conn, settings))
                    if v["is_champion"]), None)
    return [v for v in reversed(store.versions_ever_champion(conn, settings.model_name)) if v != current]


# --- drift ------------------------------------------------------------------------------------------
def thresholds(conn, settings: Settings) -> dict:
    """The drift thresholds in force (drift.effective_thresholds)."""
    from .steps.drift import effective_thresholds

    return effective_thresholds(conn, settings)


def drift_history(conn, *, days: int = 90, window_days: int | None = None) -> list[dict]:
    """Drift scores over time, long format: one row per (report, cause) with a score."""
    from .steps.drift import score_history

    out = []
    for r in score_history(conn, days=days, window_days=window_days):
        for cause in CAUSES:
            score = r.get(f"{cause}_drift_score")
            if score is None:
                continue
            out.append({"report_id": r["id"], "as_of": r["as_of"], "window_days": r["window_days"],
                        "cause": cause, "score": float(score), "level": r["level"], "status": r["status"],
                        "model_version": r["model_version"], "n_inferences": r["n_inferences"]})
    return out


def drift_reports(conn, *, limit: int = 50, window_days: int | None = None) -> list[dict]:
    from .steps.drift import list_reports

    return list_reports(conn, limit=limit, window_days=window_days)


def drift_report(conn, report_id: int) -> dict:
    from .steps.drift import get_report

    return get_report(conn, int(report_id))


def feature_distributions(report: dict, *, max_labels: int = 30) -> list[dict]:
    """Per-feature reference vs current distributions of a report, for bar charts.

    [{group: data|prediction, feature, kind, score, rows: [{label, order, which, share}]}] for the
    binned / categorical features, largest score first; rate features (empty descriptions, OOV
    rate) come with reference_rate / current_rate and no rows. Features with many categories
    (title tokens) keep the `max_labels` whose share moved most.
    """
    details = report.get("details") or {}
    out = []
    for group in ("data", "prediction"):
        for name, f in ((details.get(group) or {}).get("features") or {}).items():
            item = {"group": group, "feature": name, "kind": f.get("kind"), "score": f.get("score"),
                    "rows": [], "reference_rate": f.get("reference_rate"), "current_rate": f.get("current_rate"),
                    "top": f.get("top") or []}
            labels, ref, cur = f.get("labels"), f.get("reference"), f.get("current")
            if labels and ref is not None and cur is not None and len(labels) == len(ref) == len(cur):
                keep = list(range(len(labels)))
                if len(labels) > max_labels:
                    keep = sorted(sorted(keep, key=lambda i: -abs(cur[i] - ref[i]))[:max_labels])
                for order, i in enumerate(keep):
                    item["rows"].append({"label": _label(labels[i]), "order": order, "which": "reference",
                                         "share": float(ref[i])})
                    item["rows"].append({"label": _label(labels[i]), "order": order, "which": "current",
                                         "share": float(cur[i])})
            out.append(item)
    return sorted(out, key=lambda f: -(f["score"] or 0.0))


def _label(value) -> str:
    from .reference import OTHER

    return "(other tokens)" if value == OTHER else str(value)


def top_tokens(report: dict) -> list[dict]:
    """Title tokens whose share moved most (PSI contribution), largest first."""
    return [{"token": _label(t), "contribution": float(c)}
            for t, c in ((report.get("details") or {}).get("top_tokens") or [])]


def top_classes(report: dict) -> list[dict]:
    """Predicted classes whose share moved most (PSI contribution), with their names."""
    from .categories import category_name

    out = []
    for code, c in (report.get("details") or {}).get("top_classes") or []:
        try:
            name = category_name(int(code))
        except (TypeError, ValueError, KeyError):
            name = ""
        out.append({"class": str(code), "name": name, "contribution": float(c)})
    return out


# --- alerts -----------------------------------------------------------------------------------------
def alerts(conn, status: str | None = None, limit: int = 100) -> list[dict]:
    from .steps.alert import list_alerts

    return list_alerts(conn, status=status or None, limit=limit)


def alert_detail(conn, alert_id: int) -> dict:
    """An alert with its audit trail (`actions`), the drift report behind it (`report`) and its
    score history (`history`: {at, report_id, score, level, as_of of that report})."""
    from .steps.alert import get_alert

    from .steps.drift import score_history

    row = get_alert(conn, int(alert_id))
    row["report"] = store.get_drift_report(conn, row["report_id"]) if row.get("report_id") else None
    history = list((row.get("details") or {}).get("history") or [])
    if history:  # when each score was measured: the as_of of its report (the alert run may be later)
        as_of = {r["id"]: r["as_of"] for r in score_history(conn, days=3650)}
        history = [{**h, "as_of": as_of.get(h.get("report_id"))} for h in history]
    row["history"] = history
    return row


def alert_actions(conn, alert_id: int | None = None, limit: int = 100) -> list[dict]:
    """Human decisions on alerts, newest first (all alerts when alert_id is None)."""
    return store.list_alert_actions(conn, alert_id=alert_id, limit=limit)


# --- actions (each one audited) ---------------------------------------------------------------------
def _required(value: str | None, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise MlopsError(f"{what} is required")
    return text


def ui_trigger(actor: str):
    """Trigger(triggered_by="ui", actor=NAME): what every UI action records on pipeline_runs."""
    from .runs import Trigger

    return Trigger(triggered_by="ui", actor=_identity(actor))


def _identity(actor: str | None) -> str:
    """The signed-in name an action is recorded with (never empty: the UI refuses to act without)."""
    return _required(actor, "A signed-in identity")


def _run_step(settings: Settings, call: Callable[[Any], Any]) -> dict:
    """Run a step (StepResult) with runs.with_retries, as the CLI does; failures come back as a
    result (the step already recorded them), with the pipeline_runs row re-read."""
    from .db import connection
    from .runs import StepFailed, with_retries

    try:
        result = with_retries(settings, call)
        out = {"ok": result.status != "failed", **result.as_dict(), "error": None}
    except StepFailed as exc:
        out = {"ok": False, **exc.result.as_dict(), "error": exc.result.message}
    if out.get("run_id"):
        with connection(settings, application_name="mlops-ui") as conn:
            out["run"] = store.get_run(conn, out["run_id"])
    else:
        out["run"] = None
    return out


def do_load(settings: Settings, actor: str, *, x_path: str | None = None, y_path: str | None = None,
            force: bool = False) -> dict:
    """Load the next batch (steps.load.load; x/y default to MLOPS_X_PATH / MLOPS_Y_PATH)."""
    from .steps.load import load

    trigger = ui_trigger(actor)
    return _run_step(settings, lambda conn: load(conn, settings, trigger, x_path=(x_path or "").strip() or None,
                                                 y_path=(y_path or "").strip() or None, force=bool(force)))


def parse_params(text: str | None) -> dict:
    """Hyperparameter overrides, one KEY=VALUE per line or comma-separated (as `--param`)."""
    from .features import parse_param

    out = {}
    for item in (text or "").replace(",", "\n").splitlines():
        if item.strip():
            try:
                key, value = parse_param(item.strip())
            except ValueError as exc:
                raise MlopsError(str(exc)) from None
            out[key] = value
    return out


def do_train(settings: Settings, actor: str, *, params: dict | None = None, force: bool = True) -> dict:
    """Train now (steps.train.train, force by default: a person asked for it)."""
    from .steps.train import train

    trigger = ui_trigger(actor)
    return _run_step(settings, lambda conn: train(conn, settings, trigger, force=force, params=params or {}))


def do_evaluate(settings: Settings, actor: str, *, version: str | None = None) -> dict:
    """Evaluate a version (default: the newest challenger not yet evaluated)."""
    from .steps.evaluate import evaluate

    trigger = ui_trigger(actor)
    return _run_step(settings, lambda conn: evaluate(conn, settings, trigger, version=(str(version)
                                                                                      if version else None)))


def do_approve(settings: Settings, actor: str, version: str, reason: str) -> dict:
    """Promote a chosen version by hand (steps.promote.approve): the reason is required."""
    from .steps.promote import approve

    trigger = ui_trigger(actor)
    reason = _required(reason, "A reason")
    return _run_step(settings, lambda conn: approve(conn, settings, trigger, str(version), reason))


def _record(settings: Settings, alert_id: int | None, action: str, actor: str, note: str, params: dict) -> int:
    from .db import connection
    from .steps.alert import record_action

    with connection(settings, application_name="mlops-ui") as conn:
        return record_action(conn, alert_id, action, actor, note=note, params=params)


def do_investigate(settings: Settings, alert_id: int | None, actor: str, note: str) -> dict:
    """"Investigate - do nothing": only the decision is recorded (alert_actions)."""
    actor, note = _identity(actor), _required(note, "A note")
    action_id = _record(settings, alert_id, "investigate", actor, note, {})
    return {"ok": True, "status": "recorded", "action_id": action_id,
            "message": "recorded: investigating, nothing else changes", "run": None, "run_id": None}


def do_acknowledge(settings: Settings, alert_id: int | None, actor: str, note: str | None = None) -> dict:
    """Acknowledge an active alert (steps.alert.acknowledge, which audits it in alert_actions):
    no reminder until it escalates or resolves. The note is optional, as with `mlops alerts ack`."""
    from .db import connection
    from .steps.alert import acknowledge

    actor = _identity(actor)
    if alert_id is None:
        raise MlopsError("Select an alert to acknowledge")
    with connection(settings, application_name="mlops-ui") as conn:
        row = acknowledge(conn, settings, int(alert_id), by=actor, note=(note or "").strip() or None)
    return {"ok": True, "status": row["status"], "run": None, "run_id": None, "error": None,
            "message": f"alert #{row['id']} ({row['cause']}, {row['level']}) acknowledged by {actor}: no reminder "
                       "until it escalates or resolves"}


def do_force_retrain(settings: Settings, alert_id: int | None, actor: str, note: str) -> dict:
    """Start the retrain pipeline in the background (pipeline.launch) and record the decision.

    The decision is recorded whatever happens (params.outcome: started | already_running |
    failed), so the audit trail also shows a retrain that could not start.
    """
    from .pipeline import launch

    actor, note = _identity(actor), _required(note, "A note")
    try:
        run_id = launch(settings, "retrain", actor=actor, triggered_by="ui")
    except AlreadyRunning as exc:
        action_id = _record(settings, alert_id, "force_retrain", actor, note,
                            {"outcome": "already_running", "error": str(exc)})
        return {"ok": False, "status": "already_running", "message": str(exc), "error": str(exc),
                "action_id": action_id, "run_id": None, "run": None}
    except MlopsError as exc:
        action_id = _record(settings, alert_id, "force_retrain", actor, note, {"outcome": "failed", "error": str(exc)})
        return {"ok": False, "status": "failed", "message": str(exc), "error": str(exc),
                "action_id": action_id, "run_id": None, "run": None}
    action_id = _record(settings, alert_id, "force_retrain", actor, note,
                        {"outcome": "started", "pipeline_run_id": run_id})
    from .db import connection

    with connection(settings, application_name="mlops-ui") as conn:
        run = store.get_run(conn, run_id)
    return {"ok": True, "status": run["status"] if run else "running", "run_id": run_id, "run": run,
            "action_id": action_id, "error": None,
            "message": f"retrain pipeline run #{run_id} started in the background"}


def do_adjust_thresholds(settings: Settings, alert_id: int | None, actor: str, note: str, *,
                         warning: float, alert: float, critical: float) -> dict:
    """Override the drift thresholds (drift.set_thresholds, which audits the change itself in
    alert_actions and stores it in app_settings: the next drift and alert runs use it)."""
    from .db import connection
    from .steps.drift import set_thresholds

    actor, note = _identity(actor), _required(note, "A note")
    if alert_id is not None:
        note = f"{note} (alert #{alert_id})"
    with connection(settings, application_name="mlops-ui") as conn:
        out = set_thresholds(conn, warning, alert, critical, by=actor, note=note)
    return {"ok": True, "status": "recorded", "action_id": out["action_id"], "run": None, "run_id": None,
            "error": None, "thresholds": {k: out[k] for k in ("warning", "alert", "critical")},
            "message": f"thresholds now warning {out['warning']:g} / alert {out['alert']:g} / "
                       f"critical {out['critical']:g}: used by the next drift and alert runs"}


def do_rollback(settings: Settings, alert_id: int | None, actor: str, note: str, *,
                to_version: str | None = None) -> dict:
    """Roll back to the previous champion (steps.rollback.rollback, the note is its reason) and
    record the decision in alert_actions (params.outcome, the rollback's pipeline run id)."""
    from .steps.rollback import rollback

    trigger = ui_trigger(actor)
    note = _required(note, "A note")
    out = _run_step(settings, lambda conn: rollback(conn, settings, trigger, to_version=to_version or None,
                                                    reason=note))
    params = {"outcome": out["status"], "pipeline_run_id": out.get("run_id"), "to_version": to_version}
    if out.get("outputs"):
        params.update({k: out["outputs"].get(k) for k in ("from_version", "to_version") if out["outputs"].get(k)})
    if out.get("error"):
        params["error"] = out["error"]
    out["action_id"] = _record(settings, alert_id, "rollback", trigger.actor, note, params)
    return out


def age(ts: datetime | None, now: datetime | None = None) -> str:
    """'3 d ago', '5 h ago', '12 min ago' (for cards)."""
    if ts is None:
        return ""
    from datetime import timezone

    now = now or datetime.now(timezone.utc)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    s = max(0.0, (now - ts).total_seconds())
    if s < 90:
        return f"{int(s)} s ago"
    if s < 5400:
        return f"{int(s // 60)} min ago"
    if s < 172800:
        return f"{int(s // 3600)} h ago"
    return f"{int(s // 86400)} d ago"
