"""Registered model versions with their lifecycle, and the decision history.

Shared by the CLI (`mlops models`), the UI and the API: plain dicts, JSON-friendly values except
datetimes (render.to_json handles those).
"""

from __future__ import annotations

from datetime import datetime, timezone

from . import registry, store
from .config import Settings


def _float(value) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def list_models(conn, settings: Settings) -> list[dict]:
    """Every registered version, newest first: aliases, stage, weighted F1, its plain baseline's
    weighted F1 (training holdout), the configuration the search chose, latest decision.

    weighted_f1 comes from the version's latest evaluation (training, evaluation or champion
    re-check: the most recent holdout it was scored on), else from its training tag.
    """
    versions = registry.list_versions(settings)
    evaluations = store.latest_evaluations_by_version(conn, settings.model_name)
    decisions = store.latest_decisions_by_version(conn, settings.model_name)
    out = []
    for v in versions:
        tags = v["tags"]
        ev = evaluations.get(v["version"])
        d = decisions.get(v["version"])
        created = v["created_at"]
        out.append({
            "version": v["version"],
            "aliases": list(v["aliases"]),
            "stage": tags.get("stage") or "None",
            "weighted_f1": float(ev["weighted_f1"]) if ev else _float(tags.get("weighted_f1")),
            "weighted_f1_source": (f"{ev['purpose']} on {ev['holdout_rows']} holdout rows" if ev
                                   else ("training" if tags.get("weighted_f1") else None)),
            # the plain baseline mlops train fitted beside it (same rows, its training holdout)
            "baseline_weighted_f1": _float(tags.get("baseline_weighted_f1")),
            "training_weighted_f1": _float(tags.get("weighted_f1")),
            "chosen": tags.get("chosen_candidate") or None,
            "decision": d["decision"] if d else (tags.get("decision") or None),
            "reason": d["justification"] if d else (tags.get("reason") or None),
            "decided_by": d["decided_by"] if d else (tags.get("decided_by") or None),
            "decided_at": d["created_at"] if d else (tags.get("decided_at") or None),
            "rolled_back": tags.get("rolled_back") == "true",
            "created_at": datetime.fromtimestamp(created / 1000, tz=timezone.utc) if created else None,
            "is_champion": registry.CHAMPION in v["aliases"],
            "mlflow_run_id": v["mlflow_run_id"],
        })
    return out


def decision_history(conn, settings: Settings, limit: int = 50) -> list[dict]:
    """The latest model_decisions rows of this model, newest first."""
    return store.list_decisions(conn, settings.model_name, limit=limit)
