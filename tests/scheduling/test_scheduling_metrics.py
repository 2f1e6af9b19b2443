"""`schedule_next_drills` sends each run's figures through Airflow's metrics (StatsD, a real UDP
listener on loopback): planned, sent, the drops, missing and the pacing error, as its
`check_sends` report has them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow_support import return_value
from airflow_support import run_state as _state
from scheduling_support import add_user

from drill_progress import metrics

TABLE, STREAM = "drill-trigger-schedule", "dialog-commands"
PREFIX = "airflow.drill_progress.scheduling."
NAMES = ("planned", "sent", "late_dropped", "active_again", "stale", "missing", "pacing_error_max_ms")


def test_a_run_sends_its_check_sends_figures_as_gauges(run_dag, resources, statsd_metrics):
    db = resources["db"]
    with db.engine.begin() as conn:
        add_user(conn, phone="+15559999999", last_interacted=datetime.now(UTC))  # active: not due
        for i in range(4):
            add_user(conn, phone=f"+1555888{i:04d}")
    logical = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    dag_run = run_dag("schedule_next_drills", conf={"spread_minutes": 0}, logical_date=logical)
    assert _state(dag_run) == "success"
    report = return_value(dag_run, "check_sends")
    statsd_metrics.settle()
    gauges = statsd_metrics.gauges(PREFIX)
    assert gauges == {
        f"{PREFIX}planned": report["recorded"],
        f"{PREFIX}sent": report["sent"],
        f"{PREFIX}late_dropped": report["late_dropped"],
        f"{PREFIX}active_again": report["active_again"],
        f"{PREFIX}stale": report["stale"],
        f"{PREFIX}missing": report["missing"],
        f"{PREFIX}pacing_error_max_ms": round(report["max_lateness_s"] * 1000, 3),
    }
    assert (report["recorded"], report["sent"], report["missing"]) == (4, 4, 0)
    assert 600 <= report["max_lateness_s"] < 900  # planned at the logical date, sent ten minutes on
    assert report["published"] == 4
    assert statsd_metrics.counters("airflow.drill_progress.outbox.") == {
        "airflow.drill_progress.outbox.published.schedule_next_drills": report["published"]
    }


def test_each_figure_of_the_report_has_its_gauge(statsd_metrics):
    report = {"recorded": 100, "sent": 80, "late_dropped": 7, "active_again": 5, "stale": 3, "missing": 5,
              "max_lateness_s": 1.2345}  # fmt: skip
    metrics.scheduling_run(report)
    statsd_metrics.settle()
    assert statsd_metrics.gauges(PREFIX) == {
        f"{PREFIX}planned": 100,
        f"{PREFIX}sent": 80,
        f"{PREFIX}late_dropped": 7,
        f"{PREFIX}active_again": 5,
        f"{PREFIX}stale": 3,
        f"{PREFIX}missing": 5,
        f"{PREFIX}pacing_error_max_ms": 1234.5,
    }
    assert sorted(g[len(PREFIX) :] for g in statsd_metrics.gauges(PREFIX)) == sorted(NAMES)
