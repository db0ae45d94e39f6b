"""Drift monitoring: scores over time against the thresholds, and one report in detail."""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `common`, when run from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from mlops_cli.ops import drift as ops_drift, thresholds as ops_thresholds  # noqa: E402

common.page("Drift", ":material/query_stats:")
s = common.settings()
c = common.conn()

if common.empty_state(c):
    st.stop()

th = ops_thresholds.current(c, s)
src = th.get("source") or {}
a, b, d, e = st.columns(4)
a.metric("warning threshold", f"{th['warning']:g}")
b.metric("alert threshold", f"{th['alert']:g}")
d.metric("critical threshold", f"{th['critical']:g}")
with e:
    if "app_settings" in src.values():
        st.caption(f"set by **{common.md(th.get('updated_by')) or '?'}** on {common.fmt_time(th.get('updated_at'))} "
                   "(overrides the environment; change them on the Alerts dashboard)")
    else:
        st.caption("from the environment (DRIFT_WARNING/ALERT/CRITICAL_THRESHOLD)")

reports = ops_drift.reports(c, limit=100)
if not reports:
    st.info("No drift report yet: the daily pipeline (`mlops pipeline daily`, or `mlops drift`) writes one per "
            "window once a model is in production and predictions are logged.", icon=":material/inbox:")
    st.stop()

# --- scores over time -----------------------------------------------------------------------------------
st.subheader("Drift scores over time")
f1, f2 = st.columns(2)
windows = sorted({r["window_days"] for r in reports})
window = f1.selectbox("Window", ["all"] + windows, key="drift_window",
                      format_func=lambda w: "all windows" if w == "all" else f"{w} days")
days = f2.slider("History (days)", min_value=7, max_value=365, value=90, key="drift_days")
history = ops_drift.history(c, days=days, window_days=None if window == "all" else int(window))
if history:
    st.altair_chart(common.drift_score_chart(history, th), width="stretch")
    st.caption("Scores on the PSI scale: above the dashed lines a report is WARNING / ALERT / CRITICAL "
               "(lines at the thresholds in force now).")
else:
    st.caption("No scored report in this period (windows with too few predictions have no score).")

# --- the performance estimated without labels ------------------------------------------------------------
st.subheader("Performance estimated without labels")
estimates = ops_drift.estimate_history(c, days=days, window_days=None if window == "all" else int(window))
if estimates:
    st.altair_chart(common.estimate_chart(estimates), width="stretch")
    st.caption("Weighted F1 estimated from the model's calibrated probabilities (no label needed), with its 95% "
               "band; dashed: the same estimate on the model's holdout, which the estimated-performance alert "
               f"compares with (WARNING below it by more than the margin, now {th['estimate_margin']:g}). "
               "Diamonds: the realized weighted F1 where moderators labelled predictions of the window -- how far "
               "to trust the estimate (docs/performance_estimate.md).")
else:
    st.caption("No estimate in this period (windows with too few predictions are not estimated).")

# --- one report ---------------------------------------------------------------------------------------------
st.subheader("Report detail")
labels = {r["id"]: f"#{r['id']} · {common.fmt_time(r['as_of'])} · {r['window_days']} d · {r['level']}"
                   f"{'' if r['status'] == 'ok' else ' (insufficient data)'}" for r in reports}
report_id = st.selectbox("Report", list(labels), format_func=labels.get, key="drift_report")
report = common.call(ops_drift.report, c, report_id, what="the report")
common.show_report_scores(report)
details = report.get("details") or {}
if report["status"] != "ok":
    st.info(common.md(details.get("reason")) or "Insufficient data in this window: no scores.")
    st.stop()

tab_data, tab_pred, tab_top, tab_perf, tab_est = st.tabs(["Data drift features", "Prediction drift", "Top movers",
                                                          "Performance", "Estimated performance"])
with tab_data:
    st.caption("Reference (training data of the model) vs current (the window's predictions), per feature; "
               "the feature with the highest score sets the data drift score.")
    common.show_distributions(report, groups=("data",))
with tab_pred:
    common.show_distributions(report, groups=("prediction",))
with tab_top:
    common.show_top_movers(report)
    tops = details.get("top_features") or []
    if tops:
        st.markdown("**Top features**")
        st.dataframe(common.frame(tops), hide_index=True)
with tab_perf:
    perf = details.get("performance") or {}
    if perf.get("score") is None:
        st.caption(common.md(perf.get("reason")) or "no performance score in this window")
    else:
        a, b, d = st.columns(3)
        a.metric("window weighted F1", common.fmt_score(perf.get("window_weighted_f1")),
                 delta=f"{-(perf.get('drop') or 0):+.4f}")
        b.metric("baseline weighted F1", common.fmt_score(perf.get("baseline_weighted_f1")))
        d.metric("labels", f"{perf.get('n_labels', 0):,}", help=f"source: {perf.get('source')}")
        drops = perf.get("top_class_drops") or []
        if drops:
            st.markdown("**Classes whose F1 dropped most**")
            st.dataframe(common.frame([{"class": k, "F1 drop": v} for k, v in drops]), hide_index=True)
with tab_est:
    est = details.get("estimated_performance") or {}
    if est.get("weighted_f1") is None:
        st.caption(common.md(est.get("reason")) or "no estimate in this window")
    else:
        ref = est.get("reference") or {}
        a, b, d, e = st.columns(4)
        a.metric("estimated weighted F1", common.fmt_score(est["weighted_f1"]),
                 delta=None if est.get("drop") is None else f"{-est['drop']:+.4f}",
                 help="No label needed: from the served probabilities (confidence-based performance estimation)")
        b.metric("95% band", f"{est['low']:.3f} – {est['high']:.3f}")
        d.metric("reference (holdout estimate)", common.fmt_score(ref.get("weighted_f1")),
                 help=f"realized on the holdout: {common.fmt_score(ref.get('realized_weighted_f1'))}")
        realized = est.get("realized") or {}
        if realized.get("n"):
            on = realized.get("estimate_on_labelled") or {}
            e.metric("realized (labelled)", common.fmt_score(realized["weighted_f1"]),
                     help=f"{realized['n']} labelled predictions of the window")
            verdict = "inside" if realized.get("within_band") else "OUTSIDE"
            st.caption(f"Estimated vs realized on the same {realized['n']} labelled predictions: estimated "
                       f"{common.fmt_score(on.get('weighted_f1'))} [{on.get('low', 0):.3f}, {on.get('high', 0):.3f}], "
                       f"realized {common.fmt_score(realized['weighted_f1'])}: {verdict} the band"
                       + ("" if realized.get("within_band") else " -- the calibration may no longer hold; "
                          "trust the labels"))
        else:
            e.metric("realized (labelled)", "—", help="no moderator label on this window's predictions yet")
        st.caption(f"{est.get('n', 0):,} predictions; {est.get('unlisted_mass', 0):.1%} of the probability mass "
                   "was not logged (beyond the top-k) and is spread evenly over the other classes.")
        drops = ops_drift.estimate_class_drops(report)
        if drops:
            st.markdown("**Classes whose estimated F1 fell most below the reference's**")
            st.dataframe(common.frame(drops), hide_index=True)
