"""Drift reports for people: the reports, their score history, and what moved in one report
(per-feature distributions, the tokens and classes whose share moved most)."""

from __future__ import annotations

from .. import store
from ..vocab import Cause, values
from .common import found


def reports(conn, *, limit: int = 50, window_days: int | None = None) -> list[dict]:
    """Newest drift reports first (all columns, details included)."""
    return store.list_drift_reports(conn, limit=limit, window_days=window_days)


def report(conn, report_id: int) -> dict:
    """One drift report; NotFound "No drift report <id>"."""
    return found(store.get_drift_report(conn, int(report_id)), f"No drift report {report_id}")


def history(conn, *, days: int = 90, window_days: int | None = None) -> list[dict]:
    """Drift scores over time, long format: one row per (report, cause) with a score."""
    out = []
    for r in store.drift_score_history(conn, days=days, window_days=window_days):
        for cause in values(Cause):
            score = r.get(f"{cause}_drift_score")
            if score is None:
                continue
            out.append({"report_id": r["id"], "as_of": r["as_of"], "window_days": r["window_days"],
                        "cause": cause, "score": float(score), "level": r["level"], "status": r["status"],
                        "model_version": r["model_version"], "n_inferences": r["n_inferences"]})
    return out


def estimate_history(conn, *, days: int = 90, window_days: int | None = None) -> list[dict]:
    """The label-free performance estimate over time, one row per scored report, oldest first:
    {report_id, as_of, window_days, estimated, low, high, reference, realized, realized_n,
    realized_estimated (the estimate on the labelled rows), score, model_version}."""
    out = []
    for r in store.drift_score_history(conn, days=days, window_days=window_days):
        if r.get("estimated_weighted_f1") is None:
            continue
        out.append({"report_id": r["id"], "as_of": r["as_of"], "window_days": r["window_days"],
                    "estimated": r["estimated_weighted_f1"], "low": r["estimated_f1_low"],
                    "high": r["estimated_f1_high"], "reference": r["reference_estimated_f1"],
                    "realized": r["realized_weighted_f1"], "realized_n": r["realized_n"],
                    "realized_estimated": r["realized_estimated_f1"],
                    "score": r["estimated_performance_drift_score"], "model_version": r["model_version"]})
    return out


def estimate_class_drops(report: dict) -> list[dict]:
    """Classes whose estimated F1 fell most below the reference's estimate, with their names."""
    from ..categories import category_name

    est = (report.get("details") or {}).get("estimated_performance") or {}
    out = []
    for code, drop in est.get("top_class_drops") or []:
        try:
            name = category_name(int(code))
        except (TypeError, ValueError, KeyError):
            name = ""
        out.append({"class": f"{code} {name}".strip(), "estimated F1": (est.get("per_class_f1") or {}).get(code),
                    "drop": drop})
    return out


def feature_distributions(report: dict, *, max_labels: int = 30) -> list[dict]:
    """Per-feature reference vs current distributions of a report, for bar charts.

    [{group: data|prediction, feature, kind, score, rows: [{label, order, which, share}]}] for the
    binned / categorical features, largest score first; rate features (empty descriptions, OOV
    rate) come with reference_rate / current_rate and no rows. Features with many categories
    (title tokens) keep the `max_labels` whose share moved most.
    """
    details = report.get("details") or {}
    out = []
    for group in (Cause.DATA.value, Cause.PREDICTION.value):
        for name, f in ((details.get(group) or {}).get("features") or {}).items():
            item = {"group": group, "feature": name, "kind": f.get("kind"), "score": f.get("score"),
                    "rows": [], "reference_rate": f.get("reference_rate"), "current_rate": f.get("current_rate"),
                    "top": f.get("top") or []}
            labels, ref, cur = f.get("labels"), f.get("reference"), f.get("current")
            if labels and ref is not None and cur is not None and len(labels) == len(ref) == len(cur):
                keep = list(range(len(labels)))
                if len(labels) > max_labels:
                    keep = sorted(sorted(keep, key=lambda i: -abs(cur[i] - ref[i]))[:max_labels])
                for order, i in enumerate(keep):
                    item["rows"].append({"label": _label(labels[i]), "order": order, "which": "reference",
                                         "share": float(ref[i])})
                    item["rows"].append({"label": _label(labels[i]), "order": order, "which": "current",
                                         "share": float(cur[i])})
            out.append(item)
    return sorted(out, key=lambda f: -(f["score"] or 0.0))


def _label(value) -> str:
    from ..reference import OTHER

    return "(other tokens)" if value == OTHER else str(value)


def top_tokens(report: dict) -> list[dict]:
    """Title tokens whose share moved most (PSI contribution), largest first."""
    return [{"token": _label(t), "contribution": float(c)}
            for t, c in ((report.get("details") or {}).get("top_tokens") or [])]


def top_classes(report: dict) -> list[dict]:
    """Predicted classes whose share moved most (PSI contribution), with their names."""
    from ..categories import category_name

    out = []
    for code, c in (report.get("details") or {}).get("top_classes") or []:
        try:
            name = category_name(int(code))
        except (TypeError, ValueError, KeyError):
            name = ""
        out.append({"class": str(code), "name": name, "contribution": float(c)})
    return out
