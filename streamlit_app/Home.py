"""Overview: the champion in production, the last scheduled pipelines, open alerts, the catalogue."""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # `common`, when run from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from mlops_cli.ops import alerts as ops_alerts, models as ops_models, runs as ops_runs  # noqa: E402
from mlops_cli.vocab import ALERT_LEVELS  # noqa: E402

common.page("Overview", ":material/dashboard:")
s = common.settings()
c = common.conn()

if common.empty_state(c):
    st.stop()

st.caption(f"Product classifier **{common.md(s.model_name)}** for the Rakuten France catalogue "
           "(27 product types, weighted F1).")

# --- champion ---------------------------------------------------------------------------------------
st.subheader("Champion in production")
champ = common.call(ops_models.champion, c, s, what="the model registry")
if champ is None:
    st.info("No version is in production yet: train, evaluate and promote one (Operations page, or "
            "`mlops pipeline weekly`).", icon=":material/model_training:")
else:
    a, b, d = st.columns(3)
    a.metric("version", f"v{champ['version']}")
    b.metric("weighted F1", common.fmt_score(champ["weighted_f1"]), help=champ.get("weighted_f1_source"))
    d.metric("in production since", common.fmt_time(champ["since"], tz=False),
             help=f"{common.fmt_time(champ['since'])} ({common.age(champ['since'])})" if champ["since"] else None)
    how = {"promoted": "promoted by the rule", "manual_promotion": "approved by hand",
           "rolled_back": "restored by a rollback"}.get(champ["how"], champ["how"] or "")
    st.caption(common.md(f"{how}{' by ' + champ['decided_by'] if champ.get('decided_by') else ''}"
                         f"{': ' + champ['justification'] if champ.get('justification') else ''}"))

# --- pipelines ---------------------------------------------------------------------------------------
st.subheader("Scheduled pipelines")
cols = st.columns(3)
for col, kind, label in zip(cols, ("weekly", "daily", "retrain"),
                            ("Weekly (load → train → evaluate → promote)", "Daily (drift → alert)",
                             "Retrain (on demand)")):
    with col:
        st.markdown(f"**{label}**")
        run = ops_runs.last_pipeline_run(c, kind)
        if run is None:
            st.caption("never run")
            continue
        st.markdown(f"run **#{run['id']}** {common.badge(run['status'])} · {common.fmt_time(run['started_at'])} "
                    f"({common.age(run['started_at'])}) · {common.md(run['triggered_by'])}"
                    f"{common.md(':' + run['actor']) if run.get('actor') else ''}")
        if run["steps"]:
            st.markdown(" → ".join(f"{r['step']} {common.badge(r['status'])}" for r in run["steps"]))
        msg = ops_runs.run_message(run)
        if msg:
            st.caption(common.md(msg[:300]))

# --- alerts ------------------------------------------------------------------------------------------
st.subheader("Open alerts")
counts = ops_alerts.open_alerts_by_level(c)
cols = st.columns(4)
for col, level in zip(cols, ALERT_LEVELS):
    col.metric(level, counts.get(level, 0))
active = ops_alerts.open_alerts(c)
with cols[3]:
    if active:
        worst = active[0]
        st.markdown(f"worst: {common.badge(worst['level'])} {common.md(worst['cause'])} ({worst['status']})")
        st.page_link("pages/5_Alerts_Dashboard.py", label="Open the alerts dashboard", icon=":material/warning:")
    else:
        st.markdown(":green-badge[no open alert]")

# --- catalogue ---------------------------------------------------------------------------------------
st.subheader("Catalogue")
counts = ops_runs.catalogue_counts(c)
a, b, d = st.columns(3)
a.metric("products", f"{counts['products']:,}")
b.metric("batches", f"{counts['batches']:,}")
d.metric("rejected rows", f"{counts['rejected']:,}")
growth = ops_runs.catalogue_growth(c)
if growth:
    import altair as alt

    df = common.frame(growth)
    df["batch"] = df.apply(lambda r: f"#{r['batch_id']} {r['slot'] or ''}".strip(), axis=1)
    chart = alt.Chart(df).mark_area(line=True, point=True, opacity=0.25).encode(
        x=alt.X("batch:N", sort=list(df["batch"]), title="batch (load week)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("catalogue_rows:Q", title="products in the catalogue"),
        tooltip=["batch_id", "slot", "created_at:T", "rows_loaded", "catalogue_rows"],
    ).properties(height=280)
    st.altair_chart(chart, width="stretch")
else:
    st.caption("no batch loaded yet")
