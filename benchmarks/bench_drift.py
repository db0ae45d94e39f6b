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
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, print_table, write_results  # noqa: E402

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
    py = EVIDENTLY_VENV / "bin" / "python"
    check = [str(py), "-c", "import evidently; print(evidently.__version__)"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py, None
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True, capture_output=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", *EVIDENTLY_PINS],
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            return None, f"pip install {' '.join(EVIDENTLY_PINS)} failed: {(r.stderr or r.stdout)[-1500:]}"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not create {EVIDENTLY_VENV}: {exc}"
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, "evidently installed but does not import"
    return py, None


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
    args = ap.parse_args()

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


if __name__ == "__main__":
    sys.exit(main())
