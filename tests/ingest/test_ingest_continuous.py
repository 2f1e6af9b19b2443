"""Continuous consumption of a shard (ingest/consumer.py) against real PostgreSQL and the moto server:
commands published as their micro-batch commits, Kinesis read limits, heartbeat, resharding, sweeps,
and which runs consume continuously."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest
from ingest_support import COMMAND_STREAM, DIALOG_STREAM, first_shard, put_doc, rows, user_story, wait_for

from drill_progress.ingest import consumer, tasks
from drill_progress.setup.aws_resources import ensure_stream

STREAM, COMMANDS = DIALOG_STREAM, COMMAND_STREAM


def _commands(kinesis) -> list[dict]:
    out = []
    for shard in kinesis.list_shards(StreamName=COMMANDS)["Shards"]:
        it = kinesis.get_shard_iterator(
            StreamName=COMMANDS, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        out += kinesis.get_records(ShardIterator=it, Limit=1000)["Records"]
    return out


class _Consumer:
    """consume_shard on a thread of its own, as a long-running shard task runs it."""

    def __init__(self, engine, kinesis, shard_id: str, seconds: float, **kwargs):
        self.result = None
        self.error = None

        def run():
            try:
                self.result = consumer.consume_shard(
                    engine,
                    kinesis,
                    STREAM,
                    shard_id,
                    command_stream=COMMANDS,
                    bounds=consumer.Bounds.continuous(seconds),
                    **kwargs,
                )
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self):
        self.thread.join(60)
        if self.error:
            raise self.error
        return self.result


def test_a_command_is_published_while_the_consumer_keeps_running(drill_db, streams):
    """A USER_VALIDATED arriving at a shard being consumed: its START_DRILL is on the command stream
    while the consumer is still running (not when its task ends), sent once."""
    running = _Consumer(drill_db.engine, streams, first_shard(streams), seconds=12)
    time.sleep(1.0)
    put_doc(streams, user_story("+15553330001")[0])
    wait_for(lambda: _commands(streams))
    assert running.thread.is_alive(), "published only when the consumer ended"
    stats = running.join()
    assert [json.loads(c["Data"])["type"] for c in _commands(streams)] == ["START_DRILL"]
    assert (stats.batches_applied, stats.commands_emitted, stats.commands_published) == (1, 1, 1)
    assert stats.stopped_because == "max_seconds"


def test_getrecords_stays_within_five_calls_a_second_and_backs_off_when_idle(drill_db, streams):
    calls: list[float] = []
    real = streams.get_records

    def counted(**kwargs):
        calls.append(time.monotonic())
        return real(**kwargs)

    for doc in [d for p in range(40) for d in user_story(f"+1555444{p:04d}")[:2]]:  # 80 records
        put_doc(streams, doc)
    streams.get_records = counted
    try:
        stats = _Consumer(drill_db.engine, streams, first_shard(streams), seconds=7, micro_batch_records=5).join()
    finally:
        streams.get_records = real
    assert stats.batches_applied == 80 and stats.micro_batches == 16
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= consumer.GET_INTERVAL_SECONDS - 0.01  # never more than 5 calls a second
    idle_tail = [t for t in calls if t > calls[0] + 4.5]  # caught up long before: backed off to 1 s
    assert 1 <= len(idle_tail) <= 3, gaps


def test_an_idle_shard_gets_a_heartbeat_without_moving_its_checkpoint(drill_db, streams, monkeypatch):
    monkeypatch.setattr(consumer, "HEARTBEAT_SECONDS", 0.5)
    shard = first_shard(streams)
    put_doc(streams, user_story("+15553330002")[0])
    consumer.consume_shard(drill_db.engine, streams, STREAM, shard, command_stream=COMMANDS)  # catch up
    [(seq, before)] = rows(drill_db.engine, "SELECT sequence_number, updated_at FROM stream_checkpoints")
    _Consumer(drill_db.engine, streams, shard, seconds=2.5).join()
    [(seq_after, after)] = rows(drill_db.engine, "SELECT sequence_number, updated_at FROM stream_checkpoints")
    assert seq_after == seq and after > before


def test_a_split_ends_the_run_so_that_the_next_plans_the_new_shards(drill_db, streams, monkeypatch):
    monkeypatch.setattr(consumer, "TOPOLOGY_CHECK_SECONDS", 0.5)
    shard = first_shard(streams)
    running = _Consumer(drill_db.engine, streams, shard, seconds=30)
    time.sleep(1.0)
    streams.update_shard_count(StreamName=STREAM, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
    stats = running.join()
    assert stats.stopped_because == "shard closed and drained" and stats.shard_closed
    children = {s["ShardId"] for s in streams.list_shards(StreamName=STREAM)["Shards"]} - {shard}
    from drill_progress.ingest import runs

    assert set(runs.plan_shards(drill_db.engine, streams, STREAM)) == children


def test_a_failed_publish_is_swept_later_never_lost(drill_db, streams, monkeypatch):
    """The command stream refuses a micro-batch's publish: the command stays in the outbox and the
    next sweep of the running consumer sends it, once."""
    from drill_progress import outbox

    monkeypatch.setattr(consumer, "SWEEP_SECONDS", 1.0)
    real, failures = outbox.publish_pending, []

    def flaky(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise RuntimeError("stream unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(outbox, "publish_pending", flaky)
    running = _Consumer(drill_db.engine, streams, first_shard(streams), seconds=6)
    time.sleep(0.5)
    put_doc(streams, user_story("+15553330003")[0])
    wait_for(lambda: _commands(streams))
    running.join()
    assert failures == [1] and len(_commands(streams)) == 1
    assert rows(drill_db.engine, "SELECT count(*) FROM command_outbox WHERE published_at IS NULL") == [(0,)]


@pytest.mark.parametrize(
    ("run_type", "params", "continuous"),
    [
        ("scheduled", {}, True),
        ("manual", {}, False),
        ("backfill", {}, False),
        ("scheduled", {"replay_shard_id": "shardId-000000000000"}, False),
        ("manual", {"continuous": True}, True),
        ("manual", {"continuous": True, "replay_shard_id": "shardId-000000000000"}, False),
    ],
)
def test_which_runs_consume_continuously(run_type, params, continuous):
    """A continuous consumer goes on until the next run takes over, at most 10 minutes past run_minutes."""
    base = {"run_minutes": 60, "max_records_per_shard": 20000, "max_seconds": 45, **params}
    bounds = tasks.bounds_for(base, run_type)
    assert (not bounds.until_caught_up) == continuous
    assert bounds.max_seconds == (3600 + 600 if continuous else 45)


def test_the_other_shards_go_on_when_the_readable_set_changes(drill_db, aws, monkeypatch):
    """Shard A was split and its consumer drained it: shard B's consumer logs the change and goes
    on reading B (runs now overlap and hand over: ending would leave B unread until the next run)."""
    from drill_progress.ingest import store

    monkeypatch.setattr(consumer, "TOPOLOGY_CHECK_SECONDS", 0.5)
    ensure_stream(aws.kinesis, STREAM, 2)
    ensure_stream(aws.kinesis, COMMANDS, 1)
    a, b = [s["ShardId"] for s in aws.kinesis.list_shards(StreamName=STREAM)["Shards"]]
    running = _Consumer(drill_db.engine, aws.kinesis, b, seconds=6)
    time.sleep(1.0)
    shard_a = aws.kinesis.list_shards(StreamName=STREAM)["Shards"][0]
    low, high = (int(shard_a["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
    aws.kinesis.split_shard(StreamName=STREAM, ShardToSplit=a, NewStartingHashKey=str((low + high) // 2))
    with drill_db.engine.begin() as conn:
        store.close_shard(conn, STREAM, a)  # what A's own consumer does once A is drained
    stats = running.join()
    assert stats.stopped_because == "max_seconds"
