"""Label-free performance estimation: the window's weighted F1 from the champion's calibrated
probabilities, before any label arrives (confidence-based performance estimation, as NannyML's
CBPE does for tabular models). docs/performance_estimate.md explains the choices; in short:

The estimate. If the served probabilities are calibrated (calibration.TemperatureScaled: they
are, on the model's validation rows), a row predicted class c with probability p_c is right with
probability p_c, and belongs to class d with probability p_d. Summing over the window's rows,
per class c (one-vs-rest):

    expected TP_c       = sum over rows predicted c of p_c            (their confidence)
    expected FP_c       = (rows predicted c) - TP_c
    expected support_c  = sum over ALL rows of p_c                   (= TP_c + FN_c)
    estimated F1_c      = 2 TP_c / (rows predicted c + support_c)
    estimated weighted F1 = sum_c support_c F1_c / sum_c support_c   (weights: expected supports)

as CBPE does (a ratio of expectations; at hundreds of rows per class the difference with the
expectation of the ratio is far below the band).

What is logged. inference_log keeps the predicted code, its confidence and the client's top_k
(the API's default: 3 classes), not the 27 probabilities. Each row's listed classes are the
predicted one (its `confidence`) and the other top_k entries; the mass they leave, 1 - sum,
is spread EVENLY over the K - k classes not listed (K: the model's classes). Why evenly: the
calibration map itself gives every class a floor epsilon / K, and past the top 3 the softmax
tail of a linear text classifier is flat next to it; an even spread is the least assumption
given only the mass; a spread by the training class mix would pull the estimate back towards the
training mix exactly when the mix drifts. Only the supports of the unlisted classes (the
FN side) depend on it, and the reference is estimated with the same top-3 truncation, so what is
left of its bias cancels in the comparison the alert makes (bench_estimate measures the cost of
the truncation against the full probability vectors).

Additive. Every quantity above is a sum over rows, so a window's estimate is computed from
per-day sums (drift_windows: the rollups) exactly as from one scan: row_sums / the SQL of
store.inference_range_estimate_sums produce, per model version,

    est_n       rows                          est_tail   sum of t_i (each unlisted class's share)
    est_rest    sum of (1 - listed mass)      est_tail2  sum of t_i^2
    est_pred c  rows predicted c              est_tp c   sum of their confidence    est_tp2 c: squared
    est_s c     sum over rows listing c of (p_c - t_i)   est_s2 c: of (p_c^2 - t_i^2)

so that support_c = est_s c + est_tail and sum_i p_ic^2 = est_s2 c + est_tail2. Each row's term is
rounded to an integer number of 1e-9 (SCALE) before summing: integer sums do not depend on the
order, so the rollups and the row scan give the same estimate to the last digit, and they fit in
the rollups' BIGINT counts (10^9 x 10^6 rows a day x 30 days < 2^63).

The band. If the probabilities are right, the realized F1 differs from the estimate only by which
rows turn out right: independent categorical draws. Its variance, by the delta method on
F1_w = (2/N) sum_c TP_c S_c / (m_c + S_c) (S_c the true support, m_c rows predicted c), is

    sum_c (a_c^2 + 2 a_c b_c) Var(TP_c) + b_c^2 Var(S_c)
    a_c = 2 S_c / (N (m_c + S_c)),  b_c = 2 TP_c m_c / (N (m_c + S_c)^2)
    Var(TP_c) = sum over rows predicted c of p_c (1 - p_c),  Var(S_c) = sum_i p_ic (1 - p_ic)

(Cov(TP_c, S_c) = Var(TP_c): the rows predicted c are part of S_c). The covariances between
classes are left out: they are all <= 0 (one row, one class) and the gradient is >= 0, so the
variance is an upper bound of the delta method's: a conservative band, additive like the rest.
The band is estimate +- Z sd (95%). It says how far the realized F1 of the window can fall from the
estimate by chance; it does not cover a calibration that no longer holds (that is what the
estimated-vs-realized comparison on labelled traffic shows).

The alert. The estimate is compared with the same estimate on the model's holdout (stored in its
reference, reference.py), not with the holdout's realized F1: whatever bias the estimator has
(calibration, truncation) is in both. The score is on the drift scale:

    score = warning_threshold x max(0, reference estimate - window estimate) / ESTIMATE_MARGIN

so a drop of one margin sits on the WARNING line, alert/warning margins (2 by default) on ALERT,
critical/warning (3) on CRITICAL; with the defaults (0.1 and 0.05) it is 2 x the drop, the scale of
performance drift.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

SCALE = 10 ** 9          # fixed point of the per-row terms (integer sums: order-independent)
Z = 1.959963984540054    # the band: estimate +- Z sd (95%)
LOGGED_TOP_K = 3         # the API's default top_k: what the reference estimate assumes is logged
# estimated against realized is compared on the window's most recent labelled predictions, at most
# this many: its cost stays bounded at any traffic (the sd of a weighted F1 on 1,000 rows is ~0.012;
# the performance-drift score still counts every label, from feedback alone)
LABELLED_SAMPLE = 1000
PREFIX = "est_"
TOTALS = ("est_n", "est_rest", "est_tail", "est_tail2")
PER_CLASS = {"est_pred": "pred", "est_tp": "tp", "est_tp2": "tp2", "est_s": "s", "est_s2": "s2"}
FEATURES = TOTALS + tuple(PER_CLASS)


# --- the additive sums ---------------------------------------------------------------------------
def empty_sums() -> dict:
    return {"n": 0, "rest": 0, "tail": 0, "tail2": 0, "classes": {}}


def add_row(sums: dict, feature: str, key, n: int) -> None:
    """Add one (feature, key, n) row of a rollup or a scan (features: FEATURES) to `sums`."""
    if feature in TOTALS:
        sums[feature[len(PREFIX):]] += int(n)
    elif feature in PER_CLASS:
        cls = sums["classes"].setdefault(int(key), {})
        name = PER_CLASS[feature]
        cls[name] = cls.get(name, 0) + int(n)


def _fx(x: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(x, dtype=np.float64) * SCALE).astype(np.int64)


def _padded(top_k: Sequence, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged logged top_k lists as (codes, probabilities) arrays padded with code -1."""
    width = max((len(t) for t in top_k if t), default=0)
    codes, probs = np.full((n, width), -1, dtype=np.int64), np.zeros((n, width))
    for i, listed in enumerate(top_k):
        for j, e in enumerate(listed if isinstance(listed, (list, tuple)) else ()):
            if isinstance(e, dict):
                code, p = e.get("prdtypecode"), e.get("probability")
            elif isinstance(e, (list, tuple)) and len(e) == 2:
                code, p = e
            else:
                continue  # as the SQL: an entry that is not a (code, probability) is skipped
            if isinstance(code, (int, np.integer)) and isinstance(p, (int, float, np.floating)):
                codes[i, j], probs[i, j] = int(code), float(p)
    return codes, probs


def _add_grouped(sums: dict, codes: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    if codes.size == 0:
        return
    keys, where = np.unique(codes, return_inverse=True)
    for name, values in columns.items():
        total = np.zeros(len(keys), dtype=np.int64)
        np.add.at(total, where, values)
        for code, v in zip(keys.tolist(), total.tolist()):
            cls = sums["classes"].setdefault(int(code), {})
            cls[name] = cls.get(name, 0) + int(v)


def row_sums(codes: Sequence[int], confidence: Sequence[float], top_k, n_classes: int) -> dict:
    """The sums of some rows, computed here (the reference's holdout, a window's labelled rows): what
    store.inference_range_estimate_sums computes in SQL, term by term (the same floating-point
    operations in the same order: the same integers). top_k: per row a list of (code, probability)
    or of the logged {"prdtypecode", "probability"} dicts, or None; or the (codes, probabilities)
    arrays of top_k_of."""
    c = np.asarray(codes, dtype=np.int64).reshape(-1)
    n = c.size
    conf = np.clip(np.asarray(confidence, dtype=np.float64).reshape(-1), 0.0, 1.0)
    arrays = isinstance(top_k, tuple) and len(top_k) == 2 and isinstance(top_k[0], np.ndarray)
    tc, tp = top_k if arrays else _padded(top_k, n)
    tp = np.clip(tp, 0.0, 1.0)
    other = (tc != c[:, None]) & (tc >= 0)
    listed = 1 + other.sum(axis=1)
    listed_mass = np.zeros(n)
    for j in range(tp.shape[1]):  # column by column, as the SQL adds them (numpy's sum pairs them)
        listed_mass = listed_mass + np.where(other[:, j], tp[:, j], 0.0)
    rest = np.maximum(0.0, 1.0 - conf - listed_mass)
    t = np.where(int(n_classes) > listed, rest / np.maximum(int(n_classes) - listed, 1), 0.0)
    sums = empty_sums()
    sums.update(n=int(n), rest=int(_fx(rest).sum()), tail=int(_fx(t).sum()), tail2=int(_fx(t * t).sum()))
    _add_grouped(sums, c, {"pred": np.ones(n, dtype=np.int64), "tp": _fx(conf), "tp2": _fx(conf * conf),
                           "s": _fx(conf - t), "s2": _fx(conf * conf - t * t)})
    t_o = np.broadcast_to(t[:, None], tp.shape)[other]
    p_o = tp[other]
    _add_grouped(sums, tc[other], {"s": _fx(p_o - t_o), "s2": _fx(p_o * p_o - t_o * t_o)})
    return sums


def sums_rows(sums: dict, model_version=None) -> list[tuple]:
    """`sums` as rollup rows [(model_version, feature, key, n)] (the inverse of add_row)."""
    rows = [(model_version, f, None, sums[f[len(PREFIX):]]) for f in TOTALS]
    names = {v: k for k, v in PER_CLASS.items()}
    for code, cls in sorted(sums["classes"].items()):
        rows.extend((model_version, names[name], str(code), n) for name, n in cls.items())
    return rows


# --- the estimate ----------------------------------------------------------------------------------
def estimate(sums: dict | None, classes: Iterable[int] | None = None, z: float = Z) -> dict | None:
    """The estimated weighted F1 of the rows summed in `sums`, its sd and band (see the module
    docstring), per-class estimates. classes: the model's classes (the ones the unlisted mass is
    spread over). None when there is no row."""
    if not sums or sums["n"] <= 0:
        return None
    f = 1.0 / SCALE
    n = int(sums["n"])
    tail, tail2 = sums["tail"] * f, sums["tail2"] * f
    known = {int(c) for c in classes} if classes is not None else set()
    per: dict[int, dict] = {}
    for code in sorted(known | set(sums["classes"])):
        d = sums["classes"].get(code, {})
        spread = not known or code in known  # the unlisted mass reaches the model's classes only
        m = int(d.get("pred", 0))
        tp, tp2 = d.get("tp", 0) * f, d.get("tp2", 0) * f
        support = max(0.0, d.get("s", 0) * f + (tail if spread else 0.0))
        squares = max(0.0, d.get("s2", 0) * f + (tail2 if spread else 0.0))
        per[code] = {"m": m, "tp": tp, "var_tp": max(0.0, tp - tp2), "support": support,
                     "var_support": max(0.0, support - squares)}
    total = sum(c["support"] for c in per.values())
    if total <= 0:
        return None
    weighted, var = 0.0, 0.0
    for c in per.values():
        denom = c["m"] + c["support"]
        # in [0, 1]: the sums' fixed point back to floats can leave 1.0000000000000002 when every
        # row is fully confident, above the band's cap (drift_reports' CHECK refused the report)
        c["f1"] = min(1.0, 2.0 * c["tp"] / denom) if denom > 0 else 0.0
        weighted += c["support"] * c["f1"]
        if denom > 0:
            a = 2.0 * c["support"] / (total * denom)
            b = 2.0 * c["tp"] * c["m"] / (total * denom * denom)
            var += (a * a + 2.0 * a * b) * c["var_tp"] + b * b * c["var_support"]
    weighted = min(1.0, weighted / total)
    sd = math.sqrt(var)
    return {
        "weighted_f1": weighted, "sd": sd, "low": max(0.0, weighted - z * sd), "high": min(1.0, weighted + z * sd),
        "z": z, "n": n,
        "expected_accuracy": sum(c["tp"] for c in per.values()) / n,
        "unlisted_mass": sums["rest"] * f / n,
        "per_class": {str(code): {"f1": round(c["f1"], 6), "support": round(c["support"], 3), "predicted": c["m"],
                                  "precision": round(c["tp"] / c["m"], 6) if c["m"] else None,
                                  "recall": round(c["tp"] / c["support"], 6) if c["support"] > 0 else None}
                      for code, c in per.items() if c["m"] or c["support"] > 0},
    }


def score(reference_f1: float, window_f1: float, warning: float, margin: float) -> float:
    """The estimated-performance score on the drift scale (module docstring): a drop of one
    `margin` below the reference estimate scores the warning threshold."""
    return float(warning) * max(0.0, float(reference_f1) - float(window_f1)) / float(margin)


# --- the model's side: top-k probabilities as served, the reference ---------------------------------
def top_k_of(proba: np.ndarray, classes, codes, k: int = LOGGED_TOP_K) -> tuple[np.ndarray, tuple]:
    """(confidence of the served codes, (top-k codes, their probabilities): (n, k) arrays by
    probability): what serving logs (serving.predictor: top-k by decision value, the same order
    for the calibrated models; the confidence is the probability of the model's own prediction)."""
    p = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes)
    index = {c: i for i, c in enumerate(classes.tolist())}
    col = np.fromiter((index[c] for c in np.asarray(codes).tolist()), dtype=np.int64, count=len(p))
    conf = p[np.arange(len(p)), col]
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return conf, (classes[order].astype(np.int64), np.take_along_axis(p, order, axis=1))


def reference_estimate(proba, classes, codes, y_true, *, k: int = LOGGED_TOP_K) -> dict:
    """The estimate on the model's holdout (logged as serving logs it: top-k) and the realized
    weighted F1 of the same predictions: stored in the model's reference (summary["estimate"])."""
    from sklearn.metrics import f1_score

    classes = [int(c) for c in np.asarray(classes).tolist()]
    conf, top = top_k_of(proba, classes, codes, k)
    est = estimate(row_sums(codes, conf, top, len(classes)), classes)
    realized = float(f1_score(np.asarray(y_true), np.asarray(codes), average="weighted", zero_division=0))
    return {"method": "cbpe", "top_k": int(k), "classes": classes, "n_classes": len(classes),
            "realized_weighted_f1": realized, **(est or {})}


def n_classes_of(summary: dict) -> int:
    """K, the classes the unlisted mass is spread over: the model's (references older than the
    estimate: the 27 codes of the predicted-class mix)."""
    est = summary.get("estimate") or {}
    if est.get("n_classes"):
        return int(est["n_classes"])
    return len(summary["predictions"]["classes"]["categories"])


def classes_of(summary: dict) -> list[int]:
    est = summary.get("estimate") or {}
    return [int(c) for c in (est.get("classes") or summary["predictions"]["classes"]["categories"])]


# --- one window ---------------------------------------------------------------------------------------
def assess_window(summary: dict, sums: dict | None, labelled: list[tuple] | None, thresholds: dict,
                  margin: float, min_samples: int = 1) -> dict:
    """The estimate of a window and how it compares: {"score", "columns" (the drift_reports
    columns), "details"}. labelled: the window's labelled predictions (true_code, predicted_code,
    confidence, top_k) -- the realized F1 and the estimate on the same rows. Fewer than
    `min_samples` predictions of the version (promoted late in the window): estimated, not scored."""
    from .drift_scoring import weighted_f1_from_pairs

    classes = classes_of(summary)
    est = estimate(sums, classes)
    ref = summary.get("estimate") or {}
    ref_f1 = ref.get("weighted_f1")
    columns = {"estimated_weighted_f1": None, "estimated_f1_low": None, "estimated_f1_high": None,
               "reference_estimated_f1": ref_f1, "estimated_performance_drift_score": None,
               "realized_weighted_f1": None, "realized_n": 0, "realized_estimated_f1": None}
    details: dict = {"method": "cbpe", "margin": float(margin), "band": f"estimate +- {Z:.2f} sd (95%)",
                     "reference": {k: ref.get(k) for k in ("weighted_f1", "low", "high", "realized_weighted_f1",
                                                           "n", "top_k")} if ref else None}
    score_value = None
    if est is None:
        details["reason"] = "no prediction of the serving version in the window"
    else:
        columns.update(estimated_weighted_f1=est["weighted_f1"], estimated_f1_low=est["low"],
                       estimated_f1_high=est["high"])
        details.update({k: est[k] for k in ("weighted_f1", "sd", "low", "high", "n", "expected_accuracy",
                                            "unlisted_mass")})
        ref_pc = ref.get("per_class") or {}
        drops = sorted(((c, ref_pc[c]["f1"] - v["f1"]) for c, v in est["per_class"].items() if c in ref_pc),
                       key=lambda kv: -kv[1])
        details["top_class_drops"] = [[c, round(d, 4)] for c, d in drops[:5] if d > 0]
        details["per_class_f1"] = {c: v["f1"] for c, v in est["per_class"].items()}
        if ref_f1 is None:
            details["reason"] = ("the model's reference has no estimate (trained before it existed): "
                                 "no score until the next training")
        elif est["n"] < min_samples:
            details["reason"] = (f"{est['n']} predictions of the checked version in the window, fewer than "
                                 f"DRIFT_MIN_SAMPLES={min_samples}: estimated, not scored")
        else:
            score_value = score(ref_f1, est["weighted_f1"], thresholds["warning"], margin)
            columns["estimated_performance_drift_score"] = score_value
            details.update(score=score_value, drop=float(ref_f1) - est["weighted_f1"])
    if labelled:
        realized = weighted_f1_from_pairs([(t, p, 1) for t, p, _c, _k in labelled])
        on_labels = estimate(row_sums([p for _t, p, _c, _k in labelled], [c for *_x, c, _k in labelled],
                                      [k for *_x, k in labelled], len(classes)), classes)
        columns.update(realized_weighted_f1=realized["weighted_f1"], realized_n=len(labelled),
                       realized_estimated_f1=on_labels["weighted_f1"] if on_labels else None)
        details["realized"] = {
            "weighted_f1": realized["weighted_f1"], "n": len(labelled),
            "estimate_on_labelled": on_labels and {k: on_labels[k] for k in ("weighted_f1", "low", "high", "sd")},
            "within_band": bool(on_labels and on_labels["low"] <= realized["weighted_f1"] <= on_labels["high"]),
            "error": (on_labels["weighted_f1"] - realized["weighted_f1"]) if on_labels else None,
        }
    return {"score": score_value, "columns": columns, "details": details}


def labelled_sample(conn, version: str, start, end) -> list[tuple]:
    """The LABELLED_SAMPLE most recently served labelled predictions of `version` in (start, end]
    (true_code, predicted_code, confidence, top_k, logged_at), read from feedback and the log: a
    bounded cost at any traffic volume. The newest N of a window are, for any narrower window that
    ends at the same instant, its newest N too once narrowed to it (narrow_sample): one read serves
    every window of a check."""
    from . import store

    return store.window_feedback_predictions(conn, start, end, version=version, limit=LABELLED_SAMPLE)


def narrow_sample(sample: list[tuple], start) -> list[tuple]:
    """The rows of labelled_sample(.., wider start, end) served after `start`, as assess_window
    takes them."""
    return [(t, p, c, k) for t, p, c, k, at in sample if at > start]


def describe(report: dict) -> str:
    """A drift report's estimate in words (alerts, the UI): the value and band, the reference,
    the realized F1 where labels exist."""
    est = (report.get("details") or {}).get("estimated_performance") or {}
    if est.get("weighted_f1") is None:
        return "No performance estimate."
    ref = est.get("reference") or {}
    text = (f"Estimated weighted F1 (no labels) {est['weighted_f1']:.4f} [{est['low']:.4f}, {est['high']:.4f}] "
            f"on {est.get('n')} predictions")
    if ref.get("weighted_f1") is not None:
        text += (f", against {ref['weighted_f1']:.4f} estimated on the model's holdout (drop "
                 f"{est.get('drop', 0):.4f}, margin {est.get('margin', 0):g})")
    realized = est.get("realized") or {}
    if realized.get("n"):
        on = realized.get("estimate_on_labelled") or {}
        text += (f"; realized {realized['weighted_f1']:.4f} on {realized['n']} labelled predictions, estimated "
                 f"{on.get('weighted_f1', 0):.4f} on the same rows")
    return text + "."
