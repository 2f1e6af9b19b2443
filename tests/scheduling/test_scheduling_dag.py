"""`schedule_next_drills` end to end through dag.test() against real PostgreSQL and the moto server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from airflow_support import run_state as _state
from scheduling_support import add_user, read_stream, scan_table

from drill_progress.scheduling import planning as scheduling
from drill_progress.scheduling.planning import Window
from drill_progress.setup.aws_resources import ensure_stream, ensure_table

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


def _users_in_slots(window: Window, per_slot: int) -> dict[int, list[str]]:
    """User ids whose planned time falls in each slot of the window (the plan is deterministic)."""
    found: dict[int, list[str]] = {slot: [] for slot in range(window.slots)}
    while any(len(ids) < per_slot for ids in found.values()):
        user_id = str(uuid.uuid4())
        key = scheduling.idempotency_key(user_id, D2, window.schedule_date)
        slot = window.slot_of(window.start + window.spread * scheduling.planned_fraction(key))
        if len(found[slot]) < per_slot:
            found[slot].append(user_id)
    return found


@pytest.fixture
def resources(airflow_env):
    aws = airflow_env["aws"]
    ensure_table(aws.dynamodb, TABLE, "pk", "sk")
    ensure_stream(aws.kinesis, STREAM)
    return airflow_env


def test_dag_params_and_schedule(airflow_db):
    dag = _dag()
    assert dag.timetable.expression == "5 17 * * *" and str(dag.timetable.timezone) in {"UTC", "Timezone('UTC')"}
    assert dag.catchup is False and dag.max_active_runs == 1
    specs = {name: dag.params.get_param(name) for name in ("spread_minutes", "inactivity_minutes")}
    assert specs["spread_minutes"].value == 180 and specs["inactivity_minutes"].value == 720
    for param in specs.values():
        assert param.schema["type"] == "integer" and param.schema["title"] and param.description


def test_old_day_sends_nothing_and_slots_defer_until_their_time_then_send_once(resources):
    """1. A backfill of an old day plans and sends nothing.
    2. A 2-minute spread that began a little while ago: slot 0 is already due and sends at once;
       slot 1 is still ahead, so its task really defers on its DateTimeTrigger and resumes.
    3. A second run the same day sends nothing more."""
    import time

    db, aws = resources["db"], resources["aws"]
    with db.engine.begin() as conn:
        add_user(conn, phone="+15559999999", last_interacted=datetime.now(UTC))  # active: not due
        add_user(conn, phone="+15559999998", states=("completed",) * 3)  # nothing left to do
        old_user = add_user(conn, phone="+15550000001")  # due, but the run is a backfill of an old day

    started = time.monotonic()
    old = _dag().test(run_after=datetime.now(UTC) - timedelta(days=2), run_conf={"spread_minutes": 0})
    warm_up = time.monotonic() - started
    assert _state(old) == "success"
    assert scan_table(aws.dynamodb, TABLE) == [] and read_stream(aws.kinesis, STREAM) == []
    assert _slot_results(old) == []
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM users WHERE user_id = %(u)s", {"u": old_user})

    # slot 1 starts `lead` seconds from now: longer than a dag.test start-up takes here
    lead = min(55.0, max(15.0, 2 * warm_up))
    run_after = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60 - lead)
    window = Window.for_run(run_after, 2)
    slots = _users_in_slots(window, per_slot=2)
    phones = {}
    with db.engine.begin() as conn:
        for i, user_id in enumerate(slots[0] + slots[1]):
            phones[user_id] = f"+1555123{i:04d}"
            add_user(conn, user_id=user_id, phone=phones[user_id])

    dag_run = _dag().test(run_after=run_after, run_conf={"spread_minutes": 2})
    assert _state(dag_run) == "success"
    assert datetime.now(UTC) >= window.slot_start(1)

    results = sorted(_slot_results(dag_run), key=lambda r: r["slot"])
    assert [(r["slot"], r["deferred"], r["published"]) for r in results] == [(0, False, 2), (1, True, 2)]

    items = scan_table(aws.dynamodb, TABLE)
    assert {i["user_id"]: i["phone_number"] for i in items} == phones
    for item in items:
        assert item["pk"] == window.slot_pk(int(item["slot"])) and item["drill_slug"] == D2
        assert item["idempotency_key"] == f"start-drill:{item['user_id']}:{D2}:{window.schedule_date}"
        assert window.start <= datetime.fromisoformat(item["planned_time"]) < window.end
        assert int(item["expires_at"]) > window.end.timestamp()

    records = read_stream(aws.kinesis, STREAM)
    assert sorted(r["partition_key"] for r in records) == sorted(phones.values())
    for record in records:
        assert set(record["body"]) == {"type", "payload", "idempotency_key"}
        assert record["body"]["type"] == "START_DRILL"
        assert record["body"]["payload"] == {"phone_number": record["partition_key"], "drill_slug": D2}

    # a second run the same day (a manual run a second later) sends nothing twice
    again = _dag().test(run_after=run_after + timedelta(seconds=1), run_conf={"spread_minutes": 0})
    assert _state(again) == "success"
    assert sum(r["already_enqueued"] for r in _slot_results(again)) == 4
    assert len(read_stream(aws.kinesis, STREAM)) == 4
