"""Any bytes on the stream, against real PostgreSQL (and the emulator): every record is applied or
set aside in `rejected_records` with a reason, exactly once, and no record stops its shard.

Generated input (Hypothesis strategies of tests/ingest/hostile.py), not only examples: the property
test writes each generated micro-batch through the real write path; the DAG test puts a generated
hostile corpus of 200+ records between good batches on one shard and runs `dialog_event_ingest`."""

from __future__ import annotations

import itertools
import json

import hostile
import pytest
from airflow_support import run_state
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from ingest_support import rows

from drill_progress.ingest import events as ev
from drill_progress.ingest import pipeline
from drill_progress.setup.aws_resources import ensure_stream

STREAM = "dialog-events"
SHARD = "shardId-000000000000"
_sequence = itertools.count(1)


def _read_back(engine) -> None:
    """Every stored value comes back into Python (psycopg parses jsonb and timestamps)."""
    for sql in (
        "SELECT * FROM users",
        "SELECT * FROM phone_numbers",
        "SELECT * FROM drill_statuses",
        "SELECT * FROM drill_instances",
        "SELECT * FROM rejected_records",
        "SELECT * FROM command_outbox",
        "SELECT * FROM stream_checkpoints",
    ):
        rows(engine, sql)


def _write_and_check(engine, records: list[tuple[bytes, str | None]]) -> None:
    """One micro-batch through the real write path: each record applied (or skipped as a duplicate)
    or set aside once, by the edge and never by the database, and everything readable back."""
    raws = [pipeline.RawRecord(f"{next(_sequence):030d}", key, data) for data, key in records]
    stats = pipeline.apply_micro_batch(engine, STREAM, SHARD, raws)
    assert stats.batches_applied + stats.duplicates_skipped + stats.records_rejected == len(raws)
    set_aside = rows(
        engine,
        "SELECT sequence_number, raw_data, partition_key, reason FROM rejected_records "
        "WHERE sequence_number = ANY(%(s)s)",
        {"s": [r.sequence_number for r in raws]},
    )
    assert len(set_aside) == stats.records_rejected
    by_seq = {r.sequence_number: r for r in raws}
    for seq, data, _key, reason in set_aside:
        assert bytes(data) == by_seq[seq].data and reason
        # set aside by the edge, never by the database: what the edge accepts, PostgreSQL stores
        assert not reason.startswith("database error"), reason
    assert rows(engine, "SELECT sequence_number FROM stream_checkpoints") == [(raws[-1].sequence_number,)]
    _read_back(engine)


# No shrinking against the database: a failing example is reported as drawn (shrinking re-runs it
# thousands of times with megabyte records held by tracebacks).
DB_SETTINGS = settings(
    max_examples=150,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@DB_SETTINGS
@given(records=st.lists(st.tuples(hostile.records(), hostile.partition_keys()), min_size=1, max_size=4))
def test_any_micro_batch_is_applied_or_set_aside_in_postgresql(drill_db, records):
    _write_and_check(drill_db.engine, records)


@DB_SETTINGS
@given(doc=hostile.schema_valid_docs(), ascii_only=st.booleans())
def test_what_the_schema_allows_is_stored_or_refused_at_the_edge(drill_db, doc, ascii_only):
    """The line between the schema and storage: batches the schema accepts with one field holding a
    NUL, a surrogate, a control character, a deep or huge value."""
    key = doc["phone_number"] if isinstance(doc["phone_number"], str) else None
    _write_and_check(drill_db.engine, [(hostile.encode(doc, ascii_only), key)])


def test_a_record_the_driver_refuses_is_retried_then_set_aside_alone(drill_db):
    """Past the edge (a Batch built by hand with a NUL in its phone number, which the edge refuses):
    the server refuses it (the arrays travel in binary: 22021, a data error). The micro-batch is
    bisected, the single record tried 3 times; only that record is set aside and the others are
    applied."""
    good = [hostile.a_valid_batch(f"+1777000{n:04d}", 1, n) for n in range(3)]
    raws = [
        pipeline.RawRecord(f"{n:030d}", doc["phone_number"], json.dumps(doc).encode()) for n, doc in enumerate(good, 1)
    ]
    parsed = pipeline.parse_records(raws)
    poisoned = ev.parse_record(raws[1].data)
    poisoned.phone_number = "+1777\x000001"
    parsed[1] = pipeline.Parsed(raws[1], poisoned)
    applier = pipeline.Applier(drill_db.engine, STREAM, SHARD)
    applier.apply(parsed)
    assert (applier.stats.batches_applied, applier.stats.records_rejected) == (2, 1)
    [(seq, reason, attempts)] = rows(drill_db.engine, "SELECT sequence_number, reason, attempts FROM rejected_records")
    assert seq == raws[1].sequence_number and attempts == pipeline.ATTEMPTS
    assert reason == ('database error after 3 attempts: 22021: invalid byte sequence for encoding "UTF8": 0x00')
    # all three are in the event history, the refused one under its phone number made storable
    assert rows(drill_db.engine, "SELECT phone_number FROM event_history ORDER BY id") == [
        ("+17770000000",),
        ("+1777\\x000001",),  # in stream order: bisected, set aside, then the record after it
        ("+17770000002",),
    ]


def test_the_partition_key_and_reason_of_a_set_aside_record_are_stored_whatever_they_hold(drill_db):
    key = "\ud800pk\x00" + "k" * 400
    raws = [pipeline.RawRecord("1", key, b"\x00\xff not json")]
    stats = pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raws)
    assert stats.records_rejected == 1
    [(data, stored_key, reason)] = rows(drill_db.engine, "SELECT raw_data, partition_key, reason FROM rejected_records")
    assert bytes(data) == b"\x00\xff not json" and reason == "not valid UTF-8 (byte 1)"
    assert stored_key == ("\\ud800pk\\x00" + "k" * 400)[:256]


# ---- end to end: a generated hostile corpus through the DAG ----------------------------------------


def _put(kinesis, data: bytes, key: str) -> str | None:
    """Put one record; its sequence number, or None when Kinesis itself refuses it (over 1 MiB)."""
    try:
        return kinesis.put_record(StreamName=STREAM, Data=data, PartitionKey=key)["SequenceNumber"]
    except kinesis.exceptions.ClientError:
        return None
    except Exception as exc:  # botocore's ValidationException class is generated per service
        if "ValidationException" in type(exc).__name__ or "validation" in str(exc).lower():
            return None
        raise


KEYS = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=256)


def hostile_corpus(size: int) -> list[tuple[bytes, str]]:
    """`size` (record, partition key) pairs drawn by Hypothesis from hostile.records() (derandomized:
    the same corpus on every run)."""
    drawn: list[tuple[bytes, str]] = []

    @settings(
        max_examples=size,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile.records(), KEYS)
    def collect(record, key):
        drawn.append((record, key))

    collect()
    return drawn


def test_a_hostile_corpus_never_stops_the_shard(run_dag, airflow_env):
    aws, db = airflow_env["aws"], airflow_env["db"]
    ensure_stream(aws.kinesis, STREAM, 1)
    ensure_stream(aws.kinesis, "dialog-commands", 1)
    corpus = hostile_corpus(220)
    assert len(corpus) >= 200
    expected_bad, accepted, good_phones = set(), 0, []
    for n, (record, key) in enumerate(corpus):
        if n % 10 == 0:  # a good batch every ten records
            phone = f"+1777000{n:04d}"
            good_phones.append(phone)
            _put(aws.kinesis, json.dumps(hostile.a_valid_batch(phone, 1, n)).encode(), phone)
        seq = _put(aws.kinesis, record, key)
        if seq is None:
            continue
        try:
            ev.parse_record(record)
            accepted += 1
        except ev.BadRecord:
            expected_bad.add(seq)
    assert len(expected_bad) >= 100 and accepted >= 20  # the corpus reaches deep into both outcomes

    run = run_dag("dialog_event_ingest")
    assert run_state(run) == "success"
    stored = dict(rows(db.engine, "SELECT sequence_number, count(*) FROM rejected_records GROUP BY 1"))
    assert set(stored) == expected_bad and set(stored.values()) == {1}
    applied = dict(
        rows(
            db.engine,
            "SELECT p.phone_number, u.seq FROM users u JOIN phone_numbers p USING (user_id) "
            "WHERE p.phone_number LIKE '+1777000%%'",
        )
    )
    assert applied == dict.fromkeys(good_phones, 1)
    assert rows(
        db.engine,
        "SELECT count(*) FROM command_outbox WHERE partition_key LIKE '+1777000%%' AND published_at IS NOT NULL",
    ) == [(len(good_phones),)]
    _read_back(db.engine)

    again = run_dag("dialog_event_ingest")
    assert run_state(again) == "success"
    assert rows(db.engine, "SELECT count(*) FROM rejected_records") == [(len(expected_bad),)]


@pytest.mark.parametrize(
    "record",
    [
        b"[" * 5000,
        b"\x00" * 10,
        json.dumps({**hostile.a_valid_batch("+17770001234", 1, 0), "phone_number": "+1777\u00001234"}).encode(),
    ],
)
def test_the_records_that_stopped_a_shard_before_are_set_aside(drill_db, record):
    good = json.dumps(hostile.a_valid_batch("+17770005678", 1, 0)).encode()
    stats = pipeline.apply_micro_batch(
        drill_db.engine, STREAM, SHARD, [pipeline.RawRecord("1", "k", record), pipeline.RawRecord("2", "k", good)]
    )
    assert (stats.records_rejected, stats.batches_applied) == (1, 1)


# ---- database trouble retries the micro-batch, not the shard task --------------------------------


def _batches(seq: int, phones: list[str]) -> list[pipeline.RawRecord]:
    return [
        pipeline.RawRecord(f"{seq:08d}{n:04d}", p, json.dumps(hostile.a_valid_batch(p, seq, n)).encode())
        for n, p in enumerate(phones)
    ]


def test_a_lock_timeout_retries_the_micro_batch_whole(drill_db):
    """A user locked by another transaction longer than lock_timeout: the micro-batch is retried
    (with backoff) and applied whole, in one transaction, nothing set aside, the task never fails."""
    import threading
    import time

    from drill_progress import ids
    from drill_progress.db import make_engine

    phones = ["+17770009001", "+17770009002"]
    pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, _batches(1, phones))
    impatient = make_engine(drill_db.url, "ingest", connect_args={"options": "-c lock_timeout=300"})
    locked, release = threading.Event(), threading.Event()

    def hold():
        with drill_db.engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1 FROM users WHERE user_id = %(u)s FOR UPDATE", {"u": ids.user_id(phones[0])})
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(10)
    threading.Timer(0.6, release.set).start()
    started = time.monotonic()
    try:
        stats = pipeline.apply_micro_batch(impatient, STREAM, SHARD, _batches(2, phones))
    finally:
        release.set()
        holder.join()
        impatient.dispose()
    assert time.monotonic() - started >= 0.6  # it did wait for the lock, through a retry
    assert (stats.batches_applied, stats.records_rejected, stats.transactions) == (2, 0, 1)
    assert rows(drill_db.engine, "SELECT count(*) FROM users WHERE seq = 2") == [(2,)]


def test_a_deadlock_retries_the_micro_batch_whole(drill_db):
    import psycopg
    from sqlalchemy.exc import DBAPIError

    attempts = []

    def deadlock_once(stage, conn):
        if stage == "before_commit":
            attempts.append(stage)
            if len(attempts) == 1:
                raise DBAPIError.instance(
                    "COMMIT", {}, psycopg.errors.DeadlockDetected("deadlock detected"), psycopg.Error
                )

    stats = pipeline.apply_micro_batch(
        drill_db.engine, STREAM, SHARD, _batches(1, ["+17770009101", "+17770009102"]), fault=deadlock_once
    )
    assert len(attempts) == 2
    assert (stats.batches_applied, stats.records_rejected, stats.transactions) == (2, 0, 1)


def test_trouble_that_outlasts_the_retries_is_bisected_and_set_aside(drill_db):
    """A statement timeout on every attempt of one record's write: its micro-batch is retried, then
    bisected; the others are applied and that record is set aside with the reason."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    raws = _batches(1, ["+17770009201", "+17770009202", "+17770009203"])

    def cancel_one(stage, conn):
        if stage == "before_commit":
            phones = {
                p
                for (p,) in conn.exec_driver_sql(
                    "SELECT phone_number FROM phone_numbers WHERE phone_number LIKE '+1777000920%%'"
                ).all()
            }
            if "+17770009202" in phones:
                raise DBAPIError.instance(
                    "COMMIT", {}, psycopg.errors.QueryCanceled("statement timeout"), psycopg.Error
                )

    stats = pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raws, fault=cancel_one)
    assert (stats.batches_applied, stats.records_rejected) == (2, 1)
    [(seq, reason)] = rows(drill_db.engine, "SELECT sequence_number, reason FROM rejected_records")
    assert seq == raws[1].sequence_number
    assert reason == "database error after 3 attempts: 57014: statement timeout"
