"""A moderator's correction: the true class of a logged prediction or of a product.

Linking rules: an inference_id must name a logged prediction (NotFound otherwise); given with a
request_id, both must name the same prediction (Conflict); a request_id a client reused names the
prediction of the productid given with it, and is a Conflict when its predictions are of several
products and none is given (which one was meant cannot be told); a request_id alone is kept as given
and tied to its prediction when that reaches the log (another API worker may still hold it in
memory): `resolved` says whether it is tied. A productid alone is tied to that product's newest
logged prediction whose title can be trained on (features.has_letter_or_digit; the newest when
none can), as if its inference_id had been given (so retention keeps that row, the text
training learns from, and the label counts for that prediction like any other); a product never
served stays untied (its text is the catalogue's). The predicted class, model version and
productid come from the logged prediction when there is one.

Training rules (the one place they live; the API and the control room call `record`): the code
must be one of the 27 (Invalid); a label named by productid alone must be about a product the
catalogue holds or the API served (NotFound otherwise: there is no text to learn from); a
productid that contradicts the named prediction's is a Conflict. How labels become training rows
and open the feedback gate: store.apply_feedback_labels, steps/train.py, docs/PIPELINE.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from .. import store
from ..categories import PRDTYPECODES, category_name
from ..config import Settings
from ..errors import Conflict, Invalid, NotFound, Unavailable
from ..features import has_letter_or_digit


@dataclass
class Feedback:
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
    resolved: bool
    created_at: datetime

    def as_dict(self) -> dict:
        return asdict(self)


def check_code(prdtypecode: int) -> None:
    if prdtypecode not in PRDTYPECODES:
        raise Invalid(f"unknown prdtypecode {prdtypecode}: expected one of {', '.join(map(str, PRDTYPECODES))}")


def labels_for_next_retrain(conn, settings: Settings) -> dict:
    """What the next training would take from feedback, and whether the feedback gate is open.

    new_labels: products with a label no training used yet (what the gate counts, each product
    once); threshold: FEEDBACK_RETRAIN_MIN; feedback_rows: traffic-only products it would add as
    training rows; overrides: catalogue (or earlier feedback) rows whose code it would change;
    new_feedback: the new labels as rows (duplicates included); gate_open; max_feedback_id.
    """
    counts = store.feedback_label_counts(conn, PRDTYPECODES)
    new = int(counts["new_labels"] or 0)
    return {"new_labels": new, "threshold": settings.feedback_retrain_min,
            "feedback_rows": int(counts["feedback_rows"] or 0), "overrides": int(counts["overrides"] or 0),
            "new_feedback": int(counts["new_feedback"] or 0), "gate_open": new >= settings.feedback_retrain_min,
            "max_feedback_id": counts["max_feedback_id"]}


DISAGREEMENTS_MAX = 500


def disagreements(conn, limit: int = 50) -> dict:
    """The labelled products whose labellers disagree: each labeller's latest label differs from
    another's (a labeller relabelling their own answer corrects it). Training takes the latest
    label (store.apply_feedback_labels); a new label settles a product only when it makes every
    labeller's latest label agree, so this is the list a person adjudicates from.

    {"total": every such product, "items": the `limit` most recently labelled, each with its
    labels (newest first: submitted_by, prdtypecode, category, created_at, feedback_id), the
    latest code and the code in `products` (None before a training added it)}."""
    if not 1 <= int(limit) <= DISAGREEMENTS_MAX:
        raise Invalid(f"limit must be between 1 and {DISAGREEMENTS_MAX}, not {limit}")
    rows = store.label_disagreements(conn, PRDTYPECODES, int(limit))
    items = [{"productid": r["productid"], "designation": r["designation"] or "",
              "latest_code": r["latest_code"], "latest_category": category_name(r["latest_code"]),
              "training_code": r["training_code"], "last_labelled_at": r["last_labelled_at"],
              "labels": [{**label, "created_at": datetime.fromisoformat(label["created_at"]),
                          "category": category_name(label["prdtypecode"])} for label in r["labels"]]}
             for r in rows]
    return {"total": int(rows[0]["total"]) if rows else 0, "items": items}


def _tied(conn, inference_id: int | None, request_id: str | None, productid: int | None = None) -> dict | None:
    """The logged prediction the feedback names, by the linking rules above. A request_id that a
    client reused names several: the one of `productid` when given, else a Conflict unless they
    are all about the same product (or text)."""
    if inference_id is not None:
        inference = store.find_inference(conn, inference_id=inference_id)
        if inference is None:
            raise NotFound(f"No prediction with inference_id {inference_id} in the inference log")
        if request_id and inference["request_id"] != request_id:
            # each id is valid alone; together they contradict the log: a conflict
            raise Conflict(f"inference_id {inference_id} is request {inference['request_id']!r}, "
                           f"not {request_id!r}")
        return inference
    if request_id:
        if productid is not None and (own := store.inference_of_request(conn, request_id, productid)):
            return own
        if store.request_subjects(conn, request_id) > 1:
            raise Conflict(f"request_id {request_id!r} names several logged predictions of different products "
                           "(the client sent the same X-Request-ID more than once): give the inference_id"
                           + ("" if productid is None else f" (none is about product {productid})"))
        return store.inference_of_request(conn, request_id)
    return None


def _not_servable(conn, productid: int) -> str:
    """Why a product cannot be labelled by productid: never seen, or seen but its predictions
    dropped by retention (an earlier label names it: a label is accepted only for a product that
    was served or catalogued)."""
    if store.product_labelled_before(conn, productid):
        return (f"Product {productid} is not in the catalogue and its logged predictions were dropped by "
                "retention (INFERENCE_LOG_RETENTION_DAYS): no text left to label")
    return (f"Product {productid} was never served and is not in the catalogue: nothing to label (name a "
            "logged prediction by inference_id or request_id)")


def record(settings: Settings, *, prdtypecode: int, inference_id: int | None = None,
           request_id: str | None = None, productid: int | None = None, submitted_by: str | None = None,
           note: str | None = None) -> Feedback:
    """Store the feedback (one transaction); Unavailable when the database cannot be reached."""
    from ..db import connection
    from ..runs import is_transient

    check_code(prdtypecode)
    try:
        with connection(settings, application_name="mlops-api") as conn:
            if request_id and inference_id is None:  # its prediction may be being logged right now
                store.lock_request_links(conn, shared=False)
            inference = _tied(conn, inference_id, request_id, productid)
            if inference is not None and productid is not None and inference["productid"] is not None \
                    and int(inference["productid"]) != int(productid):
                raise Conflict(f"productid {productid} contradicts the prediction named, which is about "
                               f"product {inference['productid']}")
            if inference is None and not request_id and productid is None:
                raise Invalid("give inference_id, request_id or productid: which prediction or product the "
                              "feedback is about")
            if inference is None and not request_id:
                inference = store.newest_inference_of_product(conn, productid, title_ok=has_letter_or_digit)
                if inference is None and not store.product_was_served(conn, productid):
                    raise NotFound(_not_servable(conn, productid))
            row = store.insert_feedback(
                conn, true_code=prdtypecode,
                inference_id=inference["id"] if inference else None,
                request_id=request_id or (inference["request_id"] if inference else None),
                productid=productid if productid is not None else (inference["productid"] if inference else None),
                predicted_code=inference["predicted_code"] if inference else None,
                model_version=inference["model_version"] if inference else None,
                submitted_by=submitted_by, note=note,
            )
    except (NotFound, Conflict, Invalid):
        raise
    except Exception as exc:
        if is_transient(exc):
            raise Unavailable(f"database unavailable: {exc}") from exc
        raise
    return Feedback(id=row["id"], inference_id=row["inference_id"], request_id=row["request_id"],
                    productid=row["productid"], prdtypecode=row["true_code"],
                    category=category_name(row["true_code"]), predicted_code=row["predicted_code"],
                    model_version=row["model_version"], submitted_by=row["submitted_by"], note=row["note"],
                    resolved=row["inference_id"] is not None, created_at=row["created_at"])
