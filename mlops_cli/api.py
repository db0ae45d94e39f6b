"""The prediction API (FastAPI): `create_app()` is the factory `mlops serve` runs.

Routes: POST /predict (one product or a batch), POST /feedback, GET /health, GET /metrics, and
the token-protected control API under /api (mlops_cli.control). Interactive docs at /docs.

The request path reads the served model once (serving.ModelHolder.current), predicts, answers,
and appends the rows to the inference log's in-memory buffer; the database is written by the
logger's thread. Heavy work (a large batch, or a model without the fast path) runs in the
thread pool so the event loop keeps answering.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
import secrets
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Annotated, Any, Callable, Literal, Union

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictInt, Tag,
                      field_validator, model_validator)
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .categories import PRDTYPECODES, category_name
from .config import Settings, load_settings

log = logging.getLogger(__name__)

NO_MODEL = "No model in production yet: promote a model (mlops promote) first"
INLINE_ITEMS = 4  # fast-path requests up to this size are predicted on the event loop (~1 ms each)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")

TAGS = [
    {"name": "prediction", "description": "Classify products into the 27 Rakuten `prdtypecode` classes "
                                          "with the model behind the `champion` alias."},
    {"name": "feedback", "description": "Moderators' corrections of predictions (the true class)."},
    {"name": "operations", "description": "Health and Prometheus metrics."},
    {"name": "control", "description": "Pipeline and model control, the same actions as the CLI. "
                                       "Every route needs `Authorization: Bearer <API_TOKEN>`; `X-Actor` "
                                       "names who acts. Every request is audited (table `api_audit`)."},
]

DESCRIPTION = """
Product classifier for the Rakuten France catalogue.

* **POST /predict** classifies one product or a batch (`{"items": [...]}`) with the model version
  currently in production (the `champion` alias in the MLflow registry). When the alias moves
  (promotion or rollback) the API switches to the new version within `MODEL_POLL_SECONDS`,
  without failing a request.
* Every prediction is logged (table `inference_log`, written in the background) with a
  `request_id` that **POST /feedback** accepts, so a moderator's correction is tied to it.
* **GET /health** says whether a model is loaded and the database reachable; **GET /metrics**
  exposes Prometheus metrics.
* **/api/...** is the control API (retrain, rollback, alerts, runs, models), protected by a
  bearer token (`API_TOKEN`; disabled when unset).

Errors: every status an operation can answer is listed under it with its body; every rule the
server checks is in the request schema. 422 for invalid input, a body that is not JSON included
(the `detail` list says which field and why, `message` sums it up); 413 for a body larger than
any valid request; 503 when no model is in production yet, or the database is unreachable. The
control API adds 401 (no bearer token), 403 (wrong token), 404 (no such alert or model version)
and 409 (a conflict with the current state: a retrain already running, nothing to roll back).
"""


def new_request_id() -> str:
    """32 hex digits, time-ordered like a UUIDv7 (milliseconds, then 80 random bits): the
    inference_log request_id index then grows at its right edge instead of touching a random
    page of a large index for every logged prediction."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


# --- request and response models ---------------------------------------------------------------
# Every rule the server enforces on a request is stated in its JSON Schema (issue 13: the OpenAPI
# document is the contract, exactly). Limits that come from the settings (MAX_TEXT_CHARS,
# MAX_BATCH_SIZE) are written into the document by create_app (_state_settings_limits).
# Ids are BIGINT columns; the bound is the largest integer every JSON client (and the float the
# OpenAPI document writes a bound as) holds exactly, far above any catalogue or row id.
ID_MAX = 2 ** 53 - 1
# PostgreSQL text cannot hold NUL: free text that is stored or queried refuses it with a 422
# instead of failing in the database.
NO_NUL = r"^[^\x00]*$"
# "Not blank" = holds a character outside Python's str.isspace() set. Spelled out rather than
# `\S` so the server and every JSON Schema regex engine (ECMA-262, Rust, Python) agree exactly.
_BLANK = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{_BLANK}]"
_NOT_BLANK = re.compile(NOT_BLANK)
# Stored text that must say something: not blank, and no NUL.
NOT_BLANK_TEXT = rf"^[^\x00]*[^\x00{_BLANK}][^\x00]*$"


def encodable(value: str) -> str:
    """Lone surrogates (a JSON `\\ud800` escape without its pair) as U+FFFD: pydantic refuses
    such text (422), and the 422 that echoes it must still encode as UTF-8."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)

# What POST /predict puts in a request_id: a client X-Request-ID (letters, digits, `._:-`, at most
# 100, + `-<index>` in a batch) or 32 hex digits; feedback can only name such an id.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"


def json_integer(value: Any) -> Any:
    """A JSON Schema integer is any number with a zero fraction (`3` and `3.0` alike); neither a
    string nor a boolean is one. StrictInt then refuses everything but the int this returns."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Integers in a JSON body, exactly as the document's `"type": "integer"` means them (bounds
# before the validator: pydantic then writes them as minimum/maximum).
JsonInt = Annotated[StrictInt, BeforeValidator(json_integer)]
ProductId = Annotated[StrictInt, Field(ge=0, le=ID_MAX), BeforeValidator(json_integer)]
InferenceId = Annotated[StrictInt, Field(ge=1, le=ID_MAX), BeforeValidator(json_integer)]


class ProductIn(BaseModel):
    """One product, as in the catalogue's X file. A body with `items` is a batch, not a product."""

    model_config = ConfigDict(json_schema_extra={
        "examples": [
            {"designation": "Console PS4 Slim 500 Go + 2 manettes",
             "description": "Console <b>Sony</b> en tr&egrave;s bon &eacute;tat, livr&eacute;e avec 2 manettes.",
             "productid": 3804725264},
            {"designation": "Harry Potter à l'école des sorciers - Tome 1", "description": None,
             "productid": None},
        ],
        # PredictBody routes a body with `items` to PredictBatch: the two schemas are disjoint.
        "not": {"required": ["items"]},
    })

    designation: str = Field(..., description="The product title (required, not blank). "
                                              "Limited to MAX_TEXT_CHARS characters.",
                             json_schema_extra={"minLength": 1, "pattern": NOT_BLANK})
    description: str | None = Field(None, description="Free-text description (may contain HTML); "
                                                      "null or empty when there is none. Limited to "
                                                      "MAX_TEXT_CHARS characters.")
    productid: ProductId | None = Field(None, description="The catalogue's product id, if any "
                                                          "(logged with the prediction).")

    @field_validator("designation")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not _NOT_BLANK.search(v):
            raise ValueError("designation (the product title) must not be empty or whitespace")
        return v


class PredictBatch(BaseModel):
    """Several products in one request (at most MAX_BATCH_SIZE)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [
        {"designation": "Piscine tubulaire 3x2m avec pompe", "description": "", "productid": 1},
        {"designation": "Lot de 3 magazines anciens N° 69", "description": None, "productid": 2},
    ]}]})

    items: list[ProductIn] = Field(..., min_length=1, description="The products to classify "
                                                                  "(at most MAX_BATCH_SIZE).")


def _body_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "items" in value else "product"


PredictBody = Annotated[
    Union[Annotated[ProductIn, Tag("product")], Annotated[PredictBatch, Tag("batch")]],
    Discriminator(_body_kind),
]


class TopK(BaseModel):
    prdtypecode: int
    category: str
    probability: float


class Prediction(BaseModel):
    """The class of one product."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "prdtypecode": 60, "category": "Consoles", "confidence": 0.83,
        "top_k": [{"prdtypecode": 60, "category": "Consoles", "probability": 0.83},
                  {"prdtypecode": 50, "category": "Gaming accessories", "probability": 0.11},
                  {"prdtypecode": 40, "category": "Video games", "probability": 0.04}],
        "model_version": "3", "request_id": "6f1c2b9e8d7a4c3b9a1e2d3c4b5a6978", "productid": 3804725264,
    }]})

    prdtypecode: int = Field(..., description="The predicted class.")
    category: str = Field(..., description="Its English community name.")
    confidence: float = Field(..., description="Probability of the predicted class (0..1).")
    top_k: list[TopK] = Field(..., description="The k most likely classes, most likely first.")
    model_version: str = Field(..., description="Registered model version that answered.")
    request_id: str = Field(..., description="Identifies this prediction in the inference log "
                                             "(give it to POST /feedback).")
    productid: int | None = None


class BatchPrediction(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "predictions": [Prediction.model_config["json_schema_extra"]["examples"][0]],
        "model_version": "3", "count": 1,
    }]})

    predictions: list[Prediction]
    model_version: str
    count: int


IDENTIFIERS = ("inference_id", "request_id", "productid")  # what a feedback can name


class FeedbackIn(BaseModel):
    """The true class of a product, for a logged prediction (by inference_id or request_id) or a
    product (productid): at least one of the three, not null."""

    model_config = ConfigDict(json_schema_extra={
        "examples": [
            {"request_id": "6f1c2b9e8d7a4c3b9a1e2d3c4b5a6978", "prdtypecode": 50,
             "submitted_by": "moderator@example.com", "note": "a controller, not a console"},
            {"inference_id": 1234, "prdtypecode": 2583, "submitted_by": "alice"},
            {"productid": 3804725264, "prdtypecode": 60},
        ],
    })

    inference_id: InferenceId | None = Field(None, description="inference_log id of the prediction.")
    request_id: str | None = Field(None, min_length=1, max_length=200, pattern=REQUEST_ID_PATTERN,
                                   description="request_id returned by POST /predict.")
    productid: ProductId | None = None
    prdtypecode: JsonInt = Field(..., description="The true class (one of the 27 codes).",
                                 json_schema_extra={"enum": list(PRDTYPECODES)})
    submitted_by: str | None = Field(None, max_length=200, pattern=NO_NUL)
    note: str | None = Field(None, max_length=5000, pattern=NO_NUL)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        # _names_something, as a schema: one of the three identifiers is given, with its own
        # (non-null) schema repeated in the branch so generators honour its bounds there too.
        schema = handler.resolve_ref_schema(handler(core_schema))
        props = schema["properties"]
        schema["anyOf"] = [{"required": [name], "properties": {name: copy.deepcopy(next(
            b for b in props[name]["anyOf"] if b.get("type") != "null"))}} for name in IDENTIFIERS]
        return schema

    @field_validator("prdtypecode")
    @classmethod
    def _known_code(cls, v: int) -> int:
        if v not in PRDTYPECODES:
            raise ValueError(f"unknown prdtypecode {v}: expected one of {', '.join(map(str, PRDTYPECODES))}")
        return v

    @model_validator(mode="after")
    def _names_something(self) -> "FeedbackIn":
        if all(getattr(self, name) is None for name in IDENTIFIERS):
            raise ValueError("give inference_id, request_id or productid: which prediction or product "
                             "the feedback is about")
        return self


class FeedbackOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 17, "inference_id": 1234, "request_id": "6f1c2b9e8d7a4c3b9a1e2d3c4b5a6978",
        "productid": 3804725264, "prdtypecode": 50, "category": "Gaming accessories",
        "predicted_code": 60, "model_version": "3", "submitted_by": "moderator@example.com",
        "note": None, "resolved": True, "created_at": "2026-11-26T10:00:00Z",
    }]})

    id: int
    inference_id: int | None
    request_id: str | None
    productid: int | None
    prdtypecode: int
    category: str
    predicted_code: int | None
    model_version: str | None
    submitted_by: str | None
    note: str | None
    resolved: bool = Field(..., description="Tied to its logged prediction. False: the request_id is "
                                            "not in the inference log yet; it is tied when it arrives.")
    created_at: datetime


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "ok", "model_name": "rakuten-product-classifier", "model_version": "3",
        "model_loaded_at": "2026-11-26T10:00:00Z", "fast_path": True,
        "database": {"reachable": True, "error": None},
        "inference_log": {"pending": 0, "written": 120, "dropped": {"buffer_full": 0, "invalid": 0,
                                                                     "shutdown": 0},
                          "capacity": 100000, "last_error": None},
        "last_model_error": None, "version": "0.1.0",
    }]})

    status: Literal["ok", "not ready"]
    model_name: str
    model_version: str | None
    model_loaded_at: datetime | None = None
    fast_path: bool | None = None
    database: dict
    inference_log: dict
    last_model_error: str | None = None
    detail: str | None = None
    version: str


class ErrorOut(BaseModel):
    """An error the server names in one sentence."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": NO_MODEL}]})

    detail: str = Field(..., description="What is wrong and, where possible, what to do.")


class FieldError(BaseModel):
    type: str = Field(..., description="pydantic's error type (`missing`, `string_too_long`, ...).")
    loc: list[str | int] = Field(..., description="Where: `body`, `query` or `header`, then the field path.")
    msg: str
    input: Any = Field(None, description="The offending value, when it is short.")


class ValidationErrorOut(BaseModel):
    """Invalid input: every problem found, and a one-line summary."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "detail": [{"type": "value_error", "loc": ["body", "designation"],
                    "msg": "Value error, designation (the product title) must not be empty or whitespace",
                    "input": "  "}],
        "message": "designation: Value error, designation (the product title) must not be empty or whitespace",
    }]})

    detail: list[FieldError]
    message: str


# Statuses documented with their body model (`responses=` of the routes). 413 can come from any
# route (the body-size middleware runs first), 422 from any route that takes parameters or a body.
TOO_LARGE = {"model": ErrorOut, "description": "The body is larger than the largest valid request "
                                               "(MAX_BATCH_SIZE x MAX_TEXT_CHARS)."}
INVALID = {"model": ValidationErrorOut, "description": "Invalid input: the `detail` list says which "
                                                       "field and why; `message` sums it up."}


def error_doc(description: str, **extra: Any) -> dict:
    return {"model": ErrorOut, "description": description, **extra}


# --- middleware: request metrics -----------------------------------------------------------------
class _MetricsMiddleware:
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


class _BodyLimit:
    """413 for a request whose Content-Length exceeds what the largest valid request can need:
    MAX_BATCH_SIZE items of two MAX_TEXT_CHARS texts at 12 bytes a character at most (a character
    outside the BMP, JSON-escaped as a surrogate pair `\\uXXXX\\uXXXX`: what clients that escape
    non-ASCII send), plus JSON, plus 64 KiB for the other bodies (a feedback note: 5000 characters)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    try:
                        too_big = int(value) > self.limit
                    except ValueError:
                        too_big = False
                    if too_big:
                        response = JSONResponse(
                            {"detail": f"request body over {self.limit} bytes (MAX_BATCH_SIZE x "
                                       "MAX_TEXT_CHARS allow no more)"}, status_code=413)
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


def _validation_response(errors) -> JSONResponse:
    """422 with pydantic's error list (no huge inputs echoed, no union tags) and a summary."""
    out = []
    for e in errors:
        loc = list(e.get("loc", ()))
        if len(loc) >= 2 and loc[0] == "body" and loc[1] in ("product", "batch"):
            del loc[1]
        item = {"type": e.get("type"), "loc": loc, "msg": e.get("msg")}
        value = e.get("input")
        if value is None or isinstance(value, (bool, int, float)):
            item["input"] = value
        elif isinstance(value, str) and len(value) <= 200:
            item["input"] = encodable(value)
        out.append(item)
    message = "; ".join(f"{'.'.join(str(x) for x in i['loc'][1:]) or i['loc'][0] if i['loc'] else 'body'}: "
                        f"{i['msg']}" for i in out)
    return JSONResponse({"detail": jsonable_encoder(out), "message": message}, status_code=422)


def _limit_errors(items: list[ProductIn], single: bool, settings: Settings) -> list[dict]:
    errors = []
    if not single and len(items) > settings.max_batch_size:
        errors.append({"type": "too_long", "loc": ("body", "items"),
                       "msg": f"a batch holds at most {settings.max_batch_size} items (MAX_BATCH_SIZE); "
                              f"got {len(items)}: split it"})
        return errors
    limit = settings.max_text_chars
    for i, it in enumerate(items):
        prefix = ("body",) if single else ("body", "items", i)
        for name in ("designation", "description"):
            value = getattr(it, name)
            if value is not None and len(value) > limit:
                errors.append({"type": "string_too_long", "loc": prefix + (name,),
                               "msg": f"{name} is {len(value)} characters long; the limit is {limit} "
                                      "(MAX_TEXT_CHARS)"})
    return errors


class ApiRoute(APIRoute):
    """A route whose unparseable body is a 422 like any other invalid input.

    FastAPI answers a JSON syntax error with 422 but a body it cannot decode at all (bytes that
    are not UTF-8, nesting too deep) with a bare 400. This app raises no 400 of its own, so that
    400 becomes the same validation error: one documented status for a body that does not parse.
    """

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def parsed(request: Request):
            try:
                return await handler(request)
            except StarletteHTTPException as exc:  # FastAPI raises Starlette's class for this one
                cause = exc.__cause__
                if exc.status_code != 400 or cause is None:
                    raise
                raise RequestValidationError([{
                    "type": "json_invalid", "loc": ("body",),
                    "msg": f"the body cannot be parsed as JSON: {type(cause).__name__}: {cause}"[:300],
                }]) from exc

        return parsed


def _state_settings_limits(app: FastAPI, settings: Settings) -> None:
    """Write this app's MAX_TEXT_CHARS and MAX_BATCH_SIZE into its OpenAPI document (`maxLength`,
    `maxItems`): the models are shared by every app, the limits are each app's settings."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schemas = build()["components"]["schemas"]  # FastAPI caches it in app.openapi_schema
            product = schemas["ProductIn"]["properties"]
            for name in ("designation", "description"):
                prop = product[name]
                for branch in prop.get("anyOf", [prop]):
                    if branch.get("type") == "string":
                        branch["maxLength"] = settings.max_text_chars
            schemas["PredictBatch"]["properties"]["items"]["maxItems"] = settings.max_batch_size
        return app.openapi_schema

    app.openapi = openapi


# --- the app -------------------------------------------------------------------------------------
def create_app(settings: Settings | None = None, *, start_background: bool = True) -> FastAPI:
    """The API. The lifespan loads the champion and starts the inference-log writer.

    start_background=False: the champion is loaded once at startup but not polled, and the
    inference log is written only by `app.state.inference_log.flush()` (tests).
    """
    from . import db, store
    from .serving import InferenceLogger, ModelHolder, ServingMetrics

    settings = settings or load_settings()
    metrics = ServingMetrics()
    holder = ModelHolder(settings, metrics=metrics)
    inference_log = InferenceLogger(settings, metrics=metrics)

    def startup() -> None:
        try:
            db.open_db(settings, application_name="mlops-api").close()  # applies migrations
        except Exception as exc:
            log.warning("database not reachable at startup (%s): predictions will be served and "
                        "their log kept in memory until it is", exc)
        holder.start(background=start_background)
        if start_background:
            inference_log.start()
        current = holder.current
        log.info("API ready: %s", f"serving {settings.model_name} version {current.version}"
                 if current else f"not ready ({holder.last_error or 'no champion alias'})")

    def shutdown() -> None:
        holder.stop()
        if not inference_log.close(timeout=10.0):
            log.error("inference log not fully written at shutdown: %s", inference_log.stats())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(startup)
        try:
            yield
        finally:
            await run_in_threadpool(shutdown)

    app = FastAPI(title="Rakuten product classifier API", description=DESCRIPTION, version=__version__,
                  openapi_tags=TAGS, lifespan=lifespan, responses={413: TOO_LARGE})
    app.router.route_class = ApiRoute
    _state_settings_limits(app, settings)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.holder = holder
    app.state.inference_log = inference_log
    app.add_middleware(_BodyLimit, limit=settings.max_batch_size * (12 * settings.max_text_chars + 512) + 65536)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError):
        return _validation_response(exc.errors())

    # -- prediction ------------------------------------------------------------------------------
    @app.post(
        "/predict", tags=["prediction"], summary="Classify one product or a batch",
        response_model=Union[Prediction, BatchPrediction],
        description="Body: one product `{designation, description, productid}` or a batch "
                    "`{items: [...]}` of at most MAX_BATCH_SIZE. Answers the class, its category "
                    "name, the confidence, the `top_k` classes, the model version and a "
                    "`request_id` per product. The prediction is logged (inference_log). "
                    "A client `X-Request-ID` header (letters, digits, `._:-`, at most 100) "
                    "becomes the request_id (batch: `<id>-<index>`).",
        responses={422: {**INVALID, "description": "Invalid input: blank title, text over MAX_TEXT_CHARS, "
                                                   "wrong types, batch over MAX_BATCH_SIZE, top_k out of "
                                                   "1..10, a body that is not JSON."},
                   503: error_doc("No model in production yet.",
                                  content={"application/json": {"example": {"detail": NO_MODEL}}})},
    )
    async def predict(
        request: Request,
        body: Annotated[PredictBody, Body(openapi_examples={
            "one product": {"summary": "One product",
                            "value": ProductIn.model_config["json_schema_extra"]["examples"][0]},
            "batch": {"summary": "A batch",
                      "value": PredictBatch.model_config["json_schema_extra"]["examples"][0]},
        })],
        top_k: Annotated[int, Query(ge=1, le=10, description="How many classes in `top_k`.")] = 3,
    ):
        single = isinstance(body, ProductIn)
        items = [body] if single else body.items
        errors = _limit_errors(items, single, settings)
        if errors:
            raise RequestValidationError(errors)
        loaded = holder.current  # read once: this request uses this version throughout
        if loaded is None:
            return JSONResponse({"detail": NO_MODEL}, status_code=503)
        pairs = [(it.designation, it.description) for it in items]
        if loaded.fast is not None and len(pairs) <= INLINE_ITEMS:
            result = loaded.predict(pairs, top_k)
        else:
            result = await run_in_threadpool(loaded.predict, pairs, top_k)
        base = request.headers.get("x-request-id")
        if base is None or not _REQUEST_ID.match(base):
            base = None
        now = datetime.now(timezone.utc)
        start = request.scope.get("mlops.start") or time.perf_counter()
        latency_ms = (time.perf_counter() - start) * 1000.0
        codes, conf, top_codes, top_p = result.codes, result.confidence, result.top_codes, result.top_proba
        version = loaded.version
        out, rows = [], []
        for i, it in enumerate(items):
            if base is not None:
                rid = base if single else f"{base}-{i}"
            else:
                rid = new_request_id()
            code = int(codes[i])
            tk = [{"prdtypecode": int(c), "category": category_name(c), "probability": float(p)}
                  for c, p in zip(top_codes[i], top_p[i])]
            out.append({"prdtypecode": code, "category": category_name(code), "confidence": float(conf[i]),
                        "top_k": tk, "model_version": version, "request_id": rid,
                        "productid": it.productid})
            rows.append({"logged_at": now, "request_id": rid, "source": "api", "model_version": version,
                         "productid": it.productid, "designation": it.designation,
                         "description": it.description or "", "predicted_code": code,
                         "confidence": float(conf[i]), "top_k": tk, "latency_ms": latency_ms,
                         "vocabulary": loaded.vocabulary,
                         "cleaned": result.cleaned[i] if result.cleaned else None})
            metrics.observe_prediction(code, float(conf[i]))
        inference_log.log_many(rows)
        # Serialized here: the payload is built from typed values already, so FastAPI's second
        # validation against response_model (which stays for the docs) is skipped.
        payload = out[0] if single else {"predictions": out, "model_version": version, "count": len(out)}
        return Response(json.dumps(payload, separators=(",", ":")).encode(), media_type="application/json")

    # -- feedback --------------------------------------------------------------------------------
    @app.post(
        "/feedback", tags=["feedback"], status_code=201, response_model=FeedbackOut,
        summary="Record the true class of a product",
        description="Name the prediction by `inference_id` or by the `request_id` POST /predict "
                    "returned (or only a `productid`). The predicted class and model version are "
                    "taken from the logged prediction. A request_id not yet in the inference log "
                    "(another API worker may still hold it in memory) is stored and tied to its "
                    "prediction when that is written (`resolved: false` until then).",
        responses={404: error_doc("No logged prediction has this inference_id."),
                   409: error_doc("inference_id and request_id are both given and name different "
                                  "predictions."),
                   422: {**INVALID, "description": "Invalid input: unknown prdtypecode, none of "
                                                   "inference_id, request_id or productid given, wrong "
                                                   "types, a body that is not JSON."},
                   503: error_doc("The database is unreachable.")},
    )
    def feedback(body: FeedbackIn):
        if body.inference_id is not None or body.request_id:
            inference_log.flush(timeout=5.0)  # this worker's buffered predictions reach the table
        try:
            with db.connection(settings, application_name="mlops-api") as conn:
                inference = None
                if body.inference_id is not None:
                    inference = store.find_inference(conn, inference_id=body.inference_id)
                    if inference is None:
                        raise HTTPException(404, f"No prediction with inference_id {body.inference_id} "
                                                 "in the inference log")
                    if body.request_id and inference["request_id"] != body.request_id:
                        # each id is valid alone; together they contradict the log: a conflict
                        raise HTTPException(409, f"inference_id {body.inference_id} is request "
                                                 f"{inference['request_id']!r}, not {body.request_id!r}")
                elif body.request_id:
                    inference = store.find_inference(conn, request_id=body.request_id)
                row = store.insert_feedback(
                    conn, true_code=body.prdtypecode,
                    inference_id=inference["id"] if inference else None,
                    request_id=body.request_id or (inference["request_id"] if inference else None),
                    productid=body.productid if body.productid is not None else
                    (inference["productid"] if inference else None),
                    predicted_code=inference["predicted_code"] if inference else None,
                    model_version=inference["model_version"] if inference else None,
                    submitted_by=body.submitted_by, note=body.note,
                )
        except HTTPException:
            raise
        except Exception as exc:
            from .runs import is_transient

            if is_transient(exc):
                raise HTTPException(503, f"database unavailable: {exc}") from exc
            raise
        return {**row, "prdtypecode": row["true_code"], "category": category_name(row["true_code"]),
                "resolved": row["inference_id"] is not None}

    # -- operations ------------------------------------------------------------------------------
    db_state = {"at": 0.0, "value": {"reachable": None, "error": None}}

    def database_state() -> dict:
        if time.monotonic() - db_state["at"] < 2.0:
            return db_state["value"]
        import psycopg2

        value: dict = {"reachable": True, "error": None}
        try:
            conn = psycopg2.connect(db.database_url(settings), connect_timeout=3,
                                    application_name="mlops-api-health")
            try:
                store.ping(conn)
            finally:
                conn.close()
        except Exception as exc:
            value = {"reachable": False, "error": db.redact(str(exc).strip())[:300]}
        db_state.update(at=time.monotonic(), value=value)
        return value

    @app.get(
        "/health", tags=["operations"], response_model=Health, summary="Readiness and database reachability",
        description="200 with `status: ok` when a model is loaded and predictions can be served, "
                    "else 503 with `status: not ready` (no champion yet, or it could not be "
                    "loaded: see `last_model_error`). `database.reachable` says whether "
                    "PostgreSQL answers (predictions are served without it; their log waits in "
                    "memory).",
        responses={503: {"model": Health, "description": "Not ready: no model loaded."}},
    )
    def health():
        loaded = holder.current
        body = {
            "status": "ok" if loaded else "not ready", "model_name": settings.model_name,
            "model_version": loaded.version if loaded else None,
            "model_loaded_at": datetime.fromtimestamp(loaded.loaded_at, timezone.utc) if loaded else None,
            "fast_path": (loaded.fast is not None) if loaded else None,
            "database": database_state(), "inference_log": inference_log.stats(),
            "last_model_error": holder.last_error,
            "detail": None if loaded else (holder.last_error or NO_MODEL), "version": __version__,
        }
        return JSONResponse(jsonable_encoder(Health(**body)), status_code=200 if loaded else 503)

    @app.get(
        "/metrics", tags=["operations"], summary="Prometheus metrics",
        description="Requests and latency per route and status (`mlops_api_requests_total`, "
                    "`mlops_api_request_duration_seconds`), predictions per class "
                    "(`mlops_predictions_total`), confidence (`mlops_prediction_confidence`), the "
                    "served version (`mlops_model_version_info`, `mlops_model_ready`), reloads "
                    "(`mlops_model_reloads_total{result}`, `mlops_model_poll_errors_total`), and "
                    "the inference log (`mlops_inference_log_buffer_rows`, "
                    "`mlops_inference_log_dropped_rows_total{reason}`, "
                    "`mlops_inference_log_written_rows_total`, `mlops_inference_log_write_errors_total`).",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"example": "mlops_model_ready 1.0\n"}}}},
    )
    async def prometheus_metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    from .control import router as control_router

    app.include_router(control_router)
    return app
