"""drill_progress_maintenance sends what it pruned through Airflow's metrics (StatsD, a real UDP
listener on loopback): per table, the rows its own result says it deleted; a dry run sends nothing."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from airflow_support import return_value, run_state
from maintenance_support import T0, put, validated_then_started

from drill_progress.setup.aws_resources import ensure_stream

EVERYTHING = {"outbox_retention_days": 0, "rejected_retention_days": 0, "metadata_retention_days": 0}
PHONE = "+15557770002"
PREFIX = "airflow.drill_progress.maintenance."


def _old_log_files() -> int:
    from airflow.configuration import conf

    folder = Path(conf.get("logging", "base_log_folder")) / "dag_id=metrics_old_dag" / "run_id=manual__1" / "task_id=t"
    folder.mkdir(parents=True, exist_ok=True)
    month_ago = time.time() - 31 * 86400
    for n in (1, 2, 3):
        path = folder / f"attempt={n}.log"
        path.write_text("x" * 10)
        os.utime(path, (month_ago, month_ago))
    return 3


def test_rows_pruned_per_table_arrive_as_counters(run_dag, airflow_env, statsd_metrics):
    aws = airflow_env["aws"]
    ensure_stream(aws.kinesis, "dialog-events", 1)
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    put(aws.kinesis, "dialog-events", validated_then_started(PHONE), PHONE)
    put(aws.kinesis, "dialog-events", [b"not json at all"], PHONE)  # set aside
    assert run_state(run_dag("dialog_event_ingest")) == "success"
    assert run_state(run_dag("trigger_reminders", logical_date=T0 + timedelta(hours=5))) == "success"
    _old_log_files()

    statsd_metrics.clear()
    dry = run_dag("drill_progress_maintenance", {**EVERYTHING, "dry_run": True})
    assert run_state(dry) == "success"
    assert return_value(dry, "prune_drill_database")["tables"]["command_outbox"]["rows"] == 2
    statsd_metrics.settle()
    assert statsd_metrics.counters(PREFIX) == {}  # a dry run deletes nothing, counts nothing

    pruned = run_dag("drill_progress_maintenance", EVERYTHING)
    assert run_state(pruned) == "success"
    summary = return_value(pruned, "summary")
    statsd_metrics.settle()
    counters = statsd_metrics.counters(PREFIX)
    tables = summary["drill_database"]["tables"]
    assert {k: v for k, v in counters.items() if k.startswith(f"{PREFIX}rows_pruned.")} == {
        f"{PREFIX}rows_pruned.{table}": figures["rows"] for table, figures in tables.items() if figures["rows"]
    }
    assert (counters[f"{PREFIX}rows_pruned.command_outbox"], counters[f"{PREFIX}rows_pruned.rejected_records"]) == (
        2,
        1,
    )
    airflow_rows = summary["airflow_metadata"]["rows"]
    assert {k: v for k, v in counters.items() if k.startswith(f"{PREFIX}airflow_rows_pruned.")} == {
        f"{PREFIX}airflow_rows_pruned.{table}": rows for table, rows in airflow_rows.items() if rows
    }
    assert airflow_rows["dag_run"] >= 1  # runs of this test (airflow db clean keeps some, e.g. the latest)
    assert counters[f"{PREFIX}log_files_pruned"] == summary["task_logs"]["files"] >= 3


def test_event_history_months_dropped_arrive_as_a_counter(drill_db, statsd_metrics):
    from datetime import UTC, datetime

    from drill_progress.maintenance import history

    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql("SELECT event_history_ensure_partitions('2025-01-15', 2)")  # Jan and Feb 2025
    now = datetime(2026, 3, 20, tzinfo=UTC)  # 400 days before: inside February, so January goes
    dry = history.keep_history(drill_db.engine, now=now, retention_days=400, dry_run=True)
    statsd_metrics.settle()
    assert len(dry["dropped"]) == 1 and statsd_metrics.counters(PREFIX) == {}
    done = history.keep_history(drill_db.engine, now=now, retention_days=400, dry_run=False)
    statsd_metrics.settle()
    assert len(done["dropped"]) == 1
    assert statsd_metrics.counters(PREFIX) == {f"{PREFIX}history_partitions_dropped": len(done["dropped"])}
