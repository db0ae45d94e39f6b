"""Test fixtures: a real PostgreSQL (embedded, or DATABASE_URL's server) and a real MLflow store.

One server per test session. Each test gets a fresh database cloned from a migrated template
(CREATE DATABASE ... TEMPLATE, ~50 ms), its own MLOPS_HOME and its own registered-model name,
and runs in an environment holding only the mlops variables set here (nothing leaks from the
developer's shell or a .env file).

To run the suite against an external server: DATABASE_URL=postgresql://user:pw@host/db make test
(the role needs CREATEDB; test databases are created next to the given one and dropped).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from click.testing import CliRunner

import faults
from mlops_cli import config, db

REPO = Path(__file__).resolve().parent.parent
faults.install_for_session()  # fault injection (MLOPS_FAULT) for this process and its children
_counter = itertools.count()


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _admin(url: str, sql: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def pytest_collection_modifyitems(config, items):
    """schemathesis gives the item of every API operation the test's own node id; pytest-xdist
    schedules by node id and would run one of them. Each gets its operation in its id, and a
    collection that still repeats an id is refused."""
    for item in items:
        label = getattr(item, "operation_label", None)
        if not label or item.nodeid.endswith(f"[{label}]"):
            continue
        if getattr(getattr(item, "_id", None), "params", "") is None:  # pytest >= 9.2: a structured id
            item._id = item._id.with_params(label)
        elif hasattr(item, "_nodeid"):
            item._nodeid = f"{item._nodeid}[{label}]"
    seen: set[str] = set()
    repeated = sorted({i.nodeid for i in items if i.nodeid in seen or seen.add(i.nodeid)})
    if repeated:
        raise pytest.UsageError(f"repeated test ids (pytest-xdist would run one of each): {', '.join(repeated)}")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """(admin_url, template_name, mlflow_url) for the session's PostgreSQL server."""
    external = os.environ.get("DATABASE_URL")
    if external:
        admin_url = external
    else:
        # Not under pytest's basetemp: pytest prunes old basetemps, which would delete the data
        # folder of a server still in use by a concurrent session.
        home = Path(tempfile.mkdtemp(prefix="mlops-test-pg-"))
        server = db.embedded_server(config.Settings(home=home))
        admin_url = server.get_uri("postgres")
    tag = uuid.uuid4().hex[:8]
    template = f"mlops_tpl_{tag}"
    _admin(admin_url, f'CREATE DATABASE "{template}"')
    conn = psycopg2.connect(_with_db(admin_url, template))
    try:
        db.migrate(conn)
    finally:
        conn.close()
    mlflow_db = f"mlflow_test_{tag}"
    _admin(admin_url, f'CREATE DATABASE "{mlflow_db}"')
    mlflow_url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", _with_db(admin_url, mlflow_db))
    yield admin_url, template, mlflow_url
    for name in (template, mlflow_db):
        try:
            _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg2.Error:
            pass
    if not external:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def artifact_root():
    path = Path(tempfile.mkdtemp(prefix="mlops-test-artifacts-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_state(request, pg_server, artifact_root, tmp_path, monkeypatch):
    """Every test: a new database from the template, its own home, model name and environment."""
    admin_url, template, mlflow_url = pg_server
    name = f"t_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    _admin(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = _with_db(admin_url, name)
    for var, _field, _default in config.env_variables():
        monkeypatch.delenv(var, raising=False)
    for var in ("MLOPS_TRIGGERED_BY", "MLOPS_ACTOR", "MLOPS_LOG_FORMAT", "MLOPS_SQL_DIR"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "DATABASE_URL": url,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "MLFLOW_ARTIFACT_ROOT": str(artifact_root),
        "MLOPS_HOME": str(tmp_path / "home"),
        "MODEL_NAME": f"model-{name}",
        "MLFLOW_EXPERIMENT_NAME": f"exp-{template}",
        "MLOPS_ACTOR": "pytest",
        "NOTIFY_RETRIES": "0",
        "STEP_RETRY_DELAY": "0.05",
        # the shadow worker's default niceness (19) yields the CPU to every other busy process of
        # the machine: on a loaded CI box it could starve past the tests' "eventually" waits.
        # Its priority is a deployment choice; test_shadow checks that SHADOW_NICE is applied.
        "SHADOW_NICE": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    yield url
    try:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg2.Error:
        pass


@pytest.fixture
def settings():
    return config.load_settings()


@pytest.fixture
def conn(settings):
    c = db.open_db(settings)
    yield c
    c.close()


@pytest.fixture
def cli():
    """invoke('load', '--as-of', ...) -> click Result, with stderr kept apart."""
    from mlops_cli.cli import main

    def invoke(*args, input=None):
        runner = CliRunner()
        return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def small_catalogue(tmp_path_factory):
    """A 3,000-row generated catalogue in the real file format: (x_path, y_path)."""
    from mlops_cli.synth import write_catalogue

    return write_catalogue(tmp_path_factory.mktemp("catalogue"), rows=3000, seed=7)


def wait_for(predicate, what: str, timeout: float = 120.0, interval: float = 0.05):
    """Poll until predicate() is truthy and return its value; fail naming `what` after `timeout`.

    For "eventually" conditions (a background thread, another process, the server's own
    bookkeeping): the timeout is a bound for a behaviour that never happens, far above what any
    machine needs, never a speed requirement.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def query(url_or_conn, sql, params=None):
    """Rows of a query, as tuples (helper for assertions)."""
    own = isinstance(url_or_conn, str)
    conn = psycopg2.connect(url_or_conn) if own else url_or_conn
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        if not own:
            conn.rollback()
        return rows
    finally:
        if own:
            conn.close()
