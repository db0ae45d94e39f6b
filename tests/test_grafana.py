"""Grafana dashboards and the provisioned drift alert rule, checked without a Grafana server.

- Every dashboard JSON parses and is well formed: uid, title, panels with unique ids on a
  24-column grid without overlaps, data sources that are provisioned (uid and type), template
  variables that are defined.
- EVERY SQL query (panels, annotations, template variables, the alert rule) runs on the real
  schema (the migrated test database), with Grafana's macros expanded the way Grafana's
  PostgreSQL data source expands them ($__timeFilter, $__time, $__timeGroupAlias, ...) and the
  template variables replaced by the dashboard's default values: on an empty database, and after
  representative rows are inserted, when each query must return rows of the shape its panel needs
  (a "time" column in ascending order and a numeric value for time series, the fields a stat or a
  bar chart names, ...).
- Every Prometheus expression uses metric names that exist: the API's, read from the /metrics
  endpoint of the app built by `mlops_cli.api.create_app`, supercronic's (DEPLOY_FACTS.md), and
  Prometheus' own per-target series (`up`); job matchers name jobs of prometheus/prometheus.yml.
- The provisioning files parse, point at the folders docker-compose.yml mounts, and the alert rule
  is a valid unified-alerting rule whose threshold is DRIFT_ALERT_THRESHOLD's default and which
  fires on a drift report above it.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import yaml

from mlops_cli.config import Settings

REPO = Path(__file__).resolve().parent.parent
GRAFANA = REPO / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
DATASOURCES_YML = PROVISIONING / "datasources/datasources.yml"
DASHBOARDS_YML = PROVISIONING / "dashboards/dashboards.yml"
ALERT_RULES_YML = PROVISIONING / "alerting/drift_rules.yml"
COMPOSE = REPO / "docker-compose.yml"
PROMETHEUS_YML = REPO / "prometheus/prometheus.yml"

DASHBOARDS = {"drift_monitoring.json": "mlops-drift", "pipeline_models.json": "mlops-pipeline",
              "api.json": "mlops-api"}
BUILTIN_ANNOTATION_DS = "-- Grafana --"
EXPR_DS = "__expr__"

# The test time range: Grafana would substitute the dashboard's range; any fixed one will do.
RANGE_FROM = "now() - interval '7 days'"
RANGE_TO = "now()"
INTERVAL = "1h"  # $__interval

# supercronic's /metrics (../shared/DEPLOY_FACTS.md; Go client: counters have no _total suffix).
SUPERCRONIC_METRICS = {
    "supercronic_executions": "counter", "supercronic_successful_executions": "counter",
    "supercronic_failed_executions": "counter", "supercronic_currently_running": "gauge",
    "supercronic_deadline_exceeded": "counter", "supercronic_cron_execution_time_seconds": "histogram",
}
# Series Prometheus writes itself for every scrape target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                        "scrape_samples_post_metric_relabeling", "scrape_series_added"}

NUMERIC_OIDS = {20, 21, 23, 700, 701, 1700}          # int8, int2, int4, float4, float8, numeric
TIME_OIDS = {1082, 1114, 1184} | NUMERIC_OIDS         # date, timestamp, timestamptz, epoch numbers
TEXT_OIDS = {25, 1043, 18, 19}                        # text, varchar, char, name


# --- reading the files ---------------------------------------------------------------------------
def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


TYPE_ALIASES = {"postgres": "grafana-postgresql-datasource"}  # Grafana >= 10.4 accepts either name


def _type(name: str) -> str:
    return TYPE_ALIASES.get(name, name)


@functools.lru_cache(maxsize=None)
def datasources() -> dict[str, str]:
    """uid -> type of the provisioned data sources."""
    return {d["uid"]: _type(d["type"]) for d in _yaml(DATASOURCES_YML)["datasources"]}


@functools.lru_cache(maxsize=None)
def dashboard(name: str) -> dict:
    return json.loads((DASHBOARD_DIR / name).read_text())


def all_panels(panels):
    """Panels, with the ones nested in (collapsed) rows."""
    for p in panels:
        yield p
        yield from all_panels(p.get("panels") or [])


def data_panels(dash):
    return [p for p in all_panels(dash["panels"]) if p.get("type") != "row"]


def variables(dash) -> dict[str, dict]:
    return {v["name"]: v for v in dash.get("templating", {}).get("list", [])}


def variable_value(var: dict) -> str:
    """The text Grafana's SQL data sources substitute for the variable's default selection."""
    current = var.get("current") or {}
    value = current.get("value")
    if var.get("multi") or var.get("includeAll"):
        values = value if isinstance(value, list) else [value]
        if "$__all" in values:
            values = [o["value"] for o in var.get("options", []) if o["value"] != "$__all"]
            if not values and var.get("type") == "custom":
                values = [v.strip() for v in var["query"].split(",")]
        return ",".join("'" + str(v).replace("'", "''") + "'" for v in values)
    assert value not in (None, "", []), f"variable {var['name']} has no default value"
    return str(value[0] if isinstance(value, list) else value)


def sql_queries():
    """(id, sql, kind, context) for every SQL query of the dashboards and the alert rule."""
    out = []
    for name in DASHBOARDS:
        dash = dashboard(name)
        vars_ = {k: variable_value(v) for k, v in variables(dash).items()}
        stem = name.removesuffix(".json")
        for p in data_panels(dash):
            for t in p.get("targets", []):
                if "rawSql" in t:
                    out.append((f"{stem}:{p['id']}:{t['refId']}:{p['title']}", t["rawSql"], "panel",
                                {"panel": p, "target": t, "vars": vars_}))
        for a in dash.get("annotations", {}).get("list", []):
            t = a.get("target") or {}
            if "rawSql" in t:
                out.append((f"{stem}:annotation:{a['name']}", t["rawSql"], "annotation",
                            {"annotation": a, "vars": vars_}))
        for v in variables(dash).values():
            if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") == "mlops-postgres":
                q = v["query"]["rawSql"] if isinstance(v["query"], dict) else v["query"]
                out.append((f"{stem}:variable:{v['name']}", q, "variable", {"var": v, "vars": vars_}))
    for group in _yaml(ALERT_RULES_YML)["groups"]:
        for rule in group["rules"]:
            for d in rule["data"]:
                if d["datasourceUid"] != EXPR_DS and "rawSql" in d["model"]:
                    out.append((f"alert:{rule['uid']}:{d['refId']}", d["model"]["rawSql"], "alert",
                                {"rule": rule, "query": d, "vars": {}}))
    return out


def prom_queries():
    """(id, expr, panel) for every Prometheus expression of the dashboards."""
    out = []
    for name in DASHBOARDS:
        for p in data_panels(dashboard(name)):
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append((f"{name.removesuffix('.json')}:{p['id']}:{t['refId']}:{p['title']}", t["expr"], p))
    return out


SQL_QUERIES = sql_queries()
PROM_QUERIES = prom_queries()


# --- Grafana's SQL macros ------------------------------------------------------------------------
def _duration_seconds(text: str) -> int:
    m = re.fullmatch(r"\s*'?(\d+)\s*(s|m|h|d|w)'?\s*", text)
    assert m, f"not a Grafana interval: {text!r}"
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def _split_args(text: str) -> list[str]:
    args, depth, cur, quote = [], 0, "", False
    for ch in text:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        args.append(cur.strip())
    return args


def expand(sql: str, variables_: dict[str, str], *, range_from: str = RANGE_FROM, range_to: str = RANGE_TO) -> str:
    """SQL as Grafana's PostgreSQL data source would send it (for a fixed time range)."""

    def var(m):
        name = m.group(1) or m.group(2)
        if name == "__interval":
            return f"'{INTERVAL}'"
        if name == "__interval_ms":
            return str(_duration_seconds(INTERVAL) * 1000)
        if name.startswith("__"):
            return m.group(0)  # a macro, expanded below
        assert name in variables_, f"template variable ${name} is not defined by the dashboard"
        return variables_[name]

    sql = re.sub(r"\$\{(\w+)\}|\$(\w+)", var, sql)

    macros = {
        "timeFilter": lambda a: f"{a[0]} BETWEEN {range_from} AND {range_to}",
        "time": lambda a: f'{a[0]} AS "time"',
        "timeEpoch": lambda a: f'extract(epoch from {a[0]}) AS "time"',
        "timeFrom": lambda a: f"({range_from})",
        "timeTo": lambda a: f"({range_to})",
        "timeGroup": lambda a: f"floor(extract(epoch from {a[0]})/{_duration_seconds(a[1])})*{_duration_seconds(a[1])}",
        "timeGroupAlias": lambda a: (f"floor(extract(epoch from {a[0]})/{_duration_seconds(a[1])})"
                                     f'*{_duration_seconds(a[1])} AS "time"'),
        "unixEpochFilter": lambda a: (f"{a[0]} >= extract(epoch from {range_from}) AND "
                                      f"{a[0]} <= extract(epoch from {range_to})"),
    }
    while True:
        m = re.search(r"\$__(\w+)\(", sql)
        if not m:
            break
        name = m.group(1)
        assert name in macros, f"unknown Grafana macro $__{name}"
        depth, i = 1, m.end()
        while depth:
            assert i < len(sql), f"unbalanced parentheses after $__{name}"
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        sql = sql[:m.start()] + macros[name](_split_args(sql[m.end():i - 1])) + sql[i:]
    assert "$" not in sql, f"unexpanded $ left in: {sql}"
    return sql


def test_macro_expansion():
    assert expand("SELECT $__time(a) WHERE $__timeFilter(t.b) AND x = $v", {"v": "7"}) == \
        f"SELECT a AS \"time\" WHERE t.b BETWEEN {RANGE_FROM} AND {RANGE_TO} AND x = 7"
    assert expand("$__timeGroupAlias(c, '1d')", {}) == 'floor(extract(epoch from c)/86400)*86400 AS "time"'
    assert expand("$__timeGroup(c, $__interval)", {}) == "floor(extract(epoch from c)/3600)*3600"
    assert expand("x IN (${p})", {"p": "'a','b'"}) == "x IN ('a','b')"
    with pytest.raises(AssertionError):
        expand("SELECT $undefined", {})


# --- representative rows -------------------------------------------------------------------------
MODEL = "rakuten-product-classifier"


def seed(conn) -> None:
    """A little of everything the dashboards read, inside the last 7 days, committed."""
    with conn.cursor() as cur:
        def run(pipeline, step, status, *, ago, minutes, parent=None, error=None, triggered_by="cron"):
            cur.execute(
                """INSERT INTO pipeline_runs (pipeline, step, status, triggered_by, actor, slot, started_at,
                                              finished_at, error, parent_run_id)
                   VALUES (%s, %s, %s, %s, 'pytest', '2026-W48', now() - %s::interval,
                           CASE WHEN %s = 'running' THEN NULL
                                ELSE now() - %s::interval + %s * interval '1 minute' END, %s, %s)
                   RETURNING id""",
                (pipeline, step, status, triggered_by, ago, status, ago, minutes, error, parent))
            return cur.fetchone()[0]

        weekly = run("weekly", "pipeline", "succeeded", ago="3 days", minutes=12)
        load = run("weekly", "load", "succeeded", ago="3 days", minutes=1, parent=weekly)
        run("weekly", "train", "succeeded", ago="3 days", minutes=8, parent=weekly)
        run("weekly", "evaluate", "succeeded", ago="3 days", minutes=2, parent=weekly)
        run("weekly", "promote", "succeeded", ago="3 days", minutes=1, parent=weekly)
        daily = run("daily", "pipeline", "failed", ago="1 day", minutes=3, error="step alert failed: SMTP down")
        drift_run = run("daily", "drift", "succeeded", ago="1 day", minutes=2, parent=daily)
        run("daily", "alert", "failed", ago="1 day", minutes=1, parent=daily, error="SMTP down")
        run("daily", "pipeline", "skipped", ago="1 day", minutes=0)
        run("manual", "train", "running", ago="5 minutes", minutes=0, triggered_by="cli")

        for i, (kind, ago, loaded, rejected) in enumerate([("initial", "6 days", 1200, 3),
                                                           ("incremental", "3 days", 90, 1)]):
            cur.execute(
                """INSERT INTO load_batches (pipeline_run_id, slot, as_of, kind, source_x, source_y, source_rows,
                                             start_offset, end_offset, rows_loaded, rows_rejected, created_at)
                   VALUES (%s, %s, current_date, %s, 'X.csv', 'Y.csv', 3000, 0, 100, %s, %s, now() - %s::interval)
                   RETURNING id""", (load, f"2026-W4{7 + i}", kind, loaded, rejected, ago))
            batch = cur.fetchone()[0]
            cur.execute("""INSERT INTO products (productid, designation, prdtypecode, batch_id)
                           VALUES (%s, 'Lampe de chevet', 2060, %s)""", (1000 + i, batch))
            cur.execute("""INSERT INTO rejected_rows (batch_id, source_index, raw, reason)
                           VALUES (%s, '17', '{}', 'empty designation')""", (batch,))

        for version, purpose, f1, ago in [("1", "training", 0.78, "6 days"), ("1", "evaluation", 0.79, "6 days"),
                                          ("2", "evaluation", 0.81, "3 days"),
                                          ("1", "champion-recheck", 0.77, "3 days")]:
            cur.execute(
                """INSERT INTO model_evaluations (model_name, model_version, purpose, holdout_rows, holdout_hash,
                                                  weighted_f1, macro_f1, accuracy, evaluated_at)
                   VALUES (%s, %s, %s, 500, 'h', %s, %s - 0.05, %s + 0.01, now() - %s::interval)""",
                (MODEL, version, purpose, f1, f1, f1, ago))
        for version, decision, restored, ago in [("1", "promoted", None, "6 days"), ("2", "promoted", None, "3 days"),
                                                 ("2", "rolled_back", "1", "2 days")]:
            cur.execute(
                """INSERT INTO model_decisions (model_name, model_version, decision, metric, candidate_score,
                                                champion_version, champion_score, rule, justification, decided_by,
                                                triggered_by, restored_version, created_at)
                   VALUES (%s, %s, %s, 'weighted_f1', 0.8, '1', 0.79, 'rule', 'why', 'pytest', 'cli', %s,
                           now() - %s::interval)""", (MODEL, version, decision, restored, ago))

        details = json.dumps({"thresholds": {"warning": 0.1, "alert": 0.2, "critical": 0.3},
                              "top_features": [{"feature": "title_length", "score": 0.25},
                                               {"feature": "oov_rate", "score": 0.12}]})
        reports = {}
        # the label-free estimate (migration 012): estimate, band, reference, score, realized, labels
        estimates = {7: (0.74, 0.72, 0.76, 0.80, 0.24, 0.73, 40, 0.745), 30: (0.79, 0.78, 0.80, 0.80, 0.04, None, 0, None)}
        for window, ago, status, scores, level, detected in [
                (7, "1 day", "ok", (0.25, 0.08, None), "ALERT", True),
                (30, "1 day", "ok", (0.12, 0.05, 0.02), "WARNING", False),
                (7, "2 days", "insufficient_data", (None, None, None), "NONE", False)]:
            est = estimates[window] if status == "ok" else (None,) * 6 + (0, None)
            cur.execute(
                """INSERT INTO drift_reports (report_date, data_drift_score, prediction_drift_score,
                                              performance_drift_score, drift_detected, details, window_days, as_of,
                                              model_version, n_inferences, n_feedback, status, level,
                                              pipeline_run_id, estimated_weighted_f1, estimated_f1_low,
                                              estimated_f1_high, reference_estimated_f1,
                                              estimated_performance_drift_score, realized_weighted_f1, realized_n,
                                              realized_estimated_f1)
                   VALUES (current_date, %s, %s, %s, %s, %s, %s, now() - %s::interval, '1', %s, 40, %s, %s, %s,
                           %s, %s, %s, %s, %s, %s, %s, %s)
                   RETURNING id""",
                (*scores, detected, details if status == "ok" else "{}", window, ago,
                 900 if status == "ok" else 50, status, level, drift_run, *est))
            reports[(window, ago)] = cur.fetchone()[0]

        for level, cause, status in [("ALERT", "data_drift", "open"), ("WARNING", "prediction_drift", "acknowledged"),
                                     ("CRITICAL", "performance_drift", "resolved"),
                                     ("ALERT", "estimated_performance", "resolved")]:
            cur.execute(
                """INSERT INTO alerts (level, cause, status, report_id, first_seen, last_seen, message, resolved_at)
                   VALUES (%s, %s, %s, %s, now() - interval '1 day', now() - interval '1 day', 'drift',
                           CASE WHEN %s = 'resolved' THEN now() END) RETURNING id""",
                (level, cause, status, reports[(7, "1 day")], status))
            alert = cur.fetchone()[0]
            if status == "acknowledged":
                cur.execute("""INSERT INTO alert_actions (alert_id, action, actor, note)
                               VALUES (%s, 'acknowledge', 'alice', 'looking')""", (alert,))

        for status, channel, error in [("sent", "email", None), ("failed", "slack", "HTTP 500")]:
            cur.execute(
                """INSERT INTO notifications (event, channel, target, subject, status, error, pipeline_run_id,
                                              sent_at)
                   VALUES ('drift_alert', %s, 'ops@example.com', 'Drift ALERT', %s, %s, %s,
                           now() - interval '1 day')""", (channel, status, error, daily))
    conn.commit()


def _execute(conn, sql: str):
    """(column names, column type oids, rows); the transaction is rolled back either way."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            cols = [(d.name, d.type_code) for d in cur.description]
            rows = cur.fetchall()
        return [c[0] for c in cols], [c[1] for c in cols], rows
    finally:
        conn.rollback()


def _expanded(item) -> str:
    _id, sql, kind, ctx = item
    if kind == "alert":
        rng = ctx["query"].get("relativeTimeRange") or {"from": 600, "to": 0}
        return expand(sql, {}, range_from=f"now() - interval '{int(rng['from'])} seconds'",
                      range_to=f"now() - interval '{int(rng['to'])} seconds'")
    return expand(sql, ctx["vars"])


SQL_IDS = [q[0] for q in SQL_QUERIES]


def test_there_are_sql_queries_everywhere_expected():
    kinds = {q[2] for q in SQL_QUERIES}
    assert {"panel", "annotation", "variable", "alert"} <= kinds
    assert len([q for q in SQL_QUERIES if q[2] == "panel"]) >= 20


@pytest.mark.parametrize("item", SQL_QUERIES, ids=SQL_IDS)
def test_sql_runs_on_the_empty_schema(conn, item):
    _execute(conn, _expanded(item))


def _check_shape(item, names, oids, rows):
    _id, _sql, kind, ctx = item
    assert rows, "no rows although the database holds data for this query"
    by_name = dict(zip(names, oids))
    fmt = (ctx.get("target") or ctx.get("annotation", {}).get("target") or ctx.get("query", {}).get("model")
           or {}).get("format", "table")
    panel = ctx.get("panel") or {}
    if kind == "annotation":
        assert "time" in by_name and by_name["time"] in TIME_OIDS, names
        assert "text" in by_name, names
    if fmt == "time_series" or panel.get("type") == "state-timeline":
        assert "time" in by_name and by_name["time"] in TIME_OIDS, f"no time column in {names}"
        times = [r[names.index("time")] for r in rows]
        assert times == sorted(times), "time series rows must come in ascending time order"
    if fmt == "time_series":
        assert any(o in NUMERIC_OIDS for n, o in by_name.items() if n != "time"), f"no numeric value in {names}"
    if panel.get("type") == "state-timeline":
        assert any(o in TEXT_OIDS for n, o in by_name.items() if n != "time"), names
    if panel.get("type") == "stat":
        pattern = panel["options"]["reduceOptions"].get("fields") or ""
        if pattern.startswith("/"):
            rx = re.compile(pattern.strip("/"))
            assert any(rx.search(n) for n in names), f"stat field {pattern} matches none of {names}"
        else:
            assert any(o in NUMERIC_OIDS for o in oids), f"stat panel without a numeric field: {names}"
    if panel.get("type") in ("bargauge", "timeseries"):
        assert any(o in NUMERIC_OIDS for n, o in by_name.items() if n != "time"), names
    if panel.get("type") == "barchart":
        x = panel["options"]["xField"]
        assert x in names, f"xField {x!r} not among {names}"
        assert any(o in NUMERIC_OIDS for o in oids), names
    if kind == "variable":
        assert all(r[0] is not None for r in rows)


@pytest.mark.parametrize("item", SQL_QUERIES, ids=SQL_IDS)
def test_sql_returns_rows_of_the_right_shape_with_data(conn, item):
    seed(conn)
    names, oids, rows = _execute(conn, _expanded(item))
    _check_shape(item, names, oids, rows)


def test_seeded_values_come_out_right(conn):
    """Spot checks that the queries compute what their titles say."""
    seed(conn)
    results = {}
    for item in SQL_QUERIES:
        names, _oids, rows = _execute(conn, _expanded(item))
        results[item[0].split(":", 2)[-1] if item[2] != "panel" else item[0].split(":", 3)[-1]] = (names, rows)
    names, rows = results["Champion version"]
    assert rows[0][names.index("champion")] == "v1"  # v2 was rolled back to v1
    names, rows = results["Champion weighted F1"]
    assert rows[0][0] == pytest.approx(0.77)  # the newest evaluation of v1: its champion recheck
    names, rows = results["Active alerts (open or acknowledged)"]
    assert sorted(r[names.index("status")] for r in rows) == ["acknowledged", "open"]
    assert rows[0][names.index("level")] == "ALERT"  # the worst first
    assert [r[names.index("acknowledged by")] for r in rows if r[names.index("status")] == "acknowledged"] == ["alice"]
    names, rows = results["Catalogue size over time"]
    assert [r[1] for r in rows] == [1200, 1290]
    names, rows = results["Latest level ($window-day window)"]
    assert rows[0][0] == "ALERT"  # the newest 7-day report (the older one had too little data)
    names, rows = results["Latest estimate ($window-day window)"]
    assert dict(zip(names, rows[0])) == {"estimated": 0.74, "reference": 0.80, "realized": 0.73, "labels": 40}
    names, rows = results["Estimated weighted F1 with its 95% band, against realized ($window-day window)"]
    assert [(r[names.index("band low (95%)")], r[names.index("estimated weighted F1")],
             r[names.index("band high (95%)")]) for r in rows] == [(0.72, 0.74, 0.76)]  # ok reports only
    names, rows = results["Failures"]
    assert {r[names.index("step")] for r in rows} == {"pipeline", "alert"}
    names, rows = results["Notifications per day: sent / failed"]
    assert {r[1] for r in rows} == {"sent", "failed"}


# --- the alert rule -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rules():
    doc = _yaml(ALERT_RULES_YML)
    assert doc["apiVersion"] == 1
    return [(g, r) for g in doc["groups"] for r in g["rules"]]


def test_alert_rule_is_well_formed(rules):
    provider_folders = {p["folder"] for p in _yaml(DASHBOARDS_YML)["providers"]}
    assert rules
    for group, rule in rules:
        assert group["orgId"] == 1 and group["name"] and re.fullmatch(r"\d+[smh]", group["interval"])
        assert group["folder"] in provider_folders, "the rule sits in the dashboards' folder"
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", rule["uid"])
        assert rule["title"] and rule["for"] == "0m"
        assert rule["labels"]["severity"] and rule["annotations"]["summary"]
        assert rule["noDataState"] in ("OK", "NoData", "Alerting", "KeepLast")
        assert rule["execErrState"] in ("OK", "Error", "Alerting", "KeepLast")
        refs = {d["refId"]: d for d in rule["data"]}
        assert rule["condition"] in refs
        for d in rule["data"]:
            assert d["model"]["refId"] == d["refId"]
            if d["datasourceUid"] == EXPR_DS:
                assert d["model"]["type"] in ("reduce", "threshold", "math", "classic_conditions", "resample")
                if "expression" in d["model"] and d["model"]["type"] != "math":
                    assert d["model"]["expression"] in refs
            else:
                assert d["datasourceUid"] in datasources()
                assert _type(d["model"]["datasource"]["type"]) == datasources()[d["datasourceUid"]]
                assert d["relativeTimeRange"]["from"] > d["relativeTimeRange"]["to"] >= 0
        dash_uid = rule["annotations"].get("__dashboardUid__")
        if dash_uid:
            dash = next(dashboard(n) for n, uid in DASHBOARDS.items() if uid == dash_uid)
            panel_id = int(rule["annotations"]["__panelId__"])
            assert panel_id in {p["id"] for p in data_panels(dash)}


def _condition(rule):
    refs = {d["refId"]: d["model"] for d in rule["data"]}
    cond = refs[rule["condition"]]
    assert cond["type"] == "threshold"
    (c,) = cond["conditions"]
    return c["evaluator"]["type"], c["evaluator"]["params"], refs[cond["expression"]]


def test_alert_threshold_is_the_alert_level(rules):
    (_group, rule), = [(g, r) for g, r in rules if r["uid"] == "mlops-drift-score-alert"]
    op, params, reduce = _condition(rule)
    assert (op, params) == ("gt", [Settings().drift_alert_threshold])
    assert reduce["type"] == "reduce" and reduce["expression"] in {d["refId"] for d in rule["data"]}


def _alert_value(conn, rule):
    (item,) = [q for q in SQL_QUERIES if q[2] == "alert" and q[3]["rule"]["uid"] == rule["uid"]]
    names, oids, rows = _execute(conn, _expanded(item))
    if not rows:
        return None
    assert names[0] == "time" and oids[0] in TIME_OIDS and oids[1] in NUMERIC_OIDS
    return rows[-1][1]  # reducer "last"


def test_alert_rule_fires_on_the_newest_report_above_the_threshold(conn, rules):
    (_group, rule), = [(g, r) for g, r in rules if r["uid"] == "mlops-drift-score-alert"]
    _op, (threshold,), _ = _condition(rule)
    assert _alert_value(conn, rule) is None  # no report: NoData (-> OK)
    seed(conn)
    value = _alert_value(conn, rule)
    assert value == pytest.approx(0.25) and value > threshold  # the worst score of the newest run

    with conn.cursor() as cur:  # a newer run, below the threshold: resolves
        cur.execute("""INSERT INTO drift_reports (report_date, data_drift_score, prediction_drift_score,
                                                  window_days, as_of, status, level)
                       VALUES (current_date, 0.05, 0.15, 7, now(), 'ok', 'WARNING')""")
        # a newer run without enough data changes nothing (as in `mlops alert`)
        cur.execute("""INSERT INTO drift_reports (report_date, window_days, as_of, status)
                       VALUES (current_date, 7, now() + interval '1 minute', 'insufficient_data')""")
    conn.commit()
    assert _alert_value(conn, rule) == pytest.approx(0.15)

    with conn.cursor() as cur:  # only old reports: nothing recent to judge -> NoData
        cur.execute("UPDATE drift_reports SET created_at = now() - interval '10 days'")
    conn.commit()
    assert _alert_value(conn, rule) is None


# --- dashboards, statically -----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_dashboard_structure(name):
    dash = dashboard(name)
    assert dash["uid"] == DASHBOARDS[name]
    assert dash["title"] and dash["panels"]
    assert 36 <= dash["schemaVersion"] <= 41
    assert "id" not in dash or dash["id"] is None, "provisioned dashboards carry no database id"
    panels = list(all_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells = set()
    for p in panels:
        assert p.get("title"), p
        g = p["gridPos"]
        assert g["w"] >= 1 and g["h"] >= 1 and 0 <= g["x"] and g["x"] + g["w"] <= 24, (p["title"], g)
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (cells & mine), f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"


def test_dashboard_uids_are_unique_and_every_file_is_known():
    files = sorted(f.name for f in DASHBOARD_DIR.glob("*.json"))
    assert set(DASHBOARDS) <= set(files)
    uids = [json.loads((DASHBOARD_DIR / f).read_text())["uid"] for f in files]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_panels_use_provisioned_datasources(name):
    dash = dashboard(name)
    ds = datasources()
    for p in data_panels(dash):
        uid = p["datasource"]["uid"]
        assert uid in ds, f"{p['title']}: datasource {uid!r} is not provisioned ({sorted(ds)})"
        assert _type(p["datasource"]["type"]) == ds[uid], p["title"]
        for t in p["targets"]:
            tds = t.get("datasource") or p["datasource"]
            assert tds["uid"] == uid and _type(tds["type"]) == ds[uid], p["title"]
            assert ("rawSql" in t) == (ds[uid] == "grafana-postgresql-datasource"), p["title"]
            assert ("expr" in t) == (ds[uid] == "prometheus"), p["title"]
    for a in dash.get("annotations", {}).get("list", []):
        uid = a["datasource"]["uid"]
        assert uid in ds or (a.get("builtIn") and uid == BUILTIN_ANNOTATION_DS), a["name"]
    for v in variables(dash).values():
        if "datasource" in v and v["type"] == "query":
            assert v["datasource"]["uid"] in ds and _type(v["datasource"]["type"]) == ds[v["datasource"]["uid"]]


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_template_variables_used_are_defined(name):
    dash = dashboard(name)
    defined = set(variables(dash))
    text = json.dumps(dash["panels"]) + json.dumps(dash.get("annotations", {}))
    used = {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", text)}
    used = {u for u in used if not u.startswith("__")}
    assert used <= defined, f"undefined variables: {used - defined}"
    assert defined <= used, f"unused variables: {defined - used}"


def test_drift_scores_panel_shows_the_three_thresholds():
    dash = dashboard("drift_monitoring.json")
    s = Settings()
    expected = [s.drift_warning_threshold, s.drift_alert_threshold, s.drift_critical_threshold]
    panels = [p for p in data_panels(dash) if p["type"] == "timeseries"
              and "drift_score" in json.dumps(p["targets"])]
    assert panels
    for p in panels:
        d = p["fieldConfig"]["defaults"]
        steps = [st["value"] for st in d["thresholds"]["steps"]]
        assert steps == [None, *expected], p["title"]
        assert d["custom"]["thresholdsStyle"]["mode"] == "line+area"
        sql = " ".join(t["rawSql"] for t in p["targets"])
        for col in ("data_drift_score", "prediction_drift_score", "performance_drift_score",
                    "estimated_performance_drift_score"):
            assert col in sql


def test_dashboards_cover_what_they_are_for():
    def text(name):
        return json.dumps(dashboard(name)["panels"])

    drift = text("drift_monitoring.json") + json.dumps(dashboard("drift_monitoring.json")["annotations"])
    for needle in ("drift_reports", "drift_detected", "FROM alerts", "n_inferences", "status <> 'resolved'",
                   "estimated_weighted_f1", "estimated_f1_low", "estimated_f1_high", "realized_weighted_f1"):
        assert needle in drift, needle
    pipe = text("pipeline_models.json")
    for needle in ("pipeline_runs", "model_decisions", "model_evaluations", "load_batches", "rejected_rows",
                   "notifications", "weighted_f1", "error"):
        assert needle in pipe, needle
    api = text("api.json")
    for needle in ("histogram_quantile(0.5", "histogram_quantile(0.99", "mlops_api_requests_total",
                   "mlops_predictions_total", "mlops_prediction_confidence_bucket", "mlops_inference_log_buffer_rows",
                   "mlops_inference_log_dropped_rows_total", "mlops_model_version_info",
                   "supercronic_executions", "supercronic_failed_executions"):
        assert needle in api, needle


# --- Prometheus expressions -----------------------------------------------------------------------
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                   "bool", "offset", "inf", "nan", "Inf", "NaN"}


def promql_metric_names(expr: str) -> set[str]:
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                 # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)                              # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                             # range selectors
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end():].lstrip().startswith("(") or m.group(0) in PROMQL_KEYWORDS:
            continue  # a function or a keyword
        names.add(m.group(0))
    return names


def test_promql_metric_name_extraction():
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job="api", route="/x"}[$__rate_interval])))'
        ' / on(job) group_left b_total * 1e3') == {"a_bucket", "b_total"}


def _samples(family: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{family}_total", f"{family}_created"}
    if kind in ("histogram", "gaugehistogram"):
        return {f"{family}_bucket", f"{family}_sum", f"{family}_count", f"{family}_created"}
    if kind == "summary":
        return {family, f"{family}_sum", f"{family}_count", f"{family}_created"}
    if kind == "info":
        return {f"{family}_info"}
    return {family}


def api_metric_names(settings) -> set[str]:
    """Series names the API exposes at /metrics (from the real app, after one request)."""
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from mlops_cli.api import create_app

    app = create_app(settings, start_background=False)
    with TestClient(app) as client:
        client.get("/health")
        response = client.get("/metrics")
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.text):
        names |= _samples(family.name, family.type)
        names |= {s.name for s in family.samples}
    return names


def supercronic_metric_names() -> set[str]:
    names = set()
    for family, kind in SUPERCRONIC_METRICS.items():
        names |= {family} if kind == "counter" else _samples(family, kind)  # Go client: no _total
    return names


def test_prometheus_expressions_use_exposed_metrics(settings):
    assert len(PROM_QUERIES) >= 15
    api = api_metric_names(settings)
    assert {"mlops_api_requests_total", "mlops_api_request_duration_seconds_bucket",
            "mlops_predictions_total", "mlops_prediction_confidence_bucket"} <= api
    cron = supercronic_metric_names()
    jobs = {c["job_name"] for c in _yaml(PROMETHEUS_YML)["scrape_configs"]}
    problems = []
    used = set()
    for qid, expr, _panel in PROM_QUERIES:
        for ch_open, ch_close in ("()", "[]", "{}"):
            if expr.count(ch_open) != expr.count(ch_close):
                problems.append(f"{qid}: unbalanced {ch_open}{ch_close}")
        names = promql_metric_names(expr)
        if not names:
            problems.append(f"{qid}: no metric in {expr!r}")
        for name in names:
            used.add(name)
            if name not in api | cron | PROMETHEUS_SYNTHETIC:
                problems.append(f"{qid}: unknown metric {name!r}")
        for job in re.findall(r'\bjob\s*=~?\s*"([^"]*)"', expr):
            if job not in jobs:
                problems.append(f"{qid}: job {job!r} is not scraped ({sorted(jobs)})")
            if any(n.startswith("mlops_") for n in names) and job != "api":
                problems.append(f"{qid}: API metrics come from job api, not {job!r}")
            if any(n.startswith("supercronic_") for n in names) and job != "cron":
                problems.append(f"{qid}: supercronic metrics come from job cron, not {job!r}")
        for inner in re.findall(r"histogram_quantile\(\s*[\d.]+\s*,(.*)\)", expr):
            if not re.search(r"by\s*\([^)]*\ble\b", inner) or "_bucket" not in inner:
                problems.append(f"{qid}: histogram_quantile needs rate(..._bucket) summed by le")
    assert not problems, "\n".join(problems)
    assert {"supercronic_executions", "supercronic_failed_executions"} <= used


# --- provisioning files ---------------------------------------------------------------------------
def test_provisioning_files_parse():
    files = sorted(PROVISIONING.rglob("*.y*ml"))
    assert {f.parent.name for f in files} >= {"datasources", "dashboards", "alerting"}
    for f in files:
        doc = _yaml(f)
        assert isinstance(doc, dict) and doc.get("apiVersion") == 1, f


def test_provisioning_points_at_the_mounted_folders():
    compose = _yaml(COMPOSE)
    mounts = {}
    for v in compose["services"]["grafana"]["volumes"]:
        parts = str(v).split(":")
        if parts[0].startswith("./"):
            mounts[parts[1]] = (REPO / parts[0]).resolve()
    assert mounts.get("/etc/grafana/provisioning") == PROVISIONING.resolve()
    for provider in _yaml(DASHBOARDS_YML)["providers"]:
        path = provider["options"]["path"]
        assert path in mounts, f"dashboard provider path {path} is not mounted by docker-compose.yml"
        host = mounts[path]
        assert host.is_dir(), host
        assert {f.name for f in host.glob("*.json")} >= set(DASHBOARDS)
        assert provider["folder"]
    assert ALERT_RULES_YML.parent.parent == PROVISIONING  # read from /etc/grafana/provisioning/alerting
    uids = {d["uid"] for d in _yaml(DATASOURCES_YML)["datasources"]}
    assert {"mlops-postgres", "prometheus"} <= uids
