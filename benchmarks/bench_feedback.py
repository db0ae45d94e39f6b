"""Weighted F1 on drifted traffic against the number of moderator labels a retrain used.

A generated catalogue (--rows) is loaded and trained on (`mlops train`, the real step): the model
with 0 labels. Then drifted traffic (synth drift kind --drift, new vocabulary by default) is served
by that model through the serving code and logged by the inference logger (demo.Traffic). Of it,
a labelled evaluation sample (--eval) is kept apart, and labels of the other served products are
recorded as moderators' feedback (ops.feedback.record, the API's rules) in nested steps (the
labels of 100 are among those of 300, and so on); after each step `mlops train` runs again, its
feedback gate open, and turns every label so far into training rows (store.apply_feedback_labels).
Each model is scored, through the serving code, on the evaluation sample (drifted products no
model trained on) and on a sample of undrifted products (what labelling the drift costs the old
traffic, if anything).

The issue's target (the demo's): with 1,000 labels the retrained model's weighted F1 on drifted
traffic is >= the 0-label model's + 0.10.
Prints a table; writes benchmarks/results/bench_feedback.json and the curve bench_feedback.png.
Usage: python benchmarks/bench_feedback.py [--rows 10000] [--labels 0,100,300,1000] [--eval 1500]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, bench_home, print_table, write_results  # noqa: E402

TARGET_GAIN = 0.10
TARGET_AT = 1_000


def _trained(result) -> dict:
    if result.status != "succeeded":
        raise SystemExit(f"train did not succeed: {result.status}: {result.message}")
    return result.outputs


def run(rows: int, steps: list[int], n_eval: int, drift: str, seed: int) -> list[dict]:
    import tempfile

    from mlops_cli import db, registry
    from mlops_cli.demo import Traffic, record_labels
    from mlops_cli.runs import Trigger
    from mlops_cli.steps.load import load
    from mlops_cli.steps.train import train
    from mlops_cli.synth import generate_products, write_catalogue

    out = []
    with bench_home("feedback") as settings:
        # every label step is a training, whatever FEEDBACK_RETRAIN_MIN says
        settings = settings.replace(initial_load_fraction=1.0, feedback_retrain_min=1)
        xp, yp = write_catalogue(Path(tempfile.mkdtemp(prefix="mlops-bench-data-")), rows=rows, seed=seed)
        conn = db.open_db(settings)
        trigger = Trigger(actor="bench")
        load(conn, settings, trigger, x_path=str(xp), y_path=str(yp))
        registry.configure(settings)
        t = time.perf_counter()
        first = _trained(train(conn, settings, trigger))
        seconds = time.perf_counter() - t
        version = str(first["model_version"])
        traffic = Traffic(settings)
        try:
            need = n_eval + max(steps)
            served, day, d = [], date(2026, 3, 2), 0
            while len(served) < need:  # a day of drifted traffic at a time, served by the first model
                served += traffic.day(version, day + timedelta(days=d), min(1_000, need - len(served)),
                                      drift=drift, seed=seed * 100 + d)
                d += 1
            evaluation, pool = served[:n_eval], served[n_eval:]
            old = generate_products(n_eval, seed=seed + 7_001)
            undrifted = [{"designation": t, "description": x, "true_code": int(c)} for t, x, c in
                         zip(old["designation"], old["description"], old["prdtypecode"])]
            given = 0
            for k in sorted(steps):
                if k > 0:
                    t = time.perf_counter()
                    given += record_labels(settings, pool[given:k])
                    label_s = time.perf_counter() - t
                    t = time.perf_counter()
                    o = _trained(train(conn, settings, trigger))
                    seconds = time.perf_counter() - t
                    version = str(o["model_version"])
                else:
                    o, label_s = first, 0.0
                out.append({
                    "labels": k, "model_version": version, "gate": o.get("gate"),
                    "feedback_rows": o.get("feedback_rows"), "feedback_rows_train": o.get("feedback_rows_train"),
                    "feedback_rows_holdout": o.get("feedback_rows_holdout"),
                    "drifted_weighted_f1": traffic.weighted_f1(version, evaluation),
                    "undrifted_weighted_f1": traffic.weighted_f1(version, undrifted),
                    "holdout_weighted_f1": o["weighted_f1"], "chosen": o.get("chosen_name"),
                    "train_seconds": seconds, "label_seconds": label_s})
                print(f"  {k:>5} labels: v{version} drifted F1 {out[-1]['drifted_weighted_f1']:.4f}", file=sys.stderr,
                      flush=True)
        finally:
            traffic.close()
            conn.close()
    return out


def plot(results: list[dict], path: Path, drift: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["labels"] for r in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [r["drifted_weighted_f1"] for r in results], marker="o", label=f"drifted traffic ({drift})")
    ax.plot(ks, [r["undrifted_weighted_f1"] for r in results], marker="s", linestyle="--",
            label="undrifted products")
    ax.set_xlabel("feedback labels used by the retrain")
    ax.set_ylabel("weighted F1")
    ax.set_title("Retraining on moderators' labels of drifted traffic")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000, help="generated catalogue size")
    ap.add_argument("--labels", default="0,100,300,1000", help="label counts (comma separated, nested)")
    ap.add_argument("--eval", dest="n_eval", type=int, default=1_500, help="labelled drifted evaluation sample")
    ap.add_argument("--drift", default="vocabulary", choices=("vocabulary", "length", "classes"))
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    steps = sorted({int(k) for k in args.labels.split(",")} | {0})
    results = run(args.rows, steps, args.n_eval, args.drift, args.seed)
    base = results[0]["drifted_weighted_f1"]
    print_table([(f"{r['labels']:,}", f"v{r['model_version']}", r["gate"] or "-", str(r["feedback_rows"] or 0),
                  f"{r['drifted_weighted_f1']:.4f}", f"{r['drifted_weighted_f1'] - base:+.4f}",
                  f"{r['undrifted_weighted_f1']:.4f}", f"{r['holdout_weighted_f1']:.4f}", r["chosen"] or "-",
                  f"{r['train_seconds']:.1f}") for r in results],
                ("labels", "model", "gate", "feedback rows", "drifted F1", "gain", "undrifted F1", "holdout F1",
                 "chosen", "train s"))
    checks = {}
    at = next((r for r in results if r["labels"] == TARGET_AT), None)
    if at is not None:
        checks[f"{TARGET_AT:,} labels: drifted F1 >= 0 labels + {TARGET_GAIN}"] = \
            at["drifted_weighted_f1"] - base >= TARGET_GAIN
    print("targets: " + ("; ".join(f"{k}: {'PASS' if ok else 'FAIL'}" for k, ok in checks.items()) or "-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "bench_feedback.png"
    plot(results, png, args.drift)
    path = write_results("bench_feedback", {
        "rows": args.rows, "eval_rows": args.n_eval, "drift": args.drift, "seed": args.seed, "results": results,
        "targets": {"gain": TARGET_GAIN, "at_labels": TARGET_AT}, "checks": checks, "figure": png.name})
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
