"""The serving API against the real stack: PostgreSQL, the MLflow registry, trained models.

Two versions of a small model are trained once for the module (their own database and model
name); each test points MODEL_NAME at them and keeps its own fresh application database (the
autouse fixture), so inference_log, feedback and api_audit rows are the test's own. Tests that
move the champion alias put it back on version 1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from types import SimpleNamespace

import pandas as pd
import psycopg2
import pytest
from fastapi.testclient import TestClient

from mlops_cli import config, db, registry, store
from mlops_cli.api import NO_MODEL, create_app
from mlops_cli.categories import PRDTYPECODES
from mlops_cli.runs import Trigger
from mlops_cli.serving import InferenceLogger, LoadedModel, ServingMetrics
from mlops_cli.sources import read_source

from conftest import _admin, _with_db, query, wait_for

TOKEN = "s3cret-token-for-tests"
PARAMS = {"word_max_features": 20000, "char_max_features": 20000}


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(pg_server, artifact_root, tmp_path_factory, small_catalogue):
    """Versions 1 and 2 of a model trained on the small catalogue; champion -> 1."""
    from mlops_cli.steps.load import load
    from mlops_cli.steps.train import train

    admin_url, template, mlflow_url = pg_server
    name = f"api_{uuid.uuid4().hex[:8]}"
    _admin(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    home = tmp_path_factory.mktemp("api-home")
    s = config.Settings(database_url=_with_db(admin_url, name), mlflow_tracking_uri=mlflow_url,
                        artifact_root=str(artifact_root), home=home, model_name=f"api-model-{name}",
                        experiment_name=f"exp-{template}", initial_load_fraction=1.0)
    x, y = small_catalogue
    conn = db.open_db(s)
    try:
        assert load(conn, s, Trigger(actor="pytest"), x_path=str(x), y_path=str(y)).status == "succeeded"
        r1 = train(conn, s, Trigger(actor="pytest"), params=PARAMS)
        r2 = train(conn, s, Trigger(actor="pytest"), force=True, params={**PARAMS, "alpha": 1e-4})
    finally:
        conn.close()
    v1, v2 = r1.outputs["model_version"], r2.outputs["model_version"]
    registry.set_version_tags(s, v1, {"stage": "Production"})  # a former champion (rollback test)
    registry.set_alias(s, registry.CHAMPION, v1)
    source = read_source(x, y)
    yield SimpleNamespace(settings=s, model_name=s.model_name, v1=v1, v2=v2,
                          models={v1: registry.load_model(s, version=v1), v2: registry.load_model(s, version=v2)},
                          rows=source[["designation", "description", "productid"]].reset_index(drop=True))
    try:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg2.Error:
        pass


@pytest.fixture
def api_env(monkeypatch, trained):
    """Environment of a served app: the module's model, fast polling and flushing, a token."""
    monkeypatch.setenv("MODEL_NAME", trained.model_name)
    monkeypatch.setenv("MODEL_POLL_SECONDS", "0.2")
    monkeypatch.setenv("INFERENCE_LOG_FLUSH_SECONDS", "0.1")
    monkeypatch.setenv("API_TOKEN", TOKEN)
    registry.set_alias(trained.settings, registry.CHAMPION, trained.v1)
    yield monkeypatch
    registry.set_alias(trained.settings, registry.CHAMPION, trained.v1)


@pytest.fixture
def client(api_env):
    app = create_app(config.load_settings())
    with TestClient(app) as c:
        yield c


def auth(token: str = TOKEN, **headers) -> dict:
    return {"Authorization": f"Bearer {token}", **headers}


def token_of(conn, name: str, role: str = "operator") -> str:
    """A named API token (`mlops api-token add`): its owner is the actor of what it does."""
    from mlops_cli import access

    return access.create_token(conn, name, role, "pytest")[0]


def products(trained, n: int, start: int = 0) -> list[dict]:
    out = []
    for r in trained.rows.iloc[start:start + n].itertuples():
        out.append({"designation": r.designation, "description": r.description or None,
                    "productid": int(r.productid)})
    return out


def frame(items: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"designation": [i["designation"] for i in items],
                         "description": [i.get("description") or "" for i in items]})


# --- prediction ------------------------------------------------------------------------------------
def test_predictions_match_the_champion(client, trained):
    items = products(trained, 40) + [
        {"designation": "Console PS4 Slim 500 Go + manette", "description": None},
        {"designation": "<b>Piscine</b> tubulaire &amp; pompe", "description": "Ã©tat neuf"},
        {"designation": "フィギュア ルフィ", "description": ""},
        {"designation": "zzqx unseen words only", "description": "qqq"},
    ]
    model = trained.models[trained.v1]
    expected = model.predict(frame(items))
    proba = model.predict_proba(frame(items))
    classes = list(model.classes_)
    single = []
    for item in items:
        r = client.post("/predict", json=item)
        assert r.status_code == 200, r.text
        single.append(r.json())
    r = client.post("/predict?top_k=5", json={"items": items})
    assert r.status_code == 200, r.text
    batch = r.json()
    assert batch["count"] == len(items) and batch["model_version"] == trained.v1
    for i, (one, many) in enumerate(zip(single, batch["predictions"])):
        for p in (one, many):
            assert p["prdtypecode"] == int(expected[i])
            assert p["model_version"] == trained.v1
            assert p["confidence"] == pytest.approx(proba[i, classes.index(expected[i])], abs=1e-6)
            assert p["top_k"][0]["prdtypecode"] == p["prdtypecode"]
            assert p["category"] and p["top_k"][0]["category"] == p["category"]
            probs = [t["probability"] for t in p["top_k"]]
            assert probs == sorted(probs, reverse=True)
            for t in p["top_k"]:
                assert t["probability"] == pytest.approx(proba[i, classes.index(t["prdtypecode"])], abs=1e-6)
        assert len(one["top_k"]) == 3 and len(many["top_k"]) == 5
        assert one["productid"] == items[i].get("productid")
    ids = [p["request_id"] for p in single + batch["predictions"]]
    assert len(set(ids)) == len(ids)
    assert client.get("/health").json()["fast_path"] is True


@pytest.mark.parametrize("params", [{"word_ngram_max": 3, "max_iter": 5},
                                    {"classifier": "logreg", "fold_accents": True, "max_iter": 30},
                                    # calibrated (what `mlops train` registers): softmax(decision / T)
                                    {"classifier": "sgd", "alpha": 6e-4, "temperature": 0.07},
                                    {"classifier": "linearsvc", "C": 0.3, "temperature": 0.2, "epsilon": 0.04},
                                    {"classifier": "logreg", "C": 10.0, "max_iter": 30, "temperature": 0.6},
                                    # the plain baseline's shape: one word block, no title characters
                                    {"word_min_df": 1, "word_max_features": 0, "char_max_features": 0,
                                     "classifier": "linearsvc", "temperature": 0.3},
                                    # small data's shape: words, title and text characters
                                    {"text_char_max_features": 5000, "classifier": "sgd", "alpha": 6e-3,
                                     "temperature": 0.08, "epsilon": 0.05}])
def test_fast_path_is_the_pipelines_arithmetic(small_catalogue, params):
    """The fast path's decision values are scikit-learn's bit for bit, for a batch and for one
    product alone (ranked in plain Python), with word trigrams, accent folding and softmax."""
    import numpy as np

    from mlops_cli.features import build_pipeline
    from mlops_cli.serving import FastPredictor, check_fast_path

    rows = read_source(*small_catalogue).reset_index(drop=True)
    model = build_pipeline({"word_max_features": 5000, "char_max_features": 5000, "fit_jobs": 1, **params})
    model.fit(rows[["designation", "description"]].iloc[:2000], rows["prdtypecode"].iloc[:2000])
    test = rows.iloc[2000:2300]
    items = list(zip(test["designation"], [d or None for d in test["description"]])) + [
        ("zzqx qqq", None), ("<b>Piscine</b> &amp; pompe", "Ã©tat neuf 3x2m"), ("フィギュア", "")]
    X = frame([{"designation": d, "description": e} for d, e in items])
    fast = FastPredictor.build(model)
    assert fast is not None and check_fast_path(model, fast)
    proba, decision = fast.scores(items)
    assert np.array_equal(decision, model.decision_function(X))
    assert np.allclose(proba, model.predict_proba(X), rtol=0, atol=1e-6)
    expected = model.predict(X).tolist()
    assert fast.predict(items, 1).codes == expected
    singles = [fast.predict([it], 3) for it in items]
    assert [r.codes[0] for r in singles] == expected
    classes = model.classes_.tolist()
    for r, p, d in zip(singles, model.predict_proba(X), model.decision_function(X)):
        assert r.top_codes[0] == [classes[i] for i in np.argsort(-d, kind="stable")[:3]]
        assert r.top_proba[0] == pytest.approx([p[classes.index(c)] for c in r.top_codes[0]], abs=1e-6)
    assert LoadedModel.prepare("1", model).fast is not None


def test_request_ids_are_time_ordered(client, trained):
    """Generated request ids: 32 hex digits, unique, increasing from one millisecond to the next
    (the inference_log request_id index grows at its right edge)."""
    ids = []
    for item in products(trained, 5):
        ids.append(client.post("/predict", json=item).json()["request_id"])
        time.sleep(0.002)
    r = client.post("/predict", json={"items": products(trained, 3)})
    batch = [p["request_id"] for p in r.json()["predictions"]]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids + batch)
    assert len(set(ids + batch)) == len(ids + batch)
    assert ids == sorted(ids) and max(ids) < min(batch)


def test_client_request_id_header(client, trained):
    r = client.post("/predict", json=products(trained, 1)[0], headers={"X-Request-ID": "order-77"})
    assert r.json()["request_id"] == "order-77"
    r = client.post("/predict", json={"items": products(trained, 2)}, headers={"X-Request-ID": "bulk-1"})
    assert [p["request_id"] for p in r.json()["predictions"]] == ["bulk-1-0", "bulk-1-1"]
    r = client.post("/predict", json=products(trained, 1)[0], headers={"X-Request-ID": "bad id with spaces"})
    assert r.json()["request_id"] != "bad id with spaces"


def test_no_champion_is_503_and_not_ready(monkeypatch):
    monkeypatch.setenv("MODEL_POLL_SECONDS", "0.2")
    with TestClient(create_app(config.load_settings())) as c:  # this test's model name: no versions
        r = c.post("/predict", json={"designation": "Console PS4"})
        assert r.status_code == 503
        assert r.json() == {"detail": NO_MODEL}
        h = c.get("/health")
        assert h.status_code == 503
        assert h.json()["status"] == "not ready" and h.json()["model_version"] is None
        assert h.json()["database"]["reachable"] is True
        assert "mlops_model_ready 0.0" in c.get("/metrics").text


def test_health_when_ready(client, trained):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model_version"] == trained.v1
    assert body["model_name"] == trained.model_name
    assert body["database"] == {"reachable": True, "error": None}


def test_hot_swap_under_load_loses_no_request(client, trained):
    """Move the alias to v2 (a promotion), then back to v1 (a rollback) while two client threads
    keep predicting: every request succeeds, and each move is served within a few polls."""
    item = products(trained, 1)[0]
    stop = threading.Event()
    seen: list[tuple[float, int, str | None]] = []
    lock = threading.Lock()

    def hammer():
        while not stop.is_set():
            r = client.post("/predict", json=item)
            with lock:
                seen.append((time.monotonic(), r.status_code,
                             r.json().get("model_version") if r.status_code == 200 else r.text))

    def served(version, since, n=5):
        """n answers from `version` to requests sent after `since` (the load goes on meanwhile)."""
        with lock:
            return sum(1 for at, code, v in seen if at > since and v == version) >= n

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: served(trained.v1, 0), f"version {trained.v1} served under load")
        for target in (trained.v2, trained.v1):
            moved = time.monotonic()
            registry.set_alias(trained.settings, registry.CHAMPION, target)
            # the move is served, and requests keep flowing after it, whatever the machine's speed
            wait_for(lambda: served(target, moved), f"version {target} served after the alias moved")
    finally:
        stop.set()
        for t in threads:
            t.join()
    codes = [code for _, code, _ in seen]
    assert set(codes) == {200}, [s for s in seen if s[1] != 200][:3]
    metrics = client.get("/metrics").text
    assert 'mlops_model_reloads_total{result="success"} 3.0' in metrics  # start + 2 moves
    assert f'version="{trained.v1}"' in metrics


def test_reload_failure_keeps_serving_the_old_model(api_env, trained):
    app = create_app(config.load_settings(), start_background=False)
    with TestClient(app) as c:
        holder, now = app.state.holder, [0.0]
        holder._clock = lambda: now[0]  # the test's own clock: the retry pause without waiting
        holder._load = lambda s, v: (_ for _ in ()).throw(RuntimeError("artifact store down"))
        registry.set_alias(trained.settings, registry.CHAMPION, trained.v2)
        assert holder.refresh() is False
        assert holder.current.version == trained.v1
        assert "artifact store down" in holder.last_error and holder.load_failed
        r = c.post("/predict", json=products(trained, 1)[0])
        assert r.status_code == 200 and r.json()["model_version"] == trained.v1
        assert 'mlops_model_reloads_total{result="failure"} 1.0' in c.get("/metrics").text
        # the same version is not downloaded again at every poll: a pause first (from
        # MODEL_POLL_SECONDS, doubling); once it is over, it is tried again
        tries = []
        holder._load = lambda s, v: tries.append(v) or (_ for _ in ()).throw(RuntimeError("still down"))
        pause = holder.retry_pause
        now[0] += pause / 2
        assert holder.refresh() is False and tries == []
        now[0] += pause
        assert holder.refresh() is False and tries == [trained.v2]
        assert holder.retry_pause == 2 * pause and "still down" in holder.last_error
        holder._load = lambda s, v: registry.load_model(s, version=v)
        now[0] += 2 * pause
        assert holder.refresh() is True and holder.current.version == trained.v2
        assert holder.retry_pause is None and not holder.load_failed


def test_an_old_model_error_is_cleared_once_the_alias_reads_again_on_the_served_version(api_env, trained):
    """One failed read of the champion alias (an MLflow blip), or the alias moved to a version
    that cannot load and then back (a rollback): the served model was fine all along, and
    /health's last_model_error says so once the alias reads again. Before, the old error stayed
    until the served model next changed."""
    app = create_app(config.load_settings(), start_background=False)
    with TestClient(app) as c:
        holder, resolve, load = app.state.holder, app.state.holder._resolve, app.state.holder._load
        holder._resolve = lambda s, a: (_ for _ in ()).throw(ConnectionError("registry unreachable"))
        assert holder.refresh() is False and "cannot read the champion alias" in holder.last_error
        holder._resolve = resolve
        assert holder.refresh() is False and c.get("/health").json()["last_model_error"] is None
        holder._load = lambda s, v: (_ for _ in ()).throw(RuntimeError("version 2 is broken"))
        registry.set_alias(trained.settings, registry.CHAMPION, trained.v2)
        assert holder.refresh() is False and "version 2 is broken" in holder.last_error
        registry.set_alias(trained.settings, registry.CHAMPION, trained.v1)
        holder._load = load
        assert holder.refresh() is False and holder.current.version == trained.v1 and not holder.load_failed
        assert c.get("/health").json()["last_model_error"] is None


@pytest.mark.parametrize("fast", [True, False])
def test_a_lone_surrogate_in_a_title_is_answered_on_either_path(api_env, trained, fast):
    """A JSON `\\ud800` escape in a title: answered 200 by the fast path and by the scikit-learn
    path (a model without the fast path) alike. Before, the second answered 500: pandas' pyarrow
    strings refuse lone surrogates."""
    app = create_app(config.load_settings(), start_background=False)
    with TestClient(app) as c:
        app.state.holder._current = LoadedModel.prepare(trained.v1, trained.models[trained.v1], fast=fast)
        assert (app.state.holder.current.fast is not None) is fast
        r = c.post("/predict", content=b'{"designation": "Console PS4 \\ud800 slim", "description": null}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        expected = trained.models[trained.v1].predict(frame([{"designation": "Console PS4 \ufffd slim"}]))[0]
        assert r.json()["prdtypecode"] == int(expected)


def test_a_small_request_with_long_texts_is_predicted_off_the_event_loop(api_env, trained, monkeypatch):
    """A few products are predicted on the event loop only while their texts are short
    (INLINE_CHARS): four at MAX_TEXT_CHARS cost ~100 ms, during which the worker answered nobody
    else. Longer ones go to the thread pool, like larger batches."""
    from mlops_cli.api import predict as predict_route

    monkeypatch.setattr(predict_route, "INLINE_CHARS", 50)
    app = create_app(config.load_settings(), start_background=False)
    with TestClient(app) as c:
        loaded = app.state.holder.current
        inner, threads = loaded.fast.predict, []
        loaded.fast.predict = lambda items, top_k: threads.append(threading.current_thread().name) or \
            inner(items, top_k)
        loop = c.portal.call(lambda: threading.current_thread().name)
        short, long = {"designation": "Piscine 3x2m"}, {"designation": "Piscine tubulaire " * 3}
        assert c.post("/predict", json={"items": [short] * 4}).status_code == 200
        assert c.post("/predict", json={"items": [long] * 2}).status_code == 200
    assert threads[0] == loop and threads[1] != loop, threads


# --- input validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("body,where", [
    ({"designation": ""}, "designation"),
    ({"designation": "   \t\n"}, "designation"),
    ({"description": "no title"}, "designation"),
    ({"designation": 123}, "designation"),
    ({"designation": "ok", "description": 5}, "description"),
    ({"designation": "ok", "productid": "abc"}, "productid"),
    ({"designation": "ok", "productid": -3}, "productid"),
    ({"designation": "x" * 61}, "designation"),
    ({"designation": "ok", "description": "y" * 61}, "description"),
    ({"items": []}, "items"),
    ({"items": [{"designation": "a"}] * 4}, "items"),
    ({"items": [{"designation": "fine"}, {"designation": " "}]}, "items.1.designation"),
    ({"items": "nope"}, "items"),
    (["designation"], "body"),
])
def test_bad_input_is_422_with_a_clear_message(api_env, body, where):
    api_env.setenv("MAX_TEXT_CHARS", "60")
    api_env.setenv("MAX_BATCH_SIZE", "3")
    with TestClient(create_app(config.load_settings(), start_background=False)) as c:
        r = c.post("/predict", json=body)
    assert r.status_code == 422, r.text
    payload = r.json()
    assert isinstance(payload["detail"], list) and payload["detail"]
    assert where in payload["message"], payload["message"]
    assert all(len(json.dumps(e)) < 1000 for e in payload["detail"])  # no huge inputs echoed


def test_bad_query_and_json(client):
    assert client.post("/predict?top_k=0", json={"designation": "a"}).status_code == 422
    assert client.post("/predict?top_k=11", json={"designation": "a"}).status_code == 422
    r = client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert client.post("/predict?top_k=10", json={"designation": "a"}).status_code == 200


def test_error_messages_say_what_is_wrong(api_env):
    api_env.setenv("MAX_BATCH_SIZE", "2")
    with TestClient(create_app(config.load_settings(), start_background=False)) as c:
        r = c.post("/predict", json={"items": [{"designation": "a"}] * 3})
        assert "at most 2 items" in r.json()["message"] and "MAX_BATCH_SIZE" in r.json()["message"]
        r = c.post("/predict", json={"designation": "  "})
        assert "must not be empty" in r.json()["message"]


# --- the inference log -----------------------------------------------------------------------------
def test_inference_rows_reach_the_table(client, trained, conn):
    items = products(trained, 5) + [{"designation": "フィギュア ルフィ 新品", "description": None}]
    answers = [client.post("/predict", json=i).json() for i in items]
    answers += client.post("/predict", json={"items": items[:3]}).json()["predictions"]
    assert client.app.state.inference_log.flush(60)
    rows = store.find_inference(conn, request_id=answers[0]["request_id"])
    assert rows is not None
    got = query(conn, """SELECT request_id, model_version, productid, designation, description,
                                designation_len, description_len, n_tokens, n_oov, script, lang,
                                predicted_code, confidence, top_k, latency_ms, source
                         FROM inference_log ORDER BY id""")
    assert len(got) == len(answers)
    by_id = {g[0]: g for g in got}
    for item, answer in zip(items + items[:3], answers):
        g = by_id[answer["request_id"]]
        assert g[1] == trained.v1 and g[2] == item.get("productid")
        assert g[3] == item["designation"] and g[4] == (item.get("description") or "")
        assert g[5] == len(item["designation"]) and g[6] == len(item.get("description") or "")
        assert g[7] > 0 and g[8] is not None and 0 <= g[8] <= g[7]
        assert g[9] in ("latin", "cjk", "cyrillic", "other") and g[10]
        assert g[11] == answer["prdtypecode"] and g[12] == pytest.approx(answer["confidence"])
        assert [t["prdtypecode"] for t in g[13]] == [t["prdtypecode"] for t in answer["top_k"]]
        assert g[14] > 0 and g[15] == "api"
    assert by_id[answers[5]["request_id"]][9] == "cjk"
    metrics = client.get("/metrics").text
    assert f"mlops_inference_log_written_rows_total {float(len(answers))}" in metrics


def _rows(n: int, tag: str) -> list[dict]:
    from datetime import datetime, timezone

    return [{"logged_at": datetime.now(timezone.utc), "request_id": f"{tag}-{i}", "source": "api",
             "model_version": "1", "productid": i, "designation": f"Produit {i} livre", "description": "",
             "predicted_code": 10, "confidence": 0.5, "top_k": [{"prdtypecode": 10, "probability": 0.5}],
             "latency_ms": 1.0, "vocabulary": {"produit"}} for i in range(n)]


def test_logger_survives_a_failed_connect(settings, conn):
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise psycopg2.OperationalError("could not connect to server: Connection refused")
        return db.connect(settings)

    metrics = ServingMetrics()
    logger = InferenceLogger(settings, metrics=metrics, connect=flaky, flush_seconds=0.05,
                             backoff_initial=0.05)
    logger.start()
    try:
        logger.log_many(_rows(50, "flaky"))
        assert logger.flush(60)
    finally:
        assert logger.close(5)
    assert calls["n"] == 2
    assert store.count_inference_rows(conn) == 50
    got = query(conn, "SELECT n_tokens, n_oov, script, lang, designation_len FROM inference_log "
                      "WHERE request_id = 'flaky-0'")[0]
    assert got[:3] == (2, 1, "latin") and got[3] and got[4] == len("Produit 0 livre")
    assert logger.stats()["dropped"] == {"buffer_full": 0, "invalid": 0, "shutdown": 0}
    assert b"mlops_inference_log_write_errors_total 1.0" in metrics.render()


def test_logger_survives_a_killed_connection(settings, conn):
    """The writer's PostgreSQL session is terminated between two batches: the next batch is
    written on a new connection, nothing lost."""
    logger = InferenceLogger(settings, flush_seconds=0.05, backoff_initial=0.05)
    logger.start()
    try:
        logger.log_many(_rows(10, "a"))
        assert logger.flush(60)
        pid = logger._conn.get_backend_pid()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        conn.commit()
        logger.log_many(_rows(10, "b"))
        assert logger.flush(60)
    finally:
        logger.close(5)
    assert store.count_inference_rows(conn) == 20
    assert logger.stats()["written"] == 20


def test_logger_buffer_full_drops_and_counts(settings, conn):
    down = {"on": True}

    def connect():
        if down["on"]:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        return db.connect(settings)

    metrics = ServingMetrics()
    logger = InferenceLogger(settings, metrics=metrics, connect=connect, capacity=5, flush_seconds=0.05,
                             backoff_initial=0.05, backoff_max=0.1)
    logger.start()
    try:
        assert logger.log_many(_rows(4, "x")) == 4
        assert logger.log(_rows(1, "y")[0]) is True
        assert logger.log(_rows(1, "z")[0]) is False
        assert logger.log_many(_rows(3, "w")) == 0
        assert not logger.flush(0.5)  # the database is down: rows wait
        assert logger.pending == 5
        down["on"] = False
        assert logger.flush(60)
    finally:
        logger.close(5)
    assert store.count_inference_rows(conn) == 5
    assert logger.stats()["dropped"]["buffer_full"] == 4
    text = metrics.render().decode()
    assert 'mlops_inference_log_dropped_rows_total{reason="buffer_full"} 4.0' in text


def test_logger_isolates_rows_the_database_refuses(settings, conn):
    rows = _rows(5, "p")
    rows[2]["predicted_code"] = 2 ** 40  # out of INTEGER range: refused as data, not an outage
    rows[3]["designation"] = "nul \x00 byte and lone surrogate \ud800"
    # a label given before its prediction is logged: tied by the row-by-row writes too
    store.insert_feedback(conn, true_code=10, request_id="p-4", submitted_by="pytest")
    conn.commit()
    logger = InferenceLogger(settings, flush_seconds=0.05)
    logger.log_many(rows)
    assert logger.flush(60)  # no writer thread: written in this thread
    logger.close(2)
    ids = sorted(r[0] for r in query(conn, "SELECT request_id FROM inference_log"))
    assert ids == ["p-0", "p-1", "p-3", "p-4"]
    assert logger.stats()["dropped"]["invalid"] == 1
    assert query(conn, "SELECT i.request_id FROM feedback f JOIN inference_log i ON i.id = f.inference_id") == [("p-4",)]
    # NUL and the lone surrogate are U+FFFD, as in every stored text: the words stay apart
    assert query(conn, "SELECT designation FROM inference_log WHERE request_id = 'p-3'") == [
        ("nul \ufffd byte and lone surrogate \ufffd",)]


def test_a_label_given_while_its_prediction_is_being_logged_is_tied_to_it(settings, conn, monkeypatch):
    """Worker A records a label by request_id while worker B's writer has the prediction in a batch
    not yet committed, and has found no label waiting for it. Each side used to miss the other's
    uncommitted row: the label stayed untied for ever (never trained on, never counted). The
    writer now logs under a lock that the label's lookup takes exclusively: the label waits for
    the batch to commit, and finds its prediction."""
    from test_drift import _in_thread, _waiting_on_a_lock

    from mlops_cli.ops.feedback import record

    real, seen = store.resolve_pending_feedback, {}

    def resolve_then_a_label_arrives(c, ids=None):
        n = real(c, ids)  # nothing waits for these ids yet
        thread, out = _in_thread(lambda: record(settings, prdtypecode=10, request_id="q-0", submitted_by="mod"))
        wait_for(lambda: _waiting_on_a_lock(conn) == 1 or not thread.is_alive(), "the label to wait or finish")
        seen.update(thread=thread, out=out, waited=thread.is_alive())
        return n

    monkeypatch.setattr(store, "resolve_pending_feedback", resolve_then_a_label_arrives)
    logger = InferenceLogger(settings, flush_seconds=0.05)
    logger.log_many(_rows(1, "q"))
    assert logger.flush(60)  # no writer thread: written in this thread
    logger.close(2)
    seen["thread"].join(60)
    assert seen["waited"] and seen["out"]["result"].resolved is True, seen
    assert query(conn, """SELECT i.request_id, f.productid FROM feedback f
                          JOIN inference_log i ON i.id = f.inference_id""") == [("q-0", 0)]


def test_rows_buffered_during_an_outage_are_written_after(api_env, trained, conn):
    """Through the API: the writer cannot reach the database for a while; predictions keep
    being answered and every row lands once it can."""
    app = create_app(config.load_settings())
    logger = app.state.inference_log
    real = logger.connect
    state = {"fail": 3}

    def connect():
        if state["fail"]:
            state["fail"] -= 1
            raise psycopg2.OperationalError("could not connect to server: Connection refused")
        return real()

    logger.connect = connect  # the writer connects lazily: its first attempts fail
    logger.backoff_initial = logger._backoff = 0.05
    with TestClient(app) as c:
        answers = [c.post("/predict", json=i) for i in products(trained, 12)]
        assert all(a.status_code == 200 for a in answers)
        assert logger.flush(60)
    assert state["fail"] == 0
    assert store.count_inference_rows(conn) == 12


# --- feedback ------------------------------------------------------------------------------------
def test_feedback_by_request_id_and_inference_id(client, trained, conn):
    moderator = auth(token_of(conn, "moderator", "labeller"))
    answer = client.post("/predict", json=products(trained, 1)[0]).json()
    true_code = next(c for c in PRDTYPECODES if c != answer["prdtypecode"])
    r = client.post("/feedback", json={"request_id": answer["request_id"], "prdtypecode": true_code,
                                       "submitted_by": "moderator", "note": "wrong shelf"}, headers=moderator)
    assert r.status_code == 201, r.text
    fb = r.json()
    assert fb["resolved"] is True and fb["predicted_code"] == answer["prdtypecode"]
    assert fb["model_version"] == trained.v1 and fb["prdtypecode"] == true_code
    assert fb["productid"] == answer["productid"]
    inference_id = fb["inference_id"]
    r = client.post("/feedback", json={"inference_id": inference_id, "prdtypecode": 10}, headers=auth())
    assert r.status_code == 201 and r.json()["request_id"] == answer["request_id"]
    rows = query(conn, "SELECT inference_id, true_code, predicted_code, submitted_by FROM feedback ORDER BY id")
    assert rows == [(inference_id, true_code, answer["prdtypecode"], "moderator"),
                    (inference_id, 10, answer["prdtypecode"], "api")]  # API_TOKEN acts as API_TOKEN_NAME
    # a product named alone: one the API served is tied to its newest prediction (so retention
    # keeps that row); one never served and not in the catalogue has no text to learn from:
    # refused (issue 16)
    r = client.post("/feedback", json={"productid": answer["productid"], "prdtypecode": 2583}, headers=moderator)
    assert r.status_code == 201 and r.json()["resolved"] is True and r.json()["inference_id"] == inference_id
    r = client.post("/feedback", json={"productid": 42, "prdtypecode": 2583}, headers=moderator)
    assert r.status_code == 404 and "Product 42 was never served and is not in the catalogue" in r.json()["detail"]


def test_feedback_errors(client):
    r = client.post("/feedback", json={"inference_id": 987654, "prdtypecode": 10}, headers=auth())
    assert r.status_code == 404 and "987654" in r.json()["detail"]
    r = client.post("/feedback", json={"request_id": "abc", "prdtypecode": 11}, headers=auth())
    assert r.status_code == 422 and "unknown prdtypecode 11" in r.json()["message"]
    r = client.post("/feedback", json={"prdtypecode": 10}, headers=auth())
    assert r.status_code == 422 and "request_id" in r.json()["message"]
    r = client.post("/feedback", json={"request_id": "abc", "prdtypecode": "ten"}, headers=auth())
    assert r.status_code == 422


def test_feedback_needs_a_labeller_and_records_who(client, trained, conn):
    """Labels train the next model: no label without a proven identity, whose name is the
    label's submitted_by (never the one the body claims); a viewer cannot label; every request,
    refused ones included, is in api_audit (a refused caller's body is not kept)."""
    viewer, moderator = auth(token_of(conn, "vera", "viewer")), auth(token_of(conn, "mo", "labeller"))
    answer = client.post("/predict", json=products(trained, 1)[0]).json()
    label = {"request_id": answer["request_id"], "prdtypecode": 10}
    r = client.post("/feedback", json=label)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "missing bearer token: send 'Authorization: Bearer <token>' "
                                  "(`mlops api-token add NAME` makes one)"}
    r = client.post("/feedback", json=label, headers=auth("mlops_made-up-token-0123456789"))
    assert r.status_code == 401 and r.json() == {"detail": "invalid API token (unknown or revoked)"}
    r = client.post("/feedback", json=label, headers=viewer)
    assert r.status_code == 403 and r.json() == {"detail": "vera is a viewer: labelling needs the labeller role"}
    r = client.post("/feedback", json={**label, "submitted_by": "ceo@corp"}, headers=moderator)
    assert r.status_code == 403 and r.json() == {
        "detail": "this token acts as mo; submitted_by names 'ceo@corp': use that person's own token "
                  "(`mlops api-token add NAME`)"}
    r = client.post("/feedback", json=label, headers={**moderator, "X-Actor": "ceo@corp"})
    assert r.status_code == 403 and "X-Actor names 'ceo@corp'" in r.json()["detail"]
    assert query(conn, "SELECT count(*) FROM feedback") == [(0,)]
    r = client.post("/feedback", json=label, headers=moderator)
    assert r.status_code == 201 and r.json()["submitted_by"] == "mo"
    rows = query(conn, "SELECT actor, authenticated, role, status_code, params ? 'body' FROM api_audit "
                       "WHERE route = '/feedback' ORDER BY id")
    assert rows == [("unauthenticated", False, None, 401, False), ("unauthenticated", False, None, 401, False),
                    ("vera", True, "viewer", 403, True), ("mo", True, "labeller", 403, True),
                    ("mo", True, "labeller", 403, True), ("mo", True, "labeller", 201, True)]
    # revoked: refused at its next request
    from mlops_cli import access

    access.revoke_token(conn, "mo", "pytest")
    r = client.post("/feedback", json=label, headers=moderator)
    assert r.status_code == 401 and r.json() == {"detail": "invalid API token (unknown or revoked)"}


def test_feedback_rules_are_the_schemas(client, trained):
    """What the document states, the server does: an identifier given as null names nothing,
    a request_id is one POST /predict can return, no NUL in stored text, 3.0 is an integer;
    two ids that contradict the log are a conflict (409), not invalid input."""
    nulls = {"inference_id": None, "request_id": None, "productid": None, "prdtypecode": 10}
    assert client.post("/feedback", json=nulls, headers=auth()).status_code == 422
    r = client.post("/feedback", json={"request_id": "bad id", "prdtypecode": 10}, headers=auth())
    assert r.status_code == 422 and "request_id" in r.json()["message"]
    r = client.post("/feedback", json={"productid": 1, "prdtypecode": 10, "note": "nul \x00 here"}, headers=auth())
    assert r.status_code == 422 and "note" in r.json()["message"]
    answer = client.post("/predict", json=products(trained, 1)[0]).json()
    assert client.app.state.inference_log.flush(60)  # the product is served (a label for it is kept)
    r = client.post("/feedback", json={"productid": float(answer["productid"]), "prdtypecode": 2583.0},
                    headers=auth())
    assert r.status_code == 201 and (r.json()["productid"], r.json()["prdtypecode"]) == (answer["productid"], 2583)
    fb = client.post("/feedback", json={"request_id": answer["request_id"], "prdtypecode": 10},
                     headers=auth()).json()
    r = client.post("/feedback", json={"inference_id": fb["inference_id"], "request_id": "other-1",
                                       "prdtypecode": 10}, headers=auth())
    assert r.status_code == 409 and answer["request_id"] in r.json()["detail"]


def test_lone_surrogates_are_invalid_text_and_the_422_still_encodes(client, conn):
    """A JSON `\\ud800` escape without its pair: not text pydantic (or PostgreSQL) holds, so a
    422 naming the field, whose echo of the input encodes (U+FFFD), in feedback and the control API."""
    body = b'{"productid": 7, "prdtypecode": 10, "note": "half \\ud800 pair"}'
    r = client.post("/feedback", content=body, headers={"Content-Type": "application/json", **auth()})
    assert r.status_code == 422, r.text
    assert [(d["loc"], d["input"]) for d in r.json()["detail"]] == [(["body", "note"], "half \ufffd pair")]
    assert query(conn, "SELECT count(*) FROM feedback") == [(0,)]
    r = client.post("/api/rollback-model", content=b'{"reason": "why \\ud800", "by": "x"}',
                    headers={"Content-Type": "application/json", **auth()})
    assert r.status_code == 422 and "reason" in r.json()["message"], r.text
    assert query(conn, "SELECT route, status_code FROM api_audit ORDER BY id") == [
        ("/feedback", 422), ("/api/rollback-model", 422)]


def test_a_body_that_does_not_parse_is_422(client, conn):
    """Bytes that are not UTF-8 (FastAPI's bare 400) are invalid input like a JSON syntax error."""
    for path, headers in (("/predict", {}), ("/feedback", auth()), ("/api/rollback-model", auth())):
        r = client.post(path, content=b'{"designation": "caf\xe9"}',
                        headers={"Content-Type": "application/json", **headers})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["type"] == "json_invalid" and "UnicodeDecodeError" in r.json()["message"]
    rows = query(conn, "SELECT route, status_code FROM api_audit ORDER BY id")
    assert rows == [("/feedback", 422), ("/api/rollback-model", 422)]  # audited with the status the client got
    # UTF-16 (which Python's json.loads would decode) is not UTF-8 either; a UTF-8 BOM is allowed
    r = client.post("/predict", content='{"designation": "café"}'.encode("utf-16"),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "UnicodeDecodeError" in r.json()["message"], r.text
    r = client.post("/predict", content=b"\xef\xbb\xbf" + '{"designation": "café"}'.encode(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["prdtypecode"] in PRDTYPECODES, r.text
    # JSON sent as text/plain, or with no Content-Type: FastAPI does not parse it; the 422 says why
    r = client.post("/predict", content=b'{"designation": "ok"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 422 and r.json()["message"] == (
        "body: the body was sent as text/plain: send JSON, as application/json"), r.text
    r = client.post("/feedback", content=b'{"productid": 7, "prdtypecode": 10}', headers=auth())
    assert "content-type" not in r.request.headers and r.status_code == 422 and r.json()["message"] == (
        "body: the body was sent without a Content-Type: send JSON, as application/json"), r.text


def test_numbers_json_does_not_have_are_422_and_audited(client, conn):
    """NaN, Infinity and 1e400 (Python's json takes them; RFC 8259 has no such number): a 422
    naming them, anywhere in the body, an extra field included; nothing stored but the audit row
    (the body parses before the token is checked: not kept, as for any caller not proven)."""
    cases = [("/predict", b'{"designation": NaN}', {}, "NaN is not a JSON number"),
             ("/predict", b'{"items": [{"designation": "a", "description": -Infinity}]}', {}, "-Infinity is not"),
             ("/feedback", b'{"inference_id": 1, "prdtypecode": 1e400}', auth(), "1e400 is beyond the range"),
             ("/feedback", b'{"productid": 7, "prdtypecode": 10, "extra": NaN}', auth(), "NaN is not"),
             ("/api/thresholds", b'{"warning": NaN}', auth(), "NaN is not")]
    for path, body, headers, why in cases:
        r = client.post(path, content=body, headers={"Content-Type": "application/json", **headers})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["type"] == "json_invalid", r.text
        assert r.json()["message"].startswith(f"body: the body cannot be parsed as JSON: {why}"), r.text
    assert query(conn, "SELECT count(*) FROM feedback") == [(0,)]
    rows = query(conn, "SELECT route, status_code, detail FROM api_audit ORDER BY id")
    assert [(route, status) for route, status, _ in rows] == [("/feedback", 422), ("/feedback", 422),
                                                             ("/api/thresholds", 422)]
    assert "1e400 is beyond the range of a double" in rows[0][2]
    # a finite float is still a float
    r = client.post("/feedback", content=b'{"productid": 7, "prdtypecode": 10.0}',
                    headers={"Content-Type": "application/json", **auth()})
    assert r.status_code == 404 and r.json()["detail"].startswith("Product 7 was never served"), r.text


def test_feedback_waiting_for_its_prediction_is_not_tied_to_another_products(api_env, trained, conn):
    """A label given by request_id and productid before the prediction is logged: tied once it is,
    only when the prediction is about that product (the 409 rule when both are there at once)."""
    api_env.setenv("INFERENCE_LOG_FLUSH_SECONDS", "3600")  # written when the test flushes, not before
    with TestClient(create_app(config.load_settings())) as client:
        _feedback_waiting_for_its_prediction(client, trained, conn)


def _feedback_waiting_for_its_prediction(client, trained, conn) -> None:
    item = products(trained, 1)[0]
    other = int(item["productid"]) + 1
    for rid, pid in (("later-own", int(item["productid"])), ("later-other", other)):
        r = client.post("/feedback", json={"request_id": rid, "productid": pid, "prdtypecode": 2583}, headers=auth())
        assert r.status_code == 201 and r.json()["resolved"] is False, r.text
        client.post("/predict", json=item, headers={"X-Request-ID": rid})
    assert client.app.state.inference_log.flush(60)
    rows = query(conn, "SELECT request_id, productid, inference_id IS NOT NULL FROM feedback ORDER BY id")
    assert rows == [("later-own", int(item["productid"]), True), ("later-other", other, False)]
    # a reused id whose predictions of two products land in one flush, the label's product first
    a, b = products(trained, 3)[1:]
    for body in ({"request_id": "later-dup", "productid": a["productid"], "prdtypecode": 10},
                 {"request_id": "later-dup", "prdtypecode": 40}):  # no productid: which one cannot be told
        assert client.post("/feedback", json=body, headers=auth()).status_code == 201
    for product in (a, b):
        client.post("/predict", json=product, headers={"X-Request-ID": "later-dup"})
    assert client.app.state.inference_log.flush(60)
    tied = query(conn, """SELECT f.true_code, i.productid FROM feedback f LEFT JOIN inference_log i
                          ON i.id = f.inference_id WHERE f.request_id = 'later-dup' ORDER BY f.id""")
    assert tied == [(10, a["productid"]), (40, None)]


def test_a_reused_request_id_names_the_prediction_of_its_product_or_is_409(client, trained, conn):
    """A client that sends one X-Request-ID twice: a label by that request_id alone cannot tell
    which prediction it means (409), with the productid it names that product's."""
    a, b = products(trained, 2)
    first = client.post("/predict", json=a, headers={"X-Request-ID": "dup"}).json()
    client.post("/predict", json=b, headers={"X-Request-ID": "dup"})
    client.post("/predict", json=b, headers={"X-Request-ID": "same"})
    client.post("/predict", json={**b, "designation": b["designation"] + " (nouveau)"}, headers={"X-Request-ID": "same"})
    assert client.app.state.inference_log.flush(60)
    r = client.post("/feedback", json={"request_id": "dup", "prdtypecode": 2583}, headers=auth())
    assert r.status_code == 409 and r.json() == {"detail": (
        "request_id 'dup' names several logged predictions of different products (the client sent the same "
        "X-Request-ID more than once): give the inference_id")}, r.text
    r = client.post("/feedback", json={"request_id": "dup", "productid": a["productid"], "prdtypecode": 2583},
                    headers=auth())
    assert r.status_code == 201, r.text
    older = query(conn, "SELECT id FROM inference_log WHERE request_id = 'dup' AND productid = %s",
                  (a["productid"],))[0][0]
    assert (r.json()["inference_id"], r.json()["predicted_code"]) == (older, first["prdtypecode"])
    # the same product twice under one id, its title changed in between: its newest prediction
    r = client.post("/feedback", json={"request_id": "same", "prdtypecode": 2583}, headers=auth())
    newest = query(conn, "SELECT max(id) FROM inference_log WHERE request_id = 'same'")[0][0]
    assert r.status_code == 201 and r.json()["inference_id"] == newest, r.text
    # a productid none of the id's predictions is about: the same 409, which says so
    r = client.post("/feedback", json={"request_id": "dup", "productid": 1, "prdtypecode": 2583}, headers=auth())
    assert r.status_code == 409 and r.json()["detail"].endswith("give the inference_id (none is about product 1)")


def test_feedback_before_its_prediction_is_logged_is_resolved_later(client, trained, conn):
    """Another worker may still hold the prediction in memory: the feedback waits for it."""
    r = client.post("/feedback", json={"request_id": "later-1", "prdtypecode": 2583}, headers=auth())
    assert r.status_code == 201 and r.json()["resolved"] is False
    answer = client.post("/predict", json=products(trained, 1)[0], headers={"X-Request-ID": "later-1"}).json()
    assert client.app.state.inference_log.flush(60)
    row = query(conn, "SELECT inference_id, predicted_code, model_version FROM feedback WHERE request_id = 'later-1'")
    assert row[0][0] is not None and row[0][1] == answer["prdtypecode"] and row[0][2] == trained.v1


# --- metrics and docs ------------------------------------------------------------------------------
def test_metrics_exposes_the_documented_names(client, trained):
    client.post("/predict", json=products(trained, 1)[0])
    client.post("/predict", json={"designation": ""})
    text = client.get("/metrics").text
    for name in ("mlops_api_requests_total", "mlops_api_request_duration_seconds_bucket",
                 "mlops_predictions_total", "mlops_prediction_confidence_bucket", "mlops_model_version_info",
                 "mlops_model_ready", "mlops_model_reloads_total", "mlops_model_poll_errors_total",
                 "mlops_inference_log_buffer_rows", "mlops_inference_log_dropped_rows_total",
                 "mlops_inference_log_written_rows_total", "mlops_inference_log_write_errors_total"):
        assert name in text, name
    assert 'mlops_api_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'mlops_api_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    # the version served, with the MLflow run that trained it (the exposition sorts the labels)
    mlflow_run_id = registry.get_version(trained.settings, trained.v1)["mlflow_run_id"]
    served = {tuple(sorted(re.findall(r'(\w+)="([^"]*)"', line))) for line in text.splitlines()
              if line.startswith("mlops_model_version_info{") and line.endswith(" 1.0")}
    assert served == {(("mlflow_run_id", mlflow_run_id), ("model_name", trained.model_name), ("version", trained.v1))}
    assert "mlops_model_ready 1.0" in text


def test_each_app_has_its_own_metrics_registry(api_env):
    a = create_app(config.load_settings(), start_background=False)
    b = create_app(config.load_settings(), start_background=False)
    assert a.state.metrics.registry is not b.state.metrics.registry


def test_openapi_and_docs(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] and "Rakuten" in spec["info"]["description"]
    assert {t["name"] for t in spec["tags"]} >= {"prediction", "feedback", "operations", "control"}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert op.get("summary") and op.get("description"), (method, path)
            assert op.get("tags"), (method, path)
    schemas = spec["components"]["schemas"]
    for name in ("ProductIn", "PredictBatch", "Prediction", "BatchPrediction", "FeedbackIn", "FeedbackOut",
                 "Health", "RollbackIn", "RetrainIn"):
        assert schemas[name].get("examples"), name
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body.get("examples")
    schema = json.dumps(body["schema"])
    assert "ProductIn" in schema and "PredictBatch" in schema
    control = spec["paths"]["/api/runs"]["get"]
    assert control.get("security"), "control routes declare the bearer token"


def test_openapi_states_the_settings_limits_and_every_error_body(api_env):
    """The rules are in the document (tests/test_api_contract.py fuzzes the rest): this app's
    MAX_TEXT_CHARS and MAX_BATCH_SIZE, and a body model for every documented error status."""
    from mlops_cli.vocab import AlertStatus, values

    STATUSES = values(AlertStatus)

    api_env.setenv("MAX_TEXT_CHARS", "77")
    api_env.setenv("MAX_BATCH_SIZE", "5")
    spec = create_app(config.load_settings(), start_background=False).openapi()
    schemas = spec["components"]["schemas"]
    product = schemas["ProductIn"]["properties"]
    assert product["designation"]["maxLength"] == 77 and product["designation"]["minLength"] == 1
    assert [b.get("maxLength") for b in product["description"]["anyOf"]] == [77, None]
    assert schemas["PredictBatch"]["properties"]["items"]["maxItems"] == 5
    assert [sorted(b["required"]) for b in schemas["FeedbackIn"]["anyOf"]] == [
        ["inference_id"], ["request_id"], ["productid"]]
    status = next(p for p in spec["paths"]["/api/alerts"]["get"]["parameters"] if p["name"] == "status")
    assert tuple(status["schema"]["anyOf"][0]["enum"]) == STATUSES
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert response.get("content", {}).get("application/json", {}).get("schema"), \
                        (method, path, code)
            if path.startswith("/api/"):
                assert {"401", "403", "503"} <= set(op["responses"]), (method, path)
            assert "413" in op["responses"] and "400" not in op["responses"], (method, path)


def test_control_requests_with_nul_are_refused_and_audited(client, conn):
    """PostgreSQL text cannot hold NUL: a 422 (it used to fail in the database), and its audit
    row is still written."""
    r = client.post("/api/rollback-model", json={"reason": "nul \x00", "by": "x\x00"}, headers=auth())
    assert r.status_code == 422, r.text
    r = client.get("/api/runs", params={"step": "lo\x00ad"}, headers=auth())
    assert r.status_code == 422, r.text
    rows = query(conn, "SELECT route, status_code, params FROM api_audit ORDER BY id")
    assert [(route, code) for route, code, _ in rows] == [("/api/rollback-model", 422), ("/api/runs", 422)]
    assert rows[0][2]["body"]["reason"] == "nul \ufffd"


# --- control API -----------------------------------------------------------------------------------
CONTROL_ROUTES = [
    ("post", "/api/trigger-retrain", {"by": "api"}),
    ("post", "/api/rollback-model", {"reason": "test"}),
    ("get", "/api/alerts", None),
    ("post", "/api/alerts/1/acknowledge", {"by": "api"}),
    ("get", "/api/runs", None),
    ("get", "/api/models", None),
    ("get", "/api/thresholds", None),
    ("post", "/api/thresholds", {"warning": 0.15}),
    ("get", "/api/audit", None),
    ("get", "/api/labelling-queue", None),
    ("get", "/api/label-disagreements", None),
]


@pytest.mark.parametrize("method,path,body", CONTROL_ROUTES)
def test_control_refuses_missing_and_wrong_tokens(client, method, path, body):
    kw = {"json": body} if body is not None else {}
    r = client.request(method, path, **kw)
    assert r.status_code == 401, r.text
    assert r.headers.get("www-authenticate") == "Bearer"
    r = client.request(method, path, headers={"Authorization": "Basic abc"}, **kw)
    assert r.status_code == 401
    r = client.request(method, path, headers=auth("wrong-token"), **kw)
    assert r.status_code == 401 and r.json() == {"detail": "invalid API token (unknown or revoked)"}


@pytest.mark.parametrize("method,path,body", CONTROL_ROUTES)
def test_control_disabled_without_api_token(api_env, method, path, body):
    api_env.delenv("API_TOKEN")
    with TestClient(create_app(config.load_settings(), start_background=False)) as c:
        kw = {"json": body} if body is not None else {}
        for headers in ({}, auth(), auth("")):
            r = c.request(method, path, headers=headers, **kw)
            assert r.status_code == 503, r.text
            assert r.json()["detail"] == ("control API disabled: set API_TOKEN or create a token with "
                                          "`mlops api-token add NAME --role operator`")
    api_env.setenv("API_TOKEN", "short")  # a guessable shared secret is refused, not used
    with TestClient(create_app(config.load_settings(), start_background=False)) as c:
        r = c.request(method, path, headers=auth("short"), **({"json": body} if body is not None else {}))
        assert r.status_code == 503 and r.json()["detail"].startswith(
            "control API disabled: API_TOKEN is too short (5 characters, at least 16)")


@pytest.mark.parametrize("method,path,body", CONTROL_ROUTES)
def test_each_control_route_needs_its_role(client, conn, method, path, body):
    """access.NEEDS: reads need a viewer (the labelling queue too, as the control room shows it to
    one), actions an operator; the refusal names the role needed."""
    roles = ["viewer", "labeller", "operator"]
    needed = "viewer" if method == "get" else "operator"
    what = {"viewer": "reading", "operator": "this action"}[needed]
    for role in roles:
        allowed = roles.index(role) >= roles.index(needed)
        if allowed and method != "get":
            continue  # the action itself: its own tests
        kw = {"json": {k: v for k, v in body.items() if k != "by"}} if body is not None else {}
        r = client.request(method, path, headers=auth(token_of(conn, f"user-{role}", role)), **kw)
        if allowed:
            assert r.status_code == 200, (role, r.text)
        else:
            assert r.status_code == 403 and r.json() == {
                "detail": f"user-{role} is a {role}: {what} needs the {needed} role"}, (role, r.text)


def test_control_requests_are_audited(client, conn):
    """The actor of an audit row is proven, never claimed: the token's name; 'unauthenticated'
    (and no body kept) when no token was proven."""
    carol = auth(token_of(conn, "carol"))
    assert client.get("/api/runs?limit=5", headers={**carol, "X-Actor": "carol"}).status_code == 200
    assert client.get("/api/runs", headers=auth("nope", **{"X-Actor": "carol"})).status_code == 401
    assert client.get("/api/runs").status_code == 401
    assert client.get("/api/runs?limit=0", headers=auth()).status_code == 422
    r = client.post("/api/thresholds", json={"warning": 0.01, "by": "the-cto"}, headers=carol)
    assert r.status_code == 403 and "by names 'the-cto'" in r.json()["detail"]
    r = client.post("/api/rollback-model", json={"reason": "x" * 1000}, headers={"X-Actor": "nobody"})
    assert r.status_code == 401
    rows = query(conn, "SELECT actor, authenticated, role, route, params, status_code FROM api_audit ORDER BY id")
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in rows] == [
        ("carol", True, "operator", "/api/runs", 200), ("unauthenticated", False, None, "/api/runs", 401),
        ("unauthenticated", False, None, "/api/runs", 401), ("api", True, "operator", "/api/runs", 422),
        ("carol", True, "operator", "/api/thresholds", 403),
        ("unauthenticated", False, None, "/api/rollback-model", 401)]
    assert rows[0][4] == {"query": {"limit": "5"}}
    assert rows[4][4] == {"body": {"warning": 0.01, "by": "the-cto"}} and rows[5][4] == {}
    assert client.get("/api/thresholds", headers=carol).json()["source"]["warning"] == "settings"  # unchanged
    r = client.get("/api/audit", headers=auth())
    assert r.status_code == 200 and len(r.json()) == 7  # and the GET /api/thresholds above


def test_runs_route_lists_pipeline_runs(client, settings, small_catalogue):
    from mlops_cli.steps.load import load

    c = db.open_db(settings)
    try:
        load(c, settings, Trigger(actor="pytest"), x_path=str(small_catalogue[0]), y_path=str(small_catalogue[1]))
    finally:
        c.close()
    r = client.get("/api/runs?step=load&status=succeeded", headers=auth())
    assert r.status_code == 200
    assert [(x["step"], x["status"], x["actor"]) for x in r.json()] == [("load", "succeeded", "pytest")]
    assert client.get("/api/runs?status=bogus", headers=auth()).status_code == 422


# Routes below call sibling modules (mlops_cli.pipeline, steps.rollback, steps.alert, models).
def test_trigger_retrain_202_then_409(client, api_env, conn):
    api_env.setenv("MLOPS_FAULT", "train:hang")  # the launched pipeline stays in its train step
    # The retrain hangs in its train step: answering at all proves the route does not wait for it.
    alice, bob = auth(token_of(conn, "alice")), auth(token_of(conn, "bob"))
    r = client.post("/api/trigger-retrain", json={"by": "alice", "reason": "new data"}, headers=alice)
    assert r.status_code == 202, r.text
    run_id = r.json()["pipeline_run_id"]
    assert r.json()["status"] == "started"
    pid = None
    try:
        run = store.get_run(conn, run_id)
        conn.rollback()
        pid = run["pid"]
        assert run["status"] == "running" and run["triggered_by"] == "api" and run["actor"] == "alice"
        r2 = client.post("/api/trigger-retrain", json={}, headers=bob)
        assert r2.status_code == 409, r2.text
        audit = query(conn, "SELECT status_code, pipeline_run_id, actor FROM api_audit "
                            "WHERE route = '/api/trigger-retrain' ORDER BY id")
        assert audit == [(202, run_id, "alice"), (409, None, "bob")]
    finally:
        if pid:
            kill_pipeline(pid)


def kill_pipeline(pid: int) -> None:
    """End a pipeline the API launched (its own process group) and reap it."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def test_rollback_model(client, trained, conn):
    alice = auth(token_of(conn, "alice"))
    r = client.post("/api/rollback-model", json={"reason": "  "}, headers=auth())
    assert r.status_code == 422
    r = client.post("/api/rollback-model", json={"by": "alice"}, headers=alice)
    assert r.status_code == 422  # reason is required
    registry.set_alias(trained.settings, registry.CHAMPION, trained.v2)
    registry.set_alias(trained.settings, registry.PREVIOUS, trained.v1)
    try:
        wait_for(lambda: client.app.state.holder.current.version == trained.v2, f"the API to serve {trained.v2}")
        r = client.post("/api/rollback-model", json={"reason": "F1 dropped"}, headers=alice)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded"
        assert registry.version_by_alias(trained.settings, registry.CHAMPION)["version"] == trained.v1
        wait_for(lambda: client.post("/predict", json={"designation": "Console"}).json()["model_version"]
                 == trained.v1, "the API to serve the restored version")
        run = store.list_runs(conn, step="rollback")[0]
        assert run["triggered_by"] == "api" and run["actor"] == "alice" and run["status"] == "succeeded"
        assert r.json()["pipeline_run_id"] == run["id"]  # and the audit row links the request to it
        assert query(conn, "SELECT route, status_code FROM api_audit WHERE pipeline_run_id = %s",
                     (run["id"],)) == [("/api/rollback-model", 200)]
        r = client.post("/api/rollback-model", json={"reason": "again"}, headers=auth())
        assert r.status_code == 409 and "roll back" in r.json()["detail"].lower()
    finally:
        registry.delete_alias(trained.settings, registry.PREVIOUS)
        registry.set_version_tags(trained.settings, trained.v2, {"stage": "None", "rolled_back": "false"})


def test_rollback_with_nothing_to_roll_back_is_409(api_env):
    api_env.setenv("MODEL_NAME", f"no-such-model-{uuid.uuid4().hex[:6]}")
    with TestClient(create_app(config.load_settings(), start_background=False)) as c:
        r = c.post("/api/rollback-model", json={"reason": "test"}, headers=auth())
        assert r.status_code == 409, r.text


def test_rollback_from_an_alert_is_recorded_on_it(client, trained, conn):
    """The audit rule of ops.models: a rollback asked for about an alert writes its alert_actions
    row with the outcome, from the API as from the control room; an unknown alert is a 404 before
    anything is rolled back (NotFound, its exact message)."""
    alert_id = store.insert_alert(conn, level="CRITICAL", cause="data_drift", report_id=None,
                                  message="Drift CRITICAL", details={}, notified=False)
    conn.commit()
    r = client.post("/api/rollback-model", json={"reason": "drift", "alert_id": 424242}, headers=auth())
    assert r.status_code == 404 and r.json() == {"detail": "No alert 424242"}, r.text
    assert store.list_runs(conn, step="rollback") == []
    r = client.post("/api/trigger-retrain", json={"alert_id": 424242}, headers=auth())
    assert r.status_code == 404 and r.json() == {"detail": "No alert 424242"}, r.text
    assert store.list_runs(conn, pipeline="retrain") == []
    conn.rollback()
    registry.set_alias(trained.settings, registry.CHAMPION, trained.v2)
    registry.set_alias(trained.settings, registry.PREVIOUS, trained.v1)
    try:
        r = client.post("/api/rollback-model", json={"reason": "F1 dropped on the drifted feed", "by": "alice",
                                                     "alert_id": alert_id}, headers=auth(token_of(conn, "alice")))
        assert r.status_code == 200, r.text
        run_id = r.json()["pipeline_run_id"]
        assert "run_id" not in r.json()  # renamed: a pipeline_runs id says so
        [(a_id, action, actor, note, params)] = query(conn, "SELECT alert_id, action, actor, note, params "
                                                            "FROM alert_actions")
        assert (a_id, action, actor, note) == (alert_id, "rollback", "alice", "F1 dropped on the drifted feed")
        assert params["outcome"] == "succeeded" and params["pipeline_run_id"] == run_id
        assert (params["from_version"], params["to_version"]) == (trained.v2, trained.v1)
        # nothing left to roll back to: refused (409), and the attempt is on the alert too
        r = client.post("/api/rollback-model", json={"reason": "again", "alert_id": alert_id}, headers=auth())
        assert r.status_code == 409, r.text
        last = query(conn, "SELECT action, params FROM alert_actions ORDER BY id DESC LIMIT 1")[0]
        assert last[0] == "rollback" and last[1]["outcome"] == "failed" and "roll back" in last[1]["error"]
    finally:
        registry.delete_alias(trained.settings, registry.PREVIOUS)
        registry.set_alias(trained.settings, registry.CHAMPION, trained.v1)
        registry.set_version_tags(trained.settings, trained.v2, {"stage": "None", "rolled_back": "false"})


def test_thresholds_partial_update(client, conn):
    """POST /api/thresholds changes only the values given (ops.thresholds.update, as the CLI and the
    control room); out of order or nothing given is a 409 with the library's message."""
    before = client.get("/api/thresholds", headers=auth()).json()
    assert before["source"] == {"warning": "settings", "alert": "settings", "critical": "settings"}
    warning = round(before["alert"] / 2, 4)
    r = client.post("/api/thresholds", json={"warning": warning, "note": "fewer warnings"},
                    headers=auth(token_of(conn, "carol"), **{"X-Actor": "carol"}))
    assert r.status_code == 200, r.text
    after = r.json()
    assert (after["warning"], after["alert"], after["critical"]) == (warning, before["alert"], before["critical"])
    assert after["source"]["warning"] == "app_settings" and after["updated_by"] == "carol"
    [(a_id, action, actor, note, params)] = query(conn, "SELECT alert_id, action, actor, note, params "
                                                        "FROM alert_actions")
    assert (a_id, action, actor, note) == (None, "adjust_thresholds", "carol", "fewer warnings")
    assert params["new"] == {"warning": warning, "alert": before["alert"], "critical": before["critical"]}
    r = client.post("/api/thresholds", json={"critical": warning / 2}, headers=auth())
    assert r.status_code == 409 and "0 < warning < alert < critical" in r.json()["detail"], r.text
    r = client.post("/api/thresholds", json={}, headers=auth())
    assert r.status_code == 409, r.text
    assert r.json() == {"detail": "Give at least one value to change (warning, alert, critical or estimate_margin)"}
    assert client.post("/api/thresholds", json={"warning": "0.1"}, headers=auth()).status_code == 422
    assert client.post("/api/thresholds", json={"warning": 0}, headers=auth()).status_code == 422


def test_error_codes_map_to_one_status_each():
    """api/errors.py: a domain error answers the status of its code, whatever its text; a failed
    step answers by its cause's code."""
    from mlops_cli.api.errors import ERROR_CODE_TO_HTTP_STATUS, http_error
    from mlops_cli.errors import (AlreadyRunning, Conflict, Invalid, MlopsError, NotFound, NotReady,
                                  SourceError, TimedOut, TransientError, Unavailable)
    from mlops_cli.runs import StepFailed, StepResult

    expected = {NotFound: 404, Conflict: 409, NotReady: 409, AlreadyRunning: 409, Invalid: 409,
                SourceError: 409, Unavailable: 503, TransientError: 503, TimedOut: 504, MlopsError: 409}
    for cls, status in expected.items():
        error = http_error(cls("not found: no such thing"))  # the text says nothing of the status
        assert (error.status_code, error.detail) == (status, "not found: no such thing"), cls
        assert ERROR_CODE_TO_HTTP_STATUS[cls.code] == status
    failed = StepResult("rollback", "failed", 7, "Nothing to roll back to")
    assert http_error(StepFailed(failed, NotFound("No alert 3"))).status_code == 404
    assert http_error(StepFailed(failed, TransientError("db down"))).detail == \
        "rollback failed (run #7): Nothing to roll back to"
    assert http_error(StepFailed(failed, RuntimeError("bug"))).status_code == 500


def test_alerts_routes(client):
    r = client.get("/api/alerts", headers=auth())
    assert r.status_code == 200, r.text
    assert r.json() == []
    r = client.get("/api/alerts?status=bogus", headers=auth())  # the allowed values are an enum: 422
    assert r.status_code == 422, r.text
    assert all(s in r.json()["message"] for s in ("open", "acknowledged", "resolved")), r.json()["message"]
    r = client.post("/api/alerts/424242/acknowledge", json={"by": "api"}, headers=auth())
    assert r.status_code == 404, r.text
    assert r.json() == {"detail": "No alert 424242"}  # NotFound, mapped by its code


def test_models_route(client, trained):
    r = client.get("/api/models", headers=auth())
    assert r.status_code == 200, r.text
    versions = {str(m["version"]): m for m in r.json()}
    assert {trained.v1, trained.v2} <= set(versions)
    assert "champion" in versions[trained.v1]["aliases"]


def test_labelling_queue_route(client, trained, conn):
    """GET /api/labelling-queue (ops.labelling): the served predictions, one per product, best
    first; a labelled product leaves the queue; the bounds are the schema's (422)."""
    items = products(trained, 12)
    client.post("/predict", json={"items": items[:3]})
    for item in items + items[:4]:  # four products served twice
        client.post("/predict", json=item)
    assert client.app.state.inference_log.flush(60)
    r = client.get("/api/labelling-queue", params={"limit": 100, "days": 1}, headers=auth())
    assert r.status_code == 200, r.text
    queue = r.json()
    assert sorted(q["productid"] for q in queue) == sorted(i["productid"] for i in items)
    assert [q["rank"] for q in queue] == list(range(1, len(queue) + 1))
    assert [q["score"] for q in queue] == sorted((q["score"] for q in queue), reverse=True)
    assert all(q["reasons"] and q["model_version"] == trained.v1 for q in queue)
    assert all(q["score"] >= q["uncertainty"] for q in queue)
    top = queue[0]
    r = client.post("/feedback", json={"inference_id": top["inference_id"], "prdtypecode": top["predicted_code"],
                                       "submitted_by": "moderator"}, headers=auth(token_of(conn, "moderator", "labeller")))
    assert r.status_code == 201, r.text
    again = client.get("/api/labelling-queue", params={"limit": 3}, headers=auth()).json()
    assert [q["productid"] for q in again] == [q["productid"] for q in queue[1:4]]
    for bad in ({"limit": 0}, {"limit": 501}, {"days": 31}):
        assert client.get("/api/labelling-queue", params=bad, headers=auth()).status_code == 422
    # a viewer reads the queue as the Labelling page shows it to one; nothing is recorded as offered
    offers = query(conn, "SELECT count(*), count(*) FILTER (WHERE offered_to = 'viewer-1') FROM labelling_offers")[0]
    assert offers[0] > 0 and offers[1] == 0
    seen = client.get("/api/labelling-queue", params={"limit": 100}, headers=auth(token_of(conn, "viewer-1", "viewer")))
    assert seen.status_code == 200 and [q["inference_id"] for q in seen.json()][:3] == [
        q["inference_id"] for q in again]
    assert query(conn, "SELECT count(*) FROM labelling_offers")[0][0] == offers[0]


def test_label_disagreements_route(client, trained, conn):
    """GET /api/label-disagreements (ops.feedback.disagreements): each labeller's latest label of
    the products they disagree on; a label that makes them agree settles it; bounds are 422."""
    items = products(trained, 2)
    for item in items:
        client.post("/predict", json=item)
    assert client.app.state.inference_log.flush(60)
    pid = items[0]["productid"]
    tokens = {name: auth(token_of(conn, name, "labeller")) for name in ("mona", "nils")}
    for product, name, code in ((items[1], "mona", 10), (items[1], "nils", 40), (items[1], "mona", 40),  # agreed
                                (items[0], "mona", 10), (items[0], "nils", 40)):
        r = client.post("/feedback", json={"productid": product["productid"], "prdtypecode": code},
                        headers=tokens[name])
        assert r.status_code == 201, r.text
    r = client.get("/api/label-disagreements", headers=auth())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 1 and [it["productid"] for it in body["items"]] == [pid]
    [item] = body["items"]
    assert (item["designation"], item["latest_code"]) == (items[0]["designation"], 40)
    assert [(lb["submitted_by"], lb["prdtypecode"]) for lb in item["labels"]] == [("nils", 40), ("mona", 10)]
    for bad in ({"limit": 0}, {"limit": 501}):
        assert client.get("/api/label-disagreements", params=bad, headers=auth()).status_code == 422


# --- batch scoring, export, CLI ----------------------------------------------------------------------
def test_predict_file_scores_the_x_format(api_env, trained, tmp_path, cli):
    from mlops_cli.batch import predict_file

    rows = trained.rows.head(30).copy()
    rows["imageid"] = range(len(rows))
    rows.loc[3, "designation"] = "   "  # no title: an error text, no prediction
    rows.loc[4, "designation"] = "<p>&nbsp;</p>"  # markup only: the same (the load's rule)
    src = tmp_path / "X_test.csv"
    rows[["designation", "description", "productid", "imageid"]].to_csv(src)
    out = tmp_path / "preds.csv"
    result = predict_file(config.load_settings(), src, out)
    assert result["rows"] == 30 and result["predicted"] == 28 and result["errors"] == 2
    assert result["model_version"] == trained.v1
    got = pd.read_csv(out, dtype={"error": str}, keep_default_na=False)
    assert list(got.columns) == ["productid", "prdtypecode", "category", "confidence", "error"]
    assert (got.loc[3, "error"], got.loc[3, "prdtypecode"]) == ("empty designation (title): no prediction", "")
    assert (got.loc[4, "error"], got.loc[4, "prdtypecode"]) == (
        "designation (title) has no letter or digit once markup is removed: no prediction", "")
    ok = got.drop(index=[3, 4])
    expected = trained.models[trained.v1].predict(frame(products(trained, 30)))
    assert ok["prdtypecode"].astype(int).tolist() == [int(c) for i, c in enumerate(expected) if i not in (3, 4)]
    assert ok["productid"].astype(int).tolist() == rows.drop(index=[3, 4])["productid"].astype(int).tolist()
    # the CLI, with an explicit version
    r = cli("predict", "--input", src, "--out", tmp_path / "v2.csv", "--version", trained.v2, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["model_version"] == trained.v2


def test_predict_file_refuses_unreadable_input(api_env, tmp_path, cli):
    bad = tmp_path / "bad.csv"
    bad.write_text(",title,productid\n0,abc,1\n")
    r = cli("predict", "--input", bad, "--out", tmp_path / "o.csv")
    assert r.exit_code == 1 and "missing column(s) designation, description" in r.output
    semi = tmp_path / "semi.csv"  # a spreadsheet's export
    semi.write_text(";designation;description;productid;imageid\n0;abc;;1;2\n")
    r = cli("predict", "--input", semi, "--out", tmp_path / "o.csv")
    assert r.exit_code == 1 and r.output.rstrip().endswith(
        "; the header looks separated by ';': the catalogue's CSV files are comma-separated"), r.output
    r = cli("predict", "--input", tmp_path / "nope.csv", "--out", tmp_path / "o.csv")
    assert r.exit_code == 1 and "not found" in r.output
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(",designation,description,productid,imageid\n0,caf\xe9,,1,2\n".encode("latin-1"))
    r = cli("predict", "--input", latin1, "--out", tmp_path / "o.csv")
    assert r.exit_code == 1 and "not valid UTF-8 (byte b'\\xe9' at offset 48, line 2 of the file)" in r.output
    header_only = tmp_path / "header.csv"
    header_only.write_text(",designation,description,productid,imageid\n")
    r = cli("predict", "--input", header_only, "--out", tmp_path / "o.csv")
    assert r.exit_code == 1 and f"input file {header_only} has a header but no rows" in r.output
    assert not (tmp_path / "o.csv").exists()


def test_predict_file_without_champion(tmp_path, cli, small_catalogue):
    r = cli("predict", "--input", small_catalogue[0], "--out", tmp_path / "o.csv")
    assert r.exit_code == 1 and "No model in production yet" in r.output


def test_export_inference_log(client, trained, tmp_path, cli):
    answers = [client.post("/predict", json=p).json() for p in products(trained, 4)]
    assert client.app.state.inference_log.flush(60)
    out = tmp_path / "log.csv"
    r = cli("export-inference-log", "--out", out)
    assert r.exit_code == 0 and "wrote 4 rows" in r.output
    got = pd.read_csv(out)
    assert got["request_id"].tolist() == [a["request_id"] for a in answers]
    assert {"n_tokens", "n_oov", "script", "lang", "top_k", "latency_ms", "designation"} <= set(got.columns)
    r = cli("export-inference-log", "--since", "2999-01-01", "--out", out)
    assert r.exit_code == 0 and "wrote 0 rows" in r.output
    assert len(pd.read_csv(out)) == 0


def test_mlops_serve_end_to_end(api_env, trained, conn):
    """`mlops serve` in its own process: ready, predicts, and drains its log on SIGTERM."""
    import subprocess
    import sys
    import urllib.request

    with socket_port() as port:
        pass
    proc = subprocess.Popen([sys.executable, "-m", "mlops_cli.cli", "serve", "--port", str(port)],
                            env=dict(os.environ, INFERENCE_LOG_FLUSH_SECONDS="3600"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert json.loads(r.read())["model_version"] == trained.v1
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "mlops serve did not become ready"
                time.sleep(0.3)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", method="POST",
                                     data=json.dumps(products(trained, 1)[0]).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            request_id = json.loads(r.read())["request_id"]
        assert store.find_inference(conn, request_id=request_id) is None  # still buffered (flushes hourly)
        conn.rollback()
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal once shut down
    assert "Application shutdown complete" in output
    assert store.find_inference(conn, request_id=request_id) is not None  # drained at shutdown


def test_mlops_serve_with_two_workers_adds_up_their_metrics(api_env, trained, conn, tmp_path):
    """`--workers 2`: both workers serve, and every scrape (whichever worker answers it) counts
    each prediction once; files left in the metrics folder by an earlier run are cleared."""
    import re
    import subprocess
    import sys
    import urllib.request

    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_999999.db").write_bytes(b"left by an earlier run")  # unreadable if kept
    with socket_port() as port:
        pass
    proc = subprocess.Popen([sys.executable, "-m", "mlops_cli.cli", "serve", "--port", str(port), "--workers", "2"],
                            env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(prom)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:  # "ready" in /metrics is the minimum over the workers: both have the model
            try:
                with urllib.request.urlopen(f"{base}/metrics", timeout=2) as r:
                    ready = re.search(r"^mlops_model_ready 1\.0$", r.read().decode(), re.M) is not None
            except OSError:
                ready = False
            pids = {f.name.rsplit("_", 1)[1] for f in prom.glob("counter_*.db")}
            if ready and len(pids) == 2:
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, f"workers not ready (metric files of {sorted(pids)})"
            time.sleep(0.3)
        assert not (prom / "counter_999999.db").exists()
        items = products(trained, 30)
        for item in items:  # a new connection each: the workers share them
            req = urllib.request.Request(f"{base}/predict", method="POST", data=json.dumps(item).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
        for _ in range(6):
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
                text = r.read().decode()
            counted = sum(float(v) for v in re.findall(r"^mlops_predictions_total\{[^}]*\} (\S+)$", text, re.M))
            model_lines = "\n".join(ln for ln in text.splitlines() if ln.startswith("mlops_model_"))
            assert counted == len(items), text
            assert re.search(r"^mlops_model_ready 1\.0$", text, re.M), model_lines
            assert re.search(rf'^mlops_model_version_info\{{[^}}]*version="{trained.v1}"[^}}]*\}} 1\.0$', text,
                             re.M), model_lines
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert "Application shutdown complete" in output, output


class socket_port:
    """A free TCP port on 127.0.0.1."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_oversized_body_is_413(api_env):
    api_env.setenv("MAX_TEXT_CHARS", "10")
    api_env.setenv("MAX_BATCH_SIZE", "2")
    with TestClient(create_app(config.load_settings(), start_background=False)) as c:
        r = c.post("/predict", content=b"{" + b" " * 300_000 + b"}", headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.post("/predict", json={"designation": "ok"}).status_code == 200
        # chunked (no Content-Length): counted as it is read, the same 413
        chunks = (b"{" + b" " * 100_000 if k == 0 else b" " * 100_000 for k in range(3))
        r = c.post("/predict", content=chunks, headers={"Content-Type": "application/json"})
        assert "content-length" not in r.request.headers and r.status_code == 413, r.text
        ok = iter([b'{"designation": ', b'"ok"}'])
        r = c.post("/predict", content=ok, headers={"Content-Type": "application/json"})
        assert "content-length" not in r.request.headers and r.status_code == 200, r.text
