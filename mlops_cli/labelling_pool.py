"""The labelling queue's pool at any traffic: each closed day's candidates computed once.

The pool (ops/labelling.py scores it) is the union of two lists over a window, one prediction per
product: the `pool` least confident products and the `pool` most out-of-vocabulary ones
(store.CANDIDATE_ORDERS). Read from the log, it costs a scan of every prediction of the window;
so the `rollup` step stores each closed day's two lists, `DAY_POOL` long (migration 015), and the
queue merges the days' lists with a scan of what has none (the window's partial first and last
days, a day not rolled up or with a late row).

Why the merge is exact: each list ranks products by one total order of their predictions, the
product's representative being its first prediction in that order. A product P in the window's
top N has its representative on some day d, where it is also P's first; every product ahead of
P on day d is ahead of it in the window too; so at most N - 1 are, and P is in day d's top N.

Labels arrive after a day's lists were stored; they only remove candidates. So the queue reads
each day's list until N entries survive the labels known now, and scans the day's rows instead
when it cannot tell: the list ran out while the day had more (it was full), or a prediction left
the list while its product did not (a label tied to that prediction alone, its product not
named: the product's next prediction, not stored, would take its place). Lists are twice the longest pool
long, and the `rollup` step stores a day's again once labels used half that room up or left one
of those gaps (store.labelling_days_worn), so neither fallback lasts past a day.

All the reads are one snapshot (REPEATABLE READ) when the caller has no transaction open: a label
or a row committed between them would otherwise be seen by some reads and not by others.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, time as dtime, timedelta, timezone

from . import store

# Queue limits (ops/labelling.py): the longest window, the most items, the pool read for them
MAX_DAYS = 30
MAX_LIMIT = 500
POOL_PER_ITEM = 10
MIN_POOL = 200


def pool_for(limit: int) -> int:
    """Candidates read for a queue of `limit` items: room for the re-ranking, bounded."""
    return max(MIN_POOL, POOL_PER_ITEM * int(limit))


# a stored list serves every request whole, with as much room again for the labels it receives
DAY_POOL = 2 * pool_for(MAX_LIMIT)
WORN_AT = (DAY_POOL - pool_for(MAX_LIMIT)) // 2  # labelled entries of a list: stored again

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _conf(x: float) -> tuple:
    """PostgreSQL's order of a float: NaN after every number (Python's comparisons of NaN are all
    false, which would make the sort disagree with the SQL's top N)."""
    return (1, 0.0) if math.isnan(x) else (0, x)


# store.CANDIDATE_ORDERS, in Python (the SQL's order on the same values; oov is never NaN: a
# share of a token count above 0)
_KEYS = {
    "c": lambda r: (_conf(r["confidence"]), -_micros(r["logged_at"]), r["inference_id"]),
    "o": lambda r: (-r["oov"], _conf(r["confidence"]), -_micros(r["logged_at"]), r["inference_id"]),
}


def ranked(rows: list[dict], pool: int) -> dict[str, list[dict]]:
    """{list: its first `pool` products, in order}: each product once, at its first prediction."""
    out = {}
    for name, key in _KEYS.items():
        best: dict = {}
        for r in rows:
            if r["list"] != name:
                continue
            k = r["product_key"]
            if k not in best or key(r) < key(best[k]):
                best[k] = r
        out[name] = sorted(best.values(), key=key)[:pool]
    return out


def _midnight(d: date) -> datetime:
    return datetime.combine(d, dtime.min, tzinfo=timezone.utc)


def day_lists(conn, day: date, pool: int = DAY_POOL) -> list[dict]:
    """The candidate lists of one UTC day, ranked (each row with its `rank`), as the `rollup`
    step stores them. Labels known now are applied; later ones are applied when read."""
    lo, hi = _midnight(day), _midnight(day + timedelta(days=1))
    # the texts labelled that day only: the window of any queue that reads this day holds it whole
    rows = store.labelling_candidate_lists(conn, lo, hi, pool, lo_incl=True, hi_incl=False,
                                           labels_lo=lo, labels_hi=hi - timedelta(microseconds=1))
    out = []
    for name, kept in ranked(rows, pool).items():
        out += [dict(r, rank=k) for k, r in enumerate(kept, 1)]
    return out


def _raw_ranges(first: date, end: datetime, listed: set) -> list[tuple]:
    """(lo, hi, lo_incl, hi_incl) covering [first's midnight, end] outside the days in `listed`."""
    out, lo = [], _midnight(first)
    for k in range((end.date() - first).days):
        d = first + timedelta(days=k)
        if d in listed:
            if lo < _midnight(d):
                out.append((lo, _midnight(d), True, False))
            lo = _midnight(d + timedelta(days=1))
    if lo <= end:
        out.append((lo, end, True, True))
    return out


def candidate_pool(conn, first: date, end: datetime, pool: int, *, use_lists: bool = True) -> dict:
    """The pool of the window from `first`'s midnight (UTC) to `end`, both included: {rows (the
    predictions, with their texts, least confident first), days_listed, days_scanned,
    ranges_scanned}. use_lists=False scans the whole window (what the lists are checked against).

    With no transaction open on `conn`, every read is of one snapshot, and the (read-only)
    transaction is ended before returning; inside the caller's transaction the reads see each
    other's commits (the computed_at checks still catch lists stored again between them)."""
    from .db import read_snapshot

    with read_snapshot(conn):
        return _pool(conn, first, end.astimezone(timezone.utc), pool, use_lists)  # the days are UTC days


def _pool(conn, first: date, end: datetime, pool: int, use_lists: bool) -> dict:
    listed: dict = {}
    start = _midnight(first)
    if use_lists:
        days = [first + timedelta(days=k) for k in range((end.date() - first).days)]  # closed before end's day
        listed = {d: st for d, st in store.labelling_days_state(conn, days).items() if not st["late"]}
    survivors, scanned = defaultdict(list), set()
    wanted = {(d, name): (0, pool) for d in listed for name in _KEYS}
    while wanted:
        got = defaultdict(list)
        for e in store.stored_labelling_candidates(conn, wanted, start, end):
            got[(e["day"], e["list"])].append(e)
        more = {}
        for (d, name), (lo, hi) in wanted.items():
            if d in scanned:
                continue
            stored, entries = listed[d]["n_" + name], got[(d, name)]
            if len(entries) < min(hi, stored) - lo or any(e["computed_at"] != listed[d]["computed_at"]
                                                          for e in entries):
                scanned.add(d)  # stored again or forgotten since its state was read
                continue
            for e in entries:
                if e["product_labelled"]:
                    continue
                if e["row_labelled"]:  # its product's next prediction is not stored
                    scanned.add(d)
                    break
                survivors[(d, name)].append(e)
            if d in scanned:
                continue
            short = pool - len(survivors[(d, name)])
            if short > 0 and hi < stored:
                more[(d, name)] = (hi, hi + short)
            elif short > 0 and stored >= listed[d]["pool"]:
                scanned.add(d)  # the list ran out, and the day had more than it holds
        wanted = {k: v for k, v in more.items() if k[0] not in scanned}
    rows = [e for (d, _name), es in survivors.items() if d not in scanned for e in es]
    ranges = _raw_ranges(first, end, set(listed) - scanned)
    for lo, hi, lo_incl, hi_incl in ranges:
        rows += store.labelling_candidate_lists(conn, lo, hi, pool, lo_incl=lo_incl, hi_incl=hi_incl,
                                                labels_lo=start, labels_hi=end)
    lists = ranked(rows, pool)
    chosen: dict = {}
    for name in _KEYS:  # a product in both lists: its least confident prediction
        for r in lists[name]:
            chosen.setdefault(r["product_key"], r)
    picked = store.inference_rows_for_labelling(conn, [(r["inference_id"], r["logged_at"]) for r in chosen.values()])
    return {"rows": picked, "days_listed": len(set(listed) - scanned), "days_scanned": sorted(scanned),
            "ranges_scanned": len(ranges)}
