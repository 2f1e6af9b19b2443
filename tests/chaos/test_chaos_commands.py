"""Chaos scenario 6: command producers killed (SIGKILL) between recording and publishing, and
between publishing and recording that it was published; then retried.

Every producer records a command in the PostgreSQL outbox (`command_outbox`, unique
idempotency_key) and then publishes pending rows, stamping `published_at`:

- killed inside the recording transaction (`before_enqueue_commit`): nothing recorded; the retry
  records and sends each command once;
- killed after the record committed, before publishing (`before_publish`): the retry sends each
  recorded command exactly once;
- killed after Kinesis accepted a PutRecords chunk, before `published_at` committed (`after_put`):
  the retry sends that chunk again, with the same idempotency_key and the same bytes. This is the
  documented at-least-once window; it is measured here and bounded by one chunk (<= 500 records)
  per kill.

CHAOS_COMMANDS (default 700) reminders / due users per run.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
import seed
from chaos_support import COMMANDS, ingest_argv, new_streams

from devtools import chaos
from drill_progress.setup.aws_resources import ensure_stream, ensure_table

pytestmark = pytest.mark.chaos

PUT_CHUNK = 500
STAGES = ["before_enqueue_commit", "before_publish", "after_put"]
REMINDER_REFERENCE = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
SCHEDULE_REFERENCE = datetime(2026, 3, 2, 17, 5, tzinfo=UTC)


def _rows(engine, sql: str):
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).one()


def _outbox(engine) -> dict:
    total, published = _rows(engine, "SELECT count(*), count(published_at) FROM command_outbox")
    return {"recorded": total, "published": published}


def _producer(kind: str, db, kinesis, moto_server, dynamodb):
    """(argv, done predicate, expected command count or None) for one producer."""
    url = moto_server.endpoint_url
    if kind == "reminders":
        seed.seed_reminder_instances(db.engine, COMMANDS, REMINDER_REFERENCE)
        stream = f"chaos-rem-{uuid.uuid4().hex[:8]}"
        ensure_stream(kinesis, stream, 1)
        argv = chaos.worker_argv(
            "reminders-worker",
            "--db-url",
            db.url,
            "--endpoint-url",
            url,
            "--stream",
            stream,
            "--reference",
            REMINDER_REFERENCE.isoformat(),
        )
        return argv, stream, COMMANDS
    if kind == "scheduling":
        seed.seed_due_users(db.engine, COMMANDS, SCHEDULE_REFERENCE)
        stream, table = f"chaos-sched-{uuid.uuid4().hex[:8]}", f"chaos-schedule-{uuid.uuid4().hex[:8]}"
        ensure_stream(kinesis, stream, 1)
        ensure_table(dynamodb, table, "pk", "sk")
        argv = chaos.worker_argv(
            "schedule-worker",
            "--db-url",
            db.url,
            "--endpoint-url",
            url,
            "--stream",
            stream,
            "--table",
            table,
            "--reference",
            SCHEDULE_REFERENCE.isoformat(),
        )
        return argv, stream, COMMANDS
    raise AssertionError(kind)


def _done(result: dict) -> bool:
    return result.get("pending_commands", 1) == 0


@pytest.fixture(scope="module")
def dynamodb(moto_server):
    return chaos.boto3_client("dynamodb", moto_server.endpoint_url)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("producer", ["reminders", "scheduling"])
def test_producer_killed_between_recording_and_publishing(producer, stage, make_db, kinesis, moto_server, dynamodb):
    db = make_db()
    argv, stream, expected = _producer(producer, db, kinesis, moto_server, dynamodb)
    first = chaos.run_worker([*argv, "--die-at", stage])
    after_kill = {"outbox": _outbox(db.engine), "on_stream": len(chaos.read_stream(kinesis, stream))}
    report = chaos.drive(argv, done=_done)
    final = _outbox(db.engine)
    audit = chaos.audit_commands(chaos.read_commands(kinesis, stream))
    keys = {c["idempotency_key"] for c in chaos.read_commands(kinesis, stream)}
    print(
        f"\n[6 {producer} killed {stage}] "
        + json.dumps(
            {
                "injected": {"sigkill_at": stage, "first_attempt": first.outcome},
                "right_after_kill": after_kill,
                "retries": len(report.attempts),
                "final_outbox": final,
                "verified": audit.as_dict(),
            }
        )
    )
    assert first.outcome == "killed"
    assert final == {"recorded": expected, "published": expected}
    assert audit.unique_keys == expected == len(keys)
    assert audit.duplicates_identical and not audit.payload_mismatch
    if stage == "before_enqueue_commit":
        assert after_kill == {"outbox": {"recorded": 0, "published": 0}, "on_stream": 0}
        assert audit.duplicates == 0
    elif stage == "before_publish":
        assert after_kill["on_stream"] == 0 and after_kill["outbox"]["published"] == 0
        assert after_kill["outbox"]["recorded"] > 0
        assert audit.duplicates == 0
    else:  # after_put: the documented window, measured: exactly the chunk that was in flight
        chunk = after_kill["on_stream"]
        assert 0 < chunk <= PUT_CHUNK and after_kill["outbox"]["published"] == 0
        assert audit.duplicates == chunk and audit.duplicated_keys == chunk


@pytest.mark.parametrize("stage", STAGES)
def test_ingest_killed_between_recording_and_publishing(stage, make_db, kinesis, moto_server, traffic, clean_run):
    db = make_db()
    events, commands = new_streams(kinesis, f"ingest-{stage.replace('_', '-')}")
    chaos.put_records(kinesis, events, traffic.records)
    argv = ingest_argv(db.url, moto_server.endpoint_url, events, commands)
    first = chaos.run_worker([*argv, "--die-at", stage])
    after_kill = {"outbox": _outbox(db.engine), "on_stream": len(chaos.read_stream(kinesis, commands))}
    report = chaos.drive(argv, done=chaos.ingest_caught_up)
    audit = chaos.audit_commands(chaos.read_commands(kinesis, commands), clean_run.commands)
    print(
        f"\n[6 ingest killed {stage}] "
        + json.dumps(
            {
                "injected": {"sigkill_at": stage, "first_attempt": first.outcome},
                "right_after_kill": after_kill,
                "retries": len(report.attempts),
                "verified": audit.as_dict(),
            }
        )
    )
    assert first.outcome == "killed"
    assert not audit.missing and not audit.unexpected and not audit.payload_mismatch
    assert audit.duplicates_identical
    if stage == "after_put":
        assert 0 < after_kill["on_stream"] <= PUT_CHUNK
        assert audit.duplicates == after_kill["on_stream"]
    else:
        assert after_kill["on_stream"] == 0
        assert audit.duplicates == 0
