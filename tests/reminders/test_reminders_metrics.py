"""`trigger_reminders` sends its metrics through Airflow's metrics (StatsD, a real UDP listener on
loopback): in-process with dag.test(), and in an `airflow dags test` child process that only gets
the `AIRFLOW__METRICS__*` settings (nothing in the test turns the facade on for it)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow_support import ROOT, return_value
from airflow_support import run_state as _state
from reminder_seed import add_instance, outbox_rows
from statsd_support import StatsdListener, statsd_settings

from drill_progress.setup.aws_resources import ensure_stream

REF = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
ENQUEUED = "airflow.drill_progress.reminders.enqueued"
PUBLISHED = "airflow.drill_progress.outbox.published.reminders"


def test_reminders_enqueued_and_published_arrive_as_counters(run_dag, airflow_env, statsd_metrics):
    db, aws = airflow_env["db"], airflow_env["aws"]
    ensure_stream(aws.kinesis, "dialog-commands")
    for hours in (5, 12, 23):
        add_instance(db.engine, started=REF - timedelta(hours=hours))
    add_instance(db.engine, started=REF - timedelta(hours=3))  # not due yet

    first = run_dag("trigger_reminders", logical_date=REF)
    assert _state(first) == "success"
    summary = return_value(first, "send_reminders")
    statsd_metrics.settle()
    assert statsd_metrics.counters("airflow.drill_progress.") == {
        ENQUEUED: summary["enqueued"],
        PUBLISHED: summary["published"],
    }
    assert summary["enqueued"] == summary["published"] == len(outbox_rows(db.engine)) == 3

    statsd_metrics.clear()  # a re-run adds nothing: nothing is counted
    assert _state(run_dag("trigger_reminders", logical_date=REF)) == "success"
    statsd_metrics.settle()
    assert statsd_metrics.counters("airflow.drill_progress.") == {}


def test_the_metrics_settings_alone_turn_them_on_in_an_airflow_process(airflow_env):
    db, aws = airflow_env["db"], airflow_env["aws"]
    ensure_stream(aws.kinesis, "dialog-commands")
    add_instance(db.engine, started=REF - timedelta(hours=5))
    add_instance(db.engine, started=REF - timedelta(hours=6))
    listener = StatsdListener()
    try:
        env = {**os.environ, **statsd_settings(listener, prefix="drill"), "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}"}
        airflow = str(Path(sys.executable).parent / "airflow")
        done = subprocess.run(
            [airflow, "dags", "test", "trigger_reminders", REF.isoformat()],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        listener.settle()
        counters = listener.counters("drill.drill_progress.")
    finally:
        listener.close()
    assert counters == {
        "drill.drill_progress.reminders.enqueued": 2,
        "drill.drill_progress.outbox.published.reminders": 2,
    }
    assert len(outbox_rows(db.engine)) == 2
