"""Airflow glue of drill_progress_maintenance and drill_progress_monitor (called from task bodies only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drill_progress import config, connections
from drill_progress.db import masked_errors
from drill_progress.maintenance import airflow_metadata, lag, prune, task_logs


def _now() -> datetime:
    return datetime.now(UTC)


def _fail_on_bad_params(exc: Exception):
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(str(exc))  # no retries: the params are wrong


def run_start(dag_run, now: datetime) -> datetime:
    """When this DAG run started (its queue time, or now, when not recorded)."""
    started = getattr(dag_run, "start_date", None) or getattr(dag_run, "queued_at", None) or now
    return min(started.astimezone(UTC), now)


def history_cutoff(params: dict, dag_run, now: datetime) -> datetime:
    """Airflow history and task logs: older than `metadata_retention_days`, and never anything of
    this run (the cutoff is at most the run's start)."""
    try:
        days = prune.retention_days(params.get("metadata_retention_days", 30), "metadata_retention_days")
    except prune.InvalidRetention as exc:
        raise _fail_on_bad_params(exc) from exc
    return min(now - timedelta(days=days), run_start(dag_run, now))


@masked_errors
def prune_drill_database(params: dict) -> dict:
    """Task `prune_drill_database`: outbox, set-aside records, START_DRILL guards, lag history."""
    try:
        return prune.prune_drill_database(
            connections.db_engine(),
            now=_now(),
            outbox_retention_days=params.get("outbox_retention_days", 30),
            rejected_retention_days=params.get("rejected_retention_days", 30),
            dry_run=bool(params.get("dry_run", False)),
        )
    except prune.InvalidRetention as exc:
        raise _fail_on_bad_params(exc) from exc


@masked_errors
def keep_event_history(params: dict) -> dict:
    """Task `keep_event_history`: the coming months' partitions, the months past the retention."""
    from drill_progress.maintenance import history

    try:
        days = prune.retention_days(
            params.get("history_retention_days", history.DEFAULT_RETENTION_DAYS), "history_retention_days"
        )
    except prune.InvalidRetention as exc:
        raise _fail_on_bad_params(exc) from exc
    return history.keep_history(
        connections.db_engine(), now=_now(), retention_days=days, dry_run=bool(params.get("dry_run", False))
    )


def prune_airflow_metadata(params: dict, dag_run) -> dict:
    """Task `prune_airflow_metadata`: `airflow db clean` in a child process (skipped, saying why,
    when the metadata database cannot be reached from here)."""
    from airflow.sdk.exceptions import AirflowSkipException

    now = _now()
    cutoff = history_cutoff(params, dag_run, now)
    url, source = airflow_metadata.metadata_url()
    if url is None:
        raise AirflowSkipException(source)
    return airflow_metadata.prune_metadata(
        url,
        source,
        cutoff=cutoff,
        now=now,
        dry_run=bool(params.get("dry_run", False)),
        own_run_id=getattr(dag_run, "run_id", None),
    )


def prune_task_logs(params: dict, dag_run) -> dict:
    """Task `prune_task_logs`: log files under [logging] base_log_folder older than the retention."""
    now = _now()
    cutoff = history_cutoff(params, dag_run, now)
    result = task_logs.prune_logs(task_logs.base_log_folder(), cutoff, dry_run=bool(params.get("dry_run", False)))
    return result | {"cutoff": cutoff.isoformat()}


def summary(
    drill_database: dict | None, airflow_history: dict | None, logs: dict | None, event_history: dict | None = None
) -> dict:
    """Task `summary`: what the run deleted (or, dry, would delete), in one return value."""
    return {
        "drill_database": drill_database,
        "airflow_metadata": airflow_history,
        "task_logs": logs,
        "event_history": event_history,
    }


@masked_errors
def check_ingestion_lag() -> dict:
    """Task `check_ingestion_lag` of drill_progress_monitor: sample the lag, alert if sustained."""
    threshold, sustain = lag.settings()
    return lag.sample_lag(
        connections.db_engine(),
        connections.aws_client("kinesis"),
        connections.variable(config.DIALOG_EVENT_STREAM),
        now=_now(),
        threshold=threshold,
        sustain=sustain,
    )


def today_report_parameters(dag_run) -> dict:
    """Task `today_so_far` of drill_progress_monitor: the bound parameters of report/replace_day.sql
    for the current UTC day (the report of a day not over yet: its figures so far)."""
    from drill_progress.report import daily

    moment = getattr(dag_run, "run_after", None) or getattr(dag_run, "logical_date", None) or _now()
    return daily.ReportDay(moment.astimezone(UTC).date()).parameters()
