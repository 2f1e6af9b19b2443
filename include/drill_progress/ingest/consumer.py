"""Consuming one shard of the dialog event stream: read, apply each page as a micro-batch, publish its
commands as soon as it commits.

Two ways to stop (`Bounds`):
- **until caught up** (a run started by hand, `dags test`, a replay): stop once a read returns
  nothing and the shard is 0 ms behind its tip, or at `max_records` / `max_seconds`;
- **continuously** (the scheduled runs): keep reading, backing off when idle, until another
  consumer waits for the shard's lease (the next run: this one lets go within about a second) or
  `max_seconds` are up. A change of the stream's readable shards (a split or merge) is logged: the
  next run plans the new shards.

Either way:
- given a lease (ingest/lease.py), the shard is read only while its lease is held: one consumer per
  shard at any instant; the lease is renewed in each micro-batch's transaction (the fence) and
  released right after the last commit;
- at most one GetRecords call per `GET_INTERVAL_SECONDS` (Kinesis allows 5 per second per shard); an
  idle shard is polled with a backoff from GET_INTERVAL_SECONDS to IDLE_MAX_SECONDS (no busy loop);
- every committed micro-batch hands its new outbox keys to a `Publisher` thread, which publishes them
  right away, in commit order; a command whose publish fails stays in the outbox (`published_at`
  NULL) and goes out with the next sweep (every SWEEP_SECONDS while consuming continuously, and the
  run's `publish_commands` task);
- while idle, the shard's checkpoint row gets `behind_ms` and `updated_at` refreshed every
  HEARTBEAT_SECONDS (never its position), so that a stale `updated_at` means the consumer stopped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from drill_progress import outbox
from drill_progress.db import run
from drill_progress.ingest import reader, store
from drill_progress.ingest.lease import CATCH_UP, CONTINUOUS, LeaseLost, ShardLease
from drill_progress.ingest.pipeline import Applier, Fault, RawRecord, ShardStats
from drill_progress.metrics import ShardMetrics

log = logging.getLogger(__name__)

GET_INTERVAL_SECONDS = 0.2  # at most 5 GetRecords per second per shard (the Kinesis limit)
IDLE_MAX_SECONDS = 1.0  # the longest pause between two reads of an idle shard
HEARTBEAT_SECONDS = 30.0
SWEEP_SECONDS = 60.0
TOPOLOGY_CHECK_SECONDS = 60.0
PROGRESS_LOG_SECONDS = 60.0


@dataclass(frozen=True)
class Bounds:
    """When a shard's consumer stops (see the module's docstring)."""

    until_caught_up: bool = True
    max_records: int | None = 20_000
    max_seconds: float = 45.0

    @classmethod
    def catch_up(cls, max_records: int = 20_000, max_seconds: float = 45.0) -> Bounds:
        return cls(True, max_records, max_seconds)

    @classmethod
    def continuous(cls, seconds: float) -> Bounds:
        return cls(False, None, seconds)


class ReplayRefused(ValueError):
    """A replay that would skip records, or that names no readable point: nothing was read."""


def parse_timestamp(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).strip().replace("z", "Z"))
        except ValueError:
            raise ReplayRefused(f"replay_from {str(value)[:40]!r} is not an ISO 8601 timestamp") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def check_replay(shard_id: str, replay_from: datetime, checkpoint: dict) -> None:
    """A replay re-reads a shard from `replay_from` (AT_TIMESTAMP) and moves its checkpoint on from
    there: refused when that is later than the last record the checkpoint covers (the records in
    between were never read and would be skipped for good)."""
    arrived = checkpoint.get("last_arrival_at")
    if not checkpoint.get("sequence_number"):
        raise ReplayRefused(
            f"shard {shard_id} has no checkpoint yet: nothing was read from it, so there is "
            "nothing to replay (the next run reads it from its start)"
        )
    if arrived is None:
        raise ReplayRefused(
            f"the checkpoint of shard {shard_id} does not say when its last record arrived yet "
            "(it predates migration 0009): replay after the next run has applied a record"
        )
    if replay_from > arrived:
        raise ReplayRefused(
            f"replay_from {replay_from.isoformat()} is later than the checkpoint of shard {shard_id}, whose last "
            f"applied record arrived at {arrived.isoformat()}: the records in between were never read and would "
            f"be skipped. Replay from {arrived.isoformat()} or earlier."
        )


class Publisher:
    """Publishes the commands of committed micro-batches from a thread of its own, in commit order.

    `commit(keys)` is called by the writer thread right after a micro-batch committed; `sweep()`
    asks for every pending ingest command (what a crashed consumer or a failed publish left).
    A failure is logged and left in the outbox: nothing is lost, the next sweep sends it."""

    _SWEEP = object()
    _STOP = object()

    def __init__(self, engine: Engine, kinesis, command_stream: str, shard_id: str):
        self._engine, self._kinesis, self._stream, self._shard_id = engine, kinesis, command_stream, shard_id
        self._queue: queue.Queue = queue.Queue()
        self.published = 0
        self.failed = 0
        self._metrics = ShardMetrics(shard_id)
        self._thread = threading.Thread(target=self._run, name=f"publish-{shard_id}", daemon=True)
        self._thread.start()

    def commit(self, keys: list[str]) -> None:
        if keys:
            self._queue.put(keys)

    def sweep(self) -> None:
        self._queue.put(self._SWEEP)

    def close(self) -> None:
        """Publish what is queued, then stop."""
        self._queue.put(self._STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            keys: list[str] = []
            sweep = stop = False
            while True:  # everything queued meanwhile goes in the same round
                if item is self._STOP:
                    stop = True
                elif item is self._SWEEP:
                    sweep = True
                else:
                    keys += item
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if keys:
                self._publish(keys)
            if sweep:
                self._publish(None)
            if stop:
                return

    def _publish(self, keys: list[str] | None) -> None:
        try:
            result = outbox.publish_pending(
                self._engine, self._kinesis, self._stream, source=store.OUTBOX_SOURCE, keys=keys
            )
        except Exception:
            log.exception(
                "shard %s: publishing commands failed; they stay in the outbox for the next sweep", self._shard_id
            )
            self.failed += len(keys or ())
            self._metrics.published(0, len(keys or ()))
            return
        self.published += result["published"]
        self.failed += result["failed"]
        self._metrics.published(result["published"], result["failed"])


def consume_shard(
    engine: Engine,
    kinesis,
    stream: str,
    shard_id: str,
    *,
    command_stream: str | None = None,
    bounds: Bounds | None = None,
    micro_batch_records: int = 500,
    replay_from: str | datetime | None = None,
    fault: Fault | None = None,
    lease: ShardLease | None = None,
) -> ShardStats:
    """Read one shard from its checkpoint (or `replay_from`, AT_TIMESTAMP) within `bounds`, applying
    each GetRecords page as one micro-batch and (given `command_stream`) publishing its commands as
    soon as it commits. Given a `lease` (ingest/lease.py), the shard is read only while it is held:
    it is acquired (waiting for its holder to let go) before the checkpoint is read, renewed in each
    micro-batch's transaction, and released after the last commit."""
    bounds = bounds or Bounds.catch_up()
    stats = ShardStats(shard_id)
    at = parse_timestamp(replay_from)
    shards = reader.list_shards(kinesis, stream)
    info = next((s for s in shards if s.shard_id == shard_id), None)
    if info is None:
        raise LookupError(f"shard {shard_id} is not listed on stream {stream}")
    deadline = time.monotonic() + bounds.max_seconds
    session = _Session(engine, kinesis, stream, info, shards, stats, bounds, deadline, command_stream, fault, lease)
    while True:
        if lease is not None and not lease.acquire(session.give_up):
            stats.stopped_because = stats.stopped_because or "the lease is held by another consumer"
            break
        try:
            session.consume(micro_batch_records, at)
        finally:
            if lease is not None:
                lease.release()
        at = None  # a replay re-reads once; taking the lease back resumes from the checkpoint
        if not session.take_back():
            break
    return stats


@dataclass
class _Session:
    """What `consume_shard` reads while it holds the shard's lease (the whole time without one)."""

    engine: Engine
    kinesis: object
    stream: str
    info: reader.ShardInfo
    shards: list[reader.ShardInfo]  # the stream's shards, listed once before waiting for the lease
    stats: ShardStats
    bounds: Bounds
    deadline: float  # time.monotonic() when the bounds' max_seconds are up
    command_stream: str | None
    fault: Fault | None
    lease: ShardLease | None
    yielded_to: str | None = None  # the kind of consumer this one let go of the lease for

    def give_up(self, holder: str | None, holder_kind: str | None) -> bool:
        """While waiting for the lease: give up once our time is over, or (when taking it back after
        a catch-up consumer) when a newer continuous consumer got it meanwhile."""
        if time.monotonic() >= self.deadline:
            self.stats.stopped_because = self.stats.stopped_because or "max_seconds (waiting for the lease)"
            return True
        return self.yielded_to is not None and holder_kind == CONTINUOUS

    def take_back(self) -> bool:
        """After letting go: wait to take the lease back only if it went to a catch-up consumer and
        this continuous consumer has time left."""
        lease = self.lease
        if lease is None or self.stats.stopped_because != "handed over" or lease.waiter_kind != CATCH_UP:
            return False
        self.yielded_to = lease.waiter_kind
        if time.monotonic() >= self.deadline:
            return False
        self.stats.stopped_because = ""
        return True

    def consume(self, micro_batch_records: int, at: datetime | None) -> None:
        stream, shard_id, stats = self.stream, self.info.shard_id, self.stats
        with self.engine.connect() as conn:
            checkpoints = store.load_checkpoints(conn, stream)
        checkpoint = checkpoints.get(shard_id, {})
        if at is not None:
            check_replay(shard_id, at, checkpoint)
        if checkpoint.get("shard_closed") and at is None:
            stats.shard_closed = True
            stats.behind_ms = 0
            stats.stopped_because = stats.stopped_because or "shard closed and drained"
            return
        publisher = Publisher(self.engine, self.kinesis, self.command_stream, shard_id) if self.command_stream else None
        applier = Applier(
            self.engine,
            stream,
            shard_id,
            parents=self.info.parents,
            stats=stats,
            fault=self.fault,
            on_commit=publisher.commit if publisher else None,
            fence=self.lease.renew if self.lease is not None else None,
        )
        reading = _ShardReading(
            self.kinesis,
            stream,
            shard_id,
            self.info,
            stats,
            engine=self.engine,
            bounds=self.bounds,
            deadline=self.deadline,
            last_seq=None if at is not None else checkpoint.get("sequence_number"),
            at=at,
            readable=set(reader.readable_shards(self.shards, checkpoints)),
            publisher=publisher,
            metrics=applier.metrics,
            lease=self.lease,
        )
        try:
            applier.apply_pages(reading.pages(micro_batch_records))
            if reading.drained:  # only once every micro-batch read from it has committed
                with self.engine.begin() as conn:
                    if self.lease is not None:
                        self.lease.renew(conn)
                    store.close_shard(conn, stream, shard_id, self.info.parents)
                stats.shard_closed = True
        except LeaseLost:
            log.warning("shard %s: the lease was taken over; this consumer stops", shard_id)
            reading.stopped_because = "lease lost"
            applier.metrics.lease_lost()
        finally:
            if publisher is not None:  # its commands go out before the next consumer's
                publisher.close()
                stats.commands_published += publisher.published
        stats.stopped_because = reading.stopped_because
        if reading.stopped_because == "handed over":
            stats.handovers += 1
            applier.metrics.handed_over()
            log.info("shard %s: handed over to %s (%s)", shard_id, self.lease.waiter, self.lease.waiter_kind)


@dataclass
class _ShardReading:
    """GetRecords pages of one shard within its bounds. An idle read yields an empty page (so that
    the applier settles the micro-batch in flight) and refreshes the checkpoint's heartbeat."""

    kinesis: object
    stream: str
    shard_id: str
    info: reader.ShardInfo
    stats: ShardStats
    engine: Engine
    bounds: Bounds
    deadline: float
    last_seq: str | None
    at: datetime | None
    readable: set[str]
    publisher: Publisher | None = None
    metrics: ShardMetrics | None = None
    lease: ShardLease | None = None
    drained: bool = False  # a closed shard read to its end
    stopped_because: str = ""

    def pages(self, micro_batch_records: int) -> Iterator[tuple[list[RawRecord], int | None]]:
        self._clock = dict.fromkeys(("call", "heartbeat", "sweep", "check", "log"), time.monotonic())
        self._fetched, self._idle = 0, GET_INTERVAL_SECONDS
        iterator = reader.shard_iterator(self.kinesis, self.stream, self.shard_id, self.last_seq, self.at)
        while not self._should_stop():
            page = self._read(iterator, micro_batch_records)
            if page is None:  # the iterator expired: a new one from the last record read
                iterator = reader.shard_iterator(
                    self.kinesis, self.stream, self.shard_id, self.last_seq, self.at if self.last_seq is None else None
                )
                continue
            if page.records:
                self._idle = GET_INTERVAL_SECONDS
                yield self._raws(page), page.behind_ms
            if page.next_iterator is None or (self.info.closed and not page.records and page.behind_ms == 0):
                self.drained, self.stopped_because = True, "shard closed and drained"
                return
            iterator = page.next_iterator
            if page.records:
                continue
            if page.behind_ms == 0 and self.bounds.until_caught_up:
                self.stopped_because = "caught up"
                return
            yield [], page.behind_ms  # idle: the micro-batch in flight settles meanwhile
            self._while_idle(page.behind_ms)

    def _should_stop(self) -> bool:
        now, bounds = time.monotonic(), self.bounds
        if bounds.max_records is not None and self._fetched >= bounds.max_records:
            self.stopped_because = "max_records"
        elif now >= self.deadline:
            self.stopped_because = "max_seconds"
        elif self.lease is not None and self.lease.should_let_go():
            self.stopped_because = "handed over"
        elif not bounds.until_caught_up and self._due("check", TOPOLOGY_CHECK_SECONDS):
            self._topology_changed()
        return bool(self.stopped_because)

    def _read(self, iterator: str, micro_batch_records: int) -> reader.Page | None:
        """One GetRecords call, at most one per GET_INTERVAL_SECONDS; None if the iterator expired."""
        time.sleep(max(0.0, self._clock["call"] + GET_INTERVAL_SECONDS - time.monotonic()))
        limit = micro_batch_records
        if self.bounds.max_records is not None:
            limit = max(1, min(limit, self.bounds.max_records - self._fetched))
        started = time.perf_counter()
        self._clock["call"] = time.monotonic()
        try:
            page = reader.get_records(self.kinesis, iterator, limit)
        except self.kinesis.exceptions.ExpiredIteratorException:  # type: ignore[attr-defined]
            return None
        self.stats.timings["get_records"] += time.perf_counter() - started
        self.stats.behind_ms = page.behind_ms
        if self.metrics is not None:
            self.metrics.behind(page.behind_ms)
        return page

    def _raws(self, page: reader.Page) -> list[RawRecord]:
        raws = [
            RawRecord(r["SequenceNumber"], r.get("PartitionKey"), r["Data"], r.get("ApproximateArrivalTimestamp"))
            for r in page.records
        ]
        self.last_seq = raws[-1].sequence_number
        self._fetched += len(raws)
        return raws

    def _while_idle(self, behind_ms: int) -> None:
        """Lease renewal, heartbeat, sweep, progress log when due; back off while the shard has
        nothing new."""
        if self.lease is not None:
            self.lease.renew_now()  # raises LeaseLost when taken over; learns of a waiter
        if self._due("heartbeat", HEARTBEAT_SECONDS):
            with self.engine.begin() as conn:
                run(
                    conn,
                    "ingest/heartbeat.sql",
                    {
                        "stream": self.stream,
                        "shard_id": self.shard_id,
                        "parents": list(self.info.parents),
                        "behind_ms": behind_ms,
                    },
                )
        if self.publisher is not None and self._due("sweep", SWEEP_SECONDS):
            self.publisher.sweep()
        if self._due("log", PROGRESS_LOG_SECONDS):
            log.info("shard %s: %s", self.shard_id, self.stats.progress())
        if behind_ms == 0 and not (self.lease is not None and self.lease.should_let_go()):
            time.sleep(self._idle)
            self._idle = min(IDLE_MAX_SECONDS, self._idle * 2)

    def _due(self, what: str, every: float) -> bool:
        now = time.monotonic()
        if now - self._clock[what] < every:
            return False
        self._clock[what] = now
        return True

    def _topology_changed(self) -> None:
        """Logs a change of the readable shards (the new shards are read from the next run on, while
        this consumer goes on reading its shard); also learns whether this shard has been closed (a
        closed shard is then read to its end and drained)."""
        shards = reader.list_shards(self.kinesis, self.stream)
        self.info = next((s for s in shards if s.shard_id == self.shard_id), self.info)
        with self.engine.connect() as conn:
            checkpoints = store.load_checkpoints(conn, self.stream)
        now_readable = set(reader.readable_shards(shards, checkpoints))
        if now_readable != self.readable:
            log.warning(
                "shard %s: the readable shards changed (%s -> %s): the next run reads the new ones; to read "
                'them now, trigger dialog_event_ingest with {"continuous": true}',
                self.shard_id,
                sorted(self.readable),
                sorted(now_readable),
            )
            self.readable = now_readable
