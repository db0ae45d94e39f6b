"""Errors as HTTP answers, decided in one place for the whole API.

Domain errors (mlops_cli.errors) answer the status of their `code` (ERROR_CODE_TO_HTTP_STATUS)
with `{"detail": <the message>}`, never by reading the message. A step that failed (StepFailed)
answers by its cause's code; a cause that is no domain error is a server error (500). Invalid
answers 409, not 422: 422 is pydantic's, with its list of field errors (ValidationErrorOut),
while the checks the library makes beyond the request schema answer one sentence (ErrorOut),
documented as a 409 conflict with the request. Invalid input the schema states is a 422.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import Conflict, Forbidden, Invalid, MlopsError, NotFound, TimedOut, Unauthenticated, Unavailable
from ..runs import StepFailed
from ..jsonvalues import storable

ERROR_CODE_TO_HTTP_STATUS = {
    NotFound.code: 404,
    Conflict.code: 409,
    Invalid.code: 409,
    Unavailable.code: 503,
    TimedOut.code: 504,
    Unauthenticated.code: 401,
    Forbidden.code: 403,
    MlopsError.code: 409,
}


def http_error(exc: MlopsError | StepFailed) -> HTTPException:
    """The HTTPException a domain error or a failed step answers."""
    if isinstance(exc, StepFailed):
        cause, r = exc.cause, exc.result
        if isinstance(cause, Unavailable):
            return HTTPException(503, f"{r.step} failed (run #{r.pipeline_run_id}): {r.message}")
        if isinstance(cause, MlopsError):
            return http_error(cause)
        return HTTPException(500, f"{r.step} failed (run #{r.pipeline_run_id}): {r.message}")
    status = ERROR_CODE_TO_HTTP_STATUS.get(exc.code, 409)
    return HTTPException(status, str(exc), headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    error = http_error(exc)  # type: ignore[arg-type]
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _validation_response(exc.errors())


def install(app: FastAPI) -> None:
    """The app's exception handlers: invalid requests (422) and domain errors (by code)."""
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(MlopsError, _on_domain_error)
    app.add_exception_handler(StepFailed, _on_domain_error)


def _validation_response(errors) -> JSONResponse:
    """422 with pydantic's error list (no huge inputs echoed, no union tags) and a summary."""
    out = []
    for e in errors:
        loc = list(e.get("loc", ()))
        if len(loc) >= 2 and loc[0] == "body" and loc[1] in ("product", "batch"):
            del loc[1]
        item = {"type": e.get("type"), "loc": loc, "msg": e.get("msg")}
        value = e.get("input")
        if value is None or isinstance(value, (bool, int)) or isinstance(value, float) and math.isfinite(value):
            item["input"] = value
        elif isinstance(value, str) and len(value) <= 200:
            item["input"] = storable(value)
        out.append(item)
    message = "; ".join(f"{'.'.join(str(x) for x in i['loc'][1:]) or i['loc'][0] if i['loc'] else 'body'}: "
                        f"{i['msg']}" for i in out)
    return JSONResponse({"detail": jsonable_encoder(out), "message": message}, status_code=422)
