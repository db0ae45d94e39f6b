"""Load throughput: rows/s for loading an 85,000-row generated catalogue (target: < 10 s on 2 cores).

Usage: python benchmarks/bench_load.py [--rows 85000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_home, print_table, write_results  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=85_000)
    args = ap.parse_args()
    from mlops_cli import db
    from mlops_cli.runs import Trigger
    from mlops_cli.steps.load import load
    from mlops_cli.synth import write_catalogue

    with bench_home("load") as settings:
        data = Path(tempfile.mkdtemp(prefix="mlops-bench-data-"))
        t = time.perf_counter()
        x, y = write_catalogue(data, rows=args.rows, seed=1)
        gen_s = time.perf_counter() - t
        settings = settings.replace(initial_load_fraction=1.0)
        conn = db.open_db(settings)
        t = time.perf_counter()
        result = load(conn, settings, Trigger(actor="bench"), x_path=str(x), y_path=str(y))
        load_s = time.perf_counter() - t
        conn.close()
    rows = result.outputs["rows_loaded"] + result.outputs["rows_rejected"]
    target_s = 10.0
    table = [("generate", args.rows, f"{gen_s:.2f}", f"{args.rows / gen_s:,.0f}", ""),
             ("load (read+validate+COPY+audit)", rows, f"{load_s:.2f}", f"{rows / load_s:,.0f}",
              "PASS" if load_s < target_s else "FAIL")]
    print_table(table, ("stage", "rows", "seconds", "rows/s", f"target <{target_s:.0f}s"))
    path = write_results("bench_load", {"rows": rows, "generate_seconds": gen_s, "load_seconds": load_s,
                                        "rows_per_second": rows / load_s, "target_seconds": target_s,
                                        "meets_target": load_s < target_s})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
