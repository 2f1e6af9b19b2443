"""`schedule_next_drills` end to end through dag.test() against real PostgreSQL and the moto server."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from airflow_support import return_value
from airflow_support import run_state as _state
from scheduling_support import add_user, arrivals, planned_sends, read_stream, scan_table

from drill_progress.scheduling.planning import Window

DAG_ID = "schedule_next_drills"
TABLE, STREAM = "drill-trigger-schedule", "dialog-commands"  # the contract's default names
D2 = "02-sample-drill"


def _dag():
    from airflow_support import load_dag

    return load_dag(DAG_ID)


def _slot_results(dag_run) -> list[dict]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, key="return_value", dag_ids=DAG_ID, task_ids="send_slot")
        ).all()
        return [XComModel.deserialize_value(row) for row in rows]


def _xcom(dag_run, task_id: str, key: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, key=key, dag_ids=DAG_ID, task_ids=task_id)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def _task_states(dag_run) -> Counter:
    return Counter((ti.task_id, _state(ti)) for ti in dag_run.get_task_instances())


def _due_users(db, n: int) -> dict[str, str]:
    phones = {}
    with db.engine.begin() as conn:
        add_user(conn, phone="+15559999999", last_interacted=datetime.now(UTC))  # active: not due
        add_user(conn, phone="+15559999998", states=("completed",) * 3)  # nothing left to do
        for i in range(n):
            phones[add_user(conn, phone=f"+1555123{i:04d}")] = f"+1555123{i:04d}"
    return phones


def test_dag_params_and_schedule(airflow_db):
    dag = _dag()
    assert dag.timetable.expression == "5 17 * * *" and str(dag.timetable.timezone) in {"UTC", "Timezone('UTC')"}
    assert dag.catchup is False and dag.max_active_runs == 1
    names = ("spread_minutes", "inactivity_minutes", "max_send_delay_minutes")
    specs = {name: dag.params.get_param(name) for name in names}
    assert {name: p.value for name, p in specs.items()} == {
        "spread_minutes": 180,
        "inactivity_minutes": 720,
        "max_send_delay_minutes": 60,
    }
    for param in specs.values():
        assert param.schema["type"] == "integer" and param.schema["title"] and param.description
    assert dag.task_dict["check_sends"].trigger_rule == "all_done"
    assert {t.task_id for t in dag.task_dict["check_sends"].upstream_list} == {"send_slot"}


def test_a_backfill_of_an_old_day_plans_for_that_day_and_sends_nothing_late(resources):
    """`airflow dags test schedule_next_drills <date>` / a backfill: the reference time is the logical
    date, two days ago, so every send is far past the late guard: counted, not sent."""
    db, aws = resources["db"], resources["aws"]
    _due_users(db, 3)
    day = (datetime.now(UTC) - timedelta(days=2)).replace(hour=17, minute=5, second=0, microsecond=0)
    dag_run = _dag().test(logical_date=day)
    assert _state(dag_run) == "success"
    summary = _xcom(dag_run, "plan", "summary")
    assert summary["reference_time"] == day.isoformat()
    assert (summary["due_users"], summary["late_dropped"], summary["recorded"], summary["slots"]) == (3, 3, 0, 0)
    assert scan_table(aws.dynamodb, TABLE) == [] and read_stream(aws.kinesis, STREAM) == []
    report = return_value(dag_run, "check_sends")
    assert report["missing"] == 0 and report["alert"] is False and report["late_dropped_at_plan"] == 3


def test_the_logical_date_is_the_reference_time_and_a_manual_run_without_one_uses_its_trigger_time(resources):
    db, aws = resources["db"], resources["aws"]
    phones = _due_users(db, 3)
    # both runs in the past and on the same UTC day ("never twice" is per day), whenever this runs
    triggered = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    logical = max(triggered - timedelta(minutes=20), triggered.replace(hour=0, minute=0, second=0))
    dag_run = _dag().test(logical_date=logical, run_conf={"spread_minutes": 0})  # run_after: now
    assert _state(dag_run) == "success"
    items = scan_table(aws.dynamodb, TABLE)
    assert {s.planned for s in planned_sends(aws.dynamodb, TABLE).values()} == {logical.timestamp()}  # the past
    assert {i["pk"] for i in items} == {Window.for_run(logical, 0).slot_pk(0)}
    assert sorted(r["partition_key"] for r in read_stream(aws.kinesis, STREAM)) == sorted(phones.values())
    [result] = _slot_results(dag_run)
    assert result["late_dropped"] == 0 and result["published"] == 3 and result["deferred"] is False

    # a manual trigger without a logical date (the UI's default in Airflow 3): its trigger time
    with db.engine.begin() as conn:
        phones[add_user(conn, phone="+15551239999")] = "+15551239999"
    manual = _dag().test(logical_date=None, run_after=triggered, run_conf={"spread_minutes": 0})
    assert _state(manual) == "success"
    assert _xcom(manual, "plan", "summary")["reference_time"] == triggered.isoformat()
    [result] = _slot_results(manual)
    assert (result["published"], result["already_enqueued"]) == (1, 3)  # the day's others: never twice
    assert len(read_stream(aws.kinesis, STREAM)) == 4


def test_a_paced_run_defers_then_sends_each_user_at_its_time(resources):
    """A 1-minute window starting a little after the plan: the send task really defers on its
    DateTimeTrigger, resumes, and sends each START_DRILL within a second or two of its planned
    time (the emulator stamps arrival times), spread over the minute, never more per second than
    the ceiling."""
    db, aws = resources["db"], resources["aws"]
    phones = _due_users(db, 30)
    started = time.monotonic()
    _dag().test(logical_date=datetime.now(UTC) - timedelta(days=3))  # warm-up: parse, metadata
    lead = min(50.0, max(10.0, 2 * (time.monotonic() - started)))
    logical = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
    dag_run = _dag().test(logical_date=logical, run_conf={"spread_minutes": 1})
    assert _state(dag_run) == "success"
    finished = datetime.now(UTC)

    [result] = _slot_results(dag_run)
    assert result["deferred"] is True and result["published"] == 30 and result["late_dropped"] == 0
    planned = {k: datetime.fromtimestamp(s.planned, UTC) for k, s in planned_sends(aws.dynamodb, TABLE).items()}
    assert {i["phone_number"] for i in scan_table(aws.dynamodb, TABLE)} == set(phones.values())
    assert finished >= max(planned.values())  # the run lasted until the last planned send
    arrived = arrivals(aws.kinesis, STREAM)
    assert set(arrived) == set(planned)
    errors = sorted(abs(arrived[k] - planned[k].timestamp()) for k in planned)
    assert errors[-1] < 2.0, errors
    assert max(arrived.values()) - min(arrived.values()) > 30  # spread over the minute
    summary = _xcom(dag_run, "plan", "summary")
    assert max(Counter(int(t) for t in arrived.values()).values()) <= summary["max_per_second"] == 5 + 1
    report = return_value(dag_run, "check_sends")
    assert (report["recorded"], report["sent"], report["missing"], report["alert"]) == (30, 30, 0, False)


def test_far_fewer_sent_than_planned_alerts_and_fails_the_run(resources, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from drill_progress import alerting
    from drill_progress.scheduling import tasks

    db, aws = resources["db"], resources["aws"]
    _due_users(db, 5)
    alerts = []
    monkeypatch.setattr(alerting, "notify", lambda subject, message: alerts.append((subject, message)) or True)

    def broken(slot, deferred):
        raise AirflowFailException("the stream is gone")  # no retries

    monkeypatch.setattr(tasks, "send_slot", broken)
    logical = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    dag_run = _dag().test(logical_date=logical, run_conf={"spread_minutes": 0})
    assert _state(dag_run) == "failed"
    states = _task_states(dag_run)
    assert states[("plan", "success")] == 1 and states[("send_slot", "failed")] == 1
    assert states[("check_sends", "failed")] == 1
    # one "far fewer" alert from check_sends, beside each failed task's own failure alert
    failures = sorted(subject for subject, _ in alerts if subject.endswith(" failed"))
    assert failures == [
        "Drill Progress: schedule_next_drills.check_sends failed",
        "Drill Progress: schedule_next_drills.send_slot failed",
    ]
    [(subject, message)] = [(s, m) for s, m in alerts if not s.endswith(" failed")]
    assert "far fewer" in subject
    assert "5 START_DRILL planned, 0 sent" in message and "5 unaccounted for" in message
    assert read_stream(aws.kinesis, STREAM) == []
