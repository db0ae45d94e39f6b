"""The labelling queue: the recent served predictions most worth a human label, first.

Which predictions: the unlabelled ones of today (UTC) and the `days` whole days before it
(inference_log), one per product
(per productid, or per title + description when there is none), never one already labelled
(feedback names the prediction, its request, its product or a prediction of the same text), never
one whose title has no letter or digit once cleaned (markup only: load rejects such rows). The
database returns a bounded pool (labelling_pool.candidate_pool: the least confident and the most
out-of-vocabulary products of the window, merged from each closed day's stored lists); they are
scored here.

The rank: each item gets three chances that the served answer is wrong, each measured on data
rather than weighted by a tuned constant, combined as independent chances ("noisy-or"):

    uncertainty  u = 1 - confidence            the model's own (calibrated) chance of an error
    confusion    c = 1 - F1 of the predicted class on the model's holdout (its reference,
                     model_references.summary.performance.per_class_f1): how often the model
                     errs around that class
    drift        d = excess share of the text's words the model cannot read: the share of
                     out-of-vocabulary tokens (n_oov / n_tokens, logged at serving against the
                     serving model's vocabulary) above the holdout's OOV rate, rescaled to [0, 1]
                     (max(0, oov - r) / (1 - r)), plus the share of the title's tokens that are
                     among the latest drift report's top drifted tokens whose share rose
    score = 1 - (1 - u)(1 - c)(1 - d)

No weight to choose: every term is already on the same scale (a chance of error), and a signal
that cannot be measured for an item (no reference, no OOV count) adds nothing. The reasons of an
item name each signal that contributed, largest first, so that a person sees why it is offered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import store, textstats
from ..labelling_pool import MAX_DAYS, MAX_LIMIT, candidate_pool, pool_for
from ..access import LABEL, Principal, allows
from ..features import has_letter_or_digit
from ..categories import category_name
from ..config import Settings
from ..errors import Invalid

DEFAULT_LIMIT = 50
DEFAULT_DAYS = 7
SIGNALS = ("uncertainty", "confusion", "drift")


@dataclass
class QueueItem:
    rank: int
    score: float
    inference_id: int
    request_id: str
    logged_at: datetime
    productid: int | None
    designation: str
    description: str
    model_version: str | None
    predicted_code: int
    predicted_category: str
    confidence: float
    uncertainty: float
    confusion: float | None
    drift: float | None
    drifted_tokens: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bounded(value, low: int, high: int, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise Invalid(f"{what} must be a whole number, got {value!r}") from None
    if not low <= n <= high:
        raise Invalid(f"{what} must be between {low} and {high}, got {n}")
    return n


def risen_tokens(report: dict | None) -> set[str]:
    """The top drifted title tokens of a drift report whose share rose (the new vocabulary a
    label teaches); the bucket of every other token is no token."""
    from ..reference import OTHER

    feature = (((report or {}).get("details") or {}).get("data") or {}).get("features", {}).get("tokens") or {}
    labels, ref, cur = feature.get("labels") or [], feature.get("reference") or [], feature.get("current") or []
    share = {lbl: (r, c) for lbl, r, c in zip(labels, ref, cur)}
    out = set()
    for token, _contribution in feature.get("top") or []:
        r, c = share.get(token, (None, None))
        if token != OTHER and r is not None and c > r:
            out.add(token)
    return out


class _References:
    """Per model version: per-class F1 on the holdout and the holdout OOV rate (its reference)."""

    def __init__(self, conn, settings: Settings):
        self.conn, self.settings, self._cache = conn, settings, {}

    def get(self, version: str | None) -> dict:
        if version is None:
            return {}
        if version not in self._cache:
            row = store.get_model_reference(self.conn, self.settings.model_name, str(version))
            summary = (row or {}).get("summary") or {}
            perf = summary.get("performance") or {}
            oov = (summary.get("rates") or {}).get("oov") or {}
            self._cache[version] = {"per_class_f1": perf.get("per_class_f1") or perf.get("served_per_class_f1") or {},
                                    "oov_rate": oov.get("rate")}
        return self._cache[version]


def _score(row: dict, ref: dict, risen: set[str]) -> QueueItem:
    code = int(row["predicted_code"])
    conf = float(row["confidence"])
    u = min(1.0, max(0.0, 1.0 - conf))
    try:
        name = category_name(code)
    except (KeyError, ValueError):
        name = ""
    reasons: list[tuple[float, str]] = [(u, f"confidence {conf:.2f}: the model gives its answer a "
                                            f"{u:.0%} chance of being wrong")]
    f1 = (ref.get("per_class_f1") or {}).get(str(code))
    c = None
    if f1 is not None:
        c = min(1.0, max(0.0, 1.0 - float(f1)))
        if c > 0:
            reasons.append((c, f"class {code} {name} is one the model confuses: F1 {float(f1):.2f} on its holdout"))
    d = None
    n_tok, n_oov = row.get("n_tokens"), row.get("n_oov")
    title_tokens = textstats.tokens(row.get("designation") or "")
    drifted = sorted({t for t in title_tokens if t in risen})
    if n_tok and n_oov is not None:
        r = float(ref.get("oov_rate") or 0.0)
        share = n_oov / n_tok
        d_oov = max(0.0, share - r) / (1.0 - r) if r < 1.0 else 0.0
        d_tok = len([t for t in title_tokens if t in risen]) / n_tok
        d = min(1.0, d_oov + d_tok)
        if d_oov > 0:
            reasons.append((d_oov, f"{n_oov} of {n_tok} words unknown to model v{row.get('model_version')} "
                                   f"(its holdout: {r:.0%})"))
        if d_tok > 0:
            reasons.append((d_tok, "drifted tokens of the latest drift report: " + ", ".join(drifted)))
    elif drifted:
        d = min(1.0, len(drifted) / max(1, len(title_tokens)))
        reasons.append((d, "drifted tokens of the latest drift report: " + ", ".join(drifted)))
    score = 1.0 - (1.0 - u) * (1.0 - (c or 0.0)) * (1.0 - (d or 0.0))
    return QueueItem(
        rank=0, score=round(score, 6), inference_id=int(row["inference_id"]), request_id=row["request_id"],
        logged_at=row["logged_at"], productid=row["productid"], designation=row["designation"],
        description=row["description"] or "", model_version=row["model_version"], predicted_code=code,
        predicted_category=name, confidence=conf, uncertainty=round(u, 6),
        confusion=None if c is None else round(c, 6), drift=None if d is None else round(d, 6),
        drifted_tokens=drifted, reasons=[text for _, text in sorted(reasons, key=lambda kv: -kv[0])],
    )


def labelling_queue(conn, settings: Settings, *, limit: int = DEFAULT_LIMIT, days: int = DEFAULT_DAYS,
                    as_of: datetime | None = None, offered_to: Principal | None = None) -> list[QueueItem]:
    """The `limit` unlabelled predictions most worth a label, best first (see the module docstring
    for the score), of `as_of`'s UTC day (now) up to `as_of` and the `days` whole days before it
    (whole days: each closed day's candidates are stored once, labelling_pool.py). Invalid when
    limit is not in 1..MAX_LIMIT or days not in 1..MAX_DAYS.

    offered_to: the labeller they are offered to (the labelling page, GET /api/labelling-queue);
    the items are then recorded as offered (labelling_offers), and performance drift leaves out
    the labels given on them. A read by anyone who may not label (a viewer, the CLI's listing)
    records nothing: reading the queue must not change what drift counts."""
    limit = _bounded(limit, 1, MAX_LIMIT, "limit")
    days = _bounded(days, 1, MAX_DAYS, "days")
    end = as_of or datetime.now(timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    rows = candidate_pool(conn, end.date() - timedelta(days=days), end, pool_for(limit))["rows"]
    # a title with no letter or digit once cleaned (markup only) is no product to label: load
    # rejects it and training leaves such feedback out (the pool is 10x the limit: room enough)
    rows = [r for r in rows if has_letter_or_digit(r["designation"])]
    risen = risen_tokens(store.latest_ok_drift_report(conn))
    refs = _References(conn, settings)
    items = [_score(r, refs.get(r["model_version"]), risen) for r in rows]
    items.sort(key=lambda it: (-it.score, it.confidence, -it.inference_id))
    items = items[:limit]
    for i, it in enumerate(items, 1):
        it.rank = i
    if offered_to is not None and allows(offered_to.role, LABEL):
        # remembered (committed): a label given on an offered prediction is not a sample of the
        # traffic, and performance drift leaves it out (steps/drift.py)
        store.record_labelling_offers(conn, [it.inference_id for it in items], offered_to.name)
        conn.commit()
    return items
