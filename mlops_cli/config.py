"""Settings from the environment (and a `.env` file in the working directory, if present).

Nothing happens at import time: call `load_settings()`; it reads the environment when called.
Every variable is listed, with its default, in `.env.example` and docs/CONFIGURATION.md.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import Invalid


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {value!r}")




def _networks(value: str) -> tuple:
    """A comma-separated list of IP addresses or networks (CIDR): UI_TRUSTED_PROXIES."""
    import ipaddress

    out = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or network (like 10.0.0.0/8)") from None
    return tuple(out)


def _env(name: str, default, parser=str, **kw):
    """Declare a setting read from environment variable `name`."""
    f = field(default=default, metadata={"env": name, "parser": parser}, **kw)
    return f


@dataclass(frozen=True)
class Settings:
    # --- storage -----------------------------------------------------------------------------
    database_url: str = _env("DATABASE_URL", "")
    mlflow_tracking_uri: str = _env("MLFLOW_TRACKING_URI", "")
    home: Path = _env("MLOPS_HOME", Path(".mlops"), Path)
    artifact_root: str = _env("MLFLOW_ARTIFACT_ROOT", "")  # default: $MLOPS_HOME/artifacts
    # --- data loading ------------------------------------------------------------------------
    x_path: str = _env("MLOPS_X_PATH", "")
    y_path: str = _env("MLOPS_Y_PATH", "")
    load_fraction: float = _env("LOAD_FRACTION", 0.03, float)
    initial_load_fraction: float = _env("INITIAL_LOAD_FRACTION", 0.40, float)
    load_seed: int = _env("LOAD_SEED", 42, int)
    # Far above any real product (DATA_FACTS: titles <= 250 chars, descriptions a few thousand):
    # a longer field is a broken export, rejected rather than loaded.
    max_title_chars: int = _env("MAX_TITLE_CHARS", 1000, int)
    max_description_chars: int = _env("MAX_DESCRIPTION_CHARS", 100000, int)
    # --- training / registry -----------------------------------------------------------------
    model_name: str = _env("MODEL_NAME", "rakuten-product-classifier")
    experiment_name: str = _env("MLFLOW_EXPERIMENT_NAME", "rakuten-product-classification")
    holdout_fraction: float = _env("HOLDOUT_FRACTION", 0.2, float)
    max_per_class: int = _env("MAX_PER_CLASS", 4000, int)
    validation_fraction: float = _env("VALIDATION_FRACTION", 0.2, float)
    train_search_max_candidates: int = _env("TRAIN_SEARCH_MAX_CANDIDATES", 16, int)
    train_search_seconds: float = _env("TRAIN_SEARCH_SECONDS", 600.0, float)
    # train also runs (without a new load) once this many products got a label no training used
    feedback_retrain_min: int = _env("FEEDBACK_RETRAIN_MIN", 200, int)
    # --- promotion ---------------------------------------------------------------------------
    auto_promotion_enabled: bool = _env("AUTO_PROMOTION_ENABLED", True, _bool)
    promotion_metric: str = _env("PROMOTION_METRIC", "weighted_f1")
    min_f1_threshold: float = _env("MIN_F1_THRESHOLD", 0.75, float)
    min_improvement: float = _env("MIN_IMPROVEMENT", 0.0, float)
    promotion_require_beat_baseline: bool = _env("PROMOTION_REQUIRE_BEAT_BASELINE", True, _bool)
    # --- shadow challenger: live evidence before promotion (serving/shadow.py, docs/shadow.md) ---
    shadow_enabled: bool = _env("SHADOW_ENABLED", False, _bool)
    shadow_min_requests: int = _env("SHADOW_MIN_REQUESTS", 0, int)  # 0: promotion needs no live evidence
    shadow_min_labelled: int = _env("SHADOW_MIN_LABELLED", 30, int)
    shadow_max_f1_loss: float = _env("SHADOW_MAX_F1_LOSS", 0.02, float)
    shadow_queue_max: int = _env("SHADOW_QUEUE_MAX", 10000, int)
    shadow_stall_seconds: float = _env("SHADOW_STALL_SECONDS", 30.0, float)
    shadow_nice: int = _env("SHADOW_NICE", 19, int)  # the worker runs on the CPU the API leaves
    # --- pipeline ----------------------------------------------------------------------------
    step_retries: int = _env("STEP_RETRIES", 3, int)
    step_retry_delay: float = _env("STEP_RETRY_DELAY", 2.0, float)
    step_timeout: float = _env("STEP_TIMEOUT", 3600.0, float)
    # --- notifications -----------------------------------------------------------------------
    notification_log: str = _env("NOTIFICATION_LOG", "")  # default: $MLOPS_HOME/notifications.jsonl
    notification_email: str = _env("NOTIFICATION_EMAIL", "")
    smtp_host: str = _env("SMTP_HOST", "")
    smtp_port: int = _env("SMTP_PORT", 587, int)
    smtp_user: str = _env("SMTP_USER", "")
    smtp_password: str = _env("SMTP_PASSWORD", "")
    smtp_security: str = _env("SMTP_SECURITY", "starttls")  # starttls | ssl | plain
    smtp_timeout: float = _env("SMTP_TIMEOUT", 10.0, float)
    email_from: str = _env("ALERT_EMAIL_FROM", "mlops@localhost")
    alert_email_to: str = _env("ALERT_EMAIL_TO", "")
    slack_webhook: str = _env("NOTIFICATION_SLACK_WEBHOOK", "")
    alert_slack_webhook: str = _env("ALERT_SLACK_WEBHOOK", "")
    pagerduty_routing_key: str = _env("PAGERDUTY_ROUTING_KEY", "")
    pagerduty_url: str = _env("PAGERDUTY_EVENTS_URL", "https://events.pagerduty.com/v2/enqueue")
    notify_retries: int = _env("NOTIFY_RETRIES", 2, int)
    notify_timeout: float = _env("NOTIFY_TIMEOUT", 5.0, float)
    # --- drift / alerting --------------------------------------------------------------------
    alert_enabled: bool = _env("ALERT_ENABLED", True, _bool)
    drift_warning_threshold: float = _env("DRIFT_WARNING_THRESHOLD", 0.1, float)
    drift_alert_threshold: float = _env("DRIFT_ALERT_THRESHOLD", 0.2, float)
    drift_critical_threshold: float = _env("DRIFT_CRITICAL_THRESHOLD", 0.3, float)
    drift_min_samples: int = _env("DRIFT_MIN_SAMPLES", 200, int)
    # estimated_performance alert: WARNING once the label-free weighted F1 estimate is this far
    # below the reference's estimate (performance_estimate.py; the UI can override it)
    estimate_margin: float = _env("ESTIMATE_MARGIN", 0.05, float)
    alert_cooldown_hours: float = _env("ALERT_COOLDOWN_HOURS", 24.0, float)
    # the daily pipeline retrains when a drift alert is active and FEEDBACK_RETRAIN_MIN new labels exist
    auto_retrain_on_drift: bool = _env("AUTO_RETRAIN_ON_DRIFT", False, _bool)
    dashboard_url: str = _env("DASHBOARD_URL", "http://localhost:8501")
    # --- control room sign-in (mlops_cli/uiauth.py) -------------------------------------------
    ui_auth: str = _env("UI_AUTH", "token")  # token | users
    ui_token: str = _env("UI_TOKEN", "")  # default: a new random token at each `mlops ui` start
    ui_admin_name: str = _env("UI_ADMIN_NAME", "")  # default: the OS user running the UI
    ui_users_file: str = _env("UI_USERS_FILE", "")  # default: $MLOPS_HOME/ui-users
    ui_public_read: bool = _env("UI_PUBLIC_READ", False, _bool)
    ui_session_hours: float = _env("UI_SESSION_HOURS", 12.0, float)  # a sign-in ends after this long
    # reverse proxies in front of the UI whose X-Forwarded-For is believed (uiauth.client_address)
    ui_trusted_proxies: tuple = _env("UI_TRUSTED_PROXIES", (), _networks)
    # --- serving / control API ---------------------------------------------------------------
    # a shared operator token (access.py); named tokens per person or service: `mlops api-token add`
    api_token: str = _env("API_TOKEN", "")
    api_token_name: str = _env("API_TOKEN_NAME", "api")  # the actor of what API_TOKEN does
    api_host: str = _env("API_HOST", "127.0.0.1")
    api_port: int = _env("API_PORT", 8000, int)
    model_poll_seconds: float = _env("MODEL_POLL_SECONDS", 10.0, float)
    max_batch_size: int = _env("MAX_BATCH_SIZE", 1000, int)
    max_text_chars: int = _env("MAX_TEXT_CHARS", 20000, int)
    inference_log_flush_seconds: float = _env("INFERENCE_LOG_FLUSH_SECONDS", 1.0, float)
    inference_log_buffer: int = _env("INFERENCE_LOG_BUFFER", 100000, int)
    # inference_log partitions (one per UTC day), retention and archives (steps/retention.py)
    inference_log_retention_days: int = _env("INFERENCE_LOG_RETENTION_DAYS", 90, int)
    inference_log_partitions_ahead: int = _env("INFERENCE_LOG_PARTITIONS_AHEAD", 7, int)
    inference_log_archive_dir: str = _env("INFERENCE_LOG_ARCHIVE_DIR", "")  # empty: no archive before a drop
    inference_log_archive_format: str = _env("INFERENCE_LOG_ARCHIVE_FORMAT", "csv.gz")  # csv.gz | parquet
    inference_log_lock_timeout_ms: int = _env("INFERENCE_LOG_LOCK_TIMEOUT_MS", 200, int)
    # --- schedules (rendered into the crontab) -----------------------------------------------
    weekly_schedule: str = _env("WEEKLY_SCHEDULE", "0 2 * * 1")
    # 03:00 in Paris is 01:00 or 02:00 UTC: the same UTC date all year (schedule.utc_date_shift)
    daily_schedule: str = _env("DAILY_SCHEDULE", "0 3 * * *")
    cron_tz: str = _env("CRON_TZ", "Europe/Paris")

    # -------------------------------------------------------------------------------------------
    @property
    def pg_dir(self) -> Path:
        return self.home / "pg"

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.artifact_root) if self.artifact_root else self.home / "artifacts"

    @property
    def notification_log_path(self) -> Path:
        return Path(self.notification_log) if self.notification_log else self.home / "notifications.jsonl"

    @property
    def embedded(self) -> bool:
        return not self.database_url

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)


def env_variables() -> list[tuple[str, str, object]]:
    """(variable, field name, default) for every setting: used by docs tests and `mlops config`."""
    return [(f.metadata["env"], f.name, f.default) for f in dataclasses.fields(Settings)]


def read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # small, well-kept parser for quoting and escapes

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
    """Build Settings from `environ` (default os.environ) over a `.env` file (default ./.env).

    Real environment variables win over the file. A value that does not parse raises MlopsError
    naming the variable.
    """
    env = dict(read_dotenv(dotenv if dotenv is not None else Path(".env")))
    env.update(os.environ if environ is None else environ)
    values = {}
    for f in dataclasses.fields(Settings):
        name = f.metadata["env"]
        if name in env and env[name] != "":
            try:
                values[f.name] = f.metadata["parser"](env[name])
            except ValueError as exc:
                raise Invalid(f"Invalid value for {name}: {env[name]!r} ({exc})") from None
    s = Settings(**values)
    if not 0 < s.load_fraction <= 1 or not 0 < s.initial_load_fraction <= 1:
        raise Invalid("LOAD_FRACTION and INITIAL_LOAD_FRACTION must be in (0, 1]")
    if not 0 < s.holdout_fraction < 1:
        raise Invalid("HOLDOUT_FRACTION must be in (0, 1)")
    if not 0 < s.validation_fraction < 1:
        raise Invalid("VALIDATION_FRACTION must be in (0, 1)")
    if s.train_search_max_candidates < 1 or s.train_search_seconds < 0:
        raise Invalid("TRAIN_SEARCH_MAX_CANDIDATES must be >= 1 and TRAIN_SEARCH_SECONDS >= 0")
    if not 0 < s.estimate_margin < 1:
        raise Invalid("ESTIMATE_MARGIN must be in (0, 1): a drop of weighted F1")
    if s.feedback_retrain_min < 1:
        raise Invalid("FEEDBACK_RETRAIN_MIN must be at least 1")
    if s.inference_log_retention_days < 31:
        raise Invalid("INFERENCE_LOG_RETENTION_DAYS must be at least 31 (the 30-day drift window reads its rows)")
    if s.smtp_security.strip().lower() not in ("starttls", "ssl", "plain"):
        raise Invalid(f"SMTP_SECURITY must be starttls, ssl or plain, not {s.smtp_security!r}")
    if s.inference_log_archive_format not in ("csv.gz", "parquet"):
        raise Invalid("INFERENCE_LOG_ARCHIVE_FORMAT must be csv.gz or parquet")
    if s.shadow_min_requests < 0 or s.shadow_min_labelled < 0 or not 0 <= s.shadow_max_f1_loss <= 1:
        raise Invalid("SHADOW_MIN_REQUESTS and SHADOW_MIN_LABELLED must be >= 0, SHADOW_MAX_F1_LOSS in [0, 1]")
    if s.shadow_queue_max < 1 or not s.shadow_stall_seconds > 0 or not 0 <= s.shadow_nice <= 19:
        raise Invalid("SHADOW_QUEUE_MAX must be at least 1, SHADOW_STALL_SECONDS above 0, SHADOW_NICE in 0..19")
    # limits a typo would turn into "refuse everything" or "drop everything", silently
    for f in dataclasses.fields(Settings):
        low = AT_LEAST.get(f.metadata.get("env"))
        if low is not None and not getattr(s, f.name) >= low:
            raise Invalid(f"{f.metadata['env']} must be at least {low}, not {getattr(s, f.name)!r}")
    if not 1 <= s.api_port <= 65535 or not 1 <= s.smtp_port <= 65535:
        raise Invalid("API_PORT and SMTP_PORT must be in 1..65535")
    if not s.ui_session_hours > 0:
        raise Invalid("UI_SESSION_HOURS must be above 0")
    from .access import check_name

    # the actors of the shared secrets are names like any other: a reserved one (cron,
    # unauthenticated...) would make their actions read as the scheduler's, or as refused requests
    for variable, value in (("API_TOKEN_NAME", s.api_token_name), ("UI_ADMIN_NAME", s.ui_admin_name)):
        if value.strip():
            try:
                check_name(value)
            except Invalid as exc:
                raise Invalid(f"{variable}: {exc}") from None
    return s


# (MAX_PER_CLASS 0 is "no cap", STEP_RETRIES 0 one attempt: both meant that before the check)
AT_LEAST = {"MAX_TITLE_CHARS": 1, "MAX_DESCRIPTION_CHARS": 1, "MAX_PER_CLASS": 0, "MAX_BATCH_SIZE": 1,
            "MAX_TEXT_CHARS": 1, "INFERENCE_LOG_BUFFER": 1, "DRIFT_MIN_SAMPLES": 1, "STEP_RETRIES": 0,
            "NOTIFY_RETRIES": 0, "ALERT_COOLDOWN_HOURS": 0, "INFERENCE_LOG_PARTITIONS_AHEAD": 0,
            "INFERENCE_LOG_LOCK_TIMEOUT_MS": 1, "INFERENCE_LOG_FLUSH_SECONDS": 0}
