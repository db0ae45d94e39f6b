"""POST /feedback: a moderator's correction of a prediction (the linking rules: ops.feedback).

Labels train the next model, so each needs a token with the labeller (or operator) role, its
owner is the label's `submitted_by`, and every request is audited like the control API's."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..access import LABEL
from ..ops import feedback as ops_feedback
from . import auth
from .schemas import INVALID, FeedbackIn, FeedbackOut, error_doc

router = APIRouter(route_class=auth.AuditedRoute, dependencies=[Depends(auth.need(LABEL, "labelling"))])


@router.post(
    "/feedback", tags=["feedback"], status_code=201, response_model=FeedbackOut,
    summary="Record the true class of a product",
    description="Name the prediction by `inference_id` or by the `request_id` POST /predict "
                "returned (or only a `productid`). The predicted class and model version are "
                "taken from the logged prediction. A request_id not yet in the inference log "
                "(another API worker may still hold it in memory) is stored and tied to its "
                "prediction when that is written (`resolved: false` until then).",
    responses={401: error_doc("No bearer token, or an unknown or revoked one."),
               403: error_doc("The token's role is viewer, or `submitted_by` names someone other than "
                              "the token's owner."),
               404: error_doc("No logged prediction has this inference_id, or the productid given alone "
                              "names a product never served and not in the catalogue."),
               409: error_doc("inference_id and request_id are both given and name different "
                              "predictions, or the productid is not the named prediction's, or a "
                              "request_id a client reused names predictions of several products and "
                              "no productid says which."),
               422: {**INVALID, "description": "Invalid input: unknown prdtypecode, none of "
                                               "inference_id, request_id or productid given, wrong "
                                               "types, a body that is not JSON."},
               503: error_doc("The database is unreachable, or the API has no token at all.")},
)
def feedback(request: Request, body: FeedbackIn):
    by = auth.actor(request, body.submitted_by, "submitted_by")
    # this worker's buffered predictions reach the table (a productid alone must be a served one)
    request.app.state.inference_log.flush(timeout=5.0)
    return ops_feedback.record(request.app.state.settings, prdtypecode=body.prdtypecode,
                               inference_id=body.inference_id, request_id=body.request_id,
                               productid=body.productid, submitted_by=by,
                               note=body.note).as_dict()
