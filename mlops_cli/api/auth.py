"""Who calls: the bearer token proves an identity with a role (mlops_cli.access), and every
control or feedback request, refused ones included, is recorded in `api_audit`.

`principal(request)` authenticates once per request (401 without a token or with an unknown or
revoked one, 503 when the API has no token at all); `need(action)` adds the role check (403).
The actor of every row an action writes is the token's name: a `by`, `submitted_by` or X-Actor
that names someone else is refused (403), never recorded as if it were proven.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, Any, Callable

from fastapi import Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .. import access
from ..access import Principal
from ..db import redact
from ..errors import MlopsError, TransientError
from ..jsonvalues import storable
from ..runs import StepFailed
from .errors import http_error
from .routing import ApiRoute, loads

log = logging.getLogger(__name__)

UNAUTHENTICATED = "unauthenticated"  # the actor of a refused request's audit row
AUTH_UNAVAILABLE = "cannot check the API token: the database is unreachable (the API's log says why); try again"
bearer = HTTPBearer(auto_error=False, scheme_name="API token",
                    description="A token made by `mlops api-token add NAME --role ROLE` (or API_TOKEN), "
                                "as `Authorization: Bearer <token>`.")


# --- authentication ----------------------------------------------------------------------------------
def principal(request: Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    from .. import db

    settings = request.app.state.settings
    try:
        who = access.authenticate(
            settings, lambda: db.connection(settings, application_name="mlops-api-auth"),
            credentials.credentials if credentials else None)
    except TransientError as exc:
        # the caller is not proven yet: the connection's details (host, user, database) are the
        # operator's, in the log, not the answer's
        log.error("authentication: %s", exc)
        raise HTTPException(503, AUTH_UNAVAILABLE) from exc
    except MlopsError as exc:
        raise http_error(exc) from exc
    request.state.principal = who
    return who


def need(action: str, what: str) -> Callable:
    """A dependency: the caller's principal, 403 unless its role allows `action`."""

    def dependency(who: Annotated[Principal, Depends(principal)]) -> Principal:
        try:
            return access.require(who, action, what)
        except MlopsError as exc:
            raise http_error(exc) from exc

    return dependency


def actor(request: Request, named: str | None = None, field: str = "by") -> str:
    """The acting principal's name; 403 when the body's `field` or the X-Actor header names
    someone else."""
    who: Principal = request.state.principal
    try:
        access.acting_as(who, named, field)
        return access.acting_as(who, request.headers.get("x-actor"), "X-Actor")
    except MlopsError as exc:
        raise http_error(exc) from exc


XActor = Annotated[str | None, Header(alias="X-Actor", description="Optional; when given, it must be the "
                                                                    "token's own name (403 otherwise).")]


# --- audit -------------------------------------------------------------------------------------------
def _audit(request: Request, route: str, status: int, detail: str | None, started: float,
           result: Any = None) -> None:
    from .. import db, store

    settings = request.app.state.settings
    who: Principal | None = getattr(request.state, "principal", None)
    params: dict[str, Any] = {}
    if request.path_params:
        params["path"] = dict(request.path_params)
    if request.query_params:
        params["query"] = {k: v[:200] for k, v in list(request.query_params.items())[:20]}
    raw = getattr(request, "_body", b"")
    if raw and who is not None:  # a refused caller's body is not kept: nobody vouches for it
        try:
            params["body"] = loads(raw)  # NaN: not JSON, kept as text like any other
        except ValueError:
            params["body"] = raw[:2000].decode("utf-8", "replace")
    run_id = result.get("pipeline_run_id") if isinstance(result, dict) else None
    name = who.name if who else UNAUTHENTICATED
    try:
        with db.connection(settings, application_name="mlops-api-audit") as conn:
            store.insert_api_audit(
                conn, actor=name, authenticated=who is not None, role=who.role if who else None,
                method=request.method, route=route, path=storable(request.url.path)[:2000],
                params=storable(params), status_code=status, detail=storable((detail or "")[:2000]) or None,
                pipeline_run_id=int(run_id) if isinstance(run_id, int) else None,
                client=request.client.host if request.client else None,
                duration_ms=(time.perf_counter() - started) * 1000.0,
            )
    except Exception as exc:  # the action already happened (or was refused): do not mask it
        log.error("API audit row not written (%s %s -> %s by %s): %s", request.method,
                  request.url.path, status, name, exc)


class AuditedRoute(ApiRoute):
    """A route that writes an api_audit row for every request, whatever its outcome."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        route = self.path_format

        async def audited(request: Request):
            started = time.perf_counter()
            try:
                try:
                    response = await handler(request)
                except (MlopsError, StepFailed) as exc:  # answered by its code (api/errors.py)
                    raise http_error(exc) from exc
            except HTTPException as exc:
                await run_in_threadpool(_audit, request, route, exc.status_code, str(exc.detail), started)
                raise
            except RequestValidationError as exc:
                detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}"
                                   for e in exc.errors())
                await run_in_threadpool(_audit, request, route, 422, detail, started)
                raise
            except Exception as exc:
                await run_in_threadpool(_audit, request, route, 500, redact(f"{type(exc).__name__}: {exc}"), started)
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
