"""The demo behind `make demo`: several simulated weeks of the real job on the embedded default.

Each simulated week: the weekly pipeline (load -> train -> evaluate -> promote) with --as-of its
Monday; then a day at a time, traffic predicted by the serving code (serving.LoadedModel) and
logged by the serving inference logger, and the daily pipeline (drift -> alert). In week 4 a
person forces a retrain with nothing new to learn from: the identical challenger does not beat the
champion and is archived. From `drift_week` on, the traffic drifts (new vocabulary, other
languages): the drift check raises an alert (to the notification log by default), and on-call
rolls the model back. The rollback does not cure the drift (the older model never saw the new
vocabulary either), so after the drift weeks the team recovers (`recover`): moderators label a
sample of the drifted traffic (simulated: the generator knows the true code of every product it
generated; the labels go through the feedback use case, ops.feedback.record), a retrain learns from
them (the train step turns labels into training rows), the challenger is promoted because it wins
on the holdout that now holds drifted products too, and the following daily runs, with moderators
still labelling, see the performance drift resolve. Another labelled sample of the drifted traffic,
kept out of the feedback, measures the weighted F1 of the model rolled back to and of the retrained
champion (through the serving code): neither saw it in training. Tables of the weeks and of the
recovery close the run.

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

import numpy as np

from . import db, registry, store
from .config import Settings
from .errors import Invalid
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


@dataclass
class Recovery:
    """What the recovery after the drift did, and the weighted F1 on drifted traffic it measured."""
    rolled_back_to: str = "-"
    champion_before: str = "-"
    labels: int = 0
    eval_rows: int = 0
    retrained: str = ""
    gate: str = ""
    feedback_rows: int | None = None
    decision: str = ""
    champion: str = "-"
    f1: dict[str, float] = field(default_factory=dict)   # version -> weighted F1 on the evaluation sample
    performance: list[str] = field(default_factory=list)  # the performance-drift alert, day by day
    notes: list[str] = field(default_factory=list)

    @property
    def before(self) -> float | None:
        return self.f1.get(self.rolled_back_to)

    @property
    def after(self) -> float | None:
        return self.f1.get(self.champion) if self.decision == "promoted" else None


@dataclass
class DemoRun:
    weeks: list[Week]
    recovery: Recovery | None = None


# Moderators' share of the drifted traffic: at most this many labels for the retrain, and a
# separate evaluation sample of at most EVAL_ROWS (each at most a third of the drifted traffic).
LABELS = 1_200
EVAL_ROWS = 1_000
RECOVERY_DAYS = 3


def _worse(a: str, b: str) -> str:
    return a if LEVELS.index(a) >= LEVELS.index(b) else b


# The demo's model search: the plain baseline and the three linear candidates the full search
# picks from on catalogues of the demo's size (bench_train); eight candidates in each weekly
# training would take much of the demo's 3 minutes. Production keeps TRAIN_SEARCH_MAX_CANDIDATES.
DEMO_SEARCH_CANDIDATES = 4


def demo_settings(base: Settings, home: Path) -> Settings:
    """The demo's own home, on the embedded default, whatever DATABASE_URL says; a smaller model
    search (DEMO_SEARCH_CANDIDATES) unless TRAIN_SEARCH_MAX_CANDIDATES asks for fewer."""
    return base.replace(home=home, database_url="", mlflow_tracking_uri="", artifact_root="",
                        notification_log="", x_path=str(home / "data" / "X_train_update.csv"),
                        y_path=str(home / "data" / "Y_train_CVw08PX.csv"),
                        train_search_max_candidates=min(base.train_search_max_candidates, DEMO_SEARCH_CANDIDATES))


# Written in a home the demo made: only such a folder (or an empty one) is wiped at the next start.
MARKER = ".mlops-demo-home"
# What a demo home held before the marker existed (pg, data, artifacts, notifications.jsonl, ...).
_DEMO_ENTRIES = {"pg", "data", "artifacts", "notifications.jsonl", "ui-users", "logs", "prometheus-multiproc",
                 MARKER}


def reset(settings: Settings) -> None:
    """Stop the demo's embedded server and delete its home, so every demo starts clean. A folder
    the demo did not make is refused, not deleted (`--home .` must not wipe a working folder)."""
    home = settings.home
    if home.exists():
        entries = {p.name for p in home.iterdir()} if home.is_dir() else {home.name}
        if not home.is_dir() or (entries and MARKER not in entries and not entries <= _DEMO_ENTRIES):
            raise Invalid(f"{home} is not a demo home (no {MARKER} in it), and the demo deletes its home at start: "
                          "give --home a new or empty folder")
    if (settings.pg_dir / "postmaster.pid").exists():
        db.stop_embedded(settings)
    shutil.rmtree(home, ignore_errors=True)


def run_demo(base: Settings, *, home: Path, weeks: int, rows: int, per_day: int = 250,
             drift_kind: str = "vocabulary", drift_weeks: int = 2, start: date | None = None,
             labels: int = LABELS, progress: Callable[[str], None] = log.info) -> DemoRun:
    from .pipeline import run_pipeline
    from .synth import write_catalogue

    settings = demo_settings(base, home)
    reset(settings)
    settings.home.mkdir(parents=True)
    (settings.home / MARKER).write_text("made by `mlops demo`, which deletes this folder at its next start\n")
    today = datetime.now(timezone.utc).date()
    start = start or (today - timedelta(days=today.weekday()) - timedelta(weeks=weeks))
    drift_week = max(1, weeks - drift_weeks + 1)

    progress(f"generating a {rows:,}-row catalogue in the Rakuten format ({settings.home / 'data'})")
    write_catalogue(settings.home / "data", rows=rows, seed=42)
    scheduler = Trigger(triggered_by="cron", actor="demo-scheduler")
    db.open_db(settings).close()  # migrated before the serving logger starts: it creates day partitions
    traffic = Traffic(settings)
    history: list[Week] = []
    rolled_back, rolled_back_to = False, "-"
    recovery = None
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
                    rolled_back_to = week.champion
            progress(f"  traffic {7 * per_day:,} predictions ({kind} drift); worst drift level {week.drift_level}")
        if rolled_back:
            recovery = recover(settings, traffic, start + timedelta(weeks=weeks), per_day=per_day, drift=drift_kind,
                               rolled_back_to=rolled_back_to, labels=labels, progress=progress)
    finally:
        traffic.close()
    return DemoRun(history, recovery)


def recover(settings: Settings, traffic: "Traffic", monday: date, *, per_day: int, drift: str,
            rolled_back_to: str, labels: int = LABELS, progress: Callable[[str], None] = log.info) -> Recovery:
    """After the drift weeks: label a sample of the drifted traffic, retrain, promote, watch it resolve."""
    from .pipeline import run_pipeline

    rec = Recovery(rolled_back_to=rolled_back_to)
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    rec.champion_before = champion["version"] if champion else "-"
    served = traffic.drifted
    order = np.random.default_rng(20261201).permutation(len(served))
    n_eval = min(EVAL_ROWS, len(served) // 3)
    evaluation = [served[i] for i in order[:n_eval]]
    labelled = [served[i] for i in order[n_eval:n_eval + min(labels, len(served) - n_eval)]]
    rec.eval_rows = len(evaluation)
    progress(f"recovery ({monday.isoformat()}): moderators label {len(labelled):,} of the "
             f"{len(served):,} drifted predictions; {len(evaluation):,} others are kept apart to measure F1")
    rec.labels = record_labels(settings, labelled)
    scheduler = Trigger(triggered_by="cron", actor="demo-scheduler")
    daily = run_pipeline(settings, "daily", scheduler, as_of=monday)
    rec.performance.append(f"{monday.isoformat()}: {_performance_state(settings, daily)}")

    progress("  on-call retrains on the labels (UI: 'Force a retrain now'): train -> evaluate -> promote")
    retrain = run_pipeline(settings, "retrain", Trigger(triggered_by="ui", actor="oncall (demo)"), as_of=monday)
    for s in retrain.steps:
        if s.step == "train" and s.status == "succeeded":
            rec.retrained = str(s.outputs.get("model_version", ""))
            rec.gate = s.outputs.get("gate", "")
            rec.feedback_rows = s.outputs.get("feedback_rows")
        if s.step == "promote" and s.status == "succeeded":
            rec.decision = s.outputs.get("decision", "")
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    rec.champion = champion["version"] if champion else "-"
    progress(f"  retrained v{rec.retrained or '-'} (gate {rec.gate or '-'}, {rec.feedback_rows} feedback rows): "
             f"{rec.decision or retrain.message}; champion v{rec.champion}")

    # The following days: drifted traffic on the champion, moderators keep labelling (DRIFT_MIN_SAMPLES
    # a day: the performance check then scores the champion's own labelled predictions, not the
    # catalogue fallback), until no performance-drift alert is open (RECOVERY_DAYS at most).
    per_day_labels = min(per_day, max(1, settings.drift_min_samples))
    for d in range(RECOVERY_DAYS):
        day = monday + timedelta(days=d)
        served_today = traffic.day(rec.champion, day, per_day, drift=drift, seed=9000 + d, keep=False)
        record_labels(settings, served_today[:per_day_labels])
        daily = run_pipeline(settings, "daily", scheduler, as_of=day + timedelta(days=1))
        state = _performance_state(settings, daily)
        rec.performance.append(f"{(day + timedelta(days=1)).isoformat()}: {state}")
        if state.startswith(("resolved", "no alert")):  # the champion's live F1 holds
            break
    progress("  performance drift: " + "; ".join(rec.performance))

    for version in dict.fromkeys((rec.rolled_back_to, rec.champion_before, rec.champion)):
        if version and version != "-":
            rec.f1[version] = traffic.weighted_f1(version, evaluation)
    return rec


def record_labels(settings: Settings, rows: list[dict], *, submitted_by: str = "moderator (demo)") -> int:
    """Moderators' labels of served predictions (named by request id), in one transaction: the
    feedback use case's code rule (ops.feedback.check_code), then the store's batch insert, which
    ties each label to its logged prediction (code, version, product) as ops.feedback.record does.
    One call per label would cost a connection each: ~40 ms, a minute for the demo's labels."""
    from .ops.feedback import check_code

    for r in rows:
        check_code(int(r["true_code"]))
    with db.connection(settings, application_name="mlops-demo") as conn:
        n = store.insert_simulated_feedback(conn, [r["request_id"] for r in rows],
                                            [int(r["true_code"]) for r in rows], submitted_by=submitted_by)
    if n != len(rows):
        raise RuntimeError(f"{len(rows) - n} of {len(rows)} labels name no logged prediction")
    return n


def _performance_state(settings: Settings, daily) -> str:
    """The performance-drift alert after a daily run: its level and status, or none."""
    conn = db.open_db(settings)
    try:
        alerts = [a for a in store.list_alerts(conn, limit=50) if a["cause"] == "performance_drift"]
    finally:
        conn.close()
    score = None
    for s in daily.steps:
        for report in s.outputs.get("reports", []) if s.step == "drift" else []:
            p = (report.get("scores") or {}).get("performance")
            if p is not None:
                score = p if score is None else max(score, p)
    shown = f"score {score:.3f}" if score is not None else "no score"
    if not alerts:
        return f"no alert ({shown})"
    a = alerts[0]
    return f"{a['status']} (alert #{a['id']}, {a['level']}, {shown})"


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
        self.drifted: list[dict] = []  # served drifted products with their true code (the generator's)

    def _model(self, version: str):
        from .serving import LoadedModel

        if version not in self.loaded:
            self.loaded[version] = LoadedModel.prepare(version, registry.load_model(self.settings, version=version))
        return self.loaded[version]

    def day(self, version: str, day: date, n: int, *, drift: str, seed: int, keep: bool = True) -> list[dict]:
        """Serve and log a day of n products; returns them with their true code (kept in
        self.drifted when drifted and keep)."""
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
        served = [{"request_id": r["request_id"], "designation": r["designation"], "description": r["description"],
                   "true_code": int(c)} for r, c in zip(rows, products["prdtypecode"].tolist())]
        if drift != "none" and keep:
            self.drifted.extend(served)
        return served

    def weighted_f1(self, version: str, rows: list[dict]) -> float:
        """Weighted F1 of `version` on labelled rows, predicted by the serving code."""
        from sklearn.metrics import f1_score

        preds = self._model(version).predict([(r["designation"], r["description"]) for r in rows], top_k=1)
        return float(f1_score([r["true_code"] for r in rows], [int(c) for c in preds.codes],
                              average="weighted", zero_division=0))

    def close(self) -> None:
        self.logger.close()


def recovery_rows(rec: Recovery) -> list[dict]:
    """The closing table: each model's weighted F1 on the labelled drifted traffic none trained on."""
    roles: dict[str, list[str]] = {}
    roles.setdefault(rec.rolled_back_to, []).append("rolled back to (before)")
    roles.setdefault(rec.champion_before, []).append("champion before the retrain")
    if rec.decision == "promoted":
        roles.setdefault(rec.champion, []).append(f"retrained on {rec.labels:,} labels, champion (after)")
    elif rec.retrained:
        roles.setdefault(rec.retrained, []).append(f"retrained, {rec.decision or 'not promoted'}")
    return [{"model": f"v{v}", "role": ", ".join(r),
             "f1": f"{rec.f1[v]:.4f}" if v in rec.f1 else "-"} for v, r in roles.items() if v and v != "-"]


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
