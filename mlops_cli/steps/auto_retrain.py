"""The daily pipeline's decision to retrain on drift (AUTO_RETRAIN_ON_DRIFT, off by default).

A retrain on the static catalogue cannot learn the vocabulary that drifted; labels of the drifted
traffic can. So, when an alert at level ALERT or above is active (open or acknowledged) and the
feedback gate is open (at least FEEDBACK_RETRAIN_MIN products got a label no training used), the
daily pipeline goes on with train (gate 'drift'), evaluate and promote in the same run.

Every decision is audited: this step's pipeline_runs row (outputs.decision 'retrain' or 'wait',
with the counts and why) and one alert_actions row ('auto_retrain') per active alert, in one
transaction. No active alert: skipped, there is nothing to decide. The train step checks its own
gate again under its lock (a training in between may have used the labels).
"""

from __future__ import annotations

from .. import store
from ..categories import PRDTYPECODES
from ..config import Settings
from ..runs import StepResult, StepRun, Trigger, run_step
from ..vocab import AlertAction, Level, Step

STEP = Step.AUTO_RETRAIN.value
FOLLOW_UP = ("train", "evaluate", "promote")  # the retrain pipeline's steps
DRIFT_LEVELS = (Level.ALERT.value, Level.CRITICAL.value)


def auto_retrain(conn, settings: Settings, trigger: Trigger) -> StepResult:
    def body(step: StepRun) -> None:
        alerts = [a for a in store.active_alerts(conn) if a["level"] in DRIFT_LEVELS]
        if not alerts:
            step.outputs.update({"decision": "none", "alert_ids": []})
            step.skip("no active drift alert (level ALERT or above): nothing to decide")
            return
        counts = store.feedback_label_counts(conn, PRDTYPECODES)
        new, threshold = int(counts["new_labels"] or 0), settings.feedback_retrain_min
        retrain = new >= threshold
        causes = ", ".join(f"#{a['id']} {a['cause']} {a['level']}" for a in alerts)
        if retrain:
            reason = (f"drift alert {causes} active and {new} products newly labelled (FEEDBACK_RETRAIN_MIN "
                      f"{threshold}): retraining on the labels")
        else:
            reason = (f"drift alert {causes} active but only {new} products newly labelled (FEEDBACK_RETRAIN_MIN "
                      f"{threshold}): not retraining; label a sample of the drifted traffic")
        decision = "retrain" if retrain else "wait"
        for a in alerts:
            store.insert_alert_action(conn, alert_id=a["id"], action=AlertAction.AUTO_RETRAIN.value,
                                      actor=trigger.actor or "cron", note=reason,
                                      params={"decision": decision, "new_labels": new, "threshold": threshold,
                                              "feedback_rows": int(counts["feedback_rows"] or 0),
                                              "overrides": int(counts["overrides"] or 0),
                                              "pipeline_run_id": step.pipeline_run_id})
        step.outputs.update({"decision": decision, "reason": reason, "new_labels": new, "threshold": threshold,
                             "alert_ids": [a["id"] for a in alerts], "then": list(FOLLOW_UP) if retrain else []})
        if retrain:
            step.message = reason
        else:
            step.skip(reason)

    return run_step(conn, trigger, STEP, body)
