"""Pipeline runs: what ran, when, who started it, how it ended; one run in detail."""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `common`, when run from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from mlops_cli.ops import runs as ops_runs  # noqa: E402
from mlops_cli.vocab import Pipeline, RunStatus, Step, values  # noqa: E402

common.page("Pipeline runs", ":material/account_tree:")
c = common.conn()

if common.empty_state(c):
    st.stop()

ALL = "(all)"
f1, f2, f3, f4 = st.columns(4)
pipeline = f1.selectbox("Pipeline", (ALL,) + values(Pipeline), key="runs_pipeline")
step = f2.selectbox("Step", (ALL,) + values(Step), key="runs_step")
status = f3.selectbox("Status", (ALL,) + values(RunStatus), key="runs_status")
limit = f4.number_input("Limit", min_value=1, max_value=5000, value=100, step=50, key="runs_limit")

rows = ops_runs.list_runs(c, pipeline=None if pipeline == ALL else pipeline, step=None if step == ALL else step,
                       status=None if status == ALL else status, limit=int(limit))
if not rows:
    st.info("No pipeline run matches these filters.")
    st.stop()

for r in rows:
    r["who"] = f"{r['triggered_by']}:{r['actor'] or ''}"
    r["result"] = ops_runs.run_message(r)[:200]
    r["duration_s"] = None if r.get("duration_s") is None else round(float(r["duration_s"]), 1)

tab_table, tab_timeline = st.tabs(["Table", "Timeline"])
with tab_table:
    st.dataframe(
        common.frame(rows, ["id", "pipeline", "step", "status", "who", "slot", "started_at", "duration_s",
                            "parent_run_id", "upstream_run_id", "result"]),
        hide_index=True, width="stretch",
        column_config={"started_at": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm:ss"),
                       "duration_s": st.column_config.NumberColumn("secs")},
    )
with tab_timeline:
    import altair as alt
    import pandas as pd

    df = common.frame(rows, ["id", "pipeline", "step", "status", "who", "started_at", "finished_at", "result"])
    df["finished_at"] = df["finished_at"].fillna(pd.Timestamp.now(tz="UTC"))
    df["label"] = df["step"] + " (" + df["pipeline"] + ")"
    colors = alt.Scale(domain=list(values(RunStatus)), range=["#1f77b4", "#2ca02c", "#d62728", "#9aa5b1"])
    base = alt.Chart(df).encode(
        x=alt.X("started_at:T", title="time"), y=alt.Y("label:N", title=None),
        color=alt.Color("status:N", scale=colors),
        tooltip=["id", "pipeline", "step", "status", "who", "started_at:T", "finished_at:T", "result"])
    bars = base.mark_bar(height=12).encode(x2="finished_at:T")
    starts = base.mark_point(filled=True, size=50)  # runs of a few seconds are thinner than a pixel
    st.altair_chart(alt.layer(bars, starts).properties(height=max(200, 28 * df["label"].nunique())),
                    width="stretch")

# --- one run --------------------------------------------------------------------------------------
st.subheader("Run detail")
ids = [r["id"] for r in rows]
labels = {r["id"]: f"#{r['id']} {r['step']} ({r['pipeline']}) {r['status']}" for r in rows}
run_id = st.selectbox("Run", ids, format_func=lambda i: labels.get(i, f"#{i}"), key="runs_detail")
detail = ops_runs.run_detail(c, run_id)
if detail is None:
    st.warning(f"Run #{run_id} no longer exists.")
    st.stop()
run = detail["run"]
st.markdown(f"**#{run['id']}** `{run['step']}` of the **{run['pipeline']}** pipeline {common.badge(run['status'])} · "
            f"started {common.fmt_time(run['started_at'])}, finished {common.fmt_time(run['finished_at'])} · "
            f"triggered by `{run['triggered_by']}` · actor **{common.md(run['actor']) or '—'}** · "
            f"host {common.md(run.get('hostname')) or '—'} (pid {run.get('pid') or '—'})")
if run.get("error"):
    st.error(common.md(run["error"]), icon=":material/error:")
elif (run.get("outputs") or {}).get("message"):
    st.caption(common.md(run["outputs"]["message"]))
a, b = st.columns(2)
with a:
    st.markdown("**Parameters**")
    st.json(common.jsonable(run.get("params") or {}), expanded=1)
with b:
    st.markdown("**Outputs**")
    st.json(common.jsonable(run.get("outputs") or {}), expanded=1)

cols = ["id", "pipeline", "step", "status", "triggered_by", "actor", "started_at", "finished_at"]
if detail["parent"]:
    p = detail["parent"]
    st.markdown(f"Part of pipeline run **#{p['id']}** ({p['pipeline']}) {common.badge(p['status'])}")
st.markdown("**Children** (the steps of this pipeline run)")
if detail["children"]:
    st.dataframe(common.frame([{**r, "result": ops_runs.run_message(r)[:200]} for r in detail["children"]],
                              cols + ["result"]), hide_index=True, width="stretch")
else:
    st.caption("none")
st.markdown("**Upstream** (the runs it consumed, nearest first)")
if detail["upstream"]:
    st.dataframe(common.frame([{**r, "result": ops_runs.run_message(r)[:200]} for r in detail["upstream"]],
                              cols + ["result"]), hide_index=True, width="stretch")
else:
    st.caption("none")
