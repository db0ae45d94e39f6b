"""The labelling queue (ops/labelling.py) on a real database: a seeded inference_log, feedback
and a model reference; no model is trained (the queue reads what serving logged)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import query
from mlops_cli import store
from mlops_cli.errors import Invalid
from mlops_cli.ops.labelling import labelling_queue, risen_tokens

NOW = datetime.now(timezone.utc)


def _row(i: int, *, productid: int | None, conf: float, code: int = 10, title: str = "livre de poche",
         n_tokens: int = 10, n_oov: int = 0, age_hours: float = 1.0, version: str = "1") -> dict:
    return {"logged_at": NOW - timedelta(hours=age_hours), "request_id": f"req-{i}", "source": "api",
            "model_version": version, "productid": productid, "designation": title, "description": "",
            "designation_len": len(title), "description_len": 0, "n_tokens": n_tokens, "n_oov": n_oov,
            "script": "latin", "lang": "fr", "predicted_code": code, "confidence": conf, "top_k": None,
            "latency_ms": 1.0}


def _ids(conn) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT request_id, id FROM inference_log")
        return dict(cur.fetchall())


@pytest.fixture
def seeded_log(conn, settings):
    for day in range(-1, 2):  # the partitions of the window
        store.ensure_inference_partition(conn, (NOW + timedelta(days=day)).date())
    store.ensure_inference_partition(conn, (NOW - timedelta(days=10)).date())
    rows = [
        _row(1, productid=101, conf=0.90),
        _row(2, productid=102, conf=0.30),                   # least confident
        _row(3, productid=102, conf=0.55, age_hours=2),      # same product again: one entry
        _row(4, productid=103, conf=0.40),                   # labelled below: never offered
        _row(5, productid=None, conf=0.60, title="sans identifiant"),
        _row(6, productid=None, conf=0.70, title="sans identifiant"),  # same text: one entry
        _row(7, productid=104, conf=0.95, code=2280),        # a class the model confuses
        _row(8, productid=105, conf=0.95, n_oov=6, title="zorglub vintage"),  # new vocabulary
        _row(9, productid=106, conf=0.10, age_hours=24 * 10),  # outside the 7-day window
        _row(10, productid=107, conf=0.05, title="<p>&nbsp;</p>"),  # markup only: nothing to label
    ]
    store.insert_inference_rows(conn, rows)
    ids = _ids(conn)
    store.insert_feedback(conn, true_code=10, inference_id=ids["req-4"], productid=103, submitted_by="pytest")
    summary = {"performance": {"per_class_f1": {"10": 0.95, "2280": 0.40}},
               "rates": {"oov": {"rate": 0.05}}}
    store.insert_model_reference(conn, model_name=settings.model_name, model_version="1", mlflow_run_id=None,
                                 summary=summary)
    conn.commit()
    return ids


def test_queue_ranks_by_chance_of_error_one_entry_per_product_and_skips_labelled(conn, settings, seeded_log):
    items = labelling_queue(conn, settings, limit=50, days=7)
    by_product = [it.productid for it in items]
    assert 103 not in by_product  # already labelled
    assert 106 not in by_product  # older than the window
    assert 107 not in by_product  # a title with no letter or digit once cleaned (load rejects it)
    assert by_product.count(102) == 1 and by_product.count(None) == 1  # one per product / per text
    assert [it.rank for it in items] == list(range(1, len(items) + 1))
    scores = [it.score for it in items]
    assert scores == sorted(scores, reverse=True)
    assert items[0].productid == 102 and items[0].confidence == pytest.approx(0.30)  # its least confident answer
    assert any("confidence 0.30" in r for r in items[0].reasons)
    # confused class and new vocabulary lift a confident answer above a merely confident one
    rank = {it.productid: it.rank for it in items}
    assert rank[104] < rank[101] and rank[105] < rank[101]
    confused = next(it for it in items if it.productid == 104)
    assert confused.confusion == pytest.approx(0.60) and "F1 0.40" in confused.reasons[0]
    drifted = next(it for it in items if it.productid == 105)
    assert drifted.drift == pytest.approx((0.6 - 0.05) / 0.95)
    assert "6 of 10 words unknown to model v1" in drifted.reasons[0]
    assert drifted.score == pytest.approx(1 - 0.95 * (1 - (0.6 - 0.05) / 0.95) * 0.95, abs=1e-6)

    # what is offered to a labeller is remembered (performance drift leaves labels given on it
    # out); a read by anyone else (a viewer, the CLI's listing) records nothing
    from mlops_cli.access import Principal

    assert query(conn, "SELECT count(*) FROM labelling_offers") == [(0,)]
    labelling_queue(conn, settings, limit=50, days=7, offered_to=Principal("vera", "viewer", "password"))
    assert query(conn, "SELECT count(*) FROM labelling_offers") == [(0,)]
    offered = labelling_queue(conn, settings, limit=50, days=7, offered_to=Principal("lena", "labeller", "password"))
    assert offered == items
    assert query(conn, "SELECT offered_to, count(*) FROM labelling_offers WHERE inference_id = ANY(%s) GROUP BY 1",
                 ([it.inference_id for it in items],)) == [("lena", len(items))]  # who they were offered to
    assert [it.productid for it in labelling_queue(conn, settings, limit=2)] == by_product[:2]
    # a label removes its product from the queue
    store.insert_feedback(conn, true_code=10, productid=102, submitted_by="pytest")
    conn.commit()
    assert 102 not in [it.productid for it in labelling_queue(conn, settings)]


def test_a_label_hides_the_prediction_it_is_tied_to_not_others_of_a_reused_request_id(conn, settings, seeded_log):
    """Every label stores its prediction's request_id; a client that reused its X-Request-ID for
    two products must not have one product's label hide the other. A label given by request_id
    before its prediction is logged is tied to it when the serving writer logs it."""
    from mlops_cli.ops.feedback import record

    store.insert_inference_rows(conn, [_row(20, productid=201, conf=0.21) | {"request_id": "dup"},
                                       _row(21, productid=202, conf=0.22) | {"request_id": "dup"},
                                       _row(22, productid=203, conf=0.23) | {"request_id": "dup"}])
    conn.commit()
    queued = lambda: [it.productid for it in labelling_queue(conn, settings, limit=50, days=7)]  # noqa: E731
    assert {201, 202, 203} <= set(queued())
    by_request = record(settings, prdtypecode=10, request_id="dup", productid=201, submitted_by="pytest")
    assert by_request.resolved and by_request.productid == 201
    [offered] = [it for it in labelling_queue(conn, settings, limit=50, days=7) if it.productid == 202]
    by_id = record(settings, prdtypecode=10, inference_id=offered.inference_id, submitted_by="pytest")
    assert by_id.request_id == "dup"  # stored with its prediction's request_id, as every label
    left = queued()
    assert 201 not in left and 202 not in left and 203 in left  # each label hides its own product only
    # a label given before its prediction is logged: pending, tied when the writer logs the row
    pending = record(settings, prdtypecode=10, request_id="later", submitted_by="pytest")
    assert not pending.resolved
    store.insert_inference_rows(conn, [_row(23, productid=None, conf=0.01, title="arrivé plus tard")
                                       | {"request_id": "later"}])
    assert store.resolve_pending_feedback(conn, ["later"]) == 1  # the serving writer's call, same transaction
    conn.commit()
    assert "arrivé plus tard" not in [it.designation for it in labelling_queue(conn, settings, limit=50, days=7)]


def test_queue_refuses_out_of_range_bounds(conn, settings):
    for kw in ({"limit": 0}, {"limit": 501}, {"days": 0}, {"days": 31}, {"limit": "x"}):
        with pytest.raises(Invalid):
            labelling_queue(conn, settings, **kw)


def test_risen_tokens_are_the_top_drifted_tokens_whose_share_rose():
    report = {"details": {"data": {"features": {"tokens": {
        "labels": ["livre", "zorglub", "__other__"], "reference": [0.2, 0.01, 0.79],
        "current": [0.1, 0.2, 0.7], "top": [["zorglub", 0.5], ["livre", 0.1], ["__other__", 0.05]]}}}}}
    assert risen_tokens(report) == {"zorglub"}
    assert risen_tokens(None) == set()


def test_label_queue_command(cli, conn, settings, seeded_log):
    import json

    r = cli("label-queue", "--limit", "3")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:3] == ["rank", "score", "inference"] and len(lines) == 2 + 3
    assert lines[2].split()[0] == "1" and "confidence 0.30" in lines[2]
    r = cli("label-queue", "--json", "--limit", "50")
    assert r.exit_code == 0, r.output
    items = json.loads(r.output)
    assert [i["inference_id"] for i in items] == [it.inference_id for it in labelling_queue(conn, settings)]
    r = cli("label-queue", "--days", "31")
    assert r.exit_code != 0 and "days must be between 1 and 30" in r.output


# --- the pool at any traffic: each closed day's lists (labelling_pool.py) --------------------------
def _day_at(day, k: int) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) + timedelta(minutes=7 * k + 1)


def _random_log(conn, rng, days, n_rows: int) -> None:
    """Products seen on several days, texts without a productid repeated, confidences and
    out-of-vocabulary shares with ties (two decimals), so the orders' tie-breaks matter."""
    rows = []
    for i in range(n_rows):
        day = rng.choice(days)
        pid = None if rng.random() < 0.25 else rng.randrange(1, 60)
        n_tok = rng.choice([0, 4, 5, 10])
        rows.append(_row(10_000 + i, productid=pid, conf=round(rng.uniform(0.05, 0.99), 2),
                         title=f"objet {rng.randrange(8)}" if pid is None else f"produit {pid}",
                         n_tokens=n_tok, n_oov=rng.randrange(n_tok + 1) if n_tok else 0)
                    | {"logged_at": _day_at(day, rng.randrange(200))})
    store.insert_inference_rows(conn, rows)
    conn.commit()


def _store_lists(conn, days, pool: int) -> None:
    from mlops_cli.labelling_pool import day_lists

    for day in days:
        store.replace_labelling_day(conn, day, n_rows=store.day_row_count(conn, day),
                                    max_id=store.day_max_ids(conn, [day])[day], pool=pool,
                                    rows=day_lists(conn, day, pool))
    conn.commit()


def _pools_agree(conn, first, end, pool: int) -> dict:
    from mlops_cli.labelling_pool import candidate_pool

    merged = candidate_pool(conn, first, end, pool)
    scanned = candidate_pool(conn, first, end, pool, use_lists=False)
    assert [r["inference_id"] for r in merged["rows"]] == [r["inference_id"] for r in scanned["rows"]], (pool, merged)
    assert merged["rows"] == scanned["rows"]
    return merged


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_days_lists_give_the_window_scans_pool_whatever_labels_come_later(conn, seed):
    """The merge of the days' stored lists and a scan of the rest is the pool of one scan of the
    whole window, before and after labels of every kind arrive, with a late row, for pools shorter
    and longer than the stored lists."""
    import random

    rng = random.Random(seed)
    today = NOW.date()
    days = [today - timedelta(days=k) for k in range(0, 9)]
    for day in days + [today + timedelta(days=1)]:
        store.ensure_inference_partition(conn, day)
    _random_log(conn, rng, days, 900)
    # a product twice yesterday, least confident of all: only its first prediction is stored
    store.insert_inference_rows(conn, [_row(k, productid=777, conf=c) | {"logged_at": _day_at(days[1], k)}
                                       for k, c in ((1, 0.001), (2, 0.002))])
    conn.commit()
    closed = days[1:]
    _store_lists(conn, closed, pool=8)
    windows = [(today - timedelta(days=7), NOW), (today - timedelta(days=4), NOW - timedelta(days=1, hours=3))]
    for start, end in windows:
        for pool in (3, 8, 20):
            out = _pools_agree(conn, start, end, pool)
            if pool <= 8:
                assert out["days_listed"] >= 1 and out["days_scanned"] == []
            else:  # a pool longer than the lists: the days that had more candidates are scanned
                assert out["days_scanned"] != []
    # labels after the lists: of a product, of a prediction (its product with it), of a text with
    # no productid
    with conn.cursor() as cur:
        cur.execute("""SELECT c.inference_id, c.productid, c.request_id FROM labelling_candidates c
                       WHERE c.list = 'c' ORDER BY c.day DESC, c.rank""")
        entries = cur.fetchall()
    with_pid = [e for e in entries if e[1] not in (None, 777)]
    without = [e for e in entries if e[1] is None]
    store.insert_feedback(conn, true_code=10, productid=with_pid[0][1], submitted_by="pytest")
    store.insert_feedback(conn, true_code=10, inference_id=with_pid[1][0], productid=with_pid[1][1], submitted_by="pytest")
    store.insert_feedback(conn, true_code=10, inference_id=without[0][0], submitted_by="pytest")
    conn.commit()
    for start, end in windows:
        for pool in (3, 8):
            _pools_agree(conn, start, end, pool)
    # three of a list of 8 labelled: a pool of 3 still reads every day from its lists
    assert _pools_agree(conn, *windows[0], 3)["days_scanned"] == []
    # a label tied to a prediction alone, not naming its product, labels that prediction: the
    # product's next prediction, not stored, takes its place, so that day is scanned
    [(first_of_777,)] = query(conn, "SELECT id FROM inference_log WHERE request_id = 'req-1'")
    store.insert_feedback(conn, true_code=10, inference_id=first_of_777, submitted_by="pytest")
    conn.commit()
    for start, end in windows:
        for pool in (3, 8, 20):
            _pools_agree(conn, start, end, pool)
    out = _pools_agree(conn, *windows[0], 3)
    assert out["days_scanned"] == [days[1]]
    assert [(r["productid"], r["confidence"]) for r in out["rows"]][0] == (777, 0.002)
    # a late row of a listed day: that day is scanned until its lists are stored again
    late_day = closed[2]
    store.insert_inference_rows(conn, [_row(99_999, productid=500, conf=0.01) | {"logged_at": _day_at(late_day, 3)}])
    conn.commit()
    assert store.labelling_days_state(conn, [late_day])[late_day]["late"]
    out = _pools_agree(conn, today - timedelta(days=7), NOW, 3)
    assert 500 in [r["productid"] for r in out["rows"]]


def test_the_rollup_step_stores_the_days_lists_and_the_queue_reads_them(conn, settings):
    from mlops_cli.labelling_pool import DAY_POOL, candidate_pool
    from mlops_cli.runs import Trigger
    from mlops_cli.steps.retention import rollup

    yesterday = NOW.date() - timedelta(days=1)
    for day in range(-2, 2):
        store.ensure_inference_partition(conn, NOW.date() + timedelta(days=day))
    store.insert_inference_rows(conn, [_row(50, productid=150, conf=0.15) | {"logged_at": _day_at(yesterday, 1)},
                                       _row(51, productid=151, conf=0.25, n_oov=3) | {"logged_at": _day_at(yesterday, 2)},
                                       _row(52, productid=152, conf=0.35)])
    conn.commit()
    r = rollup(conn, settings, Trigger(actor="pytest"), as_of=NOW)
    assert r.status == "skipped", r.message  # no serving model: no drift counts, the lists all the same
    assert "labelling lists of 30 day(s) stored, 0 fresh" in r.message
    state = store.labelling_days_state(conn, [yesterday])[yesterday]
    assert (state["pool"], state["n_c"], state["n_o"], state["late"]) == (DAY_POOL, 2, 1, False)
    first = NOW.date() - timedelta(days=7)
    pool = candidate_pool(conn, first, NOW, 200)
    assert (pool["days_listed"], pool["days_scanned"], pool["ranges_scanned"]) == (7, [], 1)  # today's part
    assert pool["rows"] == candidate_pool(conn, first, NOW, 200, use_lists=False)["rows"]
    assert [it.productid for it in labelling_queue(conn, settings, limit=50, days=7)] == [150, 151, 152]
    again = rollup(conn, settings, Trigger(actor="pytest"), as_of=NOW)
    assert "labelling lists of 0 day(s) stored, 30 fresh" in again.message
    # a label tied to product 150's prediction alone (not naming its product): the queue scans
    # yesterday until the next rollup stores its lists again, with the label applied
    [(of_150,)] = query(conn, "SELECT id FROM inference_log WHERE request_id = 'req-50'")
    store.insert_feedback(conn, true_code=10, inference_id=of_150, submitted_by="pytest")
    conn.commit()
    assert candidate_pool(conn, first, NOW, 200)["days_scanned"] == [yesterday]
    worn = rollup(conn, settings, Trigger(actor="pytest"), as_of=NOW)
    assert "labelling lists of 1 day(s) stored (1 worn by labels), 29 fresh" in worn.message
    assert worn.outputs["labelling"]["worn"] == [yesterday.isoformat()]
    pool = candidate_pool(conn, first, NOW, 200)
    assert pool["days_scanned"] == [] and [r["productid"] for r in pool["rows"]] == [151, 152]
    assert "0 day(s) stored, 30 fresh" in rollup(conn, settings, Trigger(actor="pytest"), as_of=NOW).message
    store.delete_rollups(conn, [yesterday])  # the day's rows changed (drained, dropped): forgotten
    conn.commit()
    assert store.labelling_days_state(conn, [yesterday]) == {}


@pytest.mark.parametrize("inside", [False, True], ids=["own snapshot", "caller's transaction"])
@pytest.mark.parametrize("change", ["stored again", "forgotten"])
def test_a_days_lists_changed_between_the_queues_reads_are_not_mixed(conn, settings, monkeypatch, change, inside):
    """The queue reads a day's state, then its entries: a rollup storing the day's lists again (or
    a drain forgetting them) in another session in between is not seen by the queue's snapshot;
    inside the caller's transaction (read committed) the queue sees it and scans that day, not
    mixing two versions."""
    import random

    from mlops_cli import db

    other = db.connect(settings)
    today = NOW.date()
    days = [today - timedelta(days=k) for k in range(0, 4)]
    for day in days + [today + timedelta(days=1)]:
        store.ensure_inference_partition(conn, day)
    _random_log(conn, random.Random(5), days, 300)
    _store_lists(conn, days[1:], pool=8)
    real = store.labelling_days_state

    def state_then_change(c, ds):
        out = real(c, ds)
        if change == "forgotten":
            store.delete_rollups(other, [days[1]])
        else:
            _store_lists(other, [days[1]], pool=8)
        other.commit()
        return out

    monkeypatch.setattr(store, "labelling_days_state", state_then_change)
    if inside:
        with conn.cursor() as cur:  # the caller's transaction is open
            cur.execute("SELECT 1")
    out = _pools_agree(conn, days[-1], NOW, 3)
    other.close()
    assert (out["days_scanned"], out["days_listed"]) == (([days[1]], 2) if inside else ([], 3))


def test_a_list_worn_by_labels_and_a_nan_confidence_and_a_local_time(conn):
    """labelling_days_worn: a day whose list has `worn_at` entries labelled since it was stored;
    a NaN confidence sorts last in both orders (PostgreSQL's); an end given in another time zone
    is the same instant: its UTC day."""
    import random

    from mlops_cli.labelling_pool import candidate_pool

    today = NOW.date()
    days = [today - timedelta(days=k) for k in range(0, 4)]
    for day in days + [today + timedelta(days=1)]:
        store.ensure_inference_partition(conn, day)
    _random_log(conn, random.Random(9), days, 300)
    store.insert_inference_rows(conn, [_row(k, productid=900 + k, conf=float("nan")) | {"logged_at": _day_at(d, k)}
                                       for k, d in ((1, days[2]), (2, days[2]), (3, days[0]))])
    # products 901 and 904 at NaN on one day, at 0.5 on another: they stand at 0.5
    store.insert_inference_rows(conn, [_row(5, productid=901, conf=0.5) | {"logged_at": _day_at(days[1], 5)},
                                       _row(6, productid=904, conf=0.5) | {"logged_at": _day_at(days[2], 6)},
                                       _row(7, productid=904, conf=float("nan")) | {"logged_at": _day_at(days[1], 7)}])
    late_evening = datetime.combine(days[1], datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=23, minutes=30)
    store.insert_inference_rows(conn, [_row(4, productid=950, conf=0.001) | {"logged_at": late_evening}])
    conn.commit()
    _store_lists(conn, days[1:], pool=200)  # whole lists: every product of a day, NaN ones last
    for pool in (3, 8, 200):
        merged = candidate_pool(conn, days[-1], NOW, pool)
        scanned = candidate_pool(conn, days[-1], NOW, pool, use_lists=False)
        assert [r["inference_id"] for r in merged["rows"]] == [r["inference_id"] for r in scanned["rows"]]
        assert merged["days_scanned"] == []
    assert [(r["productid"], r["confidence"] == 0.5) for r in merged["rows"] if (r["productid"] or 0) > 900] \
        == [(950, False), (901, True), (904, True), (902, False), (903, False)]
    # 23:00 UTC yesterday is 01:00 today in Paris: yesterday is not a closed day, 23:30 is after it
    end = datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc) - timedelta(hours=1)
    local = candidate_pool(conn, days[-1], end.astimezone(timezone(timedelta(hours=2))), 8)
    assert local["rows"] == candidate_pool(conn, days[-1], end, 8, use_lists=False)["rows"]
    assert 950 not in [r["productid"] for r in local["rows"]]
    assert 950 in [r["productid"] for r in candidate_pool(conn, days[-1], NOW, 8)["rows"]]
    # two entries of yesterday's least-confident list labelled by their product
    with conn.cursor() as cur:
        cur.execute("SELECT productid FROM labelling_candidates WHERE day = %s AND list = 'c' "
                    "AND productid IS NOT NULL ORDER BY rank LIMIT 2", (days[1],))
        pids = [r[0] for r in cur.fetchall()]
    assert store.labelling_days_worn(conn, days[1:], 1) == []
    for pid in pids:
        store.insert_feedback(conn, true_code=10, productid=pid, submitted_by="pytest")
    conn.commit()
    assert store.labelling_days_worn(conn, days[1:], 2) == [days[1]]
    assert store.labelling_days_worn(conn, days[1:], 3) == []  # labelled by product: no gap left
