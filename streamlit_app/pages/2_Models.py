"""Registered model versions: metrics, aliases, decisions and their justifications, promotions, and
the shadow challenger's answers to live traffic against the champion's (docs/shadow.md)."""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `common`, when run from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from mlops_cli.ops import models as ops_models  # noqa: E402
from mlops_cli.ops import shadow as ops_shadow  # noqa: E402

common.page("Models", ":material/model_training:")
s = common.settings()
c = common.conn()

if common.empty_state(c):
    st.stop()

versions = common.call(ops_models.list_models, c, s, what="the model registry")
if not versions:
    st.info(f"No registered version of **{common.md(s.model_name)}** yet: train one (Operations page, or `mlops train`).",
            icon=":material/inbox:")
    st.stop()

champ = ops_models.champion(c, s, versions)
st.markdown(f"Model **{common.md(s.model_name)}** · {len(versions)} versions · champion "
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

# --- the shadow challenger: live traffic --------------------------------------------------------------
st.subheader("Shadow challenger on live traffic")
sh = common.call(ops_shadow.overview, c, s, what="the shadow comparison")
need = (f"Promotion waits for {sh['min_requests']} shadow requests, {sh['min_labelled']} of them labelled, "
        f"and refuses a live weighted F1 loss above {sh['max_f1_loss']:g} (SHADOW_MIN_REQUESTS, "
        "SHADOW_MIN_LABELLED, SHADOW_MAX_F1_LOSS)" if sh["min_requests"] else
        "Promotion needs no live evidence (SHADOW_MIN_REQUESTS=0): the live numbers are shown, not required")
if not sh["active"]:
    st.caption("The shadow is off (SHADOW_ENABLED=false and SHADOW_MIN_REQUESTS=0): the API scores requests "
               "with the champion only.")
elif sh["challenger"] is None or sh["challenger"] == sh["champion"]:
    st.caption(f"On, and idle: no challenger awaits a decision. {need}.")
else:
    st.caption(f"The API scores every request with challenger v{sh['challenger']} as well, off the request path; "
               f"the client's answer is champion v{sh['champion']}'s. {need}.")
for failure in sh["load_failures"]:  # no evidence can come: say so before the numbers that wait for it
    st.error(f"The API's shadow on {common.md(failure['host'])} cannot load challenger v{sh['challenger']} "
             f"(since {common.fmt_time(failure['first_at'])}, last seen {common.age(failure['last_at'])}): "
             f"{common.md(failure['error'][:500])}. Nothing is scored with it, and promotion's live evidence "
             "cannot come, until it loads: fix or replace the version.", icon=":material/error:")
ev = sh["evidence"]
if ev is not None:
    cols = st.columns(4)
    cols[0].metric("shadow requests", f"{ev['n']}" + (f" / {sh['min_requests']}" if sh["min_requests"] else ""))
    cols[1].metric("agreement", "—" if ev["agreement"] is None else f"{ev['agreement']:.1%}")
    cols[2].metric(f"live F1 challenger v{sh['challenger']}", common.fmt_score(ev["challenger_weighted_f1"]),
                   delta=None if ev["f1_difference"] is None else f"{ev['f1_difference']:+.4f}")
    cols[3].metric(f"live F1 champion v{sh['champion']}", common.fmt_score(ev["champion_weighted_f1"]))
    if sh["min_requests"]:
        st.progress(min(1.0, ev["n"] / sh["min_requests"]),
                    text=f"{ev['n']} of {sh['min_requests']} shadow requests (SHADOW_MIN_REQUESTS); "
                         f"{ev['n_labelled']} labelled, {sh['min_labelled']} needed (SHADOW_MIN_LABELLED)")
    if sh["missing"]:
        st.info(f"Promotion of v{sh['challenger']} awaits live evidence: {common.md(sh['missing'])}.",
                icon=":material/hourglass_top:")
    elif sh["min_requests"]:
        st.success(f"Enough live evidence for v{sh['challenger']}: the next `mlops promote` decides on it.",
                   icon=":material/task_alt:")
    st.caption(f"{ev['n_labelled']} of the shadow requests have a moderator's label: live F1 of both is "
               "computed on those same requests.")
    if ev["top_disagreements"]:
        st.markdown("**Classes they disagree on most** (items where one of them said the class and the other not)")
        st.dataframe(common.frame(ev["top_disagreements"], ["prdtypecode", "category", "disagreements", "rate",
                                                            "champion_n", "challenger_n"]),
                     hide_index=True, width="stretch",
                     column_config={"rate": st.column_config.NumberColumn(format="%.3f")})
        st.altair_chart(alt.Chart(pd.DataFrame(ev["top_disagreements"])).mark_bar().encode(
            x=alt.X("disagreements:Q", title="items they disagree on"),
            y=alt.Y("category:N", sort="-x", title=None),
            tooltip=["prdtypecode", "category", "disagreements", alt.Tooltip("rate:Q", format=".3f")]
        ).properties(height=40 + 28 * len(ev["top_disagreements"])), width="stretch")
        st.markdown("**Most frequent changes** (champion's class → challenger's)")
        st.dataframe(common.frame(ev["top_swaps"], ["champion_code", "champion_category", "challenger_code",
                                                    "challenger_category", "n"]),
                     hide_index=True, width="stretch")
    elif ev["n"]:
        st.caption("They agree on every shadow request so far.")
if sh["last_wait"]:
    w = sh["last_wait"]
    st.caption(f"Latest promote run #{w['pipeline_run_id']} ({common.fmt_time(w['at'])}): "
               f"{common.md(w['justification'])}")
if sh["reports"]:
    st.markdown("**Daily reports' shadow sections** (per drift window)")
    st.dataframe(common.frame(sh["reports"], ["report_id", "as_of", "window_days", "champion_version",
                                              "challenger_version", "n", "agreement", "n_labelled",
                                              "champion_weighted_f1", "challenger_weighted_f1"]),
                 hide_index=True, width="stretch",
                 column_config={"agreement": st.column_config.NumberColumn(format="%.3f"),
                                "champion_weighted_f1": st.column_config.NumberColumn("champion live F1", format="%.4f"),
                                "challenger_weighted_f1": st.column_config.NumberColumn("challenger live F1",
                                                                                        format="%.4f")})
