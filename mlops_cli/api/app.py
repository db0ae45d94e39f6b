"""The API's factory, `create_app()`, which `mlops serve` (uvicorn) runs: the app, its state (the
model holder, the inference logger, the metrics), middleware, error handlers and routers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from .. import __version__
from ..config import Settings, load_settings
from . import control, errors, feedback, health, predict
from .routing import ApiRoute, BodyLimit, MetricsMiddleware, allow_every_method
from .schemas import TOO_LARGE

log = logging.getLogger("mlops_cli.api")

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
* **/api/...** is the control API (retrain, rollback, alerts, thresholds, runs, models),
  protected by a bearer token (`API_TOKEN`; disabled when unset).

Errors: every status an operation can answer is listed under it with its body; every rule the
server checks is in the request schema. 422 for invalid input, a body that is not JSON included
(the `detail` list says which field and why, `message` sums it up); 413 for a body larger than
any valid request; 503 when no model is in production yet, or the database is unreachable. The
control API adds 401 (no bearer token), 403 (wrong token), 404 (no such alert or model version)
and 409 (a conflict with the current state: a retrain already running, nothing to roll back).
"""


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


def create_app(settings: Settings | None = None, *, start_background: bool = True) -> FastAPI:
    """The API. The lifespan loads the champion and starts the inference-log writer (and the
    shadow challenger's worker when SHADOW_ENABLED or SHADOW_MIN_REQUESTS asks for it).

    start_background=False: the champion is loaded once at startup but not polled, and the
    inference log is written only by `app.state.inference_log.flush()` (tests).
    """
    from .. import db
    from ..serving import InferenceLogger, ModelHolder, ServingMetrics
    from ..serving.shadow import ShadowScorer, shadow_active

    settings = settings or load_settings()
    metrics = ServingMetrics()
    holder = ModelHolder(settings, metrics=metrics)
    inference_log = InferenceLogger(settings, metrics=metrics)
    # the challenger scored off the request path, in a worker process (docs/shadow.md)
    shadow = ShadowScorer(settings, metrics=metrics) if shadow_active(settings) else None

    def startup() -> None:
        from ..access import weak_secret

        if weak := weak_secret("API_TOKEN", settings.api_token):
            log.warning("API_TOKEN refused, the control API does not accept it: %s", weak)
        try:
            db.open_db(settings, application_name="mlops-api").close()  # applies migrations
        except Exception as exc:
            log.warning("database not reachable at startup (%s): predictions will be served and "
                        "their log kept in memory until it is", exc)
        holder.start(background=start_background)
        if start_background:
            inference_log.start()
            if shadow is not None:
                shadow.start()
        current = holder.current
        log.info("API ready: %s", f"serving {settings.model_name} version {current.version}"
                 if current else f"not ready ({holder.last_error or 'no champion alias'})")

    def shutdown() -> None:
        holder.stop()
        if shadow is not None and not shadow.close(timeout=10.0):
            log.error("shadow predictions not fully written at shutdown: %s", shadow.stats())
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
    app.state.shadow = shadow
    app.state.db_state = {"at": 0.0, "value": {"reachable": None, "error": None}}  # health.database_state
    app.add_middleware(BodyLimit, limit=settings.max_batch_size * (12 * settings.max_text_chars + 512) + 65536)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too

    errors.install(app)
    # Registration order is the order of the paths in the OpenAPI document.
    routers = (predict.router, feedback.router, health.router, control.router)
    for router in routers:
        app.include_router(router)
    allow_every_method([route for router in routers for route in router.routes])
    return app
