"""Model versions and the decisions on them: list them, find the champion, train, evaluate,
approve, roll back, retrain. Steps run as the CLI has always run them (runs.with_retries) and
return their StepResult; a step that fails raises runs.StepFailed after its failure is recorded.

Audit rule, for every front end: a rollback or a retrain decided about an alert (`decision=`)
writes an `alert_actions` row with its outcome (params.outcome, the pipeline run id), whatever
the outcome, a refusal or a failure included; the alert must exist before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import store
from ..config import Settings
from ..errors import AlreadyRunning, MlopsError
from ..vocab import AlertAction, Pipeline
from .common import Launched, actor_of, required, trigger

PROMOTIONS = ("promoted", "manual_promotion")


@dataclass(frozen=True)
class Decision:
    """A rollback or retrain decided about an alert (alert_id None: on no single alert), with the
    note a person gave: recorded in alert_actions. The control room asks for a note with every
    decision (note_required); the API and the CLI record the reason they were given, if any."""

    alert_id: int | None
    note: str | None
    note_required: bool = True


# --- reads ---------------------------------------------------------------------------------------------
def list_models(conn, settings: Settings) -> list[dict]:
    """Registered versions, newest first (models.list_models)."""
    from ..models import list_models as versions

    return versions(conn, settings)


def decisions(conn, settings: Settings, limit: int = 200) -> list[dict]:
    """model_decisions of this model, newest first."""
    from ..models import decision_history

    return decision_history(conn, settings, limit=limit)


def champion(conn, settings: Settings, versions: list[dict] | None = None) -> dict | None:
    """The version in production: {version, weighted_f1, since, how, decided_by, justification,
    aliases, stage}; None when no version has the champion alias.

    `since` is when it last became champion: its latest promotion / approval, or the rollback
    that restored it (model_decisions), else its registry decision date.
    """
    versions = list_models(conn, settings) if versions is None else versions
    current = next((v for v in versions if v["is_champion"]), None)
    if current is None:
        return None
    since, how, by, why = current.get("decided_at"), current.get("decision"), current.get("decided_by"), \
        current.get("reason")
    for d in decisions(conn, settings, limit=500):  # newest first
        if (d["decision"] in PROMOTIONS and d["model_version"] == current["version"]) or \
                (d["decision"] == "rolled_back" and d.get("restored_version") == current["version"]):
            since, how, by, why = d["created_at"], d["decision"], d["decided_by"], d["justification"]
            break
    return {"version": current["version"], "weighted_f1": current["weighted_f1"],
            "weighted_f1_source": current.get("weighted_f1_source"), "since": since, "how": how,
            "decided_by": by, "justification": why, "aliases": current["aliases"], "stage": current["stage"],
            "mlflow_run_id": current.get("mlflow_run_id")}


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
    current = next((v["version"] for v in (versions if versions is not None else list_models(conn, settings))
                    if v["is_champion"]), None)
    return [v for v in reversed(store.versions_ever_champion(conn, settings.model_name)) if v != current]


# --- steps ---------------------------------------------------------------------------------------------
def parse_params(text: str | None) -> dict:
    """Hyperparameter overrides, one KEY=VALUE per line or comma-separated (as `--param`)."""
    from ..errors import Invalid
    from ..features import parse_param

    out = {}
    for item in (text or "").replace(",", "\n").splitlines():
        if item.strip():
            try:
                key, value = parse_param(item.strip())
            except ValueError as exc:
                raise Invalid(str(exc)) from None
            out[key] = value
    return out


def train(settings: Settings, trigger, *, force: bool = False, params: dict | None = None):
    """Train on everything loaded so far, register a challenger (steps.train.train)."""
    from ..runs import with_retries
    from ..steps.train import train as step

    return with_retries(settings, lambda conn: step(conn, settings, trigger, force=force, params=params or {}))


def evaluate(settings: Settings, trigger, *, mlflow_run_id: str | None = None, version: str | None = None):
    """Score a version on the current holdout (default: the newest challenger not yet evaluated)."""
    from ..runs import with_retries
    from ..steps.evaluate import evaluate as step

    return with_retries(settings, lambda conn: step(conn, settings, trigger, mlflow_run_id=mlflow_run_id,
                                                    version=str(version) if version else None))


def promote(settings: Settings, trigger, *, mlflow_run_id: str | None = None, version: str | None = None):
    """Promote the newest evaluated challenger if it beats the champion (steps.promote.promote)."""
    from ..runs import with_retries
    from ..steps.promote import promote as step

    return with_retries(settings, lambda conn: step(conn, settings, trigger, mlflow_run_id=mlflow_run_id,
                                                    version=version))


def approve(settings: Settings, trigger, version: str, reason: str | None):
    """Promote a chosen version by hand (steps.promote.approve, which requires the reason)."""
    from ..runs import with_retries
    from ..steps.promote import approve as step

    return with_retries(settings, lambda conn: step(conn, settings, trigger, str(version), reason))


def _check_alert(settings: Settings, decision: Decision | None) -> None:
    if decision is None:
        return
    from ..db import connection
    from .alerts import check_exists

    if decision.note_required:
        required(decision.note, "A note")
    with connection(settings, application_name="mlops-ops") as conn:
        check_exists(conn, decision.alert_id)


def _record(settings: Settings, decision: Decision, action: AlertAction, actor: str, params: dict) -> int:
    from ..db import connection
    from .alerts import record_action

    with connection(settings, application_name="mlops-ops") as conn:
        return record_action(conn, decision.alert_id, action, actor, (decision.note or "").strip() or None,
                             params=params)


def rollback(settings: Settings, trigger, *, reason: str | None, to_version: str | None = None,
             decision: Decision | None = None, conn=None):
    """Put the previous champion (or to_version, a former champion) back in production
    (steps.rollback.rollback). With `decision`, the rollback was decided about an alert: the
    outcome is recorded in alert_actions (succeeded, skipped or failed, with its run id).
    conn: run on this connection (the API's request) instead of with_retries' own."""
    from ..runs import StepFailed, with_retries
    from ..steps.rollback import rollback as step

    _check_alert(settings, decision)

    def call(c):
        return step(c, settings, trigger, to_version=to_version or None, reason=reason)

    try:
        result = call(conn) if conn is not None else with_retries(settings, call)
    except StepFailed as exc:
        if decision is not None:
            r = exc.result
            _record(settings, decision, AlertAction.ROLLBACK, trigger.actor,
                    _rollback_params(r.status, r.pipeline_run_id, to_version, r.outputs, r.message))
        raise
    if decision is not None:
        _record(settings, decision, AlertAction.ROLLBACK, trigger.actor,
                _rollback_params(result.status, result.pipeline_run_id, to_version, result.outputs, None))
    return result


def _rollback_params(status: str, pipeline_run_id: int | None, to_version: str | None, outputs: dict,
                     error: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"outcome": status, "pipeline_run_id": pipeline_run_id, "to_version": to_version}
    params.update({k: outputs.get(k) for k in ("from_version", "to_version") if (outputs or {}).get(k)})
    if error:
        params["error"] = error
    return params


def retrain(settings: Settings, actor: str, *, triggered_by: str, decision: Decision | None = None) -> Launched:
    """Start the retrain pipeline (train -> evaluate -> promote) in the background
    (pipeline.launch). With `decision`, the decision is recorded whatever happens
    (params.outcome: started | already_running | failed), then a refusal is raised as it was."""
    from ..pipeline import launch

    actor = actor_of(trigger(triggered_by, actor, pipeline=Pipeline.RETRAIN.value))  # no retrain without a name
    _check_alert(settings, decision)
    try:
        run_id = launch(settings, Pipeline.RETRAIN.value, actor=actor, triggered_by=triggered_by)
    except MlopsError as exc:
        if decision is not None:
            outcome = "already_running" if isinstance(exc, AlreadyRunning) else "failed"
            _record(settings, decision, AlertAction.FORCE_RETRAIN, actor, {"outcome": outcome, "error": str(exc)})
        raise
    action_id = None
    if decision is not None:
        action_id = _record(settings, decision, AlertAction.FORCE_RETRAIN, actor,
                            {"outcome": "started", "pipeline_run_id": run_id})
    return Launched(pipeline_run_id=int(run_id), pipeline=Pipeline.RETRAIN.value, action_id=action_id)
