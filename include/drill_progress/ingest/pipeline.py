"""The per-shard ingestion loop of `dialog_event_ingest`: read, parse, fold, write, checkpoint.

Exactly-once in effect:
- each micro-batch (one GetRecords page) is applied in ONE transaction together with the
  shard's checkpoint, its set-aside bad records and the commands it causes (outbox rows);
  a crash before the commit leaves nothing, a crash after it resumes after the checkpoint;
- the seq guard skips a batch whose `seq` is not above the user's stored `seq`, so a
  re-delivered or replayed record changes nothing; all ids are deterministic;
- commands carry `ingest:<event_id>` as idempotency key; the outbox writes a key once and
  publishing marks it sent, so no retry or re-run publishes a command twice.

No record's content can stop a shard (`drill_progress.db.trouble` sorts the errors):
- the edge (`events.parse_record`) turns any bytes into a Batch or a reason to set them aside;
- database trouble (deadlock, serialization failure, lock or statement timeout, a value the
  client library refuses) retries the micro-batch, up to ATTEMPTS times with jittered backoff;
- an error caused by the data (integrity, data exception, a trigger, a value Python or the
  driver refuses), or trouble that outlasts the retries, is isolated like Lambda's
  bisect-on-error: the micro-batch is split in halves applied left then right, each in its own
  transaction, down to the single record, which is set aside in `rejected_records` with the
  error after ATTEMPTS attempts.
Only fatal errors (the connection, the server, a bug) propagate, so that the task is retried
from the committed checkpoint.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection, Engine, RootTransaction

from drill_progress import db
from drill_progress.ingest import events as ev
from drill_progress.ingest import store
from drill_progress.ingest.fold import FoldResult, fold
from drill_progress.metrics import ShardMetrics
from drill_progress.retry import backoff

log = logging.getLogger(__name__)

# Attempts at a micro-batch hitting database trouble before it is bisected, and at a single
# record before it is set aside.
ATTEMPTS = 3
BACKOFF_BASE_SECONDS = 0.1
# How long the next micro-batch keeps its users locked while waiting for the write of the one
# before it (normally tens of milliseconds); longer than PostgreSQL's deadlock_timeout (1 s), so
# that cycles PostgreSQL can see are broken by PostgreSQL first.
WRITE_PATIENCE_SECONDS = 2.0
# Pages parsed ahead while a write is in flight (memory: a few thousand records at most).
PARSE_AHEAD_PAGES = 4


# Test hook for fault injection: called with a stage name and the open connection ("before_commit")
# or None ("after_commit").
Fault = Callable[[str, object], None]


@dataclass(frozen=True, slots=True)
class RawRecord:
    sequence_number: str
    partition_key: str | None
    data: bytes
    arrival: datetime | None = None  # Kinesis ApproximateArrivalTimestamp


@dataclass(slots=True)
class Parsed:
    raw: RawRecord
    batch: ev.Batch | None
    reason: str | None = None


@dataclass
class ShardStats:
    shard_id: str
    records_read: int = 0
    batches_applied: int = 0
    events_applied: int = 0
    duplicates_skipped: int = 0
    records_rejected: int = 0
    commands_emitted: int = 0
    behind_ms: int | None = None
    micro_batches: int = 0
    transactions: int = 0
    shard_closed: bool = False
    commands_published: int = 0
    stopped_because: str = ""
    handovers: int = 0  # times this consumer let go of the shard's lease for another one
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("get_records", "parse", "db_load", "fold", "db_write"), 0.0)
    )

    def as_dict(self) -> dict:
        return {
            "shard_id": self.shard_id,
            "records_read": self.records_read,
            "batches_applied": self.batches_applied,
            "events_applied": self.events_applied,
            "duplicates_skipped": self.duplicates_skipped,
            "records_rejected": self.records_rejected,
            "commands_emitted": self.commands_emitted,
            "behind_ms": self.behind_ms,
            "micro_batches": self.micro_batches,
            "shard_closed": self.shard_closed,
            "commands_published": self.commands_published,
            "stopped_because": self.stopped_because,
            "handovers": self.handovers,
            "seconds": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def progress(self) -> str:
        return (
            f"read {self.records_read} records in {self.micro_batches} micro-batches; applied "
            f"{self.batches_applied} batches, skipped {self.duplicates_skipped}, set aside "
            f"{self.records_rejected}, emitted {self.commands_emitted} commands; {self.behind_ms} ms behind the tip"
        )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one micro-batch.

    A micro-batch allocates some 100,000 short-lived container objects (decoded records, events,
    user trees, parameter lists) that all die by reference counting when it ends. While they are
    alive the generational collector keeps promoting them and runs full collections over the
    whole heap of the worker (Airflow, SQLAlchemy, boto3 ...): measured at a quarter to a third of
    the apply path's Python time. Nothing here builds reference cycles worth collecting early;
    the collector is re-enabled (if it was enabled) as soon as the micro-batch is done."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextlib.contextmanager
def quick_thread_switches(interval: float = 0.001) -> Iterator[None]:
    """Let threads take turns holding the GIL every `interval` seconds (Python's default: 5 ms).

    In `Applier.apply_pages` the writer thread needs the GIL for a moment after each reply from
    PostgreSQL while the main thread parses and folds in pure Python; with the default interval
    each of those moments waited up to 5 ms, several times per micro-batch, on the critical path
    (measured: about 10 % of the apply path's throughput). Restored on exit."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, interval))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def parse_records(raws: Sequence[RawRecord]) -> list[Parsed]:
    out = []
    for raw in raws:
        try:
            out.append(Parsed(raw, ev.parse_record(raw.data)))
        except ev.BadRecord as bad:
            out.append(Parsed(raw, None, str(bad)))
    return out


@dataclass(slots=True)
class _Prepared:
    """A micro-batch loaded (its users locked) and folded in its own open transaction, with its
    write planned: what is left is to execute the write and commit."""

    parsed: list[Parsed]
    behind_ms: int | None
    started: float  # perf_counter when its transaction began (micro_batch_duration)
    conn: Connection
    transaction: RootTransaction
    result: FoldResult
    plan: store.WritePlan | None
    rejections: list[store.Rejection]

    def close(self) -> None:
        """Return the connection (rolling back whatever was not committed)."""
        self.conn.close()


class _ParsedPages:
    """Pages parsed in order, up to `limit` of them ahead of their turn: parsing is pure Python (no
    database, no locks), so the time the main thread would spend waiting for a write goes into
    parsing the pages after the next one."""

    def __init__(
        self,
        pages: Iterable[tuple[Sequence[RawRecord], int | None]],
        parse: Callable[[Sequence[RawRecord]], list[Parsed]],
        limit: int,
    ):
        self._pages = iter(pages)
        self._parse = parse
        self._limit = limit
        self._ready: deque[tuple[list[Parsed], int | None]] = deque()
        self._exhausted = False

    def parse_ahead(self) -> bool:
        """Parse one more page; False when `limit` pages are waiting or there are no more pages."""
        if self._exhausted or len(self._ready) >= self._limit:
            return False
        for raws, behind_ms in self._pages:
            # an empty page is an idle read: it goes through as it is (the applier settles then)
            self._ready.append((self._parse(raws) if raws else [], behind_ms))
            return True
        self._exhausted = True
        return False

    def __iter__(self) -> Iterator[tuple[list[Parsed], int | None]]:
        while self._ready or self.parse_ahead():
            yield self._ready.popleft()


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A prepared micro-batch whose write was handed to the writer thread."""

    future: Future
    prepared: _Prepared
    phones: set[str]


class Applier:
    """Applies micro-batches of one shard, each in one transaction with its checkpoint.

    `apply_pages` overlaps the work of two micro-batches, on two connections: while the database
    writes and commits micro-batch N, Python parses micro-batch N+1, locks and loads its users and
    folds it. Writes and commits stay strictly in stream order (N+1 is written only after N has
    committed), so the checkpoint committed with a micro-batch never covers an uncommitted one.
    Loading N+1 early is safe: its users are locked FOR UPDATE before their trees are read, so a
    user N is still writing is read only once N has committed; and a micro-batch that shares a
    phone number with the one in flight (a user N may be creating) waits for N's commit first.
    """

    def __init__(
        self,
        engine: Engine,
        stream: str,
        shard_id: str,
        *,
        parents: Sequence[str] = (),
        stats: ShardStats | None = None,
        fault: Fault | None = None,
        on_commit: Callable[[list[str]], None] | None = None,
        fence: Callable[[Connection], None] | None = None,
    ):
        self.engine = engine
        self.stream = stream
        self.shard_id = shard_id
        self.parents = tuple(parents)
        self.stats = stats or ShardStats(shard_id)
        self.metrics = ShardMetrics(shard_id)
        self.fault = fault
        self.on_commit = on_commit  # called with a committed micro-batch's new outbox keys (any thread)
        # called on each micro-batch's transaction right before its write (the shard lease's renewal,
        # ingest/lease.py): raising there rolls the micro-batch back and stops the applier
        self.fence = fence

    def apply(self, parsed: list[Parsed], behind_ms: int | None = None) -> None:
        if parsed:
            self._apply(parsed, behind_ms)

    def apply_records(self, raws: Sequence[RawRecord], behind_ms: int | None = None) -> None:
        """Parse and apply one micro-batch of raw records (one GetRecords page)."""
        with gc_paused():
            self.apply(self._parse(raws), behind_ms)

    def apply_pages(self, pages: Iterable[tuple[Sequence[RawRecord], int | None]]) -> None:
        """Parse and apply micro-batches (GetRecords pages: records, ms behind the tip) in order,
        preparing each while the previous one is written (see the class's docstring). On an error
        the write in flight ends (commits or rolls back) before the error propagates."""
        with (
            gc_paused(),
            quick_thread_switches(),
            ThreadPoolExecutor(1, thread_name_prefix=f"ingest-{self.shard_id}") as writer,
        ):
            inflight: _InFlight | None = None
            parsed_pages = _ParsedPages(pages, self._parse, PARSE_AHEAD_PAGES)
            for parsed, behind_ms in parsed_pages:
                if not parsed:  # an idle read: settle the micro-batch in flight (a failure is dealt with now)
                    if inflight is not None:
                        self._settle(inflight)
                        inflight = None
                    continue
                inflight = self._overlap(writer, inflight, parsed, behind_ms, parsed_pages.parse_ahead)
            if inflight is not None:
                self._settle(inflight)

    def _overlap(
        self,
        writer: ThreadPoolExecutor,
        inflight: _InFlight | None,
        parsed: list[Parsed],
        behind_ms: int | None,
        parse_ahead: Callable[[], bool],
    ) -> _InFlight | None:
        """Prepare `parsed` while `inflight` is written; submit its write once `inflight` committed.
        Time left waiting for the write is spent parsing the next pages (`parse_ahead`). Returns the
        micro-batch now in flight (None when `parsed` had to be applied on its own, in order)."""
        phones = {p.batch.phone_number for p in parsed if p.batch is not None}
        if inflight is not None and not phones.isdisjoint(inflight.phones):
            self._settle(inflight)  # a user of this micro-batch may still be being created: wait
            inflight = None
        prepared = self._try_prepare(parsed, behind_ms)
        try:
            if inflight is not None:
                while not inflight.future.done() and parse_ahead():
                    pass
                if prepared is not None and not wait([inflight.future], timeout=WRITE_PATIENCE_SECONDS).done:
                    # the write may wait for a lock held by another transaction (a rollout, say) that
                    # waits for one of ours: a cycle PostgreSQL cannot see. Let go of ours meanwhile.
                    prepared.close()
                    prepared = None
                failure = self._wait(inflight)
                if failure is not None:
                    # let go of ours before the retry or bisect too: a user we share with the failed
                    # micro-batch (under another phone number) would block it for ever
                    if prepared is not None:
                        prepared.close()
                        prepared = None
                    self._recover(inflight.prepared.parsed, inflight.prepared.behind_ms, failure)
            if prepared is None:
                prepared = self._try_prepare(parsed, behind_ms)
                if prepared is None:  # database trouble preparing it: apply it on its own, retried
                    self._apply(parsed, behind_ms)
                    return None
            return _InFlight(writer.submit(self._write, prepared), prepared, phones)
        except BaseException:
            if prepared is not None:
                prepared.close()
            raise

    def _try_prepare(self, parsed: list[Parsed], behind_ms: int | None) -> _Prepared | None:
        """`_prepare`, or None on an error that is not fatal (the caller applies it with retries)."""
        try:
            return self._prepare(parsed, behind_ms)
        except Exception as exc:
            if db.trouble(exc) == db.FATAL:
                raise
            log.warning(
                "shard %s: preparing a micro-batch of %d records failed (%s); it is applied on its own",
                self.shard_id,
                len(parsed),
                db.error_summary(exc),
            )
            return None

    def _parse(self, raws: Sequence[RawRecord]) -> list[Parsed]:
        started = time.perf_counter()
        parsed = parse_records(raws)
        self.stats.timings["parse"] += time.perf_counter() - started
        self.stats.records_read += len(raws)
        self.stats.micro_batches += 1
        return parsed

    def _settle(self, inflight: _InFlight) -> None:
        """Wait for a micro-batch's write; retry or bisect it if it failed on its records or on
        database trouble."""
        failure = self._wait(inflight)
        if failure is not None:
            self._recover(inflight.prepared.parsed, inflight.prepared.behind_ms, failure)

    def _wait(self, inflight: _InFlight) -> Exception | None:
        """Wait for a micro-batch's write: None if it committed, the error if it was rolled back by
        an error that is not fatal. Fatal errors propagate."""
        try:
            keys = inflight.future.result()
        except Exception as exc:
            if db.trouble(exc) == db.FATAL:
                raise
            return exc
        self._committed(inflight.prepared, keys)
        return None

    def _recover(self, parsed: list[Parsed], behind_ms: int | None, exc: Exception) -> None:
        """A micro-batch failed once on `exc`: retry it (transient trouble) or isolate its records."""
        if db.trouble(exc) == db.TRANSIENT:
            self._pause(parsed, 1, exc)
            self._apply(parsed, behind_ms, first_attempt=2)
        else:
            self._isolate(parsed, behind_ms, exc, 1)

    def _apply(self, parsed: list[Parsed], behind_ms: int | None, first_attempt: int = 1) -> None:
        """Apply in one transaction; on transient trouble try again (ATTEMPTS in all), then, like on
        an error caused by the data, isolate the failing records."""
        for attempt in range(first_attempt, ATTEMPTS + 1):
            try:
                prepared = self._prepare(parsed, behind_ms)
                keys = self._write(prepared)
            except Exception as exc:
                kind = db.trouble(exc)
                if kind == db.FATAL:
                    raise
                if attempt < ATTEMPTS and (kind == db.TRANSIENT or len(parsed) == 1):
                    self._pause(parsed, attempt, exc)
                    continue
                self._isolate(parsed, behind_ms, exc, attempt)
                return
            self._committed(prepared, keys)
            return

    def _pause(self, parsed: list[Parsed], attempt: int, exc: Exception) -> None:
        delay = backoff(attempt, base=BACKOFF_BASE_SECONDS)
        log.warning(
            "shard %s: a micro-batch of %d records failed (attempt %d of %d): %s; retrying in %.2fs",
            self.shard_id,
            len(parsed),
            attempt,
            ATTEMPTS,
            db.error_summary(exc),
            delay,
        )
        time.sleep(delay)

    def _isolate(self, parsed: list[Parsed], behind_ms: int | None, exc: Exception, attempts: int) -> None:
        """Lambda-style bisect-on-error: halves applied left then right (each retried on its own);
        a single record that still fails is set aside with the error."""
        reason = db.error_summary(exc)
        if len(parsed) > 1:
            mid = len(parsed) // 2
            log.warning(
                "shard %s: error on a micro-batch of %d records, bisecting: %s", self.shard_id, len(parsed), reason
            )
            self._apply(parsed[:mid], behind_ms)
            self._apply(parsed[mid:], behind_ms)
            return
        raw = parsed[0].raw
        log.error(
            "shard %s: setting record %s aside after %d attempts: %s",
            self.shard_id,
            raw.sequence_number,
            attempts,
            reason,
        )
        rejection = store.Rejection(
            raw.sequence_number,
            raw.partition_key,
            raw.data,
            f"database error after {attempts} attempts: {reason}",
            attempts,
        )
        self._set_aside(rejection, raw.arrival, behind_ms, parsed[0].batch.phone_number if parsed[0].batch else None)

    def _position(self, last: RawRecord, records: int, behind_ms: int | None) -> store.Position:
        return store.Position(
            self.stream, self.shard_id, last.sequence_number, records, behind_ms, self.parents, last.arrival
        )

    def _prepare(self, parsed: list[Parsed], behind_ms: int | None) -> _Prepared:
        """Open the micro-batch's transaction, lock and load its users, fold it, plan its write."""
        timings = self.stats.timings
        batches = [p.batch for p in parsed if p.batch is not None]
        rejections = [
            store.Rejection(p.raw.sequence_number, p.raw.partition_key, p.raw.data, p.reason)  # type: ignore[arg-type]
            for p in parsed
            if p.batch is None
        ]
        began = time.perf_counter()
        conn = self.engine.connect()
        try:
            transaction = conn.begin()
            started = time.perf_counter()
            catalog, users = store.load_micro_batch(conn, batches)
            loaded = time.perf_counter()
            result = fold(users, batches, catalog)
            plan = store.plan_write(
                users,
                rejections=rejections,
                commands=result.commands,
                position=self._position(parsed[-1].raw, len(parsed), behind_ms),
                history=store.history_records(
                    [p.raw for p in parsed], [p.batch.phone_number if p.batch else None for p in parsed]
                ),
            )
            timings["db_load"] += loaded - started
            timings["fold"] += time.perf_counter() - loaded
        except BaseException:
            conn.close()
            raise
        return _Prepared(parsed, behind_ms, began, conn, transaction, result, plan, rejections)

    def _write(self, prepared: _Prepared) -> list[str]:
        """Execute a prepared micro-batch's write and commit; returns the new outbox keys. Runs on
        the writer thread in `apply_pages`: it only waits on the database (the GIL is free)."""
        started = time.perf_counter()
        try:
            if self.fence is not None:
                self.fence(prepared.conn)
            keys = store.execute_write(prepared.conn, prepared.plan)
            if self.fault:
                self.fault("before_commit", prepared.conn)
            prepared.transaction.commit()
        finally:
            prepared.close()
        self.stats.timings["db_write"] += time.perf_counter() - started
        if self.on_commit is not None:
            self.on_commit(keys)
        if self.fault:
            self.fault("after_commit", None)
        return keys

    def _committed(self, prepared: _Prepared, keys: list[str]) -> None:
        stats, result = self.stats, prepared.result
        stats.transactions += 1
        stats.batches_applied += result.applied
        stats.events_applied += result.events
        stats.duplicates_skipped += result.skipped
        stats.records_rejected += len(prepared.rejections)
        stats.commands_emitted += len(keys)
        self.metrics.committed(result.events, len(prepared.rejections), time.perf_counter() - prepared.started)
        for rejection in prepared.rejections:
            log.warning("shard %s: record %s set aside: %s", self.shard_id, rejection.sequence_number, rejection.reason)

    def _set_aside(
        self, rejection: store.Rejection, arrival: datetime | None, behind_ms: int | None, phone: str | None = None
    ) -> None:
        position = store.Position(
            self.stream, self.shard_id, rejection.sequence_number, 1, behind_ms, self.parents, arrival
        )
        raw = RawRecord(rejection.sequence_number, rejection.partition_key, rejection.raw_data, arrival)
        plan = store.plan_write(
            {}, rejections=[rejection], position=position, history=store.history_records([raw], [phone])
        )
        with self.engine.begin() as conn:
            if self.fence is not None:
                self.fence(conn)
            store.execute_write(conn, plan)
        self.stats.transactions += 1
        self.stats.records_rejected += 1
        self.metrics.set_aside(1)


def apply_micro_batch(
    engine: Engine,
    stream: str,
    shard_id: str,
    raws: Sequence[RawRecord],
    *,
    behind_ms: int | None = None,
    stats: ShardStats | None = None,
    fault: Fault | None = None,
) -> ShardStats:
    """Parse and apply one micro-batch of raw records outside the shard loop (tests, benchmark)."""
    applier = Applier(engine, stream, shard_id, stats=stats, fault=fault)
    applier.apply_records(raws, behind_ms)
    return applier.stats
