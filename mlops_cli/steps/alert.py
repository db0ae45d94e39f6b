"""Alerting on drift reports: levels, deduplication, escalation, resolution, notifications.

`mlops alert` (default) reads the drift reports of the newest succeeded drift run that no alert
run has consumed yet (store.latest_unconsumed("drift", "alert")); `--report-id` one report.
For each cause -- data_drift, prediction_drift, performance_drift, estimated_performance (the
label-free estimate of weighted F1 against the same estimate on the holdout, in margins of
ESTIMATE_MARGIN: performance_estimate.py) -- the worst score over the run's windows (status 'ok', score not NULL) gives the level, with the thresholds in force
(thresholds.effective_thresholds: app_settings overrides, else the settings):

    score > warning   WARNING   recorded, notified on the log channel only
    score > alert     ALERT     + email and Slack
    score > critical  CRITICAL  + PagerDuty (trigger, dedup_key "mlops-drift-<cause>")

The `alerts` table holds at most one active (open or acknowledged) alert per cause:

- no active alert, level above NONE: a new alert, notified at its level;
- active alert, same level or lower: count + 1, last_seen, level updated (de-escalation is silent);
  notified again only as a reminder once ALERT_COOLDOWN_HOURS have passed since the last
  notification, and never while acknowledged (a person is on it);
- active alert, level higher than the highest one notified so far: escalated and notified at
  once, cooldown or not, acknowledged or not (the situation got worse);
- active alert, score back under the warning threshold: resolved, and `drift_resolved` sent on
  the channels the alert was notified on (PagerDuty resolves with the same dedup_key);
- no usable score for a cause (insufficient data, no labels): nothing changes for that cause --
  missing data neither raises nor resolves an alert.

A notification whose every channel beyond the log failed (SMTP down, webhook answering 500) does
not count as sent: the next run tries again (the failures are in the `notifications` table). One
that went out on some channels and failed on others (Slack delivered, PagerDuty down) counts as
sent, and the channels that failed are owed it (`details.undelivered`): each run sends it again on
those, while the alert is open at a level that has them, until they deliver (cooldown or not; an
acknowledged alert has a person on it). A resolution that failed on a channel
(`details.resolution_undelivered`) is sent again there by each run, for REDELIVER_DAYS, unless a
newer alert of the cause exists (its trigger took over the incident key).

Each cause's alert change is committed with its `notifications` rows as soon as it is sent: a
failure later in the run (a lost connection, another cause) cannot roll back what already went
out, and the retried run (STEP_RETRIES) finds it sent. A report already seen by an alert (the
retry, or `--report-id` again) does not count it again.

Reminders are due once ALERT_COOLDOWN_HOURS have passed, less REMINDER_SLACK of it: the daily check
starts a little earlier or later each day (the steps before it take more or less time), and a
reminder due within minutes of the run would otherwise wait a whole day more.

ALERT_ENABLED=false: reports are still written and alerts are still RECORDED (the dashboard
shows them, with details.notified_level unset), but nothing is sent. When alerting is enabled
again, the next run notifies the alerts still active (their level is above "never notified").

Human decisions on alerts (acknowledge, resolve, clear, and the decisions recorded with them)
are use cases of the operations layer: mlops_cli.ops.alerts.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from .. import champion_audit, notify, orphan_versions, store
from ..config import Settings
from ..errors import NotFound
from ..notify import Message
from ..performance_estimate import describe
from ..runs import StepResult, StepRun, Trigger, run_step
from ..stats import DRIFT_LEVELS, drift_level
from ..thresholds import effective_thresholds
from ..vocab import Cause, Step, values

log = logging.getLogger(__name__)

STEP = Step.ALERT.value
CAUSE_NAMES = {"data": "data_drift", "prediction": "prediction_drift", "performance": "performance_drift",
               "estimated_performance": "estimated_performance"}
CAUSE_LABELS = {"data": "data drift", "prediction": "prediction drift", "performance": "performance drift",
                "estimated_performance": "estimated performance"}
KINDS_BY_LEVEL = {
    "WARNING": ("log",),
    "ALERT": ("log", "email", "slack"),
    "CRITICAL": ("log", "email", "slack", "pagerduty"),
}
SEVERITY = {"WARNING": "warning", "ALERT": "error", "CRITICAL": "critical"}
# a resolution that failed on a channel is sent again there for this long (then: the failures are
# in `notifications`, and a person who sees the incident still open resolves it there)
REDELIVER_DAYS = 7
REMINDER_SLACK = 0.05  # of the cooldown (module docstring)


def _rank(level: str | None) -> int:
    return DRIFT_LEVELS.index(level) if level in DRIFT_LEVELS else 0


def dedup_key(cause: str) -> str:
    """The PagerDuty incident key of a cause ('data_drift' -> 'mlops-drift-data_drift')."""
    return f"mlops-drift-{cause}"


# --- what a report says about a cause -------------------------------------------------------------
def _worst(reports: list[dict], short: str) -> tuple[float, dict] | None:
    best = None
    for r in reports:
        score = r.get(f"{short}_drift_score")
        if r["status"] != "ok" or score is None:
            continue
        if best is None or score > best[0]:
            best = (float(score), r)
    return best


def _scores(report: dict) -> dict:
    return {short: report.get(f"{short}_drift_score") for short in CAUSE_NAMES}


def _top_features(short: str, report: dict) -> list[dict]:
    d = report.get("details") or {}
    if short == "estimated_performance":
        est = d.get("estimated_performance") or {}
        out = [{"feature": "estimated_f1_drop", "score": round(est.get("score") or 0.0, 4)}]
        out += [{"feature": f"estimated f1 class {c}", "score": drop} for c, drop in est.get("top_class_drops", [])[:4]]
        return out
    if short == "performance":
        perf = d.get("performance") or {}
        out = [{"feature": "weighted_f1_drop", "score": round(perf.get("score") or 0.0, 4)}]
        out += [{"feature": f"f1 class {c}", "score": drop} for c, drop in perf.get("top_class_drops", [])[:4]]
        return out
    feats = (d.get(short) or {}).get("features") or {}
    ranked = sorted(feats.items(), key=lambda kv: -(kv[1].get("score") or 0.0))
    out = [{"feature": k, "score": round(v.get("score") or 0.0, 4)} for k, v in ranked[:5]]
    if short == "data" and d.get("top_tokens"):
        out.append({"feature": "top tokens: " + ", ".join(t for t, _ in d["top_tokens"][:5]), "score": None})
    if short == "prediction" and d.get("top_classes"):
        out.append({"feature": "top classes: " + ", ".join(c for c, _ in d["top_classes"][:5]), "score": None})
    return out


def _justification(short: str, score: float, level: str, thresholds: dict, report: dict) -> str:
    d = report.get("details") or {}
    label = CAUSE_LABELS[short]
    if level == "NONE":
        text = (f"{label.capitalize()} is {score:.4f}, under the warning threshold "
                f"{thresholds['warning']:g}, over the last {report['window_days']} days "
                f"({report['n_inferences']} predictions).")
        return text + (" " + describe(report) if short == "estimated_performance" else "")
    limit = {"WARNING": "warning", "ALERT": "alert", "CRITICAL": "critical"}[level]
    text = (f"{label.capitalize()} {score:.4f} > {limit} threshold {thresholds[limit]:g} over the last "
            f"{report['window_days']} days ({report['n_inferences']} predictions, model version "
            f"{report['model_version']}).")
    if short == "data":
        feats = (d.get("data") or {}).get("features") or {}
        if feats:
            name, f = max(feats.items(), key=lambda kv: kv[1].get("score") or 0.0)
            extra = ""
            if "current_rate" in f:
                extra = f" (rate {f['reference_rate']:.1%} at training -> {f['current_rate']:.1%} now)"
            text += f" The feature that moved most is {name}: {f['score']:.4f}{extra}."
    elif short == "prediction":
        top = d.get("top_classes") or []
        if top:
            text += " The predicted-class mix moved most on classes " + ", ".join(c for c, _ in top[:3]) + "."
    elif short == "performance":
        perf = d.get("performance") or {}
        text += (f" Weighted F1 {perf.get('window_weighted_f1', 0):.4f} on {perf.get('n_labels')} labels "
                 f"({perf.get('source')}) against {perf.get('baseline_weighted_f1', 0):.4f} at training "
                 f"(drop {perf.get('drop', 0):.4f}).")
    elif short == "estimated_performance":
        text += " " + describe(report)
    return text


def _context(settings: Settings, short: str, cause: str, level: str, score: float, report: dict,
             thresholds: dict, alert_id: int | None, **extra) -> dict:
    d = report.get("details") or {}
    samples = report["n_inferences"]
    if short == "performance":
        samples = (d.get("performance") or {}).get("n_labels", samples)
    elif short == "estimated_performance":  # the checked version's predictions, what it estimates
        samples = (d.get("estimated_performance") or {}).get("n", samples)
    return {
        "level": level,
        "cause": cause,
        "dedup_key": dedup_key(cause),
        "model_name": settings.model_name,
        "model_version": report["model_version"],
        "scores": _scores(report),
        "score": score,
        "thresholds": {k: thresholds[k] for k in ("warning", "alert", "critical")},
        "top_features": _top_features(short, report),
        "samples": samples,
        "window": f"{report['window_days']} days to {report['as_of'].isoformat()}",
        "report_id": report["id"],
        "alert_id": alert_id,
        "justification": _justification(short, score, level, thresholds, report),
        "dashboard_url": settings.dashboard_url,
        "alerting_guide": notify.ALERTING_GUIDE,
        **extra,
    }


def _deliver(conn, settings: Settings, message: Message, level: str | None,
             run_id: int | None, channels: list[str] | None = None) -> tuple[list[str], bool, list[str]]:
    """Send on the channels of `level` (or on `channels`): (channels that delivered, whether the
    alert counts as notified, the channels beyond the log that failed). It does not count when
    every channel beyond the log failed (SMTP down, webhook 500): the next run then tries again
    instead of waiting for the cooldown."""
    if not settings.alert_enabled or (channels is None and level not in KINDS_BY_LEVEL):
        return [], False, []
    deliveries = notify.send(conn, settings, message, KINDS_BY_LEVEL[level] if channels is None else channels,
                             alert=True, pipeline_run_id=run_id)
    sent = [d.channel for d in deliveries if d.status == "sent"]
    external = [d for d in deliveries if d.channel != "log"]
    notified = bool(sent) and (not external or any(d.status == "sent" for d in external))
    return sent, notified, [d.channel for d in external if d.status != "sent"]


def _owe(details: dict, key: str, failed: list[str]) -> None:
    if failed:
        details[key] = sorted(set(failed))
    else:
        details.pop(key, None)


def notify_resolution(conn, settings: Settings, row: dict, details: dict, reason: str, scores: dict | None,
                      score: float | None, run_id: int | None) -> list[str]:
    """Tell the channels the alert was notified on that it is resolved; the channels that failed
    are recorded in `details` (resolution_undelivered: sent again by the next runs). Returns the
    channels that delivered."""
    details.pop("undelivered", None)  # a notice of the alert itself is owed no more
    msg = resolved_message(settings, row, reason, scores, score)
    sent, _notified, failed = _deliver(conn, settings, msg, details.get("notified_level"), run_id)
    _owe(details, "resolution_undelivered", failed)
    return sent


def _redeliver_resolutions(conn, settings: Settings, cause: str, active: dict | None, run_id: int | None) -> list[str]:
    """Send again the resolutions of `cause` that failed on a channel (see the module docstring)."""
    if not settings.alert_enabled:
        return []
    newest = store.newest_alert_id(conn, cause)
    sent: list[str] = []
    for row in store.alerts_owing_resolution(conn, cause, REDELIVER_DAYS):
        details = dict(row["details"] or {})
        channels = details.pop("resolution_undelivered")
        if active is None and row["id"] == newest:
            when = row["resolved_at"].astimezone(timezone.utc)
            reason = (f"Resolved at {when:%Y-%m-%d %H:%M} UTC by {details.get('resolved_by') or 'the alert step'}; "
                      "this notice could not be delivered then.")
            done, _notified, failed = _deliver(conn, settings, resolved_message(settings, row, reason, None, None),
                                               None, run_id, channels=list(channels))
            sent += done
            _owe(details, "resolution_undelivered", failed)
        store.update_alert(conn, row["id"], details=details)  # else: a newer alert's trigger owns the key
    return sent


def _max_level(a: str | None, b: str | None) -> str | None:
    return a if _rank(a) >= _rank(b) else b


def resolved_message(settings: Settings, alert: dict, reason: str, scores: dict | None,
                     score: float | None) -> Message:
    short = next(k for k, v in CAUSE_NAMES.items() if v == alert["cause"]) \
        if alert["cause"] in CAUSE_NAMES.values() else alert["cause"]
    label = CAUSE_LABELS.get(short, alert["cause"])
    back = f" ({label} back to {score:.4f})" if score is not None else ""
    return Message("drift_resolved", f"Drift resolved on {settings.model_name}{back}", "info", {
        "previous_level": alert["level"],
        "level": "NONE",
        "cause": alert["cause"],
        "dedup_key": dedup_key(alert["cause"]),
        "model_name": settings.model_name,
        "since": alert["first_seen"].isoformat() if alert.get("first_seen") else None,
        "scores": scores or {},
        "alert_id": alert["id"],
        "justification": reason,
        "dashboard_url": settings.dashboard_url,
        "alerting_guide": notify.ALERTING_GUIDE,
    })


def _history(details: dict, entry: dict, keep: int = 50) -> list:
    return (list(details.get("history") or []) + [entry])[-keep:]


# --- the step ------------------------------------------------------------------------------------------
def evaluate_cause(conn, settings: Settings, short: str, reports: list[dict], thresholds: dict,
                   run_id: int | None, now: datetime) -> dict:
    """Create / update / escalate / resolve the alert of one cause; send what must be sent."""
    cause = CAUSE_NAMES[short]
    worst = _worst(reports, short)
    active = store.active_alert(conn, cause)
    # first: before a new alert of the cause triggers the incident key again
    redelivered = _redeliver_resolutions(conn, settings, cause, active, run_id)
    extra = {"resolution_redelivered": redelivered} if redelivered else {}
    if worst is None:
        return {"cause": cause, "action": "no_data", "alert_id": active["id"] if active else None,
                "level": active["level"] if active else None, "notified": [], **extra}
    score, report = worst
    level = drift_level(score, thresholds["warning"], thresholds["alert"], thresholds["critical"])
    entry = {"at": now.isoformat(), "report_id": report["id"], "score": round(score, 6), "level": level}

    if level == "NONE":
        if active is None:
            return {"cause": cause, "action": "none", "alert_id": None, "level": "NONE", "score": score,
                    "notified": [], **extra}
        details = dict(active["details"] or {})
        details["history"] = _history(details, entry)
        details["resolved_by"] = "alert step"
        reason = _justification(short, score, "NONE", thresholds, report)
        sent = notify_resolution(conn, settings, active, details, reason, _scores(report), score, run_id)
        store.update_alert(conn, active["id"], status="resolved", resolved_at="now", last_seen="now",
                           report_id=report["id"], details=details)
        return {"cause": cause, "action": "resolved", "alert_id": active["id"], "level": "NONE",
                "previous_level": active["level"], "score": score, "notified": sent, **extra}

    if active is None:
        msg_level = level
        subject = f"Drift {level} on {settings.model_name} ({CAUSE_LABELS[short]} {score:.4f})"
        details = {"history": [entry], "peak_level": level, "notified_level": None, "score": score}
        alert_id = store.insert_alert(conn, level=level, cause=cause, report_id=report["id"], message=subject,
                                      details=details, notified=False)
        ctx = _context(settings, short, cause, level, score, report, thresholds, alert_id)
        sent, notified, failed = _deliver(conn, settings, Message("drift_alert", subject, SEVERITY[level], ctx),
                                          msg_level, run_id)
        if notified:
            details["notified_level"] = level
            _owe(details, "undelivered", failed)
            store.update_alert(conn, alert_id, last_notified_at="now", details=details)
        return {"cause": cause, "action": "created", "alert_id": alert_id, "level": level, "score": score,
                "notified": sent, **extra}

    details = dict(active["details"] or {})
    seen = (details.get("history") or [{}])[-1].get("report_id") == report["id"]  # a retried run
    details["history"] = _history(details, entry)
    details["score"] = score
    if _rank(level) > _rank(details.get("peak_level")):
        details["peak_level"] = level
    notified_level = details.get("notified_level")
    cooldown = timedelta(hours=float(settings.alert_cooldown_hours))
    last = active["last_notified_at"]
    owed = [c for c in details.get("undelivered") or [] if c in KINDS_BY_LEVEL.get(level, ())]
    count = active["count"] + (0 if seen else 1)
    channels = None
    if _rank(level) > _rank(notified_level):
        action = "escalated" if notified_level else "notified"
        subject = (f"Drift escalated to {level} on {settings.model_name} ({CAUSE_LABELS[short]} {score:.4f})"
                   if notified_level else
                   f"Drift {level} on {settings.model_name} ({CAUSE_LABELS[short]} {score:.4f})")
    elif active["status"] == "open" and (last is None or now - last >= cooldown * (1 - REMINDER_SLACK)):
        action = "reminded"
        subject = (f"Drift {level} still active on {settings.model_name} ({CAUSE_LABELS[short]} "
                   f"{score:.4f}, seen {count} times)")
    elif active["status"] == "open" and owed and settings.alert_enabled:
        action, channels = "redelivered", owed  # what failed there before, sent again there only
        subject = f"Drift {level} on {settings.model_name} ({CAUSE_LABELS[short]} {score:.4f})"
    else:
        action = "updated"
        subject = None
    sent: list[str] = []
    changes = {"last_seen": "now", "report_id": report["id"], "level": level, **({} if seen else {"count": "+1"})}
    if subject is not None:
        ctx = _context(settings, short, cause, level, score, report, thresholds, active["id"],
                       previous_level=active["level"], count=count, first_seen=active["first_seen"].isoformat())
        sent, notified, failed = _deliver(conn, settings, Message("drift_alert", subject, SEVERITY[level], ctx),
                                          level, run_id, channels=channels)
        if notified and channels is None:
            # the highest level told during the alert's life: its resolution goes to those channels
            details["notified_level"] = _max_level(notified_level, level)
            changes["last_notified_at"] = "now"
            _owe(details, "undelivered", failed)
        elif channels is not None:  # a redelivery (only chosen with alerting on)
            _owe(details, "undelivered", failed)
        changes["message"] = subject
    else:
        details["suppressed"] = ("acknowledged" if active["status"] == "acknowledged"
                                 else f"cooldown of {settings.alert_cooldown_hours:g} h")
    store.update_alert(conn, active["id"], details=details, **changes)
    return {"cause": cause, "action": action, "alert_id": active["id"], "level": level,
            "previous_level": active["level"], "score": score, "notified": sent, **extra}


def alert(conn, settings: Settings, trigger: Trigger, *, report_id: int | None = None) -> StepResult:
    """Turn drift reports into alerts and notifications (see the module docstring)."""

    def body(step: StepRun) -> None:
        # every day, reports or not: is production what mlops recorded? (champion_audit.py)
        step.outputs["champion_audit"] = champion_audit.check(conn, settings, step.pipeline_run_id)
        # and no version left by a train step that died (orphan_versions.py)
        step.outputs["orphan_versions"] = orphan_versions.sweep(conn, settings)
        conn.commit()  # what was sent stays recorded as sent, whatever fails later (module docstring)
        if report_id is not None:
            report = store.get_drift_report(conn, int(report_id))
            if report is None:
                raise NotFound(f"No drift report {report_id}")
            reports = [report]
        else:
            upstream = store.latest_unconsumed(conn, "drift", STEP)
            if upstream is None:
                step.skip("no new drift report: every succeeded drift run has been alerted on")
                return
            step.consume(upstream["id"])
            reports = store.drift_reports_for_run(conn, upstream["id"])
            if not reports:
                step.skip(f"drift run #{upstream['id']} wrote no report")
                return
        thresholds = effective_thresholds(conn, settings)
        now = datetime.now(timezone.utc)
        outcomes = []
        for short in values(Cause):
            outcomes.append(evaluate_cause(conn, settings, short, reports, thresholds, step.pipeline_run_id, now))
            conn.commit()  # this cause's alert with its notifications rows: sent is sent
        step.outputs.update({
            "report_ids": [r["id"] for r in reports],
            "alert_enabled": settings.alert_enabled,
            "thresholds": {k: thresholds[k] for k in ("warning", "alert", "critical")},
            "alerts": outcomes,
        })
        parts = []
        for o in outcomes:
            if o["action"] in ("none", "no_data"):
                parts.append(f"{o['cause']}: {'no data' if o['action'] == 'no_data' else 'ok'}")
            else:
                sent = f", sent via {'/'.join(o['notified'])}" if o["notified"] else ""
                parts.append(f"{o['cause']}: {o['action']} #{o['alert_id']} {o['level']}{sent}")
        off = "" if settings.alert_enabled else " (ALERT_ENABLED=false: nothing sent)"
        step.message = f"reports {', '.join(str(r['id']) for r in reports)}: " + "; ".join(parts) + off

    return run_step(conn, trigger, STEP, body, params={"report_id": report_id})
