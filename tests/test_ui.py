"""The Streamlit control room, page by page, with streamlit.testing.v1.AppTest against the real
database and MLflow registry (nothing mocked): every page renders on an empty database (empty-state
message) and on a seeded one, and every action writes its audit row through the same library
function as the CLI, with the signed-in identity as its actor. Without a sign-in, no button on any
page changes a row (`test_without_a_sign_in_no_button_changes_anything`).

Signing in: pages are opened with the sign-in URL's token (UI_AUTH=token, the default: acting as
ADMIN); tests that need several people use a users file (UI_AUTH=users, `users` fixture) and sign in
through the form (`sign_in`).

Seeding trains twice, so it is done once per session (`ui_seed`): a database is filled through the
library (two loads, train/evaluate/promote v1, train/evaluate/approve v2, a weekly pipeline, served
traffic that drifts, daily pipelines raising an alert), then each test that wants data gets its own
copy of it (`seeded`: the test's database is re-created from the seeded one, CREATE DATABASE ...
TEMPLATE) and the seeded model name. Tests that move registry aliases restore them afterwards
(`restore_registry`), since the MLflow registry is shared.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, _admin, _with_db, query
from mlops_cli import config, db, registry
from mlops_cli.runs import Trigger

APP = REPO / "streamlit_app"
PAGES = ["Home.py", "pages/1_Pipeline_Runs.py", "pages/2_Models.py", "pages/3_Operations.py", "pages/4_Drift.py",
         "pages/5_Alerts_Dashboard.py", "pages/6_Labelling.py"]
QUICK = {"word_max_features": 20000, "char_max_features": 20000}
EMPTY = "The database is empty"
TIMEOUT = 120
TOKEN = secrets.token_urlsafe(24)  # this session's UI_TOKEN (as `mlops ui` passes it)
ADMIN = "ui-admin-pytest"  # UI_ADMIN_NAME: who the token signs in
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")  # operators
ROLE_USERS = {"victor": "viewer", "lena": "labeller"}
AUDITED = ("alert_actions", "model_decisions", "pipeline_runs", "app_settings", "alerts", "feedback")
SIGN_IN = "Sign in to the MLOps control room"


# --- signing in ---------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def ui_token(fresh_state, monkeypatch):
    """Token mode (the default) with a known token, as `mlops ui` starts the app."""
    monkeypatch.setenv("UI_TOKEN", TOKEN)
    monkeypatch.setenv("UI_ADMIN_NAME", ADMIN)


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    """A users file with USERS, each with the password `password_of(name)` (once per session)."""
    from mlops_cli import uiauth

    path = tmp_path_factory.mktemp("ui-users") / "ui-users"
    for name in USERS:
        uiauth.add_user(path, name, password_of(name))
    for name, role in ROLE_USERS.items():
        uiauth.add_user(path, name, password_of(name), role=role)
    return path


@pytest.fixture
def users(users_file, monkeypatch):
    """Password mode: people sign in with the form (`sign_in`)."""
    monkeypatch.setenv("UI_AUTH", "users")
    monkeypatch.setenv("UI_USERS_FILE", str(users_file))
    return users_file


def password_of(name: str) -> str:
    return f"{name}-pw-{TOKEN[:8]}"


def signed_in_as(at: AppTest) -> str | None:
    signed = at.session_state["signed_in"] if "signed_in" in at.session_state else None
    return signed["name"] if signed else None


def sign_in(at: AppTest, name: str, password: str | None = None) -> AppTest:
    """Sign out if someone is signed in, then sign in as `name` with the form (UI_AUTH=users)."""
    if signed_in_as(at):
        at.button(key="signout").click().run(timeout=TIMEOUT)
        assert signed_in_as(at) is None
    at.text_input(key="signin_name").set_value(name)
    at.text_input(key="signin_password").set_value(password_of(name) if password is None else password)
    at.button(key="signin_submit").click().run(timeout=TIMEOUT)
    no_exception(at)
    return at


# --- helpers ---------------------------------------------------------------------------------------------
def run_page(page: str, token: bool = True) -> AppTest:
    """Open a page; signed in with the token of the sign-in URL unless token=False."""
    at = AppTest.from_file(str(APP / page), default_timeout=60)
    if token:
        at.query_params["token"] = TOKEN
    return at.run(timeout=TIMEOUT)


def raw_texts(at: AppTest) -> str:
    """Everything the page wrote as text (markdown, captions, alerts, metrics): the Markdown source."""
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption]
    parts += [e.value for kind in (at.info, at.success, at.error, at.warning) for e in kind]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


def shown(markdown: str) -> str:
    """Markdown source without its backslash escapes (CommonMark shows an escaped punctuation
    character as itself) and word joiners: what a person reads of text escaped by common.md."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")  # and its invisible joiners


def texts(at: AppTest) -> str:
    """Everything the page wrote, as read (escapes removed), for assertions."""
    return shown(raw_texts(at))


def no_exception(at: AppTest) -> None:
    assert not at.exception, "\n".join(str(e.value) + "\n" + "\n".join(e.stack_trace) for e in at.exception)


def charts(at: AppTest) -> list:
    return list(at.get("vega_lite_chart"))


def submit(at: AppTest, button: str, **values) -> AppTest:
    """Fill widgets by key (text inputs, areas, selectboxes, numbers) then click `button` and run."""
    for key, value in values.items():
        for kind in (at.text_input, at.text_area, at.selectbox, at.number_input, at.checkbox):
            try:
                widget = kind(key=key)
            except KeyError:
                continue
            widget.set_value(value)
            break
        else:
            raise KeyError(f"no widget with key {key!r}")
    at.button(key=button).click()
    return at.run(timeout=TIMEOUT)


# --- the seeded state (once per session) ----------------------------------------------------------------
@dataclass
class Seed:
    db: str
    model_name: str
    env: dict
    champion: str = ""
    previous: str = ""
    alert_ids: list = field(default_factory=list)
    home: str = ""


_SEEDS: dict[str, Seed] = {}


def _seed_once(pg_server, artifact_root, catalogue) -> Seed:
    """Fill a database through the library (see the module docstring); memoised per server, so that
    modules importing the fixture share it."""
    admin_url, template, mlflow_url = pg_server
    if admin_url in _SEEDS:
        return _SEEDS[admin_url]
    from mlops_cli.pipeline import run_pipeline
    from mlops_cli.simulate import simulate_traffic
    from mlops_cli.steps.evaluate import evaluate
    from mlops_cli.steps.load import load
    from mlops_cli.steps.promote import approve, promote
    from mlops_cli.steps.train import train

    tag = uuid.uuid4().hex[:8]
    name = f"ui_seed_{tag}"
    _admin(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    home = tempfile.mkdtemp(prefix="mlops-ui-seed-")
    env = {"DATABASE_URL": _with_db(admin_url, name), "MLFLOW_TRACKING_URI": mlflow_url,
           "MLFLOW_ARTIFACT_ROOT": str(artifact_root), "MLOPS_HOME": home, "MODEL_NAME": f"ui-seed-{tag}",
           "MLFLOW_EXPERIMENT_NAME": f"ui-seed-{tag}", "NOTIFY_RETRIES": "0", "STEP_RETRY_DELAY": "0.05",
           "MIN_F1_THRESHOLD": "0.05", "MLOPS_X_PATH": str(catalogue[0]), "MLOPS_Y_PATH": str(catalogue[1]),
           # the seed's weekly run is the all-skipped week: its 700 simulated labels must not open
           # the feedback gate (tests/test_feedback_loop.py tests that gate)
           "FEEDBACK_RETRAIN_MIN": "1000000"}
    s = config.load_settings(environ=env, dotenv=Path(os.devnull))
    t = Trigger(triggered_by="cli", actor="seed")
    x, y = (str(p) for p in catalogue)
    conn = db.open_db(s)
    try:
        assert load(conn, s.replace(initial_load_fraction=0.7), t, x_path=x, y_path=y,
                    as_of=date(2026, 3, 2)).status == "succeeded"
        assert load(conn, s.replace(load_fraction=0.3), t, x_path=x, y_path=y,
                    as_of=date(2026, 3, 9)).status == "succeeded"
        v1 = train(conn, s, t, force=True, params=QUICK).outputs["model_version"]
        assert evaluate(conn, s, t).status == "succeeded"
        assert promote(conn, s, t).outputs["decision"] == "promoted"
        v2 = train(conn, s, t, force=True, params={**QUICK, "alpha": 1e-4}).outputs["model_version"]
        assert evaluate(conn, s, t).status == "succeeded"
        assert approve(conn, s, t, v2, "seed reason: better on the new batch").status == "succeeded"
        model = registry.load_model(s, version=v2)
        today = datetime.combine(datetime.now(timezone.utc).date(), dtime.min, tzinfo=timezone.utc)
        start = today - timedelta(days=14)
        simulate_traffic(conn, s, model, v2, start=start, days=7, per_day=100, seed=1, feedback_rate=0.5)
        simulate_traffic(conn, s, model, v2, start=start + timedelta(days=7), days=7, per_day=100,
                         drift="vocabulary", seed=2, feedback_rate=0.5)
        conn.commit()
    finally:
        conn.close()
    weekly = run_pipeline(s, "weekly", t, as_of=date(2026, 3, 9))  # the week is done: every step skipped
    assert weekly.status == "succeeded", weekly.message
    for day in (7, 9, 11, 14):
        daily = run_pipeline(s, "daily", t, as_of=(start + timedelta(days=day)).date())
        assert daily.status == "succeeded", daily.message
    conn = db.open_db(s)
    try:
        alert_ids = [r[0] for r in query(conn, "SELECT id FROM alerts ORDER BY id")]
    finally:
        conn.close()
    assert alert_ids, "the drifted traffic should have raised an alert"
    seed = Seed(db=name, model_name=s.model_name, env=env, champion=str(v2), previous=str(v1),
                alert_ids=alert_ids, home=home)
    _SEEDS[admin_url] = seed
    return seed


@pytest.fixture(scope="session")
def ui_seed(pg_server, artifact_root, small_catalogue):
    seed = _seed_once(pg_server, artifact_root, small_catalogue)
    yield seed
    if _SEEDS.pop(pg_server[0], None) is not None:
        try:
            _admin(pg_server[0], f'DROP DATABASE IF EXISTS "{seed.db}" WITH (FORCE)')
        except psycopg2.Error:
            pass
        shutil.rmtree(seed.home, ignore_errors=True)


@pytest.fixture
def seeded(ui_seed, pg_server, fresh_state, monkeypatch):
    """This test's database re-created as a copy of the seeded one; MODEL_NAME = the seeded model."""
    admin_url = pg_server[0]
    name = urlsplit(fresh_state).path.lstrip("/")
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{ui_seed.db}"')
    monkeypatch.setenv("MODEL_NAME", ui_seed.model_name)
    monkeypatch.setenv("MIN_F1_THRESHOLD", ui_seed.env["MIN_F1_THRESHOLD"])
    return ui_seed


@pytest.fixture
def db_conn(seeded):
    c = db.open_db(config.load_settings())
    yield c
    c.close()


@pytest.fixture
def restore_registry(seeded):
    """Put the seeded model's aliases and version tags back as they were after the test."""
    s = config.load_settings()
    client = registry.client(s)
    aliases = {a: (registry.version_by_alias(s, a) or {}).get("version") for a in registry.ALIASES}
    tags = {v["version"]: dict(v["tags"]) for v in registry.list_versions(s)}
    yield
    for v in registry.list_versions(s):
        if v["version"] not in tags:
            registry.delete_version(s, v["version"])
            continue
        before = tags[v["version"]]
        for k in set(v["tags"]) - set(before):
            client.delete_model_version_tag(s.model_name, v["version"], k)
        changed = {k: val for k, val in before.items() if v["tags"].get(k) != val}
        if changed:
            registry.set_version_tags(s, v["version"], changed)
    for alias, version in aliases.items():
        if version is None:
            registry.delete_alias(s, alias)
        else:
            registry.set_alias(s, alias, version)


def runs_by(conn, step: str) -> list[tuple]:
    return query(conn, "SELECT id, status, triggered_by, actor, pipeline, params, outputs, error FROM pipeline_runs "
                       "WHERE step = %s ORDER BY id", (step,))


# --- empty database --------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_an_empty_database(page):
    at = run_page(page)
    no_exception(at)
    assert any(EMPTY in i.value for i in at.info), texts(at)


def test_pages_are_reachable_from_home_in_the_multipage_app(seeded):
    at = run_page("Home.py")
    no_exception(at)
    for page in PAGES[1:]:
        at.switch_page(page).run(timeout=TIMEOUT)
        no_exception(at)
        assert at.title[0].value in ("Pipeline runs", "Models", "Operations", "Drift", "Alerts dashboard", "Labelling")
        assert signed_in_as(at) == ADMIN  # the sign-in lasts across pages of the session


# --- with data --------------------------------------------------------------------------------------------
def test_home_shows_champion_pipelines_alerts_and_catalogue(seeded, db_conn):
    at = run_page("Home.py")
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["version"] == f"v{seeded.champion}"
    f1 = query(db_conn, "SELECT weighted_f1 FROM model_evaluations WHERE model_version = %s ORDER BY id DESC "
                        "LIMIT 1", (seeded.champion,))[0][0]
    assert metrics["weighted F1"] == f"{f1:.4f}"
    since = query(db_conn, "SELECT created_at FROM model_decisions WHERE decision = 'manual_promotion'")[0][0]
    assert metrics["in production since"] == since.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
    assert "approved by hand by seed" in texts(at)
    open_by_level = dict(query(db_conn, "SELECT level, count(*) FROM alerts WHERE status <> 'resolved' GROUP BY 1"))
    for level in ("CRITICAL", "ALERT", "WARNING"):
        assert metrics[level] == str(open_by_level.get(level, 0))
    weekly = query(db_conn, "SELECT id FROM pipeline_runs WHERE pipeline = 'weekly' AND step = 'pipeline'")[-1][0]
    daily = query(db_conn, "SELECT id FROM pipeline_runs WHERE pipeline = 'daily' AND step = 'pipeline' "
                           "ORDER BY id")[-1][0]
    body = texts(at)
    assert f"run **#{weekly}** :green-badge[succeeded]" in body
    assert f"run **#{daily}** :green-badge[succeeded]" in body
    assert "drift :green-badge[succeeded] → alert :green-badge[succeeded]" in body
    assert metrics["products"] == "3,000" and metrics["batches"] == "2"
    assert len(charts(at)) == 1  # catalogue size over time
    assert not any(EMPTY in i.value for i in at.info)


def test_pipeline_runs_page_filters_and_shows_a_run_in_detail(seeded, db_conn):
    at = run_page("pages/1_Pipeline_Runs.py")
    no_exception(at)
    total = query(db_conn, "SELECT count(*) FROM pipeline_runs")[0][0]
    assert len(at.dataframe[0].value) == total
    assert len(charts(at)) == 1  # the timeline

    at.selectbox(key="runs_step").set_value("train").run(timeout=TIMEOUT)
    no_exception(at)
    table = at.dataframe[0].value
    assert set(table["step"]) == {"train"}
    assert len(table) == query(db_conn, "SELECT count(*) FROM pipeline_runs WHERE step = 'train'")[0][0] == 3

    at.selectbox(key="runs_step").set_value("(all)")
    at.selectbox(key="runs_status").set_value("skipped").run(timeout=TIMEOUT)
    assert set(at.dataframe[0].value["status"]) == {"skipped"}

    # the first promotion: its upstream chain (the runs it consumed) is evaluate -> train -> load
    at.selectbox(key="runs_status").set_value("(all)")
    at.selectbox(key="runs_step").set_value("promote").run(timeout=TIMEOUT)
    promote_id = query(db_conn, "SELECT id FROM pipeline_runs WHERE step = 'promote' ORDER BY id")[0][0]
    at.selectbox(key="runs_detail").set_value(promote_id).run(timeout=TIMEOUT)
    no_exception(at)
    upstream = at.dataframe[-1].value
    assert list(upstream["step"]) == ["evaluate", "train", "load"]
    assert f"**#{promote_id}** `promote`" in texts(at)

    # a pipeline run: its children are its steps
    at.selectbox(key="runs_step").set_value("pipeline")
    at.selectbox(key="runs_pipeline").set_value("daily").run(timeout=TIMEOUT)
    daily = query(db_conn, "SELECT id FROM pipeline_runs WHERE pipeline = 'daily' AND step = 'pipeline' ORDER BY id")
    at.selectbox(key="runs_detail").set_value(daily[0][0]).run(timeout=TIMEOUT)
    no_exception(at)
    children = at.dataframe[1].value
    assert list(children["step"]) == ["partitions", "rollup", "drift", "alert", "retention"]


def test_models_page_shows_versions_decisions_and_f1_chart(seeded):
    at = run_page("pages/2_Models.py")
    no_exception(at)
    versions = at.dataframe[0].value
    assert sorted(versions["version"]) == [int(seeded.previous), int(seeded.champion)]
    champ = versions[versions["champion"] == "★"]
    assert list(champ["version"]) == [int(seeded.champion)]
    assert "champion" in champ["aliases"].iloc[0]
    prev = versions[versions["version"] == int(seeded.previous)]
    assert "previous-champion" in prev["aliases"].iloc[0]
    history = at.dataframe[1].value
    assert list(history["decision"]) == ["manual_promotion", "promoted"]
    assert "seed reason" in history["justification"].iloc[0]
    decisions = at.dataframe[2].value
    assert set(decisions["decision"]) == {"promoted", "manual_promotion"}
    assert len(charts(at)) == 1  # F1 over versions


def test_drift_page_shows_scores_against_thresholds_and_a_report(seeded, db_conn):
    at = run_page("pages/4_Drift.py")
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["warning threshold"] == "0.1" and metrics["critical threshold"] == "0.3"
    score_chart = charts(at)[0]
    spec = score_chart.proto.spec
    assert '"rule"' in spec and '"line"' in spec  # scores as lines, thresholds as rules
    # pick the newest 7-day report: data drift with per-feature distributions and top movers
    rid, score = query(db_conn, "SELECT id, data_drift_score FROM drift_reports WHERE window_days = 7 "
                                "ORDER BY id DESC LIMIT 1")[0]
    at.selectbox(key="drift_report").set_value(rid).run(timeout=TIMEOUT)
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["data drift"] == f"{score:.4f}"
    assert len(charts(at)) >= 8  # score history + one bar chart per feature + top tokens / classes
    assert "**tokens** (data)" in texts(at)
    assert "Top drifting title tokens" in texts(at)


def test_alerts_page_shows_alerts_and_the_drift_behind_them(seeded, db_conn):
    at = run_page("pages/5_Alerts_Dashboard.py")
    no_exception(at)
    table = at.dataframe[0].value
    active = query(db_conn, "SELECT id, level, cause FROM alerts WHERE status <> 'resolved' ORDER BY id")
    assert sorted(table["id"]) == [a[0] for a in active]
    # a data or prediction drift alert (its page draws the feature distributions too)
    alert_id = next(a[0] for a in active if a[2] in ("data_drift", "prediction_drift"))
    at.selectbox(key="alerts_selected").set_value(alert_id).run(timeout=TIMEOUT)
    body = texts(at)
    level, cause, report_id = query(db_conn, "SELECT level, cause, report_id FROM alerts WHERE id = %s", (alert_id,))[0]
    assert f"Alert #{alert_id}" in " ".join(h.value for h in at.subheader)
    assert f"**Drift report #{report_id}**" in body
    assert f":{ {'CRITICAL': 'red', 'ALERT': 'orange', 'WARNING': 'yellow'}[level]}-badge[{level}]" in body
    assert len(charts(at)) >= 2  # the alert's score history with thresholds, the report's features
    assert "No decision recorded yet." in body


def test_operations_page_is_empty_but_usable(settings):
    at = run_page("pages/3_Operations.py")
    no_exception(at)
    assert any(EMPTY in i.value for i in at.info)
    assert at.button(key="ops_load_submit") is not None


def test_operations_page_shows_operators_who_has_access(settings, conn, users, tmp_path):
    """The Access section: the active API tokens, the user changes and the sign-ins (refused ones
    too), for an operator; a viewer gets the notice, not the records."""
    from mlops_cli import access, uiauth
    from mlops_cli.runs import Trigger

    access.create_token(conn, "ci-bot", "viewer", "root-admin", note="dashboards")
    uiauth.set_user(conn, tmp_path / "other-users", "zoe", "zoe's password", "labeller", Trigger(actor="root-admin"))
    at = run_page("pages/3_Operations.py", token=False)
    sign_in(at, "victor")
    assert "victor is a viewer: reading who has access needs the operator role" in texts(at)
    assert not any("ci-bot" in str(df.value.to_dict()) for df in at.dataframe)
    sign_in(at, "alice", "a wrong one")
    sign_in(at, "alice")
    tables = {k: df.value for k, df in zip(("tokens", "changes", "sign_ins"), at.dataframe[-3:])}
    assert tables["tokens"][["name", "role", "created_by", "note"]].values.tolist() == [
        ["ci-bot", "viewer", "root-admin", "dashboards"]]
    assert tables["changes"][["name", "change", "role", "actor"]].values.tolist() == [
        ["zoe", "added", "labeller", "root-admin"]]
    assert tables["sign_ins"][["name", "ok", "reason"]].fillna("").values.tolist()[:3] == [
        ["alice", True, ""], ["alice", False, "wrong password"], ["victor", True, ""]]


# --- actions -------------------------------------------------------------------------------------------------
def test_operations_actions_are_audited_as_ui_runs(settings, conn, small_catalogue, monkeypatch, users):
    """Load, train now, evaluate and approve from the page: the same steps as the CLI, recorded with
    triggered_by='ui' and the signed-in name."""
    x, y = (str(p) for p in small_catalogue)
    monkeypatch.setenv("MLOPS_X_PATH", x)
    monkeypatch.setenv("MLOPS_Y_PATH", y)
    at = run_page("pages/3_Operations.py", token=False)
    assert at.title[0].value == SIGN_IN and not any(b.key == "ops_load_submit" for b in at.button)
    assert runs_by(conn, "load") == []  # nobody signed in: no load form at all

    sign_in(at, "alice")
    assert at.text_input(key="ops_load_x").value == x  # defaults from the settings
    submit(at, "ops_load_submit")
    no_exception(at)
    [(run_id, status, by, actor, pipeline, params, outputs, _)] = runs_by(conn, "load")
    assert (status, by, actor, pipeline) == ("succeeded", "ui", "alice", "manual")
    assert params["x_path"] == x and params["y_path"] == y
    assert f"pipeline run **#{run_id}** :green-badge[succeeded]" in texts(at)
    assert "actor **alice**" in texts(at)

    submit(at, "ops_train_submit", ops_train_params="word_max_features=20000\nchar_max_features=20000")
    no_exception(at)
    [(run_id, status, by, actor, _, params, outputs, _)] = runs_by(conn, "train")
    assert (status, by, actor) == ("succeeded", "ui", "alice")  # still signed in as alice
    assert params == {"force": True, "overrides": QUICK}
    version = outputs["model_version"]
    mlflow_tags = registry.run_info(settings, outputs["mlflow_run_id"])["tags"]
    assert mlflow_tags["trigger"] == "ui" and mlflow_tags["actor"] == "alice"

    sign_in(at, "bob")
    submit(at, "ops_evaluate_submit")
    no_exception(at)
    [(_, status, by, actor, _, _, outputs, _)] = runs_by(conn, "evaluate")
    assert (status, by, actor, outputs["model_version"]) == ("succeeded", "ui", "bob", version)

    sign_in(at, "carol")
    submit(at, "ops_approve_submit", ops_approve_version=version, ops_approve_reason="")
    assert "A reason is required" in texts(at)
    assert runs_by(conn, "approve") == []
    submit(at, "ops_approve_submit", ops_approve_version=version, ops_approve_reason="good enough for the pilot")
    no_exception(at)
    [(run_id, status, by, actor, _, params, _, _)] = runs_by(conn, "approve")
    assert (status, by, actor) == ("succeeded", "ui", "carol")
    assert params == {"version": version, "reason": "good enough for the pilot"}
    assert query(conn, "SELECT decision, decided_by, triggered_by, pipeline_run_id FROM model_decisions") == [
        ("manual_promotion", "carol", "ui", run_id)]
    assert registry.version_by_alias(settings, registry.CHAMPION)["version"] == version


def test_operations_refused_and_skipped_actions(settings, conn, users):
    """An action refused before its step starts (no source catalogue configured) shows the error and
    writes nothing; a step that ends without doing anything shows its skipped row."""
    at = sign_in(run_page("pages/3_Operations.py", token=False), "alice")
    submit(at, "ops_load_submit")
    assert "No source catalogue" in texts(at)
    assert runs_by(conn, "load") == []
    submit(at, "ops_evaluate_submit")
    no_exception(at)
    [(run_id, status, by, actor, *_)] = runs_by(conn, "evaluate")
    assert (status, by, actor) == ("skipped", "ui", "alice")
    assert f"pipeline run **#{run_id}** :gray-badge[skipped]" in texts(at)


def test_alert_investigate_and_thresholds_are_audited_and_used_by_the_next_drift_run(seeded, db_conn, users):
    at = sign_in(run_page("pages/5_Alerts_Dashboard.py", token=False), "dave")
    alert_id = at.selectbox(key="alerts_selected").value

    submit(at, "alert_investigate_submit", alert_investigate_note=" ")
    assert "A note is required" in texts(at)
    assert query(db_conn, "SELECT count(*) FROM alert_actions")[0][0] == 0

    submit(at, "alert_investigate_submit", alert_investigate_note="looking at the new supplier feed")
    no_exception(at)
    assert query(db_conn, "SELECT alert_id, action, actor, note FROM alert_actions") == [
        (alert_id, "investigate", "dave", "looking at the new supplier feed")]
    assert query(db_conn, "SELECT status FROM alerts WHERE id = %s", (alert_id,))[0][0] == "open"  # nothing else

    # out of order: refused by thresholds.set_thresholds, nothing stored
    submit(at, "alert_thresholds_submit", alert_thresholds_warning=0.5, alert_thresholds_alert=0.2,
           alert_thresholds_critical=0.9, alert_thresholds_note="too noisy")
    assert "0 < warning < alert < critical" in texts(at)
    assert query(db_conn, "SELECT count(*) FROM app_settings")[0][0] == 0

    submit(at, "alert_thresholds_submit", alert_thresholds_warning=0.15, alert_thresholds_alert=0.6,
           alert_thresholds_critical=0.9, alert_thresholds_note="too noisy")
    no_exception(at)
    [(a_id, action, actor, note, params)] = query(
        db_conn, "SELECT alert_id, action, actor, note, params FROM alert_actions WHERE action = 'adjust_thresholds'")
    assert (a_id, action, actor) == (None, "adjust_thresholds", "dave")
    assert note == f"too noisy (alert #{alert_id})"
    assert params["new"] == {"warning": 0.15, "alert": 0.6, "critical": 0.9}
    assert dict(query(db_conn, "SELECT key, value FROM app_settings")) == {
        "drift_warning_threshold": 0.15, "drift_alert_threshold": 0.6, "drift_critical_threshold": 0.9}
    assert "warning 0.15 / alert 0.6 / critical 0.9" in texts(at)
    history = at.dataframe[-1].value
    assert list(history["action"]) == ["adjust_thresholds", "investigate"]

    # the next drift run uses them
    from mlops_cli.steps.drift import drift

    s = config.load_settings()
    result = drift(db_conn, s, Trigger(actor="pytest"))
    reports = query(db_conn, "SELECT details FROM drift_reports WHERE pipeline_run_id = %s", (result.pipeline_run_id,))
    assert reports and all(d["thresholds"] == {"warning": 0.15, "alert": 0.6, "critical": 0.9} for (d,) in reports)
    assert all(d["threshold_source"] == {"warning": "app_settings", "alert": "app_settings",
                                         "critical": "app_settings"} for (d,) in reports)


def test_alert_thresholds_partial_update_keeps_the_values_left_empty(seeded, db_conn, users):
    """ops.thresholds.update, as `mlops thresholds --warning X`: only the value given changes, the
    others keep the one in force; the change is audited with the alert it was decided on."""
    from mlops_cli.thresholds import effective_thresholds

    before = effective_thresholds(db_conn, config.load_settings())
    db_conn.rollback()
    at = sign_in(run_page("pages/5_Alerts_Dashboard.py", token=False), "dave")
    alert_id = at.selectbox(key="alerts_selected").value
    assert at.number_input(key="alert_thresholds_alert").value is None  # empty: keep
    warning = round(before["alert"] / 2, 3)
    submit(at, "alert_thresholds_submit", alert_thresholds_warning=warning, alert_thresholds_note="fewer warnings")
    no_exception(at)
    assert dict(query(db_conn, "SELECT key, value FROM app_settings")) == {
        "drift_warning_threshold": warning, "drift_alert_threshold": before["alert"],
        "drift_critical_threshold": before["critical"]}
    [(a_id, actor, note, params)] = query(db_conn, "SELECT alert_id, actor, note, params FROM alert_actions "
                                                   "WHERE action = 'adjust_thresholds'")
    assert (a_id, actor, note) == (None, "dave", f"fewer warnings (alert #{alert_id})")
    assert params["new"] == {"warning": warning, "alert": before["alert"], "critical": before["critical"]}
    assert f"warning {warning:g} / alert {before['alert']:g} / critical {before['critical']:g}" in texts(at)


def test_alert_rollback_calls_the_rollback_step_and_is_audited(seeded, db_conn, restore_registry, users):
    at = sign_in(run_page("pages/5_Alerts_Dashboard.py", token=False), "erin")
    alert_id = at.selectbox(key="alerts_selected").value
    assert at.selectbox(key="alert_rollback_to").options == ["the previous champion", f"v{seeded.previous}"]

    submit(at, "alert_rollback_submit", alert_rollback_note="")
    assert "A note is required" in texts(at)
    assert runs_by(db_conn, "rollback") == []

    submit(at, "alert_rollback_submit", alert_rollback_note="F1 dropped on the drifted traffic")
    no_exception(at)
    [(run_id, status, by, actor, pipeline, params, outputs, _)] = runs_by(db_conn, "rollback")
    assert (status, by, actor, pipeline) == ("succeeded", "ui", "erin", "manual")
    assert params == {"to_version": None, "reason": "F1 dropped on the drifted traffic"}
    assert (outputs["from_version"], outputs["to_version"]) == (seeded.champion, seeded.previous)
    assert query(db_conn, "SELECT decision, decided_by, triggered_by, restored_version, justification "
                          "FROM model_decisions WHERE pipeline_run_id = %s", (run_id,)) == [
        ("rolled_back", "erin", "ui", seeded.previous, "F1 dropped on the drifted traffic")]
    [(a_id, action, actor, note, aparams)] = query(db_conn, "SELECT alert_id, action, actor, note, params "
                                                            "FROM alert_actions")
    assert (a_id, action, actor, note) == (alert_id, "rollback", "erin", "F1 dropped on the drifted traffic")
    assert aparams["outcome"] == "succeeded" and aparams["pipeline_run_id"] == run_id
    s = config.load_settings()
    assert registry.version_by_alias(s, registry.CHAMPION)["version"] == seeded.previous
    assert f"pipeline run **#{run_id}** :green-badge[succeeded]" in texts(at)
    assert f"Champion now: v{seeded.previous}." in texts(at)

    # nothing left to roll back to: the step fails, its failed row is shown and the attempt audited
    submit(at, "alert_rollback_submit", alert_rollback_note="again")
    no_exception(at)
    failed = runs_by(db_conn, "rollback")[-1]
    assert failed[1:4] == ("failed", "ui", "erin") and "Nothing to roll back to" in failed[7]
    assert f"pipeline run **#{failed[0]}** :red-badge[failed]" in texts(at)
    last = query(db_conn, "SELECT action, params FROM alert_actions ORDER BY id DESC LIMIT 1")[0]
    assert last[0] == "rollback" and last[1]["outcome"] == "failed" and last[1]["pipeline_run_id"] == failed[0]


def test_alert_force_retrain_launches_the_retrain_pipeline_and_is_audited(seeded, db_conn, monkeypatch, users):
    # The background retrain is the real `mlops pipeline retrain`; its training step is made to fail
    # at once (the project's fault injection) so that no version is added to the shared registry.
    monkeypatch.setenv("MLOPS_FAULT", "train:fail")
    monkeypatch.setenv("UI_PUBLIC_READ", "true")
    at = run_page("pages/5_Alerts_Dashboard.py", token=False)
    alert_id = at.selectbox(key="alerts_selected").value

    assert not any(b.key == "alert_retrain_submit" for b in at.button)  # read only: no retrain form
    assert "Sign in to act" in texts(at)
    sign_in(at, "frank")
    submit(at, "alert_retrain_submit", alert_retrain_note="new catalogue")
    no_exception(at)
    [(run_id, _, by, actor, pipeline, *_)] = query(
        db_conn, "SELECT id, status, triggered_by, actor, pipeline FROM pipeline_runs "
                 "WHERE step = 'pipeline' AND pipeline = 'retrain'")
    assert (by, actor, pipeline) == ("ui", "frank", "retrain")
    [(a_id, action, actor, note, params)] = query(db_conn, "SELECT alert_id, action, actor, note, params "
                                                           "FROM alert_actions")
    assert (a_id, action, actor, note) == (alert_id, "force_retrain", "frank", "new catalogue")
    assert params == {"outcome": "started", "pipeline_run_id": run_id}
    assert f"retrain pipeline run #{run_id} started in the background" in texts(at)

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = query(db_conn, "SELECT status FROM pipeline_runs WHERE id = %s", (run_id,))[0][0]
        if status != "running":
            break
        time.sleep(0.5)
    assert status == "failed"
    [(_, tstatus, tby, tactor, _, _, _, error)] = runs_by(db_conn, "train")[-1:]
    assert (tstatus, tby, tactor) == ("failed", "ui", "frank") and "injected failure" in error


def test_labelling_page_ranks_the_queue_and_records_a_signed_in_label(seeded, db_conn, users, monkeypatch):
    """The queue in the order of ops.labelling with its reasons; read only without a sign-in; a
    signed-in label is a feedback row with the signed-in name, and the counter moves."""
    from mlops_cli.ops.feedback import labels_for_next_retrain
    from mlops_cli.ops.labelling import labelling_queue

    s = config.load_settings()
    expected = labelling_queue(db_conn, s, limit=50, days=7)
    before = labels_for_next_retrain(db_conn, s)["new_labels"]
    n_feedback = query(db_conn, "SELECT count(*) FROM feedback")[0][0]
    db_conn.rollback()
    assert len(expected) >= 2, "the seeded drifted traffic has unlabelled predictions"

    monkeypatch.setenv("UI_PUBLIC_READ", "true")
    at = run_page("pages/6_Labelling.py", token=False)
    no_exception(at)
    table = at.dataframe[0].value
    assert list(table["rank"]) == list(range(1, len(expected) + 1))
    assert list(table["title"]) == [q.designation for q in expected]
    assert list(table["score"]) == sorted(table["score"], reverse=True)
    assert all(table["reasons"].str.contains("confidence"))
    assert f"{before} labels so far" in texts(at)
    assert not any(b.key == "labelling_submit" for b in at.button) and "Sign in to act" in texts(at)

    sign_in(at, "alice")
    top = expected[0]
    assert at.selectbox(key="labelling_item").value == top.inference_id
    submit(at, "labelling_submit")  # no code chosen: refused, nothing written
    assert "Choose the true product type." in texts(at)
    assert query(db_conn, "SELECT count(*) FROM feedback")[0][0] == n_feedback
    true_code = next(code for code in (2583, 10) if code != top.predicted_code)
    submit(at, "labelling_submit", labelling_code=true_code, labelling_note="seen on the shelf")
    no_exception(at)
    assert query(db_conn, "SELECT inference_id, productid, true_code, predicted_code, submitted_by, note "
                          "FROM feedback ORDER BY id DESC LIMIT 1") == [
        (top.inference_id, top.productid, true_code, top.predicted_code, "alice", "seen on the shelf")]
    assert f"{before + 1} labels so far" in texts(at)
    assert top.designation not in list(at.dataframe[0].value["title"])  # labelled: out of the queue
    assert "recorded" in texts(at) and "by alice" in texts(at)


def _log_predictions(conn, rows) -> dict:
    """Served predictions written as the API's log writer writes them: {productid: inference_id}."""
    with conn.cursor() as cur:
        for pid, title, confidence in rows:
            cur.execute("""INSERT INTO inference_log (request_id, model_version, productid, designation, description,
                               designation_len, description_len, n_tokens, n_oov, predicted_code, confidence)
                           VALUES (%s, '1', %s, %s, '', %s, 0, 3, 0, 10, %s)""",
                        (f"r{pid}", pid, title, len(title), confidence))
    conn.commit()
    return dict(query(conn, "SELECT productid, id FROM inference_log"))


def test_a_label_goes_to_the_item_chosen_even_when_it_left_the_queue(conn, users):
    """The queue is read again at the rerun a submit starts; an item chosen that left it meanwhile
    (someone else labelled it) stays chosen, with a notice, and the label is recorded for it, not
    for the item that is first now. The same for the product of the disagreements form."""
    from mlops_cli.ops import feedback as ops_feedback

    s = config.load_settings()
    ids = _log_predictions(conn, [(101, "Livre ancien un", 0.20), (102, "Console de jeux deux", 0.30),
                                  (103, "Piscine gonflable trois", 0.40)])
    at = sign_in(run_page("pages/6_Labelling.py", token=False), "lena")
    at.selectbox(key="labelling_item").set_value(ids[102]).run(timeout=TIMEOUT)
    ops_feedback.record(s, prdtypecode=60, inference_id=ids[102], submitted_by="alice")  # another labeller
    submit(at, "labelling_submit", labelling_code=2705)
    no_exception(at)
    assert query(conn, "SELECT inference_id, productid, true_code, submitted_by FROM feedback ORDER BY id") == [
        (ids[102], 102, 60, "alice"), (ids[102], 102, 2705, "lena")]
    assert "by lena" in texts(at)
    # acted on: the next choice is afresh (the first item), no notice about the one just labelled
    assert at.selectbox(key="labelling_item").value == ids[101]
    assert "left the queue" not in texts(at)

    # chosen, then it leaves the queue: the notice, and the page still shows the chosen item
    at.selectbox(key="labelling_item").set_value(ids[103]).run(timeout=TIMEOUT)
    ops_feedback.record(s, prdtypecode=40, productid=103, submitted_by="alice")
    at.run(timeout=TIMEOUT)
    assert at.selectbox(key="labelling_item").value == ids[103]
    assert "This item has left the queue since you chose it" in texts(at) and "Piscine gonflable trois" in texts(at)

    # the disagreements form: lena picks 102 (alice 60, lena 2705), alice settles it meanwhile
    ops_feedback.record(s, prdtypecode=10, productid=101, submitted_by="alice")
    ops_feedback.record(s, prdtypecode=50, productid=101, submitted_by="bob")
    at.run(timeout=TIMEOUT)
    assert set(at.selectbox(key="settling_product").options) == {"101 · Livre ancien un",
                                                                 "102 · Console de jeux deux"}
    at.selectbox(key="settling_product").set_value(102)
    ops_feedback.record(s, prdtypecode=2705, productid=102, submitted_by="alice")  # 102 agrees now
    submit(at, "settling_submit", settling_code=1280)
    no_exception(at)
    assert query(conn, "SELECT productid, true_code FROM feedback WHERE submitted_by = 'lena' ORDER BY id") == [
        (102, 2705), (102, 1280)]


def test_an_alert_action_goes_to_the_alert_chosen_even_when_it_left_the_list(conn, users):
    """Two active alerts; alice chooses the second; bob resolves it meanwhile: her acknowledge is
    not turned into one of the other alert (the form is gone for a resolved alert; the ops call
    refuses it too: tests/test_drift.py)."""
    from mlops_cli import store
    from mlops_cli.ops import alerts as ops_alerts

    first = store.insert_alert(conn, level="CRITICAL", cause="data_drift", report_id=None, message="data",
                               details={}, notified=True)
    second = store.insert_alert(conn, level="WARNING", cause="prediction_drift", report_id=None, message="pred",
                                details={}, notified=True)
    conn.commit()
    at = sign_in(run_page("pages/5_Alerts_Dashboard.py", token=False), "alice")
    at.selectbox(key="alerts_selected").set_value(second).run(timeout=TIMEOUT)
    ops_alerts.resolve(conn, config.load_settings(), second, by="bob", note="noise")
    submit(at, "alert_ack_submit", alert_ack_note="looking at the prediction drift")
    no_exception(at)
    assert "Select an open alert above to acknowledge it." in texts(at)
    assert f"Alert #{second} is no longer in this list (it is resolved now)" in texts(at)
    assert query(conn, "SELECT alert_id, action, actor FROM alert_actions ORDER BY id") == [(second, "resolve", "bob")]
    assert query(conn, "SELECT id, status FROM alerts ORDER BY id") == [(first, "open"), (second, "resolved")]


def test_labelling_page_lists_labels_that_disagree_and_a_labeller_settles_one(seeded, db_conn, users):
    """Products whose labellers disagree, each labeller's latest label; the form (labellers only)
    records the signed-in person's label by productid, and a product whose labels now agree leaves
    the list."""
    from mlops_cli.categories import category_name
    from mlops_cli.ops.feedback import record

    s = config.load_settings()
    pid = query(db_conn, "SELECT productid FROM inference_log WHERE productid IS NOT NULL "
                         "AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.productid = inference_log.productid) "
                         "ORDER BY id DESC LIMIT 1")[0][0]
    db_conn.rollback()
    record(s, prdtypecode=10, productid=pid, submitted_by="alice")
    record(s, prdtypecode=2583, productid=pid, submitted_by="bob")

    at = run_page("pages/6_Labelling.py", token=False)
    sign_in(at, "victor")  # a viewer: the list, not the form
    no_exception(at)
    [expander] = [e for e in at.expander if e.label.startswith("Labels that disagree")]
    assert expander.label == "Labels that disagree: 1 product"
    [row] = expander.dataframe[0].value.to_dict("records")
    assert (row["product"], row["labels"], row["training takes"]) == (
        pid, f"bob: 2583 {category_name(2583)} · alice: 10 {category_name(10)}", f"2583 {category_name(2583)}")
    assert not any(b.key == "settling_submit" for b in at.button)

    sign_in(at, "lena")  # a labeller agrees with bob
    assert at.selectbox(key="settling_product").value == pid
    submit(at, "settling_submit")  # no code: refused, nothing written
    assert "Choose the true product type." in texts(at)
    submit(at, "settling_submit", settling_code=2583)
    no_exception(at)
    # alice still says 10: a third label does not settle it
    assert query(db_conn, "SELECT productid, true_code, submitted_by FROM feedback ORDER BY id DESC LIMIT 1") == [
        (pid, 2583, "lena")]
    assert "Labels that disagree: 1 product" in [e.label for e in at.expander]
    sign_in(at, "alice")  # she changes her mind: every latest label agrees
    submit(at, "settling_submit", settling_code=2583)
    no_exception(at)
    assert not [e for e in at.expander if e.label.startswith("Labels that disagree")]
    assert "recorded" in texts(at) and f"for product {pid} by alice" in texts(at)


# --- sign-in -------------------------------------------------------------------------------------------------
def audited_rows(conn) -> dict[str, list]:
    return {t: query(conn, f"SELECT * FROM {t} ORDER BY 1") for t in AUDITED}


def click_every_button(at: AppTest) -> int:
    """Click each button of the page in turn (the list is read again after every rerun)."""
    clicked = 0
    while clicked < len(at.button):
        at.button[clicked].click().run(timeout=TIMEOUT)
        no_exception(at)
        clicked += 1
    return clicked


@pytest.mark.parametrize("mode,public", [("token", False), ("users", True)])
def test_without_a_sign_in_no_button_changes_anything(seeded, db_conn, users_file, monkeypatch, mode, public):
    """Nobody signed in, every button of every page clicked: no audited table changes. Without
    UI_PUBLIC_READ a page shows the sign-in only; with it, the pages render and every action form
    is replaced by a notice."""
    monkeypatch.setenv("UI_AUTH", mode)
    monkeypatch.setenv("UI_USERS_FILE", str(users_file))
    monkeypatch.setenv("UI_PUBLIC_READ", str(public).lower())
    before = audited_rows(db_conn)
    assert before["alert_actions"] == [] and before["pipeline_runs"] and before["model_decisions"]
    for page in PAGES:
        at = run_page(page, token=False)
        no_exception(at)
        titles = [t.value for t in at.title]
        assert (titles != [SIGN_IN]) is public, (page, titles)
        assert not any(b.key and b.key.endswith("_submit") and b.key != "signin_submit" for b in at.button), page
        if public and page in ("pages/3_Operations.py", "pages/5_Alerts_Dashboard.py", "pages/6_Labelling.py"):
            assert "Sign in to act" in texts(at), page
        assert click_every_button(at) >= 1, page  # at least the sign-in's
        assert signed_in_as(at) is None, page
    assert audited_rows(db_conn) == before


def test_a_wrong_token_or_password_is_refused(users_file, monkeypatch):
    at = AppTest.from_file(str(APP / "pages/4_Drift.py"), default_timeout=60)
    at.query_params["token"] = TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B")
    at.run(timeout=TIMEOUT)
    assert "This sign-in token is not valid" in texts(at) and signed_in_as(at) is None
    assert "token" not in at.query_params  # taken out of the address bar, right or wrong
    assert [t.value for t in at.title] == [SIGN_IN]
    at.text_input(key="signin_token").set_value("not-the-token")
    at.button(key="signin_submit").click().run(timeout=TIMEOUT)
    assert "This sign-in token is not valid" in texts(at) and signed_in_as(at) is None
    at.text_input(key="signin_token").set_value(TOKEN)  # the token pasted into the form
    at.button(key="signin_submit").click().run(timeout=TIMEOUT)
    no_exception(at)
    assert signed_in_as(at) == ADMIN and at.title[0].value == "Drift"
    assert f"Signed in as **{ADMIN}** (operator)" in [m.value for m in at.sidebar.markdown]

    monkeypatch.setenv("UI_AUTH", "users")
    monkeypatch.setenv("UI_USERS_FILE", str(users_file))
    at = run_page("pages/4_Drift.py")  # a token means nothing in users mode
    assert "Sign-in links are off" in texts(at) and signed_in_as(at) is None
    sign_in(at, "alice", password_of("bob"))
    assert "Wrong name or password." in texts(at) and signed_in_as(at) is None
    sign_in(at, "mallory", password_of("alice"))
    assert "Wrong name or password." in texts(at) and signed_in_as(at) is None
    sign_in(at, "alice")
    assert signed_in_as(at) == "alice" and at.title[0].value == "Drift"
    at.button(key="signout").click().run(timeout=TIMEOUT)
    assert signed_in_as(at) is None and [t.value for t in at.title] == [SIGN_IN]


def test_token_sign_in_acknowledges_an_alert_as_the_admin(seeded, db_conn):
    """The sign-in URL's identity (UI_ADMIN_NAME) is the actor of the action's audit row."""
    at = run_page("pages/5_Alerts_Dashboard.py")
    assert signed_in_as(at) == ADMIN and "token" not in at.query_params
    alert_id = at.selectbox(key="alerts_selected").value
    submit(at, "alert_ack_submit", alert_ack_note="on it: new supplier feed")
    no_exception(at)
    [(a_id, action, actor, note, params)] = query(db_conn, "SELECT alert_id, action, actor, note, params "
                                                           "FROM alert_actions")
    assert (a_id, action, actor, note) == (alert_id, "acknowledge", ADMIN, "on it: new supplier feed")
    assert params["previous_status"] == "open"
    status, details = query(db_conn, "SELECT status, details FROM alerts WHERE id = %s", (alert_id,))[0]
    assert status == "acknowledged" and details["acknowledged_by"] == ADMIN
    assert f"acknowledged by {ADMIN}" in texts(at)


def test_actions_refuse_an_empty_identity(settings):
    from mlops_cli.errors import MlopsError
    from mlops_cli.ops import alerts as ops_alerts, models as ops_models, runs as ops_runs
    from mlops_cli.ops.common import trigger

    # what the pages call with the signed-in name (trigger("ui", name)), and the retrain button
    for call in (lambda: ops_alerts.investigate(None, None, trigger("ui", " "), "note"),
                 lambda: ops_alerts.acknowledge(None, settings, 1, by=trigger("ui", ""), note=None),
                 lambda: ops_runs.load(settings, trigger("ui", None)),
                 lambda: ops_models.retrain(settings, " ", triggered_by="ui",
                                            decision=ops_models.Decision(None, "note"))):
        with pytest.raises(MlopsError, match="A signed-in identity is required"):
            call()


def test_a_users_change_and_its_audit_row_are_one(settings, conn, tmp_path):
    """No audit row without the file written, no file written without its audit row: a database
    that cannot take the row leaves the file as it was; a file that cannot be written leaves no row."""
    import psycopg2

    from mlops_cli import db, uiauth
    from mlops_cli.runs import Trigger

    path = tmp_path / "users"
    uiauth.add_user(path, "alice", "alice's password")
    before = path.read_text()
    gone = db.connect(settings)
    gone.close()
    with pytest.raises(psycopg2.InterfaceError):
        uiauth.set_user(gone, path, "bob", "bob's password", "viewer", Trigger(actor="root-admin"))
    assert path.read_text() == before
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(OSError):
        uiauth.set_user(conn, tmp_path / "not-a-folder" / "users", "bob", "bob's password", "viewer",
                        Trigger(actor="root-admin"))
    assert query(conn, "SELECT count(*) FROM ui_user_changes") == [(0,)]
    from mlops_cli.errors import MlopsError

    with pytest.raises(MlopsError, match=r"^Say who changes the control room's users \(--by NAME\)$"):
        uiauth.remove_user(conn, path, "alice", Trigger(actor=" "))
    assert path.read_text() == before

    # the connection lost after the file is written, before the commit: the file is put back (a
    # new file: taken away), and no row is left
    def lost_after_writing(step_conn, target, write):
        def write_then_lose():
            write()
            with db.connection(settings) as other:
                query(other, "SELECT pg_terminate_backend(%s)", (step_conn.get_backend_pid(),))
        return write_then_lose

    for target, expected in ((path, before), (tmp_path / "new-users", None)):
        victim = db.connect(settings)
        with pytest.raises(psycopg2.Error):
            uiauth._audited(victim, target, {"name": "bob", "change": "added", "role_before": None, "role": "viewer",
                                             "password_changed": True, "actor": "root-admin", "triggered_by": "cli"},
                            lost_after_writing(victim, target, lambda t=target: uiauth.add_user(t, "bob", "bob's pw!")))
        assert (target.read_text() if target.exists() else None) == expected
    assert query(conn, "SELECT count(*) FROM ui_user_changes") == [(0,)]


def test_add_user_writes_argon2_hashes_and_the_launch_prints_a_sign_in_url(cli, conn, tmp_path, monkeypatch):
    from mlops_cli import uiauth

    path = tmp_path / "users"
    r = cli("ui", "add-user", "alice", "--file", path, "--password-stdin", input="correct horse\n")
    assert r.exit_code == 0 and f"added alice (operator) in {path}" in r.output  # operator by default
    r = cli("ui", "add-user", "bob", "--file", path, "--role", "viewer",
            input="battery staple\nbattery staple\n")  # prompted twice
    assert r.exit_code == 0 and f"added bob (viewer) in {path}" in r.output, r.output
    r = cli("ui", "add-user", "alice", "--file", path, "--password-stdin", input="new password\n")
    assert f"changed the password of alice in {path} (operator)" in r.output
    r = cli("ui", "add-user", "bob", "--file", path, "--password-stdin", input="battery staple\n")
    assert f"changed the password of bob in {path} (viewer)" in r.output  # keeps its role
    r = cli("ui", "add-user", "bob", "--file", path, "--password-stdin", "--role", "labeller", input="battery 2\n")
    assert f"changed the password of bob in {path}; role viewer -> labeller" in r.output
    assert (path.stat().st_mode & 0o777) == 0o600
    # each change audited in PostgreSQL, under who made it (--by, else MLOPS_ACTOR, else user@host)
    r = cli("ui", "add-user", "erin", "--file", path, "--password-stdin", "--role", "viewer", "--by", "root-admin",
            input="erin's password\n")
    assert r.exit_code == 0, r.output
    r = cli("ui", "remove-user", "erin", "--file", path, "--by", "root-admin")
    assert r.exit_code == 0 and r.output == f"removed erin (viewer) from {path}\n"
    r = cli("ui", "remove-user", "erin", "--file", path)
    assert r.exit_code == 1 and r.output == f"Error: No control room user 'erin' in {path}\n"
    assert query(conn, "SELECT name, change, role_before, role, password_changed, users_file, triggered_by "
                       "FROM ui_user_changes ORDER BY id") == [
        ("alice", "added", None, "operator", True, str(path), "cli"),
        ("bob", "added", None, "viewer", True, str(path), "cli"),
        ("alice", "changed", "operator", "operator", True, str(path), "cli"),
        ("bob", "changed", "viewer", "viewer", True, str(path), "cli"),
        ("bob", "changed", "viewer", "labeller", True, str(path), "cli"),
        ("erin", "added", None, "viewer", True, str(path), "cli"),
        ("erin", "removed", "viewer", None, False, str(path), "cli")]
    assert [a for a, in query(conn, "SELECT actor FROM ui_user_changes WHERE name = 'erin'")] == ["root-admin"] * 2
    # a name the system writes as its own actor is refused
    r = cli("ui", "add-user", "cron", "--file", path, "--password-stdin", input="long enough\n")
    assert r.exit_code == 1 and "Invalid user name 'cron': reserved, it is the actor of the scheduler's runs" in r.output
    users = uiauth.read_users(path)
    assert {n: u.role for n, u in users.items()} == {"alice": "operator", "bob": "labeller"}
    assert all(u.hash.startswith("$argon2id$") for u in users.values())
    assert "new password" not in path.read_text() and "battery" not in path.read_text()
    for bad, message in ((("a:b",), "Invalid user name"), (("carol", ), "at least 8 characters"),
                         (("carol", "--role", "admin"), "Invalid value for '--role'")):
        r = cli("ui", "add-user", *bad, "--file", path, "--password-stdin", input="short\n")
        assert r.exit_code in (1, 2) and message in r.output, r.output
    # a line of the format before roles is an operator; an unknown role or a broken line is refused
    old_line = f"olga:{uiauth.hash_password('olga password')}"
    path.write_text(path.read_text() + old_line + "\n")
    assert uiauth.read_users(path)["olga"].role == "operator"
    path.write_text(path.read_text() + old_line.replace("olga:", "oleg:root:") + "\n")
    r = cli("ui", "add-user", "carol", "--file", path, "--password-stdin", input="long enough\n")
    assert r.exit_code == 1 and (f"{path}:6: unknown role 'root' (expected one of: viewer, labeller, operator)"
                                 in r.output), r.output
    path.write_text(path.read_text().replace("oleg:root:", "oleg:viewer:") + "broken line\n")
    r = cli("ui", "add-user", "carol", "--file", path, "--password-stdin", input="long enough\n")
    assert r.exit_code == 1 and f"{path}:7: expected `name:role:$argon2id$...`" in r.output, r.output

    monkeypatch.setenv("UI_AUTH", "users")
    monkeypatch.setenv("UI_USERS_FILE", str(tmp_path / "users2"))
    s = config.load_settings()
    assert uiauth.prepare_launch(s, "0.0.0.0", 8501) == (
        {}, [f"Control room sign-in: {tmp_path / 'users2'} has no user yet: create one with "
             "`mlops ui add-user NAME`."])
    uiauth.add_user(tmp_path / "users2", "dave", "long enough")
    assert uiauth.prepare_launch(s, "0.0.0.0", 8501)[1] == [
        f"Control room sign-in: 1 user(s) in {tmp_path / 'users2'} (`mlops ui add-user NAME --role ROLE` adds or "
        "changes one)."]
    assert uiauth.sign_in_with_password(s, "dave", "long enough").name == "dave"
    with pytest.raises(uiauth.SignInRefused, match="Wrong name or password"):
        uiauth.sign_in_with_password(s, "dave", "long enougH")

    monkeypatch.setenv("UI_AUTH", "token")
    monkeypatch.delenv("UI_TOKEN")
    s = config.load_settings()
    env1, lines = uiauth.prepare_launch(s, "0.0.0.0", 8502)
    env2, _ = uiauth.prepare_launch(s, "0.0.0.0", 8502)
    assert env1["UI_TOKEN"] != env2["UI_TOKEN"] and len(env1["UI_TOKEN"]) >= 40  # a new one per start
    assert f"http://localhost:8502/?token={env1['UI_TOKEN']}" in "\n".join(lines)
    monkeypatch.setenv("UI_AUTH", "oidc")
    with pytest.raises(Exception, match="Invalid value for UI_AUTH"):
        uiauth.prepare_launch(config.load_settings(), "127.0.0.1", 8501)


# --- sessions, roles, throttling, escaping, the Load form ---------------------------------------------------
ENDED = "Your sign-in ended: {}: sign in again."


def warnings(at: AppTest) -> list[str]:
    return [shown(w.value) for w in at.warning]


def own_users(tmp_path, monkeypatch, **roles) -> Path:
    """A users file of this test only (name=role), UI_AUTH=users."""
    from mlops_cli import uiauth

    path = tmp_path / "ui-users"
    for name, role in roles.items():
        uiauth.add_user(path, name, password_of(name), role=role)
    monkeypatch.setenv("UI_AUTH", "users")
    monkeypatch.setenv("UI_USERS_FILE", str(path))
    return path


def sign_ins(conn) -> list[tuple]:
    return query(conn, "SELECT name, method, ok, role, reason FROM ui_sign_ins ORDER BY id")


def test_a_sign_in_ends_after_ui_session_hours(conn):
    at = run_page("pages/3_Operations.py")
    assert signed_in_as(at) == ADMIN
    signed = dict(at.session_state["signed_in"])
    at.session_state["signed_in"] = {**signed, "signed_at": signed["signed_at"] - 11.9 * 3600}
    at.run(timeout=TIMEOUT)
    assert signed_in_as(at) == ADMIN and warnings(at) == []  # 11.9 h old: still holds
    at.session_state["signed_in"] = {**signed, "signed_at": signed["signed_at"] - 12.1 * 3600}
    at.button(key="ops_evaluate_submit").click().run(timeout=TIMEOUT)  # submitted by the expired session
    no_exception(at)
    assert signed_in_as(at) is None and [t.value for t in at.title] == [SIGN_IN]
    assert warnings(at) == [ENDED.format("it is older than 12 h (UI_SESSION_HOURS)")]
    assert runs_by(conn, "evaluate") == []  # the action did not run
    assert sign_ins(conn) == [(ADMIN, "token", True, "operator", None)]


def test_a_sign_in_ends_when_its_user_is_removed_or_changed(conn, tmp_path, monkeypatch):
    """Removing the user's line, changing its password or its role ends its open session at its
    next page run, before any action of that run."""
    from mlops_cli import uiauth

    path = own_users(tmp_path, monkeypatch, alice="operator", bob="operator")
    at = sign_in(run_page("pages/3_Operations.py", token=False), "alice")
    submit(at, "ops_evaluate_submit")
    assert [r[1:4] for r in runs_by(conn, "evaluate")] == [("skipped", "ui", "alice")]
    uiauth.add_user(path, "bob", password_of("bob"))  # someone else changed: alice's session holds
    at.run(timeout=TIMEOUT)
    assert signed_in_as(at) == "alice" and warnings(at) == []

    path.write_text("\n".join(line for line in path.read_text().splitlines()
                              if not line.startswith("alice:")) + "\n")
    submit(at, "ops_evaluate_submit")
    assert signed_in_as(at) is None and [t.value for t in at.title] == [SIGN_IN]
    assert warnings(at) == [ENDED.format("alice is no longer in the users file")]
    assert len(runs_by(conn, "evaluate")) == 1

    uiauth.add_user(path, "alice", password_of("alice"))
    sign_in(at, "alice")
    uiauth.add_user(path, "alice", "another password")
    submit(at, "ops_evaluate_submit")
    assert signed_in_as(at) is None
    assert warnings(at) == [ENDED.format("the password or the role of alice changed")]

    uiauth.add_user(path, "alice", password_of("alice"))
    sign_in(at, "alice")
    line = next(x for x in path.read_text().splitlines() if x.startswith("alice:"))
    path.write_text(path.read_text().replace(line, line.replace(":operator:", ":viewer:")))  # same password
    at.run(timeout=TIMEOUT)
    assert signed_in_as(at) is None
    assert warnings(at) == [ENDED.format("the password or the role of alice changed")]
    assert len(runs_by(conn, "evaluate")) == 1
    sign_in(at, "alice")  # signs in again, now as a viewer
    assert at.session_state["signed_in"]["role"] == "viewer"


def test_a_token_sign_in_ends_when_the_token_changes(monkeypatch):
    at = run_page("pages/4_Drift.py")
    assert signed_in_as(at) == ADMIN
    monkeypatch.setenv("UI_TOKEN", TOKEN + "-rotated")
    at.run(timeout=TIMEOUT)
    assert signed_in_as(at) is None
    assert warnings(at) == [ENDED.format("the sign-in token (UI_TOKEN) or UI_ADMIN_NAME changed")]


def test_roles_decide_which_forms_a_person_gets(seeded, db_conn, users):
    """A viewer reads and gets the role needed in place of every form; a labeller labels but gets
    no operator form; nothing they click writes a row."""
    before = audited_rows(db_conn)
    at = sign_in(run_page("Home.py", token=False), "victor")
    at.switch_page("pages/3_Operations.py").run(timeout=TIMEOUT)
    no_exception(at)
    assert not any(b.key and b.key.startswith("ops_") for b in at.button)
    infos = [shown(i.value) for i in at.info]
    for what in ("loading a batch", "training", "evaluating", "promoting a version"):
        assert f"victor is a viewer: {what} needs the operator role" in infos, infos
    assert "Signed in as **victor** (viewer)" in [m.value for m in at.sidebar.markdown]

    at.switch_page("pages/6_Labelling.py").run(timeout=TIMEOUT)
    assert not any(b.key == "labelling_submit" for b in at.button)
    assert "victor is a viewer: labelling needs the labeller role" in texts(at)
    # shown to a viewer is not offered: performance drift keeps counting labels given on them
    assert query(db_conn, "SELECT count(*) FROM labelling_offers") == [(0,)]

    sign_in(at, "lena")
    at.switch_page("pages/5_Alerts_Dashboard.py").run(timeout=TIMEOUT)
    no_exception(at)
    assert not any(b.key and b.key.startswith("alert_") and b.key.endswith("_submit") for b in at.button)
    for what in ("forcing a retrain", "recording an investigation", "acknowledging an alert",
                 "changing the thresholds", "rolling back"):
        assert f"lena is a labeller: {what} needs the operator role" in texts(at), what
    assert audited_rows(db_conn) == before

    at.switch_page("pages/6_Labelling.py").run(timeout=TIMEOUT)
    item = at.selectbox(key="labelling_item").value
    assert query(db_conn, "SELECT offered_to FROM labelling_offers WHERE inference_id = %s", (item,)) == [("lena",)]
    submit(at, "labelling_submit", labelling_code=2583)
    no_exception(at)
    assert query(db_conn, "SELECT inference_id, submitted_by FROM feedback ORDER BY id DESC LIMIT 1") == [
        (item, "lena")]


def _action_page():
    """A page whose one button goes through common.run_action as an operator action (for the
    second check: a form shown to someone who may not use it)."""
    import os
    import sys

    sys.path.insert(0, os.environ["MLOPS_TEST_APP_DIR"])
    import common
    import streamlit as st

    from mlops_cli import access

    if st.button("act", key="act"):
        common.run_action("test_result_act", lambda: {"ok": True, "status": "done", "message": "it ran"},
                          action=access.OPERATE, what="this test action")
    common.show_result(st.session_state.get("test_result_act"))


def test_run_action_refuses_a_role_that_does_not_allow_the_action(users, monkeypatch):
    from mlops_cli import uiauth

    settings = config.load_settings()  # UI_AUTH=users

    monkeypatch.setenv("MLOPS_TEST_APP_DIR", str(APP))
    for name, expected in (("victor", "victor is a viewer: this test action needs the operator role"),
                           ("lena", "lena is a labeller: this test action needs the operator role"),
                           ("alice", None)):
        at = AppTest.from_function(_action_page, default_timeout=60)
        at.session_state["signed_in"] = uiauth.sign_in_with_password(settings, name, password_of(name)).as_dict()
        at.run(timeout=TIMEOUT)
        at.button(key="act").click().run(timeout=TIMEOUT)
        no_exception(at)
        if expected is None:
            assert [s.value for s in at.success] == ["done: it ran"]
        else:
            assert [shown(e.value) for e in at.error] == [expected] and not at.success
            assert "test_result_act" not in at.session_state


def test_sign_ins_are_recorded_and_throttled_after_five_refusals(conn, tmp_path, monkeypatch):
    own_users(tmp_path, monkeypatch, alice="operator", bob="labeller")
    at = run_page("pages/4_Drift.py", token=False)
    sign_in(at, "mallory", "whatever-it-is")
    for i in range(5):
        sign_in(at, "alice", f"guess-{i}")
        assert shown(at.error[0].value) == "Wrong name or password.", i
    sign_in(at, "alice")  # the right password, during the pause: not even checked
    [(latest,)] = query(conn, "SELECT max(at) FROM ui_sign_ins WHERE name = 'alice' AND reason = 'wrong password'")
    until = latest.astimezone(timezone.utc) + timedelta(seconds=30)
    until = until.replace(microsecond=0) + timedelta(seconds=1 if until.microsecond else 0)
    assert signed_in_as(at) is None
    assert [shown(e.value) for e in at.error] == [
        f"Too many refused sign-ins for alice from this address: try again after {until:%H:%M:%S} UTC."]
    sign_in(at, "bob")  # another name is not held up
    assert signed_in_as(at) == "bob"
    assert sign_ins(conn) == (
        [("mallory", "password", False, None, "unknown name")]
        + [("alice", "password", False, None, "wrong password")] * 5
        + [("alice", "password", False, None, "throttled"), ("bob", "password", True, "labeller", None)])

    # 31 s later (the attempt refused during the pause did not lengthen it): alice may try, and a
    # success resets
    query_exec(conn, "UPDATE ui_sign_ins SET at = at - interval '31 seconds'")
    sign_in(at, "alice")
    assert signed_in_as(at) == "alice"
    sign_in(at, "alice", "one more typo")
    assert shown(at.error[0].value) == "Wrong name or password."
    assert sign_ins(conn)[-2:] == [("alice", "password", True, "operator", None),
                                   ("alice", "password", False, None, "wrong password")]


def test_the_pause_is_the_failing_addresss_not_the_names_for_everyone(conn, tmp_path, monkeypatch):
    """Someone who can reach the page and fails five times as alice pauses alice from their
    address only: alice signs in from hers. Guessing spread over many addresses pauses the name
    for everyone after NAME_MAX_FAILURES."""
    from mlops_cli import uiauth

    own_users(tmp_path, monkeypatch, alice="operator")
    s = config.load_settings()
    for i in range(uiauth.MAX_FAILURES):
        with pytest.raises(uiauth.SignInRefused, match="^Wrong name or password.$"):
            uiauth.sign_in_with_password(s, "alice", f"guess-{i}", client="203.0.113.7")
    with pytest.raises(uiauth.SignInRefused, match="^Too many refused sign-ins for alice from this address: "):
        uiauth.sign_in_with_password(s, "alice", password_of("alice"), client="203.0.113.7")
    assert uiauth.sign_in_with_password(s, "alice", password_of("alice"), client="198.51.100.2").name == "alice"
    assert query(conn, "SELECT client, ok, reason FROM ui_sign_ins ORDER BY id")[-2:] == [
        ("203.0.113.7", False, "throttled"), ("198.51.100.2", True, None)]
    # her success elsewhere does not reset the other address's count
    with pytest.raises(uiauth.SignInRefused, match="from this address"):
        uiauth.sign_in_with_password(s, "alice", "guess-again", client="203.0.113.7")
    for i in range(uiauth.NAME_MAX_FAILURES):  # four guesses from each of many addresses
        with pytest.raises(uiauth.SignInRefused, match="^Wrong name or password.$"):
            uiauth.sign_in_with_password(s, "alice", f"spread-{i}", client=f"192.0.2.{i // 4}")
    with pytest.raises(uiauth.SignInRefused, match="^Too many refused sign-ins for alice: try again after "):
        uiauth.sign_in_with_password(s, "alice", password_of("alice"), client="198.51.100.2")


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("10.0.0.5", ["1.2.3.4"], "1.2.3.4"),                      # through the trusted proxy
    ("10.0.0.5", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),             # the client wrote 6.6.6.6: not believed
    ("10.0.0.5", ["6.6.6.6", "1.2.3.4, 10.0.0.7"], "1.2.3.4"),  # two trusted hops, header given twice
    ("10.0.0.5", ["not-an-address, 10.0.0.9"], "10.0.0.9"),    # stop at the last hop a proxy wrote
    ("10.0.0.5", [], "10.0.0.5"),                              # a proxy that forwards nothing
    ("::ffff:10.0.0.5", ["2001:db8::1"], "2001:db8::1"),       # an IPv4-mapped peer is the IPv4 one
    ("8.8.8.8", ["1.2.3.4"], "8.8.8.8"),                       # not a trusted proxy: the header is ignored
    (None, ["1.2.3.4"], "1.2.3.4"),                            # Streamlit's loopback (a proxy on this host)
    (None, [], None),
])
def test_the_address_behind_a_trusted_proxy(peer, forwarded, expected):
    """With UI_TRUSTED_PROXIES, the sign-in's address is the nearest X-Forwarded-For hop that is not
    a trusted proxy: the client chooses what stands left of it, never that hop."""
    from mlops_cli import uiauth

    trusted = config.load_settings({"UI_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}).ui_trusted_proxies
    assert uiauth.client_address(peer, forwarded, trusted) == expected
    assert uiauth.client_address(peer, forwarded, ()) == peer  # no trusted proxy: never the header


def query_exec(conn, sql, params=None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)
    conn.commit()


def test_a_sign_in_is_refused_when_the_database_is_unreachable(tmp_path, monkeypatch):
    own_users(tmp_path, monkeypatch, alice="operator")
    at = run_page("pages/4_Drift.py", token=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    sign_in(at, "alice")
    assert signed_in_as(at) is None
    assert [shown(e.value) for e in at.error] == [
        "Sign-in is unavailable: the database, where every sign-in is checked and recorded, cannot be reached"
        " (a service is unreachable: try again in a moment)"]


def test_a_short_ui_token_is_refused(conn, monkeypatch):
    from mlops_cli import access, uiauth

    monkeypatch.setenv("UI_TOKEN", "only-15-chars!!")
    message = access.weak_secret("UI_TOKEN", "only-15-chars!!")
    assert message.startswith("UI_TOKEN is too short (15 characters, at least 16)")
    at = AppTest.from_file(str(APP / "Home.py"), default_timeout=60)
    at.query_params["token"] = "only-15-chars!!"
    at.run(timeout=TIMEOUT)
    assert signed_in_as(at) is None and [shown(e.value) for e in at.error] == [message]
    assert sign_ins(conn) == [(ADMIN, "token", False, None, "UI_TOKEN too short")]
    assert uiauth.prepare_launch(config.load_settings(), "127.0.0.1", 8501) == (
        {}, [f"Control room sign-in refused: {message}."])
    monkeypatch.setenv("UI_TOKEN", "sixteen-chars-ok")
    at.query_params["token"] = "sixteen-chars-ok"
    at.run(timeout=TIMEOUT)
    assert signed_in_as(at) == ADMIN


LINK = "[**Session expired: sign in again**](https://evil.example/login)"
UNESCAPED_MARKUP = re.compile(r"(?<!\\)(\]\(|https?:|\*\*Session)")


def test_stored_free_text_is_shown_as_text_not_markdown(conn, monkeypatch):
    """An actor name, a message and an error written by someone else (here: through the library,
    as the API writes them) render as typed: no link, no bold, on Home and the run's detail."""
    from mlops_cli.runs import Trigger, record_skip

    run = record_skip(conn, Trigger(triggered_by="api", actor=LINK, pipeline="weekly"), "pipeline",
                      f"skipped: see {LINK} or www.evil.example")
    at = run_page("Home.py")
    no_exception(at)
    raw = raw_texts(at)
    assert f"api:{LINK}" in shown(raw) and f"see {LINK} or www.evil.example" in shown(raw)
    assert "evil.example" in raw and not UNESCAPED_MARKUP.search(raw), raw

    at.switch_page("pages/1_Pipeline_Runs.py").run(timeout=TIMEOUT)
    at.selectbox(key="runs_detail").set_value(run.pipeline_run_id).run(timeout=TIMEOUT)
    no_exception(at)
    raw = raw_texts(at)
    assert f"actor **{LINK}**" in shown(raw) and not UNESCAPED_MARKUP.search(raw.replace("actor **", "")), raw


def test_the_load_form_reads_only_files_in_the_data_directory(conn, small_catalogue, tmp_path, monkeypatch):
    """A path outside the folder of MLOPS_X_PATH / MLOPS_Y_PATH (absolute, '..', or a symlink
    leading out) is refused before anything reads it, with a message that says nothing of the file;
    inside it, a file whose error would quote NUL bytes ends as a failed run."""
    data = tmp_path / "data"
    data.mkdir()
    x, y = data / "X.csv", data / "Y.csv"
    shutil.copy(small_catalogue[0], x)
    shutil.copy(small_catalogue[1], y)
    (data / "out.csv").symlink_to("/etc/passwd")
    monkeypatch.setenv("MLOPS_X_PATH", str(x))
    monkeypatch.setenv("MLOPS_Y_PATH", str(y))
    refused = (f"X file refused: the control room loads only files in the folder of MLOPS_X_PATH or "
               f"MLOPS_Y_PATH ({data.resolve()}); load any other file with `mlops load --x-path ... --y-path ...`")
    at = run_page("pages/3_Operations.py")
    for path in ("/etc/shadow", "/no/such/file", str(data / ".." / ".." / "secret.env"), str(data / "out.csv")):
        submit(at, "ops_load_submit", ops_load_x=path, ops_load_y=str(y))
        no_exception(at)
        assert [shown(e.value) for e in at.error] == [refused], path
    submit(at, "ops_load_submit", ops_load_x=str(x), ops_load_y="/etc/passwd")
    assert [shown(e.value) for e in at.error] == [refused.replace("X file", "Y file")]
    assert runs_by(conn, "load") == []

    (data / "binary.csv").write_bytes(b"id,desig\x00nation\n1,a\n")
    submit(at, "ops_load_submit", ops_load_x=str(data / "binary.csv"), ops_load_y=str(y))
    no_exception(at)
    [(_, status, by, actor, _, params, _, error)] = runs_by(conn, "load")
    assert (status, by, actor) == ("failed", "ui", ADMIN) and "desig\\x00nation" in error, error
