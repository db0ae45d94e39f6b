"""What the use cases share: who acts, the Trigger a front end records, and small typed results."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import Invalid, NotFound

def required(value: str | None, what: str) -> str:
    """`value` stripped; Invalid "<what> is required" when it is empty or blank."""
    text = (value or "").strip()
    if not text:
        raise Invalid(f"{what} is required")
    return text


def one_of(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    """`value` when it is one of `allowed` (None or "" for no filter); Invalid otherwise."""
    if value in (None, ""):
        return None
    if value not in allowed:
        raise Invalid(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def found(row: dict | None, message: str) -> dict:
    """`row`, or NotFound(message) when there is none."""
    if row is None:
        raise NotFound(message)
    return row


def actor_of(by, hint: str = "Say who takes the action (--by NAME)") -> str:
    """The name an action is recorded with: no action without an identity. `by` is a name, or
    the Trigger a front end made (trigger(): its actor, already checked)."""
    by = getattr(by, "actor", by)
    if by is None or not str(by).strip():
        raise Invalid(hint)
    return str(by).strip()


def trigger(front_end: str, actor: str | None, **kw):
    """The Trigger a front end records on pipeline_runs: the CLI's comes from the environment
    (MLOPS_TRIGGERED_BY, --by or user@host); the API's and the UI's name who acts."""
    from ..runs import Trigger

    if front_end == "cli":
        return Trigger.from_env(actor, **kw)
    if front_end == "ui":
        actor = required(actor, "A signed-in identity")
    return Trigger(triggered_by=front_end, actor=actor, **kw)


@dataclass
class Recorded:
    """An action that only records a decision (alert_actions), or changes a setting."""

    status: str
    message: str
    action_id: int | None = None
    thresholds: dict | None = None

    ok = True

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, **asdict(self)}


@dataclass
class Launched:
    """A pipeline started in the background (pipeline.launch): its pipeline_runs id."""

    pipeline_run_id: int
    pipeline: str
    action_id: int | None = None

    status = "started"
    ok = True

    @property
    def message(self) -> str:
        return f"{self.pipeline} pipeline run #{self.pipeline_run_id} started in the background"

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, "status": self.status, "message": self.message, **asdict(self)}


def ping(conn) -> bool:
    """True when the connection still answers (a cached connection is re-made otherwise)."""
    from .. import store

    if getattr(conn, "closed", True):
        return False
    try:
        return store.ping(conn)
    except Exception:
        return False


def is_connection_error(exc: BaseException) -> bool:
    """The database went away under a read (the UI then drops its cached connection)."""
    import psycopg2

    return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))
