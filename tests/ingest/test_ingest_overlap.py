"""`Applier.apply_pages`: the next micro-batch is loaded and folded while the previous one is
written, on a second connection. Whatever the overlap, the end state is the one micro-batches
applied one after the other reach, and commits stay in stream order."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from ingest_support import batch, checksum, event, instance_id, raw_records, rows, user_story

from drill_progress.db import make_engine
from drill_progress.ingest import pipeline

STREAM = "dialog-events"
SHARD = "shardId-000000000000"
PHONES = [f"+1555200{n:04d}" for n in range(6)]


def pages(docs, size, start=1):
    raws = raw_records(docs, start)
    return [(raws[i : i + size], 0) for i in range(0, len(raws), size)]


def apply_pages(engine, docs, size, **kwargs) -> pipeline.ShardStats:
    applier = pipeline.Applier(engine, STREAM, SHARD, **kwargs)
    applier.apply_pages(pages(docs, size))
    return applier.stats


def one_at_a_time(pg_server, docs, size, prepare=None) -> str:
    """Checksum of the same pages applied one after the other, in a fresh database."""
    name = f"ingest_sequential_{time.monotonic_ns()}"
    pg_server.create_database(name, template="drill_template")
    engine = make_engine(pg_server.uri(name))
    try:
        if prepare:
            prepare(engine)
        applier = pipeline.Applier(engine, STREAM, SHARD)
        for raws, behind_ms in pages(docs, size):
            applier.apply_records(raws, behind_ms)
        return checksum(engine)
    finally:
        engine.dispose()
        pg_server.drop_database(name)


def interleaved(phones=PHONES):
    stories = [user_story(p) for p in phones]
    return [story[i] for i in range(5) for story in stories]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 6, 7])
def test_same_end_state_as_one_micro_batch_at_a_time(drill_db, pg_server, size):
    """Sizes where consecutive micro-batches share users (wait for the commit) and where they don't."""
    docs = interleaved()
    stats = apply_pages(drill_db.engine, docs, size)
    assert stats.batches_applied == len(docs) and stats.commands_emitted == 2 * len(PHONES)
    assert stats.transactions == stats.micro_batches == len(pages(docs, size))  # no retry, no bisect
    assert checksum(drill_db.engine) == one_at_a_time(pg_server, docs, size)
    assert rows(drill_db.engine, "SELECT sequence_number, records_applied FROM stream_checkpoints") == [
        (f"{len(docs):030d}", len(docs))
    ]


USER = "00000000-0000-0000-0000-000000000001"


def _second_phone_for_first_user(engine):
    """A user (ids not ours, e.g. migrated data) owning PHONES[0] and PHONES[1]."""
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (user_id, seq) VALUES (%(u)s, 0)", {"u": USER})
        conn.exec_driver_sql(
            "INSERT INTO phone_numbers (id, phone_number, user_id) VALUES "
            "('00000000-0000-0000-0000-00000000000a', %(a)s, %(u)s), "
            "('00000000-0000-0000-0000-00000000000b', %(b)s, %(u)s)",
            {"a": PHONES[0], "b": PHONES[1], "u": USER},
        )
        conn.exec_driver_sql(
            "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence) "
            "VALUES ('00000000-0000-0000-0000-00000000000c', %(u)s, '01-sample-drill', 0)",
            {"u": USER},
        )


def test_one_user_under_two_phone_numbers_in_consecutive_micro_batches(drill_db, pg_server):
    """No shared phone number, yet the same user: the row lock makes the next micro-batch read the
    user only after the previous one committed (and nothing deadlocks)."""
    _second_phone_for_first_user(drill_db.engine)
    a, b = PHONES[0], PHONES[1]
    docs = [
        batch(1, [event("USER_VALIDATED", 1, a)], a),
        batch(2, [event("DRILL_STARTED", 2, b, instance_id(b, 1), drill_slug="01-sample-drill")], b),
        batch(3, [event("COMPLETED_PROMPT", 3, a, instance_id(b, 1))], a),
        batch(4, [event("DRILL_COMPLETED", 4, b, instance_id(b, 1))], b),
    ]
    stats = apply_pages(drill_db.engine, docs, 1)
    assert stats.batches_applied == 4
    assert rows(drill_db.engine, "SELECT seq, last_interacted_time IS NOT NULL FROM users") == [(4, True)]
    assert rows(
        drill_db.engine,
        "SELECT completion_time IS NOT NULL, current_prompt_last_response_time IS NULL FROM drill_instances",
    ) == [(True, True)]
    assert checksum(drill_db.engine) == one_at_a_time(pg_server, docs, 1, _second_phone_for_first_user)


def test_record_error_in_flight_is_bisected_before_the_next_micro_batch_is_written(drill_db, pg_server):
    a, b = PHONES[0], PHONES[1]
    shared = instance_id(a, 1)
    docs = [
        batch(1, [event("DRILL_STARTED", 1, a, shared, drill_slug="01-sample-drill")], a),
        batch(1, [event("DRILL_STARTED", 2, b, shared, drill_slug="01-sample-drill")], b),  # takes a's instance
        batch(1, [event("USER_VALIDATED", 3, PHONES[2])], PHONES[2]),
        batch(2, [event("REMINDER_TRIGGERED", 4, b)], b),
        *interleaved(PHONES[3:]),
    ]
    stats = apply_pages(drill_db.engine, docs, 2)
    assert stats.records_rejected == 1 and stats.batches_applied == len(docs) - 1
    [(sequence_number, reason)] = rows(drill_db.engine, "SELECT sequence_number, reason FROM rejected_records")
    assert sequence_number == f"{2:030d}" and "23505" in reason
    assert checksum(drill_db.engine) == one_at_a_time(pg_server, docs, 2)
    assert rows(drill_db.engine, "SELECT sequence_number FROM stream_checkpoints") == [(f"{len(docs):030d}",)]


def test_commits_in_stream_order_and_a_failed_write_stops_everything_after_it(drill_db, pg_server):
    docs = interleaved()
    commits: list[str] = []
    lock = threading.Lock()

    def fault(stage, conn):
        if stage == "before_commit":
            with lock:
                sequence = conn.exec_driver_sql("SELECT max(sequence_number) FROM stream_checkpoints").scalar()
                if len(commits) == 3:
                    raise RuntimeError("writer lost")
                commits.append(sequence)

    with pytest.raises(RuntimeError, match="writer lost"):
        apply_pages(drill_db.engine, docs, 4, fault=fault)
    # each write saw its own checkpoint: the previous micro-batches had all committed before it
    assert commits == [f"{n:030d}" for n in (4, 8, 12)]
    assert rows(drill_db.engine, "SELECT sequence_number FROM stream_checkpoints") == [(f"{12:030d}",)]
    # the retry from the checkpoint ends where a clean run ends
    applier = pipeline.Applier(drill_db.engine, STREAM, SHARD)
    applier.apply_pages(pages(docs[12:], 4, start=13))
    assert checksum(drill_db.engine) == one_at_a_time(pg_server, docs, 4)
    assert rows(
        drill_db.engine,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%%'",
    ) == [(0,)]


def test_record_error_of_a_user_the_next_micro_batch_locked_under_another_phone(pg_server, drill_db):
    """The failed micro-batch's user is locked by the next one (same user, other phone number): that
    lock is released before the bisect, which would otherwise wait for it for ever."""
    _second_phone_for_first_user(drill_db.engine)
    a, b, c = PHONES[0], PHONES[1], PHONES[2]
    taken = instance_id(c, 1)
    docs = [
        batch(1, [event("DRILL_STARTED", 1, c, taken, drill_slug="01-sample-drill")], c),
        batch(1, [event("DRILL_STARTED", 2, a, taken, drill_slug="01-sample-drill")], a),  # c's instance
        batch(2, [event("REMINDER_TRIGGERED", 3, b)], b),
    ]
    engine = make_engine(drill_db.url, connect_args={"options": "-c lock_timeout=10000"})  # fail, never hang
    try:
        stats = apply_pages(engine, docs, 1)
    finally:
        engine.dispose()
    assert (stats.batches_applied, stats.records_rejected) == (2, 1)
    assert rows(drill_db.engine, "SELECT sequence_number FROM rejected_records") == [(f"{2:030d}",)]
    assert rows(drill_db.engine, "SELECT seq FROM users WHERE user_id = %(u)s", {"u": USER}) == [(2,)]


def test_a_lock_cycle_through_another_transaction_is_broken(drill_db, monkeypatch):
    """Micro-batch 1's write waits for another transaction (say a rollout) holding a status row of
    its user, and that transaction waits for micro-batch 2's lock on its own user: a cycle through
    this process that PostgreSQL cannot detect. Micro-batch 2 lets go of its locks after
    WRITE_PATIENCE_SECONDS, the other transaction and then everything completes."""
    monkeypatch.setattr(pipeline, "WRITE_PATIENCE_SECONDS", 0.5)
    a, b = PHONES[0], PHONES[1]
    apply_pages(
        drill_db.engine, [batch(1, [event("USER_VALIDATED", 1, a)], a), batch(1, [event("USER_VALIDATED", 1, b)], b)], 2
    )
    user_a, user_b = (
        rows(drill_db.engine, "SELECT user_id FROM phone_numbers WHERE phone_number = %(p)s", {"p": p})[0][0]
        for p in (a, b)
    )
    other = make_engine(drill_db.url, connect_args={"options": "-c lock_timeout=20000"})
    outcome: dict = {}

    def other_transaction():
        with other.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE drill_statuses SET place_in_sequence = place_in_sequence WHERE user_id = %(u)s", {"u": user_a}
            )
            held.set()
            while not rows(
                drill_db.engine,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )[0][0]:
                time.sleep(0.01)  # micro-batch 1's write now waits for us
            time.sleep(0.3)  # and micro-batch 2 has locked user b
            started = time.monotonic()
            conn.exec_driver_sql("SELECT 1 FROM users WHERE user_id = %(u)s FOR KEY SHARE", {"u": user_b})
            outcome["waited"] = time.monotonic() - started

    held = threading.Event()
    thread = threading.Thread(target=other_transaction)
    thread.start()
    try:
        held.wait(10)
        docs = [
            batch(2, [event("DRILL_STARTED", 2, a, instance_id(a, 1), drill_slug="01-sample-drill")], a),
            batch(2, [event("REMINDER_TRIGGERED", 2, b)], b),
        ]
        applier = pipeline.Applier(drill_db.engine, STREAM, SHARD)
        applier.apply_pages(pages(docs, 1, start=3))
    finally:
        thread.join(30)
        other.dispose()
    assert 0.1 < outcome["waited"] < 10  # got micro-batch 2's lock once it let go, not by a timeout
    assert applier.stats.batches_applied == 2 and applier.stats.transactions == 2
    assert rows(drill_db.engine, "SELECT seq FROM users ORDER BY seq") == [(2,), (2,)]


def test_thread_switch_interval_is_short_only_while_applying(drill_db):
    seen = []

    def fault(stage, conn):
        seen.append(sys.getswitchinterval())

    before = sys.getswitchinterval()
    apply_pages(drill_db.engine, interleaved()[:4], 2, fault=fault)
    assert seen and all(interval <= 0.001 for interval in seen)
    assert sys.getswitchinterval() == before
