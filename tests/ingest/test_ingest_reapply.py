"""Re-applying set-aside records after a fix (`drill_progress.ingest.reapply`, DAG dialog_event_reapply):
applied in stream order when their user has not moved past their seq, reported otherwise, never twice."""

from __future__ import annotations

import json

from airflow_support import return_value, run_state
from ingest_support import batch, event, instance_id, raw_records, read_stream, rows, user_story

from drill_progress.ingest import pipeline, reapply
from drill_progress.setup.aws_resources import ensure_stream

STREAM = "dialog-events"
SHARD = "shardId-000000000000"
A, B, C = "+15552220001", "+15552220002", "+15552220003"

_REFUSE_DRILL_2 = """
CREATE FUNCTION refuse_drill_2() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.drill_slug = '02-sample-drill' THEN RAISE EXCEPTION 'refused by a bug'; END IF;
  RETURN NEW;
END $$;
CREATE FUNCTION refuse_c() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.phone_number = '+15552220003' THEN RAISE EXCEPTION 'refused by a bug'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_drill_2 BEFORE INSERT ON drill_instances FOR EACH ROW EXECUTE FUNCTION refuse_drill_2();
CREATE TRIGGER refuse_c BEFORE INSERT ON phone_numbers FOR EACH ROW EXECUTE FUNCTION refuse_c();
"""


def _docs():
    """A: drill 2 refused, then a later batch applied (A moves past it). B: drill 2 refused twice in a
    row, nothing after (B has not moved past). C: refused from its first batch (a new user)."""
    a, b = user_story(A), user_story(B)
    b_more = batch(6, [event("DRILL_STARTED", 20, B, instance_id(B, 3), drill_slug="02-sample-drill")], B)
    a_more = batch(6, [event("REMINDER_TRIGGERED", 21, A)], A)
    return [*a[:5], *b[:5], b_more, a_more, user_story(C)[0], b"not json at all"]


def _set_aside(engine):
    from drill_progress.db import run_script

    with engine.begin() as conn:
        run_script(conn, _REFUSE_DRILL_2)
    docs = _docs()
    stats = pipeline.apply_micro_batch(engine, STREAM, SHARD, raw_records(docs))
    with engine.begin() as conn:
        run_script(conn, "DROP TRIGGER refuse_drill_2 ON drill_instances; DROP TRIGGER refuse_c ON phone_numbers")
    return docs, stats


def _seqs(engine):
    return dict(rows(engine, "SELECT p.phone_number, u.seq FROM users u JOIN phone_numbers p USING (user_id)"))


def test_records_are_reapplied_in_order_or_reported_never_twice(drill_db):
    docs, stats = _set_aside(drill_db.engine)
    # set aside: A's seq 5, B's seq 5 and 6, C's seq 1, the non-JSON record
    assert stats.records_rejected == 5
    assert _seqs(drill_db.engine) == {A: 6, B: 4}

    dry = reapply.reapply(drill_db.engine, STREAM, dry_run=True)
    assert (dry.examined, dry.reapplied, dry.superseded, dry.still_bad) == (5, 3, 1, 1)
    assert _seqs(drill_db.engine) == {A: 6, B: 4}
    assert rows(drill_db.engine, "SELECT count(*) FROM rejected_records WHERE resolved_at IS NOT NULL") == [(0,)]

    done = reapply.reapply(drill_db.engine, STREAM)
    assert (done.examined, done.reapplied, done.superseded, done.still_bad, done.failed) == (5, 3, 1, 1, 0)
    assert _seqs(drill_db.engine) == {A: 6, B: 6, C: 1}
    assert rows(
        drill_db.engine,
        "SELECT drill_instance_id::text FROM drill_statuses WHERE drill_slug = '02-sample-drill' "
        "AND drill_instance_id IS NOT NULL",
    ) == [(instance_id(B, 3),)]  # applied in order
    assert done.commands == [f"ingest:{docs[-2]['events'][0]['event_id']}"]  # C's START_DRILL
    resolution = dict(rows(drill_db.engine, "SELECT sequence_number, resolution FROM rejected_records"))
    seq = [r.sequence_number for r in raw_records(docs)]
    assert resolution == {
        seq[4]: "superseded",
        seq[9]: "reapplied",
        seq[10]: "reapplied",
        seq[12]: "reapplied",
        seq[13]: None,
    }
    assert done.examples["superseded"] == [f"{SHARD} {seq[4]}: ***0001 is already at seq 6, the batch has seq 5"]
    assert "5552220001" not in json.dumps(done.as_dict())

    again = reapply.reapply(drill_db.engine, STREAM)
    assert (again.examined, again.reapplied, again.still_bad, again.commands) == (1, 0, 1, [])


def test_reapply_dag_applies_and_publishes_once(run_dag, airflow_env):
    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    _set_aside(db.engine)
    run = run_dag("dialog_event_reapply", {"shard_id": SHARD})
    assert run_state(run) == "success"
    result = return_value(run, "reapply_rejected")
    assert (result["reapplied"], result["superseded"], result["still_bad"], result["commands_published"]) == (
        3,
        1,
        1,
        1,
    )
    commands = [json.loads(r["Data"]) for r in read_stream(aws.kinesis, "dialog-commands")]
    assert [(c["type"], c["payload"]["phone_number"]) for c in commands] == [("START_DRILL", C)]
    assert run_state(run_dag("dialog_event_reapply", {})) == "success"
    assert len(read_stream(aws.kinesis, "dialog-commands")) == 1
    assert (
        return_value(run_dag("dialog_event_reapply", {"shard_id": "shardId-000000000009"}), "reapply_rejected")[
            "examined"
        ]
        == 0
    )
