"""The reminder query and the enqueue/publish cycle against real PostgreSQL and the moto server."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from reminder_seed import add_instance, advance, outbox_rows, read_stream

from drill_progress import outbox
from drill_progress.reminders import due as reminders
from drill_progress.setup.aws_resources import ensure_stream

REF = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
STREAM = "dialog-commands"


def _due(engine, ref=REF, floor=240, ceil=1440):
    with engine.connect() as conn:
        return reminders.find_due(conn, ref, reminders.window(floor, ceil))


def _run(db, aws, ref=REF, stream=STREAM, **kwargs):
    return reminders.trigger_reminders(db.engine, aws.kinesis, stream, reference=ref, **kwargs)


def test_window_edges(drill_db):
    ago = {
        label: add_instance(drill_db.engine, started=REF - delta)
        for label, delta in {
            "3h59": timedelta(hours=3, minutes=59),
            "4h00": timedelta(hours=4),
            "4h01": timedelta(hours=4, minutes=1),
            "23h59": timedelta(hours=23, minutes=59),
            "24h00": timedelta(hours=24),
            "24h01": timedelta(hours=24, minutes=1),
        }.items()
    }
    due = {c.drill_instance_id for c in _due(drill_db.engine)}
    assert due == {ago["4h00"], ago["4h01"], ago["23h59"]}
    # the window follows the params
    due = {c.drill_instance_id for c in _due(drill_db.engine, floor=0, ceil=240)}
    assert due == {ago["3h59"]}  # 4h00 is exactly ceil: excluded


def test_completed_invalid_and_promptless_instances_are_excluded(drill_db):
    started = REF - timedelta(hours=6)
    due_id = add_instance(drill_db.engine, started=started)
    add_instance(drill_db.engine, started=started, completed=REF - timedelta(hours=1))
    add_instance(drill_db.engine, started=started, valid=False)  # opted out / re-validated
    add_instance(drill_db.engine, started=started, prompt=None)
    add_instance(drill_db.engine, started=None)
    due = _due(drill_db.engine)
    assert [c.drill_instance_id for c in due] == [due_id]
    assert due[0].idempotency_key == f"reminder:{due_id}:q1"
    assert due[0].already_enqueued is False


def test_query_is_served_by_the_partial_index(drill_db):
    with drill_db.engine.begin() as conn:
        # a realistic shape: many completed instances, a few stuck ones
        conn.exec_driver_sql("INSERT INTO users (user_id, seq) SELECT gen_random_uuid(), 1 FROM generate_series(1, 1)")
        conn.exec_driver_sql(
            """
            INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug,
                current_prompt_slug, current_prompt_start_time, completion_time, is_valid)
            SELECT gen_random_uuid(), (SELECT user_id FROM users LIMIT 1), '+15550000000', '01-sample-drill',
                   CASE WHEN g %% 50 = 0 THEN 'q1' END, %(ref)s::timestamptz - g * interval '1 minute',
                   CASE WHEN g %% 50 <> 0 THEN %(ref)s::timestamptz END, true
            FROM generate_series(1, 5000) g""",
            {"ref": REF},
        )
        conn.exec_driver_sql("ANALYZE drill_instances")
        plan = reminders.explain_due(conn, REF, reminders.window())
    assert "drill_instances_reminder_idx" in plan, plan
    assert "Seq Scan on drill_instances" not in plan, plan
    assert len(_due(drill_db.engine)) == len([g for g in range(240, 1440) if g % 50 == 0])


def test_one_reminder_per_instance_and_prompt_across_reruns(drill_db, aws, caplog):
    ensure_stream(aws.kinesis, STREAM)
    phone = "+15557654321"
    inst = add_instance(drill_db.engine, started=REF - timedelta(hours=5), phone=phone)
    other = add_instance(drill_db.engine, started=REF - timedelta(hours=2))  # not yet due
    with caplog.at_level(logging.INFO, logger="drill_progress"):
        first = _run(drill_db, aws)
    assert (first["candidates"], first["enqueued"], first["published"], first["failed"]) == (1, 1, 1, 0)
    assert phone not in caplog.text and "***4321" in caplog.text

    # re-run of the same slot, and the next slots, while the prompt is still waiting
    for ref in (REF, REF + timedelta(minutes=5), REF + timedelta(minutes=10)):
        again = _run(drill_db, aws, ref=ref)
        assert (again["candidates"], again["already_enqueued"], again["enqueued"], again["published"]) == (1, 1, 0, 0)
    later = _run(drill_db, aws, ref=REF + timedelta(hours=3))  # `other` is due now, `inst` still is
    assert (later["candidates"], later["already_enqueued"], later["enqueued"], later["published"]) == (2, 1, 1, 1)
    records = read_stream(aws.kinesis, STREAM)
    by_instance = [json.loads(r["Data"])["payload"]["drill_instance_id"] for r in records]
    assert sorted(by_instance) == sorted([inst, other])

    body = json.loads(next(r["Data"] for r in records if json.loads(r["Data"])["payload"]["drill_instance_id"] == inst))
    assert body == {
        "type": "TRIGGER_REMINDER",
        "payload": {"phone_number": phone, "drill_instance_id": inst, "prompt_slug": "q1"},
        "idempotency_key": f"reminder:{inst}:q1",
    }
    assert (
        next(r["PartitionKey"] for r in records if json.loads(r["Data"])["payload"]["drill_instance_id"] == inst)
        == phone
    )


def test_prompt_advanced_since_last_reminder_gets_its_own(drill_db, aws):
    ensure_stream(aws.kinesis, STREAM)
    inst = add_instance(drill_db.engine, started=REF - timedelta(hours=20))
    assert _run(drill_db, aws)["published"] == 1
    advance(drill_db.engine, inst, "q2", REF + timedelta(minutes=1))
    later = REF + timedelta(hours=5)
    assert _run(drill_db, aws, ref=later)["published"] == 1
    assert _run(drill_db, aws, ref=later + timedelta(minutes=5))["published"] == 0
    prompts = [json.loads(r["Data"])["payload"]["prompt_slug"] for r in read_stream(aws.kinesis, STREAM)]
    assert prompts == ["q1", "q2"]
    assert [row[0] for row in outbox_rows(drill_db.engine)] == [f"reminder:{inst}:q1", f"reminder:{inst}:q2"]


def test_completed_after_window_start_gets_no_reminder(drill_db, aws):
    ensure_stream(aws.kinesis, STREAM)
    inst = add_instance(drill_db.engine, started=REF - timedelta(hours=5))
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE drill_instances SET completion_time = %(t)s, current_prompt_slug = NULL, "
            "current_prompt_start_time = NULL WHERE drill_instance_id = %(d)s",
            {"t": REF, "d": inst},
        )
    assert _run(drill_db, aws)["candidates"] == 0
    assert read_stream(aws.kinesis, STREAM) == []


def test_missing_stream_then_retry_sends_each_exactly_once(drill_db, aws):
    ids = [add_instance(drill_db.engine, started=REF - timedelta(hours=6, minutes=i)) for i in range(3)]
    with pytest.raises(outbox.PublishError, match="3 reminders could not be published"):
        _run(drill_db, aws, max_attempts=2)  # the stream does not exist yet
    rows = outbox_rows(drill_db.engine)
    assert len(rows) == 3 and all(r[4] is None for r in rows)  # recorded, still pending

    ensure_stream(aws.kinesis, STREAM)
    retry = _run(drill_db, aws, ref=REF + timedelta(minutes=5))  # the retry / next run
    assert (retry["enqueued"], retry["already_enqueued"], retry["published"]) == (0, 3, 3)
    assert _run(drill_db, aws)["published"] == 0
    sent = [json.loads(r["Data"])["payload"]["drill_instance_id"] for r in read_stream(aws.kinesis, STREAM)]
    assert sorted(sent) == sorted(ids)


class _SecondPutGoesAstray:
    """The real moto client, except that from its second PutRecords call on, records are sent to a
    stream that does not exist, so moto itself fails them: a publish that fails half-way."""

    def __init__(self, kinesis):
        self._kinesis = kinesis
        self.calls = 0

    def put_records(self, **kwargs):
        self.calls += 1
        if self.calls > 1:
            kwargs["StreamName"] = "no-such-stream"
        return self._kinesis.put_records(**kwargs)


def test_partial_publish_failure_then_rerun_loses_and_doubles_nothing(drill_db, aws):
    ensure_stream(aws.kinesis, STREAM)
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (user_id, seq) VALUES ('00000000-0000-0000-0000-000000000001', 1)")
        conn.exec_driver_sql(
            """
            INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug,
                current_prompt_slug, current_prompt_start_time, is_valid)
            SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001', '+1555' || lpad(g::text, 7, '0'),
                   '01-sample-drill', 'q1', %(ref)s::timestamptz - interval '5 hours' - g * interval '1 second', true
            FROM generate_series(1, 620) g""",
            {"ref": REF},
        )
    flaky = _SecondPutGoesAstray(aws.kinesis)
    with pytest.raises(outbox.PublishError, match="120 reminders could not be published"):
        reminders.trigger_reminders(drill_db.engine, flaky, STREAM, reference=REF, max_attempts=2)
    assert len(read_stream(aws.kinesis, STREAM)) == 500
    with drill_db.engine.connect() as conn:
        pending = conn.exec_driver_sql(
            "SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FILTER (WHERE last_error IS NOT NULL) "
            "FROM command_outbox"
        ).one()
    assert tuple(pending) == (120, 120)

    retry = _run(drill_db, aws, ref=REF + timedelta(minutes=5))
    assert (retry["candidates"], retry["enqueued"], retry["published"], retry["failed"]) == (620, 0, 120, 0)
    records = read_stream(aws.kinesis, STREAM)
    keys = [json.loads(r["Data"])["idempotency_key"] for r in records]
    assert len(keys) == 620 and len(set(keys)) == 620
    assert all(r["PartitionKey"] == json.loads(r["Data"])["payload"]["phone_number"] for r in records)


def test_overlapping_enqueue_records_each_key_once(drill_db):
    add_instance(drill_db.engine, started=REF - timedelta(hours=5))
    win = reminders.window()
    # two runs found the same candidate before either committed: the conditional write keeps one
    with drill_db.engine.connect() as conn:
        stale = reminders.find_due(conn, REF, win)
    assert reminders.enqueue_due(drill_db.engine, REF, win)["enqueued"] == 1
    with drill_db.engine.begin() as conn:
        assert outbox.enqueue(conn, [c.command() for c in stale], reminders.SOURCE) == []
    assert len(outbox_rows(drill_db.engine)) == 1


def test_invalid_window_touches_nothing(drill_db, aws):
    add_instance(drill_db.engine, started=REF - timedelta(hours=5))
    with pytest.raises(reminders.InvalidWindow):
        _run(drill_db, aws, floor_minutes=1440, ceil_minutes=240)
    assert outbox_rows(drill_db.engine) == []


# ---------------------------------------------------------------------------- "ever", without outbox rows


def _reminded(engine, instance_id: str):
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT reminded_prompts FROM drill_instances WHERE drill_instance_id = %(d)s", {"d": instance_id}
        ).scalar()


def test_a_reminded_prompt_is_never_reminded_again_once_the_outbox_is_pruned(drill_db, aws):
    ensure_stream(aws.kinesis, STREAM)
    inst = add_instance(drill_db.engine, started=REF - timedelta(hours=5))
    assert _run(drill_db, aws)["published"] == 1
    assert _reminded(drill_db.engine, inst) == ["q1"]
    with drill_db.engine.begin() as conn:  # what drill_progress_maintenance does with retention 0
        conn.exec_driver_sql("DELETE FROM command_outbox WHERE published_at IS NOT NULL")
    for ref in (REF, REF + timedelta(minutes=5), REF + timedelta(hours=10)):
        again = _run(drill_db, aws, ref=ref)
        assert (again["candidates"], again["already_enqueued"], again["enqueued"], again["published"]) == (1, 1, 0, 0)
    advance(drill_db.engine, inst, "q2", REF + timedelta(hours=1))
    assert _run(drill_db, aws, ref=REF + timedelta(hours=6))["published"] == 1
    assert _reminded(drill_db.engine, inst) == ["q1", "q2"]
    prompts = [json.loads(r["Data"])["payload"]["prompt_slug"] for r in read_stream(aws.kinesis, STREAM)]
    assert prompts == ["q1", "q2"]


def test_a_prompt_that_moved_on_or_finished_since_it_was_found_is_not_reminded(drill_db):
    moved = add_instance(drill_db.engine, started=REF - timedelta(hours=5))
    finished = add_instance(drill_db.engine, started=REF - timedelta(hours=5))
    opted_out = add_instance(drill_db.engine, started=REF - timedelta(hours=5))
    with drill_db.engine.connect() as conn:
        found = reminders.find_due(conn, REF, reminders.window())
    advance(drill_db.engine, moved, "q2", REF)  # ingestion committed meanwhile
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE drill_instances SET completion_time = %(t)s WHERE drill_instance_id = %(d)s",
            {"t": REF, "d": finished},
        )
        conn.exec_driver_sql(
            "UPDATE drill_instances SET is_valid = false WHERE drill_instance_id = %(d)s", {"d": opted_out}
        )
    with drill_db.engine.begin() as conn:
        assert reminders.mark_reminded(conn, found) == set()
    assert [_reminded(drill_db.engine, i) for i in (moved, finished, opted_out)] == [None, None, None]


def test_overlapping_runs_mark_a_prompt_once(drill_db):
    """Two runs found the same prompt; the second one's conditional UPDATE waits for the first,
    then re-checks the row's new version and marks (so enqueues) nothing."""
    import threading

    inst = add_instance(drill_db.engine, started=REF - timedelta(hours=5))
    with drill_db.engine.connect() as conn:
        found = reminders.find_due(conn, REF, reminders.window())
    second: list = []
    with drill_db.engine.begin() as first:
        assert reminders.mark_reminded(first, found) == {(inst, "q1")}

        def other_run():
            with drill_db.engine.begin() as conn:
                second.append(reminders.mark_reminded(conn, found))

        thread = threading.Thread(target=other_run)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()  # waiting for the first run's row lock
    thread.join(30)
    assert second == [set()]
    assert _reminded(drill_db.engine, inst) == ["q1"]
