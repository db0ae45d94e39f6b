"""Drift thresholds: the values in force and the audited changes a person makes to them.

The environment (DRIFT_WARNING/ALERT/CRITICAL_THRESHOLD, config.Settings) gives the defaults; a
person overrides them from the UI, the API or `mlops thresholds` (app_settings rows, every change
audited as an `adjust_thresholds` row of alert_actions). The drift step reads the values in force
to set each report's level, the alert step to decide on alerts (steps/drift.py, steps/alert.py).
"""

from __future__ import annotations

import logging
import math

from . import store
from .config import Settings
from .errors import Invalid

log = logging.getLogger(__name__)

THRESHOLD_KEYS = {"warning": "drift_warning_threshold", "alert": "drift_alert_threshold",
                  "critical": "drift_critical_threshold"}


def effective_thresholds(conn, settings: Settings) -> dict:
    """The drift thresholds in force: app_settings overrides (set by a person) else the settings.

    Returns {"warning", "alert", "critical", "source": {level: "app_settings"|"settings"},
    "updated_by", "updated_at"} (the last two from the newest override, else None).
    """
    rows = store.get_app_settings(conn, list(THRESHOLD_KEYS.values()))
    out: dict = {}
    source: dict = {}
    newest = None
    for level, key in THRESHOLD_KEYS.items():
        row = rows.get(key)
        value = None
        if row is not None:
            try:
                value = float(row["value"])
            except (TypeError, ValueError):
                log.warning("app_settings %s = %r is not a number: ignored", key, row["value"])
        if value is not None and math.isfinite(value) and value > 0:
            out[level], source[level] = value, "app_settings"
            if newest is None or row["updated_at"] > newest["updated_at"]:
                newest = row
        else:
            out[level], source[level] = float(getattr(settings, key)), "settings"
    if not out["warning"] <= out["alert"] <= out["critical"]:
        log.warning("drift thresholds %s are not ordered: using the settings' instead", out)
        out = {level: float(getattr(settings, key)) for level, key in THRESHOLD_KEYS.items()}
        source = {level: "settings" for level in THRESHOLD_KEYS}
        newest = None
    out["source"] = source
    out["updated_by"] = newest["updated_by"] if newest else None
    out["updated_at"] = newest["updated_at"] if newest else None
    return out


def _overrides(conn) -> dict:
    rows = store.get_app_settings(conn, list(THRESHOLD_KEYS.values()))
    return {level: (rows[key]["value"] if key in rows else None) for level, key in THRESHOLD_KEYS.items()}


def _check_thresholds(warning, alert, critical) -> tuple[float, float, float]:
    try:
        w, a, c = float(warning), float(alert), float(critical)
    except (TypeError, ValueError):
        raise Invalid(f"Thresholds must be numbers, got {warning!r}, {alert!r}, {critical!r}") from None
    if not all(math.isfinite(x) for x in (w, a, c)) or not 0 < w < a < c:
        raise Invalid(f"Thresholds must satisfy 0 < warning < alert < critical, got "
                      f"warning={w:g}, alert={a:g}, critical={c:g}")
    return w, a, c


def set_thresholds(conn, warning: float, alert: float, critical: float, by: str,
                   note: str | None = None) -> dict:
    """Override the drift thresholds (app_settings), audited in alert_actions; commits.

    Validates 0 < warning < alert < critical (Invalid otherwise). Returns the new values,
    the previous overrides (None when there were none) and the audit row id.
    """
    w, a, c = _check_thresholds(warning, alert, critical)
    if not by or not str(by).strip():
        raise Invalid("Say who changes the thresholds (--by NAME)")
    old = _overrides(conn)
    new = {"warning": w, "alert": a, "critical": c}
    for level, key in THRESHOLD_KEYS.items():
        store.upsert_app_setting(conn, key, new[level], by)
    action_id = store.insert_alert_action(conn, alert_id=None, action="adjust_thresholds", actor=str(by),
                                          note=note, params={"old": old, "new": new})
    conn.commit()
    log.info("drift thresholds set to %s by %s", new, by)
    return {**new, "previous": old, "updated_by": str(by), "action_id": action_id}


def update_thresholds(conn, settings: Settings, actor: str, *, warning: float | None = None,
                      alert: float | None = None, critical: float | None = None,
                      note: str | None = None) -> dict:
    """Change some of the thresholds: a value not given keeps the one in force (override or
    setting); the three together must still satisfy 0 < warning < alert < critical. Audited
    and committed by set_thresholds. Returns the thresholds now in force (effective_thresholds).

    Invalid when no value is given (nothing to change) or the result is out of order.
    """
    given = {"warning": warning, "alert": alert, "critical": critical}
    if all(v is None for v in given.values()):
        raise Invalid("Give at least one threshold to change (warning, alert or critical)")
    current = effective_thresholds(conn, settings)
    merged = {level: current[level] if v is None else v for level, v in given.items()}
    set_thresholds(conn, merged["warning"], merged["alert"], merged["critical"], actor, note)
    return effective_thresholds(conn, settings)


def reset_thresholds(conn, by: str, note: str | None = None) -> dict:
    """Drop the overrides: the settings' (environment) thresholds apply again. Audited; commits."""
    if not by or not str(by).strip():
        raise Invalid("Say who resets the thresholds (--by NAME)")
    old = _overrides(conn)
    store.delete_app_settings(conn, list(THRESHOLD_KEYS.values()))
    action_id = store.insert_alert_action(conn, alert_id=None, action="adjust_thresholds", actor=str(by),
                                          note=note, params={"old": old, "new": None, "reset": True})
    conn.commit()
    return {"previous": old, "updated_by": str(by), "action_id": action_id}
