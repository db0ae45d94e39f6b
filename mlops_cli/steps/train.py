"""Train a new model on everything loaded so far, log it to MLflow and register a challenger.

Gates (outputs.gate says which opened): 'load', a succeeded load that no train run has consumed
yet; 'feedback', at least FEEDBACK_RETRAIN_MIN products got a label no training used yet ('drift'
when the daily pipeline's auto retrain asked, see steps/auto_retrain.py); 'forced', --force or the
retrain pipeline with neither. Else skipped. Before reading the catalogue, the labels become
training rows in the step's transaction (store.apply_feedback_labels): the latest human label of
a product wins (overrides audited in label_overrides), a product seen only in traffic is added
with its logged text (source 'feedback'); the holdout hash applies to those rows too. A feedback
row whose logged title has no letter or digit once cleaned (markup only: the rule `mlops load`
rejects catalogue rows by, features.has_letter_or_digit) is not kept in the catalogue table
(so neither evaluate nor drift reads it either), counted. The class cap
(MAX_PER_CLASS) keeps every human label (dataset.kept_labels).
The model is chosen by a bounded search (k-fold cross-validation on small data, successive halving
on a validation part of the training rows on large data), calibrated on out-of-sample decision
values, refitted on all training rows, and scored on the holdout beside the plain baseline
(TF-IDF + LinearSVC on the same rows): see selection.py. The training set is balanced (a cap per
class, plus class weights where the search keeps them); the holdout keeps the catalogue's
natural class mix, which is what production sees and what weighted F1 measures.
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import time
from pathlib import Path

from .. import __version__, dataset, figures, orphan_versions, registry, runs, selection, store
from ..calibration import calibration_metrics
from ..categories import PRDTYPECODES
from ..config import Settings
from ..features import DEFAULT_PARAMS, has_letter_or_digit
from ..reference import build_reference, served_from_features  # drift monitoring's reference
from ..runs import StepResult, StepRun, Trigger, run_step
from ..vocab import Step
from .evaluate import score
from .promote import lock_champion, promotion_metric

log = logging.getLogger(__name__)

STEP = Step.TRAIN.value


def code_version() -> str:
    """Package version, plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=2, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def _candidate_runs(built: selection.Built, metric: str) -> list[dict]:
    """One nested MLflow run per candidate: its settings, validation score and seconds."""
    children = []
    for c in built.result.candidates:
        row = c.row()
        metrics = {"seconds": row["seconds"]}
        if row["validation_score"] is not None:
            metrics.update({f"validation_{metric}": row["validation_score"],
                            "validation_weighted_f1": row["validation_weighted_f1"], "rows": row["rows"]})
        children.append({"name": c.name, "params": {**c.shown, "searched_rows": row["rows"]}, "metrics": metrics,
                         "tags": {"status": c.status, "chosen": str(c is built.chosen).lower()}})
    return children


def open_gate(conn, settings: Settings, *, force: bool = False, on_drift: bool = False) -> tuple[str | None, dict]:
    """(the gate that opens, or None; the pending load and label counts). Read under the step's
    lock: two trainings never count the same labels (the labels used are marked in the training's
    transaction, see store.apply_feedback_labels)."""
    upstream = store.latest_unconsumed(conn, "load", STEP)
    labels = store.feedback_label_counts(conn, PRDTYPECODES)
    info = {"upstream": upstream, "new_labels": int(labels["new_labels"] or 0),
            "threshold": settings.feedback_retrain_min,
            # a load whose every row was rejected (a broken file) is no new data to train on
            "rows_loaded": store.rows_loaded_since_training(conn, upstream["id"]) if upstream else 0}
    if upstream is not None and info["rows_loaded"] > 0:
        return "load", info
    if info["new_labels"] >= settings.feedback_retrain_min:
        return ("drift" if on_drift else "feedback"), info
    return ("forced" if force else None), info


def train(conn, settings: Settings, trigger: Trigger, *, force: bool = False,
          params: dict | None = None, drift_decision_run_id: int | None = None) -> StepResult:
    overrides = dict(params or {})

    def body(step: StepRun) -> None:
        # a version an earlier train step registered and then died before recording it
        swept = orphan_versions.sweep(conn, settings, holding_train_lock=True)
        if swept.get("removed") or swept.get("runs_ended") or not swept["checked"]:
            step.outputs["orphan_versions"] = swept
        gate, pending = open_gate(conn, settings, force=force, on_drift=drift_decision_run_id is not None)
        upstream = pending["upstream"]
        step.outputs.update({"new_labels": pending["new_labels"], "feedback_retrain_min": pending["threshold"]})
        if gate is None:
            last = store.latest_run(conn, STEP, "succeeded")
            since = f" (the last training, run #{last['id']}, used load run #{last['upstream_run_id']})" \
                if last and last["upstream_run_id"] else ""
            loads = "no new load" if upstream is None else \
                f"no row loaded (load run #{upstream['id']}: every row rejected, see `mlops runs --step load`)"
            step.skip(f"{loads} since the last training{since} and {pending['new_labels']} new labels "
                      f"(FEEDBACK_RETRAIN_MIN {pending['threshold']}); nothing to train on (use --force)")
            return
        step.outputs["gate"] = gate
        step.consume(upstream["id"] if upstream else None)
        # logged traffic is not validated like a load: a markup-only title teaches nothing
        fed = store.apply_feedback_labels(conn, step.pipeline_run_id, PRDTYPECODES, title_ok=has_letter_or_digit)
        log.info("gate %s; feedback: %d rows added, %d label overrides, %d new labels used", gate,
                 fed["feedback_rows_added"], fed["label_overrides"], fed["labels_used"])
        hp = {**DEFAULT_PARAMS, **overrides}
        if hp["max_per_class"] is None:
            hp["max_per_class"] = settings.max_per_class
        metric = promotion_metric(settings)

        log.info("reading the catalogue")
        products = store.read_products(conn, ("productid", "designation", "description", "prdtypecode",
                                              "batch_id", "source"))
        products[dataset.LABEL_RANK] = products["productid"].map(store.label_recency(conn))
        train_rows, holdout = dataset.split(products, settings.holdout_fraction)
        dataset.check_trainable(train_rows, holdout)
        feedback = {"feedback_rows": int((products["source"] == "feedback").sum()),
                    "feedback_rows_no_text": fed["feedback_rows_no_text"],
                    "feedback_rows_train": int((train_rows["source"] == "feedback").sum()),
                    "feedback_rows_holdout": int((holdout["source"] == "feedback").sum()),
                    "feedback_rows_added": fed["feedback_rows_added"], "label_overrides": fed["label_overrides"],
                    "labels_used": fed["labels_used"], "labelled_products_used": fed["labelled_products_used"],
                    "label_disagreements": fed["label_disagreements"]}

        t0 = time.perf_counter()
        built = selection.build(
            train_rows, holdout, base=hp, pinned=overrides, validation_fraction=settings.validation_fraction,
            holdout_fraction=settings.holdout_fraction, max_candidates=settings.train_search_max_candidates,
            max_seconds=settings.train_search_seconds, metric=metric)
        train_seconds = time.perf_counter() - t0
        model, chosen, fit_rows = built.model, built.chosen, built.fit_rows
        capped = built.parts.labels_capped
        labelled = {"labelled_rows_train": int(dataset.labelled_mask(train_rows).sum()),
                    "labelled_rows_fit": int(dataset.labelled_mask(fit_rows).sum()),
                    "labelled_rows_capped": sum(capped.values()), "labelled_rows_capped_by_class": capped}
        log.info("trained in %.1fs (features, search, final fit and baseline); scoring the holdout", train_seconds)
        clf = model.steps[-1][1]
        codes, confidence = served_from_features(clf, built.holdout_features)
        s = score(model, holdout, y_pred=codes)
        s["confidence"] = confidence  # reused by the drift reference
        s["proba"], s["classes"] = clf.predict_proba(built.holdout_features), clf.classes_  # and its estimate
        calibration = calibration_metrics(s["proba"], holdout["prdtypecode"], clf.classes_)
        if hasattr(clf.classifier, "predict_proba"):  # what the classifier's own probabilities would give
            calibration["ece_uncalibrated"] = calibration_metrics(
                clf.classifier.predict_proba(built.holdout_features), holdout["prdtypecode"], clf.classes_)["ece"]
        baseline = built.baseline
        search_rows = [c.row() for c in built.result.candidates]

        metrics = {
            "weighted_f1": s["weighted_f1"], "macro_f1": s["macro_f1"], "accuracy": s["accuracy"],
            "baseline_weighted_f1": baseline["weighted_f1"], "baseline_macro_f1": baseline["macro_f1"],
            "baseline_accuracy": baseline["accuracy"], "baseline_seconds": baseline["seconds"],
            "ece": calibration["ece"], "brier": calibration["brier"], "temperature": built.temperature,
            "calibration_epsilon": built.epsilon, f"validation_{metric}": chosen.rungs[-1]["score"],
            "validation_weighted_f1": chosen.rungs[-1]["weighted_f1"],
            "search_candidates": len(search_rows), "search_seconds": built.seconds["search"],
            "features_seconds": built.seconds["features"], "final_fit_seconds": built.seconds["final_fit"],
            "train_rows": len(fit_rows), "train_rows_before_balancing": len(train_rows),
            "validation_rows": built.validation_rows, "cv_folds": built.result.folds, "test_rows": len(holdout),
            "train_seconds": train_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **{f"f1_class_{c}": f for c, f in s["per_class_f1"].items()},
        }
        if "ece_uncalibrated" in calibration:
            metrics["ece_uncalibrated"] = calibration["ece_uncalibrated"]
        batch_ids = sorted(int(b) for b in products["batch_id"].dropna().unique())  # feedback rows have none
        data_hash = dataset.dataset_hash(train_rows)  # before the class cap
        fit_hash = dataset.dataset_hash(fit_rows)     # the rows the model was fitted on
        tags = {
            "auto_trained": "true", "trigger": trigger.triggered_by, "actor": trigger.actor or "",
            "pipeline": trigger.pipeline, "pipeline_run_id": str(step.pipeline_run_id),
            "load_run_id": str(upstream["id"]) if upstream else "", "batch_ids": ",".join(map(str, batch_ids)),
            "dataset_hash": data_hash, "fit_hash": fit_hash, "holdout_hash": dataset.dataset_hash(holdout),
            "validation_hash": dataset.dataset_hash(built.parts.validation),
            "code_version": code_version(), "run_name": f"train-{step.pipeline_run_id}",
            "chosen_candidate": chosen.name, "pinned_params": ",".join(sorted(overrides)),
            "gate": gate, "feedback_max_id": str(fed["feedback_max_id"] or ""),
            **{k: str(v) for k, v in feedback.items()},
            **{k: str(v) for k, v in labelled.items() if k != "labelled_rows_capped_by_class"},
        }
        metrics.update({k: feedback[k] for k in ("feedback_rows", "feedback_rows_train", "feedback_rows_holdout",
                                                 "label_overrides")})
        distribution = {"train_natural": dataset.label_distribution(train_rows),
                        "train_balanced": dataset.label_distribution(fit_rows),
                        "validation": dataset.label_distribution(built.parts.validation),
                        "holdout": dataset.label_distribution(holdout)}
        import numpy as np

        cm = s["confusion"].astype(float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        fig = figures.figure_confusion(cm, s["labels"])
        log.info("logging to MLflow and registering a version of %s", settings.model_name)
        t1 = time.perf_counter()
        try:
            mlflow_run_id, version = registry.log_training(
                settings, model=model,
                params={**chosen.params, "holdout_fraction": settings.holdout_fraction,
                        "validation_fraction": settings.validation_fraction, "temperature": built.temperature,
                        "calibration_epsilon": built.epsilon,
                        "search_max_candidates": settings.train_search_max_candidates,
                        "search_seconds_budget": settings.train_search_seconds},
                metrics=metrics, tags=tags,
                texts={"classification_report.txt": s["report"],
                       "label_distribution.json": json.dumps(distribution, indent=2),
                       "search.json": json.dumps(search_rows, indent=2)},
                figures={"confusion_matrix.png": fig},
                input_example=holdout[["designation", "description"]].head(3).reset_index(drop=True),
                children=_candidate_runs(built, metric),
            )
        finally:
            figures.close_figure(fig)
        log.info("version %s registered in %.1fs", version, time.perf_counter() - t1)
        # promote, approve and rollback read the challenger alias and move it under this lock: a
        # challenger set while one of them decides would be deleted or put back by it
        lock_champion(conn)
        replaced = registry.version_by_alias(settings, registry.CHALLENGER)
        try:
            registry.set_alias(settings, registry.CHALLENGER, version)
            registry.set_version_tags(settings, version, {
                "stage": "None", "decision": "pending", "pipeline_run_id": step.pipeline_run_id,
                "chosen_candidate": chosen.name,
                # what promotion compares with the plain baseline: both on the training holdout
                **{k: f"{s[k]:.6f}" for k in ("weighted_f1", "macro_f1", "accuracy")},
                **{f"baseline_{k}": f"{baseline[k]:.6f}" for k in ("weighted_f1", "macro_f1", "accuracy")},
            })
            store.insert_evaluation(
                conn, pipeline_run_id=step.pipeline_run_id, model_name=settings.model_name, model_version=version,
                mlflow_run_id=mlflow_run_id, purpose="training", holdout_rows=len(holdout),
                holdout_hash=tags["holdout_hash"], weighted_f1=s["weighted_f1"], macro_f1=s["macro_f1"],
                accuracy=s["accuracy"],
                metrics={"per_class_f1": s["per_class_f1"], "chosen": chosen.name,
                         "baseline": {k: baseline[k] for k in ("weighted_f1", "macro_f1", "accuracy")},
                         "calibration": {**calibration, "temperature": built.temperature,
                                         "epsilon": built.epsilon}},
            )

            t1 = time.perf_counter()
            store.insert_model_reference(conn, model_name=settings.model_name, model_version=version,
                                         mlflow_run_id=mlflow_run_id,
                                         summary=build_reference(model, train_rows, holdout, evaluation=s))
            log.info("drift reference built in %.1fs", time.perf_counter() - t1)
            if runs.FAULT_HOOK is not None:  # tests only: the step dies once its version is the challenger
                runs.FAULT_HOOK("train.registered")
        except BaseException:
            # The step's transaction will roll back: leave no registered version behind either,
            # and the challenger alias where it was (a kill -9 here: orphan_versions.py).
            registry.delete_version(settings, version)
            if replaced is not None:
                try:
                    registry.set_alias(settings, registry.CHALLENGER, replaced["version"])
                except Exception as exc:  # keep the step's own error
                    log.error("could not give the challenger alias back to version %s: %s",
                              replaced["version"], exc)
            raise
        step.outputs.update({
            "mlflow_run_id": mlflow_run_id, "model_version": version, "model_name": settings.model_name,
            "weighted_f1": s["weighted_f1"], "macro_f1": s["macro_f1"], "accuracy": s["accuracy"],
            "baseline_weighted_f1": baseline["weighted_f1"], "baseline_macro_f1": baseline["macro_f1"],
            "baseline_accuracy": baseline["accuracy"],
            "ece": calibration["ece"], "brier": calibration["brier"], "temperature": built.temperature,
            "calibration_epsilon": built.epsilon, "train_rows": len(fit_rows), "validation_rows": built.validation_rows,
            "cv_folds": built.result.folds, "test_rows": len(holdout),
            "train_seconds": round(train_seconds, 2), "search_seconds": round(built.seconds["search"], 2),
            "baseline_seconds": round(baseline["seconds"], 2),
            "batch_ids": batch_ids, "dataset_hash": data_hash, "fit_hash": fit_hash, **feedback, **labelled,
            "feedback_max_id": fed["feedback_max_id"], "drift_decision_run_id": drift_decision_run_id,
            "chosen_name": chosen.name, "chosen": chosen.params, "search": search_rows,
        })
        versus = s["weighted_f1"] - baseline["weighted_f1"]
        step.message = (f"version {version} (MLflow run {mlflow_run_id}): weighted F1 {s['weighted_f1']:.4f} "
                        f"on {len(holdout)} holdout rows (plain baseline {baseline['weighted_f1']:.4f}, "
                        f"{versus:+.4f}), {chosen.name} chosen of {len(search_rows)} candidates, trained on "
                        f"{len(fit_rows)} rows in {train_seconds:.1f}s; gate {gate}, {feedback['feedback_rows']} "
                        f"rows from feedback, {fed['label_overrides']} label overrides")
        if labelled["labelled_rows_capped"]:
            step.message += (f"; {labelled['labelled_rows_capped']} older human labels left out of the fit: their "
                             f"class's labels alone exceed MAX_PER_CLASS {hp['max_per_class']} (the latest kept; "
                             + ", ".join(f"class {c}: {n}" for c, n in sorted(capped.items())) + ")")
        if feedback["feedback_rows_no_text"]:
            step.message += (f"; {feedback['feedback_rows_no_text']} feedback rows left out: their logged title has "
                             "no letter or digit once cleaned")
        if feedback["label_disagreements"]:
            step.message += (f"; {feedback['label_disagreements']} labelled product(s) whose labellers disagree "
                             "(the latest label taken: `mlops label-disagreements`)")

    run_params = {"force": force, "overrides": overrides}
    if drift_decision_run_id is not None:
        run_params["drift_decision_run_id"] = drift_decision_run_id
    return run_step(conn, trigger, STEP, body, params=run_params)
