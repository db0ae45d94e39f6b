"""The shadow challenger (docs/shadow.md) on the real stack: the API with its worker process, the
MLflow registry, PostgreSQL; models trained once for the module (test_api's `trained`: versions 1
and 2, champion -> 1). Nothing is mocked; a challenger that raises or hangs is made with the test
fault hook (MLOPS_FAULT=shadow:fail|hang, installed in the worker process by tests/fault_site).

What the client gets never depends on the challenger; shadow rows name the champion's rows; the
queue is bounded; promotion weighs the live evidence in each branch; the daily report's shadow
section; the hot swap of both aliases; the Models page. Nothing is timed.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import f1_score

from conftest import REPO, query, wait_for
from mlops_cli import config, db, registry, store
from mlops_cli.api import create_app
from mlops_cli.categories import PRDTYPECODES
from mlops_cli.runs import Trigger
from mlops_cli.serving import ServingMetrics, holder
from mlops_cli.serving.shadow import BUFFER_FULL, INVALID, PENDING_ROWS, SLOTS, WRITE_ERRORS, WRITTEN, ShadowScorer, \
    _RowWriter, load_failures
from mlops_cli.simulate import simulate_traffic
from mlops_cli.steps.drift import drift
from mlops_cli.steps.promote import decide, promote
from test_api import api_env, frame, products, trained  # noqa: F401  (fixtures: versions 1 and 2, champion 1)
from test_promote import GOOD, WEAK, alias_map, challenger, decisions, load_all
from test_ui import shown

T = Trigger(actor="pytest")
DAY0 = datetime(2031, 2, 3, tzinfo=timezone.utc)  # far from now(): the window sees only this test's rows


@pytest.fixture
def shadow_env(api_env, trained):  # noqa: F811
    """The API's environment with the shadow on and version 2 as the challenger."""
    api_env.setenv("SHADOW_ENABLED", "true")
    registry.set_alias(trained.settings, registry.CHALLENGER, trained.v2)
    yield api_env
    registry.delete_alias(trained.settings, registry.CHALLENGER)


def shadowing(app, version: str | None) -> None:
    wait_for(lambda: app.state.shadow.stats()["challenger_version"] == version,
             f"the shadow worker following the challenger alias to {version}")


def shadow_rows(conn) -> list[tuple]:
    return query(conn, """SELECT request_id, item_index, champion_version, champion_code, challenger_version,
                                 predicted_code, confidence FROM shadow_predictions ORDER BY id""")


def metric_value(text: str, line_start: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(line_start)).rsplit(" ", 1)[1])


# --- the API ---------------------------------------------------------------------------------------
def test_shadow_rows_are_linked_to_the_champions_rows(shadow_env, trained, conn):  # noqa: F811
    shadow_env.setenv("SHADOW_NICE", "3")
    app = create_app(config.load_settings())
    items = products(trained, 12)
    with TestClient(app) as c:
        shadowing(app, trained.v2)
        singles = [c.post("/predict", json=it) for it in items[:4]]
        batch = c.post("/predict?top_k=2", json={"items": items[4:]}, headers={"X-Request-ID": "batch-7"})
        assert [r.status_code for r in singles] == [200] * 4 and batch.status_code == 200
        assert app.state.inference_log.flush() and app.state.shadow.flush()
        health = c.get("/health").json()["shadow"]
        metrics = c.get("/metrics").text
        worker_nice = os.getpriority(os.PRIO_PROCESS, health["worker_pid"])
    answers = [r.json() for r in singles] + batch.json()["predictions"]
    assert {a["model_version"] for a in answers} == {trained.v1}  # the client's answers are the champion's

    linked = query(conn, """SELECT s.request_id, s.item_index, s.champion_version, s.champion_code, i.model_version,
                                   i.predicted_code, s.challenger_version,
                                   s.predicted_code, s.confidence, jsonb_array_length(s.top_k), s.logged_at, i.logged_at
                            FROM shadow_predictions s JOIN inference_log i USING (request_id) ORDER BY s.id""")
    assert [r[0] for r in linked] == [a["request_id"] for a in answers]
    assert [r[0] for r in linked[4:]] == [f"batch-7-{i}" for i in range(8)]
    assert [r[1] for r in linked] == [0, 0, 0, 0] + list(range(8))  # the item's place in its request
    for row, answer in zip(linked, answers):
        assert row[2] == row[4] == trained.v1 and row[3] == row[5] == answer["prdtypecode"]
        assert row[6] == trained.v2
    # the challenger's own answers: version 2's predictions, probabilities and top_k of the request
    model = trained.models[trained.v2]
    assert [r[7] for r in linked] == [int(c) for c in model.predict(frame(items))]
    proba = model.predict_proba(frame(items))
    classes = list(model.classes_)
    for i, r in enumerate(linked):
        assert r[8] == pytest.approx(proba[i, classes.index(r[7])], abs=1e-6)
    assert [r[9] for r in linked] == [3] * 4 + [2] * 8
    # the same time as the champion's row, to the microsecond: a window selects both or neither
    assert [r[10] for r in linked] == [r[11] for r in linked]

    assert health["challenger_version"] == trained.v2 and health["worker_pid"]
    # the worker lowered its own priority by SHADOW_NICE before loading the challenger
    assert worker_nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)
    assert (health["submitted"], health["scored"], health["written"], health["errors"]) == (12, 12, 12, 0)
    assert sum(health["dropped"].values()) == 0
    assert metric_value(metrics, "mlops_shadow_scored_items_total") == 12
    assert metric_value(metrics, "mlops_shadow_written_rows_total") == 12
    assert metric_value(metrics, "mlops_shadow_model_version") == int(trained.v2)


def test_shadow_off_by_default_and_without_a_challenger(api_env, trained, conn):  # noqa: F811
    registry.delete_alias(trained.settings, registry.CHALLENGER)
    app = create_app(config.load_settings())
    assert app.state.shadow is None  # SHADOW_ENABLED=false, SHADOW_MIN_REQUESTS=0: no worker at all
    with TestClient(app) as c:
        assert c.post("/predict", json=products(trained, 1)[0]).status_code == 200
        assert c.get("/health").json()["shadow"] is None
    assert shadow_rows(conn) == []


@pytest.mark.parametrize("fault", ["fail", "hang"])
def test_a_challenger_that_raises_or_hangs_changes_nothing_for_the_client(shadow_env, trained, conn, fault):
    items = products(trained, 6, start=20)

    def answers(c) -> list[bytes]:
        out = []
        for i, it in enumerate(items):
            r = c.post("/predict", json=it, headers={"X-Request-ID": f"same-{i}"})
            assert r.status_code == 200
            out.append(r.content)
        return out

    shadow_env.setenv("SHADOW_ENABLED", "false")
    with TestClient(create_app(config.load_settings())) as c:
        expected = answers(c)

    shadow_env.setenv("SHADOW_ENABLED", "true")
    shadow_env.setenv("MLOPS_FAULT", f"shadow:{fault}")  # read by the worker process's fault hook
    shadow_env.setenv("SHADOW_STALL_SECONDS", "0.5")
    app = create_app(config.load_settings())
    with TestClient(app) as c:
        shadowing(app, trained.v2)
        got = answers(c)
        scorer = app.state.shadow
        if fault == "fail":
            assert scorer.flush()
            stats = scorer.stats()
            assert (stats["submitted"], stats["errors"], stats["scored"], stats["written"]) == (6, 6, 0, 0)
            assert metric_value(c.get("/metrics").text, "mlops_shadow_errors_total") == 6
        else:
            # the hung worker is killed and replaced; what it held is counted as lost
            wait_for(lambda: scorer.stats()["restarts"]["stalled"] >= 1, "the stalled shadow worker restarted")
            assert scorer.stats()["dropped"]["restart"] >= 1
            assert metric_value(c.get("/metrics").text, 'mlops_shadow_worker_restarts_total{reason="stalled"}') >= 1
        assert c.get("/health").json()["status"] == "ok"
    assert got == expected  # byte for byte: the same answers with a broken challenger as with none
    assert shadow_rows(conn) == []


def test_the_queue_is_bounded_and_a_full_queue_drops_and_counts(shadow_env, trained):
    # a challenger that hangs on its first item: nothing is ever finished, the queue only fills
    shadow_env.setenv("MLOPS_FAULT", "shadow:hang")
    metrics = ServingMetrics()
    scorer = ShadowScorer(config.load_settings(), metrics=metrics, capacity=5, stall_seconds=3600)
    scorer.start()
    try:
        wait_for(lambda: scorer.stats()["challenger_version"] == trained.v2, "the shadow worker's challenger")
        taken = [scorer.submit(trained.v1, [(f"produit {i}", None)], [{"request_id": f"q-{i}", "prdtypecode": 10}], 3)
                 for i in range(50)]  # every call returns: submit never waits for the worker
        assert taken == [True] * 5 + [False] * 45
        assert scorer.pending == 5
        # the champion's own version is never compared with itself (not taken, not a drop)
        assert scorer.submit(trained.v2, [("x", None)], [{"request_id": "same", "prdtypecode": 10}], 3) is False
        wait_for(lambda: 'mlops_shadow_dropped_items_total{reason="queue_full"} 45.0' in metrics.render().decode(),
                 "the queue_full drops in the metrics")
        assert scorer.stats()["dropped"]["queue_full"] == 45 and scorer.stats()["submitted"] == 5
    finally:
        assert scorer.close(timeout=2.0) is False  # the 5 taken were never scored: lost, and counted
    assert scorer.stats()["dropped"]["shutdown"] == 5
    assert 'mlops_shadow_dropped_items_total{reason="shutdown"} 5.0' in metrics.render().decode()


def test_the_writer_keeps_rows_through_an_outage_and_bounds_its_buffer(settings, conn):
    def row(i: int, top_k=None) -> dict:
        return {"logged_at": DAY0, "request_id": f"w-{i}", "item_index": 0, "champion_version": "1",
                "champion_code": 10, "challenger_version": "2", "predicted_code": 40, "confidence": 0.5,
                "top_k": top_k if top_k is not None else [{"prdtypecode": 40, "probability": 0.5}], "latency_ms": 1.0}

    shared = [0.0] * SLOTS
    down = settings.replace(database_url="postgresql://127.0.0.1:1/nowhere")  # nothing listens there
    writer = _RowWriter(down, shared, capacity=3)
    writer.add([row(i) for i in range(5)])
    assert (shared[PENDING_ROWS], shared[BUFFER_FULL]) == (3, 2)  # the buffer holds 3: 2 dropped, counted
    writer.maybe_flush(force=True)
    assert shared[WRITE_ERRORS] == 1 and len(writer.rows) == 3 and shared[WRITTEN] == 0  # kept for the retry
    writer.settings, writer.retry_at = settings, 0.0  # the database is back
    writer.maybe_flush(force=True)
    assert (shared[WRITTEN], shared[PENDING_ROWS]) == (3, 0)
    # a row PostgreSQL refuses as data (NaN is not JSON) is isolated: dropped and counted, the rest written
    writer.add([row(10, top_k=[{"probability": float("nan")}]), row(11)])
    writer.maybe_flush(force=True)
    assert (shared[WRITTEN], shared[INVALID], shared[PENDING_ROWS]) == (4, 1, 0)
    writer.close(1.0)
    assert [r[0] for r in shadow_rows(conn)] == ["w-0", "w-1", "w-2", "w-11"]


def test_the_shadow_follows_both_aliases(shadow_env, trained, conn):
    s = trained.settings
    app = create_app(config.load_settings())
    item = products(trained, 1, start=40)[0]
    with TestClient(app) as c:
        shadowing(app, trained.v2)
        assert c.post("/predict", json=item).status_code == 200
        assert app.state.shadow.flush()
        # the challenger decided on (its alias deleted): nothing to compare, nothing sent
        registry.delete_alias(s, registry.CHALLENGER)
        shadowing(app, None)
        assert c.post("/predict", json=item).status_code == 200
        assert app.state.shadow.stats()["submitted"] == 1
        # a promotion that moves both aliases: champion -> 2, and version 1 now the challenger
        registry.set_alias(s, registry.CHAMPION, trained.v2)
        registry.set_alias(s, registry.CHALLENGER, trained.v1)
        wait_for(lambda: app.state.holder.current.version == trained.v2, "the champion hot swap")
        shadowing(app, trained.v1)
        r = c.post("/predict", json=item)
        assert r.status_code == 200 and r.json()["model_version"] == trained.v2
        assert app.state.shadow.flush()
    assert [(v, w) for _rid, _i, v, _c, w, _p, _conf in shadow_rows(conn)] == [(trained.v1, trained.v2),
                                                                               (trained.v2, trained.v1)]


def test_items_in_flight_when_the_challenger_goes_are_counted(shadow_env, trained):
    s = trained.settings
    metrics = ServingMetrics()
    scorer = ShadowScorer(config.load_settings(), metrics=metrics)
    scorer._start_worker()  # no feed thread: what is submitted stays here until flush() hands it over

    def offer(tag: str, n: int) -> bool:
        return scorer.submit(trained.v1, [(f"produit {i}", None) for i in range(n)],
                             [{"request_id": f"{tag}-{i}", "prdtypecode": 10} for i in range(n)], 3)

    def following(version):
        wait_for(lambda: scorer.stats()["challenger_version"] == version, f"the shadow worker on {version}")

    try:
        following(trained.v2)
        assert offer("moved", 3)
        registry.set_alias(s, registry.CHALLENGER, trained.v1)  # onto the champion's version
        following(trained.v1)
        assert scorer.flush()
        assert offer("same", 2) is False  # the champion's own version: not taken, not a drop
        registry.set_alias(s, registry.CHALLENGER, trained.v2)
        following(trained.v2)
        assert offer("gone", 4)
        registry.delete_alias(s, registry.CHALLENGER)
        following(None)
        assert scorer.flush()
        stats = scorer.stats()
        assert (stats["submitted"], stats["scored"], stats["errors"], stats["pending"]) == (7, 0, 0, 0)
        assert stats["dropped"] == {**{r: 0 for r in stats["dropped"]}, "no_challenger": 7}  # none unaccounted
        assert 'mlops_shadow_dropped_items_total{reason="no_challenger"} 7.0' in metrics.render().decode()
    finally:
        assert scorer.close(timeout=10.0)


def unloadable_version(t) -> str:
    """A registered version that loads but cannot serve: an uncalibrated LinearSVC, no predict_proba
    (the holder's warm-up predict fails)."""
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC

    good = t.models[t.v2]
    X = frame(products(t, 200))
    model = Pipeline(good.steps[:-1] + [("classifier", LinearSVC().fit(good[:-1].transform(X), good.predict(X)))])
    _run, version = registry.log_training(t.settings, model=model, params={}, metrics={}, tags={}, texts={},
                                          figures={}, input_example=X.head(2))
    return version


def test_a_challenger_that_cannot_be_loaded_is_not_replaced_by_the_old_one(shadow_env, trained, conn):  # noqa: F811
    s = trained.settings
    bad = unloadable_version(trained)
    app = create_app(config.load_settings())
    item = products(trained, 1, start=60)[0]
    try:
        with TestClient(app) as c:
            scorer = app.state.shadow
            shadowing(app, trained.v2)
            assert c.post("/predict", json=item).status_code == 200 and scorer.flush()
            registry.set_alias(s, registry.CHALLENGER, bad)
            wait_for(lambda: scorer.stats()["load_error"], "the worker's load error in the API")
            health = c.get("/health").json()
            shadow = health["shadow"]
            # not scored with version 2 any more: it no longer awaits a decision
            assert (shadow["challenger_version"], shadow["challenger_alias_version"]) == (None, bad)
            assert f"cannot load version {bad}" in shadow["load_error"] and health["status"] == "ok"
            # ...and recorded, for promotion to say why no evidence comes
            [failure] = wait_for(lambda: load_failures(conn, s, bad), "the worker's record of the load failure")
            assert failure["host"] == socket.gethostname() and f"cannot load version {bad}" in failure["error"]
            # recorded again at each failed retry (a host still failing stays current; one gone does not)
            wait_for(lambda: [(f["first_at"], f["last_at"] > failure["last_at"]) for f in load_failures(conn, s, bad)]
                     == [(failure["first_at"], True)], "the failure seen again at the worker's next try")
            assert [c.post("/predict", json=item).status_code for _ in range(3)] == [200] * 3
            assert scorer.flush()
            stats = scorer.stats()
            assert stats["submitted"] == 1 and stats["dropped"]["load_failed"] == 3  # counted, not submitted
            assert 'mlops_shadow_dropped_items_total{reason="load_failed"} 3.0' in c.get("/metrics").text
            # the alias back on a version that loads: scored again, no error shown
            registry.set_alias(s, registry.CHALLENGER, trained.v2)
            wait_for(lambda: (scorer.stats()["challenger_version"], scorer.stats()["load_error"]) == (trained.v2, None),
                     "the shadow on version 2 again, its load error gone")
            assert c.post("/predict", json=item).status_code == 200 and scorer.flush()
            assert (scorer.stats()["scored"], scorer.stats()["dropped"]["load_failed"]) == (2, 3)
    finally:
        registry.delete_alias(s, registry.CHALLENGER)
        registry.delete_version(s, bad)
    assert [r[4] for r in shadow_rows(conn)] == [trained.v2, trained.v2]


# --- promotion on live evidence ------------------------------------------------------------------------
def live(n, labelled=0, champion_f1=None, challenger_f1=None, agreement=0.9) -> dict:
    return {"champion_version": "3", "challenger_version": "4", "n": n, "n_labelled": labelled,
            "agreement": agreement, "champion_weighted_f1": champion_f1, "challenger_weighted_f1": challenger_f1}


@pytest.mark.parametrize("evidence, auto, expected_decision, expected_text", [
    (live(120, 10), True, "awaiting_evidence",
     "awaiting live evidence: 120 of 500 shadow requests (SHADOW_MIN_REQUESTS), 10 of 30 of them labelled "
     "(SHADOW_MIN_LABELLED); weighted_f1 0.8421 > threshold 0.75 and > champion v3 0.8310 (+0.0111): stays the "
     "challenger, decided again once the evidence is there"),
    (None, True, "awaiting_evidence",
     "awaiting live evidence: 0 of 500 shadow requests (SHADOW_MIN_REQUESTS), 0 of 30 of them labelled"),
    (live(600, 40, 0.8000, 0.7500, 0.912), True, "archived",
     "refused on live traffic: weighted F1 0.7500 vs champion v3 0.8000 on the same 40 labelled requests (-0.0500, "
     "a loss above SHADOW_MAX_F1_LOSS 0.02; agreement 91.2% on 600 shadow requests) although it wins on the "
     "holdout: weighted_f1 0.8421 > threshold 0.75 and > champion v3 0.8310 (+0.0111): archived (champion v3 kept)"),
    # a loss of exactly SHADOW_MAX_F1_LOSS is allowed (0.8000 - 0.7800 is 0.02000000000000002 in floats)
    (live(600, 40, 0.8000, 0.7800, 0.95), True, "promoted",
     "weighted_f1 0.8421 > threshold 0.75 and > champion v3 0.8310 (+0.0111); live: agreement 95.0% on 600 shadow "
     "requests, live weighted F1 0.7800 vs champion v3 0.8000 on the same 40 labelled requests (-0.0200): promoted"),
    (live(600, 40, 0.8000, 0.7900, 0.95), True, "promoted",  # a loss within SHADOW_MAX_F1_LOSS
     "weighted_f1 0.8421 > threshold 0.75 and > champion v3 0.8310 (+0.0111); live: agreement 95.0% on 600 shadow "
     "requests, live weighted F1 0.7900 vs champion v3 0.8000 on the same 40 labelled requests (-0.0100): promoted"),
    (live(600, 40, 0.8000, 0.8200, 0.95), False, "needs_approval",
     "weighted_f1 0.8421 > threshold 0.75 and > champion v3 0.8310 (+0.0111); live: agreement 95.0% on 600 shadow "
     "requests, live weighted F1 0.8200 vs champion v3 0.8000 on the same 40 labelled requests (+0.0200): would be "
     "promoted, but auto-promotion is disabled"),
])
def test_the_promotion_rule_with_live_evidence(evidence, auto, expected_decision, expected_text):
    decision, rule, text = decide("weighted_f1", 0.8421, "3", 0.8310, threshold=0.75, min_improvement=0.0,
                                  auto_promotion=auto, live=evidence, min_requests=500, min_labelled=30,
                                  max_f1_loss=0.02)
    assert decision == expected_decision
    assert text.startswith(expected_text)
    assert "SHADOW_MIN_REQUESTS 500" in rule


def test_live_evidence_only_for_a_holdout_winner_with_a_champion():
    # the holdout refuses it: decided now, no waiting for traffic
    decision, _, text = decide("weighted_f1", 0.8000, "3", 0.8310, threshold=0.75, min_improvement=0.0,
                               auto_promotion=True, live=live(5), min_requests=500, min_labelled=30)
    assert decision == "archived" and text.endswith("; live: agreement 90.0% on 5 shadow requests, none labelled "
                                                    "(live F1 not compared): archived (champion v3 kept)")
    # no champion: no traffic to shadow, nothing to wait for
    decision, rule, _ = decide("weighted_f1", 0.8421, None, None, threshold=0.75, min_improvement=0.0,
                               auto_promotion=True, min_requests=500, min_labelled=30)
    assert decision == "promoted" and "live" not in rule
    # SHADOW_MIN_REQUESTS=0: the rule of old; live numbers there are quoted, never decisive
    decision, _, text = decide("weighted_f1", 0.8421, "3", 0.8310, threshold=0.75, min_improvement=0.0,
                               auto_promotion=True, live=live(600, 40, 0.9, 0.5), min_requests=0, max_f1_loss=0.0)
    assert decision == "promoted" and "live (not required: SHADOW_MIN_REQUESTS=0): agreement 90.0%" in text
    # enough requests, none labelled and none required: promoted, saying the F1 was not compared
    decision, _, text = decide("weighted_f1", 0.8421, "3", 0.8310, threshold=0.75, min_improvement=0.0,
                               auto_promotion=True, live=live(600), min_requests=500, min_labelled=0)
    assert decision == "promoted" and "none labelled (live F1 not compared): promoted" in text


def add_shadow(conn, champion: str, challenger: str, truth: list[int], champion_says: list[int],
               challenger_says: list[int], unlabelled: int, tag: str) -> None:
    """Shadow rows of the pair: one labelled request per truth (labelled by request_id, the way
    POST /feedback does), then `unlabelled` requests on which both agree."""
    now = datetime.now(timezone.utc)
    rows = []
    for i, (a, b) in enumerate(list(zip(champion_says, challenger_says)) + [(PRDTYPECODES[0],) * 2] * unlabelled):
        rows.append({"logged_at": now, "request_id": f"{tag}-{i}", "item_index": 0, "champion_version": champion,
                     "champion_code": a, "challenger_version": challenger, "predicted_code": b, "confidence": 0.9,
                     "top_k": [{"prdtypecode": b, "probability": 0.9}], "latency_ms": 0.5})
    store.insert_shadow_rows(conn, rows)
    for i, t in enumerate(truth):
        store.insert_feedback(conn, true_code=t, request_id=f"{tag}-{i}", submitted_by="moderator")
    conn.commit()


def test_promote_waits_for_live_evidence_then_decides_on_it(small_catalogue, conn, settings):
    s = settings.replace(min_f1_threshold=0.05, promotion_require_beat_baseline=False, shadow_min_requests=20,
                         shadow_min_labelled=10, shadow_max_f1_loss=0.02)
    load_all(conn, s, small_catalogue)
    v1 = challenger(conn, s, WEAK)
    first = promote(conn, s, T)
    assert first.outputs["decision"] == "promoted" and first.outputs["live"] is None  # no champion to shadow

    v2 = challenger(conn, s, GOOD)  # wins on the holdout...
    waiting = promote(conn, s, T)
    assert waiting.status == "skipped" and waiting.outputs["decision"] == "awaiting_evidence"
    assert waiting.message.startswith(f"version {v2}: awaiting live evidence: 0 of 20 shadow requests "
                                      "(SHADOW_MIN_REQUESTS), 0 of 10 of them labelled (SHADOW_MIN_LABELLED); ")
    assert alias_map(s) == {"champion": v1, "challenger": v2, "previous-champion": None}
    assert decisions(conn) == [(v1, "promoted")]  # waiting is not a decision
    assert "shadow_load_failures" not in waiting.outputs and "cannot load" not in waiting.message

    # the API's shadow cannot load v2 (as its worker records it): the wait says why
    store.record_shadow_load(conn, model_name=s.model_name, model_version=v2, host="api-1",
                             error=f"cannot load version {v2}: the artifact store is gone")
    conn.commit()
    stuck = promote(conn, s, T)
    assert stuck.status == "skipped" and stuck.outputs["decision"] == "awaiting_evidence"
    assert re.search(rf"; the API's shadow cannot load version {v2} \(on api-1, since \d{{4}}-\d\d-\d\d \d\d:\d\d "
                     rf"UTC: cannot load version {v2}: the artifact store is gone\): no live evidence comes until "
                     r"it loads \(GET /health, shadow.load_error\)$", stuck.message), stuck.message
    assert [u["host"] for u in stuck.outputs["shadow_load_failures"]] == ["api-1"]
    store.record_shadow_load(conn, model_name=s.model_name, model_version=v2, host="api-1", error=None)  # loaded
    conn.commit()
    assert load_failures(conn, s, v2) == []
    assert "cannot load" not in promote(conn, s, T).message
    # a host that stopped (not seen failing for 3 of its retries' longest gaps) no longer speaks for the API
    gap = holder.RETRY_MAX_SECONDS + s.model_poll_seconds
    for host, seen in (("api-2", 3 * gap - 60), ("api-gone", 3 * gap + 60)):
        store.record_shadow_load(conn, model_name=s.model_name, model_version=v2, host=host, error="cannot load")
        with conn.cursor() as cur:
            cur.execute("UPDATE shadow_load_failures SET first_at = now() - make_interval(secs => %s), "
                        "last_at = now() - make_interval(secs => %s) WHERE host = %s", (seen, seen, host))
    conn.commit()
    stuck = promote(conn, s, T)
    assert [u["host"] for u in stuck.outputs["shadow_load_failures"]] == ["api-2"], stuck.outputs
    assert "(on api-2, since" in stuck.message

    # ...and loses on live labelled traffic: 12 labelled requests, the champion right on all, v2 on 6
    codes = list(PRDTYPECODES[:12])
    wrong = codes[6:] + codes[:6]
    add_shadow(conn, v1, v2, codes, codes, codes[:6] + wrong[6:], unlabelled=10, tag="lose")
    expected = f1_score(codes, codes[:6] + wrong[6:], average="weighted")
    refused = promote(conn, s, T)
    o = refused.outputs
    assert refused.status == "succeeded" and o["decision"] == "archived"
    assert o["live"]["n"] == 22 and o["live"]["n_labelled"] == 12
    assert o["justification"].startswith(
        f"refused on live traffic: weighted F1 {expected:.4f} vs champion v{v1} 1.0000 on the same 12 labelled "
        f"requests ({expected - 1:+.4f}, a loss above SHADOW_MAX_F1_LOSS 0.02; agreement {16 / 22:.1%} on 22 "
        "shadow requests) although it wins on the holdout")
    assert o["justification"].endswith(f"archived (champion v{v1} kept)")
    assert alias_map(s) == {"champion": v1, "challenger": None, "previous-champion": None}
    row = query(conn, "SELECT decision, justification FROM model_decisions ORDER BY id DESC LIMIT 1")[0]
    assert row == ("archived", o["justification"])

    # a challenger that wins on both is promoted, with the live numbers in its justification
    v3 = challenger(conn, s, GOOD)
    champion_says = codes[:6] + wrong[6:]
    add_shadow(conn, v1, v3, codes, champion_says, codes, unlabelled=8, tag="win")
    promoted = promote(conn, s, T)
    o = promoted.outputs
    before = f1_score(codes, champion_says, average="weighted")
    assert o["decision"] == "promoted" and alias_map(s)["champion"] == v3
    assert o["justification"].endswith(
        f"; live: agreement {14 / 20:.1%} on 20 shadow requests, live weighted F1 1.0000 vs champion v{v1} "
        f"{before:.4f} on the same 12 labelled requests ({1 - before:+.4f}): promoted")
    assert decisions(conn) == [(v1, "promoted"), (v2, "archived"), (v3, "promoted")]


# --- the daily report ---------------------------------------------------------------------------------
def test_the_daily_report_has_the_windows_shadow_section(api_env, trained, conn, settings):  # noqa: F811
    source = db.open_db(trained.settings)  # the champion's training-time reference, as drift needs it
    try:
        ref = store.get_model_reference(source, trained.model_name, trained.v1)
    finally:
        source.close()
    store.insert_model_reference(conn, model_name=settings.model_name, model_version=trained.v1,
                                 mlflow_run_id=ref["mlflow_run_id"], summary=ref["summary"])
    n = simulate_traffic(conn, settings, trained.models[trained.v1], trained.v1, start=DAY0, days=7, per_day=30,
                         seed=3, feedback_rate=0.3)
    conn.commit()
    served = query(conn, """SELECT request_id, logged_at, designation, description, predicted_code
                            FROM inference_log ORDER BY id""")
    assert len(served) == n == 210
    items = [{"designation": d, "description": x} for _r, _t, d, x, _p in served]
    says = [int(c) for c in trained.models[trained.v2].predict(frame(items))]
    rows = [{"logged_at": t, "request_id": rid, "item_index": 0, "champion_version": trained.v1, "champion_code": p,
             "challenger_version": trained.v2, "predicted_code": c, "confidence": 0.5, "top_k": [], "latency_ms": 1.0}
            for (rid, t, _d, _x, p), c in zip(served, says)]
    # and one request before the window: not in it
    rows.append({**rows[0], "logged_at": DAY0 - timedelta(hours=1), "request_id": "before"})
    store.insert_shadow_rows(conn, rows)
    conn.commit()
    # labels: the simulation's (by inference_id), one more by request_id, one relabelled (the latest counts)
    labels = {rid: t for rid, t in query(conn, """SELECT i.request_id, f.true_code FROM feedback f
                                                  JOIN inference_log i ON i.id = f.inference_id""")}
    unlabelled = next(r for r in served if r[0] not in labels)
    store.insert_feedback(conn, true_code=PRDTYPECODES[3], request_id=unlabelled[0], submitted_by="moderator")
    relabelled = next(iter(labels))
    second = store.insert_feedback(conn, true_code=PRDTYPECODES[5], request_id=relabelled, submitted_by="moderator")
    with conn.cursor() as cur:  # given after the simulated label (whose time is the simulated traffic's, ahead)
        cur.execute("""UPDATE feedback SET created_at = (SELECT max(f.created_at) + interval '1 hour' FROM feedback f
                                                         JOIN inference_log i ON i.id = f.inference_id
                                                         WHERE i.request_id = %s) WHERE id = %s""",
                    (relabelled, second["id"]))
    store.resolve_pending_feedback(conn, [unlabelled[0], relabelled])  # tied, as the API's writer ties them
    labels.update({unlabelled[0]: PRDTYPECODES[3], relabelled: PRDTYPECODES[5]})
    conn.commit()

    r = drift(conn, settings, T, as_of=DAY0 + timedelta(days=7), window_days=(7,))
    assert r.status == "succeeded", r.message
    section = query(conn, "SELECT shadow FROM drift_reports WHERE id = %s", (r.outputs["reports"][0]["id"],))[0][0]
    assert section["window"]["days"] == 7 and section["n"] == 210
    pair, = section["pairs"]
    champion = [p for *_, p in served]
    assert (pair["champion_version"], pair["challenger_version"]) == (trained.v1, trained.v2)
    agree = sum(a == b for a, b in zip(champion, says))
    assert (pair["n"], pair["n_agree"], pair["agreement"]) == (210, agree, round(agree / 210, 4))
    # the class they disagree on most: counted here from the rows themselves
    per_class: dict[int, int] = {}
    for a, b in zip(champion, says):
        if a != b:
            per_class[a] = per_class.get(a, 0) + 1
            per_class[b] = per_class.get(b, 0) + 1
    top = pair["top_disagreements"][0]
    assert top["disagreements"] == max(per_class.values()) and per_class[top["prdtypecode"]] == top["disagreements"]
    # live F1 of both on the same labelled requests
    index = {r[0]: i for i, r in enumerate(served)}
    truth = [labels[rid] for rid in labels]
    assert pair["n_labelled"] == len(labels)
    assert pair["champion_weighted_f1"] == pytest.approx(
        f1_score(truth, [champion[index[rid]] for rid in labels], average="weighted"), abs=1e-4)
    assert pair["challenger_weighted_f1"] == pytest.approx(
        f1_score(truth, [says[index[rid]] for rid in labels], average="weighted"), abs=1e-4)


def test_shadow_rows_are_day_partitioned_and_retention_drops_whole_days(conn, settings):
    """shadow_predictions is partitioned by UTC day like inference_log (migration 011): the
    partitions step makes its days ahead, a row of a day without a partition lands in the default
    partition and is drained into its day, retention drops whole days past
    INFERENCE_LOG_RETENTION_DAYS (and purges the default partition's old rows), nothing newer."""
    from mlops_cli.partitions import ensure_partitions
    from mlops_cli.steps.retention import apply_retention

    today = datetime.now(timezone.utc).date()
    horizon = datetime.combine(today - timedelta(days=settings.inference_log_retention_days), datetime.min.time(),
                               tzinfo=timezone.utc)
    out = ensure_partitions(conn, settings, today=today)
    assert out["shadow"]["created"][0] == today.isoformat()
    old_day = (horizon - timedelta(days=3)).date()
    store.ensure_day_partition(conn, old_day, "shadow_predictions")  # a day past retention, with its partition
    conn.commit()
    times = [horizon - timedelta(days=3) + timedelta(hours=1),   # in old_day's partition: dropped whole
             horizon - timedelta(days=40),                        # a day without partition (default): purged
             horizon - timedelta(days=1) + timedelta(hours=2),    # default too, past retention: purged
             horizon + timedelta(hours=1),                        # default, within retention: drained, kept
             datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc) + timedelta(minutes=5)]
    store.insert_shadow_rows(conn, [{"logged_at": t, "request_id": f"r-{i}", "item_index": 0, "champion_version": "1",
                                     "champion_code": 10, "challenger_version": "2", "predicted_code": 10,
                                     "confidence": 1.0, "top_k": [], "latency_ms": None} for i, t in enumerate(times)])
    conn.commit()
    drained = ensure_partitions(conn, settings, today=today)["shadow"]["drained"]
    assert drained == {horizon.date().isoformat(): 1}  # the kept day got its partition and its row
    out = apply_retention(conn, settings, today=today)["shadow"]
    assert out == {"dropped": [{"day": old_day.isoformat(), "rows": 1}], "default_purged": 2,
                   "load_failures_pruned": 0}
    assert sorted(r[0] for r in shadow_rows(conn)) == ["r-3", "r-4"]
    names = {p["name"] for p in store.inference_partitions(conn, "shadow_predictions")}
    assert store.partition_name(old_day, "shadow_predictions") not in names
    assert {store.partition_name(today, "shadow_predictions"), "shadow_predictions_default"} <= names
    assert store.detached_partition_tables(conn, "shadow_predictions") == []


# --- the Models page --------------------------------------------------------------------------------
def test_models_page_shows_the_shadow_comparison(api_env, trained, conn):  # noqa: F811
    from streamlit.testing.v1 import AppTest

    api_env.setenv("SHADOW_MIN_REQUESTS", "40")
    api_env.setenv("SHADOW_MIN_LABELLED", "5")
    api_env.setenv("UI_PUBLIC_READ", "true")
    registry.set_alias(trained.settings, registry.CHALLENGER, trained.v2)
    try:
        codes = list(PRDTYPECODES[:6])
        add_shadow(conn, trained.v1, trained.v2, codes, codes, codes[:4] + [codes[0], codes[0]], unlabelled=24,
                   tag="ui")
        store.insert_run(conn, pipeline="manual", step="promote", status="skipped", triggered_by="cli", actor="pytest",
                         outputs={"decision": "awaiting_evidence", "model_version": trained.v2,
                                  "justification": "awaiting live evidence: 30 of 40 shadow requests"})
        store.record_shadow_load(conn, model_name=trained.settings.model_name, model_version=trained.v2,
                                 host="api-2", error="cannot load version 2: *no* such artifact")
        conn.commit()
        at = AppTest.from_file(str(REPO / "streamlit_app" / "pages" / "2_Models.py"), default_timeout=60).run(timeout=120)
        assert not at.exception, [e.value for e in at.exception]
    finally:
        registry.delete_alias(trained.settings, registry.CHALLENGER)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["shadow requests"] == "30 / 40"
    assert metrics["agreement"] == f"{28 / 30:.1%}"
    assert metrics[f"live F1 challenger v{trained.v2}"] == f"{f1_score(codes, codes[:4] + [codes[0]] * 2, average='weighted'):.4f}"
    assert metrics[f"live F1 champion v{trained.v1}"] == "1.0000"
    assert any("awaits live evidence: 30 of 40 shadow requests (SHADOW_MIN_REQUESTS), 6 of them labelled"
               in shown(i.value) for i in at.info)  # as read: the page escapes stored text
    tables = [d.value for d in at.dataframe if "disagreements" in d.value.columns]
    assert len(tables) == 1 and tables[0]["disagreements"].iloc[0] == 2  # codes[0]: said twice by the challenger only
    [error] = [shown(e.value) for e in at.error if "cannot load" in shown(e.value)]
    assert error.startswith(f"The API's shadow on api-2 cannot load challenger v{trained.v2} (since ")
    assert error.endswith("cannot load version 2: *no* such artifact. Nothing is scored with it, and promotion's "
                          "live evidence cannot come, until it loads: fix or replace the version.")


def test_a_reused_request_id_with_one_shadow_row_left_counts_no_label(conn):
    """A client sent one X-Request-ID for product 3 (not shadowed: the queue was full, the
    challenger failed or did not exist yet) and then for product 4 (shadowed). The label given for
    product 3 counts for no shadow row. Before, product 4's row was scored against it: the
    reused-id check looked at shadow rows only."""
    now = datetime.now(timezone.utc)
    with conn.cursor() as cur:
        for k, pid in enumerate((3, 4)):
            cur.execute("""INSERT INTO inference_log (logged_at, request_id, productid, designation, description,
                                                      designation_len, description_len, predicted_code, confidence)
                           VALUES (%s, 'dup', %s, 'titre', '', 5, 0, 10, 0.5)""", (now + timedelta(seconds=k), pid))
    store.insert_shadow_rows(conn, [
        {"logged_at": now + timedelta(seconds=1), "request_id": "dup", "item_index": 0, "champion_version": "1",
         "champion_code": 10, "challenger_version": "2", "predicted_code": 40, "confidence": 0.5, "top_k": [],
         "latency_ms": 1.0}])
    store.insert_feedback(conn, true_code=40, request_id="dup", productid=3)
    store.resolve_pending_feedback(conn)
    conn.commit()
    assert query(conn, "SELECT i.productid FROM feedback f JOIN inference_log i ON i.id = f.inference_id") == [(3,)]
    counts, labelled = store.shadow_counts(conn, None, None)
    assert sum(r["n"] for r in counts) == 1 and labelled == []


def test_live_labels_count_only_for_the_request_they_are_about(conn):
    """Shadow rows are linked to labels by request_id: a label the rules did not tie to its
    request's prediction (another product's) counts for no shadow row, and a request_id a client
    reused (several shadow rows) for none of them."""
    now = datetime.now(timezone.utc)
    logged = [("own", 1), ("other", 2), ("dup", 3), ("dup", 4)]
    with conn.cursor() as cur:
        for k, (rid, pid) in enumerate(logged):
            cur.execute("""INSERT INTO inference_log (logged_at, request_id, productid, designation, description,
                                                      designation_len, description_len, predicted_code, confidence)
                           VALUES (%s, %s, %s, 'titre', '', 5, 0, 10, 0.5)""", (now + timedelta(seconds=k), rid, pid))
    store.insert_shadow_rows(conn, [
        {"logged_at": now + timedelta(seconds=k), "request_id": rid, "item_index": 0, "champion_version": "1",
         "champion_code": 10, "challenger_version": "2", "predicted_code": 40, "confidence": 0.5, "top_k": [],
         "latency_ms": 1.0} for k, (rid, _pid) in enumerate(logged)])
    store.insert_feedback(conn, true_code=40, request_id="own")
    store.insert_feedback(conn, true_code=40, request_id="other", productid=99)  # another product: not tied
    store.insert_feedback(conn, true_code=40, request_id="dup", productid=3)      # tied to product 3's
    store.resolve_pending_feedback(conn)
    conn.commit()
    assert query(conn, "SELECT request_id, inference_id IS NOT NULL FROM feedback ORDER BY id") == [
        ("own", True), ("other", False), ("dup", True)]
    counts, labelled = store.shadow_counts(conn, None, None)
    assert sum(r["n"] for r in counts) == 4
    assert [(r["true_code"], r["n"]) for r in labelled] == [(40, 1)]  # "own" alone
