"""Airflow glue of `drill_progress_report` (called from the task body only). The report's SQL itself
runs in the DAG's SQLExecuteQueryOperator (include/sql/report/replace_day.sql)."""

from __future__ import annotations

from drill_progress.report import daily


def report_day(params: dict, data_interval_start, data_interval_end, run_after) -> dict:
    """Task `report_day`: which UTC day the run reports, as the bound parameters of replace_day.sql."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        day = daily.resolve_day(params.get("report_date"), data_interval_start, data_interval_end, run_after)
    except daily.ReportDayError as exc:
        raise AirflowFailException(str(exc)) from exc  # no retries: the params or the timetable are wrong
    return day.parameters()
