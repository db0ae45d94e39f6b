"""Who may act in the control room: the sign-in rules of the Streamlit UI (streamlit_app/).

Every action of the UI (load, train, evaluate, approve, retrain, investigate, acknowledge,
thresholds, rollback) needs a signed-in identity, and that identity is the actor of its audit rows.
Two ways to sign in (UI_AUTH):

- ``token`` (the default, for `mlops ui` on a workstation): `mlops ui` generates a random token at
  each start (unless UI_TOKEN is set), hands it to the Streamlit process in its environment (never
  in a file) and prints a sign-in URL ``http://HOST:PORT/?token=...``, as Jupyter does. Whoever
  opens it acts as UI_ADMIN_NAME, by default the OS user who started `mlops ui`.
- ``users`` (docker compose, shared servers): a users file (UI_USERS_FILE, default
  $MLOPS_HOME/ui-users) of ``name:role:argon2-hash`` lines (``name:argon2-hash``, the format before
  roles, is an operator), written by `mlops ui add-user NAME --role ROLE`; the page asks for a name
  and a password, and the name is the actor.

Every identity has a role (mlops_cli.access: viewer, labeller, operator; the token's admin is an
operator). A sign-in is checked again at every page run (`check_session`): it ends when it is older
than UI_SESSION_HOURS, when its user's line is gone or changed (password, role) or the token changed.
Every attempt is recorded in ui_sign_ins (with the client's address), and a name refused
MAX_FAILURES times from one address since its last success there is refused from that address
without a check, for a pause that doubles (`throttle`); from anywhere, after NAME_MAX_FAILURES.

UI_PUBLIC_READ=true lets the read-only pages render without a sign-in; the action forms are then
replaced by a notice. Nothing here imports streamlit: the pages call these rules and keep the
identity in the session.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import access
from .config import Settings
from .errors import Invalid, MlopsError, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

MODES = ("token", "users")
TOKEN_PARAM = "token"  # the query parameter of the sign-in URL
NAME, check_name = access.NAME, access.check_name  # one rule for every identity's name
MIN_PASSWORD = 8
FALLBACK_ADMIN = "ui-admin"
DEFAULT_ROLE = "operator"  # a line without a role (the format before roles), and a new user by default
TOKEN_ROLE = "operator"  # whoever has the sign-in token started the control room
# Throttle: after MAX_FAILURES refused sign-ins of a name from one address since its last success
# there (within FAILURE_WINDOW_SECONDS), each attempt from it waits FIRST_PAUSE_SECONDS after the
# latest refusal, doubled per further refusal, at most MAX_PAUSE_SECONDS (from every address after
# NAME_MAX_FAILURES). Refusals during a pause do not count (trying on cannot lengthen it).
MAX_FAILURES = 5          # from one address (the client Streamlit sees)
NAME_MAX_FAILURES = 50    # from anywhere: the name pauses for everyone
FAILURE_WINDOW_SECONDS = 15 * 60
FIRST_PAUSE_SECONDS = 30
MAX_PAUSE_SECONDS = 15 * 60
MAX_RECORDED_NAME = 100  # a typed name is recorded (and throttled) cut to this length


class SignInRefused(Invalid):
    """Wrong token, unknown name or wrong password: one message for the last two, so that the
    sign-in form does not tell which names exist. `reason` is what ui_sign_ins records."""

    def __init__(self, message: str, reason: str = "refused"):
        super().__init__(message)
        self.reason = reason


class SessionEnded(Unauthenticated):
    """A sign-in that no longer holds (too old, user removed or changed, token changed)."""

    def __init__(self, why: str):
        super().__init__(f"Your sign-in ended: {why}: sign in again.")


@dataclass(frozen=True)
class Identity:
    name: str
    method: str  # "token" | "password"
    role: str = DEFAULT_ROLE
    signed_at: float = 0.0  # time.time() of the sign-in
    fingerprint: str = ""  # of what proved it (the user's line, the token): see check_session

    def as_dict(self) -> dict:
        return asdict(self)

    def principal(self) -> access.Principal:
        return access.Principal(self.name, self.role, "sign-in token" if self.method == "token" else self.method)


@dataclass(frozen=True)
class User:
    """One line of the users file."""

    name: str
    role: str
    hash: str

    @property
    def line(self) -> str:
        return f"{self.name}:{self.role}:{self.hash}"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.line.encode("utf-8")).hexdigest()


# --- settings -------------------------------------------------------------------------------------------
def mode(settings: Settings) -> str:
    value = (settings.ui_auth or "token").strip().lower()
    if value not in MODES:
        raise Invalid(f"Invalid value for UI_AUTH: {settings.ui_auth!r} (expected one of: {', '.join(MODES)})")
    return value


def users_file(settings: Settings) -> Path:
    return Path(settings.ui_users_file) if settings.ui_users_file else settings.home / "ui-users"


def admin_name(settings: Settings) -> str:
    """Who signs in with the token: UI_ADMIN_NAME, else the OS user running the control room."""
    if settings.ui_admin_name.strip():
        return settings.ui_admin_name.strip()
    import getpass

    try:
        return getpass.getuser() or FALLBACK_ADMIN
    except (KeyError, OSError):  # a container user without a passwd entry
        return FALLBACK_ADMIN


def session_hours(settings: Settings) -> float:
    hours = float(getattr(settings, "ui_session_hours", 12.0))
    if not hours > 0:
        raise Invalid(f"Invalid value for UI_SESSION_HOURS: {hours:g} (expected a number of hours > 0)")
    return hours


def token_problem(settings: Settings) -> str | None:
    """Why UI_TOKEN cannot be used (too short), None when it can (or is unset)."""
    return access.weak_secret("UI_TOKEN", settings.ui_token)


def _token_fingerprint(settings: Settings) -> str:
    return hashlib.sha256(f"token:{admin_name(settings)}:{settings.ui_token}".encode("utf-8")).hexdigest()


# --- `mlops ui` ------------------------------------------------------------------------------------------
def sign_in_url(host: str, port: int, token: str) -> str:
    shown = "localhost" if host in ("", "0.0.0.0", "::", "[::]") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?{TOKEN_PARAM}={token}"


def prepare_launch(settings: Settings, host: str, port: int) -> tuple[dict[str, str], list[str]]:
    """What `mlops ui` adds to the Streamlit process's environment, and the lines it prints.

    Token mode: a new random token per start (UI_TOKEN when the operator set one), passed in the
    environment only, and the sign-in URL. Users mode: where the users are, or how to add one.
    """
    how = mode(settings)
    if how == "token":
        weak = token_problem(settings)
        if weak:  # the control room starts, but nobody can sign in with that token
            return {}, [f"Control room sign-in refused: {weak}."]
        token = settings.ui_token or secrets.token_urlsafe(32)
        return {"UI_TOKEN": token}, [
            f"Control room sign-in (acting as {admin_name(settings)}): open this URL",
            f"    {sign_in_url(host, port, token)}",
            ("The token is UI_TOKEN's" if settings.ui_token else
             "The token is valid until `mlops ui` stops; a new one is made at each start")
            + ". Keep it private: whoever has it can act in the control room."]
    path = users_file(settings)
    try:
        count = len(read_users(path))
    except MlopsError as exc:
        return {}, [f"Control room sign-in: {exc}"]
    if not count:
        return {}, [f"Control room sign-in: {path} has no user yet: create one with `mlops ui add-user NAME`."]
    return {}, [f"Control room sign-in: {count} user(s) in {path} (`mlops ui add-user NAME --role ROLE` adds or "
                "changes one)."]


# --- one attempt: throttled, checked, recorded -----------------------------------------------------------
UNAVAILABLE = ("Sign-in is unavailable: the database, where every sign-in is checked and recorded, cannot "
               "be reached")


def pause_seconds(failures: int) -> float:
    """The pause before the next attempt after `failures` refusals (MAX_FAILURES or more)."""
    return min(MAX_PAUSE_SECONDS, FIRST_PAUSE_SECONDS * 2 ** max(0, failures - MAX_FAILURES))


def client_address(peer: str | None, forwarded: list[str], trusted: tuple) -> str | None:
    """The address a sign-in comes from: the connection's peer, or, when the peer is one of the
    `trusted` proxies (UI_TRUSTED_PROXIES), the nearest address before it in X-Forwarded-For
    (`forwarded`: the header's values) that is not a trusted proxy. Read from the right: each
    proxy appends the address it saw, and everything left of the first untrusted hop was written
    by the client, who can put anything there. peer None: Streamlit's loopback (or no browser)."""
    import ipaddress

    def ip(text: str):
        address = ipaddress.ip_address(text.strip())
        return getattr(address, "ipv4_mapped", None) or address  # ::ffff:10.1.2.3 is 10.1.2.3

    def is_trusted(address) -> bool:
        return any(address.version == net.version and address in net for net in trusted)

    if not trusted:
        return peer
    try:
        here = [ip("127.0.0.1"), ip("::1")] if peer is None else [ip(peer)]
    except ValueError:
        return peer
    if not any(is_trusted(a) for a in here):
        return peer
    for hop in reversed([h for value in forwarded for h in str(value).split(",")]):
        try:
            address = ip(hop)
        except ValueError:  # no proxy we trust wrote this: stop at the last hop one did write
            break
        if not is_trusted(address):
            return str(address)
        peer = str(address)
    return peer


def throttle(conn, name: str, now: datetime | None = None, client: str | None = None) -> SignInRefused | None:
    """The refusal for an attempt of `name` from `client` during its pause, None when it may be
    checked. The pause is the address's (MAX_FAILURES refusals of the name from it), so that
    someone who can reach the page cannot keep a name locked for its owner elsewhere; the name
    pauses for everyone only after NAME_MAX_FAILURES refusals from anywhere (guessing spread over
    many addresses). Read from ui_sign_ins, and judged by the database's clock (`now` default), so
    that it holds across the UI's processes and replicas whatever their clocks say."""
    from . import store

    now = now or store.database_now(conn)
    for where, limit in ((client, MAX_FAILURES), (store.EVERY_CLIENT, NAME_MAX_FAILURES)):
        failures, latest = store.failed_sign_ins_since_success(conn, name, FAILURE_WINDOW_SECONDS, where)
        if failures < limit or latest is None:
            continue
        until = latest + timedelta(seconds=pause_seconds(failures - limit + MAX_FAILURES))
        if now >= until:
            continue
        until = until.astimezone(timezone.utc)
        if until.microsecond:  # the next whole second: "after 12:00:31", never a second too early
            until = until.replace(microsecond=0) + timedelta(seconds=1)
        return SignInRefused(f"Too many refused sign-ins for {name or 'an empty name'}"
                             f"{' from this address' if where is client else ''}: try again after "
                             f"{until:%H:%M:%S} UTC.", "throttled")
    return None


def _default_connection(settings: Settings):
    from .db import connection

    return connection(settings, application_name="mlops-ui-sign-in")


def _attempt(settings: Settings, conn_factory, name: str, method: str, check, throttled: bool = True,
             client: str | None = None) -> Identity:
    """Run `check` (which returns the Identity or raises SignInRefused) unless `name` is in its
    pause, and record the attempt in ui_sign_ins either way (committed before a refusal is raised).

    The database is needed: without it an attempt could be neither throttled nor recorded, so it is
    refused (Unavailable), as every action of the control room would be anyway."""
    import psycopg2

    from . import store

    name = (name or "")[:MAX_RECORDED_NAME]
    factory = conn_factory or (lambda: _default_connection(settings))
    try:
        with factory() as conn:
            try:
                if throttled:  # one attempt of a name at a time: parallel tries cannot all pass
                    store.lock_sign_in(conn, name)
                refused = throttle(conn, name, client=client) if throttled else None
                if refused is not None:
                    raise refused  # not even checked
                identity = check()
            except SignInRefused as exc:
                store.insert_ui_sign_in(conn, name=name, method=method, ok=False, reason=exc.reason, client=client)
                conn.commit()
                raise
            store.insert_ui_sign_in(conn, name=identity.name, method=method, ok=True, role=identity.role,
                                    client=client)
            conn.commit()
            return identity
    except (psycopg2.Error, OSError, Unavailable) as exc:  # the details go to the log, not to the form
        log.warning("control room sign-in of %r refused: the database is unreachable (%s)", name, exc)
        raise Unavailable(UNAVAILABLE) from None


# --- token -----------------------------------------------------------------------------------------------
def _check_token(settings: Settings, token: str | None) -> Identity:
    expected = settings.ui_token
    if not expected:
        raise SignInRefused("No sign-in token is set: start the control room with `mlops ui`, which prints a "
                            "sign-in URL (or set UI_TOKEN).", "no UI_TOKEN")
    weak = token_problem(settings)
    if weak:
        raise SignInRefused(weak, "UI_TOKEN too short")
    if not token or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise SignInRefused("This sign-in token is not valid: open the URL printed by the latest `mlops ui` start.",
                            "wrong token")
    return Identity(admin_name(settings), "token", TOKEN_ROLE, time.time(), _token_fingerprint(settings))


def sign_in_with_token(settings: Settings, token: str | None, conn_factory=None, client: str | None = None) -> Identity:
    """conn_factory(): a context-managed connection (default: db.connection) for ui_sign_ins;
    client: the address the attempt comes from (recorded)."""
    if mode(settings) != "token":
        return _attempt(settings, conn_factory, "", "token", lambda: _refuse(
            "Sign-in links are off (UI_AUTH=users): sign in with your name and password.", "token sign-in is off"),
            throttled=False, client=client)
    # recorded, not throttled: the token is a 256-bit secret, and a pause would only let anyone who
    # reaches the page lock the admin out with five wrong tokens
    return _attempt(settings, conn_factory, admin_name(settings), "token", lambda: _check_token(settings, token),
                    throttled=False, client=client)


def _refuse(message: str, reason: str):
    raise SignInRefused(message, reason)


# --- users file -------------------------------------------------------------------------------------------
def _hasher():
    from argon2 import PasswordHasher  # argon2id with the library's recommended parameters

    return PasswordHasher()


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    """A hash to verify against for unknown names (the same work as for a known one)."""
    if not _DUMMY:
        _DUMMY.append(_hasher().hash(secrets.token_urlsafe(16)))
    return _DUMMY[0]


def read_users(path: Path) -> dict[str, User]:
    """{name: User} of a users file: `name:role:hash` lines, or `name:hash` (an operator: the format
    before roles); blank lines and '#' comments are skipped. A missing file is an empty one; a
    malformed line is an error naming the file and the line."""
    if not path.is_file():
        return {}
    users = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, rest = text.partition(":")
        role, hashed = (DEFAULT_ROLE, rest) if rest.startswith("$") else rest.partition(":")[::2]
        if not sep or not NAME.match(name) or not hashed.startswith("$argon2"):
            raise Invalid(f"{path}:{lineno}: expected `name:role:$argon2id$...` (write entries with "
                          "`mlops ui add-user NAME --role ROLE`)")
        if role not in access.ROLES:
            raise Invalid(f"{path}:{lineno}: unknown role {role!r} (expected one of: {', '.join(access.ROLES)})")
        users[name] = User(name, role, hashed)
    return users


_CACHE: dict[str, tuple[tuple, dict[str, User]]] = {}
RACY_SECONDS = 2.0  # a file changed this recently is read again: its mtime may not show a second change


def cached_users(path: Path) -> dict[str, User]:
    """read_users, parsed again only when the file changed (device, inode, size, mtime): sessions are
    checked against the file at every page run."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _CACHE.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    users = read_users(path)
    if time.time() - st.st_mtime > RACY_SECONDS:
        _CACHE[str(path)] = (key, users)
    return users


def check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise Invalid(f"The password must have at least {MIN_PASSWORD} characters")


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher().hash(password)


def add_user(path: Path, name: str, password: str, role: str | None = None) -> tuple[User | None, User]:
    """Add NAME to the users file, or change its password (and its role when `role` is given);
    (the entry before, None for a new user; the entry written). A new user without `role` is an
    operator; an existing one keeps its role. Open sessions of a changed user end (check_session).

    The file is rewritten whole (comments kept) through a temporary file, readable by its owner only.
    """
    name = check_name(name)
    role = access.check_role(role) if role is not None else None
    hashed = hash_password(password)
    before = read_users(path).get(name)  # and refuse to rewrite a file we cannot parse
    user = User(name, role or (before.role if before else DEFAULT_ROLE), hashed)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else [
        "# mlops control room users (UI_AUTH=users): name:role:argon2 hash, one per line; role: "
        + ", ".join(access.ROLES) + ".",
        "# Written by `mlops ui add-user NAME --role ROLE`; `mlops ui remove-user NAME` revokes a user."]
    replaced = False
    for i, line in enumerate(lines):
        if _line_of(line, name):
            lines[i] = user.line
            replaced = True
    if not replaced:
        lines.append(user.line)
    _write_users(path, "\n".join(lines) + "\n")
    return before, user


def _line_of(line: str, name: str) -> bool:
    return line.strip().partition(":")[0] == name and not line.strip().startswith("#")


def _write_users(path: Path, text: str) -> None:
    """The users file, rewritten whole through a temporary file, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _audited(conn, path: Path, change: dict, write) -> None:
    """Record `change` (ui_user_changes) and run write() (the file), as one: the row is inserted
    first (a database that cannot take it leaves the file as it was), committed after the file is
    written, and the file is put back when the commit fails."""
    from . import store

    old = path.read_text(encoding="utf-8") if path.is_file() else None
    try:
        store.insert_ui_user_change(conn, users_file=str(path), **change)
        write()
        conn.commit()
    except BaseException:
        try:
            conn.rollback()
        finally:  # the file as it was, even when the connection is gone
            if old is None:
                path.unlink(missing_ok=True)
            elif path.is_file() and path.read_text(encoding="utf-8") != old:
                _write_users(path, old)
        raise


def set_user(conn, path: Path, name: str, password: str, role: str | None, trigger) -> tuple[User | None, User]:
    """add_user, audited in ui_user_changes under `trigger`'s actor (`mlops ui add-user`)."""
    from . import store
    from .ops.common import actor_of

    actor = actor_of(trigger, "Say who changes the control room's users (--by NAME)")
    name = check_name(name)
    role = access.check_role(role) if role is not None else None
    check_password(password)  # refused before anything is written
    store.lock_ui_users(conn)
    before = read_users(path).get(name)
    after = role or (before.role if before else DEFAULT_ROLE)
    out = {}
    _audited(conn, path, {"name": name, "change": "changed" if before else "added",
                          "role_before": before.role if before else None, "role": after, "password_changed": True,
                          "actor": actor, "triggered_by": trigger.triggered_by},
             lambda: out.update(result=add_user(path, name, password, role)))
    return out["result"]


def remove_user(conn, path: Path, name: str, trigger) -> User:
    """Take NAME out of the users file (its open sessions end at their next page run), audited in
    ui_user_changes (`mlops ui remove-user`); NotFound when it has no entry."""
    from . import store
    from .errors import NotFound
    from .ops.common import actor_of

    actor = actor_of(trigger, "Say who changes the control room's users (--by NAME)")
    name = (name or "").strip()
    store.lock_ui_users(conn)
    before = read_users(path).get(name)
    if before is None:
        raise NotFound(f"No control room user {name!r} in {path}")
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if not _line_of(line, name)]
    _audited(conn, path, {"name": name, "change": "removed", "role_before": before.role, "role": None,
                          "password_changed": False, "actor": actor, "triggered_by": trigger.triggered_by},
             lambda: _write_users(path, "\n".join(kept) + "\n"))
    return before


UNREADABLE = "Sign-in is unavailable: the users file cannot be read (an administrator must repair it)"


def _check_password(settings: Settings, name: str, password: str | None) -> Identity:
    from argon2.exceptions import InvalidHashError, VerificationError

    path = users_file(settings)
    try:
        users = cached_users(path)  # added users count at once
    except MlopsError as exc:
        log.error("control room users file: %s", exc)  # which line: for the administrator, not the form
        raise SignInRefused(UNREADABLE, "users file unreadable") from None
    if not users:
        raise SignInRefused(f"No user can sign in yet: create one with `mlops ui add-user NAME` "
                            f"(users file {path}).", "no users")
    user = users.get(name)
    try:
        _hasher().verify(user.hash if user else _dummy_hash(), password or "")
    except (VerificationError, InvalidHashError):
        raise SignInRefused("Wrong name or password.", "wrong password" if user else "unknown name") from None
    if user is None:
        raise SignInRefused("Wrong name or password.", "unknown name")
    return Identity(name, "password", user.role, time.time(), user.fingerprint)


def sign_in_with_password(settings: Settings, name: str | None, password: str | None,
                          conn_factory=None, client: str | None = None) -> Identity:
    """conn_factory(): a context-managed connection (default: db.connection) for ui_sign_ins;
    client: the address the attempt comes from (the throttle's unit, recorded)."""
    name = (name or "").strip()
    if mode(settings) != "users":
        return _attempt(settings, conn_factory, name, "password", lambda: _refuse(
            "Password sign-in is off (UI_AUTH=token): open the sign-in URL printed by `mlops ui`.",
            "password sign-in is off"), throttled=False, client=client)
    return _attempt(settings, conn_factory, name, "password", lambda: _check_password(settings, name, password),
                    client=client)


# --- a session, at every page run ---------------------------------------------------------------------------
def check_session(settings: Settings, signed: dict, now: float | None = None) -> Identity:
    """The identity of a session's sign-in (Identity.as_dict()) if it still holds; SessionEnded
    saying why otherwise: older than UI_SESSION_HOURS, the sign-in mode changed, the user's line is
    gone or changed (password, role), the token (or the admin name) changed."""
    try:
        ident = Identity(**{k: signed[k] for k in ("name", "method", "role", "signed_at", "fingerprint")})
    except (KeyError, TypeError):
        raise SessionEnded("it was made before the current sign-in rules") from None
    now = time.time() if now is None else now
    hours = session_hours(settings)
    if not (now - hours * 3600 <= float(ident.signed_at) <= now + 60):  # +60: clocks of two replicas
        raise SessionEnded(f"it is older than {hours:g} h (UI_SESSION_HOURS)")
    how = mode(settings)
    if how != ("token" if ident.method == "token" else "users"):
        raise SessionEnded("the sign-in mode changed (UI_AUTH)")
    if how == "token":
        if token_problem(settings) or not settings.ui_token or not hmac.compare_digest(
                ident.fingerprint, _token_fingerprint(settings)):
            raise SessionEnded("the sign-in token (UI_TOKEN) or UI_ADMIN_NAME changed")
        return ident
    try:
        user = cached_users(users_file(settings)).get(ident.name)
    except MlopsError as exc:
        log.error("control room users file: %s", exc)
        raise SessionEnded("the users file cannot be read") from None
    if user is None:
        raise SessionEnded(f"{ident.name} is no longer in the users file")
    if not hmac.compare_digest(user.fingerprint, ident.fingerprint):
        raise SessionEnded(f"the password or the role of {ident.name} changed")
    return ident
