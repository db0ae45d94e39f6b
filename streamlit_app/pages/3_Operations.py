"""Manual controls: load the next batch, train now, evaluate, promote a chosen version; and, for
operators, who has access (API tokens, control room user changes, sign-ins).

Each action needs a sign-in and calls the same operations function (mlops_cli.ops) as the CLI with
Trigger(triggered_by="ui", actor=<the signed-in name>) (so it lands in pipeline_runs like any other
step), runs synchronously, then shows the pipeline_runs row it wrote. Each needs the operator role.
Nobody signed in (read-only pages, UI_PUBLIC_READ), or another role: the forms are replaced by a
notice. The Load form reads only files in the folder of MLOPS_X_PATH / MLOPS_Y_PATH (a path typed
here is read by the server).
"""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `common`, when run from elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import common  # noqa: E402
from mlops_cli import access  # noqa: E402
from mlops_cli.access import OPERATE  # noqa: E402
from mlops_cli.ops import models as ops_models, runs as ops_runs  # noqa: E402

common.page("Operations", ":material/play_circle:")
s = common.settings()
c = common.conn()
common.empty_state(c)  # the controls stay: loading a first batch is how an empty database starts

st.caption("Every action is recorded in pipeline_runs with triggered_by=ui and your signed-in name, exactly as the "
           "same command run from the CLI (`mlops load`, `mlops train --force`, `mlops evaluate`, "
           "`mlops approve`).")

versions = common.call(ops_models.list_models, c, s, what="the model registry")
left, right = st.columns(2)

# --- load -------------------------------------------------------------------------------------------
with left:
    st.subheader("Load the next batch")
    if who := common.acting_as(OPERATE, "loading a batch"):
        with st.form("ops_load"):
            x_path = st.text_input("X file (products)", value=s.x_path, key="ops_load_x",
                                   help="Default: MLOPS_X_PATH. Only files in its folder or MLOPS_Y_PATH's")
            y_path = st.text_input("Y file (labels)", value=s.y_path, key="ops_load_y",
                                   help="Default: MLOPS_Y_PATH. Only files in its folder or MLOPS_X_PATH's")
            force = st.checkbox("Force (load another batch even if this week already has one)", key="ops_load_force")
            go = st.form_submit_button("Load the next batch", key="ops_load_submit", type="primary")
        if go:
            common.run_action("ops_result_load", lambda: ops_runs.load(s, common.ui_trigger(who), x_path=x_path,
                                                                       y_path=y_path, force=force,
                                                                       within_data_dir=True),
                              spinner="Loading the next batch…", what="loading a batch")
    common.show_result(st.session_state.get("ops_result_load"))

# --- train --------------------------------------------------------------------------------------------
with right:
    st.subheader("Train now")
    if who := common.acting_as(OPERATE, "training"):
        with st.form("ops_train"):
            params = st.text_area("Hyperparameter overrides (optional, KEY=VALUE per line, as `--param`)",
                                  key="ops_train_params", placeholder="word_max_features=100000\nalpha=2e-5")
            go = st.form_submit_button("Train now", key="ops_train_submit", type="primary")
        if go:
            # force: a person asked for it, new data or not
            common.run_action("ops_result_train", lambda: ops_models.train(s, common.ui_trigger(who), force=True,
                                                                           params=ops_models.parse_params(params)),
                              spinner="Training on the whole catalogue (this takes a while)…", what="training")
    common.show_result(st.session_state.get("ops_result_train"))

left, right = st.columns(2)

# --- evaluate ---------------------------------------------------------------------------------------
NEWEST = "newest challenger not yet evaluated"
with left:
    st.subheader("Evaluate")
    if who := common.acting_as(OPERATE, "evaluating"):
        with st.form("ops_evaluate"):
            choice = st.selectbox("Version", [NEWEST] + [v["version"] for v in versions], key="ops_evaluate_version",
                                  format_func=lambda v: v if v == NEWEST else f"v{v}")
            go = st.form_submit_button("Evaluate", key="ops_evaluate_submit", type="primary")
        if go:
            common.run_action("ops_result_evaluate", lambda: ops_models.evaluate(
                s, common.ui_trigger(who), version=None if choice == NEWEST else choice),
                spinner="Scoring on the current holdout…", what="evaluating")
    common.show_result(st.session_state.get("ops_result_evaluate"))

# --- promote (approve) ------------------------------------------------------------------------------------
with right:
    st.subheader("Promote a chosen version")
    candidates = ops_models.approvable_versions(versions)
    if not candidates:
        st.caption("No version to promote: every registered version is the champion, or none is registered yet.")
    else:
        by_version = {v["version"]: v for v in versions}
        if who := common.acting_as(OPERATE, "promoting a version"):
            with st.form("ops_approve"):
                # the version chosen stays chosen if it stopped being a candidate (promoted meanwhile):
                # approving it is then refused, never turned into approving another one
                version, _v, _left = common.choice(
                    "Version", {v: by_version[v] for v in candidates}, "ops_approve_version",
                    lambda v, row: f"v{v} · weighted F1 {common.fmt_score(row['weighted_f1'])} · "
                                   f"{row.get('decision') or 'pending'}")
                reason = st.text_area("Reason (required: recorded and sent with the notification)",
                                      key="ops_approve_reason")
                go = st.form_submit_button("Approve and promote", key="ops_approve_submit", type="primary")
            if go:
                common.run_action("ops_result_approve",
                                  lambda: ops_models.approve(s, common.ui_trigger(who), version, reason),
                                  spinner=f"Promoting v{version}…", what="promoting a version")
    common.show_result(st.session_state.get("ops_result_approve"))

# --- recent ---------------------------------------------------------------------------------------------
st.subheader("Recent runs")
recent = ops_runs.list_runs(c, limit=15)
if recent:
    st.dataframe(common.frame([{**r, "result": ops_runs.run_message(r)[:200]} for r in recent],
                              ["id", "pipeline", "step", "status", "triggered_by", "actor", "started_at", "result"]),
                 hide_index=True, width="stretch")
else:
    st.caption("no run yet")

# --- access ---------------------------------------------------------------------------------------------
st.subheader("Access")
if common.acting_as(OPERATE, "reading who has access"):
    seen = common.call(access.overview, c, what="the access records")
    st.caption("API tokens (`mlops api-token add/revoke`), control room users (`mlops ui add-user/remove-user`) "
               "and sign-ins, as recorded in api_tokens, ui_user_changes and ui_sign_ins.")
    tables = (("API tokens", "tokens", ["name", "role", "created_at", "created_by", "last_used_at", "note"],
               "no active API token"),
              ("User changes", "user_changes", ["at", "name", "change", "role_before", "role", "password_changed",
                                                "actor", "triggered_by"], "no change recorded"),
              ("Sign-ins", "sign_ins", ["at", "name", "method", "ok", "role", "reason", "client"], "no sign-in yet"))
    for tab, (_label, key, columns, none) in zip(st.tabs([t[0] for t in tables]), tables):
        with tab:
            if seen[key]:
                st.dataframe(common.frame(seen[key], columns), hide_index=True, width="stretch")
            else:
                st.caption(none)
