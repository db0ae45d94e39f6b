"""Roll the champion back to a former champion (default: the previous-champion alias).

A rollback only returns to a version that has been in production before (a promoted or approved
version in model_decisions, or one whose registry tags say so). Afterwards the rolled-back version
is tagged stage=Archived, rolled_back=true; the restored one stage=Production; previous-champion
points at the champion the restored version had replaced when it was promoted (walking further
back past versions already used), or is removed when there is none, so that rolling back again
with nothing left fails with a clear message. Audited (pipeline_runs + model_decisions) and
notified (log, email, Slack) in one step; the reason is required. The target is loaded and
warmed up as the API would first: a version that cannot serve is refused, nothing moves.
"""

from __future__ import annotations

import logging

from .. import notify, registry, store
from ..config import Settings
from ..errors import Conflict, Invalid
from ..notify import Message
from ..runs import StepResult, StepRun, Trigger, run_step
from ..serving.holder import check_servable
from ..vocab import Step
from .promote import (NOTIFY_KINDS, actor_of, aliases, lock_champion, model_links, now_iso, promotion_metric,
                      restoring_aliases)

log = logging.getLogger(__name__)

STEP = Step.ROLLBACK.value


def _was_in_production(conn, settings: Settings, version: str, info: dict) -> bool:
    if version in store.versions_ever_champion(conn, settings.model_name):
        return True
    tags = info.get("tags") or {}
    return (tags.get("decision") in ("promoted", "manual_promotion") or tags.get("rolled_back") == "true"
            or tags.get("stage") == "Production")


def previous_before(conn, settings: Settings, restored: str, exclude: set[str]) -> str | None:
    """The champion that `restored` replaced when it was last promoted, skipping `exclude` (walking
    further back through the promotion history); None when the history has nothing left."""
    walked = {restored}
    current = restored
    while True:
        row = store.last_promotion_of(conn, settings.model_name, current)
        candidate = row["champion_version"] if row else None
        if candidate is None or candidate in walked:
            return None
        if candidate not in exclude:
            return candidate
        walked.add(candidate)
        current = candidate


def _latest_score(conn, settings: Settings, version: str, metric: str) -> float | None:
    row = store.latest_evaluation(conn, settings.model_name, version)
    return float(row[metric]) if row else None


def rollback(conn, settings: Settings, trigger: Trigger, *, to_version: str | int | None = None,
             reason: str) -> StepResult:
    """Put a former champion back in production (default: the previous-champion alias)."""
    reason = (reason or "").strip()
    if not reason:
        raise Invalid("A reason is required to roll back: pass --reason \"...\" (it is recorded and "
                         "sent with the notification)")
    metric = promotion_metric(settings)
    name = settings.model_name

    def body(step: StepRun) -> None:
        lock_champion(conn)
        champion = registry.version_by_alias(settings, registry.CHAMPION)
        if champion is None:
            raise Conflict("No champion to roll back: no version is in production")
        current = champion["version"]
        if to_version is not None:
            target = str(to_version)
            target_info = registry.get_version(settings, target)  # "Model <name> has no version N"
            if target == current:
                raise Conflict(f"Version {target} is already the champion; nothing to roll back")
            if not _was_in_production(conn, settings, target, target_info):
                raise Conflict(f"Version {target} was never in production; rollback only returns to a "
                                 "former champion")
        else:
            previous = registry.version_by_alias(settings, registry.PREVIOUS)
            if previous is None or previous["version"] == current:
                others = [v for v in store.versions_ever_champion(conn, name) if v != current]
                if not others:
                    raise Conflict(f"Nothing to roll back to: version {current} is the only version that "
                                     "has been in production")
                raise Conflict(f"Nothing to roll back to: no version was in production before version "
                                 f"{current} (former champions: {', '.join(others)}; pass --to-version to "
                                 "return to one of them)")
            target, target_info = previous["version"], previous
        try:  # the API would keep serving the old champion, and promote could not re-score it
            check_servable(settings, target)
        except Exception as exc:
            raise Conflict(f"Version {target} cannot serve, so it is not put back (the champion stays version "
                           f"{current}): {exc}") from exc
        new_previous = previous_before(conn, settings, target, exclude={current})
        actor = actor_of(trigger)
        rolled_at = now_iso()

        from_score = _latest_score(conn, settings, current, metric)
        to_score = _latest_score(conn, settings, target, metric)
        how = "the previous-champion alias" if to_version is None else "--to-version"
        rule = (f"manual rollback by {actor}: champion v{current} -> v{target} (chosen by {how}; a rollback only "
                "returns to a former champion)")
        decision_id = store.insert_decision(
            conn, pipeline_run_id=step.pipeline_run_id, model_name=name, model_version=current,
            mlflow_run_id=champion.get("mlflow_run_id"), decision="rolled_back", metric=metric,
            candidate_score=from_score, champion_version=current, champion_score=from_score,
            threshold=None, min_improvement=None, rule=rule, justification=reason, decided_by=actor,
            triggered_by=trigger.triggered_by, previous_champion=new_previous, restored_version=target,
        )

        with restoring_aliases(settings):
            registry.set_alias(settings, registry.CHAMPION, target)
            if new_previous:
                registry.set_alias(settings, registry.PREVIOUS, new_previous)
            else:
                registry.delete_alias(settings, registry.PREVIOUS)
            registry.set_version_tags(settings, current, {
                "stage": "Archived", "rolled_back": "true", "rolled_back_at": rolled_at,
                "rolled_back_by": actor, "rollback_reason": reason[:4900], "replaced_by": target})
            restored_tags = {"stage": "Production", "restored_at": rolled_at, "restored_by": actor}
            if (target_info.get("tags") or {}).get("rolled_back") == "true":
                restored_tags["rolled_back"] = "false"
            registry.set_version_tags(settings, target, restored_tags)
            if champion.get("mlflow_run_id"):
                registry.set_run_tags(settings, champion["mlflow_run_id"], {"rolled_back": "true",
                                                                            "rolled_back_at": rolled_at})
        after = aliases(settings)

        scores = {}
        if from_score is not None:
            scores[f"v{current} (from)"] = from_score
        if to_score is not None:
            scores[f"v{target} (to)"] = to_score
        message = Message(
            "rollback", f"Model {name} rolled back from v{current} to v{target}", "warning",
            {"model_name": name, "from_version": current, "to_version": target, "reason": reason,
             "actor": actor, "scores": scores, "metric": metric, "previous_champion": new_previous,
             "pipeline_run_id": step.pipeline_run_id, "links": model_links(settings, target)},
        )
        deliveries = notify.send(conn, settings, message, kinds=NOTIFY_KINDS, pipeline_run_id=step.pipeline_run_id)
        step.outputs.update({
            "decision": "rolled_back", "decision_id": decision_id, "model_name": name,
            "from_version": current, "to_version": target, "previous_champion": new_previous,
            "metric": metric, "from_score": from_score, "to_score": to_score, "reason": reason,
            "decided_by": actor, "rule": rule, "aliases": after,
            "notifications": [{"channel": d.channel, "status": d.status, "error": d.error} for d in deliveries],
        })
        step.message = (f"champion rolled back from version {current} to version {target} "
                        f"(previous-champion: {new_previous or 'none'}): {reason}")

    return run_step(conn, trigger, STEP, body,
                    params={"to_version": None if to_version is None else str(to_version), "reason": reason})
