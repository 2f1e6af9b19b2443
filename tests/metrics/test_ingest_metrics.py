"""`dialog_event_ingest` sends its per-shard metrics through Airflow's metrics (StatsD on, towards a
real UDP listener on loopback): the values that arrive are the run's own figures, exactly."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from airflow_support import run_state

from drill_progress.ingest import consumer, pipeline
from drill_progress.setup.aws_resources import ensure_stream

STREAM, COMMANDS = "dialog-events", "dialog-commands"
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
PROFILE = {"validated": True, "opted_out": False, "is_demo": False, "name": None, "language": "en",
           "account_info": {"employer_id": 7, "unit_id": 1}}  # fmt: skip
PREFIX = "airflow.drill_progress."


def _uuid(*parts) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def _event(event_type: str, phone: str, at: datetime, **fields) -> dict:
    return {
        "event_id": _uuid("metrics-test", phone, event_type, at.isoformat()),
        "event_type": event_type,
        "phone_number": phone,
        "created_time": at.isoformat(),
        "schema_version": 1,
        "user_profile": dict(PROFILE),
        **fields,
    }


def validated_and_started(phone: str) -> bytes:
    """One batch of two events: USER_VALIDATED (-> one START_DRILL), then DRILL_STARTED."""
    events = [
        _event(
            "USER_VALIDATED",
            phone,
            T0 - timedelta(minutes=1),
            code_validation_payload={"valid": True, "is_demo": False, "account_info": {"employer_id": 7}},
        ),
        _event(
            "DRILL_STARTED",
            phone,
            T0,
            drill={"slug": "01-sample-drill", "name": "01-sample-drill", "prompts": []},
            drill_instance_id=_uuid("metrics-test-instance", phone),
            first_prompt={"slug": "q1", "messages": []},
        ),
    ]
    doc = {
        "batch_id": _uuid("metrics-test-batch", phone),
        "seq": "1",
        "phone_number": phone,
        "created_time": events[-1]["created_time"],
        "events": events,
    }
    return json.dumps(doc).encode()


def _put(kinesis, data: bytes, key: str) -> str:
    return kinesis.put_record(StreamName=STREAM, Data=data, PartitionKey=key)["ShardId"]


def _shard_results(dag_run) -> list[dict]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id, key="return_value", dag_ids=dag_run.dag_id, task_ids="ingest_shard"
            )
        ).all()
        return [XComModel.deserialize_value(row) for row in rows]


def _by_shard(figures: dict[str, float], name: str) -> dict[str, float]:
    head = f"{PREFIX}ingest.{name}."
    return {key[len(head) :]: value for key, value in figures.items() if key.startswith(head)}


def test_an_ingest_run_sends_its_per_shard_metrics(run_dag, airflow_env, statsd_metrics):
    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, STREAM, 2)
    ensure_stream(aws.kinesis, COMMANDS, 1)
    events, set_aside = Counter(), Counter()
    for i in range(12):
        phone = f"+1555444{i:04d}"
        events[_put(aws.kinesis, validated_and_started(phone), phone)] += 2
    again = "+15554440000"  # a re-delivered batch: skipped by the seq guard, not applied
    _put(aws.kinesis, validated_and_started(again), again)
    for key in ("bad-1", "bad-2", "bad-3"):
        set_aside[_put(aws.kinesis, b"not json " + key.encode(), key)] += 1
    assert len(events) == 2  # both shards have work

    dag_run = run_dag("dialog_event_ingest")
    assert run_state(dag_run) == "success"
    statsd_metrics.settle()
    counters, gauges = statsd_metrics.counters(PREFIX), statsd_metrics.gauges(PREFIX)
    timings = statsd_metrics.timings(PREFIX)
    results = {r["shard_id"]: r for r in _shard_results(dag_run)}
    summary = dag_run.get_task_instance("summary").xcom_pull(task_ids="summary")

    # events applied: the events put on each shard, minus the re-delivered batch; the run says the same
    assert _by_shard(counters, "events_applied") == dict(events)
    assert {s: r["events_applied"] for s, r in results.items()} == dict(events)
    assert summary["events_applied"] == 24 and summary["duplicates_skipped"] == 1
    # records set aside: the bad records put on each shard
    assert _by_shard(counters, "records_set_aside") == dict(set_aside)
    assert {s: r["records_rejected"] for s, r in results.items() if r["records_rejected"]} == dict(set_aside)
    # caught up: the last lag each shard reported is 0 ms, as in its result
    assert (
        _by_shard(gauges, "ms_behind_tip") == {s: r["behind_ms"] for s, r in results.items()} == {s: 0 for s in results}
    )
    # one duration per micro-batch (one transaction each here: nothing was bisected)
    durations = _by_shard(timings, "micro_batch_duration")
    assert {s: len(d) for s, d in durations.items()} == {s: r["micro_batches"] for s, r in results.items()}
    assert all(0 < ms < 60_000 for d in durations.values() for ms in d)
    # commands: published right after each commit by the shard's publisher, none failing; every
    # command emitted went out (the run's publish_commands task found nothing left)
    published = _by_shard(counters, "commands_published")
    assert published == {s: r["commands_published"] for s, r in results.items() if r["commands_published"]}
    assert sum(published.values()) == summary["commands_emitted"] == 12 and summary["commands_published"] == 0
    assert _by_shard(counters, "publish_failures") == {}
    assert counters[f"{PREFIX}outbox.published.ingest"] == 12
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM command_outbox WHERE published_at IS NOT NULL").scalar() == 12


def test_commands_that_cannot_be_published_are_counted_as_failures(airflow_env, statsd_metrics):
    """The command stream does not exist: every PutRecords fails, the commands stay in the outbox,
    and the shard's publish_failures says how many."""
    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, STREAM, 1)
    for i in range(3):
        _put(aws.kinesis, validated_and_started(f"+1555333{i:04d}"), f"+1555333{i:04d}")
    [shard] = [s["ShardId"] for s in aws.kinesis.list_shards(StreamName=STREAM)["Shards"]]

    stats = consumer.consume_shard(db.engine, aws.kinesis, STREAM, shard, command_stream="missing-stream")
    statsd_metrics.settle()
    counters = statsd_metrics.counters(PREFIX)
    assert (stats.commands_emitted, stats.commands_published) == (3, 0)
    assert counters[f"{PREFIX}ingest.publish_failures.{shard}"] == 3
    assert counters[f"{PREFIX}outbox.publish_failures.ingest"] == 3
    assert f"{PREFIX}ingest.commands_published.{shard}" not in counters
    assert counters[f"{PREFIX}ingest.events_applied.{shard}"] == stats.events_applied == 6


def test_a_record_the_database_keeps_refusing_is_counted_when_set_aside(drill_db, statsd_metrics):
    """A statement timeout on every attempt of one record's write (a fault hook): the micro-batch is
    retried, bisected, and that one record set aside on its own; the counters say so."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    phones = [f"+1555222{n:04d}" for n in range(3)]
    raws = [pipeline.RawRecord(f"{n:030d}", phone, validated_and_started(phone)) for n, phone in enumerate(phones, 1)]

    def cancel_one(stage, conn):
        if stage == "before_commit":
            written = {p for (p,) in conn.exec_driver_sql("SELECT phone_number FROM phone_numbers").all()}
            if phones[1] in written:
                raise DBAPIError.instance(
                    "COMMIT", {}, psycopg.errors.QueryCanceled("statement timeout"), psycopg.Error
                )

    shard = "shardId-000000000007"
    stats = pipeline.apply_micro_batch(drill_db.engine, STREAM, shard, raws, fault=cancel_one)
    statsd_metrics.settle()
    assert (stats.records_rejected, stats.events_applied) == (1, 4)
    assert statsd_metrics.counters(PREFIX) == {
        f"{PREFIX}ingest.records_set_aside.{shard}": 1,
        f"{PREFIX}ingest.events_applied.{shard}": 4,
    }
