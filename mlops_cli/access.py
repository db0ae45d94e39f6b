"""Who may do what: the roles, and the API's tokens (docs/API.md "Identities and roles").

Every identity -- an API token, a control room user -- has one role, and every action needs one:

- ``viewer``: read (runs, models, alerts, thresholds, drift, the audit trail);
- ``labeller``: a viewer who also labels predictions (POST /feedback, the labelling queue);
- ``operator``: everything (load, train, retrain, evaluate, approve, roll back, acknowledge,
  investigate, change thresholds).

The API and the control room check the same table (NEEDS). An API token is a random secret made
by `mlops api-token add NAME --role R`; only its SHA-256 is stored (api_tokens), and its name is
the actor of every row its requests write -- a request cannot name anyone else. API_TOKEN, when
set, is one more token: the operator API_TOKEN_NAME.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass

from . import store
from .config import Settings
from .errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated

ROLES = ("viewer", "labeller", "operator")  # each allows what the ones before it do
READ, LABEL, OPERATE = "read", "label", "operate"
NEEDS = {READ: "viewer", LABEL: "labeller", OPERATE: "operator"}
TOKEN_PREFIX = "mlops_"
MIN_TOKEN_CHARS = 16  # API_TOKEN and UI_TOKEN shorter than this are refused, not used
MISSING = "missing bearer token: send 'Authorization: Bearer <token>' (`mlops api-token add NAME` makes one)"
INVALID = "invalid API token (unknown or revoked)"


@dataclass(frozen=True)
class Principal:
    """A proven identity: its name is the actor of the audit rows it writes."""

    name: str
    role: str
    via: str  # "token" (api_tokens), "API_TOKEN", "password", "sign-in token"

    def as_dict(self) -> dict:
        return asdict(self)


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")  # no ':' (the users file's separator), no spaces


# the actors the system writes itself: a person or a token by that name would read as them
RESERVED = {"cron": "the scheduler's runs", "unauthenticated": "the API requests refused before a token was proven",
            "demo-scheduler": "the demo's scheduled runs"}


def check_name(name: str) -> str:
    """The name of an identity (a token's, a control room user's), stripped; Invalid otherwise."""
    name = (name or "").strip()
    if not NAME.match(name):
        raise Invalid(f"Invalid user name {name!r}: 1 to 64 letters, digits or . _ @ + - (no spaces, no ':')")
    if name.lower() in RESERVED:
        raise Invalid(f"Invalid user name {name!r}: reserved, it is the actor of {RESERVED[name.lower()]}")
    return name


def check_role(role: str | None) -> str:
    value = (role or "").strip().lower()
    if value not in ROLES:
        raise Invalid(f"Unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return value


def allows(role: str, action: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(NEEDS[action])


def require(principal: Principal, action: str, what: str) -> Principal:
    """`principal` when its role allows `action`; Forbidden naming the role needed otherwise."""
    if not allows(principal.role, action):
        raise Forbidden(f"{principal.name} is a {principal.role}: {what} needs the {NEEDS[action]} role")
    return principal


def acting_as(principal: Principal, named: str | None, field: str = "by") -> str:
    """The actor of an action: the principal's name. A request that names someone else (a body's
    `by`, an X-Actor header) is refused: an identity is proven, never claimed."""
    claimed = (named or "").strip()
    if claimed and claimed != principal.name:
        raise Forbidden(f"this token acts as {principal.name}; {field} names {claimed!r}: use that "
                        "person's own token (`mlops api-token add NAME`)")
    return principal.name


def weak_secret(name: str, value: str) -> str | None:
    """Why a configured shared secret is refused (too short), None when it is usable."""
    if value and len(value.strip()) < MIN_TOKEN_CHARS:
        return (f"{name} is too short ({len(value.strip())} characters, at least {MIN_TOKEN_CHARS}): "
                f"make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return None


# --- API tokens -------------------------------------------------------------------------------------
def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(conn, name: str, role: str, created_by: str, note: str | None = None,
                 settings: Settings | None = None) -> tuple[str, dict]:
    """(the new token, shown once; its row), committed. One active token per name: revoke the
    old one first. `settings`: API_TOKEN_NAME is refused (two secrets, one actor)."""
    import psycopg2

    from .ops.common import actor_of

    name, role = check_name(name), check_role(role)
    shared_name = (settings.api_token_name.strip() or "api") if settings is not None else None
    if name == shared_name:
        raise Conflict(f"{name} is API_TOKEN_NAME, the actor of API_TOKEN: give this token another name")
    created_by = actor_of(created_by, "Say who makes the token (--by NAME)")
    taken = Conflict(f"{name} already has an active API token: revoke it first (`mlops api-token revoke {name}`)")
    if any(t["name"] == name for t in store.list_api_tokens(conn)):
        raise taken
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        row = store.insert_api_token(conn, name=name, role=role, token_sha256=_digest(token),
                                     created_by=created_by, note=(note or "").strip() or None)
        conn.commit()
    except psycopg2.IntegrityError:  # made at the same moment by another command
        conn.rollback()
        raise taken from None
    return token, row


def revoke_token(conn, name: str, revoked_by: str) -> dict:
    """Revoke NAME's active token (committed): its next request is refused (401)."""
    from .ops.common import actor_of

    row = store.revoke_api_token(conn, (name or "").strip(), actor_of(revoked_by, "Say who revokes it (--by NAME)"))
    if row is None:
        conn.rollback()
        raise NotFound(f"{name!r} has no active API token (see `mlops api-token list`)")
    conn.commit()
    return row


def overview(conn, limit: int = 20) -> dict:
    """Who has access and how it was used, for the control room (operators): the active API
    tokens, the latest control room sign-ins (refused ones included) and user changes."""
    out = {"tokens": store.list_api_tokens(conn), "sign_ins": store.list_ui_sign_ins(conn, limit),
           "user_changes": store.ui_user_changes(conn, limit=limit)}
    conn.rollback()  # a read: end the transaction
    return out


def list_tokens(conn, include_revoked: bool = False) -> list[dict]:
    rows = store.list_api_tokens(conn, include_revoked)
    conn.rollback()  # a read: end the transaction
    return rows


def authenticate(settings: Settings, conn_factory, token: str | None) -> Principal:
    """The principal a bearer token proves. `conn_factory()` opens a database connection (a
    context manager); it is opened only when the token is not API_TOKEN.

    Unauthenticated (401) without a token, or with one that is unknown or revoked; Unavailable when
    the control API has no token at all (API_TOKEN unset or refused, api_tokens empty)."""
    from .errors import Unavailable

    shared = settings.api_token.strip()
    shared_ok = bool(shared) and weak_secret("API_TOKEN", shared) is None
    presented = (token or "").strip()
    if presented and shared_ok and hmac.compare_digest(presented.encode(), shared.encode()):
        return Principal(settings.api_token_name.strip() or "api", "operator", "API_TOKEN")
    if not presented and shared_ok:  # the API has a token: a request without one costs no connection
        raise Unauthenticated(MISSING)
    with conn_factory() as conn:
        if presented:
            row = store.use_api_token(conn, _digest(presented))
            if row is not None:
                return Principal(row["name"], row["role"], "token")
        if not shared_ok and not store.has_active_api_token(conn):
            why = weak_secret("API_TOKEN", shared) if shared else None
            raise Unavailable("control API disabled: " + (why or "set API_TOKEN or create a token with "
                                                                "`mlops api-token add NAME --role operator`"))
    raise Unauthenticated(INVALID if presented else MISSING)
