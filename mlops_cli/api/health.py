"""GET /health (readiness, database reachability) and GET /metrics (Prometheus)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from .. import __version__
from .routing import ApiRoute
from .schemas import NO_MODEL, Health

router = APIRouter(route_class=ApiRoute)
DB_STATE_SECONDS = 2.0  # /health asks PostgreSQL at most this often per worker


def database_state(app) -> dict:
    """{reachable, error}: whether PostgreSQL answers now (cached for DB_STATE_SECONDS)."""
    from .. import db, store

    cache = app.state.db_state
    if time.monotonic() - cache["at"] < DB_STATE_SECONDS:
        return cache["value"]
    import psycopg2

    settings = app.state.settings
    value: dict = {"reachable": True, "error": None}
    url = db.database_url(settings)
    try:
        conn = psycopg2.connect(url, connect_timeout=3, application_name="mlops-api-health")
        try:
            store.ping(conn)
        finally:
            conn.close()
    except Exception as exc:
        value = {"reachable": False, "error": db.redact(str(exc).strip(), url)[:300]}  # an open route
    cache.update(at=time.monotonic(), value=value)
    return value


@router.get(
    "/health", tags=["operations"], response_model=Health, summary="Readiness and database reachability",
    description="200 with `status: ok` when a model is loaded and predictions can be served, "
                "else 503 with `status: not ready` (no champion yet, or it could not be "
                "loaded: see `last_model_error`). `database.reachable` says whether "
                "PostgreSQL answers (predictions are served without it; their log waits in "
                "memory).",
    responses={503: {"model": Health, "description": "Not ready: no model loaded."}},
)
def health(request: Request):
    state = request.app.state
    holder, settings = state.holder, state.settings
    loaded = holder.current
    body = {
        "status": "ok" if loaded else "not ready", "model_name": settings.model_name,
        "model_version": loaded.version if loaded else None,
        "model_loaded_at": datetime.fromtimestamp(loaded.loaded_at, timezone.utc) if loaded else None,
        "fast_path": (loaded.fast is not None) if loaded else None,
        "database": database_state(request.app), "inference_log": state.inference_log.stats(),
        "shadow": state.shadow.stats() if state.shadow is not None else None,
        "last_model_error": holder.last_error,
        "detail": None if loaded else (holder.last_error or NO_MODEL), "version": __version__,
    }
    return JSONResponse(jsonable_encoder(Health(**body)), status_code=200 if loaded else 503)


@router.get(
    "/metrics", tags=["operations"], summary="Prometheus metrics",
    description="Requests and latency per route and status (`mlops_api_requests_total`, "
                "`mlops_api_request_duration_seconds`), predictions per class "
                "(`mlops_predictions_total`), confidence (`mlops_prediction_confidence`), the "
                "served version (`mlops_model_version_info`, `mlops_model_ready`), reloads "
                "(`mlops_model_reloads_total{result}`, `mlops_model_poll_errors_total`), and "
                "the inference log (`mlops_inference_log_buffer_rows`, "
                "`mlops_inference_log_dropped_rows_total{reason}`, "
                "`mlops_inference_log_written_rows_total`, `mlops_inference_log_write_errors_total`), "
                "and the shadow challenger (`mlops_shadow_*`, docs/shadow.md).",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"example": "mlops_model_ready 1.0\n"}}}},
)
async def prometheus_metrics(request: Request):
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
