"""The daily drift check on 1,000,000 logged predictions, and Evidently's DataDriftPreset on the same
data for comparison.

1. A model is trained (`mlops load` + `mlops train`, small TF-IDF) on a generated catalogue and made
   champion; its reference is stored by `train`.
2. 1,000,000 inference_log rows of unchanged traffic over 30 days are written with COPY
   (mlops_cli.simulate, 2% with feedback). The daily check -- `drift` (windows 7 and 30 days,
   reading included) then `alert` -- is timed end to end, cold and warm. Target: < 10 s on 2 cores.
3. Evidently (0.7.23, in its own virtualenv benchmarks/.venv-evidently, created and installed on
   first use) runs DataDriftPreset on an export of the 30-day window against the model's holdout
   (same columns: designation_len, description_len, n_tokens, oov_rate, script, lang,
   predicted_code, confidence), timed.
4. Agreement: 20,000-row 7-day windows of each synthetic drift kind (none, vocabulary, length,
   classes); our verdict (data or prediction drift at ALERT or above, i.e. drift_detected without
   the performance score, which Evidently does not have) against Evidently's dataset drift
   (share of drifted columns >= 0.5), and column by column.

Prints a table, writes benchmarks/results/bench_drift.json.
Usage: python benchmarks/bench_drift.py [--rows 1000000] [--catalogue 10000] [--no-evidently]

--scale 1000000,30000000 instead measures the partitioned inference log (issue 18, docs/SCALING.md),
side by side in one run, and writes benchmarks/results/bench_drift_scale.json:
  a. for each size (rows over 30 days, written by COPY, a fresh database each, free disk checked
     first from the bytes per row measured at the smallest size): table size, the `rollup` step
     over the 30 closed days (once; the daily pipeline then rolls up one day a day), the daily
     check (`drift` 7 + 30 days from the rollups, then `alert`), and at the smallest size the row
     scan (rollups=False) on the same rows. Target: check(largest) <= 2 x check(smallest). Beside
     it, the labelling queue's pool at noon of the last day (7 days, limit 50) from the days'
     lists and by a scan of its window, both pools compared (docs/SCALING.md).
  b. serving: `mlops serve` on the partitioned log against the same server on the table of
     migration 008 (unpartitioned: "today's"), alternating runs; then on the partitioned log,
     p99 with and without day partitions being dropped (retention) during the load.
     Targets: throughput within 5%, p99 at most +20% while dropping.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, print_table, venv_python, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
EVIDENTLY_VENV = HERE / ".venv-evidently"
EVIDENTLY_PINS = ("evidently==0.7.23", "pandas<3")
NUMERICAL = ["designation_len", "description_len", "n_tokens", "oov_rate", "confidence"]
CATEGORICAL = ["script", "lang", "predicted_code"]
COLUMNS = NUMERICAL + CATEGORICAL
DAY0 = datetime(2031, 1, 1, tzinfo=timezone.utc)
KINDS = ("none", "vocabulary", "length", "classes")

EVIDENTLY_SCRIPT = r'''
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
numerical, categorical = json.loads(sys.argv[3]), json.loads(sys.argv[4])
dtypes = {c: "string" for c in categorical}
ref = pd.read_csv(sys.argv[1], dtype=dtypes)
cur = pd.read_csv(sys.argv[2], dtype=dtypes)
t_read = time.perf_counter() - t0
definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
t1 = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(
    reference_data=Dataset.from_pandas(ref, data_definition=definition),
    current_data=Dataset.from_pandas(cur, data_definition=definition))
t_run = time.perf_counter() - t1
out = {"rows_reference": len(ref), "rows_current": len(cur), "read_seconds": t_read, "run_seconds": t_run,
       "columns": {}, "drift_share": None, "drifted_columns": None}
for m in snapshot.dict()["metrics"]:
    name, cfg, value = m.get("metric_name", ""), m.get("config") or {}, m.get("value")
    if "DriftedColumnsCount" in name:
        out["drifted_columns"], out["drift_share"] = value["count"], value["share"]
        out["drift_share_threshold"] = cfg.get("drift_share")
    elif "ValueDrift" in name:
        col = cfg.get("column")
        method = cfg.get("method") or ""
        threshold = cfg.get("threshold")
        score = float(value)
        p_value = "p_value" in method.lower() or "test" in method.lower()
        drifted = (score < threshold) if p_value else (score >= threshold)
        out["columns"][col] = {"method": method, "threshold": threshold, "score": score, "drift": bool(drifted)}
out["dataset_drift"] = (out["drift_share"] is not None and out["drift_share_threshold"] is not None
                        and out["drift_share"] >= out["drift_share_threshold"])
print(json.dumps(out))
'''


# --- Evidently in its own virtualenv ---------------------------------------------------------------
def evidently_python() -> tuple[Path | None, str | None]:
    """The venv's python with evidently installed (created on first use), or (None, why not)."""
    return venv_python(EVIDENTLY_VENV, EVIDENTLY_PINS, "evidently")


def run_evidently(py: Path, ref_csv: Path, cur_csv: Path) -> dict:
    script = Path(tempfile.mkdtemp(prefix="evidently-")) / "run.py"
    script.write_text(EVIDENTLY_SCRIPT)
    t = time.perf_counter()
    r = subprocess.run([str(py), str(script), str(ref_csv), str(cur_csv), json.dumps(NUMERICAL),
                        json.dumps(CATEGORICAL)], capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        return {"error": r.stderr[-2000:], "wall_seconds": wall}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = wall
    return out


# --- data export ------------------------------------------------------------------------------------
def export_window(conn, start, end, path: Path) -> int:
    sql = ("COPY (SELECT designation_len, description_len, n_tokens, "
           "CASE WHEN n_tokens > 0 THEN n_oov::float8 / n_tokens ELSE 0 END AS oov_rate, confidence, "
           "script, lang, predicted_code FROM inference_log WHERE logged_at > %s AND logged_at <= %s) "
           "TO STDOUT WITH (FORMAT csv, HEADER true)")
    with conn.cursor() as cur, open(path, "w", encoding="utf-8") as f:
        cur.copy_expert(cur.mogrify(sql, (start, end)).decode(), f)
        n = cur.rowcount
    conn.rollback()
    return n


def export_reference(model, holdout, path: Path) -> int:
    """The model's holdout with the same columns (what Evidently compares against)."""
    import pandas as pd

    from mlops_cli import textstats
    from mlops_cli.reference import served_predictions

    vocab = textstats.model_vocabulary(model)
    feats = [textstats.row_features(d, x, vocab) for d, x in zip(holdout["designation"], holdout["description"])]
    codes, conf = served_predictions(model, holdout[["designation", "description"]])
    df = pd.DataFrame({
        "designation_len": [len(d) for d in holdout["designation"]],
        "description_len": [len(x) for x in holdout["description"]],
        "n_tokens": [f["n_tokens"] for f in feats],
        "oov_rate": [f["n_oov"] / f["n_tokens"] if f["n_tokens"] else 0.0 for f in feats],
        "confidence": conf, "script": [f["script"] for f in feats], "lang": [f["lang"] for f in feats],
        "predicted_code": codes,
    })[COLUMNS]
    df.to_csv(path, index=False)
    return len(df)


# --- the benchmark ------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--case-rows", type=int, default=20_000)
    ap.add_argument("--no-evidently", action="store_true")
    ap.add_argument("--scale", help="comma-separated sizes (rows over 30 days): the partitioned-log benchmark")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="--scale: skip a size that would end past this")
    ap.add_argument("--no-serve", action="store_true", help="--scale: skip the serving comparison")
    ap.add_argument("--serve-requests", type=int, default=3000)
    ap.add_argument("--serve-rounds", type=int, default=4)
    args = ap.parse_args()
    if args.scale:
        return main_scale(args)

    from mlops_cli import dataset, db, registry, store
    from mlops_cli.runs import Trigger
    from mlops_cli.simulate import simulate_traffic
    from mlops_cli.steps.alert import alert
    from mlops_cli.steps.drift import drift
    from mlops_cli.steps.load import load
    from mlops_cli.steps.train import train
    from mlops_cli.synth import write_catalogue

    T = Trigger(actor="bench")
    result: dict = {"rows": args.rows, "target_seconds": 10.0}
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-drift-"))
    with bench_home("drift") as settings:
        settings = settings.replace(initial_load_fraction=1.0)
        conn = db.open_db(settings)
        x, y = write_catalogue(work / "catalogue", rows=args.catalogue, seed=7)
        load(conn, settings, T, x_path=str(x), y_path=str(y))
        t = time.perf_counter()
        r = train(conn, settings, T, params={"word_max_features": 20000, "char_max_features": 20000})
        result["train_seconds"] = round(time.perf_counter() - t, 1)
        version = r.outputs["model_version"]
        registry.set_alias(settings, registry.CHAMPION, version)
        model = registry.load_model(settings, version=version)
        print(f"model version {version} trained on {args.catalogue} rows in {result['train_seconds']} s", flush=True)

        # 1,000,000 rows of unchanged traffic over 30 days
        t = time.perf_counter()
        n = simulate_traffic(conn, settings, model, version, start=DAY0, days=30,
                             per_day=-(-args.rows // 30), seed=1, feedback_rate=0.02)
        conn.commit()
        result["insert_seconds"] = round(time.perf_counter() - t, 1)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE inference_log")
            cur.execute("VACUUM ANALYZE feedback")
            cur.execute("SELECT pg_total_relation_size('inference_log')")
            result["inference_log_mb"] = round(cur.fetchone()[0] / 2**20)
        conn.autocommit = False
        result["rows"] = n
        print(f"{n} rows written in {result['insert_seconds']} s ({result['inference_log_mb']} MB)", flush=True)

        as_of = DAY0 + timedelta(days=30)
        runs = []
        for attempt in ("first", "second"):
            t = time.perf_counter()
            d = drift(conn, settings, T, as_of=as_of, window_days=(7, 30))
            t_drift = time.perf_counter() - t
            a = alert(conn, settings, T)
            total = time.perf_counter() - t
            runs.append({"run": attempt, "drift_seconds": round(t_drift, 2), "alert_seconds": round(total - t_drift, 2),
                         "drift_breakdown": d.outputs.get("seconds"),
                         "total_seconds": round(total, 2), "drift_status": d.status, "alert_status": a.status,
                         "reports": d.outputs.get("reports")})
            print(f"daily check ({attempt}): drift {t_drift:.2f} s {d.outputs.get('seconds')} + alert "
                  f"{total - t_drift:.2f} s", flush=True)
        result["daily_check"] = runs
        result["daily_check_seconds"] = min(r["total_seconds"] for r in runs)
        result["meets_target"] = result["daily_check_seconds"] < result["target_seconds"]

        # the injected-drift cases, 7-day windows after the 30 days above
        products = store.read_products(conn, ("productid", "designation", "description", "prdtypecode"))
        _, holdout = dataset.split(products, settings.holdout_fraction)
        cases = {}
        for i, kind in enumerate(KINDS):
            start = as_of + timedelta(days=10 * (i + 1))
            end = start + timedelta(days=7)
            simulate_traffic(conn, settings, model, version, start=start, days=7,
                             per_day=-(-args.case_rows // 7), drift=kind, seed=100 + i, feedback_rate=0.05)
            conn.commit()
            t = time.perf_counter()
            d = drift(conn, settings, T, as_of=end, window_days=(7,))
            rep = store.get_drift_report(conn, d.outputs["reports"][0]["id"])
            levels = rep["details"]["levels"]
            ours = max(levels["data"], levels["prediction"], key=("NONE", "WARNING", "ALERT", "CRITICAL").index)
            cases[kind] = {"rows": rep["n_inferences"], "seconds": round(time.perf_counter() - t, 2),
                           "scores": rep["details"]["scores"], "levels": levels, "level": rep["level"],
                           "ours_data_or_prediction_level": ours,
                           "ours_drift": ours in ("ALERT", "CRITICAL"), "top_features": rep["details"]["top_features"],
                           "feature_scores": {k: round(v["score"], 4) for k, v in
                                              rep["details"]["data"]["features"].items()}
                           | {k: round(v["score"], 4) for k, v in rep["details"]["prediction"]["features"].items()},
                           "window": (start, end)}
            print(f"case {kind}: {rep['details']['scores']} -> {rep['level']}", flush=True)
        result["cases"] = cases

        # Evidently on the same data
        evid: dict = {"version": EVIDENTLY_PINS[0]}
        if args.no_evidently:
            evid["skipped"] = "--no-evidently"
        else:
            py, why = evidently_python()
            if py is None:
                evid["error"] = why
                print(f"Evidently unavailable: {why}", flush=True)
            else:
                ref_csv = work / "reference.csv"
                evid["reference_rows"] = export_reference(model, holdout, ref_csv)
                cur_csv = work / "current_30d.csv"
                t = time.perf_counter()
                export_window(conn, as_of - timedelta(days=30), as_of, cur_csv)
                evid["export_seconds"] = round(time.perf_counter() - t, 2)
                evid["volume"] = run_evidently(py, ref_csv, cur_csv)
                print(f"Evidently on the 30-day window: {evid['volume'].get('wall_seconds', 0):.1f} s", flush=True)
                evid["cases"] = {}
                for kind, case in cases.items():
                    path = work / f"case_{kind}.csv"
                    export_window(conn, *case["window"], path)
                    evid["cases"][kind] = run_evidently(py, ref_csv, path)
        result["evidently"] = evid
        conn.close()
    shutil.rmtree(work, ignore_errors=True)
    if settings.embedded:  # the throw-away server's data (~1 GB), stopped by bench_home
        shutil.rmtree(settings.home, ignore_errors=True)

    # --- report ----------------------------------------------------------------------------------
    for case in result["cases"].values():
        case["window"] = [w.isoformat() for w in case["window"]]
    print()
    print_table([(f"{r['run']} run", result["rows"], r["drift_seconds"], r["alert_seconds"], r["total_seconds"])
                 for r in result["daily_check"]], ("daily check", "rows", "drift s", "alert s", "total s"))
    vol = result["evidently"].get("volume") or {}
    if vol and "error" not in vol:
        print(f"\nEvidently DataDriftPreset on the same {vol['rows_current']} rows: {vol['wall_seconds']:.1f} s "
              f"wall ({vol['read_seconds']:.1f} s reading CSV, {vol['run_seconds']:.1f} s computing)")
    rows = []
    agree = 0
    for kind, case in result["cases"].items():
        ev = (result["evidently"].get("cases") or {}).get(kind) or {}
        ev_drift = ev.get("dataset_drift") if "error" not in ev else None
        same = None if ev_drift is None else (ev_drift == case["ours_drift"])
        agree += bool(same)
        drifted = ",".join(c for c, v in (ev.get("columns") or {}).items() if v["drift"]) or "-"
        rows.append((kind, case["rows"], _f(case["scores"]["data"]), _f(case["scores"]["prediction"]),
                     _f(case["scores"]["performance"]), case["level"], "drift" if case["ours_drift"] else "no",
                     "n/a" if ev_drift is None else ("drift" if ev_drift else "no"),
                     "n/a" if ev.get("drift_share") is None else f"{ev['drift_share']:.2f}", drifted,
                     "n/a" if same is None else ("yes" if same else "NO")))
    print()
    print_table(rows, ("case", "rows", "data", "pred", "perf", "our level", "ours", "evidently", "share",
                       "evidently drifted columns", "agree"))
    result["agreement"] = {"cases": len(rows), "agree": agree}
    path = write_results("bench_drift", result)
    print(f"\ndaily check on {result['rows']} rows: {result['daily_check_seconds']} s "
          f"(target < {result['target_seconds']} s: {'met' if result['meets_target'] else 'MISSED'}); wrote {path}")
    return 0 if result["meets_target"] else 1


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# --- issue 18: the partitioned log at volume -------------------------------------------------------------
def _db_url(settings, name: str) -> str:
    """The URL of database `name` on the benchmark's server."""
    from urllib.parse import urlsplit, urlunsplit

    from mlops_cli import db

    return urlunsplit(urlsplit(db.database_url(settings))._replace(path="/" + name))


def _fresh_database(settings, name: str) -> str:
    """A new empty database `name` on the benchmark's server; its URL."""
    import psycopg2

    c = psycopg2.connect(_db_url(settings, "postgres"))
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    c.close()
    return _db_url(settings, name)


def _drop_database(settings, name: str) -> None:
    import psycopg2

    c = psycopg2.connect(_db_url(settings, "postgres"))
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    c.close()


def scale_drift(settings, model, version, reference, sizes: list[int], max_minutes: float) -> dict:
    """Part a of --scale (see the module docstring)."""
    from mlops_cli import db, store
    from mlops_cli.runs import Trigger
    from mlops_cli.simulate import simulate_traffic
    from mlops_cli.steps.alert import alert
    from mlops_cli.steps.drift import drift
    from mlops_cli.steps.retention import rollup

    T = Trigger(actor="bench")
    out: dict = {"sizes": [], "skipped": []}
    bytes_per_row = None
    started = time.perf_counter()
    as_of = DAY0 + timedelta(days=30)
    for size in sorted(sizes):
        free = shutil.disk_usage(settings.home).free
        if bytes_per_row is not None:
            need = bytes_per_row * size * 1.3
            if need > free:
                msg = (f"{size} rows need ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free: this machine "
                       f"cannot hold them; skipped")
                print(msg, flush=True)
                out["skipped"].append({"rows": size, "reason": msg})
                continue
            elapsed = (time.perf_counter() - started) / 60
            if out["sizes"] and elapsed + out["sizes"][-1]["minutes"] * size / out["sizes"][-1]["rows"] > max_minutes:
                msg = f"{size} rows would take past --max-minutes {max_minutes:g}; skipped"
                print(msg, flush=True)
                out["skipped"].append({"rows": size, "reason": msg})
                continue
        t_size = time.perf_counter()
        name = f"scale_{size}"
        s = settings.replace(database_url=_fresh_database(settings, name))
        conn = db.open_db(s)
        store.insert_model_reference(conn, model_name=s.model_name, model_version=version,
                                     mlflow_run_id=reference["mlflow_run_id"], summary=reference["summary"])
        conn.commit()
        t = time.perf_counter()
        per_day = -(-size // 30)
        for day in range(30):  # one COPY stream per day, as a day of serving would write it
            simulate_traffic(conn, s, model, version, start=DAY0 + timedelta(days=day), days=1, per_day=per_day,
                             seed=1000 + day, feedback_rate=0.001)
            conn.commit()
        insert_s = time.perf_counter() - t
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE inference_log")
            cur.execute("VACUUM ANALYZE feedback")
            cur.execute("SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                        "WHERE inhparent = 'inference_log'::regclass")
            size_bytes = int(cur.fetchone()[0])
        conn.autocommit = False
        bytes_per_row = bytes_per_row or size_bytes / (per_day * 30)
        row = {"rows": per_day * 30, "rows_per_day": per_day, "insert_seconds": round(insert_s, 1),
               "insert_rows_per_second": round(per_day * 30 / insert_s), "table_mb": round(size_bytes / 2**20),
               "mb_per_million": round(size_bytes / 2**20 / (per_day * 30) * 1e6)}
        t = time.perf_counter()
        r = rollup(conn, s, T, as_of=as_of, window_days=(7, 30))
        row["rollup_30_days_seconds"] = round(time.perf_counter() - t, 2)
        row["rollup_one_day_seconds"] = round(row["rollup_30_days_seconds"] / max(1, len(r.outputs["rolled_up"])), 2)
        checks = []
        for attempt in ("first", "second"):
            t = time.perf_counter()
            d = drift(conn, s, T, as_of=as_of, window_days=(7, 30))
            t_drift = time.perf_counter() - t
            alert(conn, s, T)
            checks.append({"drift_seconds": round(t_drift, 3), "total_seconds": round(time.perf_counter() - t, 3),
                           "breakdown": d.outputs.get("seconds"), "counts_from": d.outputs.get("counts_from"),
                           "levels": [x["level"] for x in d.outputs["reports"]]})
        row["check"] = checks
        row["check_seconds"] = min(c["total_seconds"] for c in checks)
        row["labelling_queue"] = scale_labelling_queue(conn, as_of)
        if size == min(sizes):
            t = time.perf_counter()
            scan = drift(conn, s, T, as_of=as_of, window_days=(7, 30), rollups=False)
            row["row_scan_drift_seconds"] = round(time.perf_counter() - t, 2)
            same = [(a["scores"], a["level"]) for a in d.outputs["reports"]] == \
                [(b["scores"], b["level"]) for b in scan.outputs["reports"]]
            row["row_scan_same_scores"] = same
        row["minutes"] = round((time.perf_counter() - t_size) / 60, 1)
        q = row["labelling_queue"]
        print(f"{row['rows']} rows: {row['table_mb']} MB, rollup 30 days {row['rollup_30_days_seconds']} s, "
              f"daily check {row['check_seconds']} s" + (f", row scan {row.get('row_scan_drift_seconds')} s"
                                                         if "row_scan_drift_seconds" in row else "")
              + f"; labelling queue pool {q['lists_seconds']} s from the days' lists, {q['scan_seconds']} s "
                f"by a scan of its window (same pool: {q['same_pool']})", flush=True)
        out["sizes"].append(row)
        conn.close()
        _drop_database(settings, name)
    if len(out["sizes"]) >= 2:
        lo, hi = out["sizes"][0], out["sizes"][-1]
        out["check_ratio"] = round(hi["check_seconds"] / lo["check_seconds"], 2)
        out["meets_target"] = out["check_ratio"] <= 2.0
        lq, hq = lo["labelling_queue"], hi["labelling_queue"]
        out["labelling_queue_ratio"] = {"lists": round(hq["lists_seconds"] / lq["lists_seconds"], 2),
                                        "scan": round(hq["scan_seconds"] / lq["scan_seconds"], 2)}
    return out


def scale_labelling_queue(conn, as_of) -> dict:
    """The labelling queue's pool (default limit 50, 7 days) at noon of the last day of traffic:
    from the days' lists (what the queue does) against one scan of its window, the faster of two
    runs each, alternating; the two pools compared."""
    from mlops_cli.labelling_pool import candidate_pool, pool_for

    end = as_of - timedelta(hours=12)  # the day's half so far is scanned: the honest middle of a day
    first = end.date() - timedelta(days=7)
    times: dict = {"lists": [], "scan": []}
    pools = {}
    for _ in range(2):
        for how in ("lists", "scan"):
            t = time.perf_counter()
            pools[how] = candidate_pool(conn, first, end, pool_for(50), use_lists=how == "lists")
            times[how].append(time.perf_counter() - t)
            conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE logged_at >= %s), count(*) FROM inference_log "
                    "WHERE logged_at >= %s AND logged_at <= %s",
                    (datetime.combine(end.date(), datetime.min.time(), tzinfo=timezone.utc),
                     datetime.combine(first, datetime.min.time(), tzinfo=timezone.utc), end))
        today, window = cur.fetchone()
    conn.rollback()
    lists_s, scan_s = min(times["lists"]), min(times["scan"])
    return {"window_rows": window, "today_rows_scanned": today, "days_listed": pools["lists"]["days_listed"],
            "lists_seconds": round(lists_s, 3), "scan_seconds": round(scan_s, 3),
            "scan_over_lists": round(scan_s / lists_s, 1),
            "same_pool": pools["lists"]["rows"] == pools["scan"]["rows"]}


def scale_serve(settings, requests: int, rounds: int, concurrency: int) -> dict:
    """Part b of --scale: `mlops serve` on the partitioned log and on migration 008's table."""
    import threading

    import psycopg2

    from bench_serve import free_port, run_load, stop, wait_ready
    from mlops_cli import db, registry, store

    work = Path(tempfile.mkdtemp(prefix="mlops-bench-scale-serve-"))
    old_sql = work / "sql008"
    old_sql.mkdir()
    for version, _name, path in db.migration_files():
        if version <= 8:
            shutil.copy(path, old_sql / path.name)
    urls = {"partitioned (009)": _fresh_database(settings, "serve_partitioned"),
            "unpartitioned (008)": _fresh_database(settings, "serve_unpartitioned")}
    for label, url in urls.items():
        c = psycopg2.connect(url)
        db.migrate(c, old_sql if "008" in label else None)
        c.close()
    conn = db.open_db(settings)
    products = store.read_products(conn, ("productid", "designation", "description")).sample(n=500, random_state=1)
    conn.close()
    bodies = [json.dumps({"designation": d, "description": x or None, "productid": int(p)}).encode()
              for d, x, p in zip(products["designation"], products["description"], products["productid"])]
    base_env = dict(os.environ, MLOPS_HOME=str(settings.home.resolve()), MODEL_NAME=settings.model_name,
                    MLFLOW_TRACKING_URI=registry.tracking_uri(settings), INFERENCE_LOG_FLUSH_SECONDS="1",
                    MLOPS_LOG_FORMAT="text")
    servers = {}
    logs = {}
    try:
        for label, url in urls.items():
            port = free_port()
            env = dict(base_env, DATABASE_URL=url)
            if "008" in label:
                env["MLOPS_SQL_DIR"] = str(old_sql)
            logs[label] = open(work / f"{label.split()[0]}.log", "wb")
            proc = subprocess.Popen([sys.executable, "-m", "mlops_cli.cli", "serve", "--host", "127.0.0.1", "--port",
                                     str(port), "--workers", "1", "--log-level", "warning"], env=env,
                                    stdout=logs[label], stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            wait_ready(f"http://127.0.0.1:{port}/health", proc)
            servers[label] = (proc, port)
        for _label, (_proc, port) in servers.items():  # warm-up, not measured (both servers were idle)
            run_load(port, "/predict", bodies, concurrency, max(500, requests // 4), 60.0)
        results: dict = {label: [] for label in servers}
        order = list(servers)
        for k in range(rounds):  # alternating, first one then the other first (ABBA): both see the same machine
            for label in (order if k % 2 == 0 else order[::-1]):
                results[label].append(run_load(servers[label][1], "/predict", bodies, concurrency, requests, 60.0))
        out: dict = {"concurrency": concurrency, "requests": requests, "rounds": rounds, "runs": results}
        for label, runs in results.items():
            out[label] = {"rps": round(sorted(r["rps"] for r in runs)[len(runs) // 2], 1),
                          "p99_ms": round(sorted(r["p99_ms"] for r in runs)[len(runs) // 2], 2),
                          "errors": sum(r["errors"] for r in runs)}
        out["throughput_ratio"] = round(out["partitioned (009)"]["rps"] / out["unpartitioned (008)"]["rps"], 3)

        # drops under load: old days with rows, dropped by retention while the load runs
        from mlops_cli.steps.retention import apply_retention

        s = settings.replace(database_url=urls["partitioned (009)"])
        c = db.open_db(s)
        today = datetime.now(timezone.utc).date()
        old_days = [today - timedelta(days=s.inference_log_retention_days + 1 + k) for k in range(4 * rounds)]
        for day in old_days:
            store.ensure_inference_partition(c, day)
            with c.cursor() as cur:
                cur.execute("""INSERT INTO inference_log (logged_at, request_id, designation, designation_len,
                                   description_len, predicted_code, confidence)
                               SELECT %s::timestamptz + g * interval '0.8 second', 'old-' || g, 'titre', 5, 0, 10, 0.5
                               FROM generate_series(1, 100000) g""", (datetime.combine(day, datetime.min.time(),
                                                                                        tzinfo=timezone.utc),))
            c.commit()
        _proc, port = servers["partitioned (009)"]
        base, dropping, drops = [], [], []
        old_days.sort()
        R = s.inference_log_retention_days
        for k in range(rounds):
            base.append(run_load(port, "/predict", bodies, concurrency, requests, 60.0))
            c2 = db.open_db(s)

            def dropper(k=k, c2=c2):
                # one day at a time while the load runs: move the horizon past the next old day
                for i in range(4 * k, 4 * k + 4):
                    time.sleep(0.4)
                    nxt = old_days[i] + timedelta(days=1)
                    drops.extend(apply_retention(c2, s, today=nxt + timedelta(days=R))["dropped"])

            th = threading.Thread(target=dropper)
            th.start()
            dropping.append(run_load(port, "/predict", bodies, concurrency, requests, 60.0))
            th.join()
            c2.close()
        c.close()
        out["drop"] = {"base": base, "dropping": dropping, "days_dropped": len(drops),
                       "base_p99_ms": round(sorted(r["p99_ms"] for r in base)[len(base) // 2], 2),
                       "dropping_p99_ms": round(sorted(r["p99_ms"] for r in dropping)[len(dropping) // 2], 2)}
        out["drop"]["p99_ratio"] = round(out["drop"]["dropping_p99_ms"] / out["drop"]["base_p99_ms"], 3)
        out["meets_target"] = out["throughput_ratio"] >= 0.95 and out["drop"]["p99_ratio"] <= 1.2
        return out
    finally:
        for proc, _port in servers.values():
            stop(proc)
        for f in logs.values():
            f.close()
        for name in ("serve_partitioned", "serve_unpartitioned"):
            _drop_database(settings, name)
        shutil.rmtree(work, ignore_errors=True)


def main_scale(args) -> int:
    from mlops_cli import db, registry, store
    from mlops_cli.runs import Trigger
    from mlops_cli.steps.load import load
    from mlops_cli.steps.train import train
    from mlops_cli.synth import write_catalogue

    T = Trigger(actor="bench")
    sizes = [int(x) for x in args.scale.split(",")]
    result: dict = {"issue": 18}
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-drift-scale-"))
    with bench_home("drift-scale") as settings:
        settings = settings.replace(initial_load_fraction=1.0)
        conn = db.open_db(settings)
        x, y = write_catalogue(work / "catalogue", rows=args.catalogue, seed=7)
        load(conn, settings, T, x_path=str(x), y_path=str(y))
        r = train(conn, settings, T, params={"word_max_features": 20000, "char_max_features": 20000})
        version = r.outputs["model_version"]
        registry.set_alias(settings, registry.CHAMPION, version)
        model = registry.load_model(settings, version=version)
        reference = store.get_model_reference(conn, settings.model_name, version)
        conn.close()
        print(f"model version {version}; free disk {shutil.disk_usage(settings.home).free / 2**30:.1f} GiB", flush=True)
        if not args.no_serve:
            result["serve"] = scale_serve(settings, args.serve_requests, args.serve_rounds, 16)
            sv = result["serve"]
            print(f"serving: partitioned {sv['partitioned (009)']} vs unpartitioned {sv['unpartitioned (008)']}; "
                  f"drops: p99 {sv['drop']['base_p99_ms']} -> {sv['drop']['dropping_p99_ms']} ms", flush=True)
        result["drift"] = scale_drift(settings, model, version, reference, sizes, args.max_minutes)
    shutil.rmtree(work, ignore_errors=True)
    if settings.embedded:
        shutil.rmtree(settings.home, ignore_errors=True)

    print()
    print_table([(f"{r['rows']:,}", r["rows_per_day"], r["table_mb"], r["mb_per_million"], r["insert_seconds"],
                  r["rollup_30_days_seconds"], r["rollup_one_day_seconds"], r["check_seconds"],
                  r.get("row_scan_drift_seconds", "-"))
                 for r in result["drift"]["sizes"]],
                ("rows (30 days)", "rows/day", "MB", "MB/10^6", "COPY s", "rollup 30 d s", "rollup 1 d s",
                 "daily check s", "row scan s"))
    for sk in result["drift"]["skipped"]:
        print(f"skipped: {sk['reason']}")
    if "check_ratio" in result["drift"]:
        print(f"daily check, largest / smallest: {result['drift']['check_ratio']} (target <= 2: "
              f"{'met' if result['drift']['meets_target'] else 'MISSED'})")
        q = result["drift"]["labelling_queue_ratio"]
        print(f"labelling queue pool, largest / smallest: {q['lists']} from the days' lists, {q['scan']} by a scan "
              f"of its window")
    if "serve" in result:
        sv = result["serve"]
        print()
        print_table([(label, sv[label]["rps"], sv[label]["p99_ms"], sv[label]["errors"])
                     for label in ("unpartitioned (008)", "partitioned (009)")],
                    ("mlops serve, c=16", "req/s (median)", "p99 ms", "errors"))
        print(f"throughput ratio {sv['throughput_ratio']} (target >= 0.95); p99 while dropping "
              f"{sv['drop']['days_dropped']} day partitions: {sv['drop']['base_p99_ms']} -> "
              f"{sv['drop']['dropping_p99_ms']} ms, ratio {sv['drop']['p99_ratio']} (target <= 1.2)")
    path = write_results("bench_drift_scale", result)
    print(f"wrote {path}")
    ok = result["drift"].get("meets_target", True) and result.get("serve", {}).get("meets_target", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
