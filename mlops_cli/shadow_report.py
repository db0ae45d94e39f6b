"""What the shadow challenger's answers to live traffic say against the champion's (docs/shadow.md).

Read from shadow_predictions (the API's shadow worker writes it, serving/shadow.py) and
feedback, through store.shadow_counts, per (champion, challenger) pair of versions:

  agreement            share of the served items both answered alike
  top_disagreements    the classes they disagree on most: items where one of them said the class
                       and the other did not (`rate`: of the items where either said it)
  top_swaps            the most frequent (champion's class -> challenger's class) changes
  live weighted F1     of both, on the same requests, where a moderator's label exists (the
                       request's latest feedback): champion_weighted_f1, challenger_weighted_f1

Three users: the daily drift report's shadow section per window (attach_to_report, one call in
steps/drift.py), promotion's live evidence (evidence, weighed by steps/promote.decide), and the
Models page (ops/shadow.py). apply_retention keeps the table bounded.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from . import store
from .categories import category_name
from .drift_scoring import weighted_f1_from_pairs

TOP = 5


def pair_summary(counts: list[dict], labelled: list[dict], top: int = TOP) -> dict:
    """One pair's numbers from its grouped rows (store.shadow_counts, already of one pair)."""
    n = sum(int(r["n"]) for r in counts)
    agree = sum(int(r["n"]) for r in counts if r["champion_code"] == r["predicted_code"])
    said_by_champion, said_by_challenger = Counter(), Counter()
    lost, gained, swaps = Counter(), Counter(), Counter()  # class -> items the other did not say it
    for r in counts:
        a, b, k = int(r["champion_code"]), int(r["predicted_code"]), int(r["n"])
        said_by_champion[a] += k
        said_by_challenger[b] += k
        if a != b:
            lost[a] += k
            gained[b] += k
            swaps[(a, b)] += k
    classes = []
    for c in set(lost) | set(gained):
        either = said_by_champion[c] + gained[c]
        classes.append({"prdtypecode": c, "category": category_name(c), "disagreements": lost[c] + gained[c],
                        "rate": round((lost[c] + gained[c]) / either, 4) if either else None,
                        "champion_n": said_by_champion[c], "challenger_n": said_by_challenger[c]})
    classes.sort(key=lambda d: (-d["disagreements"], -(d["rate"] or 0), d["prdtypecode"]))
    out = {"n": n, "n_agree": agree, "agreement": round(agree / n, 4) if n else None,
           "top_disagreements": classes[:top],
           "top_swaps": [{"champion_code": a, "challenger_code": b, "n": k,
                          "champion_category": category_name(a), "challenger_category": category_name(b)}
                         for (a, b), k in sorted(swaps.items(), key=lambda kv: (-kv[1], kv[0]))[:top]],
           "n_labelled": sum(int(r["n"]) for r in labelled),
           "champion_weighted_f1": None, "challenger_weighted_f1": None, "f1_difference": None,
           "champion_accuracy": None, "challenger_accuracy": None}
    if out["n_labelled"]:
        champion = weighted_f1_from_pairs([(int(r["true_code"]), int(r["champion_code"]), int(r["n"])) for r in labelled])
        challenger = weighted_f1_from_pairs([(int(r["true_code"]), int(r["predicted_code"]), int(r["n"]))
                                             for r in labelled])
        out.update(champion_weighted_f1=round(champion["weighted_f1"], 4),
                   challenger_weighted_f1=round(challenger["weighted_f1"], 4),
                   f1_difference=round(challenger["weighted_f1"] - champion["weighted_f1"], 4),
                   champion_accuracy=round(champion["accuracy"], 4),
                   challenger_accuracy=round(challenger["accuracy"], 4))
    return out


def summaries(counts: list[dict], labelled: list[dict]) -> list[dict]:
    """pair_summary of each (champion, challenger) pair in the rows, most items first."""
    def key(r):
        return str(r["champion_version"]), str(r["challenger_version"])

    pairs: dict[tuple[str, str], tuple[list, list]] = {}
    for r in counts:
        pairs.setdefault(key(r), ([], []))[0].append(r)
    for r in labelled:
        pairs.setdefault(key(r), ([], []))[1].append(r)
    out = [{"champion_version": a, "challenger_version": b, **pair_summary(c, lab)}
           for (a, b), (c, lab) in pairs.items()]
    out.sort(key=lambda p: (-p["n"], p["champion_version"], p["challenger_version"]))
    return out


def window_section(conn, start: datetime, end: datetime) -> dict | None:
    """The shadow section of the window start < logged_at <= end: None when it has no shadow row."""
    counts, labelled = store.shadow_counts(conn, start, end)
    if not counts:
        return None
    pairs = summaries(counts, labelled)
    return {"window": {"start": start.isoformat(), "end": end.isoformat(),
                       "days": round((end - start) / timedelta(days=1), 4)},
            "n": sum(p["n"] for p in pairs), "pairs": pairs}


def attach_to_report(conn, report_id: int, as_of: datetime, days: int) -> dict | None:
    """Compute the window's shadow section and store it on its drift_reports row (the drift
    step's transaction). Returns it (None: no shadow prediction in the window)."""
    section = window_section(conn, as_of - timedelta(days=days), as_of)
    if section is not None:
        section["window"]["days"] = days
        store.set_drift_report_shadow(conn, report_id, section)
    return section


def evidence(conn, champion_version: str, challenger_version: str) -> dict:
    """Every shadow row of the pair (the challenger's answers to requests the current champion
    served): what promotion weighs. n=0 when there is none."""
    counts, labelled = store.shadow_counts(conn, None, None, champion_version=str(champion_version),
                                           challenger_version=str(challenger_version))
    return {"champion_version": str(champion_version), "challenger_version": str(challenger_version),
            **pair_summary(counts, labelled)}
