"""`trigger_reminders` end to end via dag.test() against real PostgreSQL and the moto server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from airflow_support import return_value
from airflow_support import run_state as _state
from reminder_seed import add_instance, outbox_rows, read_stream

from drill_progress.setup.aws_resources import ensure_stream

REF = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)  # a scheduled slot


def _summary(dag_run) -> dict:
    return return_value(dag_run, "send_reminders")


def test_dag_header(airflow_db):
    from airflow_support import load_dag

    dag = load_dag("trigger_reminders")
    assert dag.schedule == "*/5 14-23 * * *"
    # a cron *trigger* timetable in UTC: a scheduled run's logical date is its slot (14:00 … 23:55)
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.timetable.expression == "*/5 14-23 * * *" and str(dag.timetable.timezone) == "UTC"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert {k: dag.params[k] for k in ("floor_minutes", "ceil_minutes")} == {"floor_minutes": 240, "ceil_minutes": 1440}
    for name in ("floor_minutes", "ceil_minutes"):
        param = dag.params.get_param(name)
        assert param.schema["type"] == "integer" and param.schema.get("title") and param.description


def test_scheduled_run_publishes_each_reminder_once(run_dag, airflow_env, monkeypatch):
    db, aws = airflow_env["db"], airflow_env["aws"]
    monkeypatch.setenv("AIRFLOW_VAR_COMMAND_STREAM", "reminder-commands")
    ensure_stream(aws.kinesis, "reminder-commands")
    due = {
        add_instance(db.engine, started=REF - timedelta(hours=h), phone=f"+1555000{h:04d}"): f"+1555000{h:04d}"
        for h in (5, 12, 23)
    }
    soon = add_instance(db.engine, started=REF - timedelta(hours=3, minutes=59), phone="+15550009999")
    add_instance(db.engine, started=REF - timedelta(hours=24, minutes=1))
    add_instance(db.engine, started=REF - timedelta(hours=6), completed=REF - timedelta(hours=1))
    add_instance(db.engine, started=REF - timedelta(hours=6), valid=False)

    first = run_dag("trigger_reminders", logical_date=REF)
    assert _state(first) == "success"
    assert _summary(first) == {
        "reference_time": REF.isoformat(),
        "window_start_exclusive": (REF - timedelta(hours=24)).isoformat(),
        "window_end_inclusive": (REF - timedelta(hours=4)).isoformat(),
        "candidates": 3,
        "already_enqueued": 0,
        "enqueued": 3,
        "published": 3,
        "failed": 0,
    }

    # a re-run of the same DAG run: nothing new
    again = run_dag("trigger_reminders", logical_date=REF)
    assert _state(again) == "success"
    assert {k: _summary(again)[k] for k in ("candidates", "already_enqueued", "enqueued", "published")} == {
        "candidates": 3,
        "already_enqueued": 3,
        "enqueued": 0,
        "published": 0,
    }
    # the next slot: only the prompt that has now waited 4 h 04 min is new
    nxt = run_dag("trigger_reminders", logical_date=REF + timedelta(minutes=5))
    assert {k: _summary(nxt)[k] for k in ("candidates", "already_enqueued", "enqueued", "published")} == {
        "candidates": 4,
        "already_enqueued": 3,
        "enqueued": 1,
        "published": 1,
    }
    due[soon] = "+15550009999"

    records = read_stream(aws.kinesis, "reminder-commands")
    assert len(records) == 4
    for record in records:
        body = json.loads(record["Data"].decode("utf-8"))
        inst = body["payload"]["drill_instance_id"]
        assert body == {
            "type": "TRIGGER_REMINDER",
            "payload": {"phone_number": due[inst], "drill_instance_id": inst, "prompt_slug": "q1"},
            "idempotency_key": f"reminder:{inst}:q1",
        }
        assert record["PartitionKey"] == due[inst]
    assert {r[5] for r in outbox_rows(db.engine)} == {"reminders"}


def test_manual_run_without_logical_date_uses_trigger_time(run_dag, airflow_env):
    db, aws = airflow_env["db"], airflow_env["aws"]
    ensure_stream(aws.kinesis, "dialog-commands")
    now = datetime.now(UTC)
    inst = add_instance(db.engine, started=now - timedelta(hours=4, minutes=1))
    add_instance(db.engine, started=now - timedelta(hours=3, minutes=59))
    dag_run = run_dag("trigger_reminders", logical_date=None)
    assert _state(dag_run) == "success"
    summary = _summary(dag_run)
    assert abs(datetime.fromisoformat(summary["reference_time"]) - now) < timedelta(minutes=2)
    assert summary["published"] == 1
    records = read_stream(aws.kinesis, "dialog-commands")
    assert [json.loads(r["Data"])["payload"]["drill_instance_id"] for r in records] == [inst]


def test_params_change_the_window(run_dag, airflow_env):
    db, aws = airflow_env["db"], airflow_env["aws"]
    ensure_stream(aws.kinesis, "dialog-commands")
    inst = add_instance(db.engine, started=REF - timedelta(minutes=90))
    add_instance(db.engine, started=REF - timedelta(hours=5))
    dag_run = run_dag("trigger_reminders", conf={"floor_minutes": 60, "ceil_minutes": 120}, logical_date=REF)
    assert _state(dag_run) == "success"
    assert [r[0] for r in outbox_rows(db.engine)] == [f"reminder:{inst}:q1"]


def test_floor_not_below_ceil_fails_without_retrying(run_dag, airflow_env):
    db = airflow_env["db"]
    add_instance(db.engine, started=REF - timedelta(hours=5))
    dag_run = run_dag("trigger_reminders", conf={"floor_minutes": 1440, "ceil_minutes": 240}, logical_date=REF)
    assert _state(dag_run) == "failed"
    (ti,) = dag_run.get_task_instances()
    assert _state(ti) == "failed" and ti.try_number == 1
    assert outbox_rows(db.engine) == []


def test_missing_command_stream_fails_the_run_and_keeps_reminders_pending(run_dag, airflow_env, monkeypatch):
    """With retries off (the emulator has no stream), the run fails; the reminder stays pending
    and the next run, once the stream exists, sends it exactly once."""
    db, aws = airflow_env["db"], airflow_env["aws"]
    inst = add_instance(db.engine, started=REF - timedelta(hours=5))
    from drill_progress import dag_defaults

    monkeypatch.setitem(dag_defaults.DEFAULT_ARGS, "retries", 0)
    failed = run_dag("trigger_reminders", logical_date=REF)
    assert _state(failed) == "failed"
    assert [(r[0], r[4]) for r in outbox_rows(db.engine)] == [(f"reminder:{inst}:q1", None)]

    ensure_stream(aws.kinesis, "dialog-commands")
    assert _state(run_dag("trigger_reminders", logical_date=REF + timedelta(minutes=5))) == "success"
    assert _state(run_dag("trigger_reminders", logical_date=REF + timedelta(minutes=10))) == "success"
    records = read_stream(aws.kinesis, "dialog-commands")
    assert [json.loads(r["Data"])["idempotency_key"] for r in records] == [f"reminder:{inst}:q1"]


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"floor_minutes": -5}, "floor_minutes: -5 is less than the minimum of 0"),
        ({"ceil_minutes": "soon"}, "ceil_minutes: 'soon' is not of type 'integer'"),
    ],
)
def test_params_are_validated(run_dag, conf, message):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=message):
        run_dag("trigger_reminders", conf=conf, logical_date=REF)
