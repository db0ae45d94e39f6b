"""The value lists every layer shares, declared once: pipeline run statuses, pipelines, steps,
drift levels and causes, alert statuses and the human actions on alerts.

`StrEnum`s: a member is its string (`RunStatus.FAILED == "failed"`), so SQL parameters, JSON
and the stored rows keep the same text; `values(Enum)` is the tuple of strings (for a click
Choice, a pydantic Literal or a select box).
"""

from __future__ import annotations

from enum import Enum, StrEnum


def values(enum: type[Enum]) -> tuple[str, ...]:
    """The members' strings, in declaration order."""
    return tuple(member.value for member in enum)


class RunStatus(StrEnum):
    """pipeline_runs.status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class Pipeline(StrEnum):
    """pipeline_runs.pipeline: the scheduled pipelines, a human's retrain, or a single step."""

    WEEKLY = "weekly"
    DAILY = "daily"
    MANUAL = "manual"
    RETRAIN = "retrain"


class Step(StrEnum):
    """pipeline_runs.step ('pipeline': the row of a whole pipeline run)."""

    PIPELINE = "pipeline"
    LOAD = "load"
    TRAIN = "train"
    EVALUATE = "evaluate"
    PROMOTE = "promote"
    APPROVE = "approve"
    ROLLBACK = "rollback"
    DRIFT = "drift"
    ALERT = "alert"
    PARTITIONS = "partitions"
    ROLLUP = "rollup"
    RETENTION = "retention"
    AUTO_RETRAIN = "auto_retrain"  # the daily pipeline's decision to retrain on drift


class TriggeredBy(StrEnum):
    """pipeline_runs.triggered_by: which front end started a run."""

    CRON = "cron"
    CLI = "cli"
    API = "api"
    UI = "ui"


class Level(StrEnum):
    """Drift levels, lowest first (the order ranks them)."""

    NONE = "NONE"
    WARNING = "WARNING"
    ALERT = "ALERT"
    CRITICAL = "CRITICAL"


# The levels an alert can have, worst first (cards, sorting).
ALERT_LEVELS: tuple[str, ...] = (Level.CRITICAL.value, Level.ALERT.value, Level.WARNING.value)


class Cause(StrEnum):
    """What drifted: the input data, the predicted-class mix, the measured performance (labels),
    or the performance estimated without labels (performance_estimate.py)."""

    DATA = "data"
    PREDICTION = "prediction"
    PERFORMANCE = "performance"
    ESTIMATED_PERFORMANCE = "estimated_performance"


class AlertStatus(StrEnum):
    """alerts.status: open and acknowledged alerts are active."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertAction(StrEnum):
    """alert_actions.action: the human decisions audited on alerts."""

    ACKNOWLEDGE = "acknowledge"
    CLEAR = "clear"
    RESOLVE = "resolve"
    FORCE_RETRAIN = "force_retrain"
    INVESTIGATE = "investigate"
    ADJUST_THRESHOLDS = "adjust_thresholds"
    ROLLBACK = "rollback"
    AUTO_RETRAIN = "auto_retrain"  # the daily pipeline's decision (not a human's): retrain or wait


# Decisions taken elsewhere (with their own command) that `mlops alerts record` can note on an alert.
RECORDABLE_ACTIONS: tuple[str, ...] = (AlertAction.INVESTIGATE.value, AlertAction.FORCE_RETRAIN.value,
                                       AlertAction.ROLLBACK.value, AlertAction.ADJUST_THRESHOLDS.value)
