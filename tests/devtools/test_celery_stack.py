"""The pipeline on CeleryExecutor (`EXECUTOR=celery make up`): Redis, two Celery workers, the
scheduler, triggerer, dag-processor and api-server, all real processes on free ports. DAG runs are
triggered through the REST API and run by the scheduler (not `dag.test()`); the workers' own logs
say which worker ran each task instance.

Scenarios: `status` lists the workers; setup, reminders and a short paced scheduling run (deferred
slots through the triggerer) run on both workers and send every command exactly once; a worker
SIGKILLed in the middle of a task loses nothing, the task is retried on the other worker and no
command goes out twice beyond the documented window (one PutRecords chunk, identical records).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import seed
from celery_support import CeleryStack

from devtools import chaos, devstack
from devtools.services import port_in_use

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WORKERS = {"celery-worker-1", "celery-worker-2"}
REMINDERS = 12  # drill instances due a reminder (first scenario)
DUE_USERS = 16  # users due their next drill: one START_DRILL each, spread over deferred slots
KILL_REMINDERS = 20_000  # enough for the task to run several seconds: the worker dies mid-task
CHUNK = 500  # PutRecords chunk: the documented at-least-once window


def reminder_keys(n: int, phone_base: int) -> set[str]:
    """The idempotency keys of the reminders `seed.seed_reminder_instances` makes due (prompt q2)."""
    return {f"reminder:{seed._uuid5(f'chaos-instance:+1555{phone_base + i:07d}')}:q2" for i in range(n)}


def due_phones(n: int, phone_base: int) -> set[str]:
    return {f"+1555{phone_base + i:07d}" for i in range(n)}


def pending_outbox(stack: CeleryStack) -> int:
    engine = stack.drill_engine()
    try:
        return chaos.scalar(engine, "SELECT count(*) FROM command_outbox WHERE published_at IS NULL")
    finally:
        engine.dispose()


def test_status_lists_the_celery_workers_and_their_state(celery_stack):
    status = celery_stack.cli("status", timeout=60)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    for name in ("postgres", "moto", "redis", "scheduler", "dag-processor", "triggerer", "api-server", *WORKERS):
        assert any(line.split()[:2] == [name, "running"] for line in lines), status.stdout
    assert "celery workers (CeleryExecutor" in status.stdout
    nodes = {node.split("@", 1)[1] for node in devstack.celery_workers(celery_stack.s)}
    for name in WORKERS:
        assert any(line.split()[:2] == [f"{name}@{node}", "online,"] for line in lines for node in nodes), status.stdout
    assert "0 import errors" in status.stdout
    assert celery_stack.online_workers() == sorted(WORKERS)
    # each worker serves its task logs on its own port (two on one port: the second has none)
    log_ports = {name: celery_stack.s.log_port_of(name) for name in WORKERS}
    assert len(set(log_ports.values())) == len(WORKERS), log_ports
    for name, port in log_ports.items():
        assert port_in_use(port), (name, port)


def test_the_pipeline_runs_through_the_scheduler_on_both_workers(celery_stack):
    stack = celery_stack
    now = datetime.now(UTC)
    engine = stack.drill_engine()
    seed.seed_reminder_instances(engine, REMINDERS, now, phone_base=1_000_000)
    seed.seed_due_users(engine, DUE_USERS, now, phone_base=2_000_000)
    engine.dispose()

    runs = [
        ("drill_progress_setup", stack.trigger("drill_progress_setup")),
        ("trigger_reminders", stack.trigger("trigger_reminders")),
        # paced over two one-minute slots: the second waits in the triggerer, not on a worker
        ("schedule_next_drills", stack.trigger("schedule_next_drills", {"spread_minutes": 2})),
    ]
    for dag_id, run_id in runs:
        assert stack.wait_for_run(dag_id, run_id, timeout=240) == "success", stack.describe(dag_id, run_id)

    # every command exactly once: the reminders of the seeded instances, one START_DRILL per due user
    commands = stack.commands()
    reminders = [c for c in commands if c["type"] == "TRIGGER_REMINDER"]
    starts = [c for c in commands if c["type"] == "START_DRILL"]
    assert sorted(c["idempotency_key"] for c in reminders) == sorted(reminder_keys(REMINDERS, 1_000_000))
    assert sorted(c["payload"]["phone_number"] for c in starts) == sorted(due_phones(DUE_USERS, 2_000_000))
    # drill 1 started, 2 and 3 not: the next drill is the first not started (contract §2)
    assert {c["payload"]["drill_slug"] for c in starts} == {"02-sample-drill"}
    assert chaos.audit_commands(commands).duplicates == 0
    assert pending_outbox(stack) == 0

    # the slots were deferred: their trigger ran in the triggerer (its log next to the task's)
    slots = [ti for ti in stack.task_instances(*runs[2]) if ti["task_id"] == "send_slot"]
    assert len(slots) == 2
    trigger_logs = list((stack.s.log_dir / "airflow" / "dag_id=schedule_next_drills").rglob("*.trigger.*"))
    assert trigger_logs, "no send_slot went through the triggerer"

    # tasks landed on both workers, and every task instance ran on a worker of this stack
    used = stack.workers_used(*runs)
    assert set(used) == WORKERS, used
    executed = stack.executed_by()
    for dag_id, run_id in runs:
        for ti in stack.task_instances(dag_id, run_id):
            assert executed.get(ti["id"]), f"{dag_id}.{ti['task_id']}[{ti['map_index']}] ran on no worker"


def test_a_worker_killed_mid_task_loses_nothing_and_sends_nothing_twice(celery_stack):
    stack = celery_stack
    engine = stack.drill_engine()
    seed.seed_reminder_instances(engine, KILL_REMINDERS, datetime.now(UTC), phone_base=3_000_000)
    engine.dispose()
    before = {c["idempotency_key"] for c in stack.commands()}

    run_id = stack.trigger("trigger_reminders")
    ti = stack.wait_for_task_state("trigger_reminders", run_id, "send_reminders", "running", timeout=120)
    deadline = time.monotonic() + 30
    while (victim := stack.worker_of(ti["id"])) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert victim in WORKERS
    time.sleep(2)  # well into the task: the reminders are recorded, publishing has started
    assert stack.task_instances("trigger_reminders", run_id)[0]["state"] == "running", "finished before the kill"
    stack.kill_worker(victim)
    survivor = (WORKERS - {victim}).pop()

    status = stack.cli("status", timeout=60)
    assert any(line.split()[:2] == [victim, "stopped"] for line in status.stdout.splitlines()), status.stdout
    assert f"{victim}@" in status.stdout and "offline (process stopped)" in status.stdout
    assert stack.online_workers() == [survivor]

    # the scheduler notices the lost heartbeat, the task's retry runs on the surviving worker
    assert stack.wait_for_run("trigger_reminders", run_id, timeout=300) == "success"
    final = stack.task_instances("trigger_reminders", run_id)[0]
    assert final["try_number"] == 2
    assert stack.executed_by()[ti["id"]] == [victim]  # try 1; each try has its own id
    assert stack.executed_by()[final["id"]] == [survivor]

    # nothing lost, nothing twice beyond one PutRecords chunk of byte-identical records
    new = [c for c in stack.commands() if c["idempotency_key"] not in before]
    audit = chaos.audit_commands(new, expected=None)
    assert {c["idempotency_key"] for c in new} == reminder_keys(KILL_REMINDERS, 3_000_000)
    assert audit.duplicates <= CHUNK and audit.duplicates_identical, audit.as_dict()
    assert pending_outbox(stack) == 0
    print(f"\nkilled {victim} mid-task; retried on {survivor}; {audit.as_dict()}")

    # `make up` starts what is missing: the killed worker, and nothing else a second time
    pids = {name: devstack.running_pid(stack.s, name) for name in ("scheduler", "api-server", survivor)}
    again = stack.up()
    assert f"started {victim}" in again.stdout and "already running" in again.stdout
    assert {name: devstack.running_pid(stack.s, name) for name in pids} == pids
    assert stack.online_workers() == sorted(WORKERS)
