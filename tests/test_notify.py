"""Notifications against real local servers (aiosmtpd, a local HTTP receiver): nothing leaves the machine."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from email import message_from_bytes
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import query
from mlops_cli import notify, store
from mlops_cli.notify import Message

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefWXYZ"
HOOK_SECRET = "T000/B000/s3cr3tHookPath"


# --- local servers ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1 (no TLS); yields (port, handler)."""
    from aiosmtpd.controller import Controller

    handler = _Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, handler
    finally:
        controller.stop()


@pytest.fixture
def smtp_auth_server():
    """An SMTP server that requires AUTH (allowed without TLS, local only)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    handler = _Handler()
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"bot" and auth_data.password == b"pw-123456"
        logins.append((mechanism, ok))
        # handled=False: let aiosmtpd answer 535 itself (with the default handled=True it says nothing)
        return AuthResult(success=ok, handled=False)

    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    try:
        yield controller.port, handler, logins
    finally:
        controller.stop()


class Receiver:
    """Records JSON posts; per path: answer 'ok' (202), an HTTP status code, or sleep N seconds."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.behaviour: dict[str, object] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                receiver.requests.append((self.path, body))
                how = receiver.behaviour.get(self.path, "ok")
                if isinstance(how, float):
                    time.sleep(how)
                    how = "ok"
                code = 202 if how == "ok" else int(how)
                out = b'{"status":"success"}' if code < 300 else b"internal error"
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self, path: str) -> list[dict]:
        return [b for p, b in self.requests if p == path]


@pytest.fixture
def receiver():
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


# --- messages ---------------------------------------------------------------------------------------
def promotion_message() -> Message:
    return Message(
        "promotion", "Model rakuten v7 promoted to production", "info",
        {"decision": "promoted", "model_name": "rakuten", "metric": "weighted_f1",
         "candidate_version": 7, "candidate_score": 0.8123, "champion_version": 6,
         "champion_score": 0.7901, "threshold": 0.75, "min_improvement": 0.0,
         "justification": "Candidate beats the champion by 0.0222 weighted F1 and clears the 0.75 floor.",
         "links": {"MLflow run": "http://mlflow.local/#/runs/abc"}},
    )


def drift_message(**extra) -> Message:
    ctx = {"level": "critical", "cause": "data", "dedup_key": "drift-data", "samples": 1200,
           "scores": {"data": 0.3412, "prediction": 0.1877, "performance": 0.0521},
           "top_features": [{"feature": "designation_length", "score": 0.41}, ("word_count", 0.33), "has_image"]}
    ctx.update(extra)
    return Message("drift_alert", "Drift CRITICAL on rakuten (data drift 0.3412)", "critical", ctx)


def rows(conn):
    return store.list_notifications(conn, limit=100)


# --- email ------------------------------------------------------------------------------------------
def test_email_arrives_with_subject_recipients_and_decision(settings, conn, smtp_server):
    port, handler = smtp_server
    s = settings.replace(smtp_host="127.0.0.1", smtp_port=port, smtp_security="plain",
                         notification_email="ops@example.org, ml@example.org", email_from="mlops@example.org")
    deliveries = notify.send(conn, s, promotion_message(), kinds=("log", "email"))
    conn.commit()

    assert [(d.channel, d.status, d.attempts) for d in deliveries] == [("log", "sent", 1), ("email", "sent", 1)]
    assert len(handler.envelopes) == 1
    env = handler.envelopes[0]
    assert env.mail_from == "mlops@example.org"
    assert sorted(env.rcpt_tos) == ["ml@example.org", "ops@example.org"]
    mail = message_from_bytes(env.original_content, policy=policy.default)
    assert mail["Subject"] == "Model rakuten v7 promoted to production"
    assert mail["To"] == "ops@example.org, ml@example.org"
    body = mail.get_content()
    for text in ("Decision:   promoted", "0.8123", "0.7901", "weighted_f1",
                 "clears the 0.75 floor", "http://mlflow.local/#/runs/abc", s.dashboard_url):
        assert text in body, text

    row = next(r for r in rows(conn) if r["channel"] == "email")
    assert row["status"] == "sent" and row["attempts"] == 1 and row["error"] is None
    assert row["target"] == "ops@example.org, ml@example.org"
    assert row["event"] == "promotion" and row["subject"] == "Model rakuten v7 promoted to production"
    assert "0.8123" in row["payload"]["body"] and row["payload"]["to"] == ["ops@example.org", "ml@example.org"]


def test_email_logs_in_when_user_set_and_password_is_never_stored(settings, conn, smtp_auth_server):
    port, handler, logins = smtp_auth_server
    s = settings.replace(smtp_host="127.0.0.1", smtp_port=port, smtp_security="plain",
                         smtp_user="bot", smtp_password="pw-123456", notification_email="ops@example.org",
                         smtp_timeout=3.0)
    msg = promotion_message()
    msg.context["justification"] = "password pw-123456 must not leak"
    [d] = notify.send(conn, s, msg, kinds=("email",))
    assert d.status == "sent", d.error
    assert logins and all(ok for _, ok in logins)
    assert len(handler.envelopes) == 1
    [row] = rows(conn)
    assert "pw-123456" not in json.dumps(row, default=str)

    bad = s.replace(smtp_password="wrong-password", notify_retries=3)
    [d] = notify.send(conn, bad, promotion_message(), kinds=("email",))
    assert d.status == "failed" and d.attempts == 1  # a refused login is not retried
    assert "login refused" in d.error


def test_starttls_against_a_server_without_tls_fails_cleanly(settings, conn, smtp_server):
    port, handler = smtp_server
    s = settings.replace(smtp_host="127.0.0.1", smtp_port=port, smtp_security="starttls",
                         notification_email="ops@example.org")
    [d] = notify.send(conn, s, promotion_message(), kinds=("email",))
    assert d.status == "failed" and "STARTTLS" in d.error
    assert handler.envelopes == []


def test_alert_recipients_and_webhooks_fall_back_to_notification_ones(settings):
    base = settings.replace(smtp_host="127.0.0.1", notification_email="team@x.org",
                            slack_webhook="https://hooks.slack.com/services/T/B/team")
    by_kind = lambda chans: {c.name: c for c in chans}  # noqa: E731

    chans = by_kind(notify.channels_for(base, notify.KINDS, alert=True))
    assert chans["email"].recipients == ["team@x.org"]
    assert chans["slack"].webhook.endswith("/team")

    alerting = base.replace(alert_email_to="oncall@x.org;sre@x.org",
                            alert_slack_webhook="https://hooks.slack.com/services/T/B/alerts")
    chans = by_kind(notify.channels_for(alerting, notify.KINDS, alert=True))
    assert chans["email"].recipients == ["oncall@x.org", "sre@x.org"]
    assert chans["slack"].webhook.endswith("/alerts")
    assert chans["slack"].target == "https://hooks.slack.com/***"
    # promotions and rollbacks (alert=False) ignore the alert destinations
    chans = by_kind(notify.channels_for(alerting, notify.KINDS))
    assert chans["email"].recipients == ["team@x.org"]
    assert chans["slack"].webhook.endswith("/team")
    assert "pagerduty" not in chans  # no routing key -> off
    with pytest.raises(ValueError):
        notify.channels_for(base, ["sms"])


# --- Slack and PagerDuty ------------------------------------------------------------------------------
def test_slack_payload_has_subject_scores_and_links(settings, conn, receiver):
    hook = receiver.url(f"/services/{HOOK_SECRET}")
    s = settings.replace(slack_webhook=hook, dashboard_url="http://dash.local:8501")
    [d] = notify.send(conn, s, drift_message(), kinds=("slack",), alert=True)
    assert d.status == "sent" and d.attempts == 1 and d.target.endswith("/***")

    [body] = receiver.bodies(f"/services/{HOOK_SECRET}")
    assert body["text"] == "[CRITICAL] Drift CRITICAL on rakuten (data drift 0.3412)"
    assert body["blocks"][0]["type"] == "header"
    shown = "\n".join(b["text"]["text"] for b in body["blocks"] if b["type"] == "section")
    for text in ("0.3412", "0.1877", "0.0521", "designation_length", "word_count", "has_image"):
        assert text in shown, text
    links = " ".join(e["text"] for b in body["blocks"] if b["type"] == "context" for e in b["elements"])
    assert "<http://dash.local:8501|Dashboard>" in links and "ALERTING_GUIDE.md" in links

    [row] = rows(conn)
    assert row["channel"] == "slack" and row["status"] == "sent"
    assert HOOK_SECRET not in json.dumps(row, default=str)
    assert row["payload"]["text"] == body["text"]


def test_pagerduty_trigger_and_resolve(settings, conn, receiver):
    s = settings.replace(pagerduty_routing_key=ROUTING_KEY, pagerduty_url=receiver.url("/v2/enqueue"))
    [d] = notify.send(conn, s, drift_message(), kinds=("pagerduty",), alert=True)
    assert d.status == "sent", d.error
    assert d.target == "***WXYZ"

    [trigger] = receiver.bodies("/v2/enqueue")
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "drift-data"
    p = trigger["payload"]
    assert p["severity"] == "critical"
    assert p["summary"] == "Drift CRITICAL on rakuten (data drift 0.3412)"
    assert p["source"] and p["component"] == s.model_name and p["class"] == "drift_alert"
    assert p["custom_details"]["scores"]["data"] == 0.3412
    assert "dedup_key" not in p["custom_details"]

    resolved = Message("drift_resolved", "Drift resolved on rakuten", "info",
                       {"dedup_key": "drift-data", "scores": {"data": 0.04}})
    [d] = notify.send(conn, s, resolved, kinds=("pagerduty",))
    assert d.status == "sent"
    resolve = receiver.bodies("/v2/enqueue")[1]
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "drift-data"}

    # a resolve without its dedup_key cannot work: failed at once, nothing posted
    [d] = notify.send(conn, s.replace(notify_retries=2), Message("drift_resolved", "x", "info"),
                      kinds=("pagerduty",))
    assert d.status == "failed" and d.attempts == 1 and "dedup_key" in d.error
    assert len(receiver.requests) == 2

    stored = json.dumps(rows(conn), default=str)
    assert ROUTING_KEY not in stored
    assert [r["payload"]["routing_key"] for r in rows(conn)[1:]] == ["***WXYZ", "***WXYZ"]


# --- failures ---------------------------------------------------------------------------------------
def test_broken_channels_never_raise_and_are_recorded_failed(settings, conn, receiver, caplog):
    receiver.behaviour["/slack"] = 500
    receiver.behaviour["/pd"] = 1.0  # sleeps past notify_timeout
    run_id = store.insert_run(conn, pipeline="daily", step="drift", status="running",
                              triggered_by="cli", actor="pytest")
    s = settings.replace(
        smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="plain", smtp_timeout=2.0,
        alert_email_to="oncall@example.org", alert_slack_webhook=receiver.url("/slack"),
        pagerduty_routing_key=ROUTING_KEY, pagerduty_url=receiver.url("/pd"),
        notify_retries=2, notify_timeout=0.3,
    )
    with caplog.at_level(logging.WARNING, logger="mlops_cli.notify"):
        deliveries = notify.send(conn, s, drift_message(), kinds=notify.KINDS, alert=True,
                                 pipeline_run_id=run_id)
    conn.commit()

    by = {d.channel: d for d in deliveries}
    assert by["log"].status == "sent"
    for kind in ("email", "slack", "pagerduty"):
        assert by[kind].status == "failed" and by[kind].attempts == 3, by[kind]
    assert "Connection refused" in by["email"].error or "ConnectionRefused" in by["email"].error
    assert "HTTP 500" in by["slack"].error
    assert "timed out" in by["pagerduty"].error.lower()
    assert len(receiver.bodies("/slack")) == 3 and len(receiver.bodies("/pd")) == 3
    assert sum("failed after 3 attempt(s)" in r.getMessage() for r in caplog.records) == 3

    stored = query(settings.database_url,
                   "SELECT channel, status, attempts, error, pipeline_run_id FROM notifications ORDER BY id")
    assert [(c, st, a, rid) for c, st, a, _e, rid in stored] == [
        ("log", "sent", 1, run_id), ("email", "failed", 3, run_id),
        ("slack", "failed", 3, run_id), ("pagerduty", "failed", 3, run_id)]
    assert all(e for c, st, _a, e, _r in stored if st == "failed")


def test_secret_webhook_path_does_not_leak_through_error_text(settings, conn):
    hook = f"http://127.0.0.1:{free_port()}/services/{HOOK_SECRET}"  # nothing listens there
    s = settings.replace(slack_webhook=hook)
    [d] = notify.send(conn, s, promotion_message(), kinds=("slack",))
    assert d.status == "failed" and d.attempts == 1
    assert HOOK_SECRET not in d.error and "***" in d.error
    assert HOOK_SECRET not in json.dumps(rows(conn), default=str)


def test_unset_channels_are_not_attempted(settings, conn, receiver):
    # defaults: no SMTP host, no webhook, no routing key -> only the log channel
    deliveries = notify.send(conn, settings, drift_message(), kinds=notify.KINDS, alert=True)
    assert [d.channel for d in deliveries] == ["log"]
    # a recipient without SMTP host, or an SMTP host without recipient: email stays off
    assert notify.channels_for(settings.replace(notification_email="a@x.org"), ["email"]) == []
    assert notify.channels_for(settings.replace(smtp_host="127.0.0.1"), ["email"]) == []
    # configured but not asked for: not attempted either
    s = settings.replace(slack_webhook=receiver.url("/slack"))
    assert [d.channel for d in notify.send(conn, s, promotion_message(), kinds=("log",))] == ["log"]
    assert receiver.requests == []
    assert [r["channel"] for r in rows(conn)] == ["log", "log"]


def test_log_channel_writes_one_json_line_per_message(settings, conn, tmp_path):
    path = tmp_path / "deep" / "folder" / "notes.jsonl"
    s = settings.replace(notification_log=str(path))
    notify.send(conn, s, promotion_message(), kinds=("log",))
    msg = drift_message(performance_note=float("nan"), webhook_token="hunter2-secret")
    [d] = notify.send(conn, s, msg, kinds=("log",))
    assert d.status == "sent" and d.target == str(path)

    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "event", "severity", "subject", "text", "context"}
    assert first["event"] == "promotion" and first["context"]["candidate_score"] == 0.8123
    assert "Decision:   promoted" in first["text"]
    assert second["severity"] == "critical" and second["context"]["performance_note"] is None  # NaN
    assert second["context"]["webhook_token"] == "***"
    assert "hunter2" not in path.read_text(encoding="utf-8")
    # the NaN made it to JSONB too (PostgreSQL rejects NaN in jsonb)
    assert rows(conn)[0]["payload"]["context"]["performance_note"] is None


def test_default_log_path_is_under_mlops_home(settings, conn):
    notify.send(conn, settings, promotion_message(), kinds=("log",))
    assert settings.notification_log_path.is_file()
    assert settings.notification_log_path.parent == settings.home


# --- rendering and store --------------------------------------------------------------------------
def test_render_picks_event_template_else_generic(settings):
    drift = notify.render(drift_message(), "txt", settings)
    assert "Level:      CRITICAL" in drift
    assert "data drift:         0.3412" in drift and "performance drift:  0.0521" in drift
    assert "1. designation_length  (0.4100)" in drift and "3. has_image" in drift
    assert settings.dashboard_url in drift and "docs/ALERTING_GUIDE.md" in drift
    assert "cause: data" in drift  # unknown keys still shown

    other = notify.render(Message("weird_event", "Hello", "warning", {"answer": 42, "ratio": 0.5}), "txt")
    assert "Event:     weird_event" in other and "answer: 42" in other and "ratio: 0.5000" in other

    for event, ctx, expected in [
        ("rollback", {"from_version": 7, "to_version": 6, "reason": "latency"},
         "Rolled back from version 7 to version 6"),
        ("pipeline_failed", {"pipeline": "weekly", "step": "train", "error": "boom"}, "Step:       train"),
        ("drift_resolved", {"previous_level": "alert", "scores": {"data": 0.04}}, "(was ALERT)"),
    ]:
        assert expected in notify.render(Message(event, "S", "info", ctx), "txt", settings)
    # the pipeline's and the failed step's pipeline_runs ids, as pipeline.py sends them: shown, not as leftovers
    failed = notify.render(Message("pipeline_failed", "S", "error", {
        "pipeline": "weekly", "step": "train", "pipeline_run_id": 41, "step_run_id": 44, "error": "boom"}), "txt")
    assert "Run:        pipeline_runs id 41  (see `mlops runs`)" in failed
    assert "Step run:   pipeline_runs id 44" in failed and "Details:" not in failed

    with pytest.raises(ValueError):
        Message("promotion", "x", "fatal")


def test_list_notifications_filters(conn, settings):
    notify.send(conn, settings, promotion_message(), kinds=("log",))
    notify.send(conn, settings, drift_message(), kinds=("log",))
    assert [r["event"] for r in store.list_notifications(conn)] == ["drift_alert", "promotion"]
    assert [r["event"] for r in store.list_notifications(conn, event="promotion")] == ["promotion"]
    assert store.list_notifications(conn, channel="email") == []
    assert len(store.list_notifications(conn, limit=1)) == 1
