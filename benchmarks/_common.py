"""Shared set-up for the benchmarks: a throw-away MLOPS_HOME with the embedded PostgreSQL (or
DATABASE_URL's server when set), a generated catalogue, and result writing."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


@contextmanager
def bench_home(name: str):
    """Settings pointing at a fresh home (embedded PostgreSQL) and a fresh database."""
    from mlops_cli import db
    from mlops_cli.config import load_settings

    home = Path(tempfile.mkdtemp(prefix=f"mlops-bench-{name}-"))
    env = {"MLOPS_HOME": str(home), "MODEL_NAME": f"bench-{name}-{int(time.time())}"}
    settings = load_settings(dict(os.environ, **env))
    try:
        yield settings
    finally:
        if settings.embedded:
            db.stop_embedded(settings)


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"environment": environment(), **payload}, indent=2, default=str))
    return path


def print_table(rows: list[tuple], headers: tuple) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def venv_python(venv: Path, pins: tuple, module: str) -> tuple[Path | None, str | None]:
    """The python of a benchmark's own virtualenv with `pins` installed (created on first use) in
    which `module` imports (a peer tool compared side by side: Evidently, NannyML), or (None, why not)."""
    import subprocess
    import sys

    py = venv / "bin" / "python"
    check = [str(py), "-c", f"import {module}; print({module}.__version__)"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py, None
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", *pins],
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            return None, f"pip install {' '.join(pins)} failed: {(r.stderr or r.stdout)[-1500:]}"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not create {venv}: {exc}"
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, f"{module} installed but does not import"
    return py, None
