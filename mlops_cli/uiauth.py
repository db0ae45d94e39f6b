"""Who may act in the control room: the sign-in rules of the Streamlit UI (streamlit_app/).

Every action of the UI (load, train, evaluate, approve, retrain, investigate, acknowledge,
thresholds, rollback) needs a signed-in identity, and that identity is the actor of its audit rows.
Two ways to sign in (UI_AUTH):

- ``token`` (the default, for `mlops ui` on a workstation): `mlops ui` generates a random token at
  each start (unless UI_TOKEN is set), hands it to the Streamlit process in its environment (never
  in a file) and prints a sign-in URL ``http://HOST:PORT/?token=...``, as Jupyter does. Whoever
  opens it acts as UI_ADMIN_NAME, by default the OS user who started `mlops ui`.
- ``users`` (docker compose, shared servers): a users file (UI_USERS_FILE, default
  $MLOPS_HOME/ui-users) of ``name:argon2-hash`` lines, written by `mlops ui add-user NAME`; the
  page asks for a name and a password, and the name is the actor.

UI_PUBLIC_READ=true lets the read-only pages render without a sign-in; the action forms are then
replaced by a notice. Nothing here imports streamlit: the pages call these rules and keep the
identity in the session.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Settings
from .errors import Invalid, MlopsError

MODES = ("token", "users")
TOKEN_PARAM = "token"  # the query parameter of the sign-in URL
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")  # no ':' (the file's separator), no spaces
MIN_PASSWORD = 8
FALLBACK_ADMIN = "ui-admin"


class SignInRefused(Invalid):
    """Wrong token, unknown name or wrong password: one message for the last two, so that the
    sign-in form does not tell which names exist."""


@dataclass(frozen=True)
class Identity:
    name: str
    method: str  # "token" | "password"

    def as_dict(self) -> dict:
        return asdict(self)


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
    return {}, [f"Control room sign-in: {count} user(s) in {path} (`mlops ui add-user NAME` adds or changes one)."]


# --- token -----------------------------------------------------------------------------------------------
def sign_in_with_token(settings: Settings, token: str | None) -> Identity:
    if mode(settings) != "token":
        raise SignInRefused("Sign-in links are off (UI_AUTH=users): sign in with your name and password.")
    expected = settings.ui_token
    if not expected:
        raise SignInRefused("No sign-in token is set: start the control room with `mlops ui`, which prints a "
                            "sign-in URL (or set UI_TOKEN).")
    if not token or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise SignInRefused("This sign-in token is not valid: open the URL printed by the latest `mlops ui` start.")
    return Identity(admin_name(settings), "token")


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


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME.match(name):
        raise Invalid(f"Invalid user name {name!r}: 1 to 64 letters, digits or . _ @ + - (no spaces, no ':')")
    return name


def read_users(path: Path) -> dict[str, str]:
    """{name: hash} of a users file; blank lines and '#' comments are skipped. A missing file is
    an empty one; a malformed line is an error naming the file and the line."""
    if not path.is_file():
        return {}
    users = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, hashed = text.partition(":")
        if not sep or not NAME.match(name) or not hashed.startswith("$argon2"):
            raise Invalid(f"{path}:{lineno}: expected `name:$argon2id$...` (write entries with "
                             "`mlops ui add-user NAME`)")
        users[name] = hashed
    return users


def hash_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise Invalid(f"The password must have at least {MIN_PASSWORD} characters")
    return _hasher().hash(password)


def add_user(path: Path, name: str, password: str) -> bool:
    """Add NAME to the users file, or change its password; True when it was already there.

    The file is rewritten whole (comments kept) through a temporary file, readable by its owner only.
    """
    name = check_name(name)
    hashed = hash_password(password)
    read_users(path)  # refuse to rewrite a file we cannot parse
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else [
        "# mlops control room users (UI_AUTH=users): name:argon2 hash, one per line.",
        "# Written by `mlops ui add-user NAME`; delete a line to revoke a user."]
    replaced = False
    for i, line in enumerate(lines):
        if line.strip().partition(":")[0] == name and not line.strip().startswith("#"):
            lines[i] = f"{name}:{hashed}"
            replaced = True
    if not replaced:
        lines.append(f"{name}:{hashed}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return replaced


def sign_in_with_password(settings: Settings, name: str | None, password: str | None) -> Identity:
    from argon2.exceptions import InvalidHashError, VerificationError

    if mode(settings) != "users":
        raise SignInRefused("Password sign-in is off (UI_AUTH=token): open the sign-in URL printed by `mlops ui`.")
    name = (name or "").strip()
    users = read_users(users_file(settings))  # read at each attempt: added users count at once
    if not users:
        raise SignInRefused(f"No user can sign in yet: create one with `mlops ui add-user NAME` "
                            f"(users file {users_file(settings)}).")
    stored = users.get(name)
    try:
        _hasher().verify(stored or _dummy_hash(), password or "")
    except (VerificationError, InvalidHashError):
        stored = None
    if stored is None:
        raise SignInRefused("Wrong name or password.")
    return Identity(name, "password")
