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
    assert query(conn, "SELECT count(*) FROM labelling_offers WHERE inference_id = ANY(%s)",
                 ([it.inference_id for it in items],)) == [(len(items),)]
    assert [it.productid for it in labelling_queue(conn, settings, limit=2)] == by_product[:2]
    # a label removes its product from the queue
    store.insert_feedback(conn, true_code=10, productid=102, submitted_by="pytest")
    conn.commit()
    assert 102 not in [it.productid for it in labelling_queue(conn, settings)]


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
