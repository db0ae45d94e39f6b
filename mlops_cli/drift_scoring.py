"""Drift scores: pure functions of a model's reference summary (reference.py) and a window's
counts (drift_windows.py); no database, no MLflow. The drift step (steps/drift.py) stores them.

Three scores, all read on the PSI scale of stats.drift_level, where with the default thresholds
(DRIFT_WARNING/ALERT/CRITICAL_THRESHOLD, or their app_settings overrides set from the UI or
`mlops thresholds`) > 0.1 is WARNING, > 0.2 ALERT and > 0.3 CRITICAL:

data drift        the MAXIMUM of these per-feature scores (the feature that moved most decides;
                  every feature score is in details.data.features):
                  - title_length, description_length, n_tokens: bias-corrected PSI over the fixed
                    bins stored in the reference (stats.psi; histograms computed in SQL with
                    width_bucket on those edges)
                  - script, lang: corrected PSI over textstats.SCRIPTS / LANGS
                  - tokens: corrected PSI over the reference's top-200 title tokens + "other",
                    counted on the newest TOKEN_DAY_SAMPLE (3,000, drift_windows.py) titles of
                    each UTC day of the window (~21k titles for 7 days, ~90k for 30 at volume):
                    a per-day sample, so that a closed day's share is counted once into its
                    rollup. The
                    tokens of one title are not independent draws, so the correction (made for
                    independent draws) leaves a small positive bias: ~0.03 on a 250-row window
                    of unchanged traffic, ~0.01 at 1,000 rows, nil beyond.
                  - empty_description: stats.rate_shift (the 2-bin PSI of the empty rate;
                    35% -> 5% empty is ~0.7, 35% -> 25% only ~0.05)
                  - oov_rate: OOV_SCALE x the INCREASE of the out-of-vocabulary token rate
                    (absolute, one-sided): +5 points = 0.1 WARNING, +10 points = 0.2 ALERT,
                    +15 points = 0.3 CRITICAL. (stats.rate_shift of a rate going 2% -> 12% is
                    only ~0.16 and of 2% -> 5% ~0.03, so a 2-bin PSI would hardly ever alert on
                    the feature that hurts a bag-of-words model most.) A lower OOV rate than the
                    reference is not drift that hurts the model and scores 0.
prediction drift  the maximum of the corrected PSI of the predicted-class mix over the 27
                  codes and of the confidence histogram (reference: the model's predictions on
                  its holdout)
performance drift PERF_SCALE x the DROP of weighted F1: max(0, baseline - window F1), where the
                  baseline is the weighted F1 of the model's served-style predictions on its
                  holdout: a 0.05 drop = 0.1 WARNING, 0.10 = 0.2 ALERT, 0.15 = 0.3 CRITICAL.
                  Labels: moderators' feedback on the window's predictions (feedback joined to
                  inference_log). With fewer than DRIFT_MIN_SAMPLES of them, a labelled sample
                  of catalogue rows loaded in the window that the model never trained on (its
                  holdout rows, or rows loaded after it was trained) scored with the model; with
                  fewer still, NULL. details.performance.source says which: feedback, catalogue
                  or none.

p-values (chi-square on the binned counts, a binned KS) are in details as supporting evidence
only: on 10^5 rows they flag trivial shifts, on 250 rows they miss real ones (see stats.py).
"""

from __future__ import annotations

import math

import numpy as np

from . import stats
from .reference import NUMERIC_FEATURES, OTHER

OOV_SCALE = 2.0              # oov score = OOV_SCALE * increase of the OOV rate
PERF_SCALE = 2.0             # performance score = PERF_SCALE * drop of weighted F1

SCALES = {
    "data": "max of per-feature scores: corrected PSI (lengths, n_tokens, script, lang, title tokens), "
            "2-bin PSI of the empty-description rate, and 2 x the increase of the OOV rate",
    "prediction": "max of corrected PSI of the predicted classes and of the confidence bins",
    "performance": "2 x max(0, baseline weighted F1 - window weighted F1)",
    "estimated_performance": "warning threshold x max(0, reference estimate - window estimate) / ESTIMATE_MARGIN "
                             "(label-free weighted F1 estimate; performance_estimate.py)",
}


def _edges(feature: dict) -> np.ndarray:
    return stats.edges_from_json(feature["edges"])


def _bin_labels(edges: np.ndarray) -> list[str]:
    def f(x: float) -> str:
        if math.isinf(x):
            return "-inf" if x < 0 else "inf"
        return f"{x:g}"

    return [f"[{f(lo)}, {f(hi)})" for lo, hi in zip(edges[:-1], edges[1:])]


def _shares(counts) -> list[float]:
    c = np.asarray(counts, dtype=float)
    total = c.sum()
    return [float(x) for x in (c / total if total > 0 else c)]


def _binned_ks(ref, cur) -> dict:
    """KS statistic between binned distributions (a lower bound of the exact one) and its
    asymptotic p-value. Supporting evidence only."""
    r = np.asarray(ref, dtype=float)
    c = np.asarray(cur, dtype=float)
    n, m = r.sum(), c.sum()
    if n <= 0 or m <= 0:
        return {"statistic": None, "pvalue": None}
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    from scipy.special import kolmogorov

    en = math.sqrt(n * m / (n + m))
    return {"statistic": d, "pvalue": float(min(1.0, kolmogorov(en * d))) if d > 0 else 1.0}


def psi_feature(ref_counts, cur_counts, labels: list, *, top: int = 5, numeric: bool = False) -> dict:
    """Corrected PSI of one feature, with what the UI and the alert need around it: the PSI
    terms, the chi-square p-value (and a binned KS for numeric features), the labels, reference
    and current shares, and the top contributing bins / categories."""
    r_in = np.asarray(ref_counts, dtype=float)
    c_in = np.asarray(cur_counts, dtype=float)
    res = stats.psi(r_in, c_in)
    chi = stats.chi_square(r_in, c_in)
    out = {
        "score": float(res.value),
        "kind": "psi",
        "psi": {k: v for k, v in res.as_dict().items() if k != "contributions"},
        "chi2_pvalue": float(chi.pvalue),
        "labels": [str(x) for x in labels],
        "reference": _shares(r_in),
        "current": _shares(c_in),
        "top": [[str(lbl), round(v, 6)] for lbl, v in stats.top_contributors(res, list(labels), top)],
        "n_ref": float(r_in.sum()),
        "n_cur": float(c_in.sum()),
    }
    if numeric:
        out["ks_binned"] = _binned_ks(r_in, c_in)
    return out


def _rate_shares(ref_rate: float, cur_rate: float, yes: str, no: str) -> dict:
    return {"labels": [yes, no], "reference": [float(ref_rate), 1.0 - float(ref_rate)],
            "current": [float(cur_rate), 1.0 - float(cur_rate)]}


def score_window(summary: dict, agg: dict, min_samples: int = 1) -> dict:
    """Data and prediction drift of one window (agg = window_aggregates()) against `summary`.
    The prediction features count the checked version's rows only: fewer than `min_samples` of
    them (a version promoted late in the window) are shown, not scored."""
    features: dict[str, dict] = {}
    for name in NUMERIC_FEATURES:
        ref = summary["numeric"][name]
        cur = agg["numeric"].get(name)
        if cur is None or sum(cur) == 0:
            continue
        features[name] = psi_feature(ref["counts"], cur, _bin_labels(_edges(ref)), numeric=True)
    for name in ("script", "lang"):
        ref = summary["categorical"][name]
        cur = agg["categorical"].get(name)
        if cur is None or sum(cur) == 0:
            continue
        features[name] = psi_feature(ref["counts"], cur, ref["categories"])
    tok_ref = summary.get("tokens")
    if tok_ref and agg.get("tokens") is not None and agg["n_titles"] > 0:
        cats = tok_ref["categories"]
        cur = [int(c) for c in agg["tokens"]]  # counts of cats, then of every other token
        if sum(cur) > 0:
            f = psi_feature(tok_ref["counts"], cur, cats + [OTHER], top=10)
            f["n_titles"] = agg["n_titles"]
            features["tokens"] = f
    n = agg["n"]
    empty_ref = summary["rates"]["empty_description"]
    cur_rate = agg["n_empty"] / n
    features["empty_description"] = {
        "score": float(stats.rate_shift(empty_ref["rate"], empty_ref["n"], cur_rate, n)),
        "kind": "rate_psi", "reference_rate": float(empty_ref["rate"]), "current_rate": float(cur_rate),
        "n_ref": empty_ref["n"], "n_cur": n, **_rate_shares(empty_ref["rate"], cur_rate, "empty", "non-empty"),
    }
    oov_ref = summary["rates"].get("oov")
    if oov_ref and agg["oov_tokens"] > 0:
        cur_rate = agg["oov_sum"] / agg["oov_tokens"]
        features["oov_rate"] = {
            "score": float(OOV_SCALE * max(0.0, cur_rate - oov_ref["rate"])),
            "kind": "rate_increase", "scale": OOV_SCALE,
            "reference_rate": float(oov_ref["rate"]), "current_rate": float(cur_rate),
            "rate_psi": float(stats.rate_shift(oov_ref["rate"], oov_ref["n_tokens"], cur_rate, agg["oov_tokens"]))
            if oov_ref.get("n_tokens") else None,
            "n_ref": oov_ref["n_tokens"], "n_cur": agg["oov_tokens"], "rows": agg["oov_rows"],
            **_rate_shares(oov_ref["rate"], cur_rate, "out of vocabulary", "in vocabulary"),
        }
    data_score = max((f["score"] for f in features.values()), default=None)

    pred_ref = summary["predictions"]
    pfeatures: dict[str, dict] = {}
    if sum(agg["classes"]) > 0:
        pfeatures["predicted_class"] = psi_feature(pred_ref["classes"]["counts"], agg["classes"],
                                                   pred_ref["classes"]["categories"], top=5)
    conf_ref = pred_ref["confidence"]
    if sum(agg["confidence"]) > 0:
        pfeatures["confidence"] = psi_feature(conf_ref["counts"], agg["confidence"],
                                              _bin_labels(_edges(conf_ref)), numeric=True)
    pred_score = max((f["score"] for f in pfeatures.values()), default=None)
    prediction = {"score": pred_score, "combination": "max", "features": pfeatures}
    n_version = int(sum(agg["classes"]))
    if n_version < min_samples:
        prediction.update(score=None, n=n_version,
                          reason=f"{n_version} predictions of the checked version in the window, fewer than "
                                 f"DRIFT_MIN_SAMPLES={min_samples}: not scored")
    scored = {**features, **(pfeatures if prediction["score"] is not None else {})}
    ranked = sorted(((k, v["score"]) for k, v in scored.items()), key=lambda kv: -kv[1])
    return {
        "data": {"score": data_score, "combination": "max", "features": features},
        "prediction": prediction,
        "top_features": [{"feature": k, "score": round(s, 4)} for k, s in ranked[:5]],
        "top_tokens": features.get("tokens", {}).get("top", []),
        "top_classes": pfeatures.get("predicted_class", {}).get("top", []),
    }


def weighted_f1_from_pairs(pairs: list[tuple[int, int, int]]) -> dict:
    """Weighted / per-class F1 from (true_code, predicted_code, count) rows."""
    from sklearn.metrics import f1_score

    y_true = np.array([p[0] for p in pairs], dtype=np.int64)
    y_pred = np.array([p[1] for p in pairs], dtype=np.int64)
    w = np.array([p[2] for p in pairs], dtype=float)
    labels = np.unique(np.concatenate([y_true, y_pred]))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, sample_weight=w, zero_division=0)
    return {
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", sample_weight=w, zero_division=0)),
        "accuracy": float(w[y_true == y_pred].sum() / w.sum()),
        "per_class_f1": {str(c): float(f) for c, f in zip(labels, per_class)},
        "n": int(w.sum()),
    }


def performance_score(summary: dict, result: dict) -> dict:
    perf = summary["performance"]
    baseline = float(perf.get("baseline_weighted_f1", perf["weighted_f1"]))
    drop = baseline - result["weighted_f1"]
    ref_pc = perf.get("served_per_class_f1") or perf.get("per_class_f1") or {}
    per_class_drop = sorted(((c, ref_pc[c] - f) for c, f in result["per_class_f1"].items() if c in ref_pc),
                            key=lambda kv: -kv[1])
    return {
        "score": float(PERF_SCALE * max(0.0, drop)),
        "baseline_weighted_f1": baseline,
        "evaluation_weighted_f1": float(perf["weighted_f1"]),
        "window_weighted_f1": result["weighted_f1"],
        "window_accuracy": result["accuracy"],
        "drop": float(drop),
        "scale": PERF_SCALE,
        "per_class_f1": result["per_class_f1"],
        "reference_per_class_f1": ref_pc,
        "top_class_drops": [[c, round(d, 4)] for c, d in per_class_drop[:5] if d > 0],
        "n_labels": result["n"],
    }
