"""The apply path's speed measures keep its behaviour: invalid UTF-8 anywhere is bad input, a
micro-batch costs a bounded number of statements, and the garbage-collector pause is scoped."""

from __future__ import annotations

import gc
import json

import pytest
from ingest_support import PHONE, batch, event, example, instance_id, raw_records, rows, user_story
from sqlalchemy import event as sa_event

from drill_progress.ingest import events as ev
from drill_progress.ingest import pipeline

STREAM = "dialog-events"
SHARD = "shardId-000000000000"


def test_invalid_utf8_inside_a_string_is_bad_input():
    """The C decoder raises UnicodeDecodeError (not its DecodeError) for invalid UTF-8 inside a JSON
    string; that is bad input with a reason, never an exception that stops the shard."""
    data = json.dumps(example("reminder_triggered")).encode().replace(b'"en"', b'"\xff\xfe"')
    with pytest.raises(ev.BadRecord, match="not valid UTF-8"):
        ev.parse_record(data)
    [parsed] = pipeline.parse_records(raw_records([data]))
    assert parsed.batch is None and "not valid UTF-8" in parsed.reason


def test_invalid_utf8_record_is_set_aside_and_the_stream_flows(drill_db):
    bad = json.dumps(batch(1, [event("USER_VALIDATED", 0)])).encode().replace(b'"en"', b'"\xc3\x28"')
    stats = pipeline.apply_micro_batch(
        drill_db.engine, STREAM, SHARD, raw_records([bad, batch(2, [event("USER_VALIDATED", 1)])])
    )
    assert (stats.records_rejected, stats.batches_applied) == (1, 1)
    [(reason,)] = rows(drill_db.engine, "SELECT reason FROM rejected_records")
    assert reason.startswith("not valid UTF-8")


def _count_statements(engine):
    statements: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa_event.listen(engine, "before_cursor_execute", before)
    return statements, lambda: sa_event.remove(engine, "before_cursor_execute", before)


def test_a_micro_batch_is_a_few_statements_whatever_its_size(drill_db):
    """New users: lock+catalog, write. Existing users: lock+catalog, trees, write. Redelivered:
    lock+catalog, trees, write (the checkpoint). Bad records, the checkpoint and the outbox rows
    ride along in the write statement."""
    phones = [f"+1555000{n:04d}" for n in range(40)]
    stories = {p: user_story(p) for p in phones}
    first = [stories[p][0] for p in phones] + [b"not json"]
    rest = [doc for r in range(1, 5) for p in phones for doc in [stories[p][r]]]
    statements, stop = _count_statements(drill_db.engine)
    try:
        stats = pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raw_records(first))
        assert len(statements) == 2 and stats.records_rejected == 1 and stats.commands_emitted == 40
        statements.clear()
        stats = pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raw_records(rest, start=len(first) + 1))
        assert stats.batches_applied == len(rest) and len(statements) == 3
        statements.clear()
        stats = pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raw_records(rest, start=len(first) + 1))
        assert stats.duplicates_skipped == len(rest) and len(statements) == 3
    finally:
        stop()
    assert rows(drill_db.engine, "SELECT count(*) FROM drill_statuses") == [(3 * len(phones),)]
    assert rows(drill_db.engine, "SELECT count(*) FROM rejected_records") == [(1,)]


def test_write_users_alone_writes_no_checkpoint(drill_db):
    """write_users() outside a micro-batch (used by the rollout's tests) leaves stream_checkpoints alone."""
    from drill_progress.ingest import fold, store

    with drill_db.engine.begin() as conn:
        user = fold.new_user(PHONE, store.load_catalog(conn))
        user.seq, user.profile, user.changed = 1, {"validated": True}, True
        counts = store.write_users(conn, {PHONE: user})
    assert counts == {"users": 1, "phone_numbers": 1, "drill_statuses": 3, "drill_instances": 0}
    assert rows(drill_db.engine, "SELECT count(*) FROM stream_checkpoints") == [(0,)]
    assert rows(drill_db.engine, "SELECT count(*) FROM drill_statuses") == [(3,)]


def test_gc_is_paused_only_during_a_micro_batch(drill_db):
    seen = []

    def fault(stage, conn):
        seen.append((stage, gc.isenabled()))

    assert gc.isenabled()
    pipeline.apply_micro_batch(
        drill_db.engine, STREAM, SHARD, raw_records([batch(1, [event("USER_VALIDATED", 0)])]), fault=fault
    )
    assert seen == [("before_commit", False), ("after_commit", False)]
    assert gc.isenabled()
    gc.disable()
    try:
        with pipeline.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # a caller's own choice is left alone
    finally:
        gc.enable()


def test_gc_is_re_enabled_when_a_micro_batch_fails(drill_db):
    def fault(stage, conn):
        if stage == "before_commit":
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        pipeline.apply_micro_batch(
            drill_db.engine, STREAM, SHARD, raw_records([batch(1, [event("USER_VALIDATED", 0)])]), fault=fault
        )
    assert gc.isenabled()


def test_a_bug_in_the_write_fails_the_micro_batch_at_once(drill_db, monkeypatch):
    """A write the driver refuses before it reaches the server (here a template naming a parameter
    the plan does not carry: psycopg's ProgrammingError, no SQLSTATE) is the code's fault, not the
    records': the shard stops at the first attempt with the error (no retry, no bisecting, no
    attempt to set a good record aside), and nothing is written."""
    from drill_progress.ingest import store

    real_run, writes = store.run, []

    def broken_run(conn, template, params=None):
        if template == "ingest/write_trees.sql":
            writes.append(template)
            return conn.exec_driver_sql("SELECT %(not_in_the_plan)s", dict(params or {}))
        return real_run(conn, template, params)

    monkeypatch.setattr(store, "run", broken_run)
    docs = [batch(1, [event("USER_VALIDATED", 0)]), batch(2, [event("USER_VALIDATED", 1)])]
    with pytest.raises(Exception, match="query parameter missing: not_in_the_plan"):
        pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raw_records(docs))
    assert len(writes) == 1
    assert rows(drill_db.engine, "SELECT count(*) FROM rejected_records") == [(0,)]
    assert rows(drill_db.engine, "SELECT count(*) FROM stream_checkpoints") == [(0,)]


def test_an_event_naming_another_users_instance_never_touches_it(drill_db):
    """Instances named by events are loaded whoever owns them and kept for the micro-batch's own
    users only (store.py, a dictionary lookup instead of a per-row filter in load_trees.sql): user
    B's events naming user A's drill instance leave A's instance as it was, and B's DRILL_STARTED
    reusing A's instance id is set aside, never a takeover."""
    a, b = "+15550000001", "+15550000002"
    shared = instance_id(a, 1)
    first = [
        batch(
            1, [event("USER_VALIDATED", 0, a), event("DRILL_STARTED", 1, a, shared, drill_slug="01-sample-drill")], a
        ),
        batch(1, [event("USER_VALIDATED", 0, b)], b),
    ]
    pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raw_records(first))
    query = "SELECT user_id, current_prompt_slug, current_prompt_last_response_time FROM drill_instances"
    before = rows(drill_db.engine, query)
    later = [
        batch(2, [event("COMPLETED_PROMPT", 2, b, shared, prompt="q1")], b),
        batch(3, [event("DRILL_STARTED", 3, b, shared, drill_slug="01-sample-drill")], b),
    ]
    stats = pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raw_records(later, start=3))
    assert rows(drill_db.engine, query) == before
    assert stats.records_rejected == 1
    [(reason,)] = rows(drill_db.engine, "SELECT reason FROM rejected_records")
    assert "23505" in reason and "drill_instances_pkey" in reason, reason
