"""The `mlops` command line. Commands only: parse, call one operations function (mlops_cli.ops)
or pipeline step, render.

Domain errors (mlops_cli.errors) print `Error: <message>` and exit with the code of their kind
(EXIT_CODES, by the error's `code`): 75 for a service that cannot be reached (worth retrying,
EX_TEMPFAIL), 1 for every other refusal (not found, conflict, invalid input). A step that fails
exits the same way, by the kind of its cause, after its failure is recorded in pipeline_runs; a
skipped step exits 0.
Heavy libraries (mlflow, sklearn, pandas) are imported inside commands so `mlops --help` is fast.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys

import click

from . import __version__
from .config import load_settings
from .vocab import RECORDABLE_ACTIONS, AlertStatus, Pipeline, RunStatus, Step, values
from .errors import Conflict, Forbidden, Invalid, MlopsError, NotFound, TimedOut, Unauthenticated, Unavailable

log = logging.getLogger("mlops_cli")

DATE = click.DateTime(formats=["%Y-%m-%d"])
# Exit code per error kind (errors.MlopsError.code). 1 stays the code of a refusal, as scripts
# and the tests expect; 75 (EX_TEMPFAIL) tells cron and supervisors that a retry may succeed.
EXIT_CODES = {MlopsError.code: 1, NotFound.code: 1, Conflict.code: 1, Invalid.code: 1, Unavailable.code: 75,
              TimedOut.code: 1, Unauthenticated.code: 1, Forbidden.code: 1}


# --- plumbing ---------------------------------------------------------------------------------
class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record), "level": record.levelname,
                           "logger": record.name, "message": record.getMessage(),
                           **getattr(record, "fields", {})})


def _setup_logging(verbose: bool, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("mlops_cli")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def settings_of(ctx: click.Context):
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings()
    return obj["settings"]


def open_conn(ctx: click.Context):
    """A migrated database connection, closed when the command ends."""
    from . import db

    conn = db.open_db(settings_of(ctx))
    ctx.call_on_close(conn.close)
    return conn


def trigger_of(by: str | None = None, **kw):
    from .ops.common import trigger

    return trigger("cli", by, **kw)


class DomainError(click.ClickException):
    """A domain error as click shows it (`Error: <message>`), with the exit code of its kind; with
    MLOPS_LOG_FORMAT=json (the cron image), one JSON line like every other log line of the run."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code
        self.exit_code = EXIT_CODES.get(code, 1)

    def show(self, file=None) -> None:
        if os.environ.get("MLOPS_LOG_FORMAT") != "json":
            return super().show(file)
        record = logging.makeLogRecord({"name": __name__, "levelname": "ERROR", "levelno": logging.ERROR,
                                        "msg": self.format_message(),
                                        "fields": {"error_code": self.code, "exit_code": self.exit_code}})
        click.echo(_JsonFormatter().format(record), file=file or sys.stderr)


def domain_errors(fn):
    """Turn library errors into a DomainError with a message a user can act on; the exit code
    comes from the error's code (a failed step: its cause's), never from its text."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .runs import StepFailed

        try:
            return fn(*args, **kwargs)
        except StepFailed as exc:
            from .pipeline import error_code

            r = exc.result
            # by the cause's kind: a connection lost (psycopg2's, no code of ours) is Unavailable (75)
            raise DomainError(f"{r.step} failed (run #{r.pipeline_run_id}): {r.message}",
                              error_code(exc.cause)) from None
        except MlopsError as exc:
            raise DomainError(str(exc), exc.code) from None

    return wrapper


def mlflow_run_id_option(help_text: str):
    """--mlflow-run-id, with --run-id as its deprecated spelling (hidden; kept for one release,
    with a warning on stderr): `run_id` also names pipeline_runs ids, so the option says which."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, mlflow_run_id=None, deprecated_run_id=None, **kwargs):
            if deprecated_run_id is not None:
                click.echo("Warning: --run-id is deprecated: use --mlflow-run-id", err=True)
                if mlflow_run_id is not None and mlflow_run_id != deprecated_run_id:
                    raise click.UsageError("Give --mlflow-run-id or its deprecated spelling --run-id, not both")
                mlflow_run_id = deprecated_run_id
            return fn(*args, mlflow_run_id=mlflow_run_id, **kwargs)

        wrapper = click.option("--run-id", "deprecated_run_id", hidden=True, metavar="ID",
                               help="Deprecated spelling of --mlflow-run-id.")(wrapper)
        return click.option("--mlflow-run-id", metavar="ID", help=help_text)(wrapper)

    return decorate


def emit(result, as_json: bool) -> None:
    """Print a StepResult: one JSON object, or the message for humans."""
    if as_json or os.environ.get("MLOPS_LOG_FORMAT") == "json":
        click.echo(json.dumps(result.as_dict(), default=str))
    else:
        status = {"succeeded": "ok", "skipped": "skipped", "failed": "FAILED"}[result.status]
        run = "not started" if result.pipeline_run_id is None else f"run #{result.pipeline_run_id}"
        click.echo(f"[{status}] {result.step} ({run}): {result.message}")


# --- the group ----------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlops")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--log-format", type=click.Choice(["text", "json"]),
              default=lambda: os.environ.get("MLOPS_LOG_FORMAT", "text"), show_default="text",
              help="Log lines on stderr as text or JSON (MLOPS_LOG_FORMAT).")
@click.pass_context
def main(ctx: click.Context, verbose: bool, log_format: str) -> None:
    """mlops: load, train, promote, monitor and roll back the Rakuten product classifier.

    With no DATABASE_URL, an embedded PostgreSQL is started in $MLOPS_HOME/pg (default ./.mlops).
    """
    _setup_logging(verbose, log_format)
    ctx.ensure_object(dict)


# --- db -----------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """The PostgreSQL database: URL, migrations, the embedded server."""


@db.command("url")
@click.option("--mlflow", "for_mlflow", is_flag=True, help="Print MLflow's backend-store URL instead.")
@click.pass_context
@domain_errors
def db_url(ctx, for_mlflow: bool) -> None:
    """Print the connection URL (starts the embedded server if needed): psql "$(mlops db url)"."""
    from . import db as dbm

    s = settings_of(ctx)
    click.echo(dbm.mlflow_backend_url(s) if for_mlflow else dbm.database_url(s))


@db.command("init")
@click.pass_context
@domain_errors
def db_init(ctx) -> None:
    """Apply the numbered migrations in sql/ that are not applied yet (idempotent)."""
    from . import db as dbm

    conn = dbm.connect(settings_of(ctx))
    try:
        applied = dbm.migrate(conn)
    finally:
        conn.close()
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@db.command("status")
@click.pass_context
@domain_errors
def db_status(ctx) -> None:
    """Where the database is, which migrations are applied, and row counts."""
    from . import db as dbm
    from .ops import runs as ops_runs
    from .render import table

    s = settings_of(ctx)
    conn = open_conn(ctx)
    click.echo(f"database: {dbm.redact(dbm.database_url(s))}" + (" (embedded)" if s.embedded else ""))
    click.echo(table(dbm.applied_migrations(conn), ["version", "name", "applied_at"]))
    counts = ops_runs.catalogue_counts(conn)
    click.echo(f"products: {counts['products']}  batches: {counts['batches']}  rejected rows: {counts['rejected']}")


@db.command("stop")
@click.pass_context
@domain_errors
def db_stop(ctx) -> None:
    """Stop the embedded PostgreSQL of $MLOPS_HOME (it keeps running between commands)."""
    from . import db as dbm

    s = settings_of(ctx)
    if not s.embedded:
        raise click.ClickException("DATABASE_URL is set: the database is external, nothing to stop")
    click.echo("embedded PostgreSQL stopped" if dbm.stop_embedded(s) else "embedded PostgreSQL was not running")


# --- data ---------------------------------------------------------------------------------------
@main.command("generate-data")
@click.option("--rows", type=click.IntRange(min=1), default=20000, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for X_train_update.csv and Y_train_CVw08PX.csv.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--drift", type=click.Choice(["none", "vocabulary", "length", "classes"]), default="none",
              show_default=True, help="Inject a kind of drift into the generated catalogue.")
@domain_errors
def generate_data(rows: int, out_dir: str, seed: int, drift: str) -> None:
    """Write a synthetic catalogue in the real Rakuten file format."""
    from .synth import write_catalogue

    try:
        x, y = write_catalogue(out_dir, rows=rows, seed=seed, drift=drift)
    except OSError as exc:
        raise Invalid(f"Cannot write the catalogue in {out_dir}: {exc.strerror or exc}") from None
    click.echo(f"wrote {rows} rows: {x} {y}")


@main.command("load")
@click.option("--x-path", envvar="MLOPS_X_PATH", type=click.Path(dir_okay=False),
              help="X_train_update.csv (default $MLOPS_X_PATH).")
@click.option("--y-path", envvar="MLOPS_Y_PATH", type=click.Path(dir_okay=False),
              help="Y_train_CVw08PX.csv (default $MLOPS_Y_PATH).")
@click.option("--as-of", type=DATE, help="Pretend today is this date (YYYY-MM-DD): simulation and backfill.")
@click.option("--force", is_flag=True, help="Load another batch even if this week already has one.")
@click.option("--by", help="Who runs it (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@domain_errors
def load_cmd(ctx, x_path, y_path, as_of, force, by, as_json) -> None:
    """Load the next LOAD_FRACTION of the source catalogue into PostgreSQL as one batch."""
    from .ops import runs as ops_runs

    s = settings_of(ctx)
    result = ops_runs.load(s, trigger_of(by), x_path=x_path, y_path=y_path, as_of=as_of.date() if as_of else None,
                           force=force)  # with the steps' retries, as every step command
    emit(result, as_json)


# --- training and evaluation --------------------------------------------------------------------
def _params(values: tuple[str, ...]) -> dict:
    from .features import parse_param

    out = {}
    for v in values:
        try:
            key, value = parse_param(v)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--param") from None
        out[key] = value
    return out


@main.command("train")
@click.option("--force", is_flag=True, help="Train even if no new load arrived since the last training.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a model hyperparameter (repeatable), e.g. --param alpha=5e-5.")
@click.option("--by", help="Who runs it (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON (pipeline_run_id; outputs: mlflow_run_id, model_version, metrics).")
@click.pass_context
@domain_errors
def train_cmd(ctx, force, params, by, as_json) -> None:
    """Train on everything loaded so far, log to MLflow, register a challenger version."""
    from .ops import models as ops_models

    s = settings_of(ctx)
    result = ops_models.train(s, trigger_of(by), force=force, params=_params(params))
    if as_json or os.environ.get("MLOPS_LOG_FORMAT") == "json" or result.status != "succeeded":
        emit(result, as_json)
    else:
        click.echo(result.outputs["mlflow_run_id"])
        click.echo(f"[ok] train (run #{result.pipeline_run_id}): {result.message}", err=True)


@main.command("evaluate")
@mlflow_run_id_option("The MLflow run id of the version to evaluate (the run that trained it).")
@click.option("--version", help="The registered model version to evaluate.")
@click.option("--by", help="Who runs it (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@domain_errors
def evaluate_cmd(ctx, mlflow_run_id, version, by, as_json) -> None:
    """Score a version on the current holdout (default: the newest challenger not yet evaluated)."""
    from .ops import models as ops_models

    emit(ops_models.evaluate(settings_of(ctx), trigger_of(by), mlflow_run_id=mlflow_run_id, version=version),
         as_json)


# --- promotion, approval, rollback, models ------------------------------------------------------
def _score(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _aliases_text(aliases: dict) -> str:
    return "  ".join(f"{k}=v{v}" for k, v in sorted(aliases.items()) if v) or "(none)"


def _notifications_text(items: list) -> str:
    return ", ".join(f"{n['channel']} {n['status']}" + (f" ({n['error'][:60]})" if n.get("error") else "")
                     for n in items) or "none"


def _emit_decision(result, as_json: bool) -> None:
    """A promote/approve result: JSON, or a one-screen summary of the decision."""
    if as_json or os.environ.get("MLOPS_LOG_FORMAT") == "json" or result.status != "succeeded":
        emit(result, as_json)
        return
    o = result.outputs
    metric = o["metric"]
    champion = (f"v{o['champion_version']}  {metric} {_score(o['champion_score'])}  (re-scored on the same rows)"
                if o.get("champion_version") else "none")
    lines = [
        f"[ok] {result.step} (run #{result.pipeline_run_id}): version {o['model_version']} {o['decision']}",
        f"  decision       {o['decision']}  (by {o['decided_by']})",
        f"  candidate      v{o['model_version']}  {metric} {_score(o['candidate_score'])}  "
        f"({'re-scored' if o.get('candidate_rescored') else 'its evaluation'} on {o['holdout_rows']} holdout rows)",
        f"  champion       {champion}",
        f"  threshold      {o['threshold']:g}  (min improvement {o['min_improvement']:g}, auto-promotion "
        f"{'on' if o['auto_promotion_enabled'] else 'off'})",
        f"  rule           {o['rule']}",
        f"  justification  {o['justification']}",
        f"  aliases now    {_aliases_text(o['aliases'])}",
        f"  notifications  {_notifications_text(o.get('notifications', []))}",
    ]
    click.echo("\n".join(lines))


@main.command("promote")
@mlflow_run_id_option("The MLflow run id of the version to decide on (the run that trained it).")
@click.option("--version", help="The registered model version to decide on.")
@click.option("--by", help="Who runs it (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.pass_context
@domain_errors
def promote_cmd(ctx, mlflow_run_id, version, by, as_json) -> None:
    """Promote the newest evaluated challenger if it beats the champion, else archive it.

    Rule: AUTO_PROMOTION_ENABLED and score > MIN_F1_THRESHOLD and (no champion or score > champion
    + MIN_IMPROVEMENT), both scored on the same current holdout. With auto-promotion off the
    decision is 'needs_approval' (see `mlops approve`).
    """
    from .ops import models as ops_models

    _emit_decision(ops_models.promote(settings_of(ctx), trigger_of(by), mlflow_run_id=mlflow_run_id,
                                      version=version), as_json)


@main.command("approve")
@click.argument("version")
@click.option("--reason", required=True, help="Why this version goes to production (recorded, notified).")
@click.option("--by", required=True, help="Who approves it (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.pass_context
@domain_errors
def approve_cmd(ctx, version, reason, by, as_json) -> None:
    """Promote VERSION by hand (e.g. one that needs approval): it becomes the champion."""
    from .ops import models as ops_models

    from .ops.common import actor_of

    # required: a blank name is refused, not replaced by MLOPS_ACTOR or user@host
    _emit_decision(ops_models.approve(settings_of(ctx), trigger_of(actor_of(by)), version, reason), as_json)


@main.command("rollback")
@click.option("--to-version", help="A former champion to return to (default: the previous champion).")
@click.option("--reason", required=True, help="Why (recorded in the audit trail and sent to the team).")
@click.option("--by", help="Who runs it (recorded in the audit trail).")
@click.option("--alert-id", type=int, help="The drift alert this rollback answers: the rollback and its "
                                           "outcome are recorded in the alert's audit trail.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@domain_errors
def rollback_cmd(ctx, to_version, reason, by, alert_id, as_json) -> None:
    """Put the previous champion (or --to-version, a former champion) back in production."""
    from .ops import models as ops_models

    decision = ops_models.Decision(alert_id, reason) if alert_id is not None else None
    result = ops_models.rollback(settings_of(ctx), trigger_of(by), to_version=to_version, reason=reason,
                                 decision=decision)
    if as_json or os.environ.get("MLOPS_LOG_FORMAT") == "json" or result.status != "succeeded":
        emit(result, as_json)
        return
    o = result.outputs
    click.echo("\n".join([
        f"[ok] rollback (run #{result.pipeline_run_id}): champion v{o['from_version']} -> v{o['to_version']}",
        f"  from           v{o['from_version']}  {o['metric']} {_score(o['from_score'])}  "
        "(now Archived, rolled_back=true)",
        f"  to             v{o['to_version']}  {o['metric']} {_score(o['to_score'])}  (now Production)",
        f"  reason         {o['reason']}",
        f"  by             {o['decided_by']}",
        f"  aliases now    {_aliases_text(o['aliases'])}",
        f"  notifications  {_notifications_text(o.get('notifications', []))}",
    ]))


@main.command("models")
@click.option("--history", is_flag=True, help="Show the decision history instead of the versions.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Decisions shown with --history.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@domain_errors
def models_cmd(ctx, history, limit, as_json) -> None:
    """Registered versions, newest first (the champion marked *), or the decision history."""
    from .ops import models as ops_models
    from .render import table, to_json
    from .runs import with_retries

    s = settings_of(ctx)
    if history:
        rows = with_retries(s, lambda conn: ops_models.decisions(conn, s, limit))
        if as_json:
            click.echo(to_json(rows))
        elif not rows:
            click.echo(f"no decisions yet for {s.model_name}")
        else:
            click.echo(table(rows, ["id", "created_at", "model_version", "decision", "candidate_score",
                                    "champion_version", "champion_score", "decided_by", "justification"],
                             ["id", "when", "version", "decision", "score", "champion", "champ score", "by",
                              "justification"], width=80))
        return
    rows = with_retries(s, lambda conn: ops_models.list_models(conn, s))
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        click.echo(f"no registered versions of {s.model_name} yet (run `mlops train`)")
        return
    for r in rows:
        r["mark"] = "*" if r["is_champion"] else ""
        r["aliases_text"] = ",".join(r["aliases"])
    click.echo(table(rows, ["mark", "version", "aliases_text", "stage", "weighted_f1", "baseline_weighted_f1",
                            "chosen", "decision", "reason", "created_at"],
                     ["", "version", "aliases", "stage", "weighted F1", "baseline F1", "chosen", "decision",
                      "reason", "created"],
                     width=70))
    click.echo(f"* champion (in production) of {s.model_name}")


# --- serving ------------------------------------------------------------------------------------
@main.command("serve")
@click.option("--host", default=None, help="Address to listen on (default $API_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default $API_PORT, 8000).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (each loads the model and polls the registry; /metrics adds "
                   "their metrics up).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True, help="uvicorn's log level.")
@click.pass_context
@domain_errors
def serve_cmd(ctx, host, port, workers, log_level) -> None:
    """Run the prediction + control API (FastAPI under uvicorn); docs at /docs."""
    import uvicorn

    s = settings_of(ctx)
    if workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from .serving import prepare_multiproc_dir

        prepare_multiproc_dir(s)  # before the workers start: they pick their metrics mode at import
    uvicorn.run("mlops_cli.api:create_app", factory=True, host=host or s.api_host, port=port or s.api_port,
                workers=workers, log_level=log_level, access_log=False, proxy_headers=True)


@main.command("predict")
@click.option("--input", "input_path", type=click.Path(dir_okay=False), required=True,
              help="CSV in the X format: index column, designation, description, productid[, imageid].")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Output CSV: productid, prdtypecode, category, confidence, error.")
@click.option("--version", help="Registered model version to use (default: the champion).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_context
@domain_errors
def predict_cmd(ctx, input_path, out_path, version, as_json) -> None:
    """Score a CSV of products offline with the champion (or --version)."""
    from .batch import predict_file

    result = predict_file(settings_of(ctx), input_path, out_path, version=version)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"scored {result['rows']} rows with {result['model_name']} version "
                   f"{result['model_version']}: {result['predicted']} predicted, {result['errors']} "
                   f"without a title -> {result['out_path']} ({result['seconds']}s)")


@main.command("export-inference-log")
@click.option("--since", type=DATE, help="Only predictions logged on or after this day (UTC), YYYY-MM-DD.")
@click.option("--day", type=DATE, help="Archive one UTC day (YYYY-MM-DD), e.g. before retention drops "
                                       "it; a dropped day gives the rows kept for feedback.")
@click.option("--format", "fmt", type=click.Choice(["csv", "csv.gz", "parquet"]), default="csv",
              show_default=True, help="Output format (csv.gz and parquet with --day only).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Output file.")
@click.pass_context
@domain_errors
def export_inference_log_cmd(ctx, since, day, fmt, out_path) -> None:
    """Write the API's logged predictions (inference_log) to a file: all or --since as CSV, or one
    --day as csv, csv.gz or parquet (with its SHA-256)."""
    if day is not None:
        if since is not None:
            raise click.UsageError("give --since or --day, not both")
        from .steps.retention import archive_day

        out = archive_day(open_conn(ctx), day.date(), out_path, fmt)
        click.echo(f"wrote {out['rows']} rows of {day.date()} to {out['path']} ({fmt}, sha256 {out['sha256']})")
        return
    if fmt != "csv":
        raise click.UsageError("--format csv.gz and parquet need --day")
    from .batch import export_inference_log

    n = export_inference_log(open_conn(ctx), since.date() if since else None, out_path)
    click.echo(f"wrote {n} rows to {out_path}")

# --- drift and alerts -----------------------------------------------------------------------------
def _score_text(value) -> str:
    return "-" if value is None else f"{value:.4f}"


@main.command("drift")
@click.option("--as-of", type=DATE, help="End of the windows (YYYY-MM-DD, midnight UTC); default now.")
@click.option("--window", "windows", type=click.IntRange(min=1), multiple=True, metavar="DAYS",
              help="Window length in days (repeatable; default --window 7 --window 30).")
@click.option("--by", help="Who runs it (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@domain_errors
def drift_cmd(ctx, as_of, windows, by, as_json) -> None:
    """Compare recent predictions with the champion's training reference: one report per window."""
    from .render import table
    from .runs import with_retries
    from .steps.drift import DEFAULT_WINDOWS, drift

    s = settings_of(ctx)
    result = with_retries(s, lambda conn: drift(conn, s, trigger_of(by), as_of=as_of.date() if as_of else None,
                                                window_days=windows or DEFAULT_WINDOWS))
    if as_json or os.environ.get("MLOPS_LOG_FORMAT") == "json":
        emit(result, True)
        return
    reports = result.outputs.get("reports") or []
    if reports:
        rows = [{"window": f"{r['window_days']}d", "rows": r["n_inferences"],
                 "data": _score_text(r["scores"]["data"]), "prediction": _score_text(r["scores"]["prediction"]),
                 "performance": _score_text(r["scores"]["performance"]),
                 "estimated": _score_text(r["scores"].get("estimated_performance")),
                 "level": r["level"] if r["status"] == "ok" else "NONE (insufficient data)", "report": r["id"]}
                for r in reports]
        click.echo(table(rows, ["window", "rows", "data", "prediction", "performance", "estimated", "level",
                                "report"]))
    emit(result, False)


@main.command("alert")
@click.option("--report-id", type=int, help="Alert on this drift report only (default: the newest drift "
                                            "run not yet alerted on).")
@click.option("--by", help="Who runs it (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@domain_errors
def alert_cmd(ctx, report_id, by, as_json) -> None:
    """Raise, update, escalate or resolve drift alerts from the latest drift reports; notify."""
    from .runs import with_retries
    from .steps.alert import alert

    s = settings_of(ctx)
    emit(with_retries(s, lambda conn: alert(conn, s, trigger_of(by), report_id=report_id)), as_json)


@main.group("alerts")
def alerts_group() -> None:
    """Drift alerts: list, acknowledge, clear (every human action is audited)."""


@alerts_group.command("list")
@click.option("--status", type=click.Choice(values(AlertStatus)))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@domain_errors
def alerts_list(ctx, status, limit, as_json) -> None:
    """Alerts, active ones first."""
    from .ops.alerts import list_alerts
    from .render import table, to_json

    rows = list_alerts(open_conn(ctx), status=status, limit=limit)
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        click.echo("no alerts" + (f" with status {status}" if status else ""))
        return
    click.echo(table(rows, ["id", "level", "cause", "status", "count", "first_seen", "last_seen",
                            "last_notified_at", "message"],
                     ["id", "level", "cause", "status", "count", "first seen", "last seen", "notified",
                      "message"], width=70))


@alerts_group.command("ack")
@click.argument("alert_id", type=int)
@click.option("--by", required=True, help="Who acknowledges it.")
@click.option("--note", help="Why, or what is being done.")
@click.pass_context
@domain_errors
def alerts_ack(ctx, alert_id, by, note) -> None:
    """Acknowledge an alert: no more reminders until it escalates or resolves."""
    from .ops.alerts import acknowledge

    click.echo(acknowledge(open_conn(ctx), settings_of(ctx), alert_id, by=by, note=note).message)


@alerts_group.command("clear")
@click.option("--by", required=True, help="Who clears them.")
@click.option("--note", help="Why.")
@click.pass_context
@domain_errors
def alerts_clear(ctx, by, note) -> None:
    """Resolve every open or acknowledged alert (PagerDuty incidents are resolved too)."""
    from .ops.alerts import clear

    click.echo(clear(open_conn(ctx), settings_of(ctx), by=by, note=note).message)


@alerts_group.command("resolve")
@click.argument("alert_id", type=int)
@click.option("--by", required=True, help="Who resolves it.")
@click.option("--note", help="Why.")
@click.pass_context
@domain_errors
def alerts_resolve(ctx, alert_id, by, note) -> None:
    """Resolve one alert by hand (the channels it was sent to are told; PagerDuty resolved)."""
    from .ops.alerts import resolve

    click.echo(resolve(open_conn(ctx), settings_of(ctx), alert_id, by=by, note=note).message)


@alerts_group.command("record")
@click.argument("alert_id", type=int)
@click.option("--action", required=True,
              type=click.Choice(RECORDABLE_ACTIONS),
              help="What was decided (carry it out with its own command).")
@click.option("--by", required=True, help="Who decided.")
@click.option("--note", help="Details.")
@click.pass_context
@domain_errors
def alerts_record(ctx, alert_id, action, by, note) -> None:
    """Record in the alert's audit trail a decision taken about it (e.g. after a rollback)."""
    from .ops.alerts import record_action

    action_id = record_action(open_conn(ctx), alert_id, action, by, note)
    click.echo(f"recorded {action} on alert #{alert_id} by {by} (action #{action_id})")


@main.command("thresholds")
@click.option("--warning", type=float, help="Drift score above which a WARNING is raised.")
@click.option("--alert", "alert_", type=float, help="Score above which an ALERT (email, Slack) is raised.")
@click.option("--critical", type=float, help="Score above which a CRITICAL (PagerDuty) is raised.")
@click.option("--estimate-margin", type=float,
              help="Drop of the estimated weighted F1 below the reference's that is a WARNING (ESTIMATE_MARGIN).")
@click.option("--reset", is_flag=True, help="Drop the overrides: the settings (environment) apply again.")
@click.option("--by", help="Who changes them (required to change or reset).")
@click.option("--note", help="Why.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@domain_errors
def thresholds_cmd(ctx, warning, alert_, critical, estimate_margin, reset, by, note, as_json) -> None:
    """Show the drift thresholds in force, or change them (audited; overrides the environment)."""
    from .ops import thresholds as ops_thresholds
    from .render import to_json

    conn, s = open_conn(ctx), settings_of(ctx)
    changing = any(v is not None for v in (warning, alert_, critical, estimate_margin))
    if changing or reset:
        if changing and reset:
            raise click.UsageError("Give new thresholds or --reset, not both")
        if not by:
            raise click.UsageError("--by NAME is required to change the thresholds")
        if reset:
            ops_thresholds.reset(conn, by, note)
        else:
            ops_thresholds.update(conn, s, by, warning=warning, alert=alert_, critical=critical, note=note,
                                  estimate_margin=estimate_margin)
    th = ops_thresholds.current(conn, s)
    if as_json:
        click.echo(to_json(th))
        return
    for level in ("warning", "alert", "critical"):
        click.echo(f"{level:9} {th[level]:g}  ({th['source'][level]})")
    click.echo(f"estimate margin {th['estimate_margin']:g}  ({th['estimate_margin_source']})")
    if th["updated_by"]:
        click.echo(f"last changed by {th['updated_by']} at {th['updated_at']:%Y-%m-%d %H:%M:%S %Z}")


@main.command("label-queue")
@click.option("--limit", type=int, default=50, show_default=True, help="How many items (at most 500).")
@click.option("--days", type=int, default=7, show_default=True,
              help="The window of served predictions: today (UTC) and this many whole days before (at most 30).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@domain_errors
def label_queue_cmd(ctx, limit, days, as_json) -> None:
    """The served predictions most worth a human label, best first, with why (label one with
    POST /feedback or the control room's Labelling page)."""
    from .ops.labelling import labelling_queue
    from .render import table, to_json

    items = [it.as_dict() for it in labelling_queue(open_conn(ctx), settings_of(ctx), limit=limit, days=days)]
    if as_json:
        click.echo(to_json(items))
        return
    if not items:
        click.echo(f"nothing to label: no unlabelled served prediction in the last {days} days")
        return
    for it in items:
        it["predicted"] = f"{it['predicted_code']} {it['predicted_category']}".strip()
        it["why"] = "; ".join(it["reasons"])
    click.echo(table(items, ["rank", "score", "inference_id", "productid", "designation", "predicted", "confidence",
                             "why"],
                     ["rank", "score", "inference id", "product", "title", "predicted", "confidence", "why"],
                     width=60))


@main.command("label-disagreements")
@click.option("--limit", type=int, default=50, show_default=True, help="How many products (at most 500).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@domain_errors
def label_disagreements_cmd(ctx, limit, as_json) -> None:
    """Labelled products whose labellers disagree (training takes the latest label): each
    labeller's latest code, the most recently labelled first. Settle one by labelling it again."""
    from .ops.feedback import disagreements
    from .render import labels_text, table, to_json

    found = disagreements(open_conn(ctx), limit=limit)
    if as_json:
        click.echo(to_json(found))
        return
    if not found["total"]:
        click.echo("no disagreement: every labelled product's labellers give the same code")
        return
    rows = [{**it, "labels": labels_text(it["labels"]), "latest": f"{it['latest_code']} {it['latest_category']}"}
            for it in found["items"]]
    click.echo(table(rows, ["productid", "designation", "labels", "latest", "last_labelled_at"],
                     ["product", "title", "labels (each labeller's latest, newest first)", "training takes",
                      "last labelled"], width=60))
    if found["total"] > len(rows):
        click.echo(f"{len(rows)} of {found['total']} shown (--limit)")


# --- pipelines, schedule, demo, UI --------------------------------------------------------------
@main.group("pipeline")
def pipeline_group() -> None:
    """Run a whole pipeline under its lock: weekly, daily or retrain."""


def _run_pipeline(ctx, name: str, as_of, by: str | None, as_json: bool) -> None:
    from .pipeline import run_pipeline

    s = settings_of(ctx)
    json_lines = as_json or os.environ.get("MLOPS_LOG_FORMAT") == "json"
    result = run_pipeline(s, name, trigger_of(by), as_of=as_of.date() if as_of else None,
                          on_step=lambda r: emit(r, json_lines))
    if json_lines:
        click.echo(json.dumps({k: v for k, v in result.as_dict().items() if k != "steps"}, default=str))
    else:
        click.echo(f"{name} pipeline (run #{result.pipeline_run_id}) {result.status}: {result.message}")
    if result.status == "failed":  # by the kind of the failed step's cause (75: worth retrying)
        ctx.exit(EXIT_CODES.get(result.error_code or MlopsError.code, 1))


@pipeline_group.command("weekly")
@click.option("--as-of", type=DATE, help="Pretend today is this date (simulation, backfill).")
@click.option("--by", help="Who runs it (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per step, then the pipeline's.")
@click.pass_context
@domain_errors
def pipeline_weekly(ctx, as_of, by, as_json) -> None:
    """load -> train -> evaluate -> promote; re-running the same week resumes after the last success."""
    _run_pipeline(ctx, "weekly", as_of, by, as_json)


@pipeline_group.command("daily")
@click.option("--as-of", type=DATE, help="Pretend today is this date (simulation, backfill).")
@click.option("--by", help="Who runs it (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per step, then the pipeline's.")
@click.pass_context
@domain_errors
def pipeline_daily(ctx, as_of, by, as_json) -> None:
    """drift -> alert: today's drift report and the alerts it raises or resolves."""
    _run_pipeline(ctx, "daily", as_of, by, as_json)


@pipeline_group.command("retrain")
@click.option("--by", required=True, help="Who asks for the retraining (recorded in the audit trail).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per step, then the pipeline's.")
@click.pass_context
@domain_errors
def pipeline_retrain(ctx, by, as_json) -> None:
    """train -> evaluate -> promote now, on everything loaded (a human's "force retrain")."""
    from .ops.common import actor_of

    _run_pipeline(ctx, "retrain", None, actor_of(by), as_json)  # required: a blank name is refused



@main.group("crontab")
def crontab_group() -> None:
    """The supercronic crontab rendered from crontab.template and the schedule settings."""


@crontab_group.command("render")
@click.option("--out", type=click.Path(dir_okay=False), help="Write it here instead of stdout.")
@click.pass_context
@domain_errors
def crontab_render(ctx, out) -> None:
    """Fill WEEKLY_SCHEDULE, DAILY_SCHEDULE and CRON_TZ into the template (validated)."""
    from pathlib import Path

    from .schedule import default_template, render_crontab, schedule_warnings

    text = render_crontab(settings_of(ctx), default_template())
    for warning in schedule_warnings(settings_of(ctx)):
        click.echo(f"Warning: {warning}", err=True)
    if out:
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise Invalid(f"Cannot write {out}: {exc.strerror or exc}") from None
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


@main.group("ui", invoke_without_command=True)
@click.option("--port", type=int, default=8501, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.pass_context
@domain_errors
def ui_cmd(ctx, port, host) -> None:
    """Start the Streamlit control room (streamlit_app/Home.py); every action in it needs a sign-in.

    UI_AUTH=token (default): prints a sign-in URL with a token made at this start, as Jupyter does.
    UI_AUTH=users: sign in with a name and password of UI_USERS_FILE (`mlops ui add-user NAME`).
    """
    if ctx.invoked_subcommand is not None:
        return
    from pathlib import Path

    from .uiauth import prepare_launch

    app_dir = Path(os.environ.get("MLOPS_STREAMLIT_DIR") or Path(__file__).resolve().parent.parent / "streamlit_app")
    home = app_dir / "Home.py"
    if not home.is_file():
        raise click.ClickException(f"Streamlit app not found at {home}; set MLOPS_STREAMLIT_DIR")
    extra_env, lines = prepare_launch(settings_of(ctx), host, port)
    for line in lines:
        click.echo(line)
    sys.stdout.flush()  # before Streamlit's own output
    cmd = [sys.executable, "-m", "streamlit", "run", str(home), "--server.port", str(port),
           "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    # exec, not a child: a SIGTERM to `mlops ui` (kill, systemd, docker stop) stops the control room
    # and its sign-in token with it, instead of leaving an orphan that still accepts the token
    os.execve(sys.executable, cmd, {**os.environ, **extra_env})


@ui_cmd.command("add-user")
@click.argument("name")
@click.option("--file", "path", type=click.Path(dir_okay=False),
              help="Users file (default: UI_USERS_FILE, else $MLOPS_HOME/ui-users).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (scripts).")
@click.option("--role", type=click.Choice(["viewer", "labeller", "operator"]),
              help="viewer (read only), labeller (also labels predictions) or operator (every action). "
                   "Default: operator for a new user; an existing user keeps its role.")
@click.option("--by", help="Who makes the change (default: MLOPS_ACTOR, else user@host); audited in ui_user_changes.")
@click.pass_context
@domain_errors
def ui_add_user(ctx, name, path, password_stdin, role, by) -> None:
    """Add a control room user (UI_AUTH=users), or change its password or role; stores an argon2
    hash, audited in ui_user_changes. The user's open sessions end at their next page run."""
    from pathlib import Path

    from .uiauth import set_user, users_file

    if password_stdin:
        password = click.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    target = Path(path) if path else users_file(settings_of(ctx))
    before, user = set_user(open_conn(ctx), target, name, password, role, trigger_of(by))
    if before is None:
        click.echo(f"added {user.name} ({user.role}) in {target}")
    else:
        click.echo(f"changed the password of {user.name} in {target}"
                   + (f"; role {before.role} -> {user.role}" if before.role != user.role else f" ({user.role})"))


@ui_cmd.command("remove-user")
@click.argument("name")
@click.option("--file", "path", type=click.Path(dir_okay=False),
              help="Users file (default: UI_USERS_FILE, else $MLOPS_HOME/ui-users).")
@click.option("--by", help="Who makes the change (default: MLOPS_ACTOR, else user@host); audited in ui_user_changes.")
@click.pass_context
@domain_errors
def ui_remove_user(ctx, name, path, by) -> None:
    """Remove a control room user (UI_AUTH=users): its open sessions end at their next page run;
    audited in ui_user_changes."""
    from pathlib import Path

    from .uiauth import remove_user, users_file

    target = Path(path) if path else users_file(settings_of(ctx))
    user = remove_user(open_conn(ctx), target, name, trigger_of(by))
    click.echo(f"removed {user.name} ({user.role}) from {target}")


@main.group("api-token")
def api_token_cmd() -> None:
    """The API's tokens: one per person or service, each with a role (viewer, labeller, operator).

    Only a token's SHA-256 is stored (api_tokens); the token is shown once, when it is made.
    """


@api_token_cmd.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "labeller", "operator"]), required=True,
              help="viewer: reads; labeller: + POST /feedback and the labelling queue; operator: everything.")
@click.option("--note", help="What the token is for.")
@click.option("--by", help="Who makes it (default: MLOPS_ACTOR, else user@host).")
@click.pass_context
@domain_errors
def api_token_add(ctx, name, role, note, by) -> None:
    """Make NAME's API token and print it (once: store it where its user keeps secrets)."""
    from . import access

    token, row = access.create_token(open_conn(ctx), name, role, trigger_of(by).actor, note, settings_of(ctx))
    click.echo(f"API token for {row['name']} ({row['role']}), shown once:")
    click.echo(f"    {token}")
    click.echo("Send it as `Authorization: Bearer <token>`; revoke it with "
               f"`mlops api-token revoke {row['name']}`.")


@api_token_cmd.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@domain_errors
def api_token_list(ctx, include_revoked, as_json) -> None:
    """The API's tokens (names, roles, last use; never the tokens themselves)."""
    from . import access
    from .render import table, to_json

    rows = access.list_tokens(open_conn(ctx), include_revoked)
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        click.echo("No API token: make one with `mlops api-token add NAME --role ROLE`.")
        return
    columns = ["name", "role", "created_at", "created_by", "last_used_at", "note"]
    click.echo(table(rows, columns + (["revoked_at", "revoked_by"] if include_revoked else [])))


@api_token_cmd.command("revoke")
@click.argument("name")
@click.option("--by", help="Who revokes it (default: MLOPS_ACTOR, else user@host).")
@click.pass_context
@domain_errors
def api_token_revoke(ctx, name, by) -> None:
    """Revoke NAME's token: its next request is refused (401). The row stays, for the audit."""
    from . import access

    row = access.revoke_token(open_conn(ctx), name, trigger_of(by).actor)
    click.echo(f"revoked the API token of {row['name']} ({row['role']})")


# Six weeks of a 12,000-row catalogue tell the whole story (three quiet weeks and a forced
# retrain, two drift weeks, the recovery) in under 3 minutes on two cores.
@main.command("demo")
@click.option("--weeks", type=click.IntRange(min=2), default=6, show_default=True)
@click.option("--rows", type=click.IntRange(min=2000), default=12000, show_default=True,
              help="Size of the generated catalogue (the first load is 40% of it, then +3% a week).")
@click.option("--per-day", type=click.IntRange(min=10), default=250, show_default=True,
              help="Simulated predictions per day.")
@click.option("--drift", "drift_kind", type=click.Choice(["vocabulary", "length", "classes"]),
              default="vocabulary", show_default=True, help="The drift injected in the last weeks.")
@click.option("--drift-weeks", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--home", type=click.Path(file_okay=False), default=".mlops-demo", show_default=True,
              help="The demo's own MLOPS_HOME (wiped at start; embedded PostgreSQL).")
@click.pass_context
@domain_errors
def demo_cmd(ctx, weeks, rows, per_day, drift_kind, drift_weeks, home) -> None:
    """Simulate weeks of the job: loads, trainings, promotions, daily drift checks, an alert, a rollback,
    then the recovery: labels of drifted traffic, a retrain on them, its promotion."""
    import time
    from pathlib import Path

    from . import demo
    from .render import table

    t0 = time.monotonic()
    home_path = Path(home).resolve()
    run = demo.run_demo(settings_of(ctx), home=home_path, weeks=weeks, rows=rows, per_day=per_day,
                        drift_kind=drift_kind, drift_weeks=drift_weeks,
                        progress=lambda m: click.echo(m, err=True))
    history = run.weeks
    settings = demo.demo_settings(settings_of(ctx), home_path)
    click.echo("")
    click.echo(table(demo.summary_rows(history),
                     ["week", "monday", "catalogue", "challenger", "weighted_f1", "decision", "champion",
                      "drift", "notes"],
                     ["week", "monday", "catalogue rows", "challenger", "weighted F1", "decision",
                      "champion after", "drift level", "notes"], width=90))
    click.echo("")
    rec = run.recovery
    if rec is not None:
        click.echo(f"recovery: {rec.labels:,} moderator labels of drifted traffic, retrain v{rec.retrained or '-'} "
                   f"(gate {rec.gate or '-'}): {rec.decision or 'no decision'}; champion v{rec.champion}")
        click.echo("performance drift: " + "; ".join(rec.performance))
        click.echo(f"\nweighted F1 on {rec.eval_rows:,} labelled drifted products no model trained on:")
        click.echo(table(demo.recovery_rows(rec), ["model", "role", "f1"], ["model", "role", "weighted F1"]))
        if rec.before is not None and rec.after is not None:
            click.echo(f"live weighted F1 on the drifted traffic: before {rec.before:.4f} (v{rec.rolled_back_to}, "
                       f"rolled back to) -> after {rec.after:.4f} (v{rec.champion}, retrained)")
        click.echo("")
    counts = demo.totals(settings)
    click.echo("recorded: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for line in demo.notification_lines(settings):
        click.echo(f"notified: {line}")
    env = f"MLOPS_HOME={home}"
    click.echo(f"\ndone in {time.monotonic() - t0:.0f}s. Next:")
    click.echo(f"  {env} .venv/bin/mlops runs --limit 30          # the audit trail")
    click.echo(f"  {env} .venv/bin/mlops models                   # versions, decisions, the champion")
    click.echo(f"  {env} .venv/bin/mlops alerts list              # the drift alerts")
    click.echo(f"  {env} .venv/bin/mlops ui                       # the control room, http://127.0.0.1:8501")
    click.echo(f"  {env} API_TOKEN=change-me .venv/bin/mlops serve  # the API, http://127.0.0.1:8000/docs")
    click.echo(f"  {env} .venv/bin/mlops db stop                  # stop the demo's PostgreSQL")


# --- audit --------------------------------------------------------------------------------------
@main.command("runs")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--pipeline", type=click.Choice(values(Pipeline)))
@click.option("--step", type=click.Choice(values(Step)), help="Only this step ('pipeline': whole pipeline runs).")
@click.option("--status", type=click.Choice(values(RunStatus)))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@domain_errors
def runs_cmd(ctx, limit, pipeline, step, status, as_json) -> None:
    """Recent pipeline_runs: what ran, when, who started it, and how it ended."""
    from .ops.runs import list_runs
    from .render import table, to_json

    rows = list_runs(open_conn(ctx), limit=limit, pipeline=pipeline, step=step, status=status)
    if as_json:
        click.echo(to_json(rows))
        return
    if not rows:
        click.echo("no pipeline run matches" if pipeline or step or status else "no pipeline runs yet")
        return
    for r in rows:
        r["who"] = f"{r['triggered_by']}:{r['actor'] or ''}"
        r["result"] = r["error"] or r["outputs"].get("message", "")
        r["gate"] = r["outputs"].get("gate") or ""  # which gate opened a training: load | feedback | drift | forced
    click.echo(table(rows, ["id", "pipeline", "step", "status", "who", "started_at", "duration_s",
                            "upstream_run_id", "gate", "result"],
                     ["id", "pipeline", "step", "status", "triggered by", "started", "secs", "upstream",
                      "gate", "result"], width=70))


def run() -> None:  # pragma: no cover - console entry point alias
    main()


if __name__ == "__main__":  # pragma: no cover
    main()
