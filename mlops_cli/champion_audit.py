"""Whether the model in production is the one mlops put there.

The API serves whatever version the MLflow `champion` alias names. mlops moves that alias only in
promote, approve and rollback, each of which records a model_decisions row; anyone who can
write to the MLflow registry can move it too, with no row and no notification. The daily alert
step compares the alias with the last recorded change of production (a promotion, a manual
promotion or a rollback's restored version) and, when they differ, notifies (log, email, Slack;
not with ALERT_ENABLED=false) once per pair of versions. The same mismatch also follows a promote step that died between
moving the registry and recording its decision: the next promote records it (docs/PIPELINE.md).
"""

from __future__ import annotations

from . import notify, registry, store
from .config import Settings
from .errors import Unavailable

EVENT = "champion_unrecorded"
KINDS = ("log", "email", "slack")


def check(conn, settings: Settings, pipeline_run_id: int | None = None) -> dict:
    """{"checked", "champion", "recorded", "ok", "notified"}; never raises for an unreachable
    registry (checked: false, the error kept). Reads under the champion lock, on a connection of
    its own released at once: a promotion in progress (alias moved, row not yet committed) is
    waited for, not reported, and no rollback waits for this step's notifications."""
    from .db import connection
    from .steps.promote import lock_champion

    with connection(settings, application_name="mlops-champion-audit") as own:
        lock_champion(own)
        try:
            alias = registry.version_by_alias(settings, registry.CHAMPION)
        except Unavailable as exc:
            return {"checked": False, "error": str(exc)}
        recorded = store.latest_production_change(own, settings.model_name)
    champion = alias["version"] if alias else None
    expected = recorded["version"] if recorded else None
    out = {"checked": True, "champion": champion, "recorded": expected, "ok": champion == expected, "notified": []}
    if out["ok"]:
        return out
    name = settings.model_name
    subject = (f"[mlops] {name}: the champion alias names v{champion}, but the last recorded change of "
               f"production put v{expected} there" if champion and expected else
               f"[mlops] {name}: the champion alias names v{champion}, but no promotion of it is recorded"
               if champion else f"[mlops] {name}: the champion alias is gone, but v{expected} is recorded in production")
    if not settings.alert_enabled:  # recorded in the step's outputs, sent once alerting is on
        return out
    if store.notification_sent(conn, EVENT, subject):
        out["notified"] = "already"
        return out
    message = notify.Message(EVENT, subject, "error", {
        "model_name": name, "champion_version": champion, "recorded_version": expected,
        "recorded_decision": recorded and {k: recorded[k] for k in ("id", "decision", "decided_by", "created_at")},
        "explanation": "The API serves the version the champion alias names. mlops moves it only in promote, "
                       "approve and rollback, each recorded in model_decisions: this one was moved some other "
                       "way (directly in the MLflow registry), or a promote step died before recording it.",
        "commands": [c for c in ("mlops models", "mlops promote   # records a promotion whose step died",
                                 f"mlops rollback --to-version {expected} --reason ... --by NAME" if expected else "",
                                 f"mlops approve {champion} --reason ... --by NAME   # keep it, recorded"
                                 if champion else "") if c],
    })
    deliveries = notify.send(conn, settings, message, kinds=KINDS, pipeline_run_id=pipeline_run_id)
    out["notified"] = [d.channel for d in deliveries if d.status == "sent"]
    return out
