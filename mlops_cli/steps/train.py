"""Train a new model on everything loaded so far, log it to MLflow and register a challenger.

Gate: a succeeded load that no train run has consumed yet (else skipped; --force trains anyway).
The training set is balanced (a cap per class, plus class weights); the holdout keeps the
catalogue's natural class mix, which is what production sees and what weighted F1 measures.
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import time
import warnings
from pathlib import Path

from .. import __version__, dataset, registry, store
from ..config import Settings
from ..features import DEFAULT_PARAMS, build_pipeline, compact_vocabularies
from ..reference import build_reference, served_from_features  # drift monitoring's reference
from ..runs import StepResult, StepRun, Trigger, run_step
from .evaluate import score

log = logging.getLogger(__name__)

STEP = "train"


def code_version() -> str:
    """Package version, plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=2, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def fit_and_featurize(model, fit_rows, holdout):
    """Fit the pipeline on fit_rows; returns it with the holdout's features (one computation,
    for the score and the drift reference).

    The holdout's features are computed in a thread while the classifier fits: SGD runs in
    native code without the GIL and the text features mostly in Python, so the two overlap on
    two cores instead of following each other.
    """
    from concurrent.futures import ThreadPoolExecutor

    X, y = fit_rows[["designation", "description"]], fit_rows["prdtypecode"].to_numpy()
    features, classifier = model[:-1], model.steps[-1][1]  # the slice shares the fitted steps
    with warnings.catch_warnings():
        # SGD stops at max_iter by design (a time budget); its ConvergenceWarning is noise here.
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*Maximum number of iteration.*")
        fitted = features.fit_transform(X, y)
        compact_vocabularies(model)
        # Parallel feature extraction pays off for a fit, not for a single request: serve serially.
        model.set_params(features__n_jobs=None)
        with ThreadPoolExecutor(1, thread_name_prefix="holdout-features") as pool:
            pending = pool.submit(features.transform, holdout[["designation", "description"]])
            classifier.fit(fitted, y)
            holdout_features = pending.result()
    return model, holdout_features


def train(conn, settings: Settings, trigger: Trigger, *, force: bool = False,
          params: dict | None = None) -> StepResult:
    overrides = dict(params or {})

    def body(step: StepRun) -> None:
        upstream = store.latest_unconsumed(conn, "load", STEP)
        if upstream is None and not force:
            last = store.latest_run(conn, STEP, "succeeded")
            since = f" (the last training, run #{last['id']}, used load run #{last['upstream_run_id']})" \
                if last and last["upstream_run_id"] else ""
            step.skip(f"no new load since the last training{since}; nothing to train on (use --force)")
            return
        step.consume(upstream["id"] if upstream else None)
        hp = {**DEFAULT_PARAMS, **overrides}
        if hp["max_per_class"] is None:
            hp["max_per_class"] = settings.max_per_class

        log.info("reading the catalogue")
        products = store.read_products(conn, ("productid", "designation", "description", "prdtypecode",
                                              "batch_id"))
        train_rows, holdout = dataset.split(products, settings.holdout_fraction)
        dataset.check_trainable(train_rows, holdout)
        fit_rows = dataset.balanced(train_rows, hp["max_per_class"], seed=int(hp["random_state"]))
        log.info("training on %d rows (%d before balancing), holdout %d rows",
                 len(fit_rows), len(train_rows), len(holdout))

        t0 = time.perf_counter()
        model = build_pipeline(hp)
        model, holdout_features = fit_and_featurize(model, fit_rows, holdout)
        train_seconds = time.perf_counter() - t0
        log.info("trained in %.1fs (holdout features included); scoring the holdout", train_seconds)
        codes, confidence = served_from_features(model.steps[-1][1], holdout_features)
        s = score(model, holdout, y_pred=codes)
        s["confidence"] = confidence  # reused by the drift reference

        metrics = {
            "weighted_f1": s["weighted_f1"], "macro_f1": s["macro_f1"], "accuracy": s["accuracy"],
            "train_rows": len(fit_rows), "train_rows_before_balancing": len(train_rows),
            "test_rows": len(holdout), "train_seconds": train_seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **{f"f1_class_{c}": f for c, f in s["per_class_f1"].items()},
        }
        batch_ids = sorted(int(b) for b in products["batch_id"].unique())
        data_hash = dataset.dataset_hash(train_rows)
        tags = {
            "auto_trained": "true", "trigger": trigger.triggered_by, "actor": trigger.actor or "",
            "pipeline": trigger.pipeline, "pipeline_run_id": str(step.run_id),
            "load_run_id": str(upstream["id"]) if upstream else "", "batch_ids": ",".join(map(str, batch_ids)),
            "dataset_hash": data_hash, "holdout_hash": dataset.dataset_hash(holdout),
            "code_version": code_version(), "run_name": f"train-{step.run_id}",
        }
        distribution = {"train_natural": dataset.label_distribution(train_rows),
                        "train_balanced": dataset.label_distribution(fit_rows),
                        "holdout": dataset.label_distribution(holdout)}
        import numpy as np

        cm = s["confusion"].astype(float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        fig = registry.figure_confusion(cm, s["labels"])
        log.info("logging to MLflow and registering a version of %s", settings.model_name)
        t1 = time.perf_counter()
        try:
            run_id, version = registry.log_training(
                settings, model=model, params={**hp, "holdout_fraction": settings.holdout_fraction},
                metrics=metrics, tags=tags,
                texts={"classification_report.txt": s["report"],
                       "label_distribution.json": json.dumps(distribution, indent=2)},
                figures={"confusion_matrix.png": fig},
                input_example=holdout[["designation", "description"]].head(3).reset_index(drop=True),
            )
        finally:
            registry.close_figure(fig)
        log.info("version %s registered in %.1fs", version, time.perf_counter() - t1)
        try:
            registry.set_alias(settings, registry.CHALLENGER, version)
            registry.set_version_tags(settings, version, {"stage": "None", "decision": "pending",
                                                          "pipeline_run_id": step.run_id,
                                                          "weighted_f1": f"{s['weighted_f1']:.4f}"})
            store.insert_evaluation(
                conn, pipeline_run_id=step.run_id, model_name=settings.model_name, model_version=version,
                mlflow_run_id=run_id, purpose="training", holdout_rows=len(holdout),
                holdout_hash=tags["holdout_hash"], weighted_f1=s["weighted_f1"], macro_f1=s["macro_f1"],
                accuracy=s["accuracy"], metrics={"per_class_f1": s["per_class_f1"]},
            )

            t1 = time.perf_counter()
            store.insert_model_reference(conn, model_name=settings.model_name, model_version=version,
                                         mlflow_run_id=run_id,
                                         summary=build_reference(model, train_rows, holdout, evaluation=s))
            log.info("drift reference built in %.1fs", time.perf_counter() - t1)
        except BaseException:
            # The step's transaction will roll back: leave no registered version behind either.
            registry.delete_version(settings, version)
            raise
        step.outputs.update({
            "mlflow_run_id": run_id, "model_version": version, "model_name": settings.model_name,
            "weighted_f1": s["weighted_f1"], "macro_f1": s["macro_f1"], "accuracy": s["accuracy"],
            "train_rows": len(fit_rows), "test_rows": len(holdout), "train_seconds": round(train_seconds, 2),
            "batch_ids": batch_ids, "dataset_hash": data_hash,
        })
        step.message = (f"version {version} (MLflow run {run_id}): weighted F1 {s['weighted_f1']:.4f} "
                        f"on {len(holdout)} holdout rows, trained on {len(fit_rows)} rows in {train_seconds:.1f}s")

    return run_step(conn, trigger, STEP, body, params={"force": force, "overrides": overrides})
