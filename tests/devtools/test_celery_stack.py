"""The pipeline on CeleryExecutor (`EXECUTOR=celery make up`): Redis, two Celery workers, the
scheduler, triggerer, dag-processor and api-server, all real processes on free ports. DAG runs are
triggered through the REST API and run by the scheduler (not `dag.test()`); the workers' own logs
say which worker ran each task instance.

Scenarios: `status` lists the workers; setup, reminders and a short paced scheduling run (deferred
slots through the triggerer) run on both workers and send every command exactly once; a worker
SIGKILLed in the middle of a task loses nothing, the task is retried on the other worker and no
command goes out twice beyond the documented window (one PutRecords chunk, identical records);
last, a burst ingested across 4 shards by the continuous `dialog_event_ingest` run survives a worker
SIGKILLed mid-ingestion: the aggregate equals a reference apply, no command is lost, a command goes
out twice only if it was in flight when the worker died.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import urllib.error
from datetime import UTC, datetime

import pytest
import seed
from celery_support import INGEST_SHARDS, CeleryStack

from devtools import aggregate, chaos, devstack, simulator
from devtools.services import port_in_use
from drill_progress import config
from drill_progress.ingest import pipeline
from drill_progress.outbox import queue

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


# --------------------------------------------------------------------------- ingestion across 4 shards

BURST_EVENTS = 100_000  # about 50,000 records: several seconds per shard, for the kill to land in
BURST_USERS = 2_500
INGEST_DAG = "dialog_event_ingest"


def burst_records() -> list[simulator.Record]:
    """The simulator's traffic with its phone numbers moved to +15558… (the other scenarios' seeded
    users are +15551…-+15553…): a burst of new users going through their drills."""
    traffic = chaos.make_records(BURST_EVENTS, seed=16, users=BURST_USERS)
    return [
        simulator.Record(r.data.replace(b'"+15551', b'"+15558'), "+15558" + r.partition_key[6:], r.malformed)
        for r in traffic.records
    ]


def reference_of(records, drill_db, aws) -> tuple[dict, dict[str, dict]]:
    """The burst applied in-process, in order, into a fresh database, and its commands published to
    the test session's emulator: the aggregate checksum and the commands (by key) to expect."""
    raws = [pipeline.RawRecord(f"{i:021d}", r.partition_key, r.data) for i, r in enumerate(records)]
    for start in range(0, len(raws), 500):
        pipeline.apply_micro_batch(
            drill_db.engine, "reference-events", "shardId-000000000000", raws[start : start + 500]
        )
    aws.kinesis.create_stream(StreamName="reference-commands", ShardCount=1)
    aws.kinesis.get_waiter("stream_exists").wait(StreamName="reference-commands")
    queue.publish_pending(drill_db.engine, aws.kinesis, "reference-commands")
    commands = chaos.commands_by_key(chaos.read_commands(aws.kinesis, "reference-commands"))
    return aggregate.aggregate_checksum(drill_db.engine, sorted({r.partition_key for r in records})), commands


def phones_by_shard(phones, shards: list[dict]) -> dict[str, list[str]]:
    """Where Kinesis puts each partition key: the shard whose hash key range holds its MD5."""
    out: dict[str, list[str]] = {s["ShardId"]: [] for s in shards}
    for phone in phones:
        key = int.from_bytes(hashlib.md5(phone.encode(), usedforsecurity=False).digest(), "big")
        shard = next(
            s
            for s in shards
            if int(s["HashKeyRange"]["StartingHashKey"]) <= key <= int(s["HashKeyRange"]["EndingHashKey"])
        )
        out[shard["ShardId"]].append(phone)
    return out


def users_applied(engine, phones: list[str]) -> int:
    return chaos.scalar(engine, "SELECT count(*) FROM phone_numbers WHERE phone_number = ANY(%(p)s)", {"p": phones})


def pending_keys(engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT idempotency_key FROM command_outbox WHERE published_at IS NULL")
        return {row[0] for row in rows}


def choose_victim(stack: CeleryStack, engine, run_id: str, by_shard: dict[str, list[str]], timeout: float = 240):
    """Wait until a running shard task is part-way through its shard's users (between 5% and 60%
    applied); returns (the worker running it, the run's shard tasks, the run's shards by map index)."""
    deadline = time.monotonic() + timeout
    planned: list[str] = []
    while time.monotonic() < deadline:
        if not planned:
            with contextlib.suppress(urllib.error.HTTPError):
                planned = stack.xcom(INGEST_DAG, run_id, "plan_shards")
        tasks = [t for t in stack.task_instances(INGEST_DAG, run_id) if t["task_id"] == "ingest_shard"]
        for t in tasks:
            if not planned or t["state"] != "running" or not (worker := stack.worker_of(t["id"])):
                continue
            phones = by_shard[planned[t["map_index"]]]
            if 0.05 * len(phones) <= users_applied(engine, phones) <= 0.6 * len(phones):
                return worker, tasks, planned
        time.sleep(0.1)
    raise AssertionError(f"no shard task was caught part-way:\n{stack.describe(INGEST_DAG, run_id)}")


def test_ingestion_across_4_shards_survives_a_worker_killed_mid_ingestion(celery_stack, drill_db, aws):
    """A burst of 2,500 new users (100,000 events) on the 4-shard dialog event stream, ingested by the
    continuous `dialog_event_ingest` run (one ingest_shard task per shard, on both workers). One
    worker is SIGKILLed while one of its shards is part-way through and then replaced (`make up`
    starts what is missing): its shard tasks are retried from their checkpoints, the aggregate ends
    equal to an in-process reference apply of the same records, every command is on the stream, and
    a command is sent twice only if it was in flight when the worker died (byte-identical)."""
    stack = celery_stack
    records = burst_records()
    phones = sorted({r.partition_key for r in records})
    want_state, want_commands = reference_of(records, drill_db, aws)
    stream = config.VARIABLE_DEFAULTS[config.DIALOG_EVENT_STREAM]
    shards = stack.kinesis().list_shards(StreamName=stream)["Shards"]
    by_shard = phones_by_shard(phones, shards)
    # DRILL_DIALOG_SHARDS and DRILL_KEEP_PAUSED: 4 shards, and ingestion has not started yet
    assert len(shards) == INGEST_SHARDS and all(by_shard.values())
    assert stack.api._request("GET", f"/api/v2/dags/{INGEST_DAG}")["is_paused"] is True
    assert stack.runs(INGEST_DAG) == []
    chaos.put_records(stack.kinesis(), stream, records)
    engine = stack.drill_engine()
    try:
        stack.set_paused(INGEST_DAG, False)  # the scheduler starts the continuous run at once
        run_id = wait_for(lambda: next((r["dag_run_id"] for r in stack.runs(INGEST_DAG)), None), 60)
        victim, shard_tasks, planned = choose_victim(stack, engine, run_id, by_shard)
        stack.kill_worker(victim)
        killed = sorted(t["map_index"] for t in shard_tasks if stack.worker_of(t["id"]) == victim)
        left = {planned[i]: len(by_shard[planned[i]]) - users_applied(engine, by_shard[planned[i]]) for i in killed}
        unconfirmed = pending_keys(engine) & {c["idempotency_key"] for c in stack.commands()}
        assert any(left.values()), left

        again = stack.up()  # a replacement machine
        assert f"started {victim}" in again.stdout
        deadline = time.monotonic() + 420
        while not (
            pending_keys(engine) == set()
            and aggregate.aggregate_checksum(engine, phones) == want_state
            and set(want_commands) <= {c["idempotency_key"] for c in stack.commands()}
            and all(t["try_number"] >= 2 for t in stack.task_instances(INGEST_DAG, run_id) if t["map_index"] in killed)
        ):
            assert time.monotonic() < deadline, stack.describe(INGEST_DAG, run_id)
            time.sleep(5)
        assert chaos.scalar(engine, "SELECT count(*) FROM rejected_records") == 0
        after = [t for t in stack.task_instances(INGEST_DAG, run_id) if t["task_id"] == "ingest_shard"]
    finally:
        stack.set_paused(INGEST_DAG, True)
        engine.dispose()

    # only the killed shards' tasks ran again (try 2); the others never stopped
    assert sorted(t["map_index"] for t in after if t["try_number"] == 2) == killed
    burst = [c for c in stack.commands() if c["idempotency_key"] in want_commands or c["_partition_key"] in phones]
    audit = chaos.audit_commands(burst, want_commands)
    duplicated = {k for k in want_commands if sum(c["idempotency_key"] == k for c in burst) > 1}
    assert not (audit.missing or audit.unexpected or audit.payload_mismatch), audit.as_dict()
    assert duplicated <= unconfirmed and audit.duplicates_identical, (audit.as_dict(), len(unconfirmed))
    print(
        f"\n4 shards, {len(records)} records, {len(phones)} users; killed {victim} running shard tasks {killed} "
        f"with {left} users still to apply; {len(unconfirmed)} commands in flight; {audit.as_dict()}"
    )


def test_lookup_history_and_rebuild_through_the_celery_stack(celery_stack):
    """Issue 22 on CeleryExecutor: a user's story applied by the running ingestion is in the event
    history and in the User lookup; its corrupted aggregate is reported by a dry run of
    drill_progress_rebuild and repaired by a real one, both run by the scheduler on the workers."""
    from operator_tools import check_operator_tools

    runs = [r for r in celery_stack.runs(INGEST_DAG) if r["state"] == "running"]
    if not runs:  # the previous scenario did not run: start ingestion
        celery_stack.set_paused(INGEST_DAG, False)
    try:
        print("\noperator tools on Celery:", check_operator_tools(celery_stack))
    finally:
        celery_stack.set_paused(INGEST_DAG, True)


def wait_for(check, timeout: float):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return got
