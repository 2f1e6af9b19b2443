"""The shard lease (ingest/lease.py) against real PostgreSQL and the moto server: one consumer per
shard at any instant, the hand-over from one run's consumer to the next within a second with nothing
lost and nothing applied twice, a run by hand taking a shard and giving it back, the fence, and a
dead holder's lease expiring."""

from __future__ import annotations

import threading
import time

from ingest_support import COMMAND_STREAM, DIALOG_STREAM, first_shard, put_doc, rows, snapshot, user_story, wait_for

from drill_progress.ingest import consumer, lease, runs
from drill_progress.ingest.lease import CATCH_UP, CONTINUOUS, ShardLease

STREAM, COMMANDS = DIALOG_STREAM, COMMAND_STREAM


class _Consumer:
    """consume_shard with a lease on a thread of its own, as a shard task runs it; stamps its commits."""

    def __init__(self, engine, kinesis, name: str, kind: str, seconds: float, commits: list | None = None):
        self.name, self.result, self.error = name, None, None
        self.lease = ShardLease(engine, STREAM, first_shard(kinesis), lease.new_owner(name), kind=kind, run_id=name)
        bounds = (
            consumer.Bounds.continuous(seconds) if kind == CONTINUOUS else consumer.Bounds.catch_up(10_000, seconds)
        )

        def stamp(point, _conn):
            if point == "after_commit" and commits is not None:
                commits.append((self.name, time.monotonic()))

        def run():
            try:
                self.result = consumer.consume_shard(
                    engine,
                    kinesis,
                    STREAM,
                    self.lease.shard_id,
                    command_stream=COMMANDS,
                    bounds=bounds,
                    micro_batch_records=20,
                    fault=stamp,
                    lease=self.lease,
                )
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name=name)
        self.thread.start()

    def join(self, timeout: float = 90):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name} did not end"
        if self.error:
            raise self.error
        return self.result


class _Traffic:
    """A steady producer: one new user's story batch every `every` seconds, in order per phone."""

    def __init__(self, kinesis, users: int, every: float = 0.02):
        self.docs = [d for u in range(users) for d in user_story(f"+1555600{u:04d}")[:2]]
        self.put = 0

        def run():
            for doc in self.docs:
                put_doc(kinesis, doc)
                self.put += 1
                time.sleep(every)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self):
        self.thread.join(120)


def _lease_row(engine) -> tuple:
    [row] = rows(engine, "SELECT owner, owner_kind, waiter, handovers FROM shard_leases")
    return row


def test_a_second_consumer_never_reads_a_leased_shard(drill_db, streams):
    """A shard leased by a consumer that is catching up: a second consumer waits, reads nothing and
    writes nothing until its time is up; once the lease is free it reads everything."""
    engine, shard = drill_db.engine, first_shard(streams)
    holder = ShardLease(engine, STREAM, shard, "holder", kind=CATCH_UP)
    assert holder.acquire(lambda *_: True)
    for doc in user_story("+15556660001"):
        put_doc(streams, doc)
    calls = []
    real = streams.get_records
    streams.get_records = lambda **kw: calls.append(1) or real(**kw)
    try:
        second = _Consumer(engine, streams, "second", CATCH_UP, seconds=2.0).join()
    finally:
        streams.get_records = real
    assert (second.records_read, calls) == (0, [])
    assert second.stopped_because == "max_seconds (waiting for the lease)"
    assert rows(engine, "SELECT count(*) FROM users") == [(0,)]
    assert rows(engine, "SELECT count(*) FROM stream_checkpoints") == [(0,)]
    assert _lease_row(engine)[:2] == ("holder", CATCH_UP)

    holder.release()
    again = _Consumer(engine, streams, "again", CATCH_UP, seconds=10.0).join()
    assert (again.batches_applied, again.stopped_because) == (5, "caught up")
    assert _lease_row(engine)[0] is None  # released after its last commit


def test_the_next_run_takes_over_within_a_second_nothing_lost_nothing_twice(drill_db, streams, statsd_metrics):
    """Traffic flows while run 1's consumer holds the shard; run 2's consumer arrives and waits; run 1
    commits its last micro-batch and lets go; run 2 goes on from the checkpoint. Every commit of run 1
    comes before every commit of run 2, the gap between them is under a second, and the result is
    exactly what one consumer alone makes of the same records."""
    engine, commits = drill_db.engine, []
    traffic = _Traffic(streams, users=150)  # 300 records over about 6 s
    first = _Consumer(engine, streams, "run-1", CONTINUOUS, seconds=60, commits=commits)
    time.sleep(2.5)
    second = _Consumer(engine, streams, "run-2", CONTINUOUS, seconds=8, commits=commits)
    first_stats = first.join()
    traffic.join()
    second_stats = second.join()

    assert first_stats.stopped_because == "handed over" and first_stats.handovers == 1
    assert second_stats.stopped_because == "max_seconds"
    names = [name for name, _ in commits]
    last_first = max(t for name, t in commits if name == "run-1")
    first_second = min(t for name, t in commits if name == "run-2")
    assert names == sorted(names), "the two consumers' commits interleaved"
    assert first_second - last_first < 1.0, f"hand-over gap {first_second - last_first:.2f}s"
    assert first_stats.records_read + second_stats.records_read == 300
    assert first_stats.batches_applied + second_stats.batches_applied == 300
    [(users, commands)] = rows(
        engine,
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM command_outbox WHERE published_at IS NOT NULL)",
    )
    assert (users, commands) == (150, 150)
    checkpoint = rows(engine, "SELECT sequence_number, records_applied FROM stream_checkpoints")
    last_seq = streams.get_records(
        ShardIterator=streams.get_shard_iterator(
            StreamName=STREAM, ShardId=first_shard(streams), ShardIteratorType="LATEST"
        )["ShardIterator"]
    )  # nothing after the tip
    assert last_seq["Records"] == [] and checkpoint[0][1] == 300
    assert _lease_row(engine)[3] == 1  # one hand-over: run 1 took the free lease, run 2 took it over
    statsd_metrics.settle()
    counters = statsd_metrics.counters("airflow.drill_progress.ingest.")
    assert counters[f"airflow.drill_progress.ingest.handovers.{first_shard(streams)}"] == 1
    assert not any(".leases_lost." in name for name in counters)


def test_a_run_by_hand_takes_the_shard_and_gives_it_back(drill_db, streams):
    """A run by hand (catch-up) while a scheduled consumer holds the shard: the scheduled one lets go,
    the run by hand catches up and ends, the scheduled one takes the shard back and goes on."""
    engine = drill_db.engine
    scheduled = _Consumer(engine, streams, "scheduled", CONTINUOUS, seconds=8)
    time.sleep(1.0)
    for doc in user_story("+15556660002")[:3]:
        put_doc(streams, doc)
    by_hand = _Consumer(engine, streams, "by-hand", CATCH_UP, seconds=20).join()
    assert by_hand.stopped_because == "caught up"
    for doc in user_story("+15556660002")[3:]:
        put_doc(streams, doc)  # read by the scheduled consumer once it has the shard back
    wait_for(lambda: rows(engine, "SELECT count(*) FROM drill_instances") == [(2,)])
    stats = scheduled.join()
    assert stats.stopped_because == "max_seconds" and stats.handovers == 1
    assert by_hand.batches_applied + stats.batches_applied == 5
    assert rows(engine, "SELECT seq FROM users") == [(5,)]


def test_a_consumer_whose_lease_was_taken_over_commits_nothing_more(drill_db, streams, statsd_metrics):
    """The fence: another consumer took the lease (here by force): the holder's next micro-batch
    rolls back, it stops ("lease lost"), and the checkpoint stays where its last commit left it."""
    engine = drill_db.engine
    running = _Consumer(engine, streams, "holder", CONTINUOUS, seconds=20)
    put_doc(streams, user_story("+15556660003")[0])
    wait_for(lambda: rows(engine, "SELECT count(*) FROM users") == [(1,)])
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE shard_leases SET owner = 'intruder', waiter = NULL")
    put_doc(streams, user_story("+15556660004")[0])
    stats = running.join()
    assert stats.stopped_because == "lease lost"
    assert rows(engine, "SELECT count(*) FROM users") == [(1,)]
    assert rows(engine, "SELECT records_applied FROM stream_checkpoints") == [(1,)]
    statsd_metrics.settle()
    counters = statsd_metrics.counters("airflow.drill_progress.ingest.")
    assert counters[f"airflow.drill_progress.ingest.leases_lost.{first_shard(streams)}"] == 1
    assert not any(".handovers." in name for name in counters)


def test_a_dead_holders_lease_expires_and_the_waiter_goes_on(drill_db, streams, monkeypatch):
    """A holder killed without letting go (no renewal): the waiting consumer takes the shard once the
    lease expires and reads from the checkpoint."""
    monkeypatch.setattr(lease, "TTL_SECONDS", 1.0)
    engine = drill_db.engine
    dead = ShardLease(engine, STREAM, first_shard(streams), "dead", kind=CONTINUOUS)
    assert dead.acquire(lambda *_: True)
    for doc in user_story("+15556660005"):
        put_doc(streams, doc)
    started = time.monotonic()
    stats = _Consumer(engine, streams, "next", CATCH_UP, seconds=10).join()
    assert stats.stopped_because == "caught up" and stats.batches_applied == 5
    assert 0.8 <= time.monotonic() - started < 5


def test_a_live_waiter_keeps_its_place(drill_db):
    """A free lease with a live waiter is taken by that waiter, not by a third consumer; a waiter not
    seen for WAITER_STALE_SECONDS loses its place."""
    engine = drill_db.engine
    holder, waiter, third = (ShardLease(engine, STREAM, "s-1", name) for name in ("holder", "waiter", "third"))
    assert holder.try_acquire()[0] == "holder"
    assert waiter.try_acquire()[0] == "holder" and not waiter.held  # registered as the waiter
    holder.renew_now()
    assert holder.should_let_go() and holder.waiter == "waiter"
    holder.release()
    assert third.try_acquire()[0] is None and not third.held
    assert waiter.try_acquire()[0] == "waiter" and waiter.held
    waiter.release()
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE shard_leases SET waiter = 'gone', waiter_seen_at = now() - interval '1 minute'")
    assert third.try_acquire()[0] == "third"


def test_a_shard_task_takes_and_releases_the_lease(drill_db, streams):
    """The DAG's path (runs.run_shard): the lease is taken for the run and released at its end."""
    put_doc(streams, user_story("+15556660006")[0])
    result = runs.run_shard(
        drill_db.engine,
        streams,
        STREAM,
        COMMANDS,
        first_shard(streams),
        bounds=consumer.Bounds.catch_up(),
        run_id="manual__1",
    )
    assert (result["batches_applied"], result["stopped_because"]) == (1, "caught up")
    assert rows(drill_db.engine, "SELECT owner, owner_run_id, handovers FROM shard_leases") == [(None, None, 0)]
    assert snapshot(drill_db.engine)["command_outbox"][0][1] == "START_DRILL"
