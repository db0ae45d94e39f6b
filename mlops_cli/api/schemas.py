"""The API's request and response models, and the rules they state: every rule the server checks
on a request is in its JSON Schema (the OpenAPI document is the contract, exactly)."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictFloat, StrictInt, Tag,
                      field_validator, model_validator)

from ..categories import PRDTYPECODES

NO_MODEL = "No model in production yet: promote a model (mlops promote) first"

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


# What POST /predict puts in a request_id: a client X-Request-ID (letters, digits, `._:-`, at most
# 100, + `-<index>` in a batch) or 32 hex digits; feedback can only name such an id.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
# The longest such id: 100 characters, `-`, a batch index (of at most 19 digits: any BIGINT).
REQUEST_ID_MAX = 120


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
             "note": "a controller, not a console"},
            {"inference_id": 1234, "prdtypecode": 2583},
            {"productid": 3804725264, "prdtypecode": 60},
        ],
    })

    inference_id: InferenceId | None = Field(None, description="inference_log id of the prediction.")
    request_id: str | None = Field(None, min_length=1, max_length=REQUEST_ID_MAX, pattern=REQUEST_ID_PATTERN,
                                   description="request_id returned by POST /predict (no longer id is made).")
    productid: ProductId | None = None
    prdtypecode: JsonInt = Field(..., description="The true class (one of the 27 codes).",
                                 json_schema_extra={"enum": list(PRDTYPECODES)})
    submitted_by: str | None = Field(None, max_length=200, pattern=NO_NUL,
                                     description="Optional: the label is recorded as the token owner's; "
                                                 "when given, it must be that name (403 otherwise).")
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
    shadow: dict | None = Field(None, description="The shadow challenger (docs/shadow.md): its version, worker "
                                                  "and counts; null when it is off.")
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


# --- control API models -----------------------------------------------------------------------------------------
# As above, every rule the server checks is in the schema: free text refuses NUL (PostgreSQL
# text cannot hold it), a version is a registry version number.
VERSION_PATTERN = r"^[1-9][0-9]{0,14}$"  # as a number: 1 .. 10**15 - 1, exact as a float
Actor = Annotated[str | None, Field(max_length=200, pattern=NO_NUL,
                                    description="Optional: who acts is the token's owner; when given, "
                                                "it must be that name (403 otherwise).")]
Text = Annotated[str | None, Field(max_length=2000, pattern=NO_NUL)]
AlertId = Annotated[StrictInt, Field(ge=1, le=ID_MAX), BeforeValidator(json_integer)]
ALERT_ID_DOC = ("The drift alert this action answers: the action and its outcome are recorded in the "
                "alert's audit trail (alert_actions), as the control room's alert buttons do.")


class RetrainIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"by": "alice", "reason": "new catalogue data"}]})

    by: Actor = None
    reason: Text = None
    alert_id: AlertId | None = Field(None, description=ALERT_ID_DOC)


class RetrainOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"pipeline_run_id": 42, "status": "started"}]})

    pipeline_run_id: int
    status: Literal["started"]


class RollbackIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"reason": "F1 dropped on the new catalogue", "by": "alice"},
        {"reason": "incident INC-123", "to_version": "3"},
        {"reason": "drift CRITICAL on the new supplier feed", "alert_id": 12},
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
    alert_id: AlertId | None = Field(None, description=ALERT_ID_DOC)

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
        "step": "rollback", "status": "succeeded", "pipeline_run_id": 57,
        "message": "champion 4 -> 3", "outputs": {"from_version": "4", "to_version": "3"}}]})

    step: str
    status: str
    pipeline_run_id: int | None = Field(..., description="The step's pipeline_runs row (GET /api/runs).")
    message: str
    outputs: dict


Rows = list[dict[str, Any]]


class LabellingItemOut(BaseModel):
    """One prediction of the labelling queue (ops/labelling.py: how the score is made)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "rank": 1, "score": 0.71, "inference_id": 1234, "request_id": "6f1c2b9e8d7a4c3b9a1e2d3c4b5a6978",
        "logged_at": "2026-11-26T10:00:00Z", "productid": 3804725264, "designation": "Manette zorglub pro",
        "description": "", "model_version": "3", "predicted_code": 50, "predicted_category": "Gaming accessories",
        "confidence": 0.41, "uncertainty": 0.59, "confusion": 0.22, "drift": 0.12, "drifted_tokens": ["zorglub"],
        "reasons": ["confidence 0.41: the model gives its answer a 59% chance of being wrong",
                    "class 50 Gaming accessories is one the model confuses: F1 0.78 on its holdout",
                    "drifted tokens of the latest drift report: zorglub"],
    }]})

    rank: int = Field(..., description="1 = the most worth a label.")
    score: float = Field(..., description="1 - (1 - uncertainty)(1 - confusion)(1 - drift): the chance "
                                          "that the served answer is wrong, by any of the three signals.")
    inference_id: int = Field(..., description="Give it to POST /feedback with the true prdtypecode.")
    request_id: str
    logged_at: datetime
    productid: int | None
    designation: str
    description: str
    model_version: str | None
    predicted_code: int
    predicted_category: str
    confidence: float
    uncertainty: float = Field(..., description="1 - confidence.")
    confusion: float | None = Field(..., description="1 - F1 of the predicted class on the serving model's "
                                                     "holdout (null: no reference).")
    drift: float | None = Field(..., description="Excess share of out-of-vocabulary words over the holdout's "
                                                 "rate, plus the share of drifted tokens (null: not measured).")
    drifted_tokens: list[str]
    reasons: list[str] = Field(..., description="Why it is offered, the largest signal first.")


class LabelOut(BaseModel):
    """One labeller's latest label of a product."""

    submitted_by: str | None
    prdtypecode: int
    category: str
    created_at: datetime
    feedback_id: int


class LabelDisagreementOut(BaseModel):
    """A labelled product whose labellers' latest labels name different codes."""

    productid: int
    designation: str = Field(..., description="The catalogue's title, else the logged one.")
    latest_code: int = Field(..., description="The latest label's code: the one training takes.")
    latest_category: str
    training_code: int | None = Field(..., description="The code in the training rows now (null: no training "
                                                       "has added the product yet).")
    last_labelled_at: datetime
    labels: list[LabelOut] = Field(..., description="Each labeller's latest label, newest first.")


class LabelDisagreementsOut(BaseModel):
    """ops.feedback.disagreements: the most recently labelled first."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "total": 1, "items": [{
            "productid": 3804725264, "designation": "Manette zorglub pro", "latest_code": 50,
            "latest_category": "Gaming accessories", "training_code": 50, "last_labelled_at": "2026-11-26T10:00:00Z",
            "labels": [{"submitted_by": "bob", "prdtypecode": 50, "category": "Gaming accessories",
                        "created_at": "2026-11-26T10:00:00Z", "feedback_id": 812},
                       {"submitted_by": "alice", "prdtypecode": 2462, "category": "Video games (used) & bundles",
                        "created_at": "2026-11-25T16:20:00Z", "feedback_id": 790}]}]}]})

    total: int = Field(..., description="Every such product (items: at most `limit`).")
    items: list[LabelDisagreementOut]


# A threshold: a positive number (an integer is one too); no string, no boolean, no NaN.
Threshold = Annotated[StrictFloat | None, Field(None, gt=0, allow_inf_nan=False)]


class ThresholdsIn(BaseModel):
    """Some of the drift thresholds: a value not given keeps the one in force. The three
    together must satisfy 0 < warning < alert < critical (409 otherwise: it depends on the
    values in force, which the schema cannot know)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"warning": 0.15, "by": "alice", "note": "fewer 7-day warnings"},
        {"warning": 0.12, "alert": 0.25, "critical": 0.4, "note": "after the supplier change"},
    ]})

    warning: Threshold = None
    alert: Threshold = None
    critical: Threshold = None
    estimate_margin: StrictFloat | None = Field(
        None, gt=0, lt=1, allow_inf_nan=False,
        description="The drop of the estimated weighted F1 below the reference's estimate that is a WARNING "
                    "(ESTIMATE_MARGIN; docs/performance_estimate.md).")
    by: Actor = None
    note: Text = None
    alert_id: AlertId | None = Field(None, description=ALERT_ID_DOC)

