"""Identities and roles (mlops_cli/access.py): `mlops api-token`, what a token proves, and the role
table every front end checks. The HTTP side (401/403 per route, the audit rows) is in test_api.py."""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager

import pytest

from mlops_cli import access, db
from mlops_cli.errors import Forbidden, Unauthenticated, Unavailable

from conftest import query


def _factory(settings):
    @contextmanager
    def connection():
        with db.connection(settings) as c:
            yield c

    return connection


def test_api_token_commands(cli, conn, settings):
    r = cli("api-token", "list")
    assert r.exit_code == 0 and r.output == "No API token: make one with `mlops api-token add NAME --role ROLE`.\n"
    r = cli("api-token", "add", "alice", "--role", "operator", "--note", "on-call")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "API token for alice (operator), shown once:"
    token = lines[1].strip()
    assert re.fullmatch(r"mlops_[A-Za-z0-9_-]{43}", token)
    assert lines[2] == "Send it as `Authorization: Bearer <token>`; revoke it with `mlops api-token revoke alice`."
    # only its hash is stored; MLOPS_ACTOR (the tests' "pytest") made it
    [(name, role, digest, by, note)] = query(conn, "SELECT name, role, token_sha256, created_by, note FROM api_tokens")
    assert (name, role, by, note) == ("alice", "operator", "pytest", "on-call")
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert access.authenticate(settings, _factory(settings), token) == access.Principal("alice", "operator", "token")
    assert query(conn, "SELECT last_used_at IS NOT NULL FROM api_tokens") == [(True,)]

    r = cli("api-token", "add", "alice", "--role", "viewer")
    assert r.exit_code == 1 and r.output == (
        "Error: alice already has an active API token: revoke it first (`mlops api-token revoke alice`)\n")
    r = cli("api-token", "add", "api", "--role", "viewer")  # API_TOKEN_NAME: two secrets, one actor
    assert r.exit_code == 1 and r.output == (
        "Error: api is API_TOKEN_NAME, the actor of API_TOKEN: give this token another name\n")
    r = cli("api-token", "add", "bad name", "--role", "viewer")
    assert r.exit_code == 1 and "Invalid user name 'bad name'" in r.output
    r = cli("api-token", "add", "bob", "--role", "admin")
    assert r.exit_code == 2 and "'admin' is not one of 'viewer', 'labeller', 'operator'" in r.output
    assert cli("api-token", "add", "bob", "--role", "labeller").exit_code == 0
    r = cli("api-token", "list")
    assert [line.split()[:2] for line in r.output.splitlines()[2:]] == [["alice", "operator"], ["bob", "labeller"]]

    r = cli("api-token", "revoke", "alice", "--by", "carol")
    assert r.exit_code == 0 and r.output == "revoked the API token of alice (operator)\n"
    with pytest.raises(Unauthenticated, match=r"^invalid API token \(unknown or revoked\)$"):
        access.authenticate(settings, _factory(settings), token)
    r = cli("api-token", "revoke", "alice")
    assert r.exit_code == 1 and r.output == "Error: 'alice' has no active API token (see `mlops api-token list`)\n"
    assert query(conn, "SELECT name, revoked_by FROM api_tokens ORDER BY id") == [("alice", "carol"), ("bob", None)]
    assert "alice" in cli("api-token", "list", "--all").output
    # a new token for the same name once the old one is revoked
    assert cli("api-token", "add", "alice", "--role", "viewer").exit_code == 0


def test_what_a_token_proves(monkeypatch, conn, settings):
    with pytest.raises(Unavailable, match="control API disabled: set API_TOKEN or create a token"):
        access.authenticate(settings, _factory(settings), None)
    monkeypatch.setenv("API_TOKEN", "x" * 16)
    monkeypatch.setenv("API_TOKEN_NAME", "deploy-bot")
    from mlops_cli import config

    shared = config.load_settings()
    assert access.authenticate(shared, _factory(shared), " " + "x" * 16 + " ") == \
        access.Principal("deploy-bot", "operator", "API_TOKEN")
    with pytest.raises(Unauthenticated, match="^missing bearer token"):
        access.authenticate(shared, _factory(shared), "")
    monkeypatch.setenv("API_TOKEN", "x" * 15)
    weak = config.load_settings()
    with pytest.raises(Unavailable, match=r"API_TOKEN is too short \(15 characters, at least 16\)"):
        access.authenticate(weak, _factory(weak), "x" * 15)
    access.create_token(conn, "alice", "viewer", created_by="carol")
    conn.commit()  # with a personal token active, the weak API_TOKEN is one more unknown token:
    for guess in ("x" * 15, "y" * 15):  # the same 401, so that no answer confirms a guess of it
        with pytest.raises(Unauthenticated, match=r"^invalid API token \(unknown or revoked\)$"):
            access.authenticate(weak, _factory(weak), guess)


def test_roles_and_claimed_names():
    viewer, labeller, operator = (access.Principal(n, n, "token") for n in access.ROLES)
    table = {(p.role, a): access.allows(p.role, a) for p in (viewer, labeller, operator)
             for a in (access.READ, access.LABEL, access.OPERATE)}
    assert [a for (r, a), ok in table.items() if ok and r == "viewer"] == [access.READ]
    assert [a for (r, a), ok in table.items() if ok and r == "labeller"] == [access.READ, access.LABEL]
    assert all(table[("operator", a)] for a in (access.READ, access.LABEL, access.OPERATE))
    with pytest.raises(Forbidden, match="^labeller is a labeller: a retrain needs the operator role$"):
        access.require(labeller, access.OPERATE, "a retrain")
    assert access.acting_as(operator, None) == access.acting_as(operator, " operator ") == "operator"
    with pytest.raises(Forbidden, match="^this token acts as operator; by names 'root': "):
        access.acting_as(operator, "root")
    assert access.check_role(" Labeller ") == "labeller"
    assert access.weak_secret("UI_TOKEN", "a" * 16) is None and access.weak_secret("UI_TOKEN", "") is None


def test_registry_errors_do_not_quote_the_tracking_password(monkeypatch):
    """An MLflow client error quotes the URL it called, password included: /health and the
    control room show these messages to people who are not signed in."""
    from mlops_cli import config, registry
    from mlops_cli.errors import TransientError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:TopSecretPw42@127.0.0.1:1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(TransientError) as caught:
        registry.version_by_alias(config.load_settings(), registry.CHAMPION)
    assert "TopSecretPw42" not in str(caught.value) and "mlflow:***@127.0.0.1:1" in str(caught.value)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://mlops:S3cretPw@db:5432/mlops", "postgresql://mlops:***@db:5432/mlops"),
    ("postgresql://mlops:p@ss@db/mlops", "postgresql://mlops:***@db/mlops"),  # an unencoded @
    ("postgresql://mlops@db/mlops?sslmode=require&password=S3cretPw", "postgresql://mlops@db/mlops?sslmode=require&password=***"),
    ("host=db user=mlops password=S3cretPw dbname=mlops", "host=db user=mlops password=*** dbname=mlops"),
    ("host=db PASSWORD = 'S3cret Pw\\'s' dbname=mlops", "host=db PASSWORD = *** dbname=mlops"),
    ("postgresql://mlops@db:5432/mlops", "postgresql://mlops@db:5432/mlops"),
])
def test_every_form_of_database_password_is_masked(url, shown):
    """libpq takes a password in the URL's user info, in its query and in a keyword DSN: the
    sidebar, the UI's errors and every TransientError show the URL through db.redact."""
    assert db.redact(url) == shown
    assert db.redact(f"Cannot connect to PostgreSQL at {url}: refused") == f"Cannot connect to PostgreSQL at {shown}: refused"


@pytest.mark.parametrize("url, secret", [
    ("postgresql://mlops:S3cr%zzPw@127.0.0.1:1/mlops", "S3cr%zzPw"),  # a % not percent-encoded
    ("postgresql://mlops:S3cret/Pw@127.0.0.1:1/mlops", "S3cret"),     # a / not percent-encoded
])
def test_a_malformed_database_url_is_not_shown_with_its_password(monkeypatch, url, secret):
    """libpq quotes the piece of a malformed URL it could not read, and that piece is the password
    (`invalid percent-encoded token: "..."`, `invalid integer value "..." for connection option
    "port"`): the open /health, the startup log and the connection error show it masked. Before,
    /health answered it to anyone."""
    from fastapi.testclient import TestClient

    from mlops_cli import config
    from mlops_cli.api import create_app

    monkeypatch.setenv("DATABASE_URL", url)
    with TestClient(create_app(config.load_settings(), start_background=False)) as c:
        r = c.get("/health")
    assert r.json()["database"]["reachable"] is False and secret not in r.text
    assert secret not in db.redact(url, url)
    with pytest.raises(Exception) as caught:
        db.connect(config.load_settings())
    assert secret not in str(caught.value) and "mlops:***@127.0.0.1:1/mlops" in str(caught.value)


def test_a_failed_step_and_its_notifications_do_not_quote_the_tracking_password(monkeypatch, conn, settings):
    """An MLflow write that fails quotes the URL it called, user:password@ included: the step's
    error (pipeline_runs.error, what the API answers and api_audit keeps), the failure
    notification and a promotion's MLflow link leave the password out. Before, it was in all of them."""
    from mlops_cli import notify, registry
    from mlops_cli.api.errors import http_error
    from mlops_cli.runs import StepFailed, Trigger, run_step
    from mlops_cli.steps.promote import model_links

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    s = settings.replace(mlflow_tracking_uri="http://mlflow:TopSecretPw42@127.0.0.1:1")
    # configured while MLflow answered (registry.configure keeps it for the process); then it went away
    key = (s.mlflow_tracking_uri, str(s.home), s.database_url, s.experiment_name, str(s.artifacts_dir))
    monkeypatch.setitem(registry._configured, key, "0")
    with pytest.raises(StepFailed) as caught:
        run_step(conn, Trigger(actor="alice", triggered_by="api"), "rollback",
                 lambda step: registry.set_alias(s, registry.CHAMPION, "1"))
    [(error,)] = query(conn, "SELECT error FROM pipeline_runs WHERE id = %s", (caught.value.result.pipeline_run_id,))
    assert "mlflow:***@127.0.0.1:1" in error and "TopSecretPw42" not in error
    assert "TopSecretPw42" not in str(http_error(caught.value).detail)
    links = model_links(s, "3")
    assert list(links.values()) == ["http://127.0.0.1:1/#/models/" + s.model_name.replace("/", "%2F") + "/versions/3"]
    # a message quoting the raw text anyway (a channel's own error, say): the known secrets are replaced
    notify.send(conn, s, notify.Message("pipeline_failed", "failed", "error",
                                        {"error": "API request to http://mlflow:TopSecretPw42@127.0.0.1:1 failed",
                                         "links": {"raw": s.mlflow_tracking_uri}}), kinds=("log",))
    conn.commit()
    [(payload,)] = query(conn, "SELECT payload::text FROM notifications")
    assert "TopSecretPw42" not in payload and "TopSecretPw42" not in s.notification_log_path.read_text()


def test_a_caller_not_proven_yet_learns_nothing_of_an_unreachable_database(monkeypatch, caplog):
    """A token is checked in the database: when it cannot be reached, the 503 says so, and only
    the log (the operator's) has the connection's host, user and database."""
    from fastapi.testclient import TestClient

    from mlops_cli import config
    from mlops_cli.api import create_app

    monkeypatch.setenv("DATABASE_URL", "postgresql://mlops@127.0.0.1:1/hidden_db?password=S3cretPw")
    monkeypatch.delenv("API_TOKEN", raising=False)
    with TestClient(create_app(config.load_settings(), start_background=False)) as c:
        for headers in ({}, {"Authorization": "Bearer made-up-token"}):
            r = c.get("/api/runs", headers=headers)
            assert r.status_code == 503 and r.json() == {"detail": "cannot check the API token: the database is "
                                                                   "unreachable (the API's log says why); try again"}
    logged = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("authentication: ")]
    assert logged and "hidden_db" in logged[0] and "S3cretPw" not in logged[0]


def test_an_embedded_server_stopped_under_a_running_process_is_unavailable(tmp_path):
    """The embedded URL checks its database on the server's admin connection: a server stopped
    under the API (`mlops db stop`) is the same TransientError (503, exit 75) as any unreachable one."""
    from mlops_cli import db
    from mlops_cli.errors import TransientError

    with pytest.raises(TransientError, match=r"^Cannot connect to PostgreSQL at postgresql://postgres:\*\*\*@/"):
        db.ensure_database(f"postgresql://postgres:pw@/postgres?host={tmp_path}", "mlops")
