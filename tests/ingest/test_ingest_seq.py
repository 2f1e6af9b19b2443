"""Real `seq` values through PostgreSQL: in production a batch's `seq` is the Kinesis sequence
number of the command that caused it (56 digits today, up to 129). The seq guard orders batches by
the exact integer at any length; the checkpoint never moves backwards; a repeated cause is applied
without a second command."""

from __future__ import annotations

import itertools
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import batch, encode, event, rows

from drill_progress import ids
from drill_progress.ingest import pipeline
from drill_progress.ingest.pipeline import RawRecord

STREAM = "dialog-events"
SHARD = "shardId-000000000000"
# Kinesis sequence numbers as the stream gives them (56 digits), for the records' positions
KINESIS_BASE = 49606593837744405372328183282036461982495705134159739085


def position(n: int) -> str:
    return str(KINESIS_BASE + n)


def records(docs: list[dict], first: int) -> list[RawRecord]:
    return [RawRecord(position(n), doc["phone_number"], encode(doc)) for n, doc in enumerate(docs, first)]


def apply(engine, docs: list[dict], first: int) -> pipeline.ShardStats:
    return pipeline.apply_micro_batch(engine, STREAM, SHARD, records(docs, first))


def with_seq(doc: dict, seq: str) -> dict:
    return {**doc, "seq": seq}


# ---- order is exact at any length ----------------------------------------------------------------

SEQS = st.from_regex(r"[0-9]{1,129}", fullmatch=True)


def _neighbours(seq: str) -> list[str]:
    """Seqs next to `seq`: equal, one more, one less, the same with a leading zero, and seqs that
    agree with it on every digit a float or a 64-bit integer would keep."""
    n = int(seq)
    out = [seq, str(n + 1), str(max(n - 1, 0)), "0" + seq, str(n + 10**20), str(n + 1) + "0"]
    return [s for s in out if len(s) <= 129]


SEQ_PAIRS = st.one_of(
    st.tuples(SEQS, SEQS),
    SEQS.flatmap(lambda a: st.tuples(st.just(a), st.sampled_from(_neighbours(a)))),
    st.tuples(
        st.integers(10**55, 10**56 - 1).map(str),  # today's 56-digit sequence numbers
        st.integers(10**55, 10**56 - 1).map(str),
    ),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=SEQ_PAIRS)
def test_the_guard_applies_the_second_batch_iff_its_seq_is_a_greater_integer(drill_db, pair):
    """Two batches of one phone number, in two micro-batches (the first stored in users.seq and
    read back): the second applies if and only if int(second) > int(first)."""
    first, second = pair
    phone = f"+1555{next(_phones):07d}"
    docs = [
        with_seq(batch(1, [event("USER_VALIDATED", 0, phone)], phone), first),
        with_seq(batch(2, [event("REMINDER_TRIGGERED", 1, phone)], phone), second),
    ]
    n = next(_positions)
    assert apply(drill_db.engine, docs[:1], 2 * n).batches_applied == 1
    stats = apply(drill_db.engine, docs[1:], 2 * n + 1)
    later = int(second) > int(first)
    assert (stats.batches_applied, stats.duplicates_skipped, stats.records_rejected) == (int(later), int(not later), 0)
    [(seq, last)] = rows(
        drill_db.engine,
        "SELECT seq::text, last_interacted_time FROM users WHERE user_id = %(u)s",
        {"u": ids.user_id(phone)},
    )
    assert seq == str(int(second) if later else int(first))
    assert last == datetime.fromisoformat(docs[1 if later else 0]["events"][-1]["created_time"])


_phones = itertools.count(1)
_positions = itertools.count(1)


def test_a_129_digit_seq_is_stored_exactly_and_orders_against_its_neighbours(drill_db):
    phone = "+15551239999"
    top = "9" * 129
    below = "9" * 128 + "8"
    docs = [
        with_seq(batch(1, [event("USER_VALIDATED", 0, phone)], phone), below),
        with_seq(batch(2, [event("REMINDER_TRIGGERED", 1, phone)], phone), top),
        with_seq(batch(3, [event("REMINDER_TRIGGERED", 2, phone)], phone), below),  # late: skipped
        with_seq(
            batch(4, [event("REMINDER_TRIGGERED", 3, phone)], phone), "00" + "9" * 127
        ),  # 129 characters, a smaller integer
    ]
    stats = apply(drill_db.engine, docs, 1)
    assert (stats.batches_applied, stats.duplicates_skipped, stats.records_rejected) == (2, 2, 0)
    assert rows(drill_db.engine, "SELECT seq::text, seq = 10::numeric ^ 129 - 1 FROM users") == [(top, True)]
    # and a 130-digit seq is set aside with its reason, never applied
    stats = apply(drill_db.engine, [with_seq(batch(5, [event("REMINDER_TRIGGERED", 4, phone)], phone), "1" + top)], 9)
    assert (stats.batches_applied, stats.records_rejected) == (0, 1)
    assert rows(drill_db.engine, "SELECT reason FROM rejected_records") == [
        ("seq: Expected a string of 1 to 129 decimal digits",)
    ]
    assert rows(drill_db.engine, "SELECT seq::text FROM users") == [(top,)]


# ---- the checkpoint never moves backwards ----------------------------------------------------------


def test_a_replayed_older_record_never_moves_the_checkpoint_backwards(drill_db):
    phone = "+15551230042"
    docs = [batch(n, [event("REMINDER_TRIGGERED", n, phone)], phone) for n in range(1, 6)]
    apply(drill_db.engine, docs, 1)  # records 1-5
    checkpoint = "SELECT sequence_number, records_applied FROM stream_checkpoints"
    assert rows(drill_db.engine, checkpoint) == [(position(5), 5)]
    stats = apply(drill_db.engine, docs[1:3], 2)  # records 2-3 again (a replay)
    assert (stats.batches_applied, stats.duplicates_skipped) == (0, 2)
    assert rows(drill_db.engine, checkpoint) == [(position(5), 7)]
    # a record past it still moves it on
    apply(drill_db.engine, [batch(6, [event("REMINDER_TRIGGERED", 6, phone)], phone)], 6)
    assert rows(drill_db.engine, checkpoint) == [(position(6), 8)]


def test_the_checkpoint_compares_positions_as_integers_not_text(drill_db):
    """A position with more digits is later, though it sorts first as text ("10" < "9")."""
    phone = "+15551230043"
    docs = [batch(n, [event("REMINDER_TRIGGERED", n, phone)], phone) for n in (1, 2)]
    pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, [RawRecord("10", phone, encode(docs[1]))])
    pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, [RawRecord("9", phone, encode(docs[0]))])
    assert rows(drill_db.engine, "SELECT sequence_number FROM stream_checkpoints") == [("10",)]


# ---- a repeated cause: applied, nothing set aside, no second command --------------------------------


def test_a_later_batch_that_repeats_an_applied_event_id_adds_no_second_outbox_row(drill_db):
    """The outbox key of a command caused by an event is `ingest:<event_id>`. A later batch (a
    greater seq) that carries an event id already applied is applied like any batch, but the
    command that event causes is already in the outbox: it is not written twice and the batch is
    not set aside."""
    phone = "+15551230044"
    validated = event("USER_VALIDATED", 0, phone)
    apply(drill_db.engine, [batch(1, [validated], phone)], 1)
    outbox = "SELECT idempotency_key, command_type, payload->>'drill_slug' FROM command_outbox"
    assert rows(drill_db.engine, outbox) == [(f"ingest:{validated['event_id']}", "START_DRILL", "01-sample-drill")]

    later = batch(2, [event("REMINDER_TRIGGERED", 1, phone), validated], phone)
    stats = apply(drill_db.engine, [later], 2)
    assert (stats.batches_applied, stats.records_rejected, stats.commands_emitted) == (1, 0, 0)
    assert rows(drill_db.engine, "SELECT count(*) FROM rejected_records") == [(0,)]
    assert rows(drill_db.engine, outbox) == [(f"ingest:{validated['event_id']}", "START_DRILL", "01-sample-drill")]
    assert rows(drill_db.engine, "SELECT seq FROM users") == [(2,)]
