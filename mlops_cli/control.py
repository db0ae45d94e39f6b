"""The control API: pipeline and model actions over HTTP, mounted at /api by api.create_app.

Every route needs `Authorization: Bearer <API_TOKEN>` (401 without a bearer token, 403 with a
wrong one, compared in constant time). With no API_TOKEN configured the control API is
disabled: every route answers 503, it is never open. Who acts: the body's `by` when given, else
the `X-Actor` header, else "api"; pipeline_runs rows record it with triggered_by='api'.

Routes call the same library functions as the CLI; the business rules live there. Every
control request, refused ones included, is recorded in `api_audit` (who, when, route,
parameters, status code).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from typing import Annotated, Any, Callable, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .api import ID_MAX, INVALID, NO_NUL, NOT_BLANK_TEXT, ApiRoute, error_doc, json_integer
from .errors import AlreadyRunning, MlopsError, TransientError
from .steps import alert as alert_steps
from .steps.alert import STATUSES as ALERT_STATUSES

log = logging.getLogger(__name__)

DISABLED = "control API disabled: set API_TOKEN"
_bearer = HTTPBearer(auto_error=False, scheme_name="API token",
                     description="The value of API_TOKEN, as `Authorization: Bearer <token>`.")


# --- audit ---------------------------------------------------------------------------------------
def _storable(value: Any) -> Any:
    """`value` with NUL and lone surrogates replaced: PostgreSQL text and JSONB hold neither, and
    the audit row of a request that sent them (refused with a 422) must still be written."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _audit(request: Request, route: str, status: int, detail: str | None, started: float,
           result: Any = None) -> None:
    from . import db, store

    settings = request.app.state.settings
    params: dict[str, Any] = {}
    if request.path_params:
        params["path"] = dict(request.path_params)
    if request.query_params:
        params["query"] = dict(request.query_params)
    raw = getattr(request, "_body", b"")
    if raw:
        try:
            params["body"] = json.loads(raw)
        except ValueError:
            params["body"] = raw[:2000].decode("utf-8", "replace")
    run_id = None
    if isinstance(result, dict):
        run_id = result.get("pipeline_run_id") or result.get("run_id")
    actor = getattr(request.state, "actor", None) or _header_actor(request)
    try:
        with db.connection(settings, application_name="mlops-api-audit") as conn:
            store.insert_api_audit(
                conn, actor=_storable(actor), authenticated=bool(getattr(request.state, "authenticated", False)),
                method=request.method, route=route, path=_storable(request.url.path), params=_storable(params),
                status_code=status, detail=_storable((detail or "")[:2000]) or None,
                pipeline_run_id=int(run_id) if isinstance(run_id, int) else None,
                client=request.client.host if request.client else None,
                duration_ms=(time.perf_counter() - started) * 1000.0,
            )
    except Exception as exc:  # the action already happened (or was refused): do not mask it
        log.error("control API audit row not written (%s %s -> %s by %s): %s", request.method,
                  request.url.path, status, actor, exc)


class AuditedRoute(ApiRoute):
    """A route that writes an api_audit row for every request, whatever its outcome."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        route = self.path_format

        async def audited(request: Request):
            started = time.perf_counter()
            try:
                response = await handler(request)
            except HTTPException as exc:
                await run_in_threadpool(_audit, request, route, exc.status_code, str(exc.detail), started)
                raise
            except RequestValidationError as exc:
                detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}"
                                   for e in exc.errors())
                await run_in_threadpool(_audit, request, route, 422, detail, started)
                raise
            except Exception as exc:
                await run_in_threadpool(_audit, request, route, 500, f"{type(exc).__name__}: {exc}", started)
                raise
            result = None
            if request.method != "GET":
                try:
                    result = json.loads(response.body)
                except (AttributeError, ValueError):
                    result = None
            detail = None
            if isinstance(result, dict):
                detail = json.dumps(result, default=str)[:2000]
            await run_in_threadpool(_audit, request, route, response.status_code, detail, started, result)
            return response

        return audited


# --- authentication and actor -----------------------------------------------------------------------
def _header_actor(request: Request) -> str:
    value = (request.headers.get("x-actor") or "").strip()
    return value[:200] if value else "api"


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    request.state.actor = _header_actor(request)
    token = request.app.state.settings.api_token
    if not token:
        raise HTTPException(503, DISABLED)
    if credentials is None or not credentials.credentials:
        raise HTTPException(401, "missing bearer token: send 'Authorization: Bearer <API_TOKEN>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode("utf-8"), token.encode("utf-8")):
        raise HTTPException(403, "invalid API token")
    request.state.authenticated = True


def actor_of(request: Request, by: str | None = None) -> str:
    actor = (by or "").strip()[:200] or _header_actor(request)
    request.state.actor = actor
    return actor


XActor = Annotated[str | None, Header(alias="X-Actor", description="Who acts (default: api); "
                                                                    "the body's `by` wins.")]

router = APIRouter(
    prefix="/api", tags=["control"], route_class=AuditedRoute, dependencies=[Depends(require_token)],
    responses={401: error_doc("No bearer token.", headers={"WWW-Authenticate": {
                   "description": "`Bearer`", "schema": {"type": "string"}}}),
               403: error_doc("Wrong token."),
               503: error_doc(DISABLED + " (or the database or the MLflow registry is unreachable).")},
)


# --- helpers ----------------------------------------------------------------------------------------
def _conn(request: Request):
    from . import db

    return db.connection(request.app.state.settings, application_name="mlops-api-control")


def _sibling(module: str, feature: str):
    """Import a module written alongside the API; 501 when this build does not have it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise HTTPException(501, f"{feature} is not available in this build ({module} is missing)") from exc
        raise


_NOT_FOUND = re.compile(r"\bno [a-z ]{0,30}#?\d+\b|\bnot found\b|\bdoes not exist\b|\bno such\b")


def _domain(exc: Exception) -> HTTPException:
    """Library errors as HTTP errors: unknown id 404, busy/conflict 409, unreachable 503, a step
    that failed for another reason 500. Anything else propagates (500)."""
    from .runs import StepFailed

    if isinstance(exc, StepFailed):
        cause, r = exc.cause, exc.result
        if isinstance(cause, TransientError):
            return HTTPException(503, f"{r.step} failed (run #{r.run_id}): {r.message}")
        if isinstance(cause, MlopsError):
            return _domain(cause) if not isinstance(cause, StepFailed) else HTTPException(409, r.message)
        return HTTPException(500, f"{r.step} failed (run #{r.run_id}): {r.message}")
    if isinstance(exc, AlreadyRunning):
        return HTTPException(409, str(exc))
    if isinstance(exc, TransientError):
        return HTTPException(503, str(exc))
    if isinstance(exc, MlopsError):
        text = str(exc)
        return HTTPException(404 if _NOT_FOUND.search(text.lower()) else 409, text)
    raise exc


def _result(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    return jsonable_encoder(value)


def _trigger(actor: str):
    from .runs import Trigger

    return Trigger(triggered_by="api", actor=actor, pipeline="manual")


# --- models -----------------------------------------------------------------------------------------
# As in api.py, every rule the server checks is in the schema: free text refuses NUL (PostgreSQL
# text cannot hold it), a version is a registry version number.
VERSION_PATTERN = r"^[1-9][0-9]{0,14}$"  # as a number: 1 .. 10**15 - 1, exact as a float
Actor = Annotated[str | None, Field(max_length=200, pattern=NO_NUL,
                                    description="Who acts (default: X-Actor, else 'api').")]
Text = Annotated[str | None, Field(max_length=2000, pattern=NO_NUL)]


class RetrainIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"by": "alice", "reason": "new catalogue data"}]})

    by: Actor = None
    reason: Text = None


class RetrainOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"pipeline_run_id": 42, "status": "started"}]})

    pipeline_run_id: int
    status: Literal["started"]


class RollbackIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"reason": "F1 dropped on the new catalogue", "by": "alice"},
        {"reason": "incident INC-123", "to_version": "3"},
    ]})

    # The pattern is in the schema; _reason checks the same with messages a person can act on.
    reason: str = Field(..., min_length=1, max_length=2000, description="Why (required, not blank; audited).",
                        json_schema_extra={"pattern": NOT_BLANK_TEXT})
    to_version: str | None = Field(
        None, max_length=15, pattern=VERSION_PATTERN,
        description="Version to return to (default: the previous champion); a number, or its digits.",
        # _version turns a number into its digits: the schema says both are accepted
        json_schema_extra={"anyOf": [{"type": "string", "pattern": VERSION_PATTERN},
                                     {"type": "integer", "minimum": 1, "maximum": 10 ** 15 - 1},
                                     {"type": "null"}]})
    by: Actor = None

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("reason must not contain NUL (\\x00) characters: they cannot be stored")
        if not v.strip():
            raise ValueError("reason must not be blank: say why the model is rolled back")
        return v.strip()

    @field_validator("to_version", mode="before")
    @classmethod
    def _version(cls, v):
        v = json_integer(v)
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class AcknowledgeIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"by": "alice", "note": "looking into it"}]})

    by: Actor = None
    note: Text = None


class StepOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "step": "rollback", "status": "succeeded", "run_id": 57,
        "message": "champion 4 -> 3", "outputs": {"from_version": "4", "to_version": "3"}}]})

    step: str
    status: str
    run_id: int | None
    message: str
    outputs: dict


Rows = list[dict[str, Any]]


# --- routes -----------------------------------------------------------------------------------------
@router.post("/trigger-retrain", status_code=202, response_model=RetrainOut,
             summary="Start a retrain pipeline in the background",
             description="Starts `mlops pipeline retrain` in a background process and answers at once "
                         "with its pipeline run id (follow it with GET /api/runs). 409 when a retrain "
                         "is already running.",
             responses={409: error_doc("A retrain pipeline is already running, or it could not start."),
                        422: INVALID,
                        501: error_doc("This build has no pipeline module.")})
def trigger_retrain(request: Request, body: Annotated[RetrainIn | None, Body()] = None,
                    x_actor: XActor = None) -> dict:
    body = body or RetrainIn()
    actor = actor_of(request, body.by)
    pipeline = _sibling("mlops_cli.pipeline", "trigger-retrain")
    try:
        run_id = pipeline.launch(request.app.state.settings, "retrain", actor=actor, triggered_by="api")
    except MlopsError as exc:
        raise _domain(exc) from exc
    return {"pipeline_run_id": int(run_id), "status": "started"}


@router.post("/rollback-model", response_model=StepOut, summary="Roll the champion back",
             description="Moves the `champion` alias back to the previous champion (or `to_version`), "
                         "as `mlops rollback` does, and records it. The API serves the restored "
                         "version right after (it re-checks the alias at once). 404 when `to_version` "
                         "does not exist, 409 when there is nothing to roll back to.",
             responses={404: error_doc("`to_version` is not a version of the model."),
                        409: error_doc("Nothing to roll back to, `to_version` is the champion or was "
                                       "never in production, or another rollback is running."),
                        422: INVALID,
                        501: error_doc("This build has no rollback step.")})
def rollback_model(request: Request, body: RollbackIn, x_actor: XActor = None) -> dict:
    actor = actor_of(request, body.by)
    module = _sibling("mlops_cli.steps.rollback", "rollback-model")
    settings = request.app.state.settings
    try:
        with _conn(request) as conn:
            result = module.rollback(conn, settings, _trigger(actor), to_version=body.to_version,
                                     reason=body.reason)
    except Exception as exc:
        raise _domain(exc) from exc
    if getattr(result, "status", None) == "skipped":
        raise HTTPException(409, result.message or "rollback skipped")
    holder = getattr(request.app.state, "holder", None)
    if holder is not None:
        holder.wake()
    return _result(result)


@router.get("/alerts", summary="Drift alerts", response_model=Rows,
            description="Alerts raised by drift monitoring, active first then newest (as `mlops alerts`).",
            responses={422: INVALID})
def alerts(request: Request,
           status: Annotated[Literal[ALERT_STATUSES] | None,
                             Query(description="Only alerts in this status.")] = None,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    actor_of(request)
    try:
        with _conn(request) as conn:
            rows = alert_steps.list_alerts(conn, status=status, limit=limit)
    except Exception as exc:
        raise _domain(exc) from exc
    return _result(rows)


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge a drift alert",
             response_model=dict[str, Any],
             description="Marks the alert acknowledged by `by` with an optional note (as "
                         "`mlops alert ack`). Answers the alert.",
             responses={404: error_doc("No such alert."),
                        409: error_doc("The alert is resolved: nothing to acknowledge."),
                        422: INVALID})
def acknowledge_alert(request: Request, alert_id: Annotated[int, Path(ge=1, le=ID_MAX)],
                      body: Annotated[AcknowledgeIn | None, Body()] = None, x_actor: XActor = None) -> Any:
    body = body or AcknowledgeIn()
    actor = actor_of(request, body.by)
    try:
        with _conn(request) as conn:
            result = alert_steps.acknowledge(conn, request.app.state.settings, alert_id, by=actor,
                                             note=body.note)
    except Exception as exc:
        raise _domain(exc) from exc
    return _result(result) if result is not None else {"id": alert_id, "status": "acknowledged", "by": actor}


@router.get("/runs", summary="Pipeline runs", response_model=Rows,
            description="Recent pipeline_runs rows: what ran, when, who started it, how it ended "
                        "(as `mlops runs`).",
            responses={422: INVALID})
def runs(request: Request,
         limit: Annotated[int, Query(ge=1, le=1000)] = 20,
         pipeline: Annotated[Literal["weekly", "daily", "manual", "retrain"] | None, Query()] = None,
         step: Annotated[str | None, Query(max_length=50, pattern=NO_NUL)] = None,
         status: Annotated[Literal["running", "succeeded", "failed", "skipped"] | None, Query()] = None) -> Any:
    from . import store

    actor_of(request)
    try:
        with _conn(request) as conn:
            rows = store.list_runs(conn, limit=limit, pipeline=pipeline, step=step, status=status)
    except Exception as exc:
        raise _domain(exc) from exc
    return _result(rows)


@router.get("/models", summary="Registered model versions", response_model=Rows,
            description="Every version with its aliases, tags and scores (as `mlops models`).",
            responses={501: error_doc("This build has no models module.")})
def models(request: Request) -> Any:
    actor_of(request)
    module = _sibling("mlops_cli.models", "models")
    try:
        with _conn(request) as conn:
            rows = module.list_models(conn, request.app.state.settings)
    except Exception as exc:
        raise _domain(exc) from exc
    return _result(rows)


@router.get("/audit", summary="Control API audit trail", response_model=Rows,
            description="The latest control requests: who, when, route, parameters, status code.",
            responses={422: INVALID})
def audit(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          route: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None) -> Any:
    from . import store

    actor_of(request)
    try:
        with _conn(request) as conn:
            rows = store.list_api_audit(conn, limit=limit, route=route)
    except Exception as exc:
        raise _domain(exc) from exc
    return _result(rows)
