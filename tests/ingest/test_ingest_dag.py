"""`dialog_event_ingest` end to end through dag.test() against real PostgreSQL and the moto server."""

from __future__ import annotations

import json

from airflow_support import run_state as _state
from ingest_support import PHONE, VALID_EXAMPLES, example_bytes, put_docs, read_stream, rows, user_story

from drill_progress import ids
from drill_progress.setup.aws_resources import ensure_stream


def _commands(kinesis, stream="dialog-commands"):
    return [(r["PartitionKey"], json.loads(r["Data"])) for r in read_stream(kinesis, stream)]


def _task_states(dag_run) -> dict:
    return {
        (ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()
    }


def test_dag_ingests_contract_examples_and_publishes_commands_once(run_dag, airflow_env):
    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, "dialog-events", 2)
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    other = "+15550009999"
    docs = [example_bytes(n) for n in VALID_EXAMPLES[:8]]  # up to DRILL_COMPLETED
    for doc in docs:
        aws.kinesis.put_record(StreamName="dialog-events", Data=doc, PartitionKey=PHONE)
    aws.kinesis.put_record(StreamName="dialog-events", Data=example_bytes("bad_not_json"), PartitionKey=PHONE)
    put_docs(aws.kinesis, "dialog-events", user_story(other)[:2])

    run = run_dag("dialog_event_ingest")
    assert _state(run) == "success", _task_states(run)
    seqs = dict(rows(db.engine, "SELECT p.phone_number, u.seq FROM users u JOIN phone_numbers p USING (user_id)"))
    assert seqs == {PHONE: 8, other: 2}
    assert rows(db.engine, "SELECT count(*) FROM drill_statuses") == [(6,)]
    assert rows(db.engine, "SELECT count(*) FROM drill_instances") == [(2,)]
    assert rows(db.engine, "SELECT partition_key FROM rejected_records") == [(PHONE,)]
    commands = _commands(aws.kinesis)
    assert sorted((pk, c["type"], c["payload"]["drill_slug"]) for pk, c in commands) == [
        (other, "START_DRILL", "01-sample-drill"),
        (PHONE, "START_DRILL", "01-sample-drill"),
    ]
    assert all(c["payload"]["phone_number"] == pk and c["idempotency_key"].startswith("ingest:") for pk, c in commands)
    summary = run.get_task_instance("summary").xcom_pull(task_ids="summary")
    assert summary["records_read"] == len(docs) + 3 and summary["records_rejected"] == 1
    assert summary["commands_emitted"] == 2 and summary["batches_applied"] == len(docs) + 2

    # a second run over the same stream: nothing new, nothing re-published
    assert _state(run_dag("dialog_event_ingest")) == "success"
    assert len(_commands(aws.kinesis)) == 2

    # NEXT_DRILL_REQUESTED -> the user's next drill, once, even when run twice
    aws.kinesis.put_record(StreamName="dialog-events", Data=example_bytes("next_drill_requested"), PartitionKey=PHONE)
    assert _state(run_dag("dialog_event_ingest")) == "success"
    assert _state(run_dag("dialog_event_ingest")) == "success"
    commands = _commands(aws.kinesis)
    assert len(commands) == 3
    assert [c["payload"]["drill_slug"] for pk, c in commands if pk == PHONE] == ["01-sample-drill", "02-sample-drill"]
    assert rows(db.engine, "SELECT count(*) FROM command_outbox WHERE published_at IS NULL") == [(0,)]
    assert rows(db.engine, "SELECT user_id FROM phone_numbers WHERE phone_number = %(p)s", {"p": PHONE}) == [
        (ids.user_id(PHONE),)
    ]


def test_dag_with_empty_stream_succeeds(run_dag, airflow_env, monkeypatch):
    aws = airflow_env["aws"]
    monkeypatch.setenv("AIRFLOW_VAR_DIALOG_EVENT_STREAM", "custom-events")
    monkeypatch.setenv("AIRFLOW_VAR_COMMAND_STREAM", "custom-commands")
    ensure_stream(aws.kinesis, "custom-events", 1)
    ensure_stream(aws.kinesis, "custom-commands", 1)
    run = run_dag("dialog_event_ingest")
    assert _state(run) == "success", _task_states(run)
    put_docs(aws.kinesis, "custom-events", user_story(PHONE)[:1])
    assert _state(run_dag("dialog_event_ingest", conf={"micro_batch_records": 1})) == "success"
    assert len(_commands(aws.kinesis, "custom-commands")) == 1
