"""The shadow challenger, read side (docs/shadow.md): what the Models page shows of the
challenger's answers to live traffic against the champion's, and how far promotion's live
evidence is. The numbers are shadow_report's; the rule is steps/promote.py's."""

from __future__ import annotations

from .. import registry, store
from ..config import Settings


def overview(conn, settings: Settings, reports: int = 60) -> dict:
    """{active, enabled, min_requests, min_labelled, max_f1_loss, champion, challenger, evidence
    (shadow_report.evidence of the challenger against the champion, or None), missing (what live
    evidence promotion still waits for, None when there is enough or none is required),
    last_wait (the latest promote run that waited for it, when the latest promote run did),
    load_failures (the hosts whose shadow cannot load the challenger: serving/shadow.load_failures),
    reports (each drift report's shadow section, one row per window and pair, newest first)}."""
    from ..serving.shadow import load_failures, shadow_active
    from ..shadow_report import evidence
    from ..steps.promote import live_shortfall

    champion = (registry.version_by_alias(settings, registry.CHAMPION) or {}).get("version")
    challenger = (registry.version_by_alias(settings, registry.CHALLENGER) or {}).get("version")
    out = {"active": shadow_active(settings), "enabled": settings.shadow_enabled,
           "min_requests": settings.shadow_min_requests, "min_labelled": settings.shadow_min_labelled,
           "max_f1_loss": settings.shadow_max_f1_loss, "champion": champion, "challenger": challenger,
           "evidence": None, "missing": None, "last_wait": None, "load_failures": [], "reports": []}
    if challenger:
        out["load_failures"] = load_failures(conn, settings, challenger)
    if champion and challenger and champion != challenger:
        out["evidence"] = evidence(conn, champion, challenger)
        out["missing"] = live_shortfall(out["evidence"], settings.shadow_min_requests, settings.shadow_min_labelled)
    last = store.latest_run(conn, "promote")
    if last is not None and (last.get("outputs") or {}).get("decision") == "awaiting_evidence":
        o = last["outputs"]
        out["last_wait"] = {"pipeline_run_id": last["id"], "at": last.get("finished_at") or last.get("started_at"),
                            "model_version": o.get("model_version"), "justification": o.get("justification")}
    for row in store.drift_report_shadows(conn, limit=reports):
        for pair in row["shadow"].get("pairs", []):
            out["reports"].append({
                "report_id": row["id"], "as_of": row["as_of"], "window_days": row["window_days"],
                "champion_version": pair["champion_version"], "challenger_version": pair["challenger_version"],
                "n": pair["n"], "agreement": pair["agreement"], "n_labelled": pair["n_labelled"],
                "champion_weighted_f1": pair["champion_weighted_f1"],
                "challenger_weighted_f1": pair["challenger_weighted_f1"]})
    return out
