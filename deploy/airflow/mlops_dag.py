"""Airflow DAGs for the mlops pipelines: an alternative to the supercronic `cron` service.

Copy this file into the DAGs folder of an Airflow 2.7+ or 3.x deployment whose workers have the
`mlops` package installed (or run the tasks in the cron image) and the mlops settings in their
environment (DATABASE_URL, MLFLOW_TRACKING_URI, ...). Use it *instead of* the cron service: both
at once is harmless (each pipeline holds a PostgreSQL advisory lock, a duplicate is recorded as
skipped) but pointless.

Each task runs exactly one `mlops` command. The weekly DAG runs `mlops pipeline weekly` as one
task rather than load/train/evaluate/promote as four: the pipeline command records its steps
under pipeline 'weekly' with the week's slot and does its own gating and step retries (a step
started alone is recorded as 'manual'). Its steps show up in `mlops runs --pipeline weekly`.

The command strings are module-level constants so that tests can read them with `ast` without
Airflow installed.
"""

from __future__ import annotations

from datetime import timedelta

# --- what runs, and when (read by tests/test_deploy.py) -------------------------------------------
TIMEZONE = "Europe/Paris"
WEEKLY_SCHEDULE = "0 2 * * 1"  # Monday 02:00, as WEEKLY_SCHEDULE in crontab.template
DAILY_SCHEDULE = "0 3 * * *"  # every day 03:00, as DAILY_SCHEDULE
WEEKLY_DAG_ID = "mlops_weekly"
DAILY_DAG_ID = "mlops_daily"
WEEKLY_COMMAND = "mlops pipeline weekly"
DAILY_COMMAND = "mlops pipeline daily"

# Recorded in pipeline_runs.triggered_by, and one JSON object per log line in the task logs.
TASK_ENV = {"MLOPS_TRIGGERED_BY": "cron", "MLOPS_LOG_FORMAT": "json"}

DEFAULT_ARGS = {
    "owner": "mlops",
    "depends_on_past": False,
    "retries": 2,
    "retry_delay": timedelta(minutes=10),
}

try:  # Airflow is not needed to read this file (tests parse it with `ast`)
    import pendulum

    try:
        from airflow.sdk import DAG  # Airflow 3
    except ImportError:  # Airflow 2
        from airflow import DAG
    try:
        from airflow.providers.standard.operators.bash import BashOperator  # Airflow 3
    except ImportError:  # Airflow 2
        from airflow.operators.bash import BashOperator
except ImportError:  # pragma: no cover - outside Airflow
    DAG = None


def _dag(dag_id: str, schedule: str, task_id: str, command: str, description: str, timeout: timedelta):
    with DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=pendulum.datetime(2025, 1, 1, tz=TIMEZONE),
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=timeout,
        default_args=DEFAULT_ARGS,
        tags=["mlops"],
    ) as dag:
        BashOperator(
            task_id=task_id,
            bash_command=command,
            env=TASK_ENV,
            append_env=True,  # keep the worker's DATABASE_URL, MLFLOW_TRACKING_URI, PATH, ...
            execution_timeout=timeout,
        )
    return dag


if DAG is not None:
    mlops_weekly = _dag(
        WEEKLY_DAG_ID, WEEKLY_SCHEDULE, "pipeline_weekly", WEEKLY_COMMAND,
        "Load this week's catalogue batch, retrain, evaluate, promote", timedelta(hours=4),
    )
    mlops_daily = _dag(
        DAILY_DAG_ID, DAILY_SCHEDULE, "pipeline_daily", DAILY_COMMAND,
        "Drift check of recent predictions, then alerting", timedelta(hours=2),
    )
