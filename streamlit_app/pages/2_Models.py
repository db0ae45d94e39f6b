"""Registered model versions: metrics, aliases, decisions and their justifications, promotions."""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `common`, when run from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from mlops_cli.ops import models as ops_models  # noqa: E402

common.page("Models", ":material/model_training:")
s = common.settings()
c = common.conn()

if common.empty_state(c):
    st.stop()

versions = common.call(ops_models.list_models, c, s, what="the model registry")
if not versions:
    st.info(f"No registered version of **{s.model_name}** yet: train one (Operations page, or `mlops train`).",
            icon=":material/inbox:")
    st.stop()

champ = ops_models.champion(c, s, versions)
st.markdown(f"Model **{s.model_name}** · {len(versions)} versions · champion "
            + (f"**v{champ['version']}** (weighted F1 {common.fmt_score(champ['weighted_f1'])})" if champ else "none")
            + f" · promotion rule: {s.promotion_metric} > {s.min_f1_threshold:g}"
            + (f" and > champion + {s.min_improvement:g}" if s.min_improvement else " and > champion")
            + ("" if s.auto_promotion_enabled else " (auto-promotion disabled: every decision needs approval)"))

# --- versions ---------------------------------------------------------------------------------------
st.subheader("Versions")
table = []
for v in versions:
    table.append({"version": int(v["version"]), "champion": "★" if v["is_champion"] else "",
                  "aliases": ", ".join(v["aliases"]), "stage": v["stage"], "weighted_f1": v["weighted_f1"],
                  "scored on": v.get("weighted_f1_source"), "baseline F1": v.get("baseline_weighted_f1"),
                  "decision": v.get("decision"),
                  "decided_by": v.get("decided_by"), "decided_at": v.get("decided_at"),
                  "justification": v.get("reason"), "rolled_back": v.get("rolled_back"),
                  "created_at": v.get("created_at"), "mlflow_run_id": v.get("mlflow_run_id")})
st.dataframe(common.frame(table), hide_index=True, width="stretch",
             column_config={"weighted_f1": st.column_config.NumberColumn("weighted F1", format="%.4f"),
                            "justification": st.column_config.TextColumn(width="large")})

# --- F1 over versions ---------------------------------------------------------------------------------
st.subheader("Weighted F1 over versions")
import altair as alt  # noqa: E402
import pandas as pd  # noqa: E402

df = pd.DataFrame([{"version": int(v["version"]), "weighted_f1": v["weighted_f1"],
                    "decision": v.get("decision") or "pending", "champion": v["is_champion"],
                    "aliases": ", ".join(v["aliases"])} for v in versions if v["weighted_f1"] is not None])
if df.empty:
    st.caption("no scores yet")
else:
    values = list(df["weighted_f1"]) + [s.min_f1_threshold]
    domain = [max(0.0, min(values) - 0.02), min(1.0, max(values) + 0.02)]
    base = alt.Chart(df).encode(x=alt.X("version:O", title="version", axis=alt.Axis(labelAngle=0)),
                                y=alt.Y("weighted_f1:Q", title="weighted F1", scale=alt.Scale(domain=domain)))
    line = base.mark_line(color="#9aa5b1")
    points = base.mark_point(filled=True).encode(
        color=alt.Color("decision:N", title="decision"),
        size=alt.condition("datum.champion", alt.value(260), alt.value(90)),
        shape=alt.condition("datum.champion", alt.value("diamond"), alt.value("circle")),
        tooltip=["version", alt.Tooltip("weighted_f1:Q", format=".4f"), "decision", "aliases"])
    rule = alt.Chart(pd.DataFrame([{"threshold": s.min_f1_threshold}])).mark_rule(
        strokeDash=[6, 4], color="#d62728").encode(y="threshold:Q", tooltip=["threshold"])
    st.altair_chart(alt.layer(line, points, rule).properties(height=300), width="stretch")
    st.caption(f"◆ champion · dashed line: MIN_F1_THRESHOLD {s.min_f1_threshold:g}")

# --- promotion history --------------------------------------------------------------------------------
st.subheader("Promotion history")
history = ops_models.promotion_history(c, s)
if history:
    st.dataframe(common.frame(list(reversed(history)), ["at", "decision", "champion", "replaced", "score", "by",
                                                         "justification"]),
                 hide_index=True, width="stretch",
                 column_config={"score": st.column_config.NumberColumn(format="%.4f"),
                                "justification": st.column_config.TextColumn(width="large")})
else:
    st.caption("no version has been promoted yet")

# --- all decisions ------------------------------------------------------------------------------------
st.subheader("Decisions and justifications")
rows = ops_models.decisions(c, s)
if rows:
    st.dataframe(common.frame(rows, ["id", "created_at", "model_version", "decision", "metric", "candidate_score",
                                     "champion_version", "champion_score", "threshold", "decided_by",
                                     "triggered_by", "justification", "rule", "pipeline_run_id"]),
                 hide_index=True, width="stretch",
                 column_config={"candidate_score": st.column_config.NumberColumn("score", format="%.4f"),
                                "champion_score": st.column_config.NumberColumn("champion score", format="%.4f"),
                                "justification": st.column_config.TextColumn(width="large")})
else:
    st.caption("no decision yet")
