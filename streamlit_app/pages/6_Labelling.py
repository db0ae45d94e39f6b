"""Labelling queue: the served predictions most worth a human label, first, and a form to give
the true product type of one.

The queue and its order come from mlops_cli.ops.labelling (the chance that the served answer is
wrong, from low confidence, the predicted class's holdout F1 and the words the model cannot read
or that drifted; each item says why it is offered). A label is recorded by ops.feedback.record
(as POST /feedback) with the signed-in name as `submitted_by`; the counter is
ops.feedback.labels_for_next_retrain (what the feedback gate of the next training counts).
Products whose labellers disagree are listed above the queue (ops.feedback.disagreements), with
a form to add one's own label. Labelling needs the labeller (or operator) role. Nobody signed in
(UI_PUBLIC_READ), or a viewer: the queue is shown, the form replaced by a notice. Catalogue text is shown escaped (common.md).
"""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `common`, when run from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from mlops_cli.access import LABEL  # noqa: E402
from mlops_cli.categories import PRDTYPECODES, category_name  # noqa: E402
from mlops_cli.ops import feedback as ops_feedback, labelling as ops_labelling  # noqa: E402
from mlops_cli.render import labels_text  # noqa: E402

common.page("Labelling", ":material/label:")
s = common.settings()
c = common.conn()
empty = common.empty_state(c)


def code_choice(key: str):
    """The true product type, none chosen in advance (not even the predicted one): a label is a
    person's own answer."""
    return st.selectbox("True product type", list(PRDTYPECODES), key=key, index=None,
                        placeholder="choose the true product type", format_func=lambda k: f"{k} · {category_name(k)}")


def record_label(go: bool, code, what: str, **names) -> None:
    """A submitted label form: a code is required; the label (ops.feedback.record, as POST
    /feedback) is the signed-in person's, about `names` (inference_id or productid, and a note)."""
    if go and code is None:
        st.error("Choose the true product type.", icon=":material/edit_off:")
    elif go:
        def _record():
            fb = ops_feedback.record(s, prdtypecode=int(code), submitted_by=common.ui_trigger(common.identity()).actor,
                                     **names)
            return {"ok": True, "status": "recorded",
                    "message": f"{fb.prdtypecode} {fb.category} for {what} by {fb.submitted_by} (feedback #{fb.id})"}

        common.run_action("labelling_result", _record, spinner="Recording the label…", action=LABEL, what="labelling")


# --- what the next retrain would use ----------------------------------------------------------------------
counts = common.call(ops_feedback.labels_for_next_retrain, c, s, what="the labels")
a, b, d = st.columns(3)
a.metric("new labels", f"{counts['new_labels']:,}")
b.metric("retrain threshold (FEEDBACK_RETRAIN_MIN)", f"{counts['threshold']:,}")
d.metric("rows they add / override", f"{counts.get('feedback_rows', 0):,} / {counts.get('overrides', 0):,}")
gate = "reached: the next retrain uses them" if counts["new_labels"] >= counts["threshold"] else "not reached yet"
st.caption(f"{counts['new_labels']} labels so far; the next retrain uses them when {counts['new_labels']} >= "
           f"{counts['threshold']} ({gate}).")

# --- labels that disagree -----------------------------------------------------------------------------------
disputed = common.call(ops_feedback.disagreements, c, what="the labels that disagree")
if disputed["total"]:
    n = disputed["total"]
    with st.expander(f"Labels that disagree: {n:,} product{'' if n == 1 else 's'}", icon=":material/rule:"):
        st.caption("Products whose labellers' latest labels name different codes (a labeller relabelling "
                   "their own answer corrects it). Training takes the latest label; a new label settles a "
                   "product once every labeller's latest label agrees.")
        st.dataframe(common.frame([
            {"product": it["productid"], "title": it["designation"], "labels": labels_text(it["labels"], " · "),
             "training takes": f"{it['latest_code']} {it['latest_category']}",
             "last labelled": it["last_labelled_at"]} for it in disputed["items"]]),
            hide_index=True, width="stretch")
        if disputed["total"] > len(disputed["items"]):
            st.caption(f"The {len(disputed['items'])} most recently labelled of {disputed['total']:,}.")
        if common.refusal(LABEL, "labelling") is None:
            titles = {it["productid"]: it["designation"] for it in disputed["items"]}
            with st.form("settling", clear_on_submit=True):
                pid, _title, settled = common.choice("Product", titles, "settling_product",
                                                     lambda p, title: f"{p} · {title[:70]}")
                code = code_choice("settling_code")
                settle = st.form_submit_button("Record my label", key="settling_submit")
            if settled:
                st.caption(f"Product {pid} no longer has disagreeing labels (settled since you chose it); "
                           "a label you give is recorded for it all the same.")
            record_label(settle, code, f"product {pid}", productid=int(pid))

# --- the queue --------------------------------------------------------------------------------------------
st.subheader("Most worth a label")
left, right = st.columns(2)
days = left.number_input("Served today and in the days before (whole UTC days)", min_value=1,
                         max_value=ops_labelling.MAX_DAYS, value=ops_labelling.DEFAULT_DAYS, step=1,
                         key="labelling_days")
limit = right.number_input("Items", min_value=1, max_value=ops_labelling.MAX_LIMIT,
                           value=ops_labelling.DEFAULT_LIMIT, step=10, key="labelling_limit")
# offered (and recorded as such: performance drift leaves those labels out) only to who may label
queue = common.call(ops_labelling.labelling_queue, c, s, limit=int(limit), days=int(days),
                    offered_to=common.principal(), what="the labelling queue")
st.caption("Ranked by the chance that the served answer is wrong: 1 - (1 - uncertainty)(1 - confusion)(1 - drift), "
           "where uncertainty = 1 - confidence, confusion = 1 - the predicted class's F1 on the model's holdout, "
           "drift = the share of words the model cannot read (above its holdout rate) or that drifted. "
           "One entry per product; labelled products are not offered.")

if not queue and not empty:
    st.info("Nothing to label: no unlabelled served prediction in the window.", icon=":material/task_alt:")
if queue:
    rows = [{"rank": q.rank, "score": q.score, "title": q.designation,
             "predicted": f"{q.predicted_code} {q.predicted_category}".strip(), "confidence": q.confidence,
             "reasons": " · ".join(q.reasons), "productid": q.productid, "model": q.model_version,
             "served at": q.logged_at} for q in queue]
    st.dataframe(common.frame(rows), hide_index=True, width="stretch",
                 column_config={"score": st.column_config.NumberColumn(format="%.3f"),
                                "confidence": st.column_config.NumberColumn(format="%.2f")})

# the item chosen stays chosen if the queue, read again, no longer offers it
item_id, item, left = common.choice("Item to label", {q.inference_id: q for q in queue}, "labelling_item",
                                    lambda i, q: f"#{q.rank} · {q.designation[:70]} · predicted {q.predicted_code}")
if item is None:
    common.show_result(st.session_state.get("labelling_result"))
    st.stop()
if left:
    st.warning("This item has left the queue since you chose it (someone labelled it, or newer traffic pushed "
               "it out): a label you give is recorded for this prediction all the same.", icon=":material/update:")
st.markdown(f"**{common.md(item.designation)}**")
if item.description:
    st.caption(common.md(item.description[:500]))
st.markdown(f"predicted **{item.predicted_code} {common.md(item.predicted_category)}** · confidence "
            f"{item.confidence:.2f} · model v{common.md(item.model_version) or '—'} · product "
            f"{common.md(item.productid) or '—'}")
for reason in item.reasons:
    st.markdown(f"- {common.md(reason)}")

# --- label it -----------------------------------------------------------------------------------------------
st.subheader("Give the true product type")
if common.acting_as(LABEL, "labelling"):
    with st.form("labelling", clear_on_submit=True):
        code = code_choice("labelling_code")
        note = st.text_input("Note (optional)", key="labelling_note")
        go = st.form_submit_button("Record the label", key="labelling_submit", type="primary")
    record_label(go, code, f"“{item.designation[:60]}”", inference_id=item.inference_id,
                 note=(note or "").strip() or None)
common.show_result(st.session_state.get("labelling_result"))
