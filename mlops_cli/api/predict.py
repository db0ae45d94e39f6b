"""POST /predict: the class of one product or a batch, with the model behind the champion alias.

The request path reads the served model once (serving.ModelHolder.current), predicts, answers,
and appends the rows to the inference log's in-memory buffer (serving.log_predictions); the
database is written by the logger's thread. With the shadow challenger on, the request is then
handed to it (serving/shadow.py: an append, never a wait; the answer is the champion's). Heavy work (a large batch, or a model without the
fast path) runs in the thread pool so the event loop keeps answering.
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Union

from fastapi import APIRouter, Body, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ..config import Settings
from ..serving import log_predictions
from .routing import ApiRoute
from .schemas import (INVALID, NO_MODEL, BatchPrediction, PredictBatch, PredictBody, Prediction, ProductIn,
                      error_doc)

# Fast-path requests of at most INLINE_ITEMS products and INLINE_CHARS characters of text are
# predicted on the event loop (~1 ms a typical product: a ~70-character title, a description of
# ~770 when there is one); longer texts cost in proportion (four at MAX_TEXT_CHARS: ~100 ms, during
# which the worker answers nobody else), so they go to the thread pool like larger batches.
INLINE_ITEMS = 4
INLINE_CHARS = 8000
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")

router = APIRouter(route_class=ApiRoute)


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


@router.post(
    "/predict", tags=["prediction"], summary="Classify one product or a batch",
    response_model=Union[Prediction, BatchPrediction],
    description="Body: one product `{designation, description, productid}` or a batch "
                "`{items: [...]}` of at most MAX_BATCH_SIZE. Answers the class, its category "
                "name, the confidence, the `top_k` classes, the model version and a "
                "`request_id` per product. The prediction is logged (inference_log). "
                "A client `X-Request-ID` header (letters, digits, `._:-`, at most 100) "
                "becomes the request_id (batch: `<id>-<index>`); one that breaks that rule is "
                "ignored and an id made, as without one (the answer's `request_id` is the one logged).",
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
    state = request.app.state
    settings, holder, inference_log, metrics = state.settings, state.holder, state.inference_log, state.metrics
    single = isinstance(body, ProductIn)
    items = [body] if single else body.items
    errors = _limit_errors(items, single, settings)
    if errors:
        raise RequestValidationError(errors)
    loaded = holder.current  # read once: this request uses this version throughout
    if loaded is None:
        return JSONResponse({"detail": NO_MODEL}, status_code=503)
    pairs = [(it.designation, it.description) for it in items]
    if loaded.fast is not None and len(pairs) <= INLINE_ITEMS and \
            sum(len(d) + len(x or "") for d, x in pairs) <= INLINE_CHARS:
        result = loaded.predict(pairs, top_k)
    else:
        result = await run_in_threadpool(loaded.predict, pairs, top_k)
    base = request.headers.get("x-request-id")
    if base is None or not _REQUEST_ID.match(base):
        base = None
    start = request.scope.get("mlops.start") or time.perf_counter()
    out = log_predictions(inference_log, loaded, items, result, request_id=base, single=single,
                          latency_ms=(time.perf_counter() - start) * 1000.0, metrics=metrics)
    version = loaded.version
    if state.shadow is not None:  # one bounded append: the challenger answers later, elsewhere
        state.shadow.submit(version, pairs, out, top_k)
    # Serialized here: the payload is built from typed values already, so FastAPI's second
    # validation against response_model (which stays for the docs) is skipped.
    payload = out[0] if single else {"predictions": out, "model_version": version, "count": len(out)}
    return Response(json.dumps(payload, separators=(",", ":")).encode(), media_type="application/json")
