"""Drift thresholds: the values in force and the audited changes a person makes to them.

The environment (DRIFT_WARNING/ALERT/CRITICAL_THRESHOLD, config.Settings) gives the defaults; a
person overrides them from the UI, the API or `mlops thresholds` (app_settings rows, every change
audited as an `adjust_thresholds` row of alert_actions). ESTIMATE_MARGIN, the margin of the
estimated-performance alert (performance_estimate.py), is overridden the same way. The drift step reads the values in force
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
MARGIN = "estimate_margin"   # the app_settings key, the Settings field and the name in the results


def effective_thresholds(conn, settings: Settings) -> dict:
    """The drift thresholds in force: app_settings overrides (set by a person) else the settings.

    Returns {"warning", "alert", "critical", "source": {level: "app_settings"|"settings"},
    "updated_by", "updated_at", "estimate_margin", "estimate_margin_source"} (updated_by/at from
    the newest override in force, of a threshold or the margin, else None).
    """
    rows = store.get_app_settings(conn, list(THRESHOLD_KEYS.values()) + [MARGIN])
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
    margin = _number(rows.get(MARGIN))
    if margin is not None and 0 < margin < 1:
        out[MARGIN], out[f"{MARGIN}_source"] = margin, "app_settings"
        if newest is None or rows[MARGIN]["updated_at"] > newest["updated_at"]:
            newest = rows[MARGIN]
    else:
        out[MARGIN], out[f"{MARGIN}_source"] = float(settings.estimate_margin), "settings"
    out["source"] = source
    out["updated_by"] = newest["updated_by"] if newest else None
    out["updated_at"] = newest["updated_at"] if newest else None
    return out


def _number(row: dict | None) -> float | None:
    try:
        value = None if row is None else float(row["value"])
    except (TypeError, ValueError):
        return None
    return value if value is not None and math.isfinite(value) else None


def _overrides(conn, *, thresholds: bool = True, margin: bool = False) -> dict:
    """The app_settings overrides (None: not overridden) of the thresholds and/or the margin."""
    keys = {**(THRESHOLD_KEYS if thresholds else {}), **({MARGIN: MARGIN} if margin else {})}
    rows = store.get_app_settings(conn, list(keys.values()))
    return {name: (rows[key]["value"] if key in rows else None) for name, key in keys.items()}


def _check_margin(margin) -> float:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise Invalid(f"The estimate margin must be a number, got {margin!r}") from None
    if not math.isfinite(m) or not 0 < m < 1:
        raise Invalid(f"The estimate margin must be in (0, 1) (a drop of weighted F1), got {m:g}")
    return m


def _check_thresholds(warning, alert, critical) -> tuple[float, float, float]:
    try:
        w, a, c = float(warning), float(alert), float(critical)
    except (TypeError, ValueError):
        raise Invalid(f"Thresholds must be numbers, got {warning!r}, {alert!r}, {critical!r}") from None
    if not all(math.isfinite(x) for x in (w, a, c)) or not 0 < w < a < c:
        raise Invalid(f"Thresholds must satisfy 0 < warning < alert < critical, got "
                      f"warning={w:g}, alert={a:g}, critical={c:g}")
    return w, a, c


def set_thresholds(conn, warning: float | None, alert: float | None, critical: float | None, by: str,
                   note: str | None = None, estimate_margin: float | None = None) -> dict:
    """Override the drift thresholds (app_settings), audited in alert_actions; commits.

    Validates 0 < warning < alert < critical (Invalid otherwise); all three None: the thresholds
    are left as they are (a change of the estimate margin alone). estimate_margin: in (0, 1), None
    keeps it. Returns the new values, the previous overrides (None when there were none) and the
    audit row id.
    """
    given = [x is not None for x in (warning, alert, critical)]
    if any(given) and not all(given):
        raise Invalid("Give the three thresholds together (update_thresholds merges a partial change)")
    if not any(given) and estimate_margin is None:
        raise Invalid("Give thresholds or an estimate margin to change")
    new: dict = {}
    if all(given):
        w, a, c = _check_thresholds(warning, alert, critical)
        new = {"warning": w, "alert": a, "critical": c}
    if estimate_margin is not None:
        new[MARGIN] = _check_margin(estimate_margin)
    if not by or not str(by).strip():
        raise Invalid("Say who changes the thresholds (--by NAME)")
    store.lock_thresholds(conn)  # the `old` audited is what this change replaces
    old = _overrides(conn, thresholds=all(given), margin=estimate_margin is not None)
    for name, value in new.items():
        store.upsert_app_setting(conn, THRESHOLD_KEYS.get(name, name), value, by)
    action_id = store.insert_alert_action(conn, alert_id=None, action="adjust_thresholds", actor=str(by),
                                          note=note, params={"old": old, "new": new})
    conn.commit()
    log.info("drift thresholds set to %s by %s", new, by)
    return {**new, "previous": old, "updated_by": str(by), "action_id": action_id}


def update_thresholds(conn, settings: Settings, actor: str, *, warning: float | None = None,
                      alert: float | None = None, critical: float | None = None,
                      note: str | None = None, estimate_margin: float | None = None) -> dict:
    """Change some of the thresholds: a value not given keeps the one in force (override or
    setting); the three together must still satisfy 0 < warning < alert < critical. The estimate
    margin alone changes no threshold. Audited and committed by set_thresholds. Returns the
    thresholds now in force (effective_thresholds).

    Invalid when no value is given (nothing to change) or the result is out of order.
    """
    given = {"warning": warning, "alert": alert, "critical": critical}
    if all(v is None for v in given.values()) and estimate_margin is None:
        raise Invalid("Give at least one value to change (warning, alert, critical or estimate_margin)")
    merged: dict = {level: None for level in given}
    store.lock_thresholds(conn)  # merged with the values in force: no other change in between
    try:
        if any(v is not None for v in given.values()):
            current = effective_thresholds(conn, settings)
            merged = {level: current[level] if v is None else v for level, v in given.items()}
        set_thresholds(conn, merged["warning"], merged["alert"], merged["critical"], actor, note,
                       estimate_margin=estimate_margin)
    except BaseException:
        conn.rollback()  # refused (out of order...): the lock goes with the transaction
        raise
    return effective_thresholds(conn, settings)


def reset_thresholds(conn, by: str, note: str | None = None) -> dict:
    """Drop the overrides: the settings' (environment) thresholds apply again. Audited; commits."""
    if not by or not str(by).strip():
        raise Invalid("Say who resets the thresholds (--by NAME)")
    store.lock_thresholds(conn)
    old = _overrides(conn)
    margin = _overrides(conn, thresholds=False, margin=True)
    if margin[MARGIN] is not None:
        old.update(margin)
    store.delete_app_settings(conn, list(THRESHOLD_KEYS.values()) + [MARGIN])
    action_id = store.insert_alert_action(conn, alert_id=None, action="adjust_thresholds", actor=str(by),
                                          note=note, params={"old": old, "new": None, "reset": True})
    conn.commit()
    return {"previous": old, "updated_by": str(by), "action_id": action_id}
