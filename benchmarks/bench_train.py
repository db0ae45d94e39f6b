"""Training on an 85,000-row generated catalogue, end to end through `mlops train` (read from
PostgreSQL, fit, score, MLflow logging and registration), against a plain TF-IDF + LinearSVC
baseline on the same split.

Targets: training < 60 s on 2 cores, peak memory < 2 GB. Prints a table, writes JSON.
Usage: python benchmarks/bench_train.py [--rows 85000]
       python benchmarks/bench_train.py --x X_train_update.csv --y Y_train_CVw08PX.csv
       (the real Rakuten files, when you have them: same run, real data, bench_train_real.json)
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, print_table, write_results  # noqa: E402


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=85_000, help="generated catalogue rows")
    ap.add_argument("--x", help="a real X file (X_train_update.csv) instead of the generated catalogue")
    ap.add_argument("--y", help="its Y file (Y_train_CVw08PX.csv)")
    args = ap.parse_args()
    if bool(args.x) != bool(args.y):
        ap.error("--x and --y go together")
    from mlops_cli import dataset, db, registry, store
    from mlops_cli.runs import Trigger
    from mlops_cli.steps.load import load
    from mlops_cli.steps.train import train
    from mlops_cli.synth import write_catalogue

    with bench_home("train") as settings:
        data = Path(tempfile.mkdtemp(prefix="mlops-bench-data-"))
        x, y = (Path(args.x), Path(args.y)) if args.x else write_catalogue(data, rows=args.rows, seed=2)
        settings = settings.replace(initial_load_fraction=1.0)
        conn = db.open_db(settings)
        load(conn, settings, Trigger(actor="bench"), x_path=str(x), y_path=str(y))
        registry.configure(settings)  # MLflow's first-use table creation is not training time
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        result = train(conn, settings, Trigger(actor="bench"))
        train_s = time.perf_counter() - t
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        version = result.outputs["model_version"]
        model = registry.load_model(settings, version=version)
        products = store.read_products(conn, ("productid", "designation", "description", "prdtypecode"))
        train_rows, holdout = dataset.split(products, settings.holdout_fraction)
        sample = holdout[["designation", "description"]]
        t = time.perf_counter()
        model.predict(sample)
        pred_rows_s = len(sample) / (time.perf_counter() - t)
        artifact_bytes = dir_size(settings.artifacts_dir)
        conn.close()

        # the plain baseline on the same split (natural class mix, no balancing)
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.metrics import f1_score
        from sklearn.svm import LinearSVC

        t = time.perf_counter()
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2)
        text = lambda df: (df["designation"] + " " + df["description"]).tolist()  # noqa: E731
        Xtr = vec.fit_transform(text(train_rows))
        svc = LinearSVC().fit(Xtr, train_rows["prdtypecode"])
        base_f1 = f1_score(holdout["prdtypecode"], svc.predict(vec.transform(text(holdout))), average="weighted")
        base_s = time.perf_counter() - t

    f1 = result.outputs["weighted_f1"]
    table = [
        ("mlops train (end to end)", f"{f1:.4f}", f"{train_s:.1f}", f"{peak_mb:,.0f}", f"{pred_rows_s:,.0f}",
         f"{artifact_bytes / 1e6:.1f}"),
        ("baseline TF-IDF + LinearSVC (fit+score only)", f"{base_f1:.4f}", f"{base_s:.1f}", "", "", ""),
    ]
    print_table(table, ("model", "weighted F1", "seconds", "peak RSS MB", "predict rows/s", "artifacts MB"))
    print(f"targets: train < 60 s: {'PASS' if train_s < 60 else 'FAIL'}; peak < 2048 MB: "
          f"{'PASS' if peak_mb < 2048 else 'FAIL'}; F1 > 0.75: {'PASS' if f1 > 0.75 else 'FAIL'}")
    path = write_results("bench_train_real" if args.x else "bench_train", {
        "rows": None if args.x else args.rows, "data": str(args.x) if args.x else "generated",
        "train_rows": result.outputs["train_rows"], "test_rows": result.outputs["test_rows"],
        "weighted_f1": f1, "macro_f1": result.outputs["macro_f1"], "train_seconds_end_to_end": train_s,
        "fit_seconds": result.outputs["train_seconds"], "peak_rss_mb": peak_mb, "rss_before_train_mb": rss_before,
        "predict_rows_per_second": pred_rows_s, "artifact_bytes": artifact_bytes,
        "baseline_weighted_f1": base_f1, "baseline_seconds": base_s,
        "targets": {"train_seconds": 60, "peak_rss_mb": 2048}})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
