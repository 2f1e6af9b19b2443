"""drill_progress_maintenance end to end with dag.test() against real PostgreSQL, the moto server and
a real Airflow metadata database: the promises after pruning everything (retention 0), the dry
run, Airflow's own history (never this run, never an unfinished run), and task log files."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airflow_support import return_value, run_state
from maintenance_support import T0, commands, put, rows, validated_then_started

from drill_progress.setup.aws_resources import ensure_stream

EVERYTHING = {"outbox_retention_days": 0, "rejected_retention_days": 0, "metadata_retention_days": 0}
PHONE = "+15557770001"


def _metadata(sql: str, params: dict | None = None) -> list[tuple]:
    """Read Airflow's metadata database (this test session's) directly."""
    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        return [tuple(r) for r in session.execute(text(sql), params or {}).all()]


def _ingest_and_remind(run_dag, aws) -> None:
    put(aws.kinesis, "dialog-events", validated_then_started(PHONE), PHONE)
    put(aws.kinesis, "dialog-events", [b"not json at all " + PHONE.encode()], PHONE)  # set aside
    assert run_state(run_dag("dialog_event_ingest")) == "success"
    assert run_state(run_dag("trigger_reminders", logical_date=T0 + timedelta(hours=5))) == "success"


def test_promises_hold_after_everything_prunable_is_gone(run_dag, airflow_env):
    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, "dialog-events", 1)
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    _ingest_and_remind(run_dag, aws)
    sent = commands(aws.kinesis)
    assert sorted(c["type"] for c in sent) == ["START_DRILL", "TRIGGER_REMINDER"]
    assert rows(db.engine, "SELECT count(*) FROM rejected_records") == [(1,)]

    dry = run_dag("drill_progress_maintenance", {**EVERYTHING, "dry_run": True})
    assert run_state(dry) == "success"
    counted = return_value(dry, "prune_drill_database")["tables"]
    assert (counted["command_outbox"]["rows"], counted["rejected_records"]["rows"]) == (2, 1)
    assert rows(db.engine, "SELECT count(*) FROM command_outbox") == [(2,)]  # a dry run deletes nothing
    assert rows(db.engine, "SELECT count(*) FROM rejected_records") == [(1,)]

    pruned = run_dag("drill_progress_maintenance", EVERYTHING)
    assert run_state(pruned) == "success"
    tables = return_value(pruned, "summary")["drill_database"]["tables"]
    assert (tables["command_outbox"]["rows"], tables["rejected_records"]["rows"]) == (2, 1)
    assert rows(db.engine, "SELECT count(*) FROM command_outbox") == [(0,)]
    assert rows(db.engine, "SELECT count(*) FROM rejected_records") == [(0,)]

    # the same reminder slot, a later one, and the stream's records delivered once more
    assert run_state(run_dag("trigger_reminders", logical_date=T0 + timedelta(hours=5))) == "success"
    again = run_dag("trigger_reminders", logical_date=T0 + timedelta(hours=5, minutes=5))
    assert return_value(again, "send_reminders")["enqueued"] == 0
    put(aws.kinesis, "dialog-events", validated_then_started(PHONE), PHONE)
    assert run_state(run_dag("dialog_event_ingest")) == "success"

    assert commands(aws.kinesis) == sent  # nothing was sent a second time
    assert rows(db.engine, "SELECT count(*) FROM command_outbox") == [(0,)]


def test_airflow_history_is_pruned_but_never_this_run_nor_an_unfinished_one(run_dag, airflow_env):
    # distinct logical dates: dag.test() replaces a run of the same DAG and logical date (and starts
    # a run "at" its logical date)
    start = datetime.now(UTC)
    old, recent, unfinished = (
        run_dag("drill_progress_setup", {"create_aws_resources": False}, logical_date=start - timedelta(hours=n))
        for n in (3, 2, 1)
    )
    now = datetime.now(UTC)
    _backdate(old, now - timedelta(days=50))
    _backdate(unfinished, now - timedelta(days=40))  # a cleared old run, running again
    _metadata_write("UPDATE dag_run SET state = 'running' WHERE run_id = :r", r=unfinished.run_id)

    counted = run_dag("drill_progress_maintenance", {"metadata_retention_days": 30, "dry_run": True})
    assert run_state(counted) == "success"
    dry = return_value(counted, "prune_airflow_metadata")
    assert dry["dry_run"] is True and dry["rows"]["dag_run"] >= 1 and dry["rows"]["task_instance"] >= 1
    assert _runs(old, recent, unfinished) == {old.run_id, recent.run_id, unfinished.run_id}

    month = run_dag("drill_progress_maintenance", {"metadata_retention_days": 30})
    assert run_state(month) == "success"
    result = return_value(month, "prune_airflow_metadata")
    assert result["rows"]["dag_run"] >= 1 and result["rows"]["task_instance"] >= 1
    assert _runs(old, recent, unfinished) == {recent.run_id, unfinished.run_id}
    # the unfinished run held the cutoff back to its start: it keeps its task instances
    assert [(h["dag_id"], h["run_id"]) for h in result["held_back_by"]] == [("drill_progress_setup", unfinished.run_id)]
    assert result["cutoff"] == (now - timedelta(days=40, seconds=1)).isoformat() < result["wanted_cutoff"]
    assert _metadata("SELECT count(*) FROM task_instance WHERE run_id = :r", {"r": unfinished.run_id}) != [(0,)]

    _metadata_write("UPDATE dag_run SET state = 'success' WHERE run_id = :r", r=unfinished.run_id)
    everything = run_dag("drill_progress_maintenance", {"metadata_retention_days": 0})
    assert run_state(everything) == "success"
    assert _runs(old, recent, unfinished) == set()
    assert _metadata(
        "SELECT count(*) FROM dag_run WHERE run_id IN (:a, :b)", {"a": month.run_id, "b": counted.run_id}
    ) == [(0,)]
    # this run, its task instances and its XComs are all there (its summary was read from them)
    mine = _metadata(
        "SELECT count(*) FROM task_instance WHERE dag_id = 'drill_progress_maintenance' AND run_id = :r",
        {"r": everything.run_id},
    )
    assert mine == [(5,)]  # its five tasks
    cleaned = return_value(everything, "summary")["airflow_metadata"]
    assert cleaned["rows"]["dag_run"] >= 2 and cleaned["held_back_by"] == []
    assert datetime.fromisoformat(cleaned["cutoff"]) <= everything.start_date


def _backdate(run, moment: datetime) -> None:
    for table in ("dag_run", "task_instance"):
        _metadata_write(
            f"UPDATE {table} SET start_date = :t WHERE run_id = :r AND dag_id = :d",
            t=moment,
            r=run.run_id,
            d=run.dag_id,
        )


def _metadata_write(sql: str, **params) -> None:
    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        session.execute(text(sql), params)


def _runs(*runs) -> set[str]:
    ids = [r.run_id for r in runs]
    found = _metadata("SELECT run_id FROM dag_run WHERE dag_id = 'drill_progress_setup'")
    return {r[0] for r in found} & set(ids)


def test_task_logs_older_than_the_retention_are_deleted(run_dag, airflow_env):
    from airflow.configuration import conf

    folder = Path(conf.get("logging", "base_log_folder"))
    old_run = folder / "dag_id=old_dag" / "run_id=manual__2026-01-01" / "task_id=t"
    new_run = folder / "dag_id=old_dag" / "run_id=manual__2026-11-01" / "task_id=t"
    for directory in (old_run, new_run):
        directory.mkdir(parents=True, exist_ok=True)
    (old_run / "attempt=1.log").write_text("x" * 1000)
    (old_run / "attempt=2.log").write_text("y" * 500)
    (new_run / "attempt=1.log").write_text("z" * 10)
    month_ago = time.time() - 31 * 86400
    for path in old_run.iterdir():
        os.utime(path, (month_ago, month_ago))

    dry = return_value(run_dag("drill_progress_maintenance", {"dry_run": True}), "prune_task_logs")
    assert (dry["files"], dry["bytes"]) == (2, 1500) and (old_run / "attempt=1.log").exists()
    done = return_value(run_dag("drill_progress_maintenance"), "prune_task_logs")
    assert (done["files"], done["bytes"], done["directories"]) == (2, 1500, 2)
    assert not old_run.parent.exists() and (new_run / "attempt=1.log").exists()


@pytest.mark.parametrize("param", ["outbox_retention_days", "rejected_retention_days", "metadata_retention_days"])
def test_negative_retention_is_refused_before_anything_runs(run_dag, airflow_env, param):
    with pytest.raises(Exception, match="minimum|must be"):
        run_state(run_dag("drill_progress_maintenance", {param: -1}))
