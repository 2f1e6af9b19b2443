"""Daily report: figures on a hand-built dataset, idempotent re-runs and backfills, the day
resolution rules, and the DAG end to end with dag.test() against real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import report_dataset as dataset
import sqlalchemy.exc
from airflow_support import run_state as _state

from drill_progress.report import daily as report


def _figures(engine, day):
    return dataset.as_expected(report.day_rows(engine, day))


def _stored(engine):
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT report_date, employer_id, drill_slug, users_enrolled, started_day, started_cumulative, "
            "completed_day, completed_cumulative, completion_rate, median_completion_seconds, inactive_7d, "
            "stalled_7d FROM drill_progress_daily ORDER BY 1, 2, 3"
        ).all()


DAY = dataset.DAY


@pytest.fixture
def data_db(drill_db):
    dataset.load(drill_db.engine)
    return drill_db


# ---------------------------------------------------------------------------- pure: the day


def test_data_interval_of_one_utc_day_is_the_report_day():
    start = datetime(2026, 3, 10, tzinfo=UTC)
    day = report.resolve_day(None, start, start + timedelta(days=1))
    assert day.report_date == date(2026, 3, 10)
    assert (day.start, day.end) == (start, start + timedelta(days=1))
    assert day.parameters()["inactive_days"] == 7


def test_report_date_param_wins_over_the_interval():
    start = datetime(2026, 3, 10, tzinfo=UTC)
    assert report.resolve_day("2026-02-01", start, start + timedelta(days=1)).report_date == date(2026, 2, 1)


def test_manual_run_without_interval_reports_the_last_complete_day():
    assert report.resolve_day(None, None, None, datetime(2026, 3, 11, 7, 30, tzinfo=UTC)).report_date == DAY


def test_intervals_that_are_not_one_utc_day_are_refused():
    start = datetime(2026, 3, 10, 2, tzinfo=UTC)
    with pytest.raises(report.ReportDayError, match="not one whole UTC day"):
        report.resolve_day(None, start, start + timedelta(days=1))
    with pytest.raises(report.ReportDayError, match="not one whole UTC day"):
        report.resolve_day(None, start.replace(hour=0), start.replace(hour=0))  # CronTriggerTimetable's empty interval
    with pytest.raises(report.ReportDayError, match="YYYY-MM-DD"):
        report.resolve_day("10/03/2026")
    with pytest.raises(report.ReportDayError, match="naive"):
        report.resolve_day(None, datetime(2026, 3, 10), datetime(2026, 3, 11))
    with pytest.raises(report.ReportDayError):
        report.resolve_day()


# ---------------------------------------------------------------------------- figures


def test_figures_of_the_hand_built_day(data_db):
    summary = report.build_day(data_db.engine, report.ReportDay(DAY))
    assert summary == {"report_date": "2026-03-10", "rows_replaced": 0, "rows_written": 9}
    assert _figures(data_db.engine, DAY) == dataset.EXPECTED_DAY


def test_figures_of_the_next_day(data_db):
    report.build_day(data_db.engine, report.ReportDay(dataset.NEXT_DAY))
    assert _figures(data_db.engine, dataset.NEXT_DAY) == dataset.EXPECTED_NEXT_DAY


def test_a_day_before_anyone_was_known_has_no_rows(data_db):
    report.build_day(data_db.engine, report.ReportDay(date(2026, 2, 27)))
    assert report.day_rows(data_db.engine, date(2026, 2, 27)) == []


def test_rerun_is_idempotent(data_db):
    day = report.ReportDay(DAY)
    report.build_day(data_db.engine, day)
    first = _stored(data_db.engine)
    again = report.build_day(data_db.engine, day)
    assert again["rows_replaced"] == 9 and again["rows_written"] == 9
    assert _stored(data_db.engine) == first


def test_backfill_of_a_past_day_equals_the_original_run(data_db):
    engine = data_db.engine
    report.build_day(engine, report.ReportDay(DAY))
    original = _stored(engine)
    report.build_day(engine, report.ReportDay(dataset.NEXT_DAY))
    next_day = [r for r in _stored(engine) if r.report_date == dataset.NEXT_DAY]
    # Drills started and completed after both days must not move their figures: every bound is the
    # day's, nothing is relative to now().
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE drill_statuses SET started_time = '2026-03-20T10:00Z', completed_time = '2026-03-21T10:00Z' "
            "WHERE user_id = %(u)s AND drill_slug = '03-sample-drill'",
            {"u": dataset.user_id("A")},
        )
    report.build_day(engine, report.ReportDay(DAY))  # the backfill
    assert [r for r in _stored(engine) if r.report_date == DAY] == original
    assert [r for r in _stored(engine) if r.report_date == dataset.NEXT_DAY] == next_day


def test_backfill_reflects_current_state_of_last_interaction(data_db):
    """Documented limitation: the aggregate keeps only the latest last_interacted_time, so a user
    who came back after the day no longer counts as inactive when that day is backfilled."""
    engine = data_db.engine
    report.build_day(engine, report.ReportDay(DAY))
    assert _figures(engine, DAY)[("unknown", "02-sample-drill")][-2] == 1  # F inactive
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE users SET last_interacted_time = '2026-03-21T10:00Z' WHERE user_id = %(u)s",
            {"u": dataset.user_id("F")},
        )
    report.build_day(engine, report.ReportDay(DAY))
    assert _figures(engine, DAY)[("unknown", "02-sample-drill")][-2] == 0


def test_a_failed_run_leaves_the_previous_figures_of_its_day(data_db, monkeypatch):
    report.build_day(data_db.engine, report.ReportDay(DAY))
    before = _stored(data_db.engine)
    statements = report.replace_day_statements()
    failing = [s if not s.startswith("INSERT") else "SELECT 1 / 0" for s in statements]
    assert failing != statements
    monkeypatch.setattr(report, "replace_day_statements", lambda: failing)
    with pytest.raises(sqlalchemy.exc.DataError):
        report.build_day(data_db.engine, report.ReportDay(DAY))
    assert _stored(data_db.engine) == before  # the DELETE was rolled back with the failed INSERT


# ---------------------------------------------------------------------------- the DAG


def test_dag_has_a_one_day_data_interval_timetable(airflow_db):
    from airflow.sdk import CronDataIntervalTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow_support import load_dag

    dag = load_dag("drill_progress_report")
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.catchup is False and dag.max_active_runs == 1
    interval = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(
        run_after=datetime(2026, 3, 11, 0, 0, tzinfo=UTC)
    )
    assert (interval.start, interval.end) == (datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC))
    # the day the scheduler/backfill would give the run is exactly what the task reports
    assert report.resolve_day(None, interval.start, interval.end).report_date == DAY


def test_dag_end_to_end(run_dag, airflow_env):
    engine = airflow_env["db"].engine
    dataset.load(engine)
    first = run_dag("drill_progress_report", logical_date=datetime(2026, 3, 11, tzinfo=UTC))
    assert _state(first) == "success"
    assert _figures(engine, DAY) == dataset.EXPECTED_DAY  # the interval [03-10, 03-11)

    second = run_dag(
        "drill_progress_report", conf={"report_date": "2026-03-11"}, logical_date=datetime(2026, 3, 12, 5, tzinfo=UTC)
    )
    assert _state(second) == "success"
    assert _figures(engine, dataset.NEXT_DAY) == dataset.EXPECTED_NEXT_DAY
    assert _figures(engine, DAY) == dataset.EXPECTED_DAY
