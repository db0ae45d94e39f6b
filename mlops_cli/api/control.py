"""The control API: pipeline and model actions over HTTP, mounted at /api by create_app.

Every route needs `Authorization: Bearer <token>` (api/auth.py): reads need the viewer role, the
labelling queue the labeller role, actions the operator role (401 without a token or with an
unknown or revoked one, 403 without the role). With no token at all (API_TOKEN unset and none
made by `mlops api-token add`) every route answers 503: it is never open. Who acts: the token's
name; pipeline_runs rows record it with triggered_by='api'.

Routes call the same operations functions (mlops_cli.ops) as the CLI and the control room; the
business and audit rules live there, errors become statuses in api/errors.py. Every
control request, refused ones included, is recorded in `api_audit` (who, when, route,
parameters, status code).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder

from ..access import OPERATE, READ
from ..ops import feedback as ops_feedback, labelling
from ..vocab import AlertStatus, Pipeline, RunStatus, values
from . import auth
from .auth import AuditedRoute, XActor, need
from .schemas import (ID_MAX, INVALID, NO_NUL, AcknowledgeIn, LabelDisagreementsOut, LabellingItemOut, RetrainIn,
                      RetrainOut, RollbackIn, Rows, StepOut, ThresholdsIn, error_doc)

log = logging.getLogger(__name__)

DISABLED = "control API disabled: set API_TOKEN or create a token with `mlops api-token add`"
OPERATOR = [Depends(need(OPERATE, "this action"))]


router = APIRouter(
    prefix="/api", tags=["control"], route_class=AuditedRoute, dependencies=[Depends(need(READ, "reading"))],
    responses={401: error_doc("No bearer token, or an unknown or revoked one.", headers={"WWW-Authenticate": {
                   "description": "`Bearer`", "schema": {"type": "string"}}}),
               403: error_doc("The token's role does not allow this route, or `by` / X-Actor names "
                              "someone other than the token's owner."),
               503: error_doc(DISABLED + " (or the database or the MLflow registry is unreachable).")},
)


# --- helpers ----------------------------------------------------------------------------------------
def _conn(request: Request):
    from .. import db

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


def _decision(ops_models, alert_id: int | None, note: str | None):
    """A retrain or rollback asked for about an alert: recorded on it (ops.models)."""
    return None if alert_id is None else ops_models.Decision(alert_id, note, note_required=False)


def _result(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    return jsonable_encoder(value)


def _trigger(actor: str):
    from ..ops.common import trigger

    return trigger("api", actor, pipeline=Pipeline.MANUAL.value)


# --- routes -----------------------------------------------------------------------------------------
@router.post("/trigger-retrain", status_code=202, response_model=RetrainOut, dependencies=OPERATOR,
             summary="Start a retrain pipeline in the background",
             description="Starts `mlops pipeline retrain` in a background process and answers at once "
                         "with its pipeline run id (follow it with GET /api/runs). 409 when a retrain "
                         "is already running. With `alert_id`, the decision and its outcome are "
                         "recorded on that alert (alert_actions), whatever the outcome.",
             responses={404: error_doc("No such alert (`alert_id`)."),
                        409: error_doc("A retrain pipeline is already running, or it could not start."),
                        422: INVALID,
                        501: error_doc("This build has no pipeline module.")})
def trigger_retrain(request: Request, body: Annotated[RetrainIn | None, Body()] = None,
                    x_actor: XActor = None) -> dict:
    body = body or RetrainIn()
    actor = auth.actor(request, body.by)
    _sibling("mlops_cli.pipeline", "trigger-retrain")  # 501 in a build without it
    from ..ops import models as ops_models

    launched = ops_models.retrain(request.app.state.settings, actor, triggered_by="api",
                                  decision=_decision(ops_models, body.alert_id, body.reason))
    return {"pipeline_run_id": launched.pipeline_run_id, "status": launched.status}


@router.post("/rollback-model", response_model=StepOut, summary="Roll the champion back", dependencies=OPERATOR,
             description="Moves the `champion` alias back to the previous champion (or `to_version`), "
                         "as `mlops rollback` does, and records it. The API serves the restored "
                         "version right after (it re-checks the alias at once). 404 when `to_version` "
                         "does not exist, 409 when there is nothing to roll back to. With `alert_id`, "
                         "the rollback and its outcome are recorded on that alert (alert_actions).",
             responses={404: error_doc("`to_version` is not a version of the model, or no such alert "
                                       "(`alert_id`)."),
                        409: error_doc("Nothing to roll back to, `to_version` is the champion or was "
                                       "never in production, or another rollback is running."),
                        422: INVALID,
                        501: error_doc("This build has no rollback step.")})
def rollback_model(request: Request, body: RollbackIn, x_actor: XActor = None) -> dict:
    actor = auth.actor(request, body.by)
    _sibling("mlops_cli.steps.rollback", "rollback-model")
    from ..ops import models as ops_models

    with _conn(request) as conn:
        result = ops_models.rollback(request.app.state.settings, _trigger(actor), reason=body.reason,
                                     to_version=body.to_version, conn=conn,
                                     decision=_decision(ops_models, body.alert_id, body.reason))
    if getattr(result, "status", None) == RunStatus.SKIPPED:
        raise HTTPException(409, result.message or "rollback skipped")
    holder = getattr(request.app.state, "holder", None)
    if holder is not None:
        holder.wake()
    return _result(result)


@router.get("/alerts", summary="Drift alerts", response_model=Rows,
            description="Alerts raised by drift monitoring, active first then newest (as `mlops alerts`).",
            responses={422: INVALID})
def alerts(request: Request,
           status: Annotated[Literal[values(AlertStatus)] | None,
                             Query(description="Only alerts in this status.")] = None,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    from ..ops.alerts import list_alerts

    with _conn(request) as conn:
        rows = list_alerts(conn, status=status, limit=limit)
    return _result(rows)


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge a drift alert", dependencies=OPERATOR,
             response_model=dict[str, Any],
             description="Marks the alert acknowledged by `by` with an optional note (as "
                         "`mlops alert ack`). Answers the alert.",
             responses={404: error_doc("No such alert."),
                        409: error_doc("The alert is resolved: nothing to acknowledge."),
                        422: INVALID})
def acknowledge_alert(request: Request, alert_id: Annotated[int, Path(ge=1, le=ID_MAX)],
                      body: Annotated[AcknowledgeIn | None, Body()] = None, x_actor: XActor = None) -> Any:
    from ..ops.alerts import acknowledge

    body = body or AcknowledgeIn()
    actor = auth.actor(request, body.by)
    with _conn(request) as conn:
        result = acknowledge(conn, request.app.state.settings, alert_id, by=actor, note=body.note)
    return _result(result.alert)


@router.get("/runs", summary="Pipeline runs", response_model=Rows,
            description="Recent pipeline_runs rows: what ran, when, who started it, how it ended "
                        "(as `mlops runs`).",
            responses={422: INVALID})
def runs(request: Request,
         limit: Annotated[int, Query(ge=1, le=1000)] = 20,
         pipeline: Annotated[Literal[values(Pipeline)] | None, Query()] = None,
         step: Annotated[str | None, Query(max_length=50, pattern=NO_NUL)] = None,
         status: Annotated[Literal[values(RunStatus)] | None, Query()] = None) -> Any:
    from ..ops.runs import list_runs

    with _conn(request) as conn:
        rows = list_runs(conn, limit=limit, pipeline=pipeline, step=step, status=status)
    return _result(rows)


@router.get("/models", summary="Registered model versions", response_model=Rows,
            description="Every version with its aliases, tags and scores (as `mlops models`).",
            responses={501: error_doc("This build has no models module.")})
def models(request: Request) -> Any:
    _sibling("mlops_cli.models", "models")
    from ..ops.models import list_models

    with _conn(request) as conn:
        rows = list_models(conn, request.app.state.settings)
    return _result(rows)


@router.get("/thresholds", summary="Drift thresholds in force", response_model=dict[str, Any],
            description="The warning, alert and critical thresholds the next drift and alert runs use, "
                        "where each comes from (`source`: app_settings, set by a person, or settings, "
                        "the environment) and who changed them last (as `mlops thresholds`).")
def thresholds(request: Request) -> Any:
    from ..ops import thresholds as ops_thresholds

    with _conn(request) as conn:
        return _result(ops_thresholds.current(conn, request.app.state.settings))


@router.post("/thresholds", summary="Change some drift thresholds", response_model=dict[str, Any], dependencies=OPERATOR,
             description="Sets the thresholds given; the others keep the value in force (as `mlops "
                         "thresholds --warning X`). Audited in alert_actions (`adjust_thresholds`, with "
                         "`alert_id` in its note when given); used by the next drift and alert runs. "
                         "Answers the thresholds now in force.",
             responses={404: error_doc("No such alert (`alert_id`)."),
                        409: error_doc("No threshold given, or the three would not satisfy "
                                       "0 < warning < alert < critical."),
                        422: INVALID})
def update_thresholds(request: Request, body: ThresholdsIn, x_actor: XActor = None) -> Any:
    from ..ops import thresholds as ops_thresholds

    actor = auth.actor(request, body.by)
    settings = request.app.state.settings
    with _conn(request) as conn:
        ops_thresholds.update(conn, settings, actor, warning=body.warning, alert=body.alert,
                              critical=body.critical, note=body.note, alert_id=body.alert_id,
                              estimate_margin=body.estimate_margin)
        return _result(ops_thresholds.current(conn, settings))


@router.get("/audit", summary="Control API audit trail", response_model=Rows,
            description="The latest control requests: who, when, route, parameters, status code.",
            responses={422: INVALID})
def audit(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          route: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None) -> Any:
    from ..ops.runs import api_audit

    with _conn(request) as conn:
        rows = api_audit(conn, limit=limit, route=route)
    return _result(rows)


@router.get("/labelling-queue", summary="Predictions most worth a human label",
            response_model=list[LabellingItemOut],
            description="The unlabelled served predictions of the last `days` days, one per product, "
                        "best first: ranked by the chance that the served answer is wrong, from low "
                        "confidence, the predicted class's F1 on the model's holdout and the share of "
                        "words the model cannot read or that drifted (as `mlops label-queue`; the rule: "
                        "docs/API.md). Each item says why it is offered (`reasons`). Label one with "
                        "POST /feedback and its `inference_id`. A viewer reads it as the Labelling page "
                        "shows it; what it offers a labeller or an operator is recorded (labelling_offers).",
            responses={422: INVALID})
def labelling_queue(request: Request,
                    limit: Annotated[int, Query(ge=1, le=labelling.MAX_LIMIT,
                                                description=f"How many items (1-{labelling.MAX_LIMIT}).")
                                     ] = labelling.DEFAULT_LIMIT,
                    days: Annotated[int, Query(ge=1, le=labelling.MAX_DAYS,
                                               description="The window of served predictions: today (UTC) and "
                                                           f"this many whole days before (1-{labelling.MAX_DAYS}).")
                                    ] = labelling.DEFAULT_DAYS) -> Any:
    with _conn(request) as conn:
        items = labelling.labelling_queue(conn, request.app.state.settings, limit=limit, days=days,
                                          offered_to=request.state.principal)  # recorded for a labeller
    return _result(items)


@router.get("/label-disagreements", summary="Labelled products whose labellers disagree",
            response_model=LabelDisagreementsOut,
            description="Products whose labellers' latest labels name different codes (a labeller relabelling "
                        "their own answer corrects it), the most recently labelled first (as `mlops "
                        "label-disagreements`). Training takes the latest label; a new label (POST /feedback "
                        "with the productid) settles a product once every labeller's latest label agrees.",
            responses={422: INVALID})
def label_disagreements(request: Request,
                        limit: Annotated[int, Query(ge=1, le=ops_feedback.DISAGREEMENTS_MAX,
                                                    description="How many products "
                                                                f"(1-{ops_feedback.DISAGREEMENTS_MAX}).")] = 50) -> Any:
    with _conn(request) as conn:
        found = ops_feedback.disagreements(conn, limit=limit)
    return _result(found)
