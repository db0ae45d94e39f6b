"""The label-free performance estimate (mlops_cli/performance_estimate.py): the pure estimate on
hand-made probabilities, its band against labels drawn from those probabilities, the SQL sums
against the Python ones and their additivity over any split of the rows, migration 012, the
estimated_performance alert cause through its levels and its resolution, and the margin setting.

The estimate on real traffic of a trained model (close to the realized F1; rollups vs row scan) is
in tests/test_drift.py, which trains its model once for the module.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import query
from mlops_cli import db, store
from mlops_cli import performance_estimate as pe
from mlops_cli.errors import Invalid
from mlops_cli.runs import Trigger
from mlops_cli.steps.alert import alert
from mlops_cli.thresholds import effective_thresholds, reset_thresholds, update_thresholds

T = Trigger(actor="pytest")
DAY0 = datetime(2032, 3, 1, tzinfo=timezone.utc)


# --- the estimate, pure ------------------------------------------------------------------------------
def test_estimate_on_hand_made_probabilities_is_the_exact_expectation():
    """Two classes, every probability listed: expected TP, supports and weighted F1 by hand.
    class 1: 2 predicted, TP 0.9 + 0.6 = 1.5, support 0.9 + 0.6 + 0.3 + 0 = 1.8, F1 3 / 3.8
    class 2: 2 predicted, TP 0.7 + 1.0 = 1.7, support 0.1 + 0.4 + 0.7 + 1 = 2.2, F1 3.4 / 4.2
    weighted by the supports: (27/19 + 187/105) / 4 = 1597 / 1995."""
    rows = [(1, 0.9, [(1, 0.9), (2, 0.1)]), (1, 0.6, [(1, 0.6), (2, 0.4)]),
            (2, 0.7, [(2, 0.7), (1, 0.3)]), (2, 1.0, [(2, 1.0), (1, 0.0)])]
    sums = pe.row_sums(*zip(*rows), n_classes=2)
    est = pe.estimate(sums, [1, 2])
    assert est["weighted_f1"] == pytest.approx(1597 / 1995, abs=1e-8)
    assert est["per_class"]["1"]["support"] == pytest.approx(1.8) and est["per_class"]["2"]["support"] == pytest.approx(2.2)
    assert est["per_class"]["1"]["f1"] == pytest.approx(3 / 3.8, abs=1e-6)
    assert est["expected_accuracy"] == pytest.approx(3.2 / 4) and est["unlisted_mass"] == 0
    assert est["low"] < est["weighted_f1"] < est["high"]
    # the logged form (dicts) gives the same sums; the rollup rows round-trip
    logged = [(c, p, [{"prdtypecode": k, "probability": q} for k, q in top]) for c, p, top in rows]
    assert pe.row_sums(*zip(*logged), n_classes=2) == sums
    back = pe.empty_sums()
    for _mv, feature, key, n in pe.sums_rows(sums, "3"):
        pe.add_row(back, feature, key, n)
    assert back == sums


def test_unlisted_mass_is_spread_evenly_over_the_other_classes():
    """K = 4, a row logged with its predicted class only (top_k NULL): 0.7 on class 1, the 0.3 left
    spread 0.1 / 0.1 / 0.1; a row listing two classes spreads what is left over the other two."""
    sums = pe.row_sums([1, 2], [0.7, 0.5], [None, [(2, 0.5), (3, 0.3)]], n_classes=4)
    est = pe.estimate(sums, [1, 2, 3, 4])
    support = {c: v["support"] for c, v in est["per_class"].items()}
    assert support == pytest.approx({"1": 0.7 + 0.1, "2": 0.1 + 0.5, "3": 0.1 + 0.3, "4": 0.1 + 0.1})
    assert est["unlisted_mass"] == pytest.approx((0.3 + 0.2) / 2)
    assert est["n"] == 2 and sum(support.values()) == pytest.approx(2.0)


def test_band_covers_the_realized_f1_of_labels_drawn_from_the_probabilities():
    """If the probabilities are right, the realized weighted F1 is centred on the estimate and the
    band (a conservative delta-method variance) holds it about 95% of the time or more."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    n, k = 600, 12
    logits = rng.normal(size=(n, k)) * 2.5 + np.log(rng.dirichlet(np.ones(k) * 2))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    classes = np.arange(100, 100 + k)
    codes = classes[proba.argmax(axis=1)]
    conf, top = pe.top_k_of(proba, classes, codes, k=k)  # everything listed: the exact model
    est = pe.estimate(pe.row_sums(codes, conf, top, k), classes.tolist())
    cum = proba.cumsum(axis=1)
    realized = []
    for _ in range(300):
        y = classes[(rng.random((n, 1)) < cum).argmax(axis=1)]
        realized.append(f1_score(y, codes, average="weighted", zero_division=0))
    realized = np.array(realized)
    assert abs(realized.mean() - est["weighted_f1"]) < 0.25 * est["sd"]
    assert realized.std() <= est["sd"] * 1.1  # an upper bound, up to the draws' noise
    assert est["sd"] <= realized.std() * 1.6  # and not a useless one
    inside = np.mean((realized >= est["low"]) & (realized <= est["high"]))
    assert inside >= 0.93, inside


def test_score_puts_one_margin_on_the_warning_line():
    assert pe.score(0.80, 0.75, warning=0.1, margin=0.05) == pytest.approx(0.1)
    assert pe.score(0.80, 0.70, warning=0.1, margin=0.05) == pytest.approx(0.2)   # 2 margins: ALERT line
    assert pe.score(0.80, 0.85, warning=0.1, margin=0.05) == 0.0                  # better: no score
    assert pe.score(0.80, 0.76, warning=0.15, margin=0.02) == pytest.approx(0.3)


# --- the SQL sums ----------------------------------------------------------------------------------------
def _rows(n: int, seed: int) -> list[dict]:
    """inference_log rows with hand-made probabilities over 5 classes, two versions, messy top_k."""
    rng = np.random.default_rng(seed)
    classes = [10, 40, 50, 60, 2583]
    out = []
    for i in range(n):
        p = rng.dirichlet(np.ones(5) * 0.6)
        order = np.argsort(-p)
        code = classes[order[0]]
        top = [{"prdtypecode": classes[j], "probability": float(p[j])} for j in order[:3]]
        if i % 7 == 0:
            top = None                                         # logged without top_k
        elif i % 11 == 0:
            top = top[1:] + [{"prdtypecode": "x", "probability": 0.5}, "junk"]  # no predicted code, junk
        out.append({"logged_at": DAY0 + timedelta(hours=5 * i + 0.5), "request_id": f"r{seed}-{i}",
                    "source": "test", "model_version": "7" if i % 5 else "8", "designation": "x", "description": "",
                    "designation_len": 1, "description_len": 0, "predicted_code": code,
                    "confidence": float(p[order[0]]), "top_k": top})
    return out


def _estimate_of(rows_or_sums, version="7") -> dict:
    sums = pe.empty_sums()
    for mv, feature, key, n in rows_or_sums:
        if mv == version:
            pe.add_row(sums, feature, key, n)
    return sums


def test_sql_sums_equal_the_python_ones_and_add_up_over_any_split(conn):
    rows = _rows(120, seed=1)
    for day in {r["logged_at"].date() for r in rows}:
        store.ensure_inference_partition(conn, day)
    store.insert_inference_rows(conn, rows)
    conn.commit()
    lo, hi = DAY0, DAY0 + timedelta(days=30)
    whole = store.inference_range_estimate_sums(conn, lo, hi, 27)
    # split at every UTC midnight (the rollups' days) and at odd instants: the same integers
    cuts = [DAY0 + timedelta(days=d) for d in range(1, 30)] + [DAY0 + timedelta(days=3, hours=7, minutes=13)]
    edges = [lo] + sorted(cuts) + [hi]
    parts = []
    for a, b in zip(edges[:-1], edges[1:]):
        parts += store.inference_range_estimate_sums(conn, a, b, 27)
    for version in ("7", "8"):
        assert _estimate_of(parts, version) == _estimate_of(whole, version)
    # the SQL computes what row_sums computes, junk entries skipped alike: the same operations on
    # the same doubles, so the same integers to the last unit
    mine = [r for r in rows if r["model_version"] == "7"]
    py = pe.row_sums([r["predicted_code"] for r in mine], [r["confidence"] for r in mine],
                     [r["top_k"] for r in mine], 27)
    sql = _estimate_of(whole, "7")
    assert sql["n"] == py["n"] == len(mine)
    assert sql == py
    a = pe.estimate(sql, [10, 40, 50, 60, 2583])
    assert a == pe.estimate(py, [10, 40, 50, 60, 2583])


def test_a_fully_confident_window_is_estimated_inside_its_band_and_stored(conn):
    """Every prediction at confidence 1.0 (a calibration that saturates, a model with hard
    probabilities): the estimate is at most 1 and inside its band, so the report is stored. Before,
    the sums' fixed point back to floats gave 1.0000000000000002, above the band's cap of 1, and
    drift_reports' CHECK refused the report: the drift step failed."""
    day = DAY0 + timedelta(days=40)
    rows = [{"logged_at": day + timedelta(minutes=i), "request_id": f"full-{i}", "source": "test",
             "model_version": "7", "designation": "x", "description": "", "designation_len": 1,
             "description_len": 0, "predicted_code": 10 if i % 2 else 40, "confidence": 1.0,
             "top_k": [{"prdtypecode": 10 if i % 2 else 40, "probability": 1.0},
                       {"prdtypecode": 40 if i % 2 else 10, "probability": 0.0}]} for i in range(31)]
    store.ensure_inference_partition(conn, day.date())
    store.insert_inference_rows(conn, rows)
    conn.commit()
    sums = pe.empty_sums()
    for mv, feature, key, n in store.inference_range_estimate_sums(conn, day, day + timedelta(days=1), 2):
        if mv == "7":
            pe.add_row(sums, feature, key, n)
    summary = {"estimate": {"weighted_f1": 0.95, "classes": [10, 40], "n_classes": 2, "per_class": {}}}
    c = pe.assess_window(summary, sums, None, {"warning": 0.1}, 0.05, min_samples=1)["columns"]
    assert c["estimated_f1_low"] <= c["estimated_weighted_f1"] == 1.0 == c["estimated_f1_high"]
    store.insert_drift_report(conn, pipeline_run_id=None, report_date=day.date(), window_days=1, as_of=day,
                              model_version="7", n_inferences=31, n_feedback=0, status="ok", level="NONE",
                              data_drift_score=0.0, prediction_drift_score=0.0, performance_drift_score=None,
                              drift_detected=False, details={}, **c)
    conn.commit()
    assert query(conn, "SELECT estimated_weighted_f1 FROM drift_reports") == [(1.0,)]


def test_a_longer_top_k_committed_between_the_two_statements_is_read_whole(conn, monkeypatch):
    """The sums read as many top_k entries as the first statement found; a row with a longer one
    committed right after it (a day still being written) makes the query run again with every
    slot: the sums stay those of a single scan."""
    rows = _rows(40, seed=3)
    for day in {r["logged_at"].date() for r in rows}:
        store.ensure_inference_partition(conn, day)
    store.insert_inference_rows(conn, [{**r, "top_k": (r["top_k"] or [])[:1] or None} for r in rows])
    conn.commit()
    late = {**rows[1], "request_id": "late", "model_version": "7", "top_k": [{"prdtypecode": c, "probability": 0.1}
                                                         for c in (10, 40, 50, 60, 2583)]}
    real_scalar, seen = store._scalar, []

    def slots_then_a_writer(c, sql, params=None):
        out = real_scalar(c, sql, params)
        if "jsonb_array_length" in sql and not seen:
            seen.append(out)
            store.insert_inference_rows(c, [late])  # what another writer commits between the two
        return out

    monkeypatch.setattr(store, "_scalar", slots_then_a_writer)
    lo, hi = DAY0, DAY0 + timedelta(days=30)
    got = store.inference_range_estimate_sums(conn, lo, hi, 27)
    monkeypatch.setattr(store, "_scalar", real_scalar)
    assert seen == [1]  # the first statement saw one entry per row
    assert _estimate_of(got, "7") == _estimate_of(store.inference_range_estimate_sums(conn, lo, hi, 27), "7")
    mine = [r for r in rows if r["model_version"] == "7"]
    mine = [{**r, "top_k": (r["top_k"] or [])[:1] or None} for r in mine] + [late]
    py = pe.row_sums([r["predicted_code"] for r in mine], [r["confidence"] for r in mine],
                     [r["top_k"] for r in mine], 27)
    assert _estimate_of(got, "7") == py


# --- migration 012 ---------------------------------------------------------------------------------------
def test_migration_adds_the_estimate_columns_and_is_idempotent(conn):
    cols = dict(query(conn, """SELECT column_name, data_type FROM information_schema.columns
                               WHERE table_name = 'drift_reports'"""))
    for c in store.ESTIMATE_COLUMNS:
        assert c in cols, c
    assert cols["realized_n"] == "integer" and cols["estimated_weighted_f1"] == "double precision"
    assert query(conn, "SELECT name FROM schema_migrations WHERE version = 12") == [("performance_estimate",)]
    sql = (Path(db.__file__).parent / "sql" / "012_performance_estimate.sql").read_text()
    with conn.cursor() as cur:
        cur.execute(sql)  # again: nothing changes, nothing fails
    conn.commit()
    base = dict(pipeline_run_id=None, report_date=DAY0.date(), window_days=7, as_of=DAY0, model_version="1",
                n_inferences=500, n_feedback=0, status="ok", level="NONE", data_drift_score=0.01,
                prediction_drift_score=0.01, performance_drift_score=None, drift_detected=False, details={})
    rid = store.insert_drift_report(conn, **base)  # without the estimate: NULLs, realized_n 0
    rep = store.get_drift_report(conn, rid)
    assert rep["estimated_weighted_f1"] is None and rep["realized_n"] == 0
    import psycopg2

    with pytest.raises(psycopg2.errors.CheckViolation):  # a band that does not hold its estimate
        store.insert_drift_report(conn, **base, estimated_weighted_f1=0.8, estimated_f1_low=0.85,
                                  estimated_f1_high=0.9)
    conn.rollback()


# --- the alert cause -----------------------------------------------------------------------------------
def _report(conn, score: float | None, *, estimate: float = 0.75, ref: float = 0.80) -> int:
    details = {"status": "ok", "estimated_performance": {
        "weighted_f1": estimate, "low": estimate - 0.02, "high": estimate + 0.02, "n": 1000, "score": score,
        "drop": ref - estimate, "margin": 0.05, "reference": {"weighted_f1": ref},
        "top_class_drops": [["60", 0.2]],
        "realized": {"weighted_f1": estimate - 0.01, "n": 120, "estimate_on_labelled": {"weighted_f1": estimate}}}}
    rid = store.insert_drift_report(
        conn, pipeline_run_id=None, report_date=DAY0.date(), window_days=7, as_of=DAY0, model_version="1",
        n_inferences=1000, n_feedback=120, status="ok", level="NONE", data_drift_score=0.01,
        prediction_drift_score=0.02, performance_drift_score=None, drift_detected=False, details=details,
        estimated_weighted_f1=estimate, estimated_f1_low=estimate - 0.02, estimated_f1_high=estimate + 0.02,
        reference_estimated_f1=ref, estimated_performance_drift_score=score, realized_weighted_f1=estimate - 0.01,
        realized_n=120, realized_estimated_f1=estimate)
    conn.commit()
    return rid


def _alert(conn, settings, score, **kw) -> dict:
    r = alert(conn, settings, T, report_id=_report(conn, score, **kw))
    assert r.status == "succeeded", r.message
    return {o["cause"]: o for o in r.outputs["alerts"]}["estimated_performance"]


def test_estimated_performance_alert_levels_dedup_and_resolution(conn, settings):
    out = _alert(conn, settings, 0.14)   # a drop of 1.4 margins
    assert (out["action"], out["level"]) == ("created", "WARNING")
    assert out["notified"] == ["log"]
    [row] = query(conn, "SELECT cause, level, status, message FROM alerts")
    assert row[:3] == ("estimated_performance", "WARNING", "open") and "estimated performance 0.1400" in row[3]
    out = _alert(conn, settings, 0.12)   # same level again: deduplicated
    assert out["action"] == "updated" and out["notified"] == []
    out = _alert(conn, settings, 0.25, estimate=0.68)   # 2.5 margins: ALERT, notified at once
    assert (out["action"], out["level"]) == ("escalated", "ALERT")
    out = _alert(conn, settings, 0.45, estimate=0.58)   # CRITICAL
    assert (out["action"], out["level"]) == ("escalated", "CRITICAL")
    [(count, level, details)] = query(conn, "SELECT count, level, details FROM alerts WHERE status = 'open'")
    assert (count, level) == (4, "CRITICAL") and [h["level"] for h in details["history"]] == \
        ["WARNING", "WARNING", "ALERT", "CRITICAL"]
    # no estimate in a report (e.g. insufficient data): nothing changes
    r = alert(conn, settings, T, report_id=store.insert_drift_report(
        conn, pipeline_run_id=None, report_date=DAY0.date(), window_days=7, as_of=DAY0, model_version="1",
        n_inferences=10, n_feedback=0, status="insufficient_data", level="NONE", data_drift_score=None,
        prediction_drift_score=None, performance_drift_score=None, drift_detected=False, details={}))
    assert {o["cause"]: o["action"] for o in r.outputs["alerts"]}["estimated_performance"] == "no_data"
    out = _alert(conn, settings, 0.0, estimate=0.81)    # back above the reference: resolved
    assert out["action"] == "resolved" and out["previous_level"] == "CRITICAL"
    assert query(conn, "SELECT status FROM alerts") == [("resolved",)]
    [(payload,)] = query(conn, "SELECT payload FROM notifications WHERE event = 'drift_resolved'")
    assert payload["context"]["dedup_key"] == "mlops-drift-estimated_performance"
    assert payload["subject"].endswith("(estimated performance back to 0.0000)")
    assert "Estimated weighted F1 (no labels) 0.8100" in payload["context"]["justification"]


def test_the_alert_message_names_the_estimate_the_reference_and_the_realized_f1(conn, settings):
    _alert(conn, settings, 0.3, estimate=0.65)
    [(payload,)] = query(conn, "SELECT payload FROM notifications WHERE event = 'drift_alert' LIMIT 1")
    ctx = payload["context"]
    text = ctx["justification"]
    assert "Estimated weighted F1 (no labels) 0.6500 [0.6300, 0.6700]" in text
    assert "0.8000 estimated on the model's holdout" in text and "realized 0.6400 on 120 labelled" in text
    assert ctx["scores"]["estimated_performance"] == pytest.approx(0.3)
    assert ctx["top_features"][0]["feature"] == "estimated_f1_drop"
    assert "estimated perf.:    0.3000" in payload["text"]


# --- the margin ---------------------------------------------------------------------------------------------
def test_estimate_margin_from_settings_overridden_and_reset(conn, settings, cli):
    th = effective_thresholds(conn, settings)
    assert (th["estimate_margin"], th["estimate_margin_source"]) == (0.05, "settings")
    th = update_thresholds(conn, settings, "ops", estimate_margin=0.08, note="labels are late this month")
    assert (th["estimate_margin"], th["estimate_margin_source"]) == (0.08, "app_settings")
    assert set(th["source"].values()) == {"settings"}  # the thresholds were not pinned
    assert th["updated_by"] == "ops" and th["updated_at"] is not None  # who changed what is in force
    [(params,)] = query(conn, "SELECT params FROM alert_actions WHERE action = 'adjust_thresholds'")
    assert params["new"] == {"estimate_margin": 0.08}
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(Invalid, match="estimate margin"):
            update_thresholds(conn, settings, "ops", estimate_margin=bad)
    r = cli("thresholds", "--estimate-margin", "0.06", "--by", "ops2")
    assert r.exit_code == 0 and "estimate margin 0.06  (app_settings)" in r.output
    assert effective_thresholds(conn, settings)["updated_by"] == "ops2"
    with pytest.raises(Invalid, match=r"^Give at least one value to change \(warning, alert, critical or estimate_margin\)$"):
        update_thresholds(conn, settings, "ops")
    reset_thresholds(conn, "ops")
    assert effective_thresholds(conn, settings)["estimate_margin"] == 0.05
    with pytest.raises(Exception, match="ESTIMATE_MARGIN"):
        from mlops_cli.config import load_settings

        load_settings({"ESTIMATE_MARGIN": "1.2"}, dotenv=Path("/nonexistent"))
    json.dumps(th, default=str)
