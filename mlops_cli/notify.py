"""Notifications: one message, several channels (log, email, Slack, PagerDuty), one audit row each.

    msg = Message("promotion", "Model v7 promoted", "info", {"decision": "promoted", ...})
    deliveries = notify.send(conn, settings, msg)          # never raises for a channel failure
    conn.commit()                                          # the audit rows are the caller's

`send` tries every enabled channel (up to 1 + NOTIFY_RETRIES attempts, 0.2 s backoff doubling),
catches every error, and inserts one `notifications` row per channel (status sent/failed,
attempts, error, the payload as sent minus secrets) *in the caller's transaction*: the caller
commits (or rolls back) together with the rest of its step. A broken channel never fails a step.

A channel whose settings are unset is off (not an error): email needs SMTP_HOST and a recipient,
Slack a webhook, PagerDuty a routing key; the log channel (NOTIFICATION_LOG, one JSON line per
message) needs nothing. Alerts (`alert=True`) go to ALERT_EMAIL_TO / ALERT_SLACK_WEBHOOK when
set, else to NOTIFICATION_EMAIL / NOTIFICATION_SLACK_WEBHOOK.

Bodies come from the Jinja2 templates in mlops_cli/templates/: `<event>.txt.j2` when it exists,
else the generic `email.txt.j2`. Context keys the event templates know (any other key is listed
under "Details" too, so nothing is lost):

- every event: justification, scores (dict), links (dict label -> url), pipeline_run_id (the
  pipeline_runs row of the step that sends it), model_name
- promotion: decision, candidate_version, champion_version, metric, candidate_score,
  champion_score, threshold, min_improvement
- rollback: from_version, to_version, reason, actor
- pipeline_failed: pipeline, step, pipeline_run_id (the pipeline's row), step_run_id (the failed
  step's row), error, attempts, slot
- drift_alert / drift_resolved: level, scores {data, prediction, performance, estimated_performance}, thresholds,
  top_features (names, {feature, score} dicts or (name, score) pairs), samples, window,
  cause, dedup_key (PagerDuty incident key, e.g. "drift-data"; required to resolve)

No I/O at import time; the template environment is built on first use.
"""

from __future__ import annotations

import json
import logging
import math
import re
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import lru_cache
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

from .config import Settings
from .jsonvalues import jsonable

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "error", "critical")
KINDS = ("log", "email", "slack", "pagerduty")
ALERTING_GUIDE = "docs/ALERTING_GUIDE.md"
GENERIC_TEMPLATES = {"txt": "email.txt.j2"}
BACKOFF_START = 0.2   # seconds before the 2nd attempt, doubling after each failure
BACKOFF_MAX = 2.0

_SECRET_KEY = re.compile(r"password|passwd|secret|token|routing_key|webhook|api_key|authorization",
                         re.IGNORECASE)
_HIDDEN_KEYS = ("links", "dedup_key")  # shown elsewhere (links) or internal (dedup_key)
_sleep = time.sleep  # tests may replace it


# --- the message ------------------------------------------------------------------------------------
@dataclass
class Message:
    """What happened. `context` is free data (scores, versions, justification, links...)."""

    event: str
    subject: str
    severity: str = "info"
    context: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


@dataclass
class Delivery:
    """The outcome of one channel for one message (also stored as a `notifications` row)."""

    channel: str
    target: str
    status: str  # 'sent' | 'failed'
    attempts: int
    error: str | None = None
    notification_id: int | None = None


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad configuration, 4xx, refused recipients)."""


# --- rendering --------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    """A value for humans: floats with 4 decimals, None as n/a, containers as compact JSON."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(jsonable(value), ensure_ascii=False, default=str)
    return str(value)


def _rest(context: dict, *known: str) -> list[tuple[str, Any]]:
    """Context items not shown by a template yet (for its generic 'Details' section)."""
    skip = set(known) | set(_HIDDEN_KEYS)
    return [(k, v) for k, v in context.items() if k not in skip]


def _feature_rows(features: Any) -> list[tuple[str, Any]]:
    """top_features as (name, score-or-None) whatever their shape."""
    rows = []
    for f in features or []:
        if isinstance(f, dict):
            name = f.get("feature", f.get("name", "?"))
            score = next((f[k] for k in ("score", "drift_score", "value", "p_value") if k in f), None)
            rows.append((str(name), score))
        elif isinstance(f, (list, tuple)) and f:
            rows.append((str(f[0]), f[1] if len(f) > 1 else None))
        else:
            rows.append((str(f), None))
    return rows


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mlops_cli", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"),
                                            default_for_string=False, default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    env.globals.update(rest=_rest, feature_rows=_feature_rows)
    return env


def links_for(message: Message, settings: Settings | None = None) -> dict[str, str]:
    """The message's links, then the dashboard (and the alerting guide for drift events)."""
    out = {str(k): str(v) for k, v in (message.context.get("links") or {}).items() if v}
    dashboard = message.context.get("dashboard_url") or (settings.dashboard_url if settings else "")
    if dashboard and dashboard not in out.values():
        out["Dashboard"] = dashboard
    if message.event.startswith("drift"):
        out.setdefault("Alerting guide", message.context.get("alerting_guide") or ALERTING_GUIDE)
    return out


def render(message: Message, kind: str = "txt", settings: Settings | None = None) -> str:
    """The body of `message`: template `<event>.<kind>.j2` if present, else the generic one.

    A broken event template falls back to the generic one (logged), so a notification always
    has a body.
    """
    import jinja2

    env = _environment()
    generic = GENERIC_TEMPLATES.get(kind, f"email.{kind}.j2")
    names = [f"{message.event}.{kind}.j2", generic]
    variables = {
        "message": message,
        "event": message.event,
        "subject": message.subject,
        "severity": message.severity,
        # secret-looking keys masked, configured secrets replaced: the text goes out as is
        "ctx": scrub(message.context, _secret_values(settings) if settings else ()),
        "links": links_for(message, settings),
        "dashboard_url": message.context.get("dashboard_url") or (settings.dashboard_url if settings else ""),
        "alerting_guide": message.context.get("alerting_guide") or ALERTING_GUIDE,
    }
    last_exc: Exception | None = None
    for name in names:
        try:
            template = env.get_template(name)
        except jinja2.TemplateNotFound:
            continue
        try:
            return template.render(**variables)
        except Exception as exc:  # a template bug must not cost the notification
            log.warning("template %s failed (%s); falling back to the generic one", name, exc)
            last_exc = exc
    raise LookupError(f"no usable template for {message.event!r} ({kind})") from last_exc


# --- secrets and JSON -------------------------------------------------------------------------------
def _secret_values(settings: Settings) -> list[str]:
    values = [settings.smtp_password, settings.pagerduty_routing_key, settings.api_token, settings.ui_token]
    for url in (settings.database_url, settings.mlflow_tracking_uri):  # user:password@ in either
        if url and (password := urlsplit(url).password):
            values += [password, unquote(password)]
    for hook in (settings.slack_webhook, settings.alert_slack_webhook):
        if hook:
            parts = urlsplit(hook)
            values += [hook, parts.path, parts.query]
    # longest first, so that a webhook URL is replaced whole before its path
    return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)


def scrub(value: Any, secrets: Iterable[str] = ()) -> Any:
    """`value` with secret-looking keys masked and known secret strings replaced by ***."""
    secrets = list(secrets)
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v not in (None, "") else scrub(v, secrets))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for s in secrets:
            value = value.replace(s, "***")
        return value
    return value


def redact_url(url: str) -> str:
    """scheme://host[:port]/*** — enough to tell which webhook, not enough to post to it."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/***"


def _recipients(value: str) -> list[str]:
    return [a.strip() for a in re.split(r"[,;]", value or "") if a.strip()]


def _context(message: Message, secrets: Iterable[str]) -> dict:
    return scrub(jsonable(message.context), secrets)


# --- channels ---------------------------------------------------------------------------------------
class Channel:
    """One way out. `send` raises on failure; `payload` is the message as sent (for the audit)."""

    name = "channel"
    target = ""

    def __init__(self, settings: Settings):
        self.settings = settings

    def payload(self, message: Message) -> dict:
        raise NotImplementedError

    def audit_payload(self, message: Message) -> dict:
        """The payload without secrets (what the notifications row stores)."""
        return scrub(jsonable(self.payload(message)), _secret_values(self.settings))

    def send(self, message: Message) -> str | None:
        """Deliver or raise. May return a note (e.g. some recipients refused) for the audit row."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target}>"


class LogChannel(Channel):
    """One JSON line per message in NOTIFICATION_LOG (default $MLOPS_HOME/notifications.jsonl)."""

    name = "log"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.path = settings.notification_log_path
        self.target = str(self.path)

    def payload(self, message: Message) -> dict:
        secrets = _secret_values(self.settings)
        return {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "event": message.event,
            "severity": message.severity,
            "subject": message.subject,
            "text": scrub(render(message, "txt", self.settings), secrets),
            "context": _context(message, secrets),
        }

    def send(self, message: Message) -> None:
        line = json.dumps(self.payload(message), ensure_ascii=False, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)  # one write per line: concurrent writers do not interleave lines


class EmailChannel(Channel):
    """smtplib; SMTP_SECURITY starttls (SMTP + STARTTLS), ssl (SMTP_SSL) or plain."""

    name = "email"

    def __init__(self, settings: Settings, recipients: list[str]):
        super().__init__(settings)
        self.recipients = recipients
        self.target = ", ".join(recipients)

    def build(self, message: Message) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = message.subject
        msg["From"] = self.settings.email_from
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=self.settings.email_from.rpartition("@")[2] or "localhost")
        msg["X-Mlops-Event"] = message.event
        msg["X-Mlops-Severity"] = message.severity
        msg.set_content(render(message, "txt", self.settings))
        return msg

    def payload(self, message: Message) -> dict:
        msg = self.build(message)
        return {"from": msg["From"], "to": self.recipients, "subject": message.subject,
                "body": msg.get_content()}

    def send(self, message: Message) -> str | None:
        s = self.settings
        security = (s.smtp_security or "starttls").strip().lower()
        if security not in ("starttls", "ssl", "plain"):
            raise PermanentError(f"SMTP_SECURITY must be starttls, ssl or plain, got {s.smtp_security!r}")
        msg = self.build(message)
        if security == "ssl":
            smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
        with smtp:
            if security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_user:
                try:
                    smtp.login(s.smtp_user, s.smtp_password)
                except smtplib.SMTPAuthenticationError as exc:
                    raise PermanentError(f"SMTP login refused for {s.smtp_user}: {exc}") from exc
            try:
                refused = smtp.send_message(msg, from_addr=s.email_from, to_addrs=self.recipients)
            except smtplib.SMTPRecipientsRefused as exc:
                raise PermanentError(f"all recipients refused: {exc.recipients}") from exc
        if refused:  # delivered to the others: not retried (they would get it twice)
            note = f"some recipients refused: {refused}"
            log.warning("email %r: %s", message.subject, note)
            return note
        return None


class SlackChannel(Channel):
    """Slack incoming webhook: {"text": short, "blocks": [header, the rendered text, links]}."""

    name = "slack"
    SECTION_LIMIT = 3000  # Slack's limit for a section's text

    def __init__(self, settings: Settings, webhook: str):
        super().__init__(settings)
        self.webhook = webhook
        self.target = redact_url(webhook)

    @staticmethod
    def _escape(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def payload(self, message: Message) -> dict:
        body = render(message, "txt", self.settings)
        # the template's first line repeats the subject: the header block shows it already
        lines = body.strip("\n").splitlines()
        if lines and lines[0].strip() == message.subject.strip():
            lines = lines[1:]
        body = "\n".join(lines).strip("\n") or message.subject
        text = f"[{message.severity.upper()}] {message.subject}"
        blocks: list[dict] = [
            {"type": "header", "text": {"type": "plain_text", "text": text[:150], "emoji": True}},
        ]
        escaped = self._escape(body)
        for i in range(0, len(escaped), self.SECTION_LIMIT):
            blocks.append({"type": "section",
                           "text": {"type": "mrkdwn", "text": escaped[i:i + self.SECTION_LIMIT]}})
            if len(blocks) >= 20:  # keep far below Slack's 50-block limit
                break
        links = links_for(message, self.settings)
        if links:
            elements = [{"type": "mrkdwn", "text": f"<{url}|{self._escape(label)}>" if "://" in url
                         else f"{self._escape(label)}: {self._escape(url)}"}
                        for label, url in links.items()]
            blocks.append({"type": "context", "elements": elements[:10]})
        return {"text": text, "blocks": blocks}

    def send(self, message: Message) -> None:
        import requests

        resp = requests.post(self.webhook, json=jsonable(self.payload(message)),
                             timeout=self.settings.notify_timeout)
        _check_response("Slack webhook", resp)


class PagerDutyChannel(Channel):
    """PagerDuty Events API v2: trigger (or resolve, for *_resolved events) an incident."""

    name = "pagerduty"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        key = settings.pagerduty_routing_key
        self.target = f"***{key[-4:]}" if len(key) >= 12 else "***"

    def payload(self, message: Message) -> dict:
        s = self.settings
        ctx = message.context
        resolve = message.event.endswith("_resolved")
        body: dict[str, Any] = {
            "routing_key": s.pagerduty_routing_key,
            "event_action": "resolve" if resolve else "trigger",
        }
        dedup = ctx.get("dedup_key")
        if dedup:
            body["dedup_key"] = str(dedup)[:255]
        elif resolve:
            raise PermanentError("a PagerDuty resolve needs context['dedup_key'] (the trigger's key)")
        if resolve:
            return body  # PagerDuty ignores a payload on resolve
        secrets = _secret_values(s)
        details = _context(message, secrets)
        details.pop("links", None)
        details.pop("dedup_key", None)
        body["payload"] = {
            "summary": message.subject[:1024],
            "source": str(ctx.get("source") or socket.gethostname()),
            "severity": message.severity,  # our severities are PagerDuty's
            "component": str(ctx.get("component") or ctx.get("model_name") or s.model_name),
            "group": str(ctx.get("group") or "mlops"),
            "class": str(ctx.get("class") or message.event),
            "custom_details": details,
        }
        links = links_for(message, s)
        if links:
            body["links"] = [{"href": url, "text": label} for label, url in links.items() if "://" in url]
        if s.dashboard_url:
            body["client"] = "mlops"
            body["client_url"] = s.dashboard_url
        return body

    def audit_payload(self, message: Message) -> dict:
        out = super().audit_payload(message)
        if "routing_key" in out:
            out["routing_key"] = self.target
        return out

    def send(self, message: Message) -> None:
        import requests

        resp = requests.post(self.settings.pagerduty_url, json=jsonable(self.payload(message)),
                             timeout=self.settings.notify_timeout)
        _check_response("PagerDuty", resp)


def _check_response(what: str, resp) -> None:
    if 200 <= resp.status_code < 300:
        return
    text = (resp.text or "").strip().replace("\n", " ")[:200]
    msg = f"{what} answered HTTP {resp.status_code}: {text}"
    if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
        raise PermanentError(msg)  # our request is wrong (bad key, bad payload): retrying won't help
    raise RuntimeError(msg)


# --- wiring -----------------------------------------------------------------------------------------
def channels_for(settings: Settings, kinds: Iterable[str], *, alert: bool = False) -> list[Channel]:
    """The enabled channels among `kinds`; a channel whose settings are unset is left out."""
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown notification channel(s) {unknown}; known: {KINDS}")
    out: list[Channel] = []
    for kind in KINDS:  # a stable order: log first
        if kind not in kinds:
            continue
        if kind == "log":
            out.append(LogChannel(settings))
        elif kind == "email":
            to = _recipients((settings.alert_email_to if alert else "") or settings.notification_email)
            if settings.smtp_host and to:
                out.append(EmailChannel(settings, to))
        elif kind == "slack":
            hook = (settings.alert_slack_webhook if alert else "") or settings.slack_webhook
            if hook:
                out.append(SlackChannel(settings, hook))
        elif kind == "pagerduty":
            if settings.pagerduty_routing_key:
                out.append(PagerDutyChannel(settings))
    return out


def deliver(channel: Channel, message: Message, retries: int) -> Delivery:
    """Try `channel` up to 1 + retries times (0.2 s backoff, doubling). Never raises."""
    secrets = _secret_values(channel.settings)
    attempts, delay, error, note = 0, BACKOFF_START, None, None
    while True:
        attempts += 1
        try:
            note = channel.send(message)
            error = None
            break
        except Exception as exc:  # every failure: refused, timeout, HTTP 500, SMTP errors...
            error = scrub(f"{type(exc).__name__}: {exc}".strip(), secrets)[:2000]
            if isinstance(exc, PermanentError) or attempts > retries:
                break
            log.info("%s delivery of %r failed (attempt %d): %s; retrying in %.1fs",
                     channel.name, message.subject, attempts, error, delay)
            _sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
    if error is not None:
        log.warning("%s notification %r to %s failed after %d attempt(s): %s",
                    channel.name, message.subject, channel.target, attempts, error)
        return Delivery(channel.name, channel.target, "failed", attempts, error)
    return Delivery(channel.name, channel.target, "sent", attempts, note)


def send(conn, settings: Settings, message: Message, kinds: Iterable[str] = ("log", "email", "slack"),
         *, alert: bool = False, pipeline_run_id: int | None = None) -> list[Delivery]:
    """Send `message` on every enabled channel among `kinds`; one audit row per channel.

    Never raises for a channel failure (the Delivery says failed, a WARNING is logged). The
    `notifications` rows are inserted with `conn` inside the caller's transaction: the caller
    commits. With conn=None nothing is recorded (e.g. a dry test of the channels).
    """
    deliveries = []
    for channel in channels_for(settings, kinds, alert=alert):
        delivery = deliver(channel, message, max(0, settings.notify_retries))
        deliveries.append(delivery)
        if conn is None:
            continue
        try:
            payload = channel.audit_payload(message)
        except Exception as exc:  # e.g. the payload cannot even be built: keep the facts
            payload = {"event": message.event, "subject": message.subject, "severity": message.severity,
                       "context": _context(message, _secret_values(settings)),
                       "payload_error": str(exc)[:500]}
        delivery.notification_id = _record(conn, message, delivery, payload, pipeline_run_id)
    return deliveries


def _record(conn, message: Message, delivery: Delivery, payload: dict, pipeline_run_id: int | None) -> int:
    from . import store

    return store.insert_notification(
        conn, event=message.event, channel=delivery.channel, target=delivery.target,
        subject=message.subject, status=delivery.status, attempts=delivery.attempts,
        error=delivery.error, payload=payload, pipeline_run_id=pipeline_run_id,
    )
