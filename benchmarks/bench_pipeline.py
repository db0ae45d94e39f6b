"""One weekly cycle (load + train + evaluate + promote) on an 85,000-row catalogue, with the share
of each step (target < 90 s on 2 cores), and the fixed cost of starting one `mlops` command
(`mlops --help`, target < 0.5 s: heavy libraries are imported lazily).

Usage: python benchmarks/bench_pipeline.py [--rows 85000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, print_table, write_results  # noqa: E402


def cli_overhead(runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlops_cli.cli", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=85_000)
    args = ap.parse_args()
    from mlops_cli import registry
    from mlops_cli.pipeline import run_pipeline
    from mlops_cli.runs import Trigger
    from mlops_cli.synth import write_catalogue

    help_s = cli_overhead()
    from mlops_cli import db

    with bench_home("pipeline") as settings:
        data = Path(tempfile.mkdtemp(prefix="mlops-bench-data-"))
        x, y = write_catalogue(data, rows=args.rows, seed=3)
        settings = settings.replace(initial_load_fraction=1.0, x_path=str(x), y_path=str(y))
        registry.configure(settings)  # MLflow's one-time table creation is not part of a weekly cycle
        t = time.perf_counter()
        result = run_pipeline(settings, "weekly", Trigger(actor="bench"))
        total = time.perf_counter() - t
        if not result.ok:
            print(f"pipeline failed: {result.message}")
            return 1
        conn = db.open_db(settings)  # step durations from the audit trail itself
        with conn.cursor() as cur:
            cur.execute("""SELECT step, extract(epoch FROM finished_at - started_at) FROM pipeline_runs
                           WHERE parent_run_id = %s ORDER BY id""", (result.pipeline_run_id,))
            durations = {step: float(sec) for step, sec in cur.fetchall()}
        conn.close()
    rows = []
    for step, sec in durations.items():
        rows.append((step, f"{sec:.1f}", f"{100 * sec / total:.0f}%"))
    rows.append(("weekly cycle (wall)", f"{total:.1f}", "100%"))
    print_table(rows, ("step", "seconds", "share"))
    print(f"mlops --help: {help_s * 1000:.0f} ms (target < 500 ms: {'PASS' if help_s < 0.5 else 'FAIL'}); "
          f"weekly cycle target < 90 s: {'PASS' if total < 90 else 'FAIL'}")
    path = write_results("bench_pipeline", {"rows": args.rows, "weekly_cycle_seconds": total,
                                            "step_seconds": durations, "cli_help_seconds": help_s,
                                            "targets": {"weekly_cycle_seconds": 90, "cli_help_seconds": 0.5},
                                            "status": result.status, "message": result.message})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
