"""The training-time reference of a model version, for drift monitoring.

`build_reference(model, catalogue_train, holdout)` summarises, once, what the model was trained
on and how it behaved on its holdout. `mlops train` stores it in `model_references`
(store.insert_model_reference); the daily drift check (steps/drift.py) compares each window of
`inference_log` with it and never re-reads the catalogue.

What is in the summary (all JSON-serialisable; bin edges via stats.edges_to_json):

- numeric features, binned on fixed edges computed here (stats.fixed_bins, 10 quantile bins):
    title_length        len(designation), characters      (inference_log.designation_len)
    description_length  len(description); empty descriptions get a bin of their own (edge 0.5)
    n_tokens            textstats.row_features n_tokens   (inference_log.n_tokens)
- rates: empty-description rate (training rows); OOV rate = sum(n_oov) / sum(n_tokens) against
  the model's own vocabulary, measured on the *holdout* (training rows are in-vocabulary by
  construction, which would make any serving traffic look like drift)
- categorical mixes: script (textstats.SCRIPTS) and language (textstats.LANGS)
- tokens: the ~200 most frequent title tokens (textstats.tokens on designation) and their counts,
  plus an "other" count for every other token
- predictions on the holdout, made as serving makes them (served_predictions: the code is the
  model's `predict`, the confidence `predict_proba` of that code -- not the argmax of the
  probabilities, which differs on ties of the clipped modified-Huber probabilities of older
  models; models `mlops train` makes now are calibrated, calibration.TemperatureScaled, so this
  confidence is the calibrated one serving returns): predicted-class counts over the 27 codes
  and confidence bins
- performance: weighted F1 of those served-style predictions (the baseline of performance
  drift), the evaluation's weighted/macro F1 and per-class F1 when given
- estimate: the label-free performance estimate on the whole holdout, from its probabilities
  truncated to what serving logs (top 3), with its band and per-class estimates, beside the
  realized weighted F1 of the same predictions (performance_estimate.reference_estimate): the
  baseline of the estimated_performance alert

Training rows are taken in their NATURAL class mix (the catalogue's, which is what production
sees), not the rebalanced fit set. Text features (tokens, script, language) are computed on a
seeded sample of at most TEXT_SAMPLE (10k) training rows, the OOV rate and the confidence bins
on at most HOLDOUT_SAMPLE (5k) holdout rows: quantiles and mixes from 10k rows are as good as
from all of them, and the whole summary costs a few seconds on the full 85k-row catalogue. The
predicted-class mix and the F1 baseline use the whole holdout (with `evaluation`, its
predictions are reused rather than recomputed).
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from . import stats, textstats
from .categories import PRDTYPECODES
from .performance_estimate import reference_estimate

SCHEMA_VERSION = 1
N_BINS = 10
TOP_TOKENS = 200
TEXT_SAMPLE = 10_000     # training rows whose text features (tokens, script, lang) are computed
HOLDOUT_SAMPLE = 5_000   # holdout rows for the OOV rate and the confidence bins
OTHER = "__other__"

NUMERIC_FEATURES = {  # reference feature -> inference_log column
    "title_length": "designation_len",
    "description_length": "description_len",
    "n_tokens": "n_tokens",
}


def _positions(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Row positions of a seeded sample of at most k of n rows (all of them when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _edges_with_mass_points(values: np.ndarray, n_bins: int = N_BINS, *, low: float | None = None,
                            high: float | None = None) -> np.ndarray:
    """Quantile edges of the values between two mass points, plus edges isolating the mass points.

    `low`: values < low (lengths of 0 with low=0.5) get the first bin to themselves; `high`:
    values >= high (confidences of 1.0 with high=1 - 1e-6) get the last bin. Without this, a
    feature with 35% zeros or 70% saturated confidences collapses into two or three quantile
    bins. Both edges sit off the mass point itself (like stats.fixed_bins' quantile edges), so
    that a value computed by another code path (serving's fast path, float32) and off by a
    rounding error still lands in the same bin.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    inner_src = v
    if low is not None:
        inner_src = inner_src[inner_src >= low]
    if high is not None:
        inner_src = inner_src[inner_src < high]
    inner = list(stats.fixed_bins(inner_src, n_bins)[1:-1]) if inner_src.size else []
    if low is not None and (v < low).any():
        inner.append(float(low))
    if high is not None and (v >= high).any():
        inner.append(float(high))
    inner = np.unique(np.asarray(inner, dtype=float))
    return np.concatenate(([-np.inf], inner, [np.inf]))


def _numeric(values, edges: np.ndarray) -> dict:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95]) if v.size else [math.nan] * 5
    return {
        "edges": stats.edges_to_json(edges),
        "counts": [int(c) for c in stats.histogram(v, edges)],
        "n": int(v.size),
        "mean": float(v.mean()) if v.size else None,
        "quantiles": {k: float(x) for k, x in zip(("p05", "p25", "p50", "p75", "p95"), q)},
    }


def _categorical(values, categories) -> dict:
    counts = stats.category_counts(list(values), list(categories))
    return {"categories": list(categories), "counts": [int(c) for c in counts], "n": int(counts.sum())}


def title_token_counts(titles) -> Counter:
    """Token occurrences in product titles (the drift check counts recent titles the same way)."""
    c: Counter = Counter()
    for t in titles:
        c.update(textstats.tokens(t or ""))
    return c


def text_features(df: pd.DataFrame, vocabulary: set[str] | None) -> pd.DataFrame:
    """textstats.row_features for each row: n_tokens, n_oov, script, lang."""
    rows = [textstats.row_features(d, s, vocabulary)
            for d, s in zip(df["designation"].tolist(), df["description"].fillna("").tolist())]
    return pd.DataFrame(rows, columns=["n_tokens", "n_oov", "script", "lang"], index=df.index)


def served_predictions(model, X) -> tuple[np.ndarray, np.ndarray]:
    """(codes, confidence) as the API computes them (serving.generic_predict): the code is the
    classifier's `predict` (argmax of the decision function), the confidence the probability of
    that code. Features are computed once."""
    clf, Xt = model, X
    if hasattr(model, "steps") and len(model.steps) > 1:
        clf, Xt = model.steps[-1][1], model[:-1].transform(X)
    return served_from_features(clf, Xt)


def served_probabilities(model, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, probabilities, classes): the served codes (the classifier's `predict`) and every
    class's calibrated probability, features computed once."""
    clf, Xt = model, X
    if hasattr(model, "steps") and len(model.steps) > 1:
        clf, Xt = model.steps[-1][1], model[:-1].transform(X)
    return np.asarray(clf.predict(Xt)), np.asarray(clf.predict_proba(Xt)), np.asarray(clf.classes_)


def served_from_features(clf, Xt) -> tuple[np.ndarray, np.ndarray]:
    """served_predictions from the classifier and features already computed."""
    codes = np.asarray(clf.predict(Xt))
    proba = np.asarray(clf.predict_proba(Xt))
    index = {c: i for i, c in enumerate(np.asarray(clf.classes_).tolist())}
    col = np.fromiter((index[c] for c in codes.tolist()), dtype=np.int64, count=len(codes))
    return codes, proba[np.arange(len(codes)), col]


def build_reference(model, catalogue_train: pd.DataFrame, holdout: pd.DataFrame, *,
                    evaluation: dict | None = None, seed: int = 0) -> dict:
    """The reference summary of `model` (see the module docstring). JSON-serialisable.

    catalogue_train: the catalogue rows the model was trained on, in their natural class mix
    (columns designation, description; prdtypecode optional). holdout: the labelled holdout
    (designation, description, prdtypecode). evaluation: optional evaluate.score() output whose
    weighted/macro/per-class F1 are recorded as the evaluation's; its `y_pred` and, when present,
    `confidence` (one per holdout row) and `proba` with its `classes` (every class's probability,
    for the estimate) are reused instead of predicting again.
    """
    if len(catalogue_train) == 0 or len(holdout) == 0:
        raise ValueError("build_reference needs training rows and holdout rows")
    train = catalogue_train
    desc = train["description"].fillna("").astype(str)
    title_len = np.fromiter((len(t) for t in train["designation"].astype(str)), dtype=float, count=len(train))
    desc_len = np.fromiter((len(d) for d in desc), dtype=float, count=len(train))

    vocabulary = textstats.model_vocabulary(model)
    sample = train.iloc[_positions(len(train), TEXT_SAMPLE, seed)]
    feats = text_features(sample, vocabulary)
    ntok = feats["n_tokens"].to_numpy(dtype=float)

    numeric = {
        "title_length": _numeric(title_len, stats.fixed_bins(title_len, N_BINS)),
        "description_length": _numeric(desc_len, _edges_with_mass_points(desc_len, low=0.5)),
        "n_tokens": _numeric(ntok, _edges_with_mass_points(ntok, low=0.5)),
    }

    # OOV on the holdout: the training rows' tokens are the vocabulary.
    hpos = _positions(len(holdout), HOLDOUT_SAMPLE, seed)
    hsample = holdout.iloc[hpos]
    hfeats = text_features(hsample, vocabulary)
    oov = None
    if vocabulary is not None:
        n_tok = int(hfeats["n_tokens"].sum())
        n_oov = int(hfeats["n_oov"].sum())
        oov = {"rate": (n_oov / n_tok) if n_tok else 0.0, "n_oov": n_oov, "n_tokens": n_tok,
               "n_rows": int(len(hsample)), "vocabulary_size": len(vocabulary), "measured_on": "holdout"}

    tok = title_token_counts(sample["designation"].tolist())
    top = [t for t, _ in sorted(tok.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TOKENS]]
    top_counts = [int(tok[t]) for t in top]
    other = int(sum(tok.values()) - sum(top_counts))

    # What serving would have answered on the holdout: codes (the model's predict, reused from the
    # evaluation when given) on all of it, confidences on a sample.
    given = None if evaluation is None else evaluation.get("y_pred")
    given_conf = None if evaluation is None else evaluation.get("confidence")
    if given is not None and len(given) == len(holdout):
        pred = np.asarray(given).astype(np.int64)
        if given_conf is not None and len(given_conf) == len(holdout):
            conf = np.asarray(given_conf)[hpos]
        else:
            _, conf = served_predictions(model, hsample[["designation", "description"]])
    else:
        pred, conf_all = served_predictions(model, holdout[["designation", "description"]])
        pred = np.asarray(pred).astype(np.int64)
        conf = np.asarray(conf_all)[hpos]
    conf = np.asarray(conf, dtype=float)
    conf_edges = _edges_with_mass_points(conf, high=1.0 - 1e-6)
    y_true = holdout["prdtypecode"].to_numpy().astype(np.int64)

    from sklearn.metrics import f1_score

    labels = np.unique(np.concatenate([y_true, pred]))
    per_class = f1_score(y_true, pred, labels=labels, average=None, zero_division=0)
    performance = {
        "served_weighted_f1": float(f1_score(y_true, pred, average="weighted", zero_division=0)),
        "served_per_class_f1": {str(c): float(f) for c, f in zip(labels, per_class)},
        "served_accuracy": float((y_true == pred).mean()),
        "n": int(len(holdout)),
    }
    if evaluation:
        performance.update({
            "weighted_f1": float(evaluation["weighted_f1"]),
            "macro_f1": float(evaluation.get("macro_f1", math.nan)),
            "per_class_f1": {str(k): float(v) for k, v in (evaluation.get("per_class_f1") or {}).items()},
        })
    else:
        performance.update({"weighted_f1": performance["served_weighted_f1"],
                            "macro_f1": float(f1_score(y_true, pred, average="macro", zero_division=0)),
                            "per_class_f1": performance["served_per_class_f1"]})
    # the baseline of performance drift: predictions made the way serving makes them
    performance["baseline_weighted_f1"] = performance["served_weighted_f1"]

    # the label-free estimate on the holdout (the evaluation's probabilities when given)
    proba = None if evaluation is None else evaluation.get("proba")
    classes = None if evaluation is None else evaluation.get("classes")
    if proba is None or classes is None or len(proba) != len(holdout):
        _, proba, classes = served_probabilities(model, holdout[["designation", "description"]])
    estimate = reference_estimate(proba, classes, pred, y_true)

    summary = {
        "schema": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_train": int(len(train)),
        "n_holdout": int(len(holdout)),
        "n_text_sample": int(len(sample)),
        "numeric": numeric,
        "columns": dict(NUMERIC_FEATURES),
        "rates": {
            "empty_description": {"rate": float((desc_len == 0).mean()), "n": int(len(train))},
            "oov": oov,
        },
        "categorical": {
            "script": _categorical(feats["script"], textstats.SCRIPTS),
            "lang": _categorical(feats["lang"], textstats.LANGS),
        },
        "tokens": {"source": "designation", "categories": top, "counts": top_counts + [other],
                   "other_label": OTHER, "n_titles": int(len(sample)), "n_tokens": int(sum(tok.values()))},
        "predictions": {
            "n": int(len(holdout)),
            "n_confidence": int(len(conf)),
            "classes": _categorical(pred.tolist(), list(PRDTYPECODES)),
            "confidence": _numeric(conf, conf_edges),
        },
        "training_classes": _categorical(train["prdtypecode"].astype(int).tolist(), list(PRDTYPECODES))
        if "prdtypecode" in train.columns else None,
        "performance": performance,
        "estimate": estimate,
    }
    return summary
