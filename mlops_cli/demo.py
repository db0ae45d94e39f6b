"""The demo behind `make demo`: several simulated weeks of the real job on the embedded default.

Each simulated week: the weekly pipeline (load -> train -> evaluate -> promote) with --as-of its
Monday; then a day at a time, traffic predicted by the serving code (serving.LoadedModel) and
logged by the serving inference logger, and the daily pipeline (drift -> alert). In week 4 a
person forces a retrain with nothing new to learn from: the identical challenger does not beat the
champion and is archived. From `drift_week` on, the traffic drifts (new vocabulary, other
languages): the drift check raises an alert (to the notification log by default), and on-call
rolls the model back. A table of the weeks closes the run.

Everything goes through the same library functions as the CLI, cron and the UI.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Callable

from . import db, registry, store
from .config import Settings
from .runs import Trigger
from .vocab import Level, values

log = logging.getLogger(__name__)

LEVELS = values(Level)  # lowest first


@dataclass
class Week:
    number: int
    monday: date
    catalogue_rows: int = 0
    challenger: str = ""
    weighted_f1: float | None = None
    decision: str = ""
    champion: str = ""
    drift_level: str = "NONE"
    notes: list[str] = field(default_factory=list)


def _worse(a: str, b: str) -> str:
    return a if LEVELS.index(a) >= LEVELS.index(b) else b


def demo_settings(base: Settings, home: Path) -> Settings:
    """The demo's own home, on the embedded default, whatever DATABASE_URL says."""
    return base.replace(home=home, database_url="", mlflow_tracking_uri="", artifact_root="",
                        notification_log="", x_path=str(home / "data" / "X_train_update.csv"),
                        y_path=str(home / "data" / "Y_train_CVw08PX.csv"))


def reset(settings: Settings) -> None:
    """Stop the demo's embedded server and delete its home, so every demo starts clean."""
    if (settings.pg_dir / "postmaster.pid").exists():
        db.stop_embedded(settings)
    shutil.rmtree(settings.home, ignore_errors=True)


def run_demo(base: Settings, *, home: Path, weeks: int = 8, rows: int = 20_000, per_day: int = 250,
             drift_kind: str = "vocabulary", drift_weeks: int = 2, start: date | None = None,
             progress: Callable[[str], None] = log.info) -> list[Week]:
    from .pipeline import run_pipeline
    from .synth import write_catalogue

    settings = demo_settings(base, home)
    reset(settings)
    settings.home.mkdir(parents=True)
    today = datetime.now(timezone.utc).date()
    start = start or (today - timedelta(days=today.weekday()) - timedelta(weeks=weeks))
    drift_week = max(1, weeks - drift_weeks + 1)

    progress(f"generating a {rows:,}-row catalogue in the Rakuten format ({settings.home / 'data'})")
    write_catalogue(settings.home / "data", rows=rows, seed=42)
    scheduler = Trigger(triggered_by="cron", actor="demo-scheduler")
    traffic = Traffic(settings)
    history: list[Week] = []
    rolled_back = False
    try:
        for n in range(1, weeks + 1):
            monday = start + timedelta(weeks=n - 1)
            week = Week(n, monday)
            history.append(week)
            progress(f"week {n}/{weeks} ({monday.isoformat()}): weekly pipeline load -> train -> evaluate -> promote")
            result = run_pipeline(settings, "weekly", scheduler, as_of=monday)
            _record_weekly(week, result)
            if not result.ok:
                raise RuntimeError(f"weekly pipeline failed: {result.message}")
            if n == 4:
                progress("  a person forces a retrain with no new data (UI: 'Force a retrain now')")
                retrain = run_pipeline(settings, "retrain", Trigger(triggered_by="ui", actor="alice (demo)"),
                                       as_of=monday)
                promote = next((s for s in retrain.steps if s.step == "promote"), None)
                if promote and promote.outputs.get("decision"):
                    week.notes.append(f"forced retrain v{promote.outputs.get('model_version')}: "
                                      f"{promote.outputs['decision']}")
            champion = registry.version_by_alias(settings, registry.CHAMPION)
            week.champion = champion["version"] if champion else "-"
            if not champion:
                continue
            kind = drift_kind if n >= drift_week else "none"
            for d in range(7):
                day = monday + timedelta(days=d)
                traffic.day(champion["version"], day, per_day, drift=kind, seed=n * 10 + d)
                daily = run_pipeline(settings, "daily", scheduler, as_of=day + timedelta(days=1))
                if not daily.ok:
                    raise RuntimeError(f"daily pipeline failed: {daily.message}")
                level = _daily_level(daily)
                week.drift_level = _worse(week.drift_level, level)
                if level in ("ALERT", "CRITICAL") and not rolled_back:
                    rolled_back = True
                    progress(f"  {day.isoformat()}: drift {level}: on-call investigates and rolls back")
                    week.notes.append(_rollback(settings, level))
                    champion = registry.version_by_alias(settings, registry.CHAMPION)
                    week.champion = champion["version"] if champion else "-"
            progress(f"  traffic {7 * per_day:,} predictions ({kind} drift); worst drift level {week.drift_level}")
    finally:
        traffic.close()
    return history


def _record_weekly(week: Week, result) -> None:
    for s in result.steps:
        if s.step == "load":
            week.catalogue_rows = s.outputs.get("catalogue_rows", week.catalogue_rows)
        if s.step == "train" and s.status == "succeeded":
            week.challenger = s.outputs.get("model_version", "")
            week.weighted_f1 = s.outputs.get("weighted_f1")
        if s.step == "promote" and s.status == "succeeded":
            week.decision = s.outputs.get("decision", "")
            if s.outputs.get("candidate_score") is not None:
                week.weighted_f1 = s.outputs["candidate_score"]


def _daily_level(result) -> str:
    level = "NONE"
    for s in result.steps:
        for report in s.outputs.get("reports", []) if s.step == "drift" else []:
            level = _worse(level, report.get("level") or "NONE")
    return level


def _rollback(settings: Settings, level: str) -> str:
    """On-call's answer to the alert, as the alerts page does it: roll back, audited on the alert."""
    from .ops.alerts import list_alerts
    from .ops.common import trigger
    from .ops.models import Decision, rollback
    from .runs import StepFailed

    conn = db.open_db(settings)
    try:
        alerts = list_alerts(conn, status="open", limit=1)
    finally:
        conn.close()
    alert_id = alerts[0]["id"] if alerts else None
    reason = f"drift {level} (alert #{alert_id}): back to the previous champion while we investigate"
    try:
        result = rollback(settings, trigger("ui", "oncall (demo)"), reason=reason, decision=Decision(alert_id, reason))
    except StepFailed as exc:
        return f"rollback not possible: {exc.result.message}"
    return f"rolled back: {result.message}"


class Traffic:
    """A day of requests through the serving code (LoadedModel + InferenceLogger)."""

    def __init__(self, settings: Settings):
        from .serving import InferenceLogger

        self.settings = settings
        self.logger = InferenceLogger(settings)
        self.logger.start()
        self.loaded: dict[str, object] = {}

    def _model(self, version: str):
        from .serving import LoadedModel

        if version not in self.loaded:
            self.loaded[version] = LoadedModel.prepare(version, registry.load_model(self.settings, version=version))
        return self.loaded[version]

    def day(self, version: str, day: date, n: int, *, drift: str, seed: int) -> None:
        from .synth import generate_products

        loaded = self._model(version)
        products = generate_products(n, seed=1000 + seed, drift=drift)
        items = list(zip(products["designation"].tolist(), products["description"].tolist()))
        preds = loaded.predict(items, top_k=3)
        t0 = datetime.combine(day, time(8, 0), tzinfo=timezone.utc)
        rows = []
        for i, (title, desc) in enumerate(items):
            rows.append({
                "logged_at": t0 + timedelta(seconds=i * 14 * 3600 / n), "request_id": uuid.uuid4().hex,
                "source": "simulation", "model_version": loaded.version,
                "productid": int(products["productid"].iloc[i]), "designation": title, "description": desc or "",
                "predicted_code": int(preds.codes[i]), "confidence": float(preds.confidence[i]),
                "top_k": [{"prdtypecode": int(c), "probability": float(p)}
                          for c, p in zip(preds.top_codes[i], preds.top_proba[i])],
                "latency_ms": None, "vocabulary": loaded.vocabulary,
            })
        self.logger.log_many(rows)
        if not self.logger.flush(timeout=60):
            raise RuntimeError(f"inference log not flushed: {self.logger.last_error}")

    def close(self) -> None:
        self.logger.close()


def summary_rows(history: list[Week]) -> list[dict]:
    return [{"week": w.number, "monday": w.monday.isoformat(), "catalogue": w.catalogue_rows,
             "challenger": w.challenger or "-",
             "weighted_f1": f"{w.weighted_f1:.4f}" if w.weighted_f1 is not None else "-",
             "decision": w.decision or "-", "champion": w.champion or "-", "drift": w.drift_level,
             "notes": "; ".join(w.notes)} for w in history]


def totals(settings: Settings) -> dict:
    conn = db.open_db(settings)
    try:
        counts = store.table_counts(conn, ["products", "pipeline_runs", "model_decisions", "inference_log",
                                           "drift_reports", "alerts", "notifications", "alert_actions"])
    finally:
        conn.close()
    return counts


def notification_lines(settings: Settings, limit: int = 6) -> list[str]:
    path = settings.notification_log_path
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()[-limit:]
    return [f"{json.loads(line).get('event')}: {json.loads(line).get('subject')}" for line in lines]
