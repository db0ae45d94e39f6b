"""Score registered model versions on the *current* holdout, so that a challenger and the champion
are always compared on the same rows. `mlops evaluate` takes the newest challenger not yet
evaluated (gate: a succeeded train run no evaluate has consumed), or a given version / run id.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import dataset, registry, store
from ..config import Settings
from ..errors import Conflict, Invalid, NotFound
from ..runs import StepResult, StepRun, Trigger, run_step
from ..vocab import Step

log = logging.getLogger(__name__)

STEP = Step.EVALUATE.value


def score(model, holdout: pd.DataFrame, y_pred=None) -> dict:
    """weighted/macro F1, accuracy, per-class F1, the text report and the confusion matrix.
    `y_pred`: the model's predictions for the holdout when the caller has them already."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    y_true = holdout["prdtypecode"].to_numpy()
    if y_pred is None:
        y_pred = model.predict(holdout[["designation", "description"]])
    labels = np.unique(np.concatenate([y_true, y_pred]))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class_f1": {str(c): float(f) for c, f in zip(labels, per_class)},
        "report": classification_report(y_true, y_pred, zero_division=0, digits=4),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels),
        "labels": [str(c) for c in labels],
        "y_pred": y_pred,
    }


def current_holdout(conn, settings: Settings) -> tuple[pd.DataFrame, str]:
    products = store.read_products(conn, ("productid", "designation", "description", "prdtypecode"))
    _, holdout = dataset.split(products, settings.holdout_fraction)
    if len(holdout) == 0:
        raise Conflict("The holdout is empty: load products before evaluating.")
    return holdout, dataset.dataset_hash(holdout)


def evaluate_version(conn, settings: Settings, version: str, *, purpose: str, pipeline_run_id: int | None,
                     holdout: tuple[pd.DataFrame, str] | None = None) -> dict:
    """Score `version` on the current holdout; record it in model_evaluations and on its MLflow run."""
    info = registry.get_version(settings, version)
    rows, holdout_hash = holdout or current_holdout(conn, settings)
    model = registry.load_model(settings, version=version)
    s = score(model, rows)
    metrics = {"weighted_f1": s["weighted_f1"], "macro_f1": s["macro_f1"], "accuracy": s["accuracy"]}
    store.insert_evaluation(
        conn, pipeline_run_id=pipeline_run_id, model_name=settings.model_name, model_version=str(version),
        mlflow_run_id=info["mlflow_run_id"], purpose=purpose, holdout_rows=len(rows), holdout_hash=holdout_hash,
        metrics={"per_class_f1": s["per_class_f1"]}, **metrics,
    )
    if info["mlflow_run_id"]:
        registry.log_metrics(settings, info["mlflow_run_id"],
                             {f"holdout_{k}": v for k, v in metrics.items()} | {"holdout_rows": len(rows)},
                             step=len(rows))
    return {"model_version": str(version), "mlflow_run_id": info["mlflow_run_id"], "holdout_rows": len(rows),
            "holdout_hash": holdout_hash, **metrics}


def version_for_run(settings: Settings, mlflow_run_id: str) -> str:
    for v in registry.list_versions(settings):
        if v["mlflow_run_id"] == mlflow_run_id:
            return v["version"]
    raise NotFound(f"No registered version of {settings.model_name} comes from MLflow run {mlflow_run_id}")


def evaluate(conn, settings: Settings, trigger: Trigger, *, mlflow_run_id: str | None = None,
             version: str | None = None) -> StepResult:
    """Evaluate a version (default: the newest challenger not yet evaluated), or the version given
    by its number or by the MLflow run that trained it."""
    if mlflow_run_id and version:
        raise Invalid("Give --mlflow-run-id or --version, not both")

    def body(step: StepRun) -> None:
        target = str(version) if version else (version_for_run(settings, mlflow_run_id) if mlflow_run_id else None)
        if target is None:
            upstream = store.latest_unconsumed(conn, "train", STEP)
            if upstream is None or not upstream["outputs"].get("model_version"):
                step.skip("no new challenger to evaluate: every trained version has been evaluated")
                return
            step.consume(upstream["id"])
            target = str(upstream["outputs"]["model_version"])
        result = evaluate_version(conn, settings, target, purpose="evaluation", pipeline_run_id=step.pipeline_run_id)
        champion = registry.version_by_alias(settings, registry.CHAMPION)
        # a re-check of production, not a challenger for promote to decide on
        result["of_champion"] = champion is not None and champion["version"] == target
        step.outputs.update(result)
        step.message = (f"version {target}: weighted F1 {result['weighted_f1']:.4f} on "
                        f"{result['holdout_rows']} holdout rows")

    return run_step(conn, trigger, STEP, body, params={"mlflow_run_id": mlflow_run_id, "version": version})
