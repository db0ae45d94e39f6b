"""Alerts dashboard: recent drift alerts, the drift behind each, and the human decisions.

Actions (each needs a sign-in and a note, and is audited in alert_actions with the signed-in name):
force a retrain now (the retrain pipeline, in the background), investigate (record only),
acknowledge the alert (no reminders until it escalates), adjust the drift thresholds (used by the
next drift and alert runs), roll back to the previous model. Each needs the operator role. Nobody
signed in (UI_PUBLIC_READ), or another role: the forms are replaced by a notice.
"""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `common`, when run from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from mlops_cli.ops import alerts as ops_alerts, drift as ops_drift, models as ops_models  # noqa: E402
from mlops_cli.access import OPERATE  # noqa: E402
from mlops_cli.ops import thresholds as ops_thresholds  # noqa: E402
from mlops_cli.vocab import ALERT_LEVELS  # noqa: E402

common.page("Alerts dashboard", ":material/warning:")
s = common.settings()
c = common.conn()
empty = common.empty_state(c)
th = ops_thresholds.current(c, s)

# --- recent alerts -------------------------------------------------------------------------------------------
st.subheader("Recent alerts")
counts = ops_alerts.open_alerts_by_level(c)
cols = st.columns(3)
for col, level in zip(cols, ALERT_LEVELS):
    col.metric(f"open {level}", counts.get(level, 0))

FILTERS = {"active (open or acknowledged)": None, "all": None, "open": "open", "acknowledged": "acknowledged",
           "resolved": "resolved"}
which = st.selectbox("Show", list(FILTERS), key="alerts_filter")
rows = ops_alerts.list_alerts(c, status=FILTERS[which], limit=200)
if which.startswith("active"):
    rows = [r for r in rows if r["status"] != "resolved"]

alert = None
if not rows and not empty:
    st.info("No alert to show: drift stayed under the thresholds (or the daily pipeline has not run yet).",
            icon=":material/verified:")
if rows:
    st.dataframe(common.frame([{**r, "notified_level": (r.get("details") or {}).get("notified_level")} for r in rows],
                              ["id", "level", "cause", "status", "count", "first_seen", "last_seen",
                               "notified_level", "message"]),
                 hide_index=True, width="stretch")
# the alert chosen stays chosen if the list, read again, no longer holds it (the actions below
# would otherwise be taken on another alert)
labels = {r["id"]: f"#{r['id']} · {r['level']} · {r['cause']} · {r['status']}" for r in rows}
alert_id, _label, left = common.choice("Alert", labels, "alerts_selected", lambda _i, label: label)
if alert_id is not None:
    alert = common.call(ops_alerts.alert_detail, c, alert_id, what="the alert")
    if left:
        st.warning(f"Alert #{alert_id} is no longer in this list (it is {alert['status']} now): the actions below "
                   "still concern it.", icon=":material/update:")

# --- the drift behind the alert ----------------------------------------------------------------------------
if alert is not None:
    st.subheader(f"Alert #{alert['id']}: {alert['cause'].replace('_', ' ')}")
    details = alert.get("details") or {}
    st.markdown(f"{common.badge(alert['level'])} {common.badge(alert['status'])} · first seen "
                f"{common.fmt_time(alert['first_seen'])} · last seen {common.fmt_time(alert['last_seen'])} · "
                f"seen {alert['count']} times · peak {details.get('peak_level') or alert['level']} · notified "
                f"{details.get('notified_level') or 'not yet'}"
                + (f" · acknowledged by {common.md(details['acknowledged_by'])}" if details.get("acknowledged_by")
                   else ""))
    if alert.get("message"):
        st.caption(common.md(alert["message"]))
    if alert["history"]:
        import altair as alt
        import pandas as pd

        hist = pd.DataFrame(alert["history"])
        hist["at"] = pd.to_datetime(hist["at"], utc=True)
        hist["when"] = pd.to_datetime(hist["as_of"], utc=True).fillna(hist["at"])
        line = alt.Chart(hist).mark_line(point=True, color="#1f77b4").encode(
            x=alt.X("when:T", title="report as of"), y=alt.Y("score:Q", title=f"{alert['cause']} score"),
            tooltip=[alt.Tooltip("when:T", title="as of"), alt.Tooltip("at:T", title="alert run"), "report_id",
                     alt.Tooltip("score:Q", format=".4f"), "level"])
        st.altair_chart(alt.layer(line, common.threshold_rules(th)).properties(height=240), width="stretch")
    report = alert.get("report")
    if report is None:
        st.caption("The drift report behind this alert is gone.")
    else:
        st.markdown(f"**Drift report #{report['id']}** (the latest one that raised or updated this alert)")
        common.show_report_scores(report)
        group = alert["cause"].split("_")[0]
        if alert["cause"] == "estimated_performance":
            rows = ops_drift.estimate_class_drops(report)
            if rows:
                st.markdown("**Classes whose estimated F1 fell most below the reference's** (no labels needed)")
                st.dataframe(common.frame(rows), hide_index=True)
        elif group in ("data", "prediction"):
            with st.expander(f"{group} drift per feature: reference vs current", expanded=True):
                common.show_distributions(report, groups=(group,))
            with st.expander("top drifting tokens and classes", expanded=group == "data"):
                common.show_top_movers(report)
        else:
            perf = (report.get("details") or {}).get("performance") or {}
            drops = perf.get("top_class_drops") or []
            if drops:
                st.markdown("**Classes whose F1 dropped most** (F1 at training vs in the window)")
                ref_f1, cur_f1 = perf.get("reference_per_class_f1") or {}, perf.get("per_class_f1") or {}
                bars = [{"label": k, "which": which, "share": f1.get(k), "order": i} for i, (k, _) in enumerate(drops)
                        for which, f1 in (("reference", ref_f1), ("current", cur_f1)) if f1.get(k) is not None]
                if bars:
                    st.altair_chart(common.distribution_chart(bars), width="stretch")
                st.dataframe(common.frame([{"class": k, "F1 drop": v} for k, v in drops]), hide_index=True)

# --- actions ---------------------------------------------------------------------------------------------------
st.subheader("Decide")
target_id = alert["id"] if alert is not None else None
st.caption(("On alert #%d. " % target_id if target_id else "Not tied to an alert. ")
           + "Each action is recorded with your signed-in name and a note in the decision history below.")
versions = common.call(ops_models.list_models, c, s, what="the model registry")
tab_retrain, tab_investigate, tab_ack, tab_thresholds, tab_rollback = st.tabs(
    ["Force a retrain now", "Investigate — do nothing", "Acknowledge", "Adjust alert thresholds",
     "Roll back to the previous model"])

with tab_retrain:
    st.caption("Starts the retrain pipeline (train → evaluate → promote) in the background; the usual promotion "
               "rule decides whether the new version replaces the champion.")
    if who := common.acting_as(OPERATE, "forcing a retrain"):
        with st.form("alert_retrain"):
            note = st.text_area("Note (required)", key="alert_retrain_note")
            go = st.form_submit_button("Force a retrain now", key="alert_retrain_submit", type="primary")
        if go:
            common.run_action("alert_result_retrain", lambda: ops_models.retrain(
                s, who, triggered_by="ui", decision=ops_models.Decision(target_id, note)),
                              spinner="Starting the retrain pipeline…", what="forcing a retrain")
    common.show_result(st.session_state.get("alert_result_retrain"))

with tab_investigate:
    st.caption("Records that you are looking into it; nothing else changes (reminders continue).")
    if who := common.acting_as(OPERATE, "recording an investigation"):
        with st.form("alert_investigate"):
            note = st.text_area("Note (required)", key="alert_investigate_note")
            go = st.form_submit_button("Investigate — do nothing", key="alert_investigate_submit")
        if go:
            common.run_action("alert_result_investigate", lambda conn: ops_alerts.investigate(
                conn, target_id, common.ui_trigger(who), note), connect=True, what="recording an investigation")
    common.show_result(st.session_state.get("alert_result_investigate"))

with tab_ack:
    st.caption("Marks the alert acknowledged: a person is on it, so no reminder is sent until it escalates or "
               "resolves. The note is optional.")
    if alert is None or alert["status"] == "resolved":
        st.caption("Select an open alert above to acknowledge it.")
    elif who := common.acting_as(OPERATE, "acknowledging an alert"):
        with st.form("alert_ack"):
            note = st.text_area("Note (optional)", key="alert_ack_note")
            go = st.form_submit_button("Acknowledge", key="alert_ack_submit")
        if go:
            common.run_action("alert_result_ack", lambda conn: ops_alerts.acknowledge(
                conn, s, target_id, by=common.ui_trigger(who), note=note), connect=True,
                what="acknowledging an alert")
    common.show_result(st.session_state.get("alert_result_ack"))

with tab_thresholds:
    st.caption("Stored in app_settings and used by the next drift and alert runs (0 < warning < alert < critical); "
               "a value left empty keeps the one in force. "
               f"Now: warning {th['warning']:g} / alert {th['alert']:g} / critical {th['critical']:g}, "
               f"estimate margin {th['estimate_margin']:g}.")
    if who := common.acting_as(OPERATE, "changing the thresholds"):
        with st.form("alert_thresholds"):
            a, b, d, e = st.columns(4)
            # empty = keep the value in force (a partial update, as `mlops thresholds --warning X`)
            w = a.number_input("warning", min_value=0.0, value=None, step=0.01, format="%.3f",
                               placeholder=f"{th['warning']:g} (keep)", key="alert_thresholds_warning")
            al = b.number_input("alert", min_value=0.0, value=None, step=0.01, format="%.3f",
                                placeholder=f"{th['alert']:g} (keep)", key="alert_thresholds_alert")
            cr = d.number_input("critical", min_value=0.0, value=None, step=0.01, format="%.3f",
                                placeholder=f"{th['critical']:g} (keep)", key="alert_thresholds_critical")
            mg = e.number_input("estimate margin", min_value=0.0, max_value=0.99, value=None, step=0.01,
                                format="%.3f", placeholder=f"{th['estimate_margin']:g} (keep)",
                                key="alert_thresholds_estimate_margin",
                                help="Drop of the estimated weighted F1 (no labels) below the model's holdout "
                                     "estimate that is a WARNING (ESTIMATE_MARGIN)")
            note = st.text_area("Note (required)", key="alert_thresholds_note")
            go = st.form_submit_button("Adjust alert thresholds", key="alert_thresholds_submit")
        if go:
            common.run_action("alert_result_thresholds", lambda conn: ops_thresholds.update(
                conn, s, common.ui_trigger(who), warning=w, alert=al, critical=cr, note=note, alert_id=target_id,
                note_required=True, estimate_margin=mg or None), connect=True, what="changing the thresholds")
    common.show_result(st.session_state.get("alert_result_thresholds"))

with tab_rollback:
    champ = ops_models.champion(c, s, versions)
    targets = ops_models.rollback_targets(c, s, versions)
    PREVIOUS = "the previous champion"
    st.caption("Puts a former champion back in production (the note is the rollback's reason, sent with the "
               "notification). " + (f"Champion now: v{champ['version']}." if champ else "No champion now."))
    if who := common.acting_as(OPERATE, "rolling back"):
        with st.form("alert_rollback"):
            to, _v, _left = common.choice("Return to", {v: v for v in [PREVIOUS] + targets}, "alert_rollback_to",
                                          lambda v, _v: v if v == PREVIOUS else f"v{v}")
            note = st.text_area("Note (required)", key="alert_rollback_note")
            go = st.form_submit_button("Roll back to the previous model", key="alert_rollback_submit")
        if go:
            common.run_action("alert_result_rollback", lambda: ops_models.rollback(
                s, common.ui_trigger(who), reason=note, to_version=None if to == PREVIOUS else to,
                decision=ops_models.Decision(target_id, note)), spinner="Rolling back…", what="rolling back")
    common.show_result(st.session_state.get("alert_result_rollback"))

# --- decision history --------------------------------------------------------------------------------------------
st.subheader("Decision history")
only = alert is not None and st.toggle(f"Only alert #{alert['id']}", key="alerts_history_only")
actions = ops_alerts.alert_actions(c, alert_id=alert["id"] if only else None, limit=200)
if actions:
    st.dataframe(common.frame(actions, ["id", "created_at", "alert_id", "action", "actor", "note", "params"]),
                 hide_index=True, width="stretch")
else:
    st.caption("No decision recorded yet.")
