"""The shard loop against real PostgreSQL and the moto server: checkpoints, bounds, crashes,
resharding (split and merge), replay from a timestamp."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy.exc
from ingest_support import checksum, put_docs, rows, snapshot, user_story

from drill_progress.ingest import consumer, reader, runs
from drill_progress.setup.aws_resources import ensure_stream

STREAM = "dialog-events"
PHONES = [f"+1555100{n:04d}" for n in range(8)]


def story_docs(phones=PHONES):
    stories = [user_story(p) for p in phones]
    return [story[i] for i in range(5) for story in stories]  # interleaved, in order per phone


def ingest_all(engine, kinesis, **kwargs) -> list[dict]:
    """What one DAG run does: plan, then every readable shard."""
    out = []
    for shard_id in runs.plan_shards(engine, kinesis, STREAM):
        out.append(consumer.consume_shard(engine, kinesis, STREAM, shard_id, **kwargs).as_dict())
    return out


@pytest.fixture
def stream(aws):
    ensure_stream(aws.kinesis, STREAM, 2)
    return aws.kinesis


def test_reads_all_shards_checkpoints_and_resumes(drill_db, stream):
    docs = story_docs()
    put_docs(stream, STREAM, docs)
    results = ingest_all(drill_db.engine, stream, micro_batch_records=7)
    assert sum(r["records_read"] for r in results) == len(docs)
    assert sum(r["batches_applied"] for r in results) == len(docs)
    assert sum(r["micro_batches"] for r in results) > 2
    assert all(r["behind_ms"] == 0 for r in results)
    assert sum(1 for r in rows(drill_db.engine, "SELECT * FROM users")) == len(PHONES)
    assert len(rows(drill_db.engine, "SELECT * FROM stream_checkpoints")) == 2
    # nothing new: the next run reads nothing
    again = ingest_all(drill_db.engine, stream)
    assert sum(r["records_read"] for r in again) == 0
    # new records: only they are read
    put_docs(stream, STREAM, [user_story("+15559990000")[0]])
    assert sum(r["records_read"] for r in ingest_all(drill_db.engine, stream)) == 1


def test_bounds_stop_a_run_and_the_next_run_continues(drill_db, stream):
    docs = story_docs()
    put_docs(stream, STREAM, docs)
    first = ingest_all(drill_db.engine, stream, micro_batch_records=3, bounds=consumer.Bounds.catch_up(max_records=5))
    assert all(r["records_read"] <= 5 for r in first)
    total = sum(r["records_read"] for r in first)
    while True:
        more = sum(
            r["records_read"]
            for r in ingest_all(
                drill_db.engine, stream, micro_batch_records=3, bounds=consumer.Bounds.catch_up(max_records=5)
            )
        )
        if not more:
            break
        total += more
    assert total == len(docs)
    assert len(rows(drill_db.engine, "SELECT * FROM users")) == len(PHONES)


def _clean_checksum(pg_server, docs):
    """The state a clean run reaches, applied straight from the docs in stream order per shard."""
    from ingest_support import raw_records

    from drill_progress.db import make_engine
    from drill_progress.ingest.pipeline import apply_micro_batch

    name = f"ingest_clean_{time.monotonic_ns()}"
    pg_server.create_database(name, template="drill_template")
    engine = make_engine(pg_server.uri(name))
    apply_micro_batch(engine, STREAM, "s", raw_records(docs))
    value = checksum(engine)
    engine.dispose()
    pg_server.drop_database(name)
    return value


def test_crash_after_commit_then_retry_ends_in_clean_state(drill_db, stream, pg_server):
    docs = story_docs()
    put_docs(stream, STREAM, docs)
    commits = {"n": 0}

    def die_after_second_commit(stage, _conn):
        if stage == "after_commit":
            commits["n"] += 1
            if commits["n"] == 2:
                raise SystemExit("worker lost")  # killed after the commit, before the next step

    with pytest.raises(SystemExit):
        ingest_all(drill_db.engine, stream, micro_batch_records=4, fault=die_after_second_commit)
    ingest_all(drill_db.engine, stream, micro_batch_records=4)  # the retry
    assert checksum(drill_db.engine) == _clean_checksum(pg_server, docs)
    assert len(rows(drill_db.engine, "SELECT * FROM command_outbox")) == 2 * len(PHONES)


def test_database_failure_mid_transaction_then_retry_ends_in_clean_state(drill_db, stream, pg_server):
    docs = story_docs()
    put_docs(stream, STREAM, docs)
    calls = {"n": 0}

    def lose_connection(stage, conn):
        if stage == "before_commit":
            calls["n"] += 1
            if calls["n"] == 3:
                conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(sqlalchemy.exc.OperationalError):
        ingest_all(drill_db.engine, stream, micro_batch_records=4, fault=lose_connection)
    ingest_all(drill_db.engine, stream, micro_batch_records=4)
    assert checksum(drill_db.engine) == _clean_checksum(pg_server, docs)


def test_split_parent_is_drained_before_children(drill_db, aws):
    kinesis = aws.kinesis
    ensure_stream(kinesis, STREAM, 1)
    docs = story_docs()
    put_docs(kinesis, STREAM, docs[:20])
    [parent] = reader.list_shards(kinesis, STREAM)
    kinesis.split_shard(StreamName=STREAM, ShardToSplit=parent.shard_id, NewStartingHashKey=str(2**127))
    put_docs(kinesis, STREAM, docs[20:])  # (moto keeps routing these to the closed parent)
    shards = reader.list_shards(kinesis, STREAM)
    children = [s.shard_id for s in shards if s.parents == (parent.shard_id,)]
    assert len(children) == 2 and next(s for s in shards if s.shard_id == parent.shard_id).closed

    assert runs.plan_shards(drill_db.engine, kinesis, STREAM) == [parent.shard_id]
    stats = consumer.consume_shard(drill_db.engine, kinesis, STREAM, parent.shard_id)
    assert stats.shard_closed and stats.records_read == len(docs)
    assert rows(
        drill_db.engine, "SELECT shard_closed FROM stream_checkpoints WHERE shard_id = %(s)s", {"s": parent.shard_id}
    ) == [(True,)]
    assert sorted(runs.plan_shards(drill_db.engine, kinesis, STREAM)) == sorted(children)
    ingest_all(drill_db.engine, kinesis)
    assert len(rows(drill_db.engine, "SELECT * FROM users")) == len(PHONES)
    assert rows(drill_db.engine, "SELECT min(seq), max(seq) FROM users") == [(5, 5)]


def test_merged_child_waits_for_both_parents_and_its_copies_are_skipped(drill_db, stream, pg_server):
    docs = story_docs()
    put_docs(stream, STREAM, docs)
    a, b = (s.shard_id for s in reader.list_shards(stream, STREAM))
    stream.merge_shards(StreamName=STREAM, ShardToMerge=a, AdjacentShardToMerge=b)
    child = next(s for s in reader.list_shards(stream, STREAM) if s.parents)
    assert child.parents == (a, b)

    assert sorted(runs.plan_shards(drill_db.engine, stream, STREAM)) == [a, b]
    consumer.consume_shard(drill_db.engine, stream, STREAM, a)
    assert runs.plan_shards(drill_db.engine, stream, STREAM) == [b]  # child waits for both parents
    consumer.consume_shard(drill_db.engine, stream, STREAM, b)
    assert runs.plan_shards(drill_db.engine, stream, STREAM) == [child.shard_id]
    before = snapshot(drill_db.engine)
    stats = consumer.consume_shard(drill_db.engine, stream, STREAM, child.shard_id)
    # moto copies the parents' records into the merged shard: all re-deliveries, all skipped
    assert stats.records_read == len(docs) and stats.duplicates_skipped == len(docs) and stats.batches_applied == 0
    assert snapshot(drill_db.engine) == before
    assert checksum(drill_db.engine) == _clean_checksum(pg_server, docs)


def test_readable_shards_rule():
    s = reader.ShardInfo
    shards = [s("p", (), True), s("q", (), True), s("c", ("p", "q"), False), s("orphan", ("gone",), False)]
    assert reader.readable_shards(shards, {}) == ["p", "q", "orphan"]
    assert reader.readable_shards(shards, {"p": {"shard_closed": True}}) == ["q", "orphan"]
    drained = {"p": {"shard_closed": True}, "q": {"shard_closed": True}}
    assert reader.readable_shards(shards, drained) == ["c", "orphan"]


def test_replay_shard_from_timestamp_is_safe(drill_db, stream):
    docs = story_docs()
    put_docs(stream, STREAM, docs)
    ingest_all(drill_db.engine, stream)
    before = snapshot(drill_db.engine)
    checkpoints = rows(drill_db.engine, "SELECT shard_id, sequence_number FROM stream_checkpoints ORDER BY 1")
    shard_id = checkpoints[0][0]
    since = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    assert shard_id in runs.plan_shards(drill_db.engine, stream, STREAM, replay_shard_id=shard_id, replay_from=since)
    with pytest.raises(consumer.ReplayRefused, match="needs both"):
        runs.plan_shards(drill_db.engine, stream, STREAM, replay_shard_id=shard_id)
    result = runs.run_shard(
        drill_db.engine,
        stream,
        STREAM,
        "dialog-commands",
        shard_id,
        bounds=consumer.Bounds.catch_up(),
        replay_shard_id=shard_id,
        replay_from=since,
    )
    assert result["records_read"] > 0 and result["records_read"] == result["duplicates_skipped"]
    assert result["batches_applied"] == 0 and result["commands_emitted"] == 0
    assert snapshot(drill_db.engine) == before
    assert rows(drill_db.engine, "SELECT shard_id, sequence_number FROM stream_checkpoints ORDER BY 1") == checkpoints
    with pytest.raises(ValueError, match="not a listed shard"):
        runs.plan_shards(drill_db.engine, stream, STREAM, replay_shard_id="shardId-000000000099", replay_from=since)


def test_checkpoint_records_when_its_last_record_arrived(drill_db, stream):
    put_docs(stream, STREAM, story_docs()[:6])
    ingest_all(drill_db.engine, stream)
    arrivals = {}
    for shard in stream.list_shards(StreamName=STREAM)["Shards"]:
        it = stream.get_shard_iterator(StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        records = stream.get_records(ShardIterator=it, Limit=100)["Records"]
        if records:
            arrivals[shard["ShardId"]] = (records[-1]["SequenceNumber"], records[-1]["ApproximateArrivalTimestamp"])
    stored = {
        shard: (seq, at)
        for shard, seq, at in rows(
            drill_db.engine, "SELECT shard_id, sequence_number, last_arrival_at FROM stream_checkpoints"
        )
    }
    assert stored == arrivals


def test_a_replay_that_would_skip_unread_records_is_refused(drill_db, stream):
    """A replay from later than the checkpoint's last record would move the checkpoint past records
    never read: refused with a clear message, before anything is read or written."""
    docs = story_docs()
    put_docs(stream, STREAM, docs[:8])
    ingest_all(drill_db.engine, stream)
    put_docs(stream, STREAM, docs[8:])  # arrive after the checkpoint: never read yet
    time.sleep(0.05)
    later = datetime.now(UTC).isoformat()
    before = rows(
        drill_db.engine, "SELECT shard_id, sequence_number, last_arrival_at FROM stream_checkpoints ORDER BY 1"
    )
    shard_id, _, arrived = before[0]
    with pytest.raises(consumer.ReplayRefused, match="later than the checkpoint .* never read"):
        runs.plan_shards(drill_db.engine, stream, STREAM, replay_shard_id=shard_id, replay_from=later)
    with pytest.raises(consumer.ReplayRefused, match="later than the checkpoint"):
        consumer.consume_shard(drill_db.engine, stream, STREAM, shard_id, replay_from=later)
    assert (
        rows(drill_db.engine, "SELECT shard_id, sequence_number, last_arrival_at FROM stream_checkpoints ORDER BY 1")
        == before
    )
    # at the checkpoint's own arrival time it is allowed, and it reads everything after
    assert shard_id in runs.plan_shards(
        drill_db.engine, stream, STREAM, replay_shard_id=shard_id, replay_from=arrived.isoformat()
    )
    ingest_all(drill_db.engine, stream)
    assert len(rows(drill_db.engine, "SELECT * FROM users")) == len(PHONES)
    assert rows(drill_db.engine, "SELECT count(*) FROM users WHERE seq = 5") == [(len(PHONES),)]


def test_a_replay_of_a_shard_never_read_is_refused(drill_db, stream):
    shard_id = stream.list_shards(StreamName=STREAM)["Shards"][0]["ShardId"]
    with pytest.raises(consumer.ReplayRefused, match="no checkpoint yet"):
        runs.plan_shards(
            drill_db.engine, stream, STREAM, replay_shard_id=shard_id, replay_from="2026-01-01T00:00:00+00:00"
        )
    with pytest.raises(consumer.ReplayRefused, match="not an ISO 8601 timestamp"):
        runs.plan_shards(drill_db.engine, stream, STREAM, replay_shard_id=shard_id, replay_from="yesterday")
