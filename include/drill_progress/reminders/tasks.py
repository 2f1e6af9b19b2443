"""Airflow glue of `trigger_reminders` (called from the task body only)."""

from __future__ import annotations

from drill_progress import config, connections
from drill_progress.db import masked_errors
from drill_progress.reminders import due


@masked_errors
def send_reminders(dag_run, params: dict) -> dict:
    """Task `send_reminders`: record the reminders due at the run's reference time, then publish."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return due.trigger_reminders(
            connections.db_engine(),
            connections.aws_client("kinesis"),
            connections.variable(config.COMMAND_STREAM),
            reference=due.reference_time(dag_run.logical_date, dag_run.run_after),
            floor_minutes=params["floor_minutes"],
            ceil_minutes=params["ceil_minutes"],
        )
    except due.InvalidWindow as exc:
        raise AirflowFailException(str(exc)) from exc  # no retries: the params are wrong
