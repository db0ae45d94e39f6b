"""Drift alerts for people: list and inspect them, acknowledge, resolve, clear, and record the
decisions taken about them. Every action names who takes it and is audited in `alert_actions`
(commits). Raising, escalating and resolving alerts from drift reports is the pipeline step
(steps/alert.py); its resolution message is the one a hand-resolved alert sends too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from .. import store
from ..config import Settings
from ..errors import Conflict, Invalid
from ..vocab import ALERT_LEVELS, AlertAction, AlertStatus, values
from .common import Recorded, actor_of, found, one_of, required

STATUSES = values(AlertStatus)
ACTIONS = values(AlertAction)


@dataclass
class AlertsChanged:
    """What acknowledge, resolve and clear did: the alerts as they are now, and the sentence every
    front end shows."""

    action: str
    actor: str
    alerts: list[dict] = field(default_factory=list)
    message: str = ""

    ok = True

    @property
    def alert(self) -> dict:
        """The one alert acknowledge and resolve act on."""
        return self.alerts[0]

    @property
    def status(self) -> str:
        return {"acknowledge": "acknowledged", "resolve": "resolved", "clear": "cleared"}[self.action]

    def as_dict(self) -> dict:
        return {"ok": True, "status": self.status, "message": self.message, "action": self.action,
                "actor": self.actor, "alert_ids": [a["id"] for a in self.alerts]}


# --- reads --------------------------------------------------------------------------------------------
def list_alerts(conn, status: str | None = None, limit: int = 100) -> list[dict]:
    """Alerts, active first then newest; status: open | acknowledged | resolved | None (all)."""
    return store.list_alerts(conn, status=one_of(status, STATUSES, "status"), limit=limit)


def _existing(conn, alert_id: int, *, for_update: bool = False) -> dict:
    return found(store.get_alert(conn, int(alert_id), for_update=for_update), f"No alert {alert_id}")


def check_exists(conn, alert_id: int | None) -> None:
    """NotFound "No alert <id>" unless alert_id is None or names an alert: checked before an
    action tied to an alert starts, so nothing runs for an alert that does not exist."""
    if alert_id is not None:
        _existing(conn, alert_id)


def get_alert(conn, alert_id: int) -> dict:
    """One alert with its audit trail (`actions`, newest first)."""
    row = _existing(conn, alert_id)
    row["actions"] = store.list_alert_actions(conn, alert_id=int(alert_id))
    return row


def alert_detail(conn, alert_id: int) -> dict:
    """An alert with its audit trail (`actions`), the drift report behind it (`report`) and its
    score history (`history`: {at, report_id, score, level, as_of of that report})."""
    row = get_alert(conn, int(alert_id))
    row["report"] = store.get_drift_report(conn, row["report_id"]) if row.get("report_id") else None
    history = list((row.get("details") or {}).get("history") or [])
    if history:  # when each score was measured: the as_of of its report (the alert run may be later)
        as_of = {r["id"]: r["as_of"] for r in store.drift_score_history(conn, days=3650)}
        history = [{**h, "as_of": as_of.get(h.get("report_id"))} for h in history]
    row["history"] = history
    return row


def open_alerts(conn) -> list[dict]:
    """Active (open or acknowledged) alerts, worst level first."""
    rows = [a for a in list_alerts(conn, limit=500) if a["status"] != AlertStatus.RESOLVED]
    order = {lvl: i for i, lvl in enumerate(ALERT_LEVELS)}
    return sorted(rows, key=lambda a: (order.get(a["level"], 9), -a["id"]))


def open_alerts_by_level(conn) -> dict[str, int]:
    counts = {lvl: 0 for lvl in ALERT_LEVELS}
    for a in open_alerts(conn):
        counts[a["level"]] = counts.get(a["level"], 0) + 1
    return counts


def alert_actions(conn, alert_id: int | None = None, limit: int = 100) -> list[dict]:
    """Human decisions on alerts, newest first (all alerts when alert_id is None)."""
    return store.list_alert_actions(conn, alert_id=alert_id, limit=limit)


# --- actions ------------------------------------------------------------------------------------------
def record_action(conn, alert_id: int | None, action: str, by: str, note: str | None = None,
                  params: dict | None = None, *, commit: bool = True) -> int:
    """Audit a human decision on an alert (alert_id None: on no single alert); returns its id.

    action: one of vocab.AlertAction. Only records: the caller carries the action out.
    Commits unless commit=False.
    """
    if action not in ACTIONS:
        raise Invalid(f"Unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    actor = actor_of(by)
    check_exists(conn, alert_id)
    action_id = store.insert_alert_action(conn, alert_id=None if alert_id is None else int(alert_id),
                                          action=str(action), actor=actor, note=note, params=params or {})
    if commit:
        conn.commit()
    return action_id


def investigate(conn, alert_id: int | None, by: str, note: str | None) -> Recorded:
    """"Investigate - do nothing": only the decision is recorded; the note is required."""
    actor = actor_of(by)
    note = required(note, "A note")
    action_id = record_action(conn, alert_id, AlertAction.INVESTIGATE, actor, note)
    return Recorded(status="recorded", action_id=action_id,
                    message="recorded: investigating, nothing else changes")


def acknowledge(conn, settings: Settings, alert_id: int | None, *, by: str,
                note: str | None = None) -> AlertsChanged:
    """Mark an active alert acknowledged (no reminders until it escalates or resolves); audited.

    Unknown id: NotFound "No alert <id>"; a resolved alert cannot be acknowledged (Conflict).
    Commits.
    """
    actor = actor_of(by)
    if alert_id is None:
        raise Invalid("Select an alert to acknowledge")
    # locked: a resolve or an alert run committed meanwhile is read, not written over with stale details
    row = _existing(conn, alert_id, for_update=True)
    if row["status"] == AlertStatus.RESOLVED:
        raise Conflict(f"Alert {alert_id} is already resolved: nothing to acknowledge")
    details = dict(row["details"] or {})
    details["acknowledged_by"] = actor
    details["acknowledged_at"] = datetime.now(timezone.utc).isoformat()
    store.update_alert(conn, row["id"], status=AlertStatus.ACKNOWLEDGED.value, details=details)
    store.insert_alert_action(conn, alert_id=row["id"], action=AlertAction.ACKNOWLEDGE.value, actor=actor,
                              note=(note or "").strip() or None,
                              params={"previous_status": row["status"], "level": row["level"]})
    conn.commit()
    now = store.get_alert(conn, row["id"])
    return AlertsChanged(AlertAction.ACKNOWLEDGE.value, actor, [now],
                         f"alert #{now['id']} ({now['cause']}, {now['level']}) acknowledged by {actor}: "
                         "no reminder until it escalates or resolves")


def _close(conn, settings: Settings, row: dict, action: AlertAction, actor: str, note: str | None) -> list[str]:
    from ..steps.alert import notify_resolution

    details = dict(row["details"] or {})
    details["resolved_by"] = actor
    verb = "Cleared" if action == AlertAction.CLEAR else "Resolved by hand"
    reason = f"{verb} by {actor}" + (f": {note}" if note else "") + "."
    # a channel that fails is owed the resolution: the next alert runs send it again
    sent = notify_resolution(conn, settings, row, details, reason, None, None, None)
    store.update_alert(conn, row["id"], status=AlertStatus.RESOLVED.value, resolved_at="now", details=details)
    store.insert_alert_action(conn, alert_id=row["id"], action=action.value, actor=actor, note=note,
                              params={"previous_status": row["status"], "level": row["level"]})
    return sent


def resolve(conn, settings: Settings, alert_id: int, *, by: str, note: str | None = None) -> AlertsChanged:
    """Resolve one active alert by hand (audited 'resolve'); the channels it was notified on are
    told (PagerDuty incident resolved). Commits."""
    actor = actor_of(by)
    row = _existing(conn, alert_id, for_update=True)  # as in acknowledge
    if row["status"] == AlertStatus.RESOLVED:
        raise Conflict(f"Alert {alert_id} is already resolved")
    _close(conn, settings, row, AlertAction.RESOLVE, actor, note)
    conn.commit()
    now = store.get_alert(conn, row["id"])
    return AlertsChanged(AlertAction.RESOLVE.value, actor, [now],
                         f"alert #{now['id']} ({now['cause']}, {now['level']}) resolved by {actor}")


def clear(conn, settings: Settings, *, by: str, note: str | None = None) -> AlertsChanged:
    """Resolve every open or acknowledged alert (one 'clear' audit row each, or one with no alert
    when there was nothing to clear). Commits."""
    actor = actor_of(by)
    rows = store.active_alerts(conn)
    for row in rows:
        _close(conn, settings, row, AlertAction.CLEAR, actor, note)
    if not rows:
        store.insert_alert_action(conn, alert_id=None, action=AlertAction.CLEAR.value, actor=actor, note=note,
                                  params={"cleared": 0})
    conn.commit()
    return AlertsChanged(AlertAction.CLEAR.value, actor, [store.get_alert(conn, r["id"]) for r in rows],
                         f"{len(rows)} alert(s) cleared by {actor}")
