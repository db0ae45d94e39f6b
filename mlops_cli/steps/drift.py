"""Daily drift check: recent predictions (inference_log) against the serving model's reference.

`mlops drift` writes one `drift_reports` row per window (default the last 7 and 30 days before
--as-of), comparing the window's traffic with the training-time reference of the model that
served it (the champion's version; see reference.py and the `model_references` table). `mlops
alert` then turns the reports into alerts and notifications (steps/alert.py).

How each score is computed: drift_scoring.py (pure functions); the window's counts, read from the
per-day rollups where they are fresh: drift_windows.py; the thresholds in force: thresholds.py.
Here: which model version's reference applies, the labels for performance drift (moderators'
feedback in the window, else a labelled sample of catalogue rows the model never trained on),
one report per window, stored.

A window with fewer than DRIFT_MIN_SAMPLES inference rows gets status 'insufficient_data',
NULL scores and level NONE: it never raises an alarm (and never resolves one, see alert.py).

The fourth score, estimated_performance, needs no label: the window's weighted F1 estimated from
the served probabilities against the same estimate on the model's holdout (performance_estimate.py).

A report's level is the worst of its four scores; drift_detected is true at ALERT or above.
"""

from __future__ import annotations

import logging
import time as time_module
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable

import numpy as np

from .. import registry, shadow_report, stats, store
from ..config import Settings
from ..drift_scoring import SCALES, performance_score, score_window, weighted_f1_from_pairs
from ..drift_windows import windows_aggregates
from ..errors import Conflict, Invalid
from ..performance_estimate import assess_window, labelled_sample, narrow_sample
from ..runs import StepResult, StepRun, Trigger, run_step
from ..vocab import Cause, Step, values
from ..thresholds import effective_thresholds

log = logging.getLogger(__name__)

STEP = Step.DRIFT.value
DEFAULT_WINDOWS = (7, 30)
CATALOGUE_SAMPLE = 5_000     # labelled catalogue rows scored when feedback is too scarce
CATALOGUE_FETCH = 25_000     # catalogue rows read to find them (most are training rows)
CAUSES = values(Cause)
LEVELS = stats.DRIFT_LEVELS


# --- the reference ----------------------------------------------------------------------------------
def reference_for(conn, settings: Settings, version: str, *, build_if_missing: bool = True) -> dict | None:
    """The model_references row of `version` ({..., "summary": {...}}).

    A version trained before references existed has none: it is then built once from the
    current catalogue split (logged), stored, and reused (build_if_missing=False: None).
    """
    row = store.get_model_reference(conn, settings.model_name, str(version))
    if row is not None or not build_if_missing:
        return row
    from .. import dataset
    from ..reference import build_reference

    log.warning("model %s version %s has no stored reference: building it from the catalogue once",
                settings.model_name, version)
    products = store.read_products(conn, ("productid", "designation", "description", "prdtypecode"))
    train_rows, holdout = dataset.split(products, settings.holdout_fraction)
    if len(train_rows) == 0 or len(holdout) == 0:
        raise Conflict(f"Version {version} has no reference and the catalogue is empty: cannot check drift")
    info = registry.get_version(settings, version)
    model = registry.load_model(settings, version=version)
    summary = build_reference(model, train_rows, holdout)
    summary["built_late"] = True
    store.insert_model_reference(conn, model_name=settings.model_name, model_version=str(version),
                                 mlflow_run_id=info.get("mlflow_run_id"), summary=summary)
    return store.get_model_reference(conn, settings.model_name, str(version))


def as_of_utc(value) -> datetime:
    """--as-of as an aware UTC datetime: now when None, a date at its UTC midnight."""
    if value is None:
        return datetime.now(timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time.min, tzinfo=timezone.utc)
    raise TypeError(f"as_of must be a date or datetime, got {type(value).__name__}")


class _Labels:
    """Labels for performance drift: feedback in the window, else a labelled catalogue sample;
    and the estimate's labelled sample, read once for the check's widest window (widest: its
    (start, end); every window of a check ends at the same instant)."""

    def __init__(self, conn, settings: Settings, ref_row: dict, widest: tuple):
        self.conn, self.settings, self.ref_row = conn, settings, ref_row
        self._model = None
        self._widest, self._sample = widest, None

    def sample(self, start: datetime) -> list[tuple]:
        """The estimate's labelled predictions of the window from `start` to the check's end
        (performance_estimate.labelled_sample, narrowed)."""
        if self._sample is None:
            self._sample = labelled_sample(self.conn, self.ref_row["model_version"], *self._widest)
        return narrow_sample(self._sample, start)

    def model(self):
        if self._model is None:
            self._model = registry.load_model(self.settings, version=self.ref_row["model_version"])
        return self._model

    def get(self, start: datetime, end: datetime) -> tuple[dict | None, int]:
        """(performance result or None, number of feedback labels in the window)."""
        min_n = max(1, int(self.settings.drift_min_samples))
        # the serving version's predictions only: after a promotion, the labels of the model it
        # replaced say nothing about it (as the prediction counts, see windows_aggregates)
        version = self.ref_row["model_version"]
        n_feedback = int(sum(p[2] for p in store.window_feedback_pairs(self.conn, start, end, version=version)))
        # a label the labelling queue asked for is not a sample of the traffic (the queue picks
        # likely errors): scored as one, it reads as a drop on traffic that did not change
        pairs = store.window_feedback_pairs(self.conn, start, end, version=version, unpicked_only=True)
        unpicked = int(sum(p[2] for p in pairs))
        n_picked = n_feedback - unpicked
        if unpicked >= min_n:
            out = weighted_f1_from_pairs(pairs)
            out.update(source="feedback", n_feedback_picked=n_picked)
            return out, n_feedback
        rows = store.products_loaded_between(self.conn, start, end, CATALOGUE_FETCH)
        if len(rows) < min_n:
            return {"source": "none", "n_feedback": n_feedback, "n_catalogue": len(rows),
                    "n_feedback_picked": n_picked}, n_feedback
        from .. import dataset

        ids = np.array([r["productid"] for r in rows], dtype=np.int64)
        trained_at = self.ref_row["created_at"]
        unseen = dataset.holdout_mask(ids, self.settings.holdout_fraction) | \
            np.array([r["loaded_at"] > trained_at for r in rows], dtype=bool)
        picked = [r for r, keep in zip(rows, unseen) if keep][:CATALOGUE_SAMPLE]
        if len(picked) < min_n:
            return {"source": "none", "n_feedback": n_feedback, "n_catalogue": len(rows),
                    "n_unseen": len(picked), "n_feedback_picked": n_picked}, n_feedback
        import pandas as pd

        from ..reference import served_predictions

        df = pd.DataFrame(picked)
        pred, _ = served_predictions(self.model(), df[["designation", "description"]])
        counts: dict[tuple[int, int], int] = {}
        for t, p in zip(df["prdtypecode"].astype(int).tolist(), np.asarray(pred).astype(int).tolist()):
            counts[(t, p)] = counts.get((t, p), 0) + 1
        out = weighted_f1_from_pairs([(t, p, n) for (t, p), n in counts.items()])
        out.update(source="catalogue", n_catalogue_read=len(rows), n_feedback_picked=n_picked)
        return out, n_feedback


def analyse_window(conn, settings: Settings, ref_row: dict, as_of: datetime, days: int,
                   thresholds: dict, labels: _Labels, agg: dict | None = None) -> dict:
    """The drift_reports row (as a dict, not yet stored) of one window.

    agg: the window's counts when already computed (windows_aggregates).
    """
    summary = ref_row["summary"]
    start = as_of - timedelta(days=days)
    if agg is None:
        agg = windows_aggregates(conn, summary, as_of, [days], version=ref_row["model_version"])[days]
    th = (thresholds["warning"], thresholds["alert"], thresholds["critical"])
    details: dict = {
        "model_name": settings.model_name,
        "model_version": ref_row["model_version"],
        "reference_created_at": ref_row["created_at"].isoformat(),
        "window": {"start": start.isoformat(), "end": as_of.isoformat(), "days": days},
        "thresholds": {k: thresholds[k] for k in ("warning", "alert", "critical")},
        "threshold_source": thresholds.get("source"),
        "min_samples": settings.drift_min_samples,
        "n_inferences": agg["n"],
        "model_versions": agg["model_versions"],
        "scales": SCALES,
    }
    report = {"report_date": as_of.date(), "window_days": days, "as_of": as_of,
              "model_version": ref_row["model_version"], "n_inferences": agg["n"], "n_feedback": 0,
              "data_drift_score": None, "prediction_drift_score": None, "performance_drift_score": None,
              "drift_detected": False, "level": "NONE", "details": details}
    min_samples = max(1, settings.drift_min_samples)
    if agg["n"] < min_samples:
        n_feedback = int(sum(p[2] for p in store.window_feedback_pairs(conn, start, as_of,
                                                                       version=ref_row["model_version"])))
        details.update(status="insufficient_data", scores={c: None for c in CAUSES},
                       levels={c: "NONE" for c in CAUSES},
                       reason=f"{agg['n']} predictions in the {days}-day window, fewer than "
                              f"DRIFT_MIN_SAMPLES={settings.drift_min_samples}: no scores")
        report.update(status="insufficient_data", n_feedback=n_feedback)
        return report

    scored = score_window(summary, agg, min_samples=min_samples)
    perf_result, n_feedback = labels.get(start, as_of)
    if perf_result is not None and "weighted_f1" in perf_result:
        perf = performance_score(summary, perf_result)
        perf["source"] = perf_result["source"]
        perf["n_feedback_picked"] = perf_result.get("n_feedback_picked", 0)
    else:
        perf = {"score": None, **(perf_result or {"source": "none"}),
                "reason": f"fewer than {settings.drift_min_samples} labels (feedback not asked for by the "
                          "labelling queue, or unseen catalogue rows)"}
    est = assess_window(summary, agg.get("estimate"), labels.sample(start), thresholds,
                        thresholds.get("estimate_margin", settings.estimate_margin),
                        min_samples=min_samples)
    scores = {"data": scored["data"]["score"], "prediction": scored["prediction"]["score"],
              "performance": perf["score"], "estimated_performance": est["score"]}
    levels = {c: stats.drift_level(s, *th) for c, s in scores.items()}
    level = max(levels.values(), key=LEVELS.index)
    top_features = list(scored["top_features"])
    if perf["score"] is not None:
        top_features.append({"feature": "weighted_f1_drop", "score": round(perf["score"], 4)})
    if est["score"] is not None:
        top_features.append({"feature": "estimated_f1_drop", "score": round(est["score"], 4)})
    top_features.sort(key=lambda f: -f["score"])
    details.update(
        status="ok", scores=scores, levels=levels, level=level,
        data=scored["data"], prediction=scored["prediction"], performance=perf,
        estimated_performance=est["details"],
        top_features=top_features[:5], top_tokens=scored["top_tokens"], top_classes=scored["top_classes"],
        n_titles=agg["n_titles"], n_feedback=n_feedback, unknown_classes=agg["unknown_classes"],
        oov={"rows_with_oov": agg["oov_rows"]},
    )
    report.update(status="ok", n_feedback=n_feedback, level=level,
                  data_drift_score=scores["data"], prediction_drift_score=scores["prediction"],
                  performance_drift_score=scores["performance"], **est["columns"],
                  drift_detected=LEVELS.index(level) >= LEVELS.index("ALERT"))
    return report


def serving_version(conn, settings: Settings, as_of: datetime, days: int) -> tuple[str | None, str]:
    """(version, how chosen) whose reference the drift check and the rollups use: the champion,
    else the version with a stored reference that served most of the window's traffic."""
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    if champion:
        return str(champion["version"]), "champion"
    versions = store.window_model_versions(conn, as_of - timedelta(days=days), as_of)
    for v in versions:  # most frequent first
        if v["model_version"] and store.get_model_reference(conn, settings.model_name, v["model_version"]):
            return str(v["model_version"]), "traffic"
    return None, "none"


def drift(conn, settings: Settings, trigger: Trigger, *, as_of=None,
          window_days: Iterable[int] = DEFAULT_WINDOWS, rollups: bool = True) -> StepResult:
    """One drift_reports row per window, against the serving model's reference (see module doc).

    rollups=False counts every window by scanning its rows (the reference of the rollups)."""
    when = as_of_utc(as_of)
    windows = sorted({int(d) for d in (window_days or DEFAULT_WINDOWS)})
    if not windows or windows[0] <= 0:
        raise Invalid(f"Windows must be positive numbers of days, got {list(window_days)}")

    def body(step: StepRun) -> None:
        clock = time_module.perf_counter
        t0 = clock()
        version, how = serving_version(conn, settings, when, windows[-1])
        if version is None:
            step.skip(f"no champion of {settings.model_name} and no logged traffic from a version with a "
                      "reference: nothing to compare")
            return
        ref_row = reference_for(conn, settings, version)
        thresholds = effective_thresholds(conn, settings)
        labels = _Labels(conn, settings, ref_row, widest=(when - timedelta(days=windows[-1]), when))
        t1 = clock()
        aggs = windows_aggregates(conn, ref_row["summary"], when, windows, rollups=rollups,
                                  version=ref_row["model_version"])
        t2 = clock()
        reports = []
        for days in windows:
            report = analyse_window(conn, settings, ref_row, when, days, thresholds, labels, agg=aggs[days])
            report["details"]["version_chosen_by"] = how
            report["id"] = store.insert_drift_report(conn, pipeline_run_id=step.pipeline_run_id, **report)
            report["shadow"] = shadow_report.attach_to_report(conn, report["id"], when, days)  # docs/shadow.md
            reports.append(report)
        worst = max((r["level"] for r in reports), key=LEVELS.index)
        step.outputs.update({
            "seconds": {"setup": round(t1 - t0, 3), "aggregates": round(t2 - t1, 3),
                        "windows": round(clock() - t2, 3)},
            "model_version": version, "as_of": when.isoformat(), "level": worst,
            "counts_from": {days: aggs[days]["sources"] for days in windows},
            "reports": [{"id": r["id"], "window_days": r["window_days"], "status": r["status"],
                         "n_inferences": r["n_inferences"], "level": r["level"],
                         "scores": {"data": r["data_drift_score"], "prediction": r["prediction_drift_score"],
                                    "performance": r["performance_drift_score"],
                                    "estimated_performance": r.get("estimated_performance_drift_score")},
                         "estimated_weighted_f1": r.get("estimated_weighted_f1")} for r in reports],
        })
        step.message = f"version {version}: " + "; ".join(_summary_line(r) for r in reports)

    return run_step(conn, trigger, STEP, body,
                    params={"as_of": when.isoformat(), "window_days": windows})


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _summary_line(r: dict) -> str:
    if r["status"] != "ok":
        return f"{r['window_days']}d: {r['n_inferences']} rows, insufficient data"
    return (f"{r['window_days']}d: {r['n_inferences']} rows, data {_fmt(r['data_drift_score'])} / "
            f"prediction {_fmt(r['prediction_drift_score'])} / performance "
            f"{_fmt(r['performance_drift_score'])} / estimated F1 {_fmt(r.get('estimated_weighted_f1'))} -> "
            f"{r['level']}")
