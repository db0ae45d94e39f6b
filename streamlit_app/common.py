"""Shared helpers of the control room pages: settings, the database connection, the sign-in (who
is acting), status badges, the empty state and the drift charts used on two pages.

Pages render and call the operations layer (mlops_cli.ops: reads, and the audited actions);
nothing here holds a business rule or a query. A domain error becomes a message in one place
(`show_error`, by the error's code).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import timezone
from pathlib import Path
from typing import Any

import streamlit as st

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from mlops_cli import access, uiauth  # noqa: E402
from mlops_cli.config import Settings, load_settings  # noqa: E402
from mlops_cli.errors import (Conflict, Forbidden, Invalid, MlopsError, NotFound, TimedOut,  # noqa: E402
                              Unauthenticated, Unavailable)
from mlops_cli.jsonvalues import jsonable  # noqa: E402
from mlops_cli.ops import common as ops_common, drift as ops_drift, runs as ops_runs  # noqa: E402
from mlops_cli.vocab import Cause, values  # noqa: E402

EMPTY_MESSAGE = (
    "The database is empty: no catalogue batch is loaded and no pipeline has run yet. "
    "Load a first batch on the **Operations** page (or run `mlops pipeline weekly`), then come back here."
)
STATUS_COLORS = {"succeeded": "green", "running": "blue", "failed": "red", "skipped": "gray",
                 "open": "red", "acknowledged": "orange", "resolved": "green", "recorded": "green",
                 "started": "blue", "already_running": "orange"}
LEVEL_COLORS = {"CRITICAL": "red", "ALERT": "orange", "WARNING": "yellow", "NONE": "green"}
THRESHOLD_COLORS = {"warning": "#e6b800", "alert": "#ff8c00", "critical": "#d62728"}
CAUSE_COLORS = {"data": "#1f77b4", "prediction": "#9467bd", "performance": "#2ca02c",
                "estimated_performance": "#ff7f0e"}
IDENTITY_KEY = "signed_in"  # session_state: uiauth.Identity.as_dict() once signed in, checked at every run
ENDED_KEY = "signin_ended"  # session_state: why the last sign-in ended (shown once, above the sign-in)
# How each kind of domain error is shown (errors.MlopsError.code): the message is the error's own.
ERROR_ICONS = {NotFound.code: ":material/search_off:", Conflict.code: ":material/block:",
               Invalid.code: ":material/edit_off:", Unavailable.code: ":material/cloud_off:",
               TimedOut.code: ":material/timer_off:", Forbidden.code: ":material/lock:",
               Unauthenticated.code: ":material/lock:", MlopsError.code: ":material/error:"}
RETRY_HINT = " (a service is unreachable: try again in a moment)"


# Markdown, GFM and Streamlit markup in text the page did not write (names, notes, reasons,
# messages, catalogue text) is escaped, so that it shows as typed: no link, image, heading, badge.
# Backslash escapes stop Markdown; but the renderer finds bare URLs ("https://", "www.", e-mail
# addresses), icons (":material/x:") and emoji shortcodes in the text *after* parsing, so an
# invisible WORD JOINER is put after a ':' or '@' followed by a name or '//', and after "www"
# (checked in Chromium; "status: text" is left alone).
_MARKUP = re.compile(r"([\\`*_\[\]<>#!|~$:{}])")
_LINE_START = re.compile(r"^(\s*)([-+=]|\d+[.)])", re.MULTILINE)  # lists, setext headings
_AUTOLINKED = re.compile(r"(?<=:)(?=[\w/+-])|(?<=@)(?=[\w-])|(?<=[Ww]{3})(?=\.)")
JOINER = "\u2060"


def md(value: Any) -> str:
    """`value` as Markdown that renders exactly as its text (stored free text in st.markdown,
    st.caption, st.error...)."""
    if value is None:
        return ""
    text = _MARKUP.sub(r"\\\1", str(value))
    text = _LINE_START.sub(lambda m: m.group(1) + "".join(c if c.isdigit() else "\\" + c for c in m.group(2)), text)
    return _AUTOLINKED.sub(JOINER, text)


def error_text(exc: MlopsError, prefix: str = "") -> str:
    """The message a person reads for a domain error: its own text, plus a hint to retry when a
    service could not be reached."""
    return prefix + str(exc) + (RETRY_HINT if exc.code == Unavailable.code else "")


def show_error(exc: MlopsError, prefix: str = "", icon: str | None = None) -> None:
    """The one place a domain error becomes something on the page."""
    st.error(md(error_text(exc, prefix)), icon=icon or ERROR_ICONS.get(exc.code, ERROR_ICONS[MlopsError.code]))


# --- page set-up --------------------------------------------------------------------------------------
def page(title: str, icon: str = ":material/monitoring:") -> None:
    """Page config, the sign-in gate, the title and the shared sidebar (who you are, what you are
    connected to). Nobody signed in: only the sign-in is shown, unless UI_PUBLIC_READ is on."""
    st.set_page_config(page_title=f"{title} · MLOps control room", page_icon=icon, layout="wide")
    s = settings()
    _sign_in_from_url(s)
    _check_session(s)
    ended = st.session_state.pop(ENDED_KEY, None)
    if identity() is None and not s.ui_public_read:
        st.title("Sign in to the MLOps control room")
        if ended:
            st.warning(md(ended), icon=":material/lock_clock:")
        sign_in_form(s)
        st.stop()
    st.title(title)
    if ended:
        st.warning(md(ended), icon=":material/lock_clock:")
    sidebar()


def settings() -> Settings:
    """Settings from the environment (read on every rerun: cheap, and always current)."""
    try:
        return load_settings()
    except MlopsError as exc:
        show_error(exc, "Configuration error: ")
        st.stop()


@st.cache_resource(show_spinner=False, validate=ops_common.ping, max_entries=16)
def _read_connection(key: str, _settings: Settings):
    """One read connection per database (autocommit: no transaction is left open between
    reruns). `validate` re-checks it on each use: a dropped connection is replaced."""
    from mlops_cli import db

    conn = db.open_db(_settings, application_name="mlops-ui")
    conn.autocommit = True
    return conn


def conn():
    """The cached read connection (reconnecting when it was lost). Actions use their own."""
    s = settings()
    key = s.database_url or str(s.home.resolve())
    try:
        return _read_connection(key, s)
    except Exception as exc:  # database unreachable, bad URL, migration error
        from mlops_cli.db import redact

        st.error(f"Cannot reach the database: {md(redact(str(exc).strip()))}")
        st.stop()


def call(fn, *args, what: str = "this", **kwargs) -> Any:
    """Call a read; on a library error show it and stop the page (no traceback for users)."""
    try:
        return fn(*args, **kwargs)
    except MlopsError as exc:
        show_error(exc)
        st.stop()
    except Exception as exc:
        if ops_common.is_connection_error(exc):
            _read_connection.clear()
            st.error(f"Lost the database connection while reading {what}: {md(str(exc).strip())}. "
                     "Reload the page to reconnect.")
            st.stop()
        raise


# --- who acts: the signed-in identity (rules in mlops_cli.uiauth) -------------------------------------
def identity() -> str | None:
    """The signed-in name, None when nobody is signed in in this browser session."""
    signed = st.session_state.get(IDENTITY_KEY)
    return signed["name"] if signed else None


def principal() -> access.Principal | None:
    """Who is signed in and with which role (access.Principal), None when nobody is."""
    signed = st.session_state.get(IDENTITY_KEY)
    return uiauth.Identity(**signed).principal() if signed else None  # checked by _check_session


def _check_session(s: Settings) -> bool:
    """The session's sign-in checked again (uiauth.check_session: age, users file, token); one that
    no longer holds is signed out, and why is kept for the page to show. True when it holds."""
    signed = st.session_state.get(IDENTITY_KEY)
    if not signed:
        return False
    try:
        uiauth.check_session(s, signed)
    except MlopsError as exc:  # SessionEnded; a bad UI_SESSION_HOURS or UI_AUTH ends it too
        _sign_out()
        st.session_state[ENDED_KEY] = str(exc) if isinstance(exc, uiauth.SessionEnded) else (
            f"Your sign-in ended: {exc}: sign in again.")
        return False
    return True


def _sign_in_connection(s: Settings):
    from mlops_cli.db import connection

    return connection(s, application_name="mlops-ui")


def _client(s: Settings) -> str | None:
    """The address of the browser signing in (None when it cannot tell): the connection's, or the
    one a trusted proxy forwarded (UI_TRUSTED_PROXIES)."""
    try:
        address = st.context.ip_address
        forwarded = list(st.context.headers.get_all("X-Forwarded-For")) if s.ui_trusted_proxies else []
    except Exception:  # an older Streamlit, or outside a browser session
        return None
    address = address if isinstance(address, str) and address else None  # AppTest has no real one
    return uiauth.client_address(address, [f for f in forwarded if isinstance(f, str)], s.ui_trusted_proxies)


def _sign_in_from_url(s: Settings) -> None:
    """The sign-in URL printed by `mlops ui` (?token=...): checked, then removed from the address bar."""
    token = st.query_params.get(uiauth.TOKEN_PARAM)
    if token is None:
        return
    del st.query_params[uiauth.TOKEN_PARAM]  # not left in the history or on a shared screen
    _sign_in(lambda: uiauth.sign_in_with_token(s, token, lambda: _sign_in_connection(s), client=_client(s)),
             rerun=False)


def _sign_in(check, rerun: bool = True, notice=None) -> None:
    """check(): the uiauth sign-in (throttled and recorded in ui_sign_ins). notice: where a refusal
    shows (the sidebar above the sign-in expander: the expander may be re-drawn closed by the rerun,
    and a message inside it would then be hidden)."""
    try:
        signed = check().as_dict()
        _sign_out()  # the outcomes shown were someone else's
        st.session_state[IDENTITY_KEY] = signed
    except MlopsError as exc:
        st.session_state.pop(IDENTITY_KEY, None)
        if notice is None:
            show_error(exc, icon=":material/lock:")
        else:
            with notice:
                show_error(exc, icon=":material/lock:")
        return
    if rerun:
        st.rerun()


def _sign_out() -> None:
    st.session_state.pop(IDENTITY_KEY, None)
    for key in [k for k in st.session_state if "_result_" in str(k)]:  # the last actions' outcomes
        del st.session_state[key]


def sign_in_form(s: Settings, notice=None) -> None:
    """The sign-in of the configured mode: name and password (users), or the token (token)."""
    try:
        how = uiauth.mode(s)
    except MlopsError as exc:
        show_error(exc, "Configuration error: ")
        st.stop()
    with st.form("signin", clear_on_submit=True):
        if how == "users":
            name = st.text_input("Name", key="signin_name", autocomplete="username")
            password = st.text_input("Password", type="password", key="signin_password",
                                     autocomplete="current-password")
        else:
            st.caption("Open the sign-in URL that `mlops ui` printed when it started (…/?token=…), or paste "
                       "its token here.")
            token = st.text_input("Token", type="password", key="signin_token")
        go = st.form_submit_button("Sign in", key="signin_submit", type="primary")
    if go:
        if how == "users":
            _sign_in(lambda: uiauth.sign_in_with_password(s, name, password, lambda: _sign_in_connection(s),
                                                          client=_client(s)), notice=notice)
        else:
            _sign_in(lambda: uiauth.sign_in_with_token(s, token, lambda: _sign_in_connection(s), client=_client(s)),
                     notice=notice)


def sidebar() -> None:
    s = settings()
    with st.sidebar:
        who = principal()
        if who:
            st.markdown(f"Signed in as **{md(who.name)}** ({who.role})")
            st.caption(f"Recorded as the actor of every action you take (audit trail). Role {who.role}: "
                       + {"viewer": "read only", "labeller": "read and label",
                          "operator": "every action"}.get(who.role, "none"))
            st.button("Sign out", key="signout", on_click=_sign_out, icon=":material/logout:")
        else:
            st.markdown("Not signed in: read only")
            notice = st.container()
            with st.expander("Sign in to act", expanded=False, icon=":material/login:"):
                sign_in_form(s, notice)
        st.caption(f"Model **{md(s.model_name)}**")
        from mlops_cli.db import redact

        st.caption("Database: " + md(redact(s.database_url) if s.database_url else f"embedded ({s.home}/pg)"))


def ui_trigger(who: str | None):
    """Trigger(triggered_by="ui", actor=<the signed-in name>): what every action records; refused
    ("A signed-in identity is required") without a name."""
    return ops_common.trigger("ui", who)


def refusal(action: str, what: str) -> str | None:
    """Why the session may not do `action` (access.require's message), None when it may."""
    who = principal()
    if who is None:
        return "Sign in to act (sidebar): every action is recorded with the signed-in name."
    try:
        access.require(who, action, what)
    except Forbidden as exc:
        return str(exc)
    return None


def acting_as(action: str = access.OPERATE, what: str = "this action") -> str | None:
    """The signed-in name an action form acts with, when its role allows `action` (access.OPERATE
    for anything that changes state, access.LABEL for a label). Otherwise None, and a notice is shown
    where the form would be: sign in (read-only pages, UI_PUBLIC_READ), or the role needed."""
    why = refusal(action, what)
    if why is not None:
        st.info(md(why), icon=":material/lock:")
        return None
    return identity()


# --- rendering ---------------------------------------------------------------------------------------
def choice(label: str, options: dict, key: str, fmt, **kwargs) -> tuple[Any, Any, bool]:
    """A selectbox over `options` ({value: item}) that keeps the person's choice when the list, read
    again at the rerun their click starts, no longer holds it (labelled by someone else, resolved,
    promoted meanwhile): Streamlit would select the first option in its place, silently, and the
    form beside it would act on something nobody chose. Returns (value, item, left): `left` when
    the item is no longer in `options` (the page says so; the action then decides on the item
    itself, and refuses what no longer applies). fmt(value, item): the option's text."""
    held_key = f"_held_{key}"
    chosen, held = st.session_state.get(key), st.session_state.get(held_key)
    left = chosen is not None and chosen not in options and held is not None and held[0] == chosen
    if left:
        options = {**options, chosen: held[1]}
    if not options:
        st.session_state.pop(held_key, None)
        return None, None, False
    value = st.selectbox(label, list(options), key=key, format_func=lambda v: fmt(v, options[v]), **kwargs)
    st.session_state[held_key] = (value, options[value])
    return value, options[value], left and value == chosen


def badge(status: str | None) -> str:
    """Markdown of a colored status badge (pipeline run status, alert status, level)."""
    if not status:
        return ":gray-badge[none]"
    color = LEVEL_COLORS.get(status) or STATUS_COLORS.get(status, "gray")
    return f":{color}-badge[{status}]"


def empty_state(c) -> bool:
    """Show the empty-state message when the database is empty; True when it is."""
    if ops_runs.is_empty(c):
        st.info(EMPTY_MESSAGE, icon=":material/inbox:")
        return True
    return False


def fmt_time(ts, tz: bool = True) -> str:
    if ts is None:
        return "—"
    try:
        if ts.tzinfo is not None:  # the database session's time zone may not be UTC
            ts = ts.astimezone(timezone.utc)
        return ts.strftime("%Y-%m-%d %H:%M UTC" if tz and ts.tzinfo else "%Y-%m-%d %H:%M")
    except AttributeError:
        return str(ts)


def age(ts, now=None) -> str:
    """'3 d ago', '5 h ago', '12 min ago' (for cards)."""
    if ts is None:
        return ""
    from datetime import datetime

    now = now or datetime.now(timezone.utc)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    s = max(0.0, (now - ts).total_seconds())
    if s < 90:
        return f"{int(s)} s ago"
    if s < 5400:
        return f"{int(s // 60)} min ago"
    if s < 172800:
        return f"{int(s // 3600)} h ago"
    return f"{int(s // 86400)} d ago"


def fmt_score(x, digits: int = 4) -> str:
    return "—" if x is None else f"{float(x):.{digits}f}"


def frame(rows: list[dict], columns: list[str] | None = None):
    import pandas as pd

    df = pd.DataFrame(rows)
    if columns is not None and not df.empty:
        df = df[[c for c in columns if c in df.columns]]
    for col in df.columns:  # JSON columns as text: arrow cannot mix dict shapes
        if df[col].map(lambda v: isinstance(v, (dict, list))).any():
            df[col] = df[col].map(lambda v: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v)
    return df


def show_result(result: dict | None) -> None:
    """The outcome of an action: status badge, message, and the pipeline_runs row it wrote."""
    if not result:
        return
    status = md(result.get("status"))
    text = md(result.get("message") or "")
    if result.get("ok"):
        st.success(f"{status}: {text}" if text else status, icon=":material/check_circle:")
    else:
        st.error(f"{status}: {md(result.get('error')) or text}", icon=":material/error:")
    run = result.get("run")
    if run:
        st.markdown(f"pipeline run **#{run['id']}** {badge(run['status'])} · step `{run['step']}` · "
                    f"triggered by `{run['triggered_by']}` · actor **{md(run['actor']) or '—'}**")
        st.dataframe(frame([run], ["id", "pipeline", "step", "status", "triggered_by", "actor", "started_at",
                                   "finished_at", "upstream_run_id", "error"]), hide_index=True)
        with st.expander("outputs"):
            st.json(jsonable(run.get("outputs") or {}))
    if result.get("action_id"):
        st.caption(f"audited in alert_actions #{result['action_id']}")


def _shown(result: Any) -> dict:
    """An action's outcome as show_result reads it: {ok, status, message, error, run (the
    pipeline_runs row it wrote, re-read), action_id, ...}."""
    from mlops_cli.runs import StepResult

    if isinstance(result, StepResult):
        out = {"ok": result.status != "failed", **result.as_dict(), "error": None}
    elif hasattr(result, "as_dict"):
        out = result.as_dict()
    else:
        out = dict(result)
    run_id = out.get("pipeline_run_id")  # StepResult and Launched alike
    out["run"] = ops_runs.get_run(conn(), run_id) if run_id else None
    return out


def run_action(key: str, fn, *args, spinner: str = "Working…", connect: bool = False,
               action: str = access.OPERATE, what: str = "this action", **kwargs) -> None:
    """Run an action under a spinner, keep its outcome in session_state[key] and rerun the page (so
    that every table shows what the action changed); the outcome is shown from session_state.

    connect: the action gets its own connection as first argument (committed when it returns),
    never the page's read connection. A step that fails is an outcome (its failed run is shown);
    refused actions (a domain error: missing note, nothing to do...) show an error, no outcome; so
    does an action submitted without a sign-in, or by a role that does not allow `action` (the
    forms are only shown to those who may: this is the second check). The sign-in is checked again
    first (uiauth.check_session), as at the start of the page.
    """
    from mlops_cli.runs import StepFailed

    s = settings()
    if identity() is None or not _check_session(s):
        st.error(md(st.session_state.pop(ENDED_KEY, None) or "Sign in to act."), icon=":material/lock:")
        return
    try:
        access.require(principal(), action, what)
    except Forbidden as exc:
        show_error(exc)
        st.session_state.pop(key, None)
        return
    try:
        with st.spinner(spinner):
            if connect:
                from mlops_cli.db import connection

                with connection(s, application_name="mlops-ui") as action_conn:
                    result = fn(action_conn, *args, **kwargs)
            else:
                result = fn(*args, **kwargs)
        shown = _shown(result)
    except StepFailed as exc:  # recorded by the step: show its failed run
        shown = {**_shown(exc.result), "ok": False, "error": exc.result.message}
    except MlopsError as exc:
        show_error(exc)
        st.session_state.pop(key, None)
        return
    st.session_state[key] = shown
    for held in [k for k in st.session_state if str(k).startswith("_held_")]:  # acted on: choose afresh
        del st.session_state[held]
    st.rerun()  # re-read everything the action changed; the outcome is shown from session_state


# --- drift charts (Drift and Alerts pages) -----------------------------------------------------------
def threshold_rules(th: dict):
    import altair as alt
    import pandas as pd

    df = pd.DataFrame([{"threshold": k, "value": float(th[k])} for k in ("warning", "alert", "critical")])
    scale = alt.Scale(domain=list(THRESHOLD_COLORS), range=list(THRESHOLD_COLORS.values()))
    return alt.Chart(df).mark_rule(strokeDash=[6, 4], size=1.5).encode(
        y="value:Q", color=alt.Color("threshold:N", scale=scale, title="threshold"),
        tooltip=["threshold", "value"])


def drift_score_chart(rows: list[dict], th: dict, height: int = 320):
    """Scores over time (one line per cause, dashed per window) with the threshold lines."""
    import altair as alt
    import pandas as pd

    df = pd.DataFrame(rows)
    df["window"] = df["window_days"].map(lambda d: f"{d} d")
    lines = alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("as_of:T", title="as of"),
        y=alt.Y("score:Q", title="drift score (PSI scale)"),
        color=alt.Color("cause:N", title="score", scale=alt.Scale(domain=list(CAUSE_COLORS),
                                                                   range=list(CAUSE_COLORS.values()))),
        strokeDash=alt.StrokeDash("window:N", title="window"),
        tooltip=["report_id", "as_of:T", "window", "cause", alt.Tooltip("score:Q", format=".4f"), "level",
                 "n_inferences"],
    )
    return alt.layer(lines, threshold_rules(th)).resolve_scale(color="independent").properties(height=height)


def distribution_chart(rows: list[dict], height: int = 220):
    """Reference vs current shares of one feature, side by side per bin / category."""
    import altair as alt
    import pandas as pd

    df = pd.DataFrame(rows)
    order = list(dict.fromkeys(df.sort_values("order")["label"]))
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("label:N", sort=order, title=None, axis=alt.Axis(labelAngle=-45, labelLimit=120)),
        xOffset=alt.XOffset("which:N", sort=["reference", "current"]),
        y=alt.Y("share:Q", title="share", axis=alt.Axis(format="%")),
        color=alt.Color("which:N", sort=["reference", "current"], title=None,
                        scale=alt.Scale(range=["#9aa5b1", "#1f77b4"])),
        tooltip=["label", "which", alt.Tooltip("share:Q", format=".2%")],
    ).properties(height=height)


def contribution_chart(rows: list[dict], label: str, height: int | None = None):
    import altair as alt
    import pandas as pd

    df = pd.DataFrame(rows)
    return alt.Chart(df).mark_bar(color="#d62728").encode(
        y=alt.Y(f"{label}:N", sort="-x", title=None),
        x=alt.X("contribution:Q", title="PSI contribution"),
        tooltip=list(df.columns),
    ).properties(height=height or 40 + 26 * len(df))


def show_distributions(report: dict, *, groups: tuple[str, ...] = ("data", "prediction"), columns: int = 2) -> None:
    """Every feature of a report: bars for binned / categorical ones, metrics for rates."""
    feats = [f for f in ops_drift.feature_distributions(report) if f["group"] in groups]
    if not feats:
        st.info("This report has no per-feature detail (insufficient data in the window).")
        return
    cols = st.columns(columns)
    for i, f in enumerate(feats):
        with cols[i % columns]:
            st.markdown(f"**{md(f['feature'])}** ({f['group']}) · score {fmt_score(f['score'])}")
            if f["rows"]:
                st.altair_chart(distribution_chart(f["rows"]), width="stretch")
            elif f.get("reference_rate") is not None:
                a, b = st.columns(2)
                a.metric("reference rate", f"{f['reference_rate']:.1%}")
                b.metric("current rate", f"{f['current_rate']:.1%}",
                         delta=f"{(f['current_rate'] - f['reference_rate']) * 100:+.1f} pts", delta_color="inverse")


def show_top_movers(report: dict) -> None:
    tokens, classes = ops_drift.top_tokens(report), ops_drift.top_classes(report)
    a, b = st.columns(2)
    with a:
        st.markdown("**Top drifting title tokens**")
        if tokens:
            st.altair_chart(contribution_chart(tokens, "token"), width="stretch")
        else:
            st.caption("none")
    with b:
        st.markdown("**Top drifting predicted classes**")
        if classes:
            rows = [{**c, "class": f"{c['class']} {c['name']}".strip()} for c in classes]
            st.altair_chart(contribution_chart(rows, "class"), width="stretch")
        else:
            st.caption("none")


def cause_title(cause: str) -> str:
    return "estimated performance" if cause == Cause.ESTIMATED_PERFORMANCE else f"{cause} drift"


def show_report_scores(report: dict, th: dict | None = None) -> None:
    """The four scores of a report as metrics, with their level."""
    details = report.get("details") or {}
    levels = details.get("levels") or {}
    th = th or details.get("thresholds") or {}
    cols = st.columns(len(values(Cause)) + 1)
    for col, cause in zip(cols, values(Cause)):
        score = report.get(f"{cause}_drift_score")
        col.metric(cause_title(cause), fmt_score(score), help=(details.get("scales") or {}).get(cause))
        col.markdown(badge(levels.get(cause, "NONE")))
    cols[-1].metric("predictions in window", f"{report.get('n_inferences', 0):,}")
    cols[-1].caption(f"{report['window_days']}-day window to {fmt_time(report['as_of'])} · model v"
                    f"{report.get('model_version') or '—'} · status {report['status']}")
    if th:
        st.caption("thresholds at the time: " + " / ".join(f"{k} {th[k]:g}" for k in ("warning", "alert", "critical")
                                                            if k in th))
    perf = details.get("performance") or {}
    if perf.get("score") is not None:
        st.caption(f"performance: window weighted F1 {fmt_score(perf.get('window_weighted_f1'))} vs baseline "
                   f"{fmt_score(perf.get('baseline_weighted_f1'))} on {perf.get('n_labels')} labels "
                   f"({perf.get('source')})")
    if report.get("estimated_weighted_f1") is not None:
        from mlops_cli.performance_estimate import describe

        st.caption("estimated performance: " + describe(report))


def estimate_chart(rows: list[dict], height: int = 280):
    """The label-free estimate over time: its 95% band (area), the estimate, the reference's
    estimate (dashed) and, where labels exist, the realized weighted F1 (points)."""
    import altair as alt
    import pandas as pd

    df = pd.DataFrame(rows)
    df["window"] = df["window_days"].map(lambda d: f"{d} d")
    base = alt.Chart(df).encode(x=alt.X("as_of:T", title="as of"))
    band = base.mark_area(opacity=0.25, color=CAUSE_COLORS["estimated_performance"]).encode(
        y=alt.Y("low:Q", title="weighted F1", scale=alt.Scale(zero=False)), y2="high:Q",
        detail="window:N")
    line = base.mark_line(point=True, color=CAUSE_COLORS["estimated_performance"]).encode(
        y="estimated:Q", strokeDash=alt.StrokeDash("window:N", title="window"),
        tooltip=["report_id", "as_of:T", "window", alt.Tooltip("estimated:Q", format=".4f"),
                 alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f"),
                 alt.Tooltip("reference:Q", format=".4f"), alt.Tooltip("realized:Q", format=".4f"), "realized_n"])
    ref = base.mark_line(strokeDash=[6, 4], color="gray").encode(y="reference:Q", detail="window:N")
    layers = [band, line, ref]
    labelled = df[df["realized"].notna()]
    if len(labelled):
        layers.append(alt.Chart(labelled).mark_point(shape="diamond", size=70, filled=True, color="#2ca02c").encode(
            x="as_of:T", y="realized:Q",
            tooltip=["report_id", "as_of:T", "window", alt.Tooltip("realized:Q", format=".4f"), "realized_n",
                     alt.Tooltip("realized_estimated:Q", format=".4f", title="estimated on those rows")]))
    return alt.layer(*layers).properties(height=height)
