"""The label-free performance estimate (mlops_cli/performance_estimate.py) against the realized
weighted F1, and NannyML's CBPE on the same windows for comparison.

1. A model is trained (`mlops load` + `mlops train`) on a generated catalogue and made champion;
   `train` stores its reference, with the estimate on its holdout. One model per catalogue seed
   (--seeds, default 7,11,19,23,29,31: six catalogues of --catalogue rows), each in a fresh database:
   how well an estimator does depends on the model (on its holdout against its traffic), so one
   model is one draw; every model is shown, and the targets are checked on all of them pooled.
2. Windows of --rows (1,000) predictions, one UTC day each, are served and logged
   (mlops_cli.simulate, top-3 probabilities as the API logs them), every one labelled:
   --windows of unchanged traffic, and --kind-windows of each drift kind of the generator
   (vocabulary, length, classes). For each window the daily check (`drift`, 1-day window) writes
   its report: the estimate (from the logged top-3), its band, and the realized weighted F1 of
   the labels.
3. Our estimate is also computed from the full probability vectors of the same products (the
   cost of logging only the top 3), and macro F1 from the same sums (NannyML's multiclass
   metric).
4. NannyML 0.13.1 (in its own virtualenv benchmarks/.venv-nannyml, created on first use) runs
   CBPE (isotonic calibration on the reference, its default) on the model's holdout as reference
   and the same windows as chunks of --rows, given the FULL probability vectors: its macro F1
   estimate, and a weighted F1 from its calibrated probabilities and its own per-class
   estimate_f1, weighted by the expected supports (CBPE multiclass has macro F1 only).
5. Two estimators that do not ship, beside ours, to show what its error is made of (diagnostics):
   ours with T and epsilon refitted on the unchanged windows' own labels (an oracle: the error of
   the estimator itself when its calibration is right for the traffic), and ours on the logged
   vectors adjusted to each window's class mix by EM (a label-shift correction).

Error: per window |estimated - realized|; ours against NannyML's as the paired difference over
the unchanged windows (mean, its standard error, how many windows each is closer in), per model
and pooled over the models.

Time, side by side in the same run:
  (a) like for like, in memory on the same arrays: NannyML's fit on the holdout + estimate of
      every window (measured inside its process, reading and imports excluded) against ours (the
      reference estimate on the holdout's arrays, then each window's logged top 3 from arrays);
  (b) what the daily check pays for the estimate: the `rollup` step has counted each closed day
      once; the estimate of each window is read from its day's rollup rows and computed (the read
      takes all of the day's rollup rows, not only the estimate's: an upper bound);
  (c) the one-off per-day cost of the estimate's sums (store.inference_range_estimate_sums on a
      day's rows: what the rollup step adds for the estimate, once per closed day), in rows/s.
Targets: mean |error| <= 0.03 on unchanged traffic at 1,000 per window (every model); the estimate
moves the way the realized F1 moves under each drift kind (every model); our error no worse than
NannyML's (pooled); our time at least 5x lower than NannyML's in (a) and in (b) (summed over the
models); (c) is shown beside them.

Prints a table, writes benchmarks/results/bench_estimate.json.
Usage: python benchmarks/bench_estimate.py [--catalogue 10000] [--seeds 7,11,19,23,29,31] [--rows 1000]
                                            [--windows 100] [--kind-windows 25] [--no-nannyml]
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, print_table, venv_python, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
NANNYML_VENV = HERE / ".venv-nannyml"
# statsmodels: nannyml imports it (its plots) without declaring it
NANNYML_PINS = ("nannyml==0.13.1", "statsmodels")
DAY0 = datetime(2033, 1, 1, tzinfo=timezone.utc)
KINDS = ("vocabulary", "length", "classes")
# estimators that do not ship, measured beside ours to show what its error is made of (diagnostics())
DIAGNOSTICS = ("traffic_calibration", "prior_adjusted")
TARGET_ERROR = 0.03
TARGET_SPEEDUP = 5.0

NANNYML_SCRIPT = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd
import nannyml as nml
from nannyml.performance_estimation.confidence_based.cbpe import _calibrate_predicted_probabilities
from nannyml.performance_estimation.confidence_based.metrics import estimate_f1
ref = pd.read_parquet(sys.argv[1]); ana = pd.read_parquet(sys.argv[2]); chunk = int(sys.argv[3])
classes = json.loads(sys.argv[4])
proba = {str(c): f"p_{c}" for c in classes}
ref["y_pred"] = ref["y_pred"].astype(str); ref["y_true"] = ref["y_true"].astype(str)
ana["y_pred"] = ana["y_pred"].astype(str)
t0 = time.perf_counter()
est = nml.CBPE(y_pred_proba=proba, y_pred="y_pred", y_true="y_true", problem_type="classification_multiclass",
               metrics=["f1"], chunk_size=chunk)
est.fit(ref)
res = est.estimate(ana.drop(columns=["y_true"]))
t_macro = time.perf_counter() - t0
frame = res.to_df()
frame = frame[frame[("chunk", "period")] == "analysis"]  # the reference's own chunks come first
macro = [float(x) for x in frame[("f1", "value")].tolist()]
lower = [float(x) for x in frame[("f1", "lower_confidence_boundary")].tolist()]
upper = [float(x) for x in frame[("f1", "upper_confidence_boundary")].tolist()]
# weighted F1 the CBPE way, from its calibrated probabilities and its own per-class estimate
t1 = time.perf_counter()
cal = _calibrate_predicted_probabilities(ana.drop(columns=["y_true"]).copy(), "y_true", proba, est._calibrators)
weighted = []
for lo in range(0, len(cal), chunk):
    part = cal.iloc[lo:lo + chunk]
    num = den = 0.0
    for c in classes:
        p = part[f"p_{c}"].to_numpy()
        s = p.sum()
        num += s * estimate_f1((part["y_pred"] == str(c)).to_numpy().astype(int), p)
        den += s
    weighted.append(num / den)
t_weighted = time.perf_counter() - t1
print(json.dumps({"macro": macro, "lower": lower, "upper": upper, "weighted": weighted, "fit_estimate_seconds": t_macro,
                  "weighted_seconds": t_weighted, "chunks": len(frame)}))
'''


def nannyml_python() -> tuple[Path | None, str | None]:
    """The venv's python with nannyml installed (created on first use), or (None, why not)."""
    return venv_python(NANNYML_VENV, NANNYML_PINS, "nannyml")


def run_nannyml(py: Path, ref_path: Path, ana_path: Path, chunk: int, classes: list[int]) -> dict:
    script = Path(tempfile.mkdtemp(prefix="nannyml-")) / "run.py"
    script.write_text(NANNYML_SCRIPT)
    t = time.perf_counter()
    r = subprocess.run([str(py), str(script), str(ref_path), str(ana_path), str(chunk), json.dumps(classes)],
                       capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        return {"error": r.stderr[-3000:], "wall_seconds": wall}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = wall
    return out


def frame(y_true, codes, proba, classes):
    import pandas as pd

    df = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes])
    df.insert(0, "y_pred", np.asarray(codes).astype(int))
    df.insert(0, "y_true", np.asarray(y_true).astype(int))
    return df


def summarize(errors) -> dict:
    e = np.abs(np.asarray(errors, dtype=float))
    return {"mean_abs": round(float(e.mean()), 4), "p90_abs": round(float(np.quantile(e, 0.9)), 4),
            "max_abs": round(float(e.max()), 4), "bias": round(float(np.mean(errors)), 4), "n": int(e.size)}


def paired(ours, theirs, realized) -> dict:
    """|ours - realized| - |theirs - realized| per window: its mean, standard error, and how many
    windows each estimate is closer in (ties apart)."""
    a = np.abs(np.asarray(ours) - np.asarray(realized))
    b = np.abs(np.asarray(theirs) - np.asarray(realized))
    d = a - b
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return {"mean_difference": round(float(d.mean()), 5), "se": round(se, 5),
            "z": round(float(d.mean()) / se, 2) if se > 0 else None,
            "ours_closer": int((a < b).sum()), "theirs_closer": int((a > b).sum()), "n": int(d.size)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--seeds", default="7,11,19,23,29,31",
                    help="catalogue seeds: one model trained on each (a comma-separated list)")
    ap.add_argument("--rows", type=int, default=1_000, help="predictions per window")
    ap.add_argument("--windows", type=int, default=100, help="windows of unchanged traffic, per model")
    # 25: the realized change of a kind is then known to ~0.0026 (one window's sd ~0.012), enough
    # to tell a small drop from none; at 5 windows its standard error (~0.0055) hid changes of 0.01
    ap.add_argument("--kind-windows", type=int, default=25, help="windows of each drift kind, per model")
    ap.add_argument("--no-nannyml", action="store_true")
    ap.add_argument("--model-json", help=argparse.SUPPRESS)  # internal: one seed, its result to this file
    args = ap.parse_args()
    if args.windows < 2 or args.rows < 1:
        ap.error("--windows must be at least 2 (errors and the realized F1's sd are over them) and --rows at least 1")
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if args.model_json:
        py, why = (None, "--no-nannyml") if args.no_nannyml else nannyml_python()
        Path(args.model_json).write_text(json.dumps(bench_model(seeds[0], args, py, why), default=str))
        return 0

    result: dict = {"rows_per_window": args.rows, "seeds": seeds, "catalogue": args.catalogue,
                    "targets": {"mean_abs_error": TARGET_ERROR, "speedup_vs_nannyml": TARGET_SPEEDUP}}
    py, why = (None, "--no-nannyml") if args.no_nannyml else nannyml_python()
    if py is None and not args.no_nannyml:
        print(f"NannyML unavailable: {why}", flush=True)
    models = [_model_in_own_process(seed, args) for seed in seeds]
    result["models"] = models

    # --- pooled over the models: every model's unchanged windows -------------------------------------
    have_nanny = all(m["have_nannyml"] for m in models)
    result["pooled"] = pooled = errors([r for m in models for r in m["windows"] if r["kind"] == "none"], have_nanny)
    result["drift_kinds_pooled"] = kinds_pooled = pooled_kinds(models)
    err = pooled["ours_weighted"]["mean_abs"]
    ours_mem = sum(m["ours_in_memory_seconds"] for m in models)
    ours_daily = sum(m["ours_from_rollups_seconds"] for m in models)
    nanny_s = sum(m["nannyml"]["fit_estimate_seconds"] for m in models) if have_nanny else None
    checks = {"error_at_most_0.03": all(m["stationary"]["ours_weighted"]["mean_abs"] <= TARGET_ERROR for m in models),
              "moves_the_right_way": all(k["right_direction"] for m in models for k in m["drift_kinds"].values()),
              "moves_the_right_way_pooled_per_kind": all(k["right_direction"] for k in kinds_pooled.values()),
              "moves_the_right_way_where_the_realized_moved": all(
                  k["right_direction"] for m in models for k in m["drift_kinds"].values() if k["realized_moved"])}
    if have_nanny:
        checks["error_no_worse_than_nannyml_weighted"] = err <= pooled["nannyml_weighted"]["mean_abs"]
        checks["macro_error_no_worse_than_nannyml"] = \
            pooled["ours_macro"]["mean_abs"] <= pooled["nannyml_macro"]["mean_abs"]
        result["speedup_vs_nannyml_in_memory"] = round(nanny_s / max(ours_mem, 1e-9), 1)
        result["speedup_vs_nannyml_daily_check"] = round(nanny_s / max(ours_daily, 1e-9), 1)
        checks["at_least_5x_faster_in_memory"] = result["speedup_vs_nannyml_in_memory"] >= TARGET_SPEEDUP
        checks["at_least_5x_faster_daily_check"] = result["speedup_vs_nannyml_daily_check"] >= TARGET_SPEEDUP
    result["checks"] = checks

    # --- tables ----------------------------------------------------------------------------------------
    print()
    table = []
    for m in models:
        st = m["stationary"]
        name = f"seed {m['seed']}: {m['model']['chosen_name']}"
        table.append((name, "ours, top-3 logged", *_cells(st["ours_weighted"])))
        table.append((name, "ours, full vectors", *_cells(st["ours_full_vectors_weighted"])))
        table.append((name, "(not shipped) ours, T and epsilon refitted on the traffic's labels",
                      *_cells(st["ours_traffic_calibration_weighted"])))
        table.append((name, "(not shipped) ours, prior-adjusted by EM", *_cells(st["ours_prior_adjusted_weighted"])))
        if have_nanny:
            table.append((name, "NannyML CBPE, full vectors", *_cells(st["nannyml_weighted"])))
    table.append((f"pooled ({len(models)} models)", "ours, top-3 logged", *_cells(pooled["ours_weighted"])))
    table.append((f"pooled ({len(models)} models)", "(not shipped) ours, T and epsilon refitted on the traffic's labels",
                  *_cells(pooled["ours_traffic_calibration_weighted"])))
    table.append((f"pooled ({len(models)} models)", "(not shipped) ours, prior-adjusted by EM",
                  *_cells(pooled["ours_prior_adjusted_weighted"])))
    if have_nanny:
        table.append((f"pooled ({len(models)} models)", "NannyML CBPE, full vectors", *_cells(pooled["nannyml_weighted"])))
    print_table(table, ("unchanged traffic, weighted F1", "estimator", "mean |error|", "p90", "max", "bias", "windows"))
    print()
    macro = [(f"seed {m['seed']}", *_cells(m["stationary"]["ours_macro"])[:1],
              *(_cells(m["stationary"]["nannyml_macro"])[:1] if have_nanny else ("-",))) for m in models]
    macro.append(("pooled", pooled["ours_macro"]["mean_abs"],
                  pooled["nannyml_macro"]["mean_abs"] if have_nanny else "-"))
    print_table(macro, ("unchanged traffic, macro F1", "ours mean |error|", "NannyML mean |error|"))
    print()
    print_table([(f"seed {m['seed']}", f"{m['stationary']['band_coverage']:.0%}", m["stationary"]["mean_sd"],
                  m["stationary"]["realized_sd"], ",".join(m["stationary"]["levels"])) for m in models],
                ("unchanged traffic, our band", "realized inside the 95% band", "mean sd", "sd of the realized F1",
                 "levels raised"))
    if have_nanny:
        print()
        pairs = [(f"seed {m['seed']}", m["stationary"]["vs_nannyml_weighted"]) for m in models]
        pairs.append(("pooled", pooled["vs_nannyml_weighted"]))
        print_table([(name, f"{p['mean_difference']:+.5f}", p["se"], p["z"], p["ours_closer"], p["theirs_closer"])
                     for name, p in pairs],
                    ("paired |error| difference (weighted F1)", "ours - NannyML", "se", "z", "ours closer",
                     "NannyML closer"))
    print()
    yes_no = {True: "yes", False: "NO", None: "-"}
    print_table([(f"seed {m['seed']}", kind, k["estimated_change"], k["realized_change"], k["realized_change_se"],
                  "yes" if k["realized_moved"] else "no", k.get("nannyml_change", "-"),
                  yes_no[k.get("nannyml_right_direction")],
                  "yes" if k["right_direction"] else "NO", k["error"]["mean_abs"], ",".join(k["levels"]),
                  k["prior_adjusted_change"], "yes" if k["prior_adjusted_right_direction"] else "NO",
                  k["prior_adjusted_error"]["mean_abs"])
                 for m in models for kind, k in m["drift_kinds"].items()],
                ("model", "drift kind", "estimate change", "realized change", "its se", "moved (> 1.96 se)",
                 "NannyML change", "NannyML right way", "our right way", "our |error|", "our levels", "(not shipped) prior-adjusted change", "right way", "its |error|"))
    print()
    print_table([(kind, k["estimated_change"], k["realized_change"], k["realized_change_se"], k.get("nannyml_change", "-"),
                  "yes" if k["right_direction"] else "NO", f"{k['models_realized_moved']} of {k['models']}",
                  f"{k['models_right']} of {k['models']}",
                  f"{k['nannyml_models_right']} of {k['models']}" if "nannyml_models_right" in k else "-")
                 for kind, k in kinds_pooled.items()],
                (f"drift kind, pooled over {len(models)} models", "estimate change", "realized change", "its se",
                 "NannyML change", "right way", "models whose realized F1 moved", "models ours the right way",
                 "models NannyML the right way"))
    print()
    timing = []
    if have_nanny:
        timing.append(("NannyML CBPE: fit on the holdout + estimate, in memory (full vectors)", f"{nanny_s:.3f}",
                       "1.0x"))
    timing.append(("(a) ours: reference estimate + estimate, in memory (logged top 3)", f"{ours_mem:.3f}",
                   f"{result.get('speedup_vs_nannyml_in_memory', '-')}x"))
    timing.append(("(b) ours, the daily check: reference + each window read from the rollups", f"{ours_daily:.3f}",
                   f"{result.get('speedup_vs_nannyml_daily_check', '-')}x"))
    c_rows = sum(m["estimate_sums_per_day"]["rows"] for m in models)
    c_s = sum(m["estimate_sums_per_day"]["seconds"] for m in models)
    timing.append((f"(c) ours, once per closed day: the estimate's sums by SQL ({round(c_rows / max(c_s, 1e-9)):,} rows/s)",
                   f"{c_s:.3f}", "-"))
    n_windows = sum(len(m["windows"]) for m in models)
    print_table(timing, (f"time, {len(models)} models: holdout + {n_windows} windows of {args.rows}", "seconds",
                         "vs NannyML"))
    print("\nchecks: " + ", ".join(f"{k2} {'OK' if v else 'FAILED'}" for k2, v in checks.items()))
    path = write_results("bench_estimate", result)
    print(f"written: {path}")
    return 0 if all(checks.values()) else 1


def errors(none: list[dict], have_nanny: bool) -> dict:
    """The error summaries of unchanged windows (one model's, or every model's pooled): ours and,
    with NannyML, its own and the paired difference, weighted and macro F1."""
    out = {"ours_weighted": summarize([r["estimated"] - r["realized"] for r in none]),
           "ours_macro": summarize([r["estimated_macro"] - r["realized_macro"] for r in none])}
    for name in DIAGNOSTICS:
        out[f"ours_{name}_weighted"] = summarize([r[f"estimated_{name}"] - r["realized"] for r in none])
    if have_nanny:
        out["nannyml_weighted"] = summarize([r["nannyml_weighted"] - r["realized"] for r in none])
        out["nannyml_macro"] = summarize([r["nannyml_macro"] - r["realized_macro"] for r in none])
        out["vs_nannyml_weighted"] = paired([r["estimated"] for r in none], [r["nannyml_weighted"] for r in none],
                                            [r["realized"] for r in none])
        out["vs_nannyml_macro"] = paired([r["estimated_macro"] for r in none], [r["nannyml_macro"] for r in none],
                                         [r["realized_macro"] for r in none])
    return out


def right_direction(change: float, realized_change: float) -> bool:
    """The direction check, one rule for every estimator and for the pooled kinds: the estimate
    moved the way the realized F1 moved (same sign)."""
    return bool(np.sign(change) == np.sign(realized_change))


def realized_moved(realized_change: float, se: float) -> bool:
    """Whether the realized F1 moved beyond its own sampling noise (|change| > 1.96 se): where it
    did not, no direction can be checked, and the estimate's move is an error of size (the kind's
    |error|), reported as such."""
    return bool(abs(realized_change) > 1.96 * se)


def pooled_kinds(models: list[dict]) -> dict:
    """Each drift kind's changes averaged over the models (each has the same windows), the
    realized change's standard error, and on how many models alone the estimate moved the right way."""
    out = {}
    for kind in KINDS:
        ks = [m["drift_kinds"][kind] for m in models if kind in m["drift_kinds"]]
        if not ks:
            continue
        d_est = float(np.mean([k["estimated_change"] for k in ks]))
        d_real = float(np.mean([k["realized_change"] for k in ks]))
        out[kind] = {"estimated_change": round(d_est, 4), "realized_change": round(d_real, 4),
                     "realized_change_se": round(float(np.sqrt(sum(k["realized_change_se"] ** 2 for k in ks))) / len(ks), 4),
                     "right_direction": right_direction(d_est, d_real),
                     "models_right": sum(bool(k["right_direction"]) for k in ks), "models": len(ks),
                     "models_realized_moved": sum(bool(k["realized_moved"]) for k in ks)}
        if all("nannyml_change" in k for k in ks):
            out[kind]["nannyml_change"] = round(float(np.mean([k["nannyml_change"] for k in ks])), 4)
            out[kind]["nannyml_models_right"] = sum(bool(k["nannyml_right_direction"]) for k in ks)
    return out


def _model_in_own_process(seed: int, args) -> dict:
    """bench_model(seed) in a child process: each model gets its own embedded server and MLflow
    state (one process does not start a second embedded server after stopping the first)."""
    out = Path(tempfile.mkdtemp(prefix="mlops-bench-estimate-model-")) / "model.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model-json", str(out), "--seeds", str(seed),
           "--catalogue", str(args.catalogue), "--rows", str(args.rows), "--windows", str(args.windows),
           "--kind-windows", str(args.kind_windows)] + (["--no-nannyml"] if args.no_nannyml else [])
    subprocess.run(cmd, check=True)
    model = json.loads(out.read_text())
    shutil.rmtree(out.parent, ignore_errors=True)
    return model


def bench_model(seed: int, args, py, why) -> dict:
    """One model trained on the catalogue of `seed`, its windows served, logged, estimated, and
    NannyML on the same windows (py: its venv's python, or None and why not)."""
    import pandas as pd
    from sklearn.metrics import f1_score

    from mlops_cli import dataset, db, registry, store, synth
    from mlops_cli import performance_estimate as pe
    from mlops_cli.drift_windows import rollup_bins
    from mlops_cli.reference import served_probabilities
    from mlops_cli.runs import Trigger
    from mlops_cli.simulate import simulate_traffic
    from mlops_cli.steps.drift import drift
    from mlops_cli.steps.load import load
    from mlops_cli.steps.retention import rollup
    from mlops_cli.steps.train import train

    T = Trigger(actor="bench")
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-estimate-"))
    result: dict = {"seed": seed}
    with bench_home("estimate") as settings:
        settings = settings.replace(initial_load_fraction=1.0)
        conn = db.open_db(settings)
        x, y = synth.write_catalogue(work / "catalogue", rows=args.catalogue, seed=seed)
        load(conn, settings, T, x_path=str(x), y_path=str(y))
        t = time.perf_counter()
        r = train(conn, settings, T, params={"word_max_features": 20000, "char_max_features": 20000})
        assert r.status == "succeeded", r.message
        result["train_seconds"] = round(time.perf_counter() - t, 1)
        version = r.outputs["model_version"]
        registry.set_alias(settings, registry.CHAMPION, version)
        model = registry.load_model(settings, version=version)
        summary = store.get_model_reference(conn, settings.model_name, version)["summary"]
        ref_est = summary["estimate"]
        classes = [int(c) for c in ref_est["classes"]]
        k = len(classes)
        print(f"seed {seed}: model v{version} ({r.outputs['chosen_name']}, T={r.outputs['temperature']:.3f}, "
              f"eps={r.outputs['calibration_epsilon']:.4f}, ECE {r.outputs['ece']:.4f}) trained in "
              f"{result['train_seconds']} s; holdout: estimated {ref_est['weighted_f1']:.4f} vs realized "
              f"{ref_est['realized_weighted_f1']:.4f}", flush=True)
        result["model"] = {k2: r.outputs[k2] for k2 in ("chosen_name", "temperature", "calibration_epsilon", "ece",
                                                       "brier", "weighted_f1", "test_rows")}
        result["reference"] = {k2: ref_est[k2] for k2 in ("weighted_f1", "low", "high", "realized_weighted_f1", "n",
                                                         "unlisted_mass")}

        products = store.read_products(conn, ("productid", "designation", "description", "prdtypecode"))
        _, holdout = dataset.split(products, settings.holdout_fraction)
        h_codes, h_proba, h_classes = served_probabilities(model, holdout[["designation", "description"]])
        assert [int(c) for c in h_classes] == classes
        t = time.perf_counter()
        again = pe.reference_estimate(h_proba, classes, h_codes, holdout["prdtypecode"].to_numpy())
        reference_seconds = memory_seconds = time.perf_counter() - t  # the reference side, as NannyML's fit
        assert again["weighted_f1"] == ref_est["weighted_f1"], "train stored this same reference estimate"
        result["ours_reference_seconds"] = round(memory_seconds, 4)

        windows = [("none", i) for i in range(args.windows)] + \
                  [(kind, i) for kind in KINDS for i in range(args.kind_windows)]
        rows, frames, decisions, scan_seconds = [], [], [], 0.0
        for j, (kind, i) in enumerate(windows):
            day, wseed = DAY0 + timedelta(days=j), 5000 + j
            simulate_traffic(conn, settings, model, version, start=day, days=1, per_day=args.rows, drift=kind,
                             seed=wseed, feedback_rate=1.0)
            conn.commit()
            end = day + timedelta(days=1)
            # (c) the estimate's sums of the day's rows, read by SQL: what the rollup step adds for
            # the estimate, once per closed day
            t = time.perf_counter()
            scanned = store.inference_range_estimate_sums(conn, day, end, k)
            scan_seconds += time.perf_counter() - t
            conn.rollback()
            sums = pe.empty_sums()
            for mv, f, key, n in scanned:
                if mv == str(version):
                    pe.add_row(sums, f, key, n)
            est = pe.estimate(sums, classes)
            d = drift(conn, settings, T, as_of=end, window_days=(1,))
            rep = store.get_drift_report(conn, d.outputs["reports"][0]["id"])
            assert rep["estimated_weighted_f1"] == est["weighted_f1"], "the drift step estimates the same"
            # the same products with their full probability vectors
            prods = synth.generate_products(args.rows, seed=wseed, drift=kind)
            codes, proba, decision = served_with_decisions(model, prods[["designation", "description"]])
            y_true = prods["prdtypecode"].to_numpy().astype(int)
            decisions.append(decision)
            conf, full_top = pe.top_k_of(proba, classes, codes, k=k)
            full = pe.estimate(pe.row_sums(codes, conf, full_top, k), classes)
            # (a) ours in memory, on what is logged (the top 3), timed like NannyML's in-memory run
            t = time.perf_counter()
            conf3, top3 = pe.top_k_of(proba, classes, codes)
            mem = pe.estimate(pe.row_sums(codes, conf3, top3, k), classes)
            memory_seconds += time.perf_counter() - t
            assert abs(mem["weighted_f1"] - est["weighted_f1"]) < 1e-12, "the logged top 3 are the arrays'"
            realized_w = float(f1_score(y_true, codes, average="weighted", zero_division=0))
            realized_m = float(f1_score(y_true, codes, average="macro", labels=classes, zero_division=0))
            assert abs(rep["realized_weighted_f1"] - realized_w) < 1e-9 and rep["realized_n"] == args.rows
            ours_macro = float(np.mean([est["per_class"].get(str(c), {"f1": 0.0})["f1"] for c in classes]))
            rows.append({"kind": kind, "window": i, "day": day.date().isoformat(), "estimated": est["weighted_f1"],
                         "low": est["low"], "high": est["high"], "sd": est["sd"], "estimated_full": full["weighted_f1"],
                         "realized": realized_w, "estimated_macro": ours_macro, "realized_macro": realized_m,
                         "score": rep["estimated_performance_drift_score"],
                         "level": rep["details"]["levels"]["estimated_performance"],
                         "unlisted_mass": est["unlisted_mass"]})
            frames.append(frame(y_true, codes, proba, classes))
            if j % 20 == 0 or kind != "none":
                print(f"  seed {seed} {kind:10} #{i}: estimated {est['weighted_f1']:.4f} [{est['low']:.4f}, "
                      f"{est['high']:.4f}] (full vectors {full['weighted_f1']:.4f}) realized {realized_w:.4f}",
                      flush=True)
        result["ours_in_memory_seconds"] = round(memory_seconds, 4)
        result["traffic_calibration"] = diagnostics(rows, frames, decisions, h_codes, h_proba, classes)
        n_rows = len(windows) * args.rows
        result["estimate_sums_per_day"] = {"seconds": round(scan_seconds, 4), "rows": n_rows,
                                           "rows_per_second": round(n_rows / max(scan_seconds, 1e-9)),
                                           "ms_per_1000_rows": round(1000 * scan_seconds / n_rows * 1000, 3)}

        # (b) the daily check: the rollup step counts every closed day once, then each window's
        # estimate is read from its day's rollup
        last = DAY0 + timedelta(days=len(windows))
        t = time.perf_counter()
        ru = rollup(conn, settings, T, as_of=last, window_days=(len(windows),))
        rollup_seconds = time.perf_counter() - t
        assert ru.status == "succeeded" and len(ru.outputs["rolled_up"]) == len(windows), ru.message
        key, _bins = rollup_bins(summary)
        assert ru.outputs["bins_key"] == key
        daily_seconds = 0.0
        for j, row in enumerate(rows):
            day = (DAY0 + timedelta(days=j)).date()
            t = time.perf_counter()
            sums = pe.empty_sums()
            for mv, f, key2, n in store.read_rollups(conn, key, [day])[day]:
                if mv == str(version) and f.startswith(pe.PREFIX):
                    pe.add_row(sums, f, key2, n)
            est = pe.estimate(sums, classes)
            daily_seconds += time.perf_counter() - t
            conn.rollback()
            assert est["weighted_f1"] == row["estimated"], "the rollups give the row scan's estimate"
        result["ours_from_rollups_seconds"] = round(reference_seconds + daily_seconds, 4)  # reference + every window
        result["rollup_step_seconds_all_counts"] = round(rollup_seconds, 3)

        nanny: dict = {"version": NANNYML_PINS[0]}
        if py is None:
            nanny["skipped" if args.no_nannyml else "error"] = why
        else:
            ref_path, ana_path = work / "reference.parquet", work / "analysis.parquet"
            frame(holdout["prdtypecode"].to_numpy(), h_codes, h_proba, classes).to_parquet(ref_path)
            pd.concat(frames, ignore_index=True).to_parquet(ana_path)
            nanny.update(run_nannyml(py, ref_path, ana_path, args.rows, classes))
            if nanny.get("chunks") == len(rows):
                for row, m, w, lo, hi in zip(rows, nanny["macro"], nanny["weighted"], nanny["lower"], nanny["upper"]):
                    row.update(nannyml_macro=m, nannyml_weighted=w, nannyml_low=lo, nannyml_high=hi)
            elif "error" not in nanny:
                nanny["error"] = f"{nanny.get('chunks')} chunks for {len(rows)} windows"
            print(f"  seed {seed}: NannyML fit + estimate {nanny.get('fit_estimate_seconds', float('nan')):.2f} s",
                  flush=True)
        result["nannyml"] = {k2: v for k2, v in nanny.items() if k2 not in ("macro", "weighted", "lower", "upper")}
        conn.close()
    shutil.rmtree(work, ignore_errors=True)
    if settings.embedded:
        shutil.rmtree(settings.home, ignore_errors=True)

    result["windows"] = rows
    none = [r for r in rows if r["kind"] == "none"]
    real = [r["realized"] for r in none]
    result["have_nannyml"] = have_nanny = bool(none) and "nannyml_macro" in none[0]
    stationary = {
        **errors(none, have_nanny),
        "ours_full_vectors_weighted": summarize([r["estimated_full"] - r["realized"] for r in none]),
        "band_coverage": round(float(np.mean([r["low"] <= r["realized"] <= r["high"] for r in none])), 3),
        "mean_sd": round(float(np.mean([r["sd"] for r in none])), 4),
        "realized_sd": round(float(np.std(real, ddof=1)), 4) if len(real) > 1 else None,
        "levels": sorted({r["level"] for r in none}),
    }
    result["stationary"] = stationary
    base_est = float(np.mean([r["estimated"] for r in none]))
    base_real = float(np.mean(real))
    moves = {}
    for kind in KINDS:
        ks = [r for r in rows if r["kind"] == kind]
        if not ks:
            continue
        d_est = float(np.mean([r["estimated"] for r in ks])) - base_est
        d_real = float(np.mean([r["realized"] for r in ks])) - base_real
        se_real = float(np.sqrt(np.var([r["realized"] for r in ks], ddof=1) / len(ks) + np.var(real, ddof=1) / len(real))) \
            if len(ks) > 1 else float("nan")
        d_adj = float(np.mean([r["estimated_prior_adjusted"] for r in ks])) - \
            float(np.mean([r["estimated_prior_adjusted"] for r in none]))
        moves[kind] = {"estimated_change": round(d_est, 4), "realized_change": round(d_real, 4),
                       "realized_change_se": round(se_real, 4),
                       "realized_moved": realized_moved(d_real, se_real),
                       "right_direction": right_direction(d_est, d_real),
                       "prior_adjusted_change": round(d_adj, 4),
                       "prior_adjusted_right_direction": right_direction(d_adj, d_real),
                       "prior_adjusted_error": summarize([r["estimated_prior_adjusted"] - r["realized"] for r in ks]),
                       "error": summarize([r["estimated"] - r["realized"] for r in ks]),
                       "levels": sorted({r["level"] for r in ks})}
        if have_nanny:
            d_nanny = float(np.mean([r["nannyml_weighted"] for r in ks])) - \
                float(np.mean([r["nannyml_weighted"] for r in none]))
            moves[kind].update(nannyml_change=round(d_nanny, 4),
                               nannyml_right_direction=right_direction(d_nanny, d_real),
                               nannyml_error=summarize([r["nannyml_weighted"] - r["realized"] for r in ks]))
    result["drift_kinds"] = moves
    return result


def served_with_decisions(model, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """served_probabilities, and the classifier's decision values from the same features."""
    clf, Xt = model.steps[-1][1], model[:-1].transform(X)
    return np.asarray(clf.predict(Xt)), np.asarray(clf.predict_proba(Xt)), np.asarray(clf.decision_function(Xt))


def logged_vectors(codes, proba, classes) -> np.ndarray:
    """The probability vectors as the log lets the estimate see them: the top 3 as served, the
    mass they leave spread evenly over the other classes (performance_estimate's reading)."""
    from mlops_cli import performance_estimate as pe

    _conf, (top_codes, top_p) = pe.top_k_of(proba, classes, codes)
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    out = np.repeat((np.maximum(0.0, 1.0 - top_p.sum(axis=1)) / (k - top_p.shape[1]))[:, None], k, axis=1)
    cols = np.vectorize(index.get)(top_codes)
    np.put_along_axis(out, cols, top_p, axis=1)
    return out


def prior_adjusted(vectors: np.ndarray, prior: np.ndarray, iterations: int = 1000) -> np.ndarray:
    """The vectors adjusted to the window's class mix, estimated by EM (Saerens, Latinne and
    Decaestecker 2002): p'(y|x) proportional to p(y|x) q_y / prior_y, q the mean of p'."""
    q = prior.copy()
    for _ in range(iterations):
        adjusted = vectors * (q / prior)
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        new = adjusted.mean(axis=0)
        done = np.abs(new - q).max() < 1e-9
        q = new
        if done:
            break
    adjusted = vectors * (q / prior)
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def diagnostics(rows: list[dict], frames: list, decisions: list, h_codes, h_proba, classes: list[int]) -> dict:
    """Two estimators that do not ship, on the same windows, to show what the error is made of
    (docs/performance_estimate.md#measured); each window's row gets their estimates.

    traffic calibration: T and epsilon refitted (calibration.fit_calibration, as training fits
    them) on the labels of all the unchanged windows themselves, then our estimate from the top 3
    of those probabilities: an oracle (it needs the traffic's labels), the estimator's error when
    its calibration is right for the traffic.
    prior-adjusted: each window's logged vectors adjusted to its own class mix by EM, the
    holdout's mean vector as the prior, then our estimate from the adjusted vectors."""
    from mlops_cli import performance_estimate as pe
    from mlops_cli.calibration import fit_calibration, temperature_softmax

    k = len(classes)
    none = [j for j, r in enumerate(rows) if r["kind"] == "none"]
    temperature, epsilon = fit_calibration(np.vstack([decisions[j] for j in none]),
                                           np.concatenate([frames[j]["y_true"].to_numpy() for j in none]), classes)
    prior = logged_vectors(h_codes, h_proba, classes).mean(axis=0)
    for j, (row, fr, dec) in enumerate(zip(rows, frames, decisions)):
        codes = fr["y_pred"].to_numpy()
        proba = fr[[f"p_{c}" for c in classes]].to_numpy()
        adjusted = prior_adjusted(logged_vectors(codes, proba, classes), prior)
        conf, top = pe.top_k_of(adjusted, classes, codes, k=k)
        row["estimated_prior_adjusted"] = pe.estimate(pe.row_sums(codes, conf, top, k), classes)["weighted_f1"]
        if j in none:
            p = temperature_softmax(dec, temperature, epsilon)
            conf, top = pe.top_k_of(p, classes, codes)
            row["estimated_traffic_calibration"] = pe.estimate(pe.row_sums(codes, conf, top, k), classes)["weighted_f1"]
    return {"temperature": temperature, "epsilon": epsilon, "rows": sum(len(frames[j]) for j in none)}


def _cells(s: dict) -> tuple:
    return s["mean_abs"], s["p90_abs"], s["max_abs"], f"{s['bias']:+.4f}", s["n"]


if __name__ == "__main__":
    sys.exit(main())
