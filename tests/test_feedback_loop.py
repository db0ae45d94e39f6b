"""Moderators' labels become training data, and the gates that retrain on them (issue 16), on
the real database and MLflow store: overrides audited, one row per product (the latest label
wins), the holdout hash on feedback rows, a later catalogue load, the load and feedback gates,
the auto retrain on drift, the refusals."""

from __future__ import annotations

import json
import math
from datetime import date

import pytest

from conftest import query
from mlops_cli import dataset, store
from mlops_cli.categories import PRDTYPECODES
from mlops_cli.errors import Conflict, Invalid, NotFound
from mlops_cli.ops.feedback import labels_for_next_retrain, record
from mlops_cli.runs import Trigger
from mlops_cli.sources import read_source, seeded_order
from mlops_cli.steps.load import load
from mlops_cli.steps.train import train

FAST_PARAMS = {"word_max_features": 5000, "char_max_features": 5000}
TRAFFIC = [9_100_000_000 + k for k in range(20)]  # products seen only in traffic


def _load(conn, settings, catalogue, as_of=date(2026, 3, 2), fraction=0.3, force=False):
    x, y = catalogue
    return load(conn, settings.replace(initial_load_fraction=fraction), Trigger(), x_path=str(x), y_path=str(y),
                as_of=as_of, force=force)


def _write(conn, sql, params=None):
    """Run a statement that returns rows, and commit (query() rolls back)."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    conn.commit()
    return rows


def _serve(conn, productid, designation, description="", predicted=10) -> int:
    """A logged prediction (what POST /predict writes), committed."""
    iid = _write(conn, """INSERT INTO inference_log (request_id, productid, designation, description, designation_len,
                                                    description_len, predicted_code, confidence)
                         VALUES (%s, %s, %s, %s, %s, %s, %s, 0.4) RETURNING id""",
                (f"req-{productid}-{designation[:10]}", productid, designation, description, len(designation),
                 len(description), predicted))[0][0]
    return iid


def _run(conn) -> int:
    """A pipeline_runs row to apply the labels under (the train step gives its own)."""
    run_id = store.insert_run(conn, pipeline="manual", step="train", status="running", triggered_by="cli",
                              actor="pytest")
    conn.commit()
    return run_id


def _other(code: int, *not_these: int) -> int:
    return next(c for c in PRDTYPECODES if c != code and c not in not_these)


def test_labels_that_cannot_train_are_refused_with_clear_errors(small_catalogue, settings, conn):
    _load(conn, settings, small_catalogue, fraction=0.05)
    p1 = int(query(conn, "SELECT productid FROM products ORDER BY productid LIMIT 1")[0][0])
    with pytest.raises(Invalid) as e:
        record(settings, prdtypecode=11, productid=p1)
    assert str(e.value) == f"unknown prdtypecode 11: expected one of {', '.join(map(str, PRDTYPECODES))}"
    with pytest.raises(NotFound) as e:
        record(settings, prdtypecode=10, productid=987654321)
    assert str(e.value) == ("Product 987654321 was never served and is not in the catalogue: nothing to label "
                            "(name a logged prediction by inference_id or request_id)")
    iid = _serve(conn, 5551, "Lampe de chevet")
    with pytest.raises(Conflict) as e:
        record(settings, prdtypecode=10, inference_id=iid, productid=5552)
    assert str(e.value) == "productid 5552 contradicts the prediction named, which is about product 5551"
    assert query(conn, "SELECT count(*) FROM feedback") == [(0,)]
    # accepted: a catalogue product never served, a served product by productid alone, a request
    # id another API worker may still hold (tied later), a prediction by inference_id
    record(settings, prdtypecode=10, productid=p1)
    record(settings, prdtypecode=10, productid=5551)
    assert record(settings, prdtypecode=10, request_id="later-9").resolved is False
    assert record(settings, prdtypecode=40, inference_id=iid, productid=5551).productid == 5551
    assert query(conn, "SELECT count(*) FROM feedback") == [(4,)]


def test_labels_become_rows_latest_wins_overrides_audited_holdout_by_hash(small_catalogue, settings, conn):
    _load(conn, settings, small_catalogue)
    p1, c1 = (int(v) for v in query(conn, "SELECT productid, prdtypecode FROM products ORDER BY productid LIMIT 1")[0])
    c3 = _other(c1)
    alice = record(settings, prdtypecode=_other(c1, c3), productid=p1, submitted_by="alice")
    bob = record(settings, prdtypecode=c3, productid=p1, submitted_by="bob")  # later: wins over alice's
    labels = {}
    for k, pid in enumerate(TRAFFIC):
        iid = _serve(conn, pid, f"gadget zorblax modèle {k}", f"nouveauté {k}")
        labels[pid] = PRDTYPECODES[k % len(PRDTYPECODES)]
        record(settings, prdtypecode=labels[pid], inference_id=iid, submitted_by="carol")
    record(settings, prdtypecode=labels[TRAFFIC[0]], productid=TRAFFIC[0], submitted_by="dave")  # a duplicate
    # a contradicting label that arrives last but was given before carol's (imported late): carol's wins
    late = _write(conn, """INSERT INTO feedback (productid, true_code, submitted_by, created_at)
                          VALUES (%s, %s, 'late', now() - interval '1 day') RETURNING id""",
                 (TRAFFIC[1], _other(labels[TRAFFIC[1]])))[0][0]
    max_id = late
    pending = labels_for_next_retrain(conn, settings)
    assert pending == {"new_labels": 21, "threshold": 200, "feedback_rows": 20, "overrides": 1, "new_feedback": 24,
                       "gate_open": False, "max_feedback_id": max_id}

    run = _run(conn)
    applied = store.apply_feedback_labels(conn, run, PRDTYPECODES)
    conn.commit()
    # p1 (alice and bob) and TRAFFIC[1] (carol and late) are trained on a label their labellers dispute
    assert applied == {"feedback_rows_added": 20, "label_overrides": 1, "label_disagreements": 2, "labels_used": 24,
                       "labelled_products_used": 21, "feedback_max_id": max_id, "feedback_rows_no_text": 0}
    # the override: who, when, old and new code, the label and the training that applied it
    assert query(conn, """SELECT productid, old_code, new_code, feedback_id, actor, labelled_at, pipeline_run_id
                          FROM label_overrides""") == [(p1, c1, c3, bob.id, "bob", bob.created_at, run)]
    assert query(conn, "SELECT prdtypecode, label_feedback_id, source FROM products WHERE productid = %s",
                 (p1,)) == [(c3, bob.id, "catalogue")]
    assert alice.id < bob.id
    # one row per product, its logged text, no batch; the latest given label
    rows = query(conn, """SELECT productid, designation, description, prdtypecode, batch_id FROM products
                          WHERE source = 'feedback' ORDER BY productid""")
    assert rows == [(pid, f"gadget zorblax modèle {k}", f"nouveauté {k}", labels[pid], None)
                    for k, pid in enumerate(TRAFFIC)]
    # idempotent: a second run (cron twice) changes nothing and counts nothing new
    again = store.apply_feedback_labels(conn, _run(conn), PRDTYPECODES)
    conn.commit()
    assert again == {"feedback_rows_added": 0, "label_overrides": 0, "label_disagreements": 2, "labels_used": 0,
                     "labelled_products_used": 0, "feedback_max_id": max_id, "feedback_rows_no_text": 0}
    assert query(conn, "SELECT count(*) FROM label_overrides") == [(1,)]
    after = labels_for_next_retrain(conn, settings)
    assert (after["new_labels"], after["feedback_rows"], after["overrides"]) == (0, 0, 0)
    # the holdout hash decides for feedback rows too
    products = store.read_products(conn, ("productid", "prdtypecode", "source", "batch_id"))
    _, holdout = dataset.split(products, settings.holdout_fraction)
    fed = products[products["source"] == "feedback"]["productid"]
    expected = set(fed[dataset.holdout_mask(fed.to_numpy(), settings.holdout_fraction)])
    assert set(holdout[holdout["source"] == "feedback"]["productid"]) == expected and 0 < len(expected) < len(TRAFFIC)
    # never a weekly load: the catalogue counts and the batches do not include them
    counts = store.catalogue_counts(conn)
    loaded = query(conn, "SELECT sum(rows_loaded) FROM load_batches")[0][0]
    assert (counts["products"], counts["feedback_rows"], counts["batches"]) == (loaded, 20, 1)
    assert [r["catalogue_rows"] for r in store.catalogue_growth(conn)] == [loaded]


def test_a_later_catalogue_load_replaces_a_feedback_row_and_the_label_still_wins(small_catalogue, settings, conn):
    x, y = small_catalogue
    first = _load(conn, settings, small_catalogue)
    # a product of the next batch's slice, valid, seen in traffic (and labelled) before it is loaded
    source = read_source(x, y)
    ordered = source.iloc[seeded_order(source["productid"].str.strip(), settings.load_seed)]
    start = first.outputs["end_offset"]
    nxt = ordered.iloc[start:start + math.ceil(settings.load_fraction * len(source))]
    pids = source["productid"].str.strip()
    ok = nxt[nxt["productid"].str.strip().map(pids.value_counts()).eq(1) & nxt["designation"].str.strip().ne("")
             & nxt["prdtypecode"].str.strip().isin([str(c) for c in PRDTYPECODES])]
    row = ok.iloc[0]
    pid, code = int(row["productid"].strip()), int(row["prdtypecode"].strip())
    label = _other(code)
    iid = _serve(conn, pid, "titre vu en production")
    fb = record(settings, prdtypecode=label, inference_id=iid, submitted_by="erin")
    store.apply_feedback_labels(conn, _run(conn), PRDTYPECODES)
    conn.commit()
    assert query(conn, "SELECT source, designation FROM products WHERE productid = %s", (pid,)) == [
        ("feedback", "titre vu en production")]

    second = _load(conn, settings, small_catalogue, as_of=date(2026, 3, 9))
    assert second.status == "succeeded" and second.outputs["feedback_rows_replaced"] == 1
    batch = second.outputs["batch_id"]
    # the catalogue row wins for the text and the batch (a load like any other)...
    assert query(conn, "SELECT source, designation, prdtypecode, batch_id, label_feedback_id FROM products "
                       "WHERE productid = %s", (pid,)) == [("catalogue", row["designation"], code, batch, None)]
    counts = store.catalogue_counts(conn)
    assert counts["products"] == query(conn, "SELECT sum(rows_loaded) FROM load_batches")[0][0]
    assert counts["feedback_rows"] == 0
    # ...and the human label wins for the code at the next training: an audited override, the
    # label is not new (it does not open the feedback gate again)
    assert labels_for_next_retrain(conn, settings)["new_labels"] == 0
    run = _run(conn)
    assert store.apply_feedback_labels(conn, run, PRDTYPECODES)["label_overrides"] == 1
    conn.commit()
    assert query(conn, "SELECT productid, old_code, new_code, feedback_id, actor FROM label_overrides "
                       "WHERE pipeline_run_id = %s", (run,)) == [(pid, code, label, fb.id, "erin")]


def _label_traffic(conn, settings, n, first=0, by="moderator") -> list[int]:
    """n traffic-only products served and labelled; their productids."""
    pids = TRAFFIC[first:first + n]
    for k, pid in enumerate(pids, start=first):
        iid = _serve(conn, pid, f"trottinette électrique zorblax {k}")
        record(settings, prdtypecode=PRDTYPECODES[k % len(PRDTYPECODES)], inference_id=iid, submitted_by=by)
    return pids


@pytest.mark.slow
def test_train_gates_load_then_feedback_at_exactly_the_threshold_and_labels_count_once(
        small_catalogue, settings, conn, cli, monkeypatch):
    from mlops_cli import registry
    from mlops_cli.steps.train import open_gate

    monkeypatch.setenv("FEEDBACK_RETRAIN_MIN", "5")  # for the CLI
    s = settings.replace(feedback_retrain_min=5)
    _load(conn, s, small_catalogue)
    first = train(conn, s, Trigger(), params=FAST_PARAMS)
    assert first.status == "succeeded" and first.outputs["gate"] == "load"
    assert (first.outputs["feedback_rows"], first.outputs["label_overrides"]) == (0, 0)
    # four products labelled, one of them twice: one fewer than FEEDBACK_RETRAIN_MIN, closed
    _label_traffic(conn, s, 4)
    record(s, prdtypecode=PRDTYPECODES[1], productid=TRAFFIC[0], submitted_by="second opinion")  # disputes it
    closed = train(conn, s, Trigger(), params=FAST_PARAMS)
    assert closed.status == "skipped" and "and 4 new labels (FEEDBACK_RETRAIN_MIN 5)" in closed.message
    assert closed.outputs["new_labels"] == 4
    # the fifth: a catalogue product relabelled; exactly FEEDBACK_RETRAIN_MIN opens the gate
    p1, c1 = (int(v) for v in query(conn, "SELECT productid, prdtypecode FROM products WHERE source = 'catalogue' "
                                          "ORDER BY productid LIMIT 1")[0])
    record(s, prdtypecode=_other(c1), productid=p1, submitted_by="frank")
    assert open_gate(conn, s)[0] == "feedback"
    r = cli("train", "--json", "--param", "word_max_features=5000", "--param", "char_max_features=5000")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    o = out["outputs"]
    assert out["status"] == "succeeded" and o["gate"] == "feedback"
    assert (o["feedback_rows"], o["feedback_rows_added"], o["label_overrides"]) == (4, 4, 1)
    assert o["feedback_rows_train"] + o["feedback_rows_holdout"] == 4 and (o["labels_used"], o["new_labels"]) == (6, 5)
    assert o["feedback_max_id"] == query(conn, "SELECT max(id) FROM feedback")[0][0]
    assert o["label_disagreements"] == 1 and out["message"].endswith(
        "; 1 labelled product(s) whose labellers disagree (the latest label taken: `mlops label-disagreements`)")
    assert query(conn, "SELECT prdtypecode FROM products WHERE productid = %s", (TRAFFIC[0],)) == [(PRDTYPECODES[1],)]
    assert o["dataset_hash"] != first.outputs["dataset_hash"]
    tags = registry.run_info(s, o["mlflow_run_id"])["tags"]
    assert (tags["gate"], tags["feedback_rows"], tags["label_overrides"]) == ("feedback", "4", "1")
    assert query(conn, "SELECT pipeline_run_id, actor FROM label_overrides") == [(out["pipeline_run_id"], "frank")]
    # the labels that training used do not count again
    again = train(conn, s, Trigger(), params=FAST_PARAMS)
    assert again.status == "skipped" and again.outputs["new_labels"] == 0
    assert open_gate(conn, s, force=True)[0] == "forced"
    # `mlops runs` shows which gate opened
    lines = cli("runs", "--step", "train").output.splitlines()
    at = lines[0].index("  gate ") + 2
    gates = [line[at:].split()[0] if line[at:at + 1].strip() else "" for line in lines[2:]]
    assert gates == ["", "feedback", "", "load"]  # newest first: skipped, feedback, skipped, load


@pytest.mark.slow
def test_auto_retrain_on_drift_is_off_by_default_waits_for_labels_and_every_decision_is_audited(
        small_catalogue, settings, conn):
    from mlops_cli.pipeline import PIPELINES, run_pipeline

    s = settings.replace(feedback_retrain_min=3, min_f1_threshold=0.3)
    _load(conn, s, small_catalogue)
    assert train(conn, s, Trigger(), params=FAST_PARAMS).outputs["gate"] == "load"  # no load left pending
    alert_id = _write(conn, """INSERT INTO alerts (level, cause, message) VALUES ('ALERT', 'performance_drift',
                                'weighted F1 on labelled traffic fell') RETURNING id""")[0][0]
    _label_traffic(conn, s, 2)

    def children(result):
        return query(conn, "SELECT step, status FROM pipeline_runs WHERE parent_run_id = %s ORDER BY id",
                     (result.pipeline_run_id,))

    def decisions():
        return query(conn, "SELECT alert_id, actor, note, params FROM alert_actions WHERE action = 'auto_retrain' "
                           "ORDER BY id")

    off = run_pipeline(s, "daily", Trigger(actor="cron@host"))
    assert [step for step, _ in children(off)] == list(PIPELINES["daily"]) and decisions() == []
    on = s.replace(auto_retrain_on_drift=True)
    wait = run_pipeline(on, "daily", Trigger(actor="cron@host"))
    assert wait.ok and children(wait)[-1] == ("auto_retrain", "skipped")
    [(aid, actor, note, params)] = decisions()
    assert (aid, actor, params["decision"], params["new_labels"], params["threshold"]) == (
        alert_id, "cron@host", "wait", 2, 3)
    assert "only 2 products newly labelled (FEEDBACK_RETRAIN_MIN 3): not retraining" in note
    assert query(conn, "SELECT count(*) FROM pipeline_runs WHERE step = 'train'") == [(1,)]  # the first only

    _label_traffic(conn, s, 1, first=2)
    go = run_pipeline(on, "daily", Trigger(actor="cron@host"))
    assert go.ok, go.message
    steps = children(go)
    assert steps[-4:] == [("auto_retrain", "succeeded"), ("train", "succeeded"), ("evaluate", "succeeded"),
                          ("promote", "succeeded")]
    decision = decisions()[-1]
    assert decision[3]["decision"] == "retrain" and decision[3]["new_labels"] == 3
    run = store.get_run(conn, decision[3]["pipeline_run_id"])
    assert run["step"] == "auto_retrain" and run["outputs"]["decision"] == "retrain"
    trained = query(conn, "SELECT outputs, params FROM pipeline_runs WHERE step = 'train' AND parent_run_id = %s",
                    (go.pipeline_run_id,))[0]
    assert trained[0]["gate"] == "drift" and trained[0]["feedback_rows"] == 3
    assert trained[1]["drift_decision_run_id"] == run["id"]


def _serve_at(conn, at, productid, designation, predicted=10) -> int:
    """A logged prediction of time `at` (its day's partition made first), committed."""
    store.ensure_inference_partition(conn, at.date())
    conn.commit()
    return _write(conn, """INSERT INTO inference_log (logged_at, request_id, productid, designation, description,
                                                     designation_len, description_len, predicted_code, confidence)
                          VALUES (%s, %s, %s, %s, '', %s, 0, %s, 0.4) RETURNING id""",
                  (at, f"req-{productid}", productid, designation, len(designation), predicted))[0][0]


def _labelled_class(conn, settings, n_traffic: int, n_catalogue: int):
    """The catalogue's largest class C; n_traffic traffic-only products and n_catalogue catalogue
    products of other classes labelled C, one after the other: (C, the labelled productids in the
    order labelled)."""
    code = int(query(conn, "SELECT prdtypecode FROM products GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")[0][0])
    order = []
    for k in range(n_traffic):
        pid = 9_200_000_000 + k
        record(settings, prdtypecode=code, inference_id=_serve(conn, pid, f"aspirateur balai zorblax {k}"))
        order.append(pid)
    for (pid,) in query(conn, "SELECT productid FROM products WHERE prdtypecode <> %s ORDER BY productid LIMIT %s",
                        (code, n_catalogue)):
        record(settings, prdtypecode=code, productid=int(pid))
        order.append(int(pid))
    return code, order


def _training_rows(conn, settings):
    """The train step's rows: the catalogue with each product's label rank, its training part."""
    products = store.read_products(conn, ("productid", "designation", "description", "prdtypecode", "batch_id",
                                          "source"))
    products[dataset.LABEL_RANK] = products["productid"].map(store.label_recency(conn))
    return dataset.split(products, settings.holdout_fraction)[0]


def test_the_class_cap_keeps_every_human_label_and_the_latest_when_they_alone_exceed_it(
        small_catalogue, settings, conn):
    from mlops_cli import selection

    _load(conn, settings, small_catalogue)
    code, order = _labelled_class(conn, settings, 30, 10)
    store.apply_feedback_labels(conn, _run(conn), PRDTYPECODES)
    conn.commit()
    rows = _training_rows(conn, settings)
    labelled = rows[rows[dataset.LABEL_RANK].notna()]
    assert set(labelled["productid"]) == set(order) & set(rows["productid"])
    assert set(labelled["prdtypecode"]) == {code}
    in_class = int((rows["prdtypecode"] == code).sum())

    def parts(cap):
        return selection.split_parts(rows, validation_fraction=settings.validation_fraction,
                                     holdout_fraction=settings.holdout_fraction, max_per_class=cap, seed=42)

    # a cap below the class but above its labels: every label in the fit, the rest of the cap
    # a sample of the catalogue's other rows of the class
    cap = (len(labelled) + in_class) // 2
    assert len(labelled) < cap < in_class
    p = parts(cap)
    fit = p.fit_rows
    assert set(labelled["productid"]) <= set(fit["productid"]) and p.labels_capped == {}
    assert int((fit["prdtypecode"] == code).sum()) == cap
    # a cap below the labels alone: the `cap` latest labels, the older ones counted
    cap = len(labelled) - 3
    p = parts(cap)
    fit = p.fit_rows[p.fit_rows["prdtypecode"] == code]
    latest = [pid for pid in reversed(order) if pid in set(labelled["productid"])][:cap]
    assert sorted(fit["productid"]) == sorted(latest) and p.labels_capped == {str(code): 3}


@pytest.mark.slow
def test_train_reports_capped_labels_markup_only_rows_and_the_fit_hash(small_catalogue, settings, conn):
    from mlops_cli import selection
    from mlops_cli.features import DEFAULT_PARAMS, has_letter_or_digit

    _load(conn, settings, small_catalogue)
    code, order = _labelled_class(conn, settings, 30, 0)
    markup = [9_300_000_000, 9_300_000_001]
    for pid, title in zip(markup, ("<p>&nbsp;</p>", "<div><br></div>")):  # logged titles only markup
        record(settings, prdtypecode=code, inference_id=_serve(conn, pid, title))
    record(settings, prdtypecode=code, inference_id=_serve(conn, 9_300_000_002, "<b>Lot de 2</b>&nbsp;"))
    # as the train step will (idempotent): the markup-only rows are not kept, their labels used
    applied = store.apply_feedback_labels(conn, _run(conn), PRDTYPECODES, title_ok=has_letter_or_digit)
    conn.commit()
    assert (applied["feedback_rows_added"], applied["feedback_rows_no_text"], applied["labels_used"]) == (31, 2, 33)
    assert query(conn, "SELECT count(*) FROM products WHERE productid = ANY(%s)", (markup,)) == [(0,)]
    assert labels_for_next_retrain(conn, settings)["new_labels"] == 0
    rows = _training_rows(conn, settings)
    n_labelled = int(rows[dataset.LABEL_RANK].notna().sum())
    cap = n_labelled - 2
    s = settings.replace(max_per_class=cap)
    r = train(conn, s, Trigger(), params=FAST_PARAMS, force=True)
    assert r.status == "succeeded", r.message
    o = r.outputs
    assert (o["feedback_rows"], o["feedback_rows_no_text"], o["feedback_rows_added"]) == (31, 2, 0)
    assert query(conn, "SELECT count(*) FROM products WHERE productid = ANY(%s)", (markup,)) == [(0,)]
    assert (o["labelled_rows_train"], o["labelled_rows_fit"], o["labelled_rows_capped"]) == (
        n_labelled, cap, 2)
    assert o["labelled_rows_capped_by_class"] == {str(code): 2}
    assert r.message.endswith(
        f"; 2 older human labels left out of the fit: their class's labels alone exceed MAX_PER_CLASS {cap} "
        f"(the latest kept; class {code}: 2); 2 feedback rows left out: their logged title has no letter or "
        "digit once cleaned")
    fit = selection.split_parts(rows, validation_fraction=s.validation_fraction, holdout_fraction=s.holdout_fraction,
                                max_per_class=cap, seed=DEFAULT_PARAMS["random_state"]).fit_rows
    assert o["train_rows"] == len(fit)
    assert o["fit_hash"] == dataset.dataset_hash(fit) != o["dataset_hash"] == dataset.dataset_hash(rows)


def test_labels_that_disagree_are_listed_until_every_labellers_latest_agrees(settings, conn, cli):
    from mlops_cli.categories import category_name
    from mlops_cli.ops.feedback import disagreements

    assert disagreements(conn) == {"total": 0, "items": []}
    assert cli("label-disagreements").output == ("no disagreement: every labelled product's labellers give the same "
                                                 "code\n")
    a, b, c, d = TRAFFIC[:4]
    ids = {pid: _serve(conn, pid, f"gadget zorblax modèle {pid % 100}") for pid in (a, b, c, d)}
    x, y, z = PRDTYPECODES[:3]
    record(settings, prdtypecode=x, inference_id=ids[a], submitted_by="alice")
    record(settings, prdtypecode=y, inference_id=ids[a], submitted_by="alice")  # her own correction
    record(settings, prdtypecode=x, productid=b, submitted_by="alice")
    record(settings, prdtypecode=x, productid=b, submitted_by="bob")            # they agree
    first = record(settings, prdtypecode=x, productid=c, submitted_by="alice")
    second = record(settings, prdtypecode=y, productid=c, submitted_by="bob")
    record(settings, prdtypecode=z, productid=d, submitted_by="carol")
    third = record(settings, prdtypecode=x, productid=d, submitted_by="dave")
    found = disagreements(conn)
    assert found["total"] == 2 and [it["productid"] for it in found["items"]] == [d, c]  # latest labelled first
    assert found["items"][1] == {
        "productid": c, "designation": f"gadget zorblax modèle {c % 100}", "latest_code": y,
        "latest_category": category_name(y), "training_code": None, "last_labelled_at": second.created_at,
        "labels": [{"submitted_by": "bob", "prdtypecode": y, "category": category_name(y),
                    "created_at": second.created_at, "feedback_id": second.id},
                   {"submitted_by": "alice", "prdtypecode": x, "category": category_name(x),
                    "created_at": first.created_at, "feedback_id": first.id}]}
    assert [it["productid"] for it in disagreements(conn, limit=1)["items"]] == [d]
    with pytest.raises(Invalid, match="^limit must be between 1 and 500, not 0$"):
        disagreements(conn, limit=0)
    out = cli("label-disagreements", "--limit", 1).output
    assert f"carol: {z} {category_name(z)}" in out and f"dave: {x} {category_name(x)}" in out
    assert out.endswith("1 of 2 shown (--limit)\n")
    # training takes the latest label and counts the disputed products it trained on
    applied = store.apply_feedback_labels(conn, _run(conn), PRDTYPECODES)
    conn.commit()
    assert applied["label_disagreements"] == 2
    assert disagreements(conn)["items"][0]["training_code"] == x == third.prdtypecode
    # carol agrees with dave now: d is settled; bob's new label on c restates his answer, c stays
    record(settings, prdtypecode=x, productid=d, submitted_by="carol")
    record(settings, prdtypecode=y, productid=c, submitted_by="bob")
    assert [it["productid"] for it in disagreements(conn)["items"]] == [c]
    # a third labeller does not settle c: alice's latest still differs
    record(settings, prdtypecode=y, productid=c, submitted_by="erin")
    assert [(lb["submitted_by"], lb["prdtypecode"]) for lb in disagreements(conn)["items"][0]["labels"]] == [
        ("erin", y), ("bob", y), ("alice", x)]


def test_a_feedback_row_takes_the_text_of_the_prediction_its_latest_label_names(settings, conn):
    """A product seen only in traffic, labelled on one prediction, trained on; then served again
    with another text and that prediction labelled: the next training learns the new label on
    the new text, as it would have without a training in between. Before, the row kept the first
    label's text and took only the new code."""
    from mlops_cli.features import has_letter_or_digit

    pid = 9_500_000_001
    first = _serve(conn, pid, "Livre de cuisine italienne", "recettes")
    record(settings, prdtypecode=2705, inference_id=first, submitted_by="mod")
    store.apply_feedback_labels(conn, _run(conn), PRDTYPECODES, title_ok=has_letter_or_digit)
    conn.commit()
    row = "SELECT designation, description, prdtypecode, source FROM products WHERE productid = %s"
    assert query(conn, row, (pid,)) == [("Livre de cuisine italienne", "recettes", 2705, "feedback")]
    second = _serve(conn, pid, "Manette sans fil pour console")
    record(settings, prdtypecode=60, inference_id=second, submitted_by="mod2")
    out = store.apply_feedback_labels(conn, _run(conn), PRDTYPECODES, title_ok=has_letter_or_digit)
    conn.commit()
    assert query(conn, row, (pid,)) == [("Manette sans fil pour console", "", 60, "feedback")]
    assert out["label_overrides"] == 1


def test_a_label_by_productid_alone_skips_a_newer_prediction_whose_title_is_markup_only(settings, conn):
    """A product served with a real title, then once with a markup-only one (a client bug), is
    labelled by productid alone (the control room's settle form does so): the label is tied to
    the prediction with the real title and trains on it. Before, it was tied to the newest, the
    training dropped that row as having no text, and the label never reached a model."""
    from mlops_cli.features import has_letter_or_digit

    pid = 9_300_000_001
    good = _serve(conn, pid, "Tente de camping 4 places")
    _serve(conn, pid, "<p>&nbsp;</p>")
    fb = record(settings, prdtypecode=PRDTYPECODES[3], productid=pid, submitted_by="mod")
    assert fb.inference_id == good
    out = store.apply_feedback_labels(conn, _run(conn), PRDTYPECODES, title_ok=has_letter_or_digit)
    conn.commit()
    assert query(conn, "SELECT designation, prdtypecode FROM products WHERE productid = %s", (pid,)) == [
        ("Tente de camping 4 places", PRDTYPECODES[3])]
    assert out["feedback_rows_no_text"] == 0


def test_a_label_waiting_for_its_request_id_does_not_make_a_product_look_served(settings, conn):
    """A label given with a request_id not logged yet (another worker may hold it) and a productid
    is kept unchecked. It is no proof that the product was ever served: a later label of that
    product by productid alone is refused as never served, not blamed on retention."""
    pid = 987_654_321
    assert record(settings, prdtypecode=10, request_id="never-logged-1", productid=pid).resolved is False
    with pytest.raises(NotFound) as refused:
        record(settings, prdtypecode=10, productid=pid)
    assert str(refused.value).startswith(f"Product {pid} was never served and is not in the catalogue: ")


def test_a_label_by_productid_is_tied_to_its_newest_prediction_and_outlives_retention(settings, conn):
    from datetime import datetime, timedelta, timezone

    from mlops_cli.steps.retention import apply_retention

    old = datetime.now(timezone.utc) - timedelta(days=settings.inference_log_retention_days + 10)
    first = _serve_at(conn, old, 8_800_000_001, "Piscine tubulaire ronde 3m")
    newest = _serve_at(conn, old + timedelta(hours=1), 8_800_000_001, "Piscine tubulaire ronde 3m avec pompe")
    legacy = _serve_at(conn, old, 8_800_000_002, "Piscine hors sol acier 4m")
    unlabelled = _serve_at(conn, old, 8_800_000_003, "Pompe filtration sable")
    forgotten = _serve_at(conn, old, 8_800_000_004, "Bâche hiver piscine")
    fb = record(settings, prdtypecode=2583, productid=8_800_000_001, submitted_by="mod")
    assert (fb.inference_id, fb.request_id, fb.predicted_code, fb.resolved) == (
        newest, "req-8800000001", 10, True)
    assert first < newest
    # a label given by productid alone before labels were tied at record time
    _write(conn, "INSERT INTO feedback (productid, true_code) VALUES (8800000002, 2583) RETURNING id")
    apply_retention(conn, settings, actor="pytest")
    conn.commit()
    assert query(conn, "SELECT id, reasons FROM inference_log_retained ORDER BY id") == [
        (newest, ["feedback"]), (legacy, ["feedback"])]
    assert query(conn, "SELECT count(*) FROM inference_log WHERE id = ANY(%s)", ([unlabelled, forgotten],)) == [(0,)]
    pending = labels_for_next_retrain(conn, settings)
    assert (pending["new_labels"], pending["feedback_rows"]) == (2, 2)
    # dropped and never labelled: nothing tells it from a product never served
    with pytest.raises(NotFound) as e:
        record(settings, prdtypecode=2583, productid=8_800_000_003)
    assert str(e.value) == ("Product 8800000003 was never served and is not in the catalogue: nothing to label "
                            "(name a logged prediction by inference_id or request_id)")
    # a label names it (given before its rows were dropped, when nothing kept them): it was served
    _write(conn, "INSERT INTO feedback (productid, true_code) VALUES (8800000004, 2583) RETURNING id")
    with pytest.raises(NotFound) as e:
        record(settings, prdtypecode=2583, productid=8_800_000_004)
    assert str(e.value) == ("Product 8800000004 is not in the catalogue and its logged predictions were dropped by "
                            "retention (INFERENCE_LOG_RETENTION_DAYS): no text left to label")


def test_the_latest_label_is_the_same_for_training_drift_the_estimate_and_shadow(settings, conn):
    from datetime import datetime, timedelta, timezone

    iid = _serve(conn, 8_900_000_001, "Robot pâtissier 5 litres", predicted=2583)
    given = record(settings, prdtypecode=1300, inference_id=iid, submitted_by="mod")
    # a label of the same prediction imported after it, with its older time: given's wins
    late = _write(conn, """INSERT INTO feedback (inference_id, inference_logged_at, productid, true_code,
                                                predicted_code, created_at)
                          SELECT id, logged_at, productid, 1280, predicted_code, %s - interval '1 hour'
                          FROM inference_log WHERE id = %s RETURNING id""", (given.created_at, iid))[0][0]
    assert late > given.id
    logged_at, request_id = query(conn, "SELECT logged_at, request_id FROM inference_log WHERE id = %s", (iid,))[0]
    start, end = logged_at - timedelta(days=1), datetime.now(timezone.utc) + timedelta(minutes=1)
    assert store.window_feedback_pairs(conn, start, end) == [(1300, 2583, 1)]
    assert [r[0] for r in store.window_feedback_predictions(conn, start, end)] == [1300]
    store.insert_shadow_rows(conn, [{"logged_at": logged_at, "request_id": request_id, "item_index": 0,
                                     "champion_version": "1", "champion_code": 2583, "challenger_version": "2",
                                     "predicted_code": 1280, "confidence": 0.5, "top_k": [], "latency_ms": 1.0}])
    conn.commit()
    assert [r["true_code"] for r in store.shadow_counts(conn, None, None)[1]] == [1300]
    store.apply_feedback_labels(conn, _run(conn), PRDTYPECODES)
    conn.commit()
    assert query(conn, "SELECT prdtypecode, label_feedback_id FROM products WHERE productid = 8900000001") == [
        (1300, given.id)]
