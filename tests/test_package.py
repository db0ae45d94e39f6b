"""The package carries what it needs: a wheel installed outside the checkout migrates a database
and runs a weekly pipeline; finding no migrations is an error, never "schema is up to date"."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import uuid
import venv
from pathlib import Path

import pytest

from conftest import REPO, _admin, _with_db, query


def test_no_migrations_found_is_an_error_and_writes_nothing(cli, monkeypatch, tmp_path):
    empty = tmp_path / "no-sql"
    empty.mkdir()
    monkeypatch.setenv("MLOPS_SQL_DIR", str(empty))
    r = cli("db", "init")
    assert r.exit_code == 1
    assert r.output == (f"Error: No migrations found in {empty} (no NNN_name.sql file): the installation is "
                        "incomplete, or MLOPS_SQL_DIR points at the wrong folder\n")


@pytest.mark.slow
def test_wheel_in_a_fresh_virtualenv_outside_the_checkout(small_catalogue, tmp_path, pg_server):
    """`pip wheel .`, installed into a new virtualenv (its dependencies borrowed from the test
    environment through a .pth path, not the checkout's editable install), run from a folder
    outside the checkout: `mlops db init` applies the packaged migrations, a weekly pipeline runs."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(REPO)], check=True, capture_output=True, text=True)
    [wheel] = dist.glob("mlops_cli-*.whl")

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    fresh_site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    # A plain path line: the test environment's packages become importable, but that folder's own
    # .pth files (the checkout's editable finder) are not run.
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLOPS_SQL_DIR", "MLOPS_CRONTAB_TEMPLATE")}
    x, y = small_catalogue
    admin_url, _template, _mlflow = pg_server
    name = f"pkg_{uuid.uuid4().hex[:8]}"  # an empty database: nothing migrated yet
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    url = _with_db(admin_url, name)
    env.update({"MLOPS_X_PATH": str(x), "MLOPS_Y_PATH": str(y), "DATABASE_URL": url})

    def mlops(*args):
        return subprocess.run([str(env_dir / "bin" / "mlops"), *args], capture_output=True, text=True,
                              env=env, cwd=work, timeout=900)

    where = subprocess.run([str(py), "-c", "import mlops_cli; print(mlops_cli.__file__)"], capture_output=True,
                           text=True, env=env, cwd=work, check=True).stdout.strip()
    assert where.startswith(str(fresh_site)), where  # the installed wheel, not the checkout
    init = mlops("db", "init")
    assert init.returncode == 0, init.stderr
    assert init.stdout.startswith("applied: 001_foundation, 002_training"), init.stdout
    assert mlops("db", "init").stdout.strip() == "schema is up to date"
    render = mlops("crontab", "render")
    assert render.returncode == 0 and "mlops pipeline weekly" in render.stdout, render.stderr
    weekly = mlops("pipeline", "weekly", "--as-of", "2026-03-02")
    assert weekly.returncode == 0, weekly.stdout + weekly.stderr
    steps = query(url, "SELECT step, status FROM pipeline_runs WHERE parent_run_id IS NOT NULL ORDER BY id")
    assert [s for s, _ in steps][:2] == ["load", "train"] and all(st == "succeeded" for _, st in steps), steps
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
