"""What every request goes through: metrics and the body-size limit (pure ASGI middleware), and
the route class that turns an unparseable body into the same 422 as any invalid input."""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException


# --- middleware: request metrics -----------------------------------------------------------------
class MetricsMiddleware:
    """Pure ASGI (no per-request task): counts and times every request by route template."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope["mlops.start"] = start
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.metrics.observe_request(scope.get("method", ""), getattr(route, "path", "unmatched"),
                                         status[0], time.perf_counter() - start)


class BodyLimit:
    """413 for a request whose Content-Length (or, chunked, whose body read so far) exceeds what
    the largest valid request can need: MAX_BATCH_SIZE items of two MAX_TEXT_CHARS texts at 12
    bytes a character at most (a character outside the BMP, JSON-escaped as a surrogate pair
    `\\uXXXX\\uXXXX`: what clients that escape non-ASCII send), plus JSON, plus 64 KiB for the
    other bodies (a feedback note: 5000 characters)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def _too_big(self, scope, receive, send) -> None:
        response = JSONResponse({"detail": f"request body over {self.limit} bytes (MAX_BATCH_SIZE x "
                                           "MAX_TEXT_CHARS allow no more)"}, status_code=413)
        await response(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = next((value for name, value in scope.get("headers", ()) if name == b"content-length"), None)
            if length is not None:
                try:
                    too_big = int(length) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._too_big(scope, receive, send)
                    return
            else:
                # no Content-Length (chunked): read the body here, at most the limit, then replay it
                buffered, total = [], 0
                while True:
                    message = await receive()
                    buffered.append(message)
                    if message["type"] != "http.request":
                        break
                    total += len(message.get("body", b""))
                    if total > self.limit:
                        await self._too_big(scope, receive, send)
                        return
                    if not message.get("more_body"):
                        break

                async def replay(upstream=receive):
                    return buffered.pop(0) if buffered else await upstream()

                receive = replay
        await self.app(scope, receive, send)


# --- JSON as RFC 8259 has it ---------------------------------------------------------------------
class NotJsonNumber(ValueError):
    """A number JSON does not have: NaN, Infinity, or one beyond a double's range (1e400)."""


def _no_constant(name: str) -> Any:
    raise NotJsonNumber(f"{name} is not a JSON number (RFC 8259 has no NaN or Infinity)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJsonNumber(f"{text[:40]} is beyond the range of a double")
    return value


def loads(body: bytes | str) -> Any:
    """json.loads without Python's extensions: NaN, Infinity and an overflowing number are refused
    (NotJsonNumber), and bytes are UTF-8 (UnicodeDecodeError otherwise; json.loads would also take
    UTF-16 and UTF-32). None of them passes a schema or a JSONB column: invalid JSON here."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8-sig")  # a leading BOM is allowed (RFC 8259 section 8.1)
    return json.loads(body, parse_constant=_no_constant, parse_float=_finite)


def _json_type(content_type: str) -> bool:
    """Whether FastAPI reads a body of this Content-Type as JSON (application/json, */*+json)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class ApiRoute(APIRoute):
    """A route whose unparseable body is a 422 like any other invalid input.

    FastAPI answers a JSON syntax error with 422 but a body it cannot decode at all (bytes that
    are not UTF-8, nesting too deep) with a bare 400. This app raises no 400 of its own, so that
    400 becomes the same validation error: one documented status for a body that does not parse.

    The body is parsed by `loads`: NaN or Infinity is the same 422 (Python's json would take it,
    and the error's echo and the audit's JSONB could then not hold it).

    A path with several operations (GET and POST /api/thresholds) is several routes; Starlette's
    405 names only the methods of the first one in `Allow`. `path_methods` (set by
    allow_every_method) makes it name every method of the path.
    """

    path_methods: frozenset[str] | None = None

    async def handle(self, scope, receive, send) -> None:
        if self.methods and scope["method"] not in self.methods and self.path_methods:
            raise StarletteHTTPException(status_code=405, headers={"Allow": ", ".join(sorted(self.path_methods))})
        await super().handle(scope, receive, send)

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def parsed(request: Request):
            async def strict_json() -> Any:  # what FastAPI awaits for a JSON body
                if not hasattr(request, "_json"):
                    request._json = loads(await request.body())
                return request._json

            request.json = strict_json
            try:
                return await handler(request)
            except RequestValidationError as exc:
                ctype = request.headers.get("content-type")
                unread = not ctype or not _json_type(ctype)  # FastAPI reads JSON only when it is declared
                if unread and getattr(request, "_body", b"") and \
                        any(e.get("loc", ())[:1] == ("body",) for e in exc.errors()):
                    sent = f"as {ctype[:80]}" if ctype else "without a Content-Type"
                    raise RequestValidationError([{  # not "Input should be a valid dictionary"
                        "type": "content_type", "loc": ("body",),
                        "msg": f"the body was sent {sent}: send JSON, as application/json"}]) from exc
                raise
            except StarletteHTTPException as exc:  # FastAPI raises Starlette's class for this one
                cause = exc.__cause__
                if exc.status_code != 400 or cause is None:
                    raise
                why = str(cause) if isinstance(cause, NotJsonNumber) else f"{type(cause).__name__}: {cause}"
                raise RequestValidationError([{
                    "type": "json_invalid", "loc": ("body",),
                    "msg": f"the body cannot be parsed as JSON: {why}"[:300],
                }]) from exc

        return parsed


def allow_every_method(routes) -> None:
    """Give each ApiRoute the methods of every route on its path (its 405's `Allow`)."""
    by_path: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, ApiRoute):
            by_path.setdefault(route.path_format, set()).update(route.methods or ())
    for route in routes:
        if isinstance(route, ApiRoute):
            route.path_methods = frozenset(by_path[route.path_format])

