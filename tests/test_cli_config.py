"""Configuration, documentation coverage, the embedded default, and the CLI surface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from conftest import REPO, query
from mlops_cli import config
from mlops_cli.cli import main
from mlops_cli.errors import MlopsError


def test_settings_from_env_and_dotenv_with_env_winning(tmp_path):
    (tmp_path / ".env").write_text('LOAD_FRACTION=0.05\nMODEL_NAME="from-dotenv"\nALERT_ENABLED=false\n')
    s = config.load_settings({"MODEL_NAME": "from-env"}, dotenv=tmp_path / ".env")
    assert s.load_fraction == 0.05 and s.model_name == "from-env" and s.alert_enabled is False
    assert config.load_settings({}, dotenv=tmp_path / "missing").home == Path(".mlops")


@pytest.mark.parametrize("env, message", [
    ({"LOAD_FRACTION": "abc"}, "Invalid value for LOAD_FRACTION: 'abc'"),
    ({"ALERT_ENABLED": "maybe"}, "Invalid value for ALERT_ENABLED: 'maybe' (expected true/false"),
    ({"LOAD_FRACTION": "1.5"}, "LOAD_FRACTION and INITIAL_LOAD_FRACTION must be in (0, 1]"),
    ({"SMTP_SECURITY": "foo"}, "SMTP_SECURITY must be starttls, ssl or plain, not 'foo'"),
    # a limit a typo would turn into "every row rejected" (the load would still succeed)
    ({"MAX_TITLE_CHARS": "0"}, "MAX_TITLE_CHARS must be at least 1, not 0"),
    ({"MAX_DESCRIPTION_CHARS": "-1"}, "MAX_DESCRIPTION_CHARS must be at least 1, not -1"),
    ({"DRIFT_MIN_SAMPLES": "0"}, "DRIFT_MIN_SAMPLES must be at least 1, not 0"),
    ({"ALERT_COOLDOWN_HOURS": "-2"}, "ALERT_COOLDOWN_HOURS must be at least 0, not -2.0"),
    ({"API_PORT": "70000"}, "API_PORT and SMTP_PORT must be in 1..65535"),
    ({"UI_SESSION_HOURS": "0"}, "UI_SESSION_HOURS must be above 0"),
    # the actors of the shared secrets: a reserved name would make their actions read as another's
    ({"API_TOKEN_NAME": "cron"}, "API_TOKEN_NAME: Invalid user name 'cron': reserved, it is the actor of the "
                                 "scheduler's runs"),
    ({"UI_ADMIN_NAME": "unauthenticated"}, "UI_ADMIN_NAME: Invalid user name 'unauthenticated': reserved"),
    ({"UI_ADMIN_NAME": "Jean Dupont"}, "UI_ADMIN_NAME: Invalid user name 'Jean Dupont': 1 to 64 letters"),
    ({"UI_TRUSTED_PROXIES": "10.0.0.0/8, proxy.local"},
     "Invalid value for UI_TRUSTED_PROXIES: '10.0.0.0/8, proxy.local' ('proxy.local' is not an IP address or "
     "network (like 10.0.0.0/8))"),
])
def test_bad_settings_name_the_variable(env, message, tmp_path):
    with pytest.raises(MlopsError) as info:
        config.load_settings(env, dotenv=tmp_path / "none")
    assert message in str(info.value)


def test_bad_setting_via_the_cli_is_a_clean_error(cli, monkeypatch):
    monkeypatch.setenv("LOAD_FRACTION", "abc")
    r = cli("runs")
    assert r.exit_code == 1 and r.output.startswith("Error: Invalid value for LOAD_FRACTION: 'abc'")


@pytest.mark.parametrize("error, code", [("NotFound", 1), ("Conflict", 1), ("Invalid", 1), ("SourceError", 1),
                                         ("AlreadyRunning", 1), ("Unavailable", 75), ("TransientError", 75),
                                         ("TimedOut", 1)])
def test_domain_errors_exit_with_the_code_of_their_kind(error, code):
    """cli.domain_errors maps an error's code to an exit code (cli.EXIT_CODES), never its text; the
    message is the error's, exactly. A failed step exits by its cause's code."""
    from click.testing import CliRunner

    from mlops_cli import errors
    from mlops_cli.cli import EXIT_CODES, domain_errors
    from mlops_cli.runs import StepFailed, StepResult

    cls = getattr(errors, error)

    @click.command()
    @click.option("--step", is_flag=True)
    @domain_errors
    def command(step):
        if step:
            raise StepFailed(StepResult("load", "failed", 3, "could not read"), cls("cause"))
        raise cls("No alert 42: could not connect")  # the text names neither kind nor code

    r = CliRunner().invoke(command, [])
    assert (r.exit_code, r.output) == (code, "Error: No alert 42: could not connect\n")
    assert EXIT_CODES[cls.code] == code
    r = CliRunner().invoke(command, ["--step"])
    assert (r.exit_code, r.output) == (code, "Error: load failed (run #3): could not read\n")
    # the cron image logs JSON: the error is one JSON line of the same stream, with its kind
    r = CliRunner().invoke(command, ["--step"], env={"MLOPS_LOG_FORMAT": "json"})
    line = json.loads(r.output)
    assert r.exit_code == code and (line["level"], line["message"], line["error_code"], line["exit_code"]) == (
        "ERROR", "load failed (run #3): could not read", cls.code, code)


def test_an_unknown_alert_is_a_clear_cli_error(cli, conn):
    r = cli("alerts", "ack", 999999, "--by", "alice")
    assert (r.exit_code, r.output) == (1, "Error: No alert 999999\n")
    # a rollback answering an alert checks the alert first: nothing runs for an unknown one
    r = cli("rollback", "--reason", "drift", "--alert-id", 999999)
    assert (r.exit_code, r.output) == (1, "Error: No alert 999999\n")
    assert query(conn, "SELECT count(*) FROM pipeline_runs") == [(0,)]


def test_a_required_by_that_is_blank_is_refused_and_nothing_runs(cli, conn):
    """`--by` is required to approve and to force a retrain: a blank one is refused, not replaced
    by MLOPS_ACTOR or user@host (which recorded the action under a name nobody gave)."""
    for args in (("approve", "1", "--reason", "looks good", "--by", "  "), ("pipeline", "retrain", "--by", " ")):
        r = cli(*args)
        assert (r.exit_code, r.output) == (1, "Error: Say who takes the action (--by NAME)\n"), args
    assert query(conn, "SELECT count(*) FROM pipeline_runs") == [(0,)]


def test_an_unknown_mlops_triggered_by_is_a_clean_error(cli, conn, monkeypatch):
    """MLOPS_TRIGGERED_BY set to a scheduler's name the audit trail does not know: a clear error
    naming the variable, exit 1, nothing run. Before, a traceback from every step command."""
    monkeypatch.setenv("MLOPS_TRIGGERED_BY", "airflow")
    r = cli("pipeline", "daily")
    assert (r.exit_code, r.output) == (1, "Error: MLOPS_TRIGGERED_BY must be one of cron, cli, api, ui, got "
                                          "'airflow'\n")
    assert query(conn, "SELECT count(*) FROM pipeline_runs") == [(0,)]


def test_train_prints_its_result_as_one_json_line_when_the_logs_are_json(cli, small_catalogue, monkeypatch):
    """MLOPS_LOG_FORMAT=json (the cron image): `mlops train` prints its result as one JSON line,
    like every other step command. Before, the bare MLflow run id, which a log shipper could not parse."""
    x, y = small_catalogue
    assert cli("load", "--x-path", x, "--y-path", y).exit_code == 0
    monkeypatch.setenv("MLOPS_LOG_FORMAT", "json")
    r = cli("train", "--param", "word_max_features=500", "--param", "char_max_features=500")
    assert r.exit_code == 0, r.output
    [line] = [json.loads(text) for text in r.stdout.splitlines() if text.strip()]
    assert (line["step"], line["status"]) == ("train", "succeeded") and line["outputs"]["mlflow_run_id"]


def test_an_output_path_that_cannot_be_written_is_a_clean_error(cli, tmp_path):
    """generate-data and crontab render into a folder that cannot be made: a clear error naming
    the path, exit 1. Before, a Python traceback."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    r = cli("generate-data", "--rows", "5", "--out", blocked / "catalogue")
    assert (r.exit_code, r.output) == (1, f"Error: Cannot write the catalogue in {blocked / 'catalogue'}: "
                                          "Not a directory\n")
    r = cli("crontab", "render", "--out", blocked / "crontab")
    assert (r.exit_code, r.output) == (1, f"Error: Cannot write {blocked / 'crontab'}: Not a directory\n")


def test_every_setting_is_documented():
    example = (REPO / ".env.example").read_text()
    configuration = (REPO / "docs" / "CONFIGURATION.md").read_text()
    for var, _name, default in config.env_variables():
        assert f"\n{var}=" in example, f"{var} missing from .env.example"
        assert f"`{var}`" in configuration, f"{var} missing from docs/CONFIGURATION.md"


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


def test_every_command_has_help_and_is_in_the_readme(cli):
    readme = (REPO / "README.md").read_text()
    for path in _commands(main):
        r = cli(*path, "--help")
        assert r.exit_code == 0, path
        assert "Usage: main " + " ".join(path) in r.output or "Usage: mlops " + " ".join(path) in r.output
        assert f"mlops {path[0]}" in readme, f"`mlops {path[0]}` is not in README.md"


def test_help_is_fast_and_does_not_import_heavy_libraries():
    code = ("import sys, mlops_cli.cli as c\n"
            "from click.testing import CliRunner\n"
            "CliRunner().invoke(c.main, ['--help'])\n"
            "print(','.join(m for m in ('mlflow', 'sklearn', 'pandas', 'psycopg2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_embedded_default_starts_a_real_server_and_db_commands_work(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["MLOPS_HOME"] = str(tmp_path / "home")

    def mlops(*args):
        return subprocess.run([sys.executable, "-m", "mlops_cli.cli", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    try:
        url = mlops("db", "url")
        assert url.returncode == 0, url.stderr
        assert url.stdout.strip().startswith("postgresql://postgres:@/mlops?host=")
        init = mlops("db", "init")
        assert init.returncode == 0 and "applied: 001_foundation" in init.stdout
        again = mlops("db", "init")
        assert again.stdout.strip() == "schema is up to date"
        psql = subprocess.run(["psql", url.stdout.strip(), "-Atc", "SELECT count(*) FROM schema_migrations"],
                              capture_output=True, text=True)
        if psql.returncode == 0:  # psql is optional on the machine; the URL must work with it
            assert int(psql.stdout) >= 4
        status = mlops("db", "status")
        assert "(embedded)" in status.stdout and "products: 0" in status.stdout
    finally:
        stop = mlops("db", "stop")
    assert stop.stdout.strip() == "embedded PostgreSQL stopped"


def test_db_stop_refuses_an_external_database(cli):
    r = cli("db", "stop")
    assert r.exit_code == 1
    assert "Error: DATABASE_URL is set: the database is external, nothing to stop" in r.output


def test_runs_table_and_json(cli, conn, tmp_path):
    assert cli("runs").output.strip() == "no pipeline runs yet"
    from test_load import valid_rows, write_pair

    x, y = write_pair(tmp_path / "src", valid_rows(5))
    cli("load", "--x-path", x, "--y-path", y, "--by", "alice")
    r = cli("runs")
    header, rule, row = r.output.splitlines()[:3]
    assert header.split()[:5] == ["id", "pipeline", "step", "status", "triggered"]
    assert "load" in row and "succeeded" in row and "cli:alice" in row
    data = json.loads(cli("runs", "--json").output)
    assert data[0]["step"] == "load" and data[0]["actor"] == "alice" and data[0]["outputs"]["rows_loaded"] == 2
    assert cli("runs", "--step", "train").output == "no pipeline run matches\n"
    bad = cli("runs", "--step", "bogus")
    assert bad.exit_code == 2 and "Invalid value for '--step': 'bogus' is not one of 'pipeline', 'load'" in bad.output


def test_migrations_are_numbered_recorded_and_idempotent(conn):
    from mlops_cli import db

    assert db.migrate(conn) == []
    versions = [v for v, in query(conn, "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [v for v, _n, _p in db.migration_files()]
