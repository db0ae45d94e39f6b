"""Deployment files, checked statically (no Docker engine, no Kubernetes, no Airflow here).

crontab / crontab.template + mlops_cli.schedule, docker-compose.yml (against the Compose
Specification schema when ../shared/schemas/compose-spec.json exists, and structurally always),
the Dockerfiles and the cron entrypoint, deploy/k8s, deploy/airflow, prometheus and grafana
provisioning. Every `mlops ...` command these files run must exist in the CLI with the options
given: `test_command_exists[...]` has one case per command and per file.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from mlops_cli.config import Settings
from mlops_cli.errors import MlopsError
from mlops_cli.schedule import default_template, default_template_path, render_crontab, validate_schedule

REPO = Path(__file__).resolve().parent.parent
_SHARED_SCHEMA = Path(__file__).resolve().parents[2] / "shared/schemas/compose-spec.json"
COMPOSE_SCHEMA = _SHARED_SCHEMA if _SHARED_SCHEMA.is_file() else REPO / "tests/data/compose-spec.json"

CRONTAB = REPO / "crontab"
TEMPLATE = REPO / "mlops_cli" / "crontab.template"
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERFILE_CRON = REPO / "Dockerfile.cron"
DOCKERFILE_MLFLOW = REPO / "docker/Dockerfile.mlflow"
ENTRYPOINT = REPO / "docker/cron-entrypoint.sh"
POSTGRES_INIT = REPO / "docker/postgres-init.sql"
COMPOSE_ENV_EXAMPLE = REPO / "docker/compose.env.example"
ENV_EXAMPLE = REPO / ".env.example"
K8S = {"weekly": REPO / "deploy/k8s/weekly-cronjob.yaml", "daily": REPO / "deploy/k8s/daily-cronjob.yaml"}
AIRFLOW_DAG = REPO / "deploy/airflow/mlops_dag.py"
PROMETHEUS = REPO / "prometheus/prometheus.yml"
GRAFANA_DATASOURCES = REPO / "grafana/provisioning/datasources/datasources.yml"
GRAFANA_DASHBOARDS = REPO / "grafana/provisioning/dashboards/dashboards.yml"

SERVICES = ("postgres", "mlflow", "api", "streamlit", "cron", "prometheus", "grafana")
APP_SERVICES = ("api", "streamlit", "cron")
# supercronic v0.2.33 release binaries (DEPLOY_FACTS.md: two independent sources agree).
SUPERCRONIC_SHA1 = {"amd64": "71b0d58cc53f6bd72cf2f293e09e294b79c666d8",
                    "arm64": "e0f0c06ebc5627e43b25475711e694450489ab00"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ROUTING_KEY|WEBHOOK", re.I)
ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")  # ${VAR} or ${VAR:?msg}, no default


# --- the CLI ------------------------------------------------------------------------------------
def _check_command(argv) -> str | None:
    """None when `argv` (["mlops", ...]) names an existing command and click accepts its
    arguments; otherwise why not."""
    from mlops_cli.cli import main

    argv = [str(a) for a in argv]
    if not argv or argv[0] != "mlops":
        return f"not an mlops command: {argv!r}"
    args = argv[1:]
    while args and args[0].startswith("-"):  # options of the group itself
        opt = args.pop(0)
        if opt == "--log-format":
            args.pop(0)
        elif opt not in ("-v", "--verbose") and not opt.startswith("--log-format="):
            return f"unknown global option {opt}"
    cmd, path = main, ["mlops"]
    while isinstance(cmd, click.Group):
        if not args or args[0].startswith("-"):
            if cmd.invoke_without_command:  # a group that also runs by itself (`mlops ui --port ...`)
                break
            return f"{' '.join(path)} is a group: a subcommand is missing"
        name = args.pop(0)
        if name not in cmd.commands:
            return f"`{' '.join(path)} {name}` does not exist (have: {', '.join(sorted(cmd.commands))})"
        cmd, path = cmd.commands[name], path + [name]
    try:
        cmd.make_context(" ".join(path), list(args))  # parses options; the command does not run
    except click.ClickException as exc:
        return f"`{' '.join(argv)}`: {exc.format_message()}"
    return None


def command_exists(argv) -> bool:
    """True when argv (["mlops", "pipeline", "weekly", ...]) is a command of the CLI group
    `mlops_cli.cli.main` (nested groups resolved) and click accepts the given options."""
    return _check_command(argv) is None


def test_command_exists_helper():
    assert command_exists(["mlops", "db", "init"])
    assert command_exists(["mlops", "--log-format", "json", "runs", "--limit", "5"])
    assert not command_exists(["mlops", "db"])  # a group, not a command
    assert command_exists(["mlops", "ui", "--port", "8501"])  # a group that runs by itself too
    assert command_exists(["mlops", "ui", "add-user", "alice"])
    assert not command_exists(["mlops", "no-such-command"])
    assert not command_exists(["mlops", "db", "no-such-command"])
    assert not command_exists(["mlops", "runs", "--no-such-option"])
    assert not command_exists(["python", "-m", "mlops_cli"])


# --- small parsers --------------------------------------------------------------------------------
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def crontab_entries(text: str) -> list[tuple[str, list[str]]]:
    """(schedule, command argv) of every job line; comments, blank and VAR=value lines skipped."""
    entries = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", s):
            continue
        tokens = s.split()
        n = 1 if tokens[0].startswith("@") else next(
            (i for i in (7, 6, 5) if len(tokens) > i and tokens[i] == "mlops"), 5)
        entries.append((" ".join(tokens[:n]), shlex.split(" ".join(tokens[n:]))))
    return entries


def shell_mlops_invocations(text: str) -> list[list[str]]:
    """Every `mlops ...` command in a shell script (comment lines skipped)."""
    stops = {";", "&&", "||", "|", "&", ")", "(", "then", "do", "done", "fi", ";;"}
    found = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for i, tok in enumerate(tokens):
            if tok == "mlops":
                argv = []
                for t in tokens[i:]:
                    if t in stops:
                        break
                    argv.append(t)
                found.append(argv)
    return found


_INTERP = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def compose_variables(doc) -> dict[str, bool]:
    """{VAR: has_default} for every ${VAR} compose interpolates in `doc` ($$ escapes ignored)."""
    found: dict[str, bool] = {}
    for s in _strings(doc):
        for m in _INTERP.finditer(s):
            name = m.group("braced") or m.group("named")
            if name:
                has_default = (m.group("op") or "").lstrip(":") == "-"
                found[name] = found.get(name, False) or has_default
    return found


def interpolate(value, env: dict[str, str]):
    """Compose interpolation of every string in `value` (enough of it for these files)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg = m.group("op") or "", m.group("arg") or ""
        is_set, val = name in env, env.get(name, "")
        present = bool(val) if op.startswith(":") else is_set
        if op.endswith("-"):
            return val if present else arg
        if op.endswith("?"):
            if not present:
                raise KeyError(f"{name}: {arg}")
            return val
        if op.endswith("+"):
            return arg if present else ""
        return val

    return _INTERP.sub(sub, value)


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _as_argv(command) -> list[str]:
    return [str(c) for c in command] if isinstance(command, list) else shlex.split(str(command))


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _duration_seconds(text: str) -> float:
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", str(text))
    assert parts and "".join(a + b for a, b in parts) == str(text), f"bad duration {text!r}"
    return sum(float(a) * units[b] for a, b in parts)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") and not current:
            continue
        if line.strip().startswith("#"):
            continue  # comment inside a continued RUN
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    return out


def _exec_form_or_shell(args: str) -> list[str]:
    args = args.strip()
    return json.loads(args) if args.startswith("[") else shlex.split(args)


# --- every mlops command run by a deployment file, one test case each -----------------------------
def _compose_test_env(doc) -> dict[str, str]:
    """Values for the variables compose requires (no default), for interpolation in tests."""
    return {name: f"test-{name.lower().replace('_', '-')}" for name, has_default in compose_variables(doc).items()
            if not has_default}


def _planned_invocations() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for _schedule, argv in crontab_entries(_read(CRONTAB)):
        found.append(("crontab", argv))
    for argv in shell_mlops_invocations(_read(ENTRYPOINT)):
        found.append(("cron-entrypoint.sh", argv))
    doc = _yaml(COMPOSE) or {}
    env = _compose_test_env(doc)
    for name, service in (doc.get("services") or {}).items():
        for key in ("entrypoint", "command"):
            if service.get(key):
                argv = _as_argv(interpolate(service[key], env))
                if argv and argv[0] == "mlops":
                    found.append((f"compose-{name}", argv))
    for kind, path in K8S.items():
        manifest = _yaml(path) or {}
        containers = (manifest.get("spec", {}).get("jobTemplate", {}).get("spec", {}).get("template", {})
                      .get("spec", {}).get("containers") or [])
        for c in containers:
            found.append((f"k8s-{kind}", list(c.get("command") or []) + list(c.get("args") or [])))
    for name, value in airflow_constants().items():
        if name.endswith(("_COMMAND", "_COMMANDS")):
            for cmd in (value if isinstance(value, (list, tuple)) else [value]):
                found.append((f"airflow-{name}", shlex.split(cmd)))
    for word, args in dockerfile_instructions(_read(DOCKERFILE)):
        if word == "CMD":
            found.append(("Dockerfile-CMD", _exec_form_or_shell(args)))
    return found


def airflow_constants() -> dict[str, object]:
    """Module-level constants of the DAG file that ast.literal_eval can read."""
    if not AIRFLOW_DAG.is_file():
        return {}
    tree = ast.parse(AIRFLOW_DAG.read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


INVOCATIONS = _planned_invocations()


@pytest.mark.parametrize(
    "source,argv", INVOCATIONS, ids=[f"{s}:{' '.join(a[:3])}" for s, a in INVOCATIONS]
)
def test_command_exists(source, argv):
    problem = _check_command(argv)
    assert problem is None, f"{source} runs `{' '.join(argv)}`: {problem}"


def test_invocations_cover_every_file():
    sources = {s.split(":")[0] for s, _ in INVOCATIONS}
    for expected in ("crontab", "cron-entrypoint.sh", "compose-api", "compose-streamlit", "k8s-weekly",
                     "k8s-daily", "airflow-WEEKLY_COMMAND", "airflow-DAILY_COMMAND", "Dockerfile-CMD"):
        assert expected in sources, f"no mlops command found in {expected}"


# --- crontab ---------------------------------------------------------------------------------------
def test_crontab_jobs_parse_with_croniter_and_run_one_mlops_command():
    from croniter import croniter

    entries = crontab_entries(_read(CRONTAB))
    assert len(entries) == 2
    for schedule, argv in entries:
        assert len(schedule.split()) == 5 and croniter.is_valid(schedule), schedule
        assert argv[0] == "mlops", argv
        assert not set(argv) & {";", "&&", "||", "|", "&"}, f"more than one command: {argv}"
    assert ("0 2 * * 1", ["mlops", "pipeline", "weekly"]) in entries
    assert ("0 3 * * *", ["mlops", "pipeline", "daily"]) in entries


def test_crontab_sets_the_time_zone():
    assert re.search(r"^CRON_TZ=Europe/Paris$", _read(CRONTAB), re.M)
    assert re.search(r"^CRON_TZ=\$\{CRON_TZ\}$", _read(TEMPLATE), re.M)
    template = _read(TEMPLATE)
    assert "${WEEKLY_SCHEDULE} mlops pipeline weekly" in template
    assert "${DAILY_SCHEDULE} mlops pipeline daily" in template


def test_committed_crontab_is_the_default_rendering():
    assert render_crontab(Settings(), _read(TEMPLATE)) == _read(CRONTAB), (
        "crontab is stale: re-render it from crontab.template with the default settings")


def test_render_custom_schedules():
    s = Settings(weekly_schedule="30 3 * * SUN", daily_schedule="*/15 6-20 * * 1-5", cron_tz="UTC")
    text = render_crontab(s, _read(TEMPLATE))
    entries = crontab_entries(text)
    assert ("30 3 * * SUN", ["mlops", "pipeline", "weekly"]) in entries
    assert ("*/15 6-20 * * 1-5", ["mlops", "pipeline", "daily"]) in entries
    assert "CRON_TZ=UTC\n" in text
    assert "$" not in "".join(line for line in text.splitlines() if not line.startswith("#"))


def test_render_strips_and_accepts_year_and_seconds_forms():
    tpl = "CRON_TZ=${CRON_TZ}\n${WEEKLY_SCHEDULE} mlops pipeline weekly\n${DAILY_SCHEDULE} mlops pipeline daily"
    s = Settings(weekly_schedule="  0 2 * * 1 2030 ", daily_schedule="0 0 1 * * * *")
    text = render_crontab(s, tpl)
    assert "\n0 2 * * 1 2030 mlops pipeline weekly\n" in text
    assert "\n0 0 1 * * * * mlops pipeline daily\n" in text
    assert text.endswith("\n")
    assert validate_schedule("DAILY_SCHEDULE", "@daily") == "@daily"


def test_crontab_render_warns_of_a_time_on_either_side_of_utc_midnight(cli, monkeypatch):
    """A pipeline's slot and windows are UTC days: a run at 01:00 in Paris is on the local date
    in winter (00:00 UTC) and on the day before in summer (23:00 UTC)."""
    from mlops_cli.schedule import utc_date_shift

    r = cli("crontab", "render")
    assert r.exit_code == 0 and r.stderr == ""  # the defaults are on the same UTC date all year
    monkeypatch.setenv("DAILY_SCHEDULE", "0 1 * * *")
    r = cli("crontab", "render")
    assert r.exit_code == 0 and "\n0 1 * * * mlops pipeline daily\n" in r.stdout  # valid: still written
    assert r.stderr == (
        "Warning: DAILY_SCHEDULE '0 1 * * *' in Europe/Paris runs at 00:00 UTC in January and 23:00 UTC in "
        "July, on either side of UTC midnight: its UTC date shifts by a day at each change of clock (one "
        "day's slot is run twice, another never) and part of the year its window ends up to 23 h before "
        "the run. Choose a time on the same UTC date all year (in Europe/Paris: not 01:00 to 01:59)\n")
    assert "00:30 UTC in January and 23:30 UTC in July" in utc_date_shift("X", "30 19 * * *", "America/New_York")
    assert utc_date_shift("X", "30 19 * * *", "America/New_York").endswith("(in America/New_York: not 19:00 to 19:59)")
    assert utc_date_shift("X", "30 21 * * *", "America/New_York") is None  # the next UTC date all year
    assert utc_date_shift("X", "0 1 * * *", "UTC") is None
    assert utc_date_shift("X", "*/15 * * * *", "Europe/Paris") is None  # only plain times are checked
    assert utc_date_shift("X", "0 0 1 * * * *", "Europe/Paris") is not None  # the seconds form: 01:00


def test_render_uses_the_settings_from_the_environment(monkeypatch):
    from mlops_cli.config import load_settings

    monkeypatch.setenv("WEEKLY_SCHEDULE", "0 4 * * 2")
    monkeypatch.setenv("CRON_TZ", "America/New_York")
    text = render_crontab(load_settings(), _read(TEMPLATE))
    assert "\n0 4 * * 2 mlops pipeline weekly\n" in text
    assert "\n0 3 * * * mlops pipeline daily\n" in text
    assert "CRON_TZ=America/New_York\n" in text


@pytest.mark.parametrize("variable", ["WEEKLY_SCHEDULE", "DAILY_SCHEDULE"])
@pytest.mark.parametrize("bad", [
    "0 2 * *",                   # 4 fields
    "61 2 * * 1",                # minute out of range
    "0 25 * * 1",                # hour out of range
    "0 2 * * 1 2030 extra x",    # 8 fields
    "0 2 * * 1 rm",              # 6th field is not a year
    "0 2 * * 1\n* * * * * sh",   # a second crontab line smuggled in
    "0 2 * * 1; rm -rf /",       # shell in a field
    "",
    "@sometimes",
])
def test_malformed_schedule_names_the_variable(variable, bad):
    field = {"WEEKLY_SCHEDULE": "weekly_schedule", "DAILY_SCHEDULE": "daily_schedule"}[variable]
    with pytest.raises(MlopsError, match=variable):
        render_crontab(Settings(**{field: bad}), _read(TEMPLATE))


def test_schedule_validation_without_croniter(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "croniter", None)  # `from croniter import ...` -> ImportError
    for good in ("0 2 * * 1", "*/15 6-20 * * MON-FRI", "0 0 L * *", "0 2 * * 1#2", "0 2 * * 1 2030"):
        assert validate_schedule("WEEKLY_SCHEDULE", good) == good
    for bad in ("0 2 * *", "0 2 * * */", "0 2 * * 1,", "0 2 ** * 1"):
        with pytest.raises(MlopsError, match="WEEKLY_SCHEDULE"):
            validate_schedule("WEEKLY_SCHEDULE", bad)


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "Europe/Paris\nX=1", "../etc/passwd", ""])
def test_malformed_time_zone_names_cron_tz(bad):
    with pytest.raises(MlopsError, match="CRON_TZ"):
        render_crontab(Settings(cron_tz=bad), _read(TEMPLATE))


def test_unknown_template_placeholder_is_an_error():
    with pytest.raises(MlopsError, match=r"\$\{HOURLY_SCHEDULE\}"):
        render_crontab(Settings(), "${HOURLY_SCHEDULE} mlops pipeline weekly\n")
    assert render_crontab(Settings(), "# costs $$5\n") == "# costs $5\n"


def test_default_template_is_the_package_file_or_the_env_override(monkeypatch, tmp_path):
    monkeypatch.delenv("MLOPS_CRONTAB_TEMPLATE", raising=False)
    assert default_template_path() == TEMPLATE
    assert default_template() == _read(TEMPLATE)
    assert render_crontab(Settings()) == _read(CRONTAB)

    custom = tmp_path / "my.template"
    custom.write_text("CRON_TZ=${CRON_TZ}\n${DAILY_SCHEDULE} mlops pipeline daily\n", encoding="utf-8")
    monkeypatch.setenv("MLOPS_CRONTAB_TEMPLATE", str(custom))
    assert render_crontab(Settings()) == "CRON_TZ=Europe/Paris\n0 3 * * * mlops pipeline daily\n"

    monkeypatch.setenv("MLOPS_CRONTAB_TEMPLATE", str(tmp_path / "missing.template"))
    with pytest.raises(MlopsError, match="MLOPS_CRONTAB_TEMPLATE"):
        default_template()


# --- docker-compose.yml ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose():
    assert COMPOSE.is_file(), "docker-compose.yml is missing"
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose_env(compose):
    return _compose_test_env(compose)


@pytest.fixture(scope="module")
def services(compose, compose_env):
    return interpolate(compose["services"], compose_env)


def test_compose_validates_against_the_compose_spec(compose, compose_env):
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    # The spec declares draft-07 as "https://json-schema.org/draft-07/schema" (no trailing #),
    # which jsonschema does not recognise by that spelling.
    validator_cls = (jsonschema.Draft7Validator if "draft-07" in schema.get("$schema", "")
                     else jsonschema.validators.validator_for(schema))
    validator_cls.check_schema(schema)
    for doc in (compose, interpolate(compose, compose_env)):  # as written, and as compose sees it
        errors = sorted(validator_cls(schema).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])


def test_compose_has_the_seven_services(compose):
    assert set(SERVICES) <= set(compose["services"]), sorted(compose["services"])


def test_compose_interpolates_cleanly_with_only_the_required_variables(compose, compose_env):
    required = {name for name, has_default in compose_variables(compose).items() if not has_default}
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    interpolate(compose, compose_env)  # no KeyError: every ${VAR:?} is in the test env
    for name in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        env = dict(compose_env)
        del env[name]
        with pytest.raises(KeyError, match=name):  # `docker compose` refuses to start without it
            interpolate(compose, env)


def test_every_service_is_healthchecked_and_waits_for_healthy_dependencies(services):
    for name in SERVICES:
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name} has no healthcheck"
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form with a condition"
        for dep, spec in deps.items():
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}: {spec}"
            assert services[dep].get("healthcheck"), f"{name} waits for {dep}, which has no healthcheck"
    for name in APP_SERVICES:
        assert {"postgres", "mlflow"} <= set(services[name]["depends_on"]), name
    assert set(services["mlflow"]["depends_on"]) == {"postgres"}
    assert "postgres" in services["grafana"]["depends_on"]


def test_postgres_service(services, compose_env):
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:16")
    env = _environment(pg)
    assert env["POSTGRES_USER"] == compose_env["POSTGRES_USER"]
    assert env["POSTGRES_PASSWORD"] == compose_env["POSTGRES_PASSWORD"]
    assert env["POSTGRES_DB"]
    assert "pg_isready" in " ".join(_as_argv(pg["healthcheck"]["test"]))
    volumes = [str(v) for v in pg["volumes"]]
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" and not v.startswith((".", "/")) for v in volumes), \
        "postgres data must live in a named volume"
    init = [v for v in volumes if v.startswith("./docker/postgres-init.sql:/docker-entrypoint-initdb.d/")]
    assert init, volumes
    sql = _read(POSTGRES_INIT)
    assert re.search(r"CREATE DATABASE\s+\"?mlflow\"?", sql, re.I), sql


def test_mlflow_service(services, compose_env):
    mlflow = services["mlflow"]
    argv = _as_argv(mlflow["command"])
    assert argv[:2] == ["mlflow", "server"]
    uri = argv[argv.index("--backend-store-uri") + 1]
    user, password = compose_env["POSTGRES_USER"], compose_env["POSTGRES_PASSWORD"]
    assert uri == f"postgresql+psycopg2://{user}:{password}@postgres:5432/mlflow"
    assert argv[argv.index("--artifacts-destination") + 1] == "/mlartifacts"
    assert "--serve-artifacts" in argv
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "5000"
    assert "/health" in " ".join(_as_argv(mlflow["healthcheck"]["test"]))
    build = mlflow.get("build")
    if build:  # the official image lacks psycopg2: built from docker/Dockerfile.mlflow
        dockerfile = REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        text = _read(dockerfile)
        assert "ghcr.io/mlflow/mlflow" in text and "psycopg2" in text, dockerfile
    else:
        assert mlflow["image"].startswith("ghcr.io/mlflow/mlflow:") and "psycopg2" in " ".join(argv)


def test_application_services_get_database_and_mlflow_from_env(services, compose_env):
    expected_db = "postgresql://{}:{}@postgres:5432/{}".format(
        compose_env["POSTGRES_USER"], compose_env["POSTGRES_PASSWORD"], "mlops")
    for name in APP_SERVICES:
        svc = services[name]
        env = _environment(svc)
        assert env["DATABASE_URL"] == expected_db, name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        env_files = svc.get("env_file")
        env_files = [env_files] if isinstance(env_files, (str, dict)) else env_files or []
        paths = [f["path"] if isinstance(f, dict) else f for f in env_files]
        assert ".env" in paths or "./.env" in paths, f"{name} must read .env (env_file)"
        assert svc.get("build"), f"{name} is built from this repository"


def test_api_and_ui_commands_and_ports(services):
    api, ui = services["api"], services["streamlit"]
    assert _as_argv(api["command"])[:2] == ["mlops", "serve"]
    argv = _as_argv(api["command"])
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "8000"
    assert any(str(p).endswith(":8000") for p in api["ports"])
    assert "/health" in " ".join(_as_argv(api["healthcheck"]["test"]))
    argv = _as_argv(ui["command"])
    assert argv[:2] == ["mlops", "ui"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "8501"
    # every action needs a sign-in: users (hashed passwords in the mlops-home volume) unless .env says otherwise
    assert _environment(ui)["UI_AUTH"] == "users"
    assert any(str(p).endswith(":8501") for p in ui["ports"])
    for name, build in (("api", api["build"]), ("streamlit", ui["build"])):
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile" and build.get("context", ".") in (".", "./"), name


def test_cron_service(services):
    cron = services["cron"]
    assert cron["build"]["dockerfile"] == "Dockerfile.cron"
    assert "command" not in cron and "entrypoint" not in cron, "the image's entrypoint starts supercronic"
    assert _duration_seconds(cron["stop_grace_period"]) >= 2 * 3600  # > STEP_TIMEOUT (1 h) + retries
    assert _environment(cron).get("MLOPS_TRIGGERED_BY", "cron") == "cron"
    assert "9746/health" in " ".join(_as_argv(cron["healthcheck"]["test"]))


def test_prometheus_and_grafana_services(services, compose_env):
    prom, graf = services["prometheus"], services["grafana"]
    assert prom["image"].startswith("prom/prometheus")
    assert any(str(v).startswith("./prometheus/prometheus.yml:") for v in prom["volumes"])
    assert any(str(p).endswith(":9090") for p in prom["ports"])
    assert graf["image"].startswith("grafana/grafana")
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in graf["volumes"]}
    assert mounts.get("./grafana/provisioning") == "/etc/grafana/provisioning"
    assert mounts.get("./grafana/dashboards") == "/var/lib/grafana/dashboards"
    assert any(str(p).endswith(":3000") for p in graf["ports"])
    env = _environment(graf)
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == compose_env["GRAFANA_ADMIN_PASSWORD"]
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):  # for the datasource
        assert env.get(var), var


def test_compose_writes_no_literal_secrets(compose):
    problems = []

    def check_env(where, env):
        for key, value in env.items():
            if SECRET_KEY.search(key) and value not in ("", None) and not ENV_REF.match(str(value)):
                problems.append(f"{where}: {key} must be a ${{VAR}} reference without a default, not {value!r}")

    for name, service in compose["services"].items():
        check_env(name, _environment(service))
    for s in _strings(compose):
        refs: list[str] = []

        def hide(m):  # ${...} may hold ':' or spaces (${VAR:?message}): hide them from the URL regex
            refs.append(m.group(0))
            return f"\0{len(refs) - 1}\0"

        masked = re.sub(r"\$\{[^}]*\}", hide, s)
        for m in re.finditer(r"://([^:/@\s]+):([^@\s]+)@", masked):
            for part in m.groups():
                value = re.sub(r"\0(\d+)\0", lambda r: refs[int(r.group(1))], part)
                if not ENV_REF.match(value):
                    problems.append(f"credentials in a URL must be ${{VAR}} references: {value!r} in {s!r}")
    for lineno, line in enumerate(_read(COMPOSE).splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"(\w*PASSWORD\w*)(?:\s*=|:\s)\s*(\S*)", line):
            if not m.group(2).startswith(("${", "$${", '"${', "'${")):
                problems.append(f"docker-compose.yml:{lineno}: {line.strip()}")
    assert not problems, "\n".join(problems)


def _documented(path: Path) -> set[str]:
    return set(re.findall(r"^\s*#?\s*([A-Za-z_][A-Za-z0-9_]*)=", _read(path), re.M))


def test_compose_variables_are_listed_in_compose_env_example(compose):
    used = set(compose_variables(compose))
    text = _read(COMPOSE_ENV_EXAMPLE)
    missing = sorted(used - _documented(COMPOSE_ENV_EXAMPLE))
    assert not missing, f"docker/compose.env.example lacks {missing}"
    lines = text.splitlines()
    for var in used:  # each with a comment just above (or above its block)
        i = next(i for i, line in enumerate(lines) if re.match(rf"^\s*#?\s*{var}=", line))
        assert any(lines[j].startswith("# ") and "=" not in lines[j].split()[1] for j in range(max(0, i - 8), i)), var


def test_compose_variables_are_documented_in_env_example(compose):
    """.env.example is written by another change; docker/compose.env.example is what to merge."""
    assert ENV_EXAMPLE.is_file(), ".env.example is missing (merge docker/compose.env.example into it)"
    missing = sorted(set(compose_variables(compose)) - _documented(ENV_EXAMPLE))
    assert not missing, f".env.example lacks {missing}: merge them from docker/compose.env.example"


def test_build_contexts_and_bind_mounts_exist(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("./") and "grafana/dashboards" not in source:  # dashboards: a later change
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"


# --- Dockerfiles and the cron entrypoint ----------------------------------------------------------------
def _last(instructions, word):
    found = [args for w, args in instructions if w == word]
    return found[-1] if found else None


def _assert_non_root(instructions, name):
    user = _last(instructions, "USER")
    assert user, f"{name} has no USER"
    assert user.split(":")[0] not in ("root", "0"), f"{name} runs as {user}"


def test_dockerfile_cron():
    text = _read(DOCKERFILE_CRON)
    assert text, "Dockerfile.cron is missing"
    ins = dockerfile_instructions(text)
    assert _last(ins, "FROM") == "python:3.11-slim"
    assert ("ARG", "TARGETARCH") in ins
    run = " ".join(args for w, args in ins if w == "RUN")
    everything = " ".join(args for _w, args in ins)
    assert "v0.2.33" in everything and "supercronic-linux-" in run and "curl" in run
    for arch, sha1 in SUPERCRONIC_SHA1.items():
        assert sha1 in everything, f"missing the {arch} checksum"
    assert re.search(r"sha1sum\s+-c", run), "the download must be verified with sha1sum -c"
    assert "supercronic -json -prometheus-listen-address" in text
    assert "pip install --no-cache-dir ." in run
    for src in ("setup.cfg", "pyproject.toml", "README.md", "mlops_cli/", "docker/"):
        assert any(w == "COPY" and src in args.split() for w, args in ins), f"COPY {src}"
    env = " ".join(args for w, args in ins if w == "ENV")
    for setting in ("MLOPS_TRIGGERED_BY=cron", "MLOPS_LOG_FORMAT=json"):
        assert setting in env, setting
    # migrations and the crontab template come with the installed package, not from /app copies
    assert "MLOPS_SQL_DIR" not in env and "MLOPS_CRONTAB_TEMPLATE" not in env
    _assert_non_root(ins, "Dockerfile.cron")
    healthcheck = _last(ins, "HEALTHCHECK")
    assert healthcheck and "9746/health" in healthcheck and "python" in healthcheck
    assert _last(ins, "STOPSIGNAL") == "SIGTERM"
    entrypoint = _exec_form_or_shell(_last(ins, "ENTRYPOINT"))
    assert entrypoint[0].endswith("docker/cron-entrypoint.sh")


def test_dockerfile_app():
    text = _read(DOCKERFILE)
    assert text, "Dockerfile is missing"
    ins = dockerfile_instructions(text)
    assert _last(ins, "FROM") == "python:3.11-slim"
    run = " ".join(args for w, args in ins if w == "RUN")
    assert "pip install --no-cache-dir ." in run
    env = " ".join(args for w, args in ins if w == "ENV")
    assert "MLOPS_SQL_DIR" not in env and "MLOPS_CRONTAB_TEMPLATE" not in env  # package data
    _assert_non_root(ins, "Dockerfile")
    healthcheck = _last(ins, "HEALTHCHECK")
    assert healthcheck and "8000/health" in healthcheck
    assert _exec_form_or_shell(_last(ins, "CMD")) == ["mlops", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_dockerfile_mlflow():
    ins = dockerfile_instructions(_read(DOCKERFILE_MLFLOW))
    assert ins, "docker/Dockerfile.mlflow is missing"
    assert "ghcr.io/mlflow/mlflow:" in _last(ins, "FROM")
    assert "psycopg2-binary" in " ".join(args for w, args in ins if w == "RUN")
    _assert_non_root(ins, "docker/Dockerfile.mlflow")


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, DOCKERFILE_CRON])
def test_dockerfile_copy_sources_exist(dockerfile):
    missing = []
    for word, args in dockerfile_instructions(_read(dockerfile)):
        if word == "COPY" and "--from" not in args:
            for src in _exec_form_or_shell(args)[:-1]:
                if not src.startswith("--") and not (REPO / src).exists():
                    missing.append(src)
    assert not missing, f"{dockerfile.name} copies {missing}, which do not exist in the repository"


def test_cron_entrypoint():
    text = _read(ENTRYPOINT)
    assert text.startswith("#!/bin/sh") or text.startswith("#!/usr/bin/env bash") or text.startswith("#!/bin/bash")
    assert os.access(ENTRYPOINT, os.X_OK), "docker/cron-entrypoint.sh must be executable"
    assert re.search(r"^set -e", text, re.M)
    calls = shell_mlops_invocations(text)
    render = [c for c in calls if c[:3] == ["mlops", "crontab", "render"]]
    assert render and render[0][3] == "--out", calls
    crontab_path = render[0][4]
    assert ["mlops", "db", "init"] in calls
    assert re.search(r"^\s*(until|while)\s+.*mlops db init", text, re.M), "db init must be retried"
    m = re.search(r"^\s*exec supercronic (.+)$", text, re.M)
    assert m, "the entrypoint must exec supercronic"
    args = shlex.split(m.group(1))
    assert args[:3] == ["-json", "-prometheus-listen-address", "0.0.0.0:9746"]
    assert args[-1] == crontab_path


# --- Kubernetes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(K8S))
def test_k8s_cronjob(kind):
    from croniter import croniter

    manifest = _yaml(K8S[kind])
    assert manifest, f"{K8S[kind]} is missing"
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "CronJob"
    spec = manifest["spec"]
    default = {"weekly": Settings().weekly_schedule, "daily": Settings().daily_schedule}[kind]
    assert spec["schedule"] == default and croniter.is_valid(spec["schedule"])
    assert spec["timeZone"] == "Europe/Paris"
    assert spec["concurrencyPolicy"] == "Forbid"
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        assert isinstance(spec[key], int) and spec[key] >= 0, key
    job = spec["jobTemplate"]["spec"]
    assert isinstance(job["backoffLimit"], int) and isinstance(job["activeDeadlineSeconds"], int)
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["mlops", "pipeline", kind]
    assert {"secretRef": {"name": "mlops-env"}} in container["envFrom"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("MLOPS_TRIGGERED_BY") == "cron"
    assert "cron" in container["image"]
    assert job["activeDeadlineSeconds"] > 0 and spec["startingDeadlineSeconds"] > 0


def test_k8s_readme():
    text = _read(REPO / "deploy/k8s/README.md")
    assert "kubectl apply" in text and "mlops-env" in text
    assert "Forbid" in text and "advisory lock" in text


K8S_SERVICES = {"api": REPO / "deploy/k8s/api.yaml", "streamlit": REPO / "deploy/k8s/streamlit.yaml",
                "mlflow": REPO / "deploy/k8s/mlflow.yaml"}
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests target (CronJob timeZone needs >= 1.27)


def _k8s_documents():
    for path in sorted((REPO / "deploy/k8s").glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                yield pytest.param(doc, id=f"{path.name}-{i}-{doc.get('kind')}")


@pytest.mark.parametrize("doc", list(_k8s_documents()))
def test_k8s_manifests_validate_against_the_kubernetes_schemas(doc):
    """Every object in deploy/k8s against the Kubernetes OpenAPI schemas (kubernetes-validate
    ships them: offline), strict: an unknown or misspelt field fails."""
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_schema_validation_catches_a_bad_manifest():
    import kubernetes_validate

    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "i", "readinesProbe": {}}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _k8s_objects(path) -> dict:
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def test_k8s_api_deployment_service_hpa_and_pdb():
    objs = _k8s_objects(K8S_SERVICES["api"])
    assert set(objs) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    dep = objs["Deployment"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert command_exists(c["command"]) and c["command"][:2] == ["mlops", "serve"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    port = {p["name"]: p["containerPort"] for p in c["ports"]}[c["readinessProbe"]["httpGet"]["port"]]
    assert port == 8000 and "--port" in c["command"] and c["command"][c["command"].index("--port") + 1] == "8000"
    assert "httpGet" not in c["livenessProbe"]  # an outage of the database must not restart every pod
    assert {"secretRef": {"name": "mlops-env"}} in c["envFrom"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    svc = objs["Service"]
    assert svc["spec"]["selector"].items() <= labels.items() and svc["spec"]["ports"][0]["port"] == 8000
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    assert 1 < hpa["minReplicas"] <= dep["spec"]["replicas"] <= hpa["maxReplicas"]
    pdb = objs["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items() and pdb["minAvailable"] < hpa["minReplicas"]


def test_k8s_streamlit_and_mlflow():
    ui = _k8s_objects(K8S_SERVICES["streamlit"])
    (c,) = ui["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert command_exists(c["command"]) and c["command"][:2] == ["mlops", "ui"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["UI_AUTH"] == "users" and env["UI_USERS_FILE"].startswith("/etc/mlops-ui/")
    assert c["readinessProbe"]["httpGet"]["path"] == "/_stcore/health"
    assert ui["Service"]["spec"]["ports"][0]["port"] == 8501
    ml = _k8s_objects(K8S_SERVICES["mlflow"])
    (m,) = ml["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "mlflow server" in m["command"][-1] and "--serve-artifacts" in m["command"][-1]
    assert m["readinessProbe"]["httpGet"]["path"] == "/health" and ml["Service"]["spec"]["ports"][0]["port"] == 5000
    claim = ml["Deployment"]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == ml["PersistentVolumeClaim"]["metadata"]["name"]
    assert ml["Deployment"]["spec"]["strategy"]["type"] == "Recreate"
    for objs in (ui, ml):
        for text in (yaml.safe_dump(o) for o in objs.values()):
            assert not re.search(r"(PASSWORD|TOKEN)\s*[:=]\s*\S", text), text  # secrets come from Secrets


def test_k8s_readme_covers_the_services():
    text = _read(REPO / "deploy/k8s/README.md")
    for name in ("api.yaml", "streamlit.yaml", "mlflow.yaml", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                 "mlops-ui-users", "mlops-mlflow"):
        assert name in text, name


# --- Airflow ----------------------------------------------------------------------------------------------
def test_airflow_dag_parses_without_airflow():
    tree = ast.parse(_read(AIRFLOW_DAG))
    consts = airflow_constants()
    assert consts["WEEKLY_SCHEDULE"] == Settings().weekly_schedule == "0 2 * * 1"
    assert consts["DAILY_SCHEDULE"] == Settings().daily_schedule == "0 3 * * *"
    assert consts["WEEKLY_DAG_ID"] == "mlops_weekly" and consts["DAILY_DAG_ID"] == "mlops_daily"
    commands = [v for k, v in consts.items() if k.endswith("_COMMAND")]
    assert commands and all(c.startswith("mlops ") for c in commands)
    assert all(not set(shlex.split(c)) & {";", "&&", "||", "|"} for c in commands), "one mlops command per task"

    dag_calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", getattr(n.func, "attr", None)) == "DAG"]
    assert dag_calls, "no DAG(...) call"
    for call in dag_calls:
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw["catchup"], ast.Constant) and kw["catchup"].value is False
        assert isinstance(kw["max_active_runs"], ast.Constant) and kw["max_active_runs"].value == 1
        assert "schedule" in kw and "default_args" in kw
    default_args = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                        and getattr(n.targets[0], "id", None) == "DEFAULT_ARGS")
    args = {ast.literal_eval(k): v for k, v in zip(default_args.keys, default_args.values)}
    assert ast.literal_eval(args["retries"]) == 2 and "retry_delay" in args
    operators = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "BashOperator"]
    assert operators, "tasks are BashOperators"


# --- Prometheus and Grafana -------------------------------------------------------------------------------------
def test_prometheus_scrapes_api_and_cron():
    config = _yaml(PROMETHEUS)
    assert config, "prometheus/prometheus.yml is missing"
    assert config["global"]["scrape_interval"] == "15s"
    targets = {}
    for job in config["scrape_configs"]:
        for group in job.get("static_configs", []):
            for t in group["targets"]:
                targets[t] = job.get("metrics_path", "/metrics")
    assert targets.get("api:8000") == "/metrics"
    assert targets.get("cron:9746") == "/metrics"


def test_grafana_provisioning():
    ds = _yaml(GRAFANA_DATASOURCES)
    assert ds and ds["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    pg = by_uid["mlops-postgres"]
    assert pg["name"] == "mlops-postgres"
    assert pg["type"] in ("postgres", "grafana-postgresql-datasource")
    assert pg["url"] == "postgres:5432"
    env_ref = re.compile(r"^(\$__env\{(\w+)\}|\$\{(\w+)\}|\$(\w+))$")
    database = pg.get("jsonData", {}).get("database") or pg.get("database")
    assert env_ref.match(pg["user"]) and "POSTGRES_USER" in pg["user"]
    assert env_ref.match(database) and "POSTGRES_DB" in database
    password = pg["secureJsonData"]["password"]
    assert env_ref.match(password) and "POSTGRES_PASSWORD" in password
    assert pg["jsonData"]["sslmode"] == "disable"
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"

    dash = _yaml(GRAFANA_DASHBOARDS)
    assert dash and dash["apiVersion"] == 1
    (provider,) = dash["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
