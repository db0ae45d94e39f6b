"""The drift thresholds for people: the values in force, a partial update, a reset.

The rules (validation, audit, storage) are mlops_cli.thresholds'; here every front end gets the
same use case: a value not given keeps the one in force, the change names who made it and, when
it was decided about an alert, says so in its audit note.
"""

from __future__ import annotations

from ..config import Settings
from .common import Recorded, actor_of, required

LEVELS = ("warning", "alert", "critical")


def current(conn, settings: Settings) -> dict:
    """The thresholds in force (thresholds.effective_thresholds)."""
    from ..thresholds import effective_thresholds

    return effective_thresholds(conn, settings)


def update(conn, settings: Settings, by: str, *, warning: float | None = None, alert: float | None = None,
           critical: float | None = None, note: str | None = None, alert_id: int | None = None,
           note_required: bool = False, estimate_margin: float | None = None) -> Recorded:
    """Change some of the thresholds (audited adjust_thresholds row, committed); the others keep
    the value in force. estimate_margin: the margin of the estimated-performance alert.
    alert_id: the alert the decision was taken on (added to the note).
    note_required: the control room asks for a note with every decision on the alerts page."""
    from ..thresholds import update_thresholds

    from .alerts import check_exists

    actor = actor_of(by, "Say who changes the thresholds (--by NAME)")
    if note_required:
        note = required(note, "A note")
    check_exists(conn, alert_id)
    if alert_id is not None:
        note = f"{note} (alert #{alert_id})" if note else f"alert #{alert_id}"
    th = update_thresholds(conn, settings, actor, warning=warning, alert=alert, critical=critical, note=note,
                           estimate_margin=estimate_margin)
    values = {k: th[k] for k in LEVELS + ("estimate_margin",)}
    return Recorded(status="recorded", thresholds=values,
                    message=f"thresholds now warning {th['warning']:g} / alert {th['alert']:g} / "
                            f"critical {th['critical']:g}, estimate margin {th['estimate_margin']:g}: used by "
                            "the next drift and alert runs")


def reset(conn, by: str, note: str | None = None) -> Recorded:
    """Drop the overrides: the settings' (environment) thresholds apply again. Audited."""
    from ..thresholds import reset_thresholds

    out = reset_thresholds(conn, actor_of(by, "Say who resets the thresholds (--by NAME)"), note)
    return Recorded(status="recorded", action_id=out.get("action_id"),
                    message="threshold overrides dropped: the settings apply again")
