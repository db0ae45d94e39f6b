"""The counts a drift window is scored on (drift_scoring.score_window reads them), and the
per-day rollups that keep their cost from growing with traffic.

A window's counts: predicted classes, script, language, model versions, the numeric features and
confidence on the reference's bins, the totals (rows, empty descriptions, OOV sums), the
title-token sample (the newest TOKEN_DAY_SAMPLE titles of each UTC day) and the label-free
performance estimate's sums (performance_estimate: integer sums of per-row terms, per class).

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
import math
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable

from . import performance_estimate, stats, store, textstats
from .categories import PRDTYPECODES
from .reference import NUMERIC_FEATURES

TOKEN_DAY_SAMPLE = 3_000     # newest titles of each UTC day used for the token distribution
ROLLUP_SCHEMA = 2            # bump when what a rollup counts changes: old rollups are then ignored
                             # (2: the performance estimate's sums, est_*)
_CATEGORIES = {"script": list(textstats.SCRIPTS), "lang": list(textstats.LANGS)}
_CODE_INDEX = {c: i for i, c in enumerate(PRDTYPECODES)}


def _empty_agg(edges: dict) -> dict:
    agg = {"n": 0, "n_empty": 0, "oov_sum": 0, "oov_tokens": 0, "oov_rows": 0, "model_versions": {},
           "numeric": {name: [0] * (len(edges[name]) + 1) for name in NUMERIC_FEATURES},
           "categorical": {name: [0] * len(values) for name, values in _CATEGORIES.items()},
           "classes": [0] * len(PRDTYPECODES), "unknown_classes": 0,
           "confidence": [0] * (len(edges["confidence"]) + 1), "unknown": {"script": 0, "lang": 0},
           "estimate": performance_estimate.empty_sums()}
    return agg


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
    def inner(feature: dict) -> list[float]:
        return [float(e) for e in stats.edges_from_json(feature["edges"])[1:-1]]

    edges = {name: inner(summary["numeric"][name]) for name in NUMERIC_FEATURES}
    edges["confidence"] = inner(summary["predictions"]["confidence"])
    return edges


def rollup_bins(summary: dict) -> tuple[str, dict]:
    """(bins_key, bins): what a rollup of a reference is counted on (its inner bin edges, its
    title tokens, the per-day token sample). References with the same bins share rollups."""
    bins = {"schema": ROLLUP_SCHEMA, "edges": _inner_edges(summary),
            "tokens": list((summary.get("tokens") or {}).get("categories") or []),
            "token_day_sample": TOKEN_DAY_SAMPLE, "n_classes": performance_estimate.n_classes_of(summary)}
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
PREDICTION_FEATURES = ("predicted_code", "confidence") + performance_estimate.FEATURES


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
        elif feature.startswith(performance_estimate.PREFIX):
            performance_estimate.add_row(agg["estimate"], feature, key, n)
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


def scan_piece(conn, edges: dict, cats: list[str], lo, lo_incl, hi, hi_incl, *,
               n_classes: int | None = None) -> list[tuple]:
    """The rollup rows of one range of rows, counted now (a day, or part of one); n_classes: with
    the performance estimate's sums (spread over that many classes)."""
    rows = store.inference_range_counts(conn, lo, hi, edges, lo_incl=lo_incl, hi_incl=hi_incl)
    titles = store.inference_range_titles(conn, lo, hi, TOKEN_DAY_SAMPLE, lo_incl=lo_incl, hi_incl=hi_incl)
    if n_classes is not None:
        rows = rows + store.inference_range_estimate_sums(conn, lo, hi, n_classes, lo_incl=lo_incl, hi_incl=hi_incl)
    return rows + _token_rows(titles, cats)


def compute_day_rollup(conn, summary: dict, day: date) -> dict:
    """The rollup of one UTC day: {bins_key, bins, n_rows, max_id, rows}. The caller locks the
    day (store.lock_day_for_rollup) so that max_id and the counts describe the same rows."""
    key, bins = rollup_bins(summary)
    lo, hi = _midnight(day), _midnight(day + timedelta(days=1))
    max_id = store.day_max_ids(conn, [day])[day]
    rows = scan_piece(conn, bins["edges"], bins["tokens"], lo, True, hi, False, n_classes=bins["n_classes"])
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
            agg["estimate"] = _agg_from_rows(edges, cats, store.inference_range_estimate_sums(
                conn, as_of - timedelta(days=days), as_of, bins["n_classes"], lo_incl=False, hi_incl=True),
                version)["estimate"]
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
                scanned[piece] = scan_piece(conn, edges, cats, *piece, n_classes=bins["n_classes"])
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
