"""Daily drift check: recent predictions (inference_log) against the serving model's reference.

`mlops drift` writes one `drift_reports` row per window (default the last 7 and 30 days before
--as-of), comparing the window's traffic with the training-time reference of the model that
served it (the champion's version; see reference.py and the `model_references` table). `mlops
alert` then turns the reports into alerts and notifications (steps/alert.py).

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
                    counted on the newest TOKEN_DAY_SAMPLE (3,000) titles of each UTC day of the
                    window (~21k titles for 7 days, ~90k for 30 at volume): a per-day sample,
                    so that a closed day's share is counted once into its rollup. The
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

A window with fewer than DRIFT_MIN_SAMPLES inference rows gets status 'insufficient_data',
NULL scores and level NONE: it never raises an alarm (and never resolves one, see alert.py).
p-values (chi-square on the binned counts, a binned KS) are in details as supporting evidence
only: on 10^5 rows they flag trivial shifts, on 250 rows they miss real ones (see stats.py).

A report's level is the worst of its three scores; drift_detected is true at ALERT or above.

Cost that does not grow with traffic: every closed UTC day of a window is read from its rollup
(inference_rollups: the counts above, per model version, computed once by the daily pipeline's
`rollup` step, steps/retention.py) and only the parts of days that are not closed or not rolled
up (the current partial day, a window edge inside a day, a day whose rollup is missing or saw a
late row) are scanned. Both give the same counts as one scan of the window's rows
(rollups=False, store.inference_window_aggregates): identical scores and verdicts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
import time as time_module
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable

import numpy as np

from .. import registry, stats, store, textstats
from ..categories import PRDTYPECODES
from ..config import Settings
from ..errors import MlopsError
from ..reference import NUMERIC_FEATURES, OTHER
from ..runs import StepResult, StepRun, Trigger, run_step

log = logging.getLogger(__name__)

STEP = "drift"
DEFAULT_WINDOWS = (7, 30)
TOKEN_DAY_SAMPLE = 3_000     # newest titles of each UTC day used for the token distribution
ROLLUP_SCHEMA = 1            # bump when what a rollup counts changes: old rollups are then ignored
CATALOGUE_SAMPLE = 5_000     # labelled catalogue rows scored when feedback is too scarce
CATALOGUE_FETCH = 25_000     # catalogue rows read to find them (most are training rows)
OOV_SCALE = 2.0              # oov score = OOV_SCALE * increase of the OOV rate
PERF_SCALE = 2.0             # performance score = PERF_SCALE * drop of weighted F1
CAUSES = ("data", "prediction", "performance")
LEVELS = stats.DRIFT_LEVELS
THRESHOLD_KEYS = {"warning": "drift_warning_threshold", "alert": "drift_alert_threshold",
                  "critical": "drift_critical_threshold"}

SCALES = {
    "data": "max of per-feature scores: corrected PSI (lengths, n_tokens, script, lang, title tokens), "
            "2-bin PSI of the empty-description rate, and 2 x the increase of the OOV rate",
    "prediction": "max of corrected PSI of the predicted classes and of the confidence bins",
    "performance": "2 x max(0, baseline weighted F1 - window weighted F1)",
}


# --- thresholds ------------------------------------------------------------------------------------
def effective_thresholds(conn, settings: Settings) -> dict:
    """The drift thresholds in force: app_settings overrides (set by a person) else the settings.

    Returns {"warning", "alert", "critical", "source": {level: "app_settings"|"settings"},
    "updated_by", "updated_at"} (the last two from the newest override, else None).
    """
    rows = store.get_app_settings(conn, list(THRESHOLD_KEYS.values()))
    out: dict = {}
    source: dict = {}
    newest = None
    for level, key in THRESHOLD_KEYS.items():
        row = rows.get(key)
        value = None
        if row is not None:
            try:
                value = float(row["value"])
            except (TypeError, ValueError):
                log.warning("app_settings %s = %r is not a number: ignored", key, row["value"])
        if value is not None and math.isfinite(value) and value > 0:
            out[level], source[level] = value, "app_settings"
            if newest is None or row["updated_at"] > newest["updated_at"]:
                newest = row
        else:
            out[level], source[level] = float(getattr(settings, key)), "settings"
    if not out["warning"] <= out["alert"] <= out["critical"]:
        log.warning("drift thresholds %s are not ordered: using the settings' instead", out)
        out = {level: float(getattr(settings, key)) for level, key in THRESHOLD_KEYS.items()}
        source = {level: "settings" for level in THRESHOLD_KEYS}
        newest = None
    out["source"] = source
    out["updated_by"] = newest["updated_by"] if newest else None
    out["updated_at"] = newest["updated_at"] if newest else None
    return out


def _overrides(conn) -> dict:
    rows = store.get_app_settings(conn, list(THRESHOLD_KEYS.values()))
    return {level: (rows[key]["value"] if key in rows else None) for level, key in THRESHOLD_KEYS.items()}


def _check_thresholds(warning, alert, critical) -> tuple[float, float, float]:
    try:
        w, a, c = float(warning), float(alert), float(critical)
    except (TypeError, ValueError):
        raise MlopsError(f"Thresholds must be numbers, got {warning!r}, {alert!r}, {critical!r}") from None
    if not all(math.isfinite(x) for x in (w, a, c)) or not 0 < w < a < c:
        raise MlopsError(f"Thresholds must satisfy 0 < warning < alert < critical, got "
                         f"warning={w:g}, alert={a:g}, critical={c:g}")
    return w, a, c


def set_thresholds(conn, warning: float, alert: float, critical: float, by: str,
                   note: str | None = None) -> dict:
    """Override the drift thresholds (app_settings), audited in alert_actions; commits.

    Validates 0 < warning < alert < critical (MlopsError otherwise). Returns the new values,
    the previous overrides (None when there were none) and the audit row id.
    """
    w, a, c = _check_thresholds(warning, alert, critical)
    if not by or not str(by).strip():
        raise MlopsError("Say who changes the thresholds (--by NAME)")
    old = _overrides(conn)
    new = {"warning": w, "alert": a, "critical": c}
    for level, key in THRESHOLD_KEYS.items():
        store.upsert_app_setting(conn, key, new[level], by)
    action_id = store.insert_alert_action(conn, alert_id=None, action="adjust_thresholds", actor=str(by),
                                          note=note, params={"old": old, "new": new})
    conn.commit()
    log.info("drift thresholds set to %s by %s", new, by)
    return {**new, "previous": old, "updated_by": str(by), "action_id": action_id}


def reset_thresholds(conn, by: str, note: str | None = None) -> dict:
    """Drop the overrides: the settings' (environment) thresholds apply again. Audited; commits."""
    if not by or not str(by).strip():
        raise MlopsError("Say who resets the thresholds (--by NAME)")
    old = _overrides(conn)
    store.delete_app_settings(conn, list(THRESHOLD_KEYS.values()))
    action_id = store.insert_alert_action(conn, alert_id=None, action="adjust_thresholds", actor=str(by),
                                          note=note, params={"old": old, "new": None, "reset": True})
    conn.commit()
    return {"previous": old, "updated_by": str(by), "action_id": action_id}


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
        raise MlopsError(f"Version {version} has no reference and the catalogue is empty: cannot check drift")
    info = registry.get_version(settings, version)
    model = registry.load_model(settings, version=version)
    summary = build_reference(model, train_rows, holdout)
    summary["built_late"] = True
    store.insert_model_reference(conn, model_name=settings.model_name, model_version=str(version),
                                 mlflow_run_id=info.get("run_id"), summary=summary)
    return store.get_model_reference(conn, settings.model_name, str(version))


# --- scoring (pure functions of the reference summary and the window's counts) ----------------------
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


def score_window(summary: dict, agg: dict) -> dict:
    """Data and prediction drift of one window (agg = window_aggregates()) against `summary`."""
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

    ranked = sorted(((k, v["score"]) for k, v in {**features, **pfeatures}.items()), key=lambda kv: -kv[1])
    return {
        "data": {"score": data_score, "combination": "max", "features": features},
        "prediction": {"score": pred_score, "combination": "max", "features": pfeatures},
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


# --- the window's data --------------------------------------------------------------------------------
def _empty_agg(edges: dict) -> dict:
    agg = {"n": 0, "n_empty": 0, "oov_sum": 0, "oov_tokens": 0, "oov_rows": 0, "model_versions": {},
           "numeric": {name: [0] * (len(edges[name]) + 1) for name in NUMERIC_FEATURES},
           "categorical": {name: [0] * len(values) for name, values in _CATEGORIES.items()},
           "classes": [0] * len(PRDTYPECODES), "unknown_classes": 0,
           "confidence": [0] * (len(edges["confidence"]) + 1), "unknown": {"script": 0, "lang": 0}}
    return agg


_CATEGORIES = {"script": list(textstats.SCRIPTS), "lang": list(textstats.LANGS)}
_CODE_INDEX = {c: i for i, c in enumerate(PRDTYPECODES)}


def _add_row(agg: dict, feature: str, key, n: int) -> None:
    if key is None:
        return  # NULL n_tokens / script / lang (rows logged without text features)
    if feature == "predicted_code":
        i = _CODE_INDEX.get(int(key))
        if i is None:
            agg["unknown_classes"] += n
        else:
            agg["classes"][i] += n
    elif feature in _CATEGORIES:
        values = _CATEGORIES[feature]
        if key in values:
            agg["categorical"][feature][values.index(key)] += n
        else:
            agg["unknown"][feature] += n
    elif feature == "model_version":
        if n:
            agg["model_versions"][str(key)] = agg["model_versions"].get(str(key), 0) + n
    elif feature == "confidence":
        agg["confidence"][int(key)] += n
    elif feature in NUMERIC_FEATURES:
        agg["numeric"][feature][int(key)] += n


def _inner_edges(summary: dict) -> dict[str, list[float]]:
    edges = {name: [float(e) for e in _edges(summary["numeric"][name])[1:-1]] for name in NUMERIC_FEATURES}
    edges["confidence"] = [float(e) for e in _edges(summary["predictions"]["confidence"])[1:-1]]
    return edges


def rollup_bins(summary: dict) -> tuple[str, dict]:
    """(bins_key, bins): what a rollup of a reference is counted on (its inner bin edges, its
    title tokens, the per-day token sample). References with the same bins share rollups."""
    bins = {"schema": ROLLUP_SCHEMA, "edges": _inner_edges(summary),
            "tokens": list((summary.get("tokens") or {}).get("categories") or []),
            "token_day_sample": TOKEN_DAY_SAMPLE}
    key = hashlib.sha1(json.dumps(bins, sort_keys=True).encode()).hexdigest()
    return key, bins


def _token_rows(titles: Iterable[tuple], cats: list[str]) -> list[tuple]:
    """[(model_version, feature, key, n)] of sampled titles [(model_version, designation)]: each
    reference token's count, the count of every other token, and the number of titles."""
    by_version: dict = {}
    for mv, title in titles:
        c, n = by_version.setdefault(mv, [Counter(), 0])
        c.update(textstats.tokens(title or ""))
        by_version[mv][1] = n + 1
    rows = []
    for mv, (counter, n_titles) in by_version.items():
        known = 0
        for t in cats:
            k = int(counter.get(t, 0))
            if k:
                rows.append((mv, "token", t, k))
                known += k
        rows.append((mv, "token_other", None, int(sum(counter.values())) - known))
        rows.append((mv, "n_titles", None, n_titles))
    return rows


_TOTALS = ("n", "n_empty", "oov_sum", "oov_tokens", "oov_rows")


# What a model predicted: compared with the reference of the version that made the predictions
# only. Right after a promotion the window still holds the previous champion's answers, whose
# classes and confidences are another model's (another family, another calibration): counting
# them against the new reference raises a drift that is only the change of model.
PREDICTION_FEATURES = ("predicted_code", "confidence")


def _agg_from_rows(edges: dict, cats: list[str], rows: Iterable[tuple], version: str | None = None) -> dict:
    """The counts of a window (the dict score_window reads) from summed rollup/scan rows.
    `version`: count the prediction features of that model version's rows only."""
    agg = _empty_agg(edges)
    agg["tokens"], agg["n_titles"] = [0] * (len(cats) + 1), 0
    index = {t: i for i, t in enumerate(cats)}
    for mv, feature, key, n in rows:
        if version is not None and feature in PREDICTION_FEATURES and str(mv) != version:
            continue
        if feature in _TOTALS:
            agg[feature] += n
            if feature == "n":
                _add_row(agg, "model_version", mv, n)
        elif feature == "token":
            i = index.get(key)
            agg["tokens"][len(cats) if i is None else i] += n
        elif feature == "token_other":
            agg["tokens"][-1] += n
        elif feature == "n_titles":
            agg["n_titles"] += n
        else:
            _add_row(agg, feature, key, n)
    return agg


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=timezone.utc)


def day_pieces(start: datetime, end: datetime) -> list[tuple]:
    """The window start < logged_at <= end cut at UTC midnights: [(day, lo, lo_incl, hi,
    hi_incl)]. A midnight `end` gives a last piece [end, end] (rows at exactly that instant)."""
    pieces = []
    d = start.astimezone(timezone.utc).date()
    lo, lo_incl = start, False
    while lo <= end:
        day_end = _midnight(d + timedelta(days=1))
        if end < day_end:
            pieces.append((d, lo, lo_incl, end, True))
            break
        pieces.append((d, lo, lo_incl, day_end, False))
        lo, lo_incl, d = day_end, True, d + timedelta(days=1)
    return pieces


def scan_piece(conn, edges: dict, cats: list[str], lo, lo_incl, hi, hi_incl) -> list[tuple]:
    """The rollup rows of one range of rows, counted now (a day, or part of one)."""
    rows = store.inference_range_counts(conn, lo, hi, edges, lo_incl=lo_incl, hi_incl=hi_incl)
    titles = store.inference_range_titles(conn, lo, hi, TOKEN_DAY_SAMPLE, lo_incl=lo_incl, hi_incl=hi_incl)
    return rows + _token_rows(titles, cats)


def compute_day_rollup(conn, summary: dict, day: date) -> dict:
    """The rollup of one UTC day: {bins_key, bins, n_rows, max_id, rows}. The caller locks the
    day (store.lock_day_for_rollup) so that max_id and the counts describe the same rows."""
    key, bins = rollup_bins(summary)
    lo, hi = _midnight(day), _midnight(day + timedelta(days=1))
    max_id = store.day_max_ids(conn, [day])[day]
    rows = scan_piece(conn, bins["edges"], bins["tokens"], lo, True, hi, False)
    n_rows = sum(n for _mv, f, _k, n in rows if f == "n")
    return {"bins_key": key, "bins": bins, "n_rows": n_rows, "max_id": max_id, "rows": rows}


def windows_aggregates(conn, summary: dict, as_of: datetime, windows: Iterable[int], *,
                       rollups: bool = True, version: str | None = None) -> dict[int, dict]:
    """{days: counts of the window (as_of - days, as_of]} for every window: predicted classes,
    script, language, model versions, the numeric features and confidence on the reference's
    bins, the totals (rows, empty descriptions, OOV sums) and the title-token sample.

    rollups=True: closed days from their rollups when fresh, the rest scanned (see the module
    docstring); agg["sources"] says which. rollups=False: one scan of the rows
    (store.inference_window_aggregates) and of the token sample (store.window_day_sample_titles):
    the reference the rollups must equal. version: the predicted classes and confidences of
    that model version only (PREDICTION_FEATURES); the input features count every row."""
    version = None if version is None else str(version)
    windows = sorted({int(d) for d in windows})
    key, bins = rollup_bins(summary)
    edges, cats = bins["edges"], bins["tokens"]
    out = {}
    if not rollups:
        data = store.inference_window_aggregates(conn, as_of, windows, edges, prediction_version=version)
        for days in windows:
            rows = [(None, k, None, v) for k, v in data["totals"][days].items()]
            agg = _agg_from_rows(edges, cats, rows)
            for r in data["by_feature"]:
                _add_row(agg, r["feature"], r["key"], r["counts"][days])
            titles = store.window_day_sample_titles(conn, as_of - timedelta(days=days), as_of, TOKEN_DAY_SAMPLE)
            tok = _agg_from_rows(edges, cats, _token_rows(titles, cats))
            agg["tokens"], agg["n_titles"] = tok["tokens"], tok["n_titles"]
            agg["sources"] = {"scan": "window"}
            out[days] = agg
        return out

    per_window = {days: day_pieces(as_of - timedelta(days=days), as_of) for days in windows}
    # whole days (or a whole day minus its first instant, when no row sits on it); a day still
    # receiving rows is not wrong to read from its rollup: a newer row makes the rollup stale
    candidates: set = set()
    for pieces in per_window.values():
        for day, lo, lo_incl, hi, hi_incl in pieces:
            if lo == _midnight(day) and hi == _midnight(day + timedelta(days=1)) and not hi_incl:
                candidates.add(day)
    state = store.rollup_days_state(conn, key, sorted(candidates)) if candidates else {}
    fresh = sorted(d for d, st in state.items() if not st["late"])
    stored = store.read_rollups(conn, key, fresh) if fresh else {}
    at_start: dict = {}
    scanned: dict = {}
    for days, pieces in per_window.items():
        rows: list = []
        used, scans = 0, 0
        for day, lo, lo_incl, hi, hi_incl in pieces:
            whole = lo == _midnight(day) and hi == _midnight(day + timedelta(days=1)) and not hi_incl
            use = whole and day in stored
            if use and not lo_incl:  # the rollup counts rows at exactly midnight; the window does not
                if lo not in at_start:
                    at_start[lo] = store.count_rows_at(conn, lo)
                use = at_start[lo] == 0
            if use:
                rows.extend(stored[day])
                used += 1
                continue
            piece = (lo, lo_incl, hi, hi_incl)
            if piece not in scanned:
                scanned[piece] = scan_piece(conn, edges, cats, *piece)
            rows.extend(scanned[piece])
            scans += 1
        agg = _agg_from_rows(edges, cats, rows, version)
        agg["sources"] = {"rollup_days": used, "scanned_pieces": scans}
        out[days] = agg
    return out


def window_aggregates(conn, summary: dict, start: datetime, end: datetime, **kw) -> dict:
    """The counts of one window (start, end] (see windows_aggregates)."""
    span = (end - start).total_seconds() / 86400.0
    days = int(math.ceil(span))
    if days != span:
        raise ValueError("window_aggregates needs a whole number of days")
    return windows_aggregates(conn, summary, end, [days], **kw)[days]


def _utc(value) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time.min, tzinfo=timezone.utc)
    raise TypeError(f"as_of must be a date or datetime, got {type(value).__name__}")


class _Labels:
    """Labels for performance drift: feedback in the window, else a labelled catalogue sample."""

    def __init__(self, conn, settings: Settings, ref_row: dict):
        self.conn, self.settings, self.ref_row = conn, settings, ref_row
        self._model = None

    def model(self):
        if self._model is None:
            self._model = registry.load_model(self.settings, version=self.ref_row["model_version"])
        return self._model

    def get(self, start: datetime, end: datetime) -> tuple[dict | None, int]:
        """(performance result or None, number of feedback labels in the window)."""
        min_n = max(1, int(self.settings.drift_min_samples))
        pairs = store.window_feedback_pairs(self.conn, start, end)
        n_feedback = int(sum(p[2] for p in pairs))
        if n_feedback >= min_n:
            out = weighted_f1_from_pairs(pairs)
            out["source"] = "feedback"
            return out, n_feedback
        rows = store.products_loaded_between(self.conn, start, end, CATALOGUE_FETCH)
        if len(rows) < min_n:
            return {"source": "none", "n_feedback": n_feedback, "n_catalogue": len(rows)}, n_feedback
        from .. import dataset

        ids = np.array([r["productid"] for r in rows], dtype=np.int64)
        trained_at = self.ref_row["created_at"]
        unseen = dataset.holdout_mask(ids, self.settings.holdout_fraction) | \
            np.array([r["loaded_at"] > trained_at for r in rows], dtype=bool)
        picked = [r for r, keep in zip(rows, unseen) if keep][:CATALOGUE_SAMPLE]
        if len(picked) < min_n:
            return {"source": "none", "n_feedback": n_feedback, "n_catalogue": len(rows),
                    "n_unseen": len(picked)}, n_feedback
        import pandas as pd

        from ..reference import served_predictions

        df = pd.DataFrame(picked)
        pred, _ = served_predictions(self.model(), df[["designation", "description"]])
        counts: dict[tuple[int, int], int] = {}
        for t, p in zip(df["prdtypecode"].astype(int).tolist(), np.asarray(pred).astype(int).tolist()):
            counts[(t, p)] = counts.get((t, p), 0) + 1
        out = weighted_f1_from_pairs([(t, p, n) for (t, p), n in counts.items()])
        out["source"] = "catalogue"
        out["n_catalogue_read"] = len(rows)
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
    if agg["n"] < max(1, settings.drift_min_samples):
        n_feedback = int(sum(p[2] for p in store.window_feedback_pairs(conn, start, as_of)))
        details.update(status="insufficient_data", scores={c: None for c in CAUSES},
                       levels={c: "NONE" for c in CAUSES},
                       reason=f"{agg['n']} predictions in the {days}-day window, fewer than "
                              f"DRIFT_MIN_SAMPLES={settings.drift_min_samples}: no scores")
        report.update(status="insufficient_data", n_feedback=n_feedback)
        return report

    scored = score_window(summary, agg)
    perf_result, n_feedback = labels.get(start, as_of)
    if perf_result is not None and "weighted_f1" in perf_result:
        perf = performance_score(summary, perf_result)
        perf["source"] = perf_result["source"]
    else:
        perf = {"score": None, **(perf_result or {"source": "none"}),
                "reason": f"fewer than {settings.drift_min_samples} labels (feedback or unseen catalogue rows)"}
    scores = {"data": scored["data"]["score"], "prediction": scored["prediction"]["score"],
              "performance": perf["score"]}
    levels = {c: stats.drift_level(s, *th) for c, s in scores.items()}
    level = max(levels.values(), key=LEVELS.index)
    top_features = list(scored["top_features"])
    if perf["score"] is not None:
        top_features.append({"feature": "weighted_f1_drop", "score": round(perf["score"], 4)})
        top_features.sort(key=lambda f: -f["score"])
    details.update(
        status="ok", scores=scores, levels=levels, level=level,
        data=scored["data"], prediction=scored["prediction"], performance=perf,
        top_features=top_features[:5], top_tokens=scored["top_tokens"], top_classes=scored["top_classes"],
        n_titles=agg["n_titles"], n_feedback=n_feedback, unknown_classes=agg["unknown_classes"],
        oov={"rows_with_oov": agg["oov_rows"]},
    )
    report.update(status="ok", n_feedback=n_feedback, level=level,
                  data_drift_score=scores["data"], prediction_drift_score=scores["prediction"],
                  performance_drift_score=scores["performance"],
                  drift_detected=LEVELS.index(level) >= LEVELS.index("ALERT"))
    return report


def _serving_version(conn, settings: Settings, as_of: datetime, days: int) -> tuple[str | None, str]:
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
    when = _utc(as_of)
    windows = sorted({int(d) for d in (window_days or DEFAULT_WINDOWS)})
    if not windows or windows[0] <= 0:
        raise MlopsError(f"Windows must be positive numbers of days, got {list(window_days)}")

    def body(step: StepRun) -> None:
        clock = time_module.perf_counter
        t0 = clock()
        version, how = _serving_version(conn, settings, when, windows[-1])
        if version is None:
            step.skip(f"no champion of {settings.model_name} and no logged traffic from a version with a "
                      "reference: nothing to compare")
            return
        ref_row = reference_for(conn, settings, version)
        thresholds = effective_thresholds(conn, settings)
        labels = _Labels(conn, settings, ref_row)
        t1 = clock()
        aggs = windows_aggregates(conn, ref_row["summary"], when, windows, rollups=rollups,
                                  version=ref_row["model_version"])
        t2 = clock()
        reports = []
        for days in windows:
            report = analyse_window(conn, settings, ref_row, when, days, thresholds, labels, agg=aggs[days])
            report["details"]["version_chosen_by"] = how
            report["id"] = store.insert_drift_report(conn, pipeline_run_id=step.run_id, **report)
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
                                    "performance": r["performance_drift_score"]}} for r in reports],
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
            f"{_fmt(r['performance_drift_score'])} -> {r['level']}")


# --- reads for the UI and the API --------------------------------------------------------------------
def list_reports(conn, *, limit: int = 100, window_days: int | None = None) -> list[dict]:
    """Newest drift reports first (all columns, details included)."""
    return store.list_drift_reports(conn, limit=limit, window_days=window_days)


def get_report(conn, report_id: int) -> dict:
    row = store.get_drift_report(conn, report_id)
    if row is None:
        raise MlopsError(f"No drift report {report_id}")
    return row


def latest_reports(conn) -> list[dict]:
    """The reports of the newest succeeded drift run (one per window), [] when none."""
    run = store.latest_run(conn, STEP, "succeeded")
    return store.drift_reports_for_run(conn, run["id"]) if run else []


def score_history(conn, *, days: int = 90, window_days: int | None = None) -> list[dict]:
    """Scores over time without the heavy details (for trend charts)."""
    return store.drift_score_history(conn, days=days, window_days=window_days)
