"""Daily progress report: one row per (report day, employer, drill) in `drill_progress_daily`.

A report day is a whole UTC calendar day [day_start, day_end). Every figure is computed in SQL
(include/sql/report/replace_day.sql) from the aggregate's own timestamps relative to those
bounds, never from "now", and the day is replaced (DELETE + INSERT) in one transaction. So a
re-run or a backfill of any past day gives the same rows as the original run, as long as the
aggregate rows themselves did not change meanwhile.

The aggregate keeps only current state: e.g. USER_VALIDATED clears a user's started_time and
completed_time, OPTED_OUT clears started_time, and last_interacted_time only moves forward. A
backfill therefore reports past days as the *current* timestamps place them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from drill_progress.db import load_sql, run

log = logging.getLogger(__name__)

INACTIVE_DAYS = 7
ONE_DAY = timedelta(days=1)

FIGURES = (
    "users_enrolled",
    "started_day",
    "started_cumulative",
    "completed_day",
    "completed_cumulative",
    "completion_rate",
    "median_completion_seconds",
    "inactive_7d",
    "stalled_7d",
)


class ReportDayError(ValueError):
    """The run's data interval (or the report_date param) does not name one whole UTC day."""


@dataclass(frozen=True)
class ReportDay:
    report_date: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.report_date, time(0), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + ONE_DAY

    def parameters(self) -> dict[str, Any]:
        """The bound parameters of report/replace_day.sql (JSON-able: they travel by XCom)."""
        return {
            "report_date": self.report_date.isoformat(),
            "day_start": self.start.isoformat(),
            "day_end": self.end.isoformat(),
            "inactive_days": INACTIVE_DAYS,
        }


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ReportDayError(f"naive datetime {value!r}: the report needs time-zone-aware bounds")
    return value.astimezone(UTC)


def resolve_day(
    report_date: str | date | None = None,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    run_after: datetime | None = None,
) -> ReportDay:
    """The day a run reports on, in this order of precedence:

    1. the `report_date` param (YYYY-MM-DD), when given;
    2. the run's data interval, which must be exactly one UTC day [00:00, next 00:00);
    3. (a manual run without a logical date has no interval) the last complete UTC day
       before `run_after` — what Airflow itself infers for manual runs of a daily timetable.
    """
    if report_date:
        if isinstance(report_date, date):
            return ReportDay(report_date)
        try:
            return ReportDay(date.fromisoformat(str(report_date).strip()))
        except ValueError as exc:
            raise ReportDayError(f"report_date must be YYYY-MM-DD, got {report_date!r}") from exc
    if data_interval_start is not None and data_interval_end is not None:
        start, end = _as_utc(data_interval_start), _as_utc(data_interval_end)
        if end - start != ONE_DAY or start.time() != time(0):
            raise ReportDayError(
                f"data interval {start.isoformat()} .. {end.isoformat()} is not one whole UTC day; "
                "the DAG's timetable must be CronDataIntervalTimetable('0 0 * * *', 'UTC')"
            )
        return ReportDay(start.date())
    if run_after is not None:
        return ReportDay(_as_utc(run_after).date() - ONE_DAY)
    raise ReportDayError("no report_date, no data interval and no run_after: nothing says which day")


REPLACE_DAY_SQL = "report/replace_day.sql"


def replace_day_statements() -> list[str]:
    """report/replace_day.sql split into statements exactly as the DAG's SQLExecuteQueryOperator
    splits it (the common-sql provider's own splitter)."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    return DbApiHook.split_sql_string(load_sql(REPLACE_DAY_SQL))


def build_day(engine: Engine, day: ReportDay) -> dict[str, Any]:
    """Replace one report day in one transaction, running the DAG's own SQL (tests, benchmarks)."""
    params = day.parameters()
    with engine.begin() as conn:
        for statement in replace_day_statements():
            result = conn.exec_driver_sql(statement, params)
        report_date, rows_replaced, rows_written = result.one()
    log.info("report day %s: replaced %d rows with %d (employer x drill)", report_date, rows_replaced, rows_written)
    return {"report_date": report_date, "rows_replaced": rows_replaced, "rows_written": rows_written}


def day_rows(engine: Engine, report_date: date) -> list[dict[str, Any]]:
    """The stored figures of one day, ordered by employer and drill (without computed_at)."""
    with engine.connect() as conn:
        return [dict(row) for row in run(conn, "report/day_rows.sql", {"report_date": report_date}).mappings()]
