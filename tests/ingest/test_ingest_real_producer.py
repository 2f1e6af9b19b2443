"""Batches written by the real Dialog Context's own serializer (tests/ingest/data/real-producer, one
per event type): 56-digit `seq` values (Kinesis sequence numbers), full drill objects, profiles
with the self ratings, microsecond timestamps, an OPTED_OUT outside a drill, slugs with spaces.
Every one is accepted at the edge and applied end to end through the DAG, with exact rows."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from airflow_support import run_state
from ingest_support import EXAMPLES, read_stream, rows

from drill_progress import ids
from drill_progress.ingest import events as ev
from drill_progress.setup.aws_resources import ensure_stream

REAL = EXAMPLES / "real-producer"
NAMES = sorted(p.stem for p in REAL.glob("*.json"))
A, B, C, D = "+16660000004", "+16660000019", "+16660000001", "+16660000000"  # the examples' users
INSTANCE = "350b8f5d-cea6-4b83-9e1a-83eb52ea0f80"


def real(name: str) -> dict:
    return json.loads((REAL / f"{name}.json").read_bytes())


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_every_event_type_has_a_real_example():
    types = {e["event_type"] for name in NAMES for e in real(name)["events"]}
    assert types == ev.EVENT_TYPES
    assert len(NAMES) == 11


@pytest.mark.parametrize("name", NAMES)
def test_real_examples_are_accepted_by_the_schema_and_the_edge(name):
    data = (REAL / f"{name}.json").read_bytes()
    doc = json.loads(data)
    assert list(ev.schema_validator().iter_errors(doc)) == []
    batch = ev.parse_record(data)
    assert len(doc["seq"]) == 56 and batch.seq == int(doc["seq"])
    assert [e.event_id for e in batch.events] == [e["event_id"] for e in doc["events"]]
    assert [e.user_profile for e in batch.events] == [e["user_profile"] for e in doc["events"]]


def _in_stream_order() -> list[str]:
    """The examples as the stream carries them: by seq (the Kinesis order of their causes)."""
    return sorted(NAMES, key=lambda name: (int(real(name)["seq"]), name))


def _last_event(name: str) -> dict:
    return real(name)["events"][-1]


def test_dag_applies_every_real_producer_batch_with_exact_rows(run_dag, airflow_env):
    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, "dialog-events", 2)
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    for name in _in_stream_order():
        data = (REAL / f"{name}.json").read_bytes()
        aws.kinesis.put_record(StreamName="dialog-events", Data=data, PartitionKey=real(name)["phone_number"])

    run = run_dag("dialog_event_ingest")
    assert run_state(run) == "success"
    summary = run.get_task_instance("summary").xcom_pull(task_ids="summary")
    # completed_prompt.json and advanced_to_next_prompt.json are the same batch: the second is skipped
    assert (summary["records_read"], summary["records_rejected"]) == (11, 0)
    assert (summary["batches_applied"], summary["duplicates_skipped"]) == (10, 1)
    assert rows(db.engine, "SELECT count(*) FROM rejected_records") == [(0,)]

    # users: the seq (exact, 56 digits), profile and time of each user's last batch
    last = {A: "drill_completed", B: "next_drill_requested", C: "reminder_triggered", D: "opted_out"}
    assert rows(db.engine, "SELECT user_id, seq::text, profile, last_interacted_time FROM users ORDER BY 1") == sorted(
        (
            ids.user_id(phone),
            real(name)["seq"],
            _last_event(name)["user_profile"],
            t(_last_event(name)["created_time"]),
        )
        for phone, name in last.items()
    )
    assert rows(db.engine, "SELECT id, phone_number, user_id, is_primary FROM phone_numbers ORDER BY 1") == sorted(
        (ids.phone_number_id(phone), phone, ids.user_id(phone), True) for phone in last
    )

    # drill statuses: three per user; A started and completed drill 1 in instance 350b8f5d
    started, completed = t("2020-04-07T16:36:25.945339+00:00"), t("2020-04-09T10:35:51.649491+00:00")
    expected_statuses = []
    for phone in last:
        user = ids.user_id(phone)
        for place, slug in enumerate(("01-sample-drill", "02-sample-drill", "03-sample-drill")):
            done = (INSTANCE, started, completed) if (phone, place) == (A, 0) else (None, None, None)
            expected_statuses.append((ids.status_id(user, slug), user, slug, place, *done))
    assert rows(
        db.engine,
        "SELECT id, user_id, drill_slug, place_in_sequence, drill_instance_id::text, started_time, completed_time "
        "FROM drill_statuses ORDER BY 1",
    ) == sorted(expected_statuses)

    # one instance: drill 1 of A, completed, its current prompt cleared; the OPTED_OUT of D names
    # an instance this pipeline never saw, which adds no row
    assert rows(
        db.engine,
        "SELECT drill_instance_id::text, user_id, phone_number, drill_slug, current_prompt_slug, "
        "current_prompt_start_time, current_prompt_last_response_time, completion_time, is_valid "
        "FROM drill_instances",
    ) == [(INSTANCE, ids.user_id(A), A, "01-sample-drill", None, None, None, completed, True)]

    # commands: USER_VALIDATED (A) starts drill 1; NEXT_DRILL_REQUESTED (B, nothing started) too
    expected_commands = [
        (A, f"ingest:{real('user_validated')['events'][0]['event_id']}"),
        (B, f"ingest:{real('next_drill_requested')['events'][0]['event_id']}"),
    ]
    commands = [(r["PartitionKey"], json.loads(r["Data"])) for r in read_stream(aws.kinesis, "dialog-commands")]
    assert sorted((pk, c["idempotency_key"]) for pk, c in commands) == expected_commands
    assert all(
        c["type"] == "START_DRILL" and c["payload"] == {"phone_number": pk, "drill_slug": "01-sample-drill"}
        for pk, c in commands
    )
    assert rows(db.engine, "SELECT count(*) FROM command_outbox WHERE published_at IS NULL") == [(0,)]


def test_the_middle_of_a_real_drill_is_exact(drill_db):
    """User A's batches one micro-batch at a time (each read back from PostgreSQL by the next):
    after FAILED_PROMPT the instance is on prompt "1 - " with that response's time; after the
    COMPLETED_PROMPT + ADVANCED_TO_NEXT_PROMPT batch it is on "2 -" since the advance, the
    response cleared."""
    from drill_progress.ingest import pipeline
    from drill_progress.ingest.pipeline import RawRecord

    instance = (
        "SELECT current_prompt_slug, current_prompt_start_time, current_prompt_last_response_time, "
        "completion_time, is_valid FROM drill_instances"
    )

    def apply(name):
        raw = RawRecord(real(name)["seq"], A, (REAL / f"{name}.json").read_bytes())
        pipeline.apply_micro_batch(drill_db.engine, "dialog-events", "shardId-000000000000", [raw])

    for name in ("user_validation_failed", "user_validated", "drill_started", "failed_prompt"):
        apply(name)
    assert rows(drill_db.engine, instance) == [
        ("1 - ", t("2020-04-07T16:36:25.945339+00:00"), t("2020-04-07T16:36:43.640961+00:00"), None, True)
    ]
    apply("completed_prompt")
    assert rows(drill_db.engine, instance) == [("2 -", t("2020-04-07T16:38:13.600695+00:00"), None, None, True)]
    assert rows(drill_db.engine, "SELECT seq::text FROM users") == [(real("completed_prompt")["seq"],)]
    apply("advanced_to_next_prompt")  # the same batch again: skipped whole by the seq guard
    assert rows(drill_db.engine, instance) == [("2 -", t("2020-04-07T16:38:13.600695+00:00"), None, None, True)]
    assert rows(drill_db.engine, "SELECT count(*) FROM stream_checkpoints") == [(1,)]


def test_real_batches_set_aside_by_the_old_limit_are_reapplied_as_if_live(drill_db):
    """Before migration 0012 every real batch was set aside (`seq: Expected a string of 1 to 30
    decimal digits`). After the fix, dialog_event_reapply applies them in stream order: the
    aggregate is the one a live apply of the same records gives, the seqs exact."""
    from devtools.aggregate import aggregate_rows
    from drill_progress.ingest import pipeline, reapply
    from drill_progress.ingest.pipeline import RawRecord

    engine = drill_db.engine
    base = 49606593837744405372328183282036461982495705134159739085  # the stream's own positions
    names = _in_stream_order()
    with engine.begin() as conn:
        for n, name in enumerate(names):
            conn.exec_driver_sql(
                "INSERT INTO rejected_records (stream, shard_id, sequence_number, partition_key, raw_data, reason) "
                "VALUES ('dialog-events', 'shardId-000000000000', %(s)s, %(p)s, %(d)s, "
                "'seq: Expected a string of 1 to 30 decimal digits')",
                {"s": str(base + n), "p": real(name)["phone_number"], "d": (REAL / f"{name}.json").read_bytes()},
            )
    done = reapply.reapply(engine, "dialog-events")
    assert (done.examined, done.reapplied, done.superseded, done.still_bad, done.failed) == (11, 10, 1, 0, 0)

    reapplied = aggregate_rows(engine)
    seqs = "SELECT p.phone_number, u.seq::text FROM users u JOIN phone_numbers p USING (user_id)"
    assert dict(rows(engine, seqs)) == {
        A: real("drill_completed")["seq"],
        B: real("next_drill_requested")["seq"],
        C: real("reminder_triggered")["seq"],
        D: real("opted_out")["seq"],
    }
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE users, command_outbox, stream_checkpoints CASCADE")
    raws = [
        RawRecord(str(base + n), real(name)["phone_number"], (REAL / f"{name}.json").read_bytes())
        for n, name in enumerate(names)
    ]
    pipeline.apply_micro_batch(engine, "dialog-events", "shardId-000000000000", raws)
    assert aggregate_rows(engine) == reapplied
