"""A shard's lease in PostgreSQL (table `shard_leases`): one consumer per shard at any instant, and a
hand-over between two ingestion runs within about a second.

- A consumer **acquires** the lease before it reads the shard's checkpoint. When another consumer
  holds it, it registers as the lease's **waiter** and tries again every `POLL_SECONDS`.
- The holder **renews** the lease in each micro-batch's transaction, right before its write: that
  renewal is the fence. A consumer whose lease was taken over finds no row, raises `LeaseLost`, and
  its transaction rolls back: two consumers never both commit a shard's records. While idle, the
  holder renews it at every poll.
- Every renewal reports the live waiter, if any. A **continuous** consumer (a scheduled run) lets
  go for any waiter: it stops reading, lets its micro-batch in flight commit, and **releases** the
  lease; the waiter takes it at its next try. A consumer that only **catches up** (a run started by
  hand, a replay) holds on until it is done: it is short. A continuous consumer that let go for a
  catch-up consumer waits to take the lease back afterwards (it still has run time left).
- A consumer killed without letting go (SIGKILL, a lost worker) loses the lease when it expires,
  `TTL_SECONDS` after its last renewal; its uncommitted micro-batch rolled back with its connection.

Time is the database's clock (`now()`), never the workers'.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from drill_progress.db import run

log = logging.getLogger(__name__)

TTL_SECONDS = 10.0  # a lease not renewed for this long is free (its holder is presumed dead)
WAITER_STALE_SECONDS = 3.0  # a waiter not seen for this long no longer holds its place
POLL_SECONDS = 0.05  # how often a waiting consumer tries to take the lease

CONTINUOUS, CATCH_UP = "continuous", "catch_up"
LOCK_NOT_AVAILABLE = "55P03"


class LeaseLost(RuntimeError):
    """The shard's lease was taken over by another consumer: this one must stop, committing nothing."""


def new_owner(label: str = "") -> str:
    """A consumer's token: unique, and readable by an operator (run, host, process)."""
    return f"{label or 'consumer'}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class ShardLease:
    """One consumer's claim on one shard (see the module's docstring)."""

    engine: Engine
    stream: str
    shard_id: str
    owner: str
    kind: str = CONTINUOUS  # CONTINUOUS lets go for any waiter; CATCH_UP for nobody
    run_id: str | None = None
    held: bool = False
    waiter: str | None = None  # the live waiter seen at the last renewal
    waiter_kind: str | None = None

    def _params(self) -> dict:
        return {
            "stream": self.stream,
            "shard_id": self.shard_id,
            "owner": self.owner,
            "kind": self.kind,
            "run_id": self.run_id,
            "ttl_seconds": TTL_SECONDS,
            "waiter_stale_seconds": WAITER_STALE_SECONDS,
        }

    def try_acquire(self) -> tuple[str | None, str | None]:
        """One try: take the lease or (failing that) register as its waiter. Returns the holder and
        its kind as they now are (the holder is `self.owner` when we got it)."""
        with self.engine.begin() as conn:
            row = run(conn, "ingest/lease_acquire.sql", self._params()).first()
            if row is None:
                row = run(conn, "ingest/lease_wait.sql", self._params()).first()
        holder, holder_kind = (row[0], row[1]) if row else (None, None)
        if holder == self.owner:
            self.held, self.waiter, self.waiter_kind = True, None, None
        return holder, holder_kind

    def acquire(self, give_up: Callable[[str | None, str | None], bool]) -> bool:
        """Take the lease, waiting for it as long as `give_up(holder, holder_kind)` says no.
        True when held."""
        logged = False
        while True:
            holder, holder_kind = self.try_acquire()
            if self.held:
                if logged:
                    log.info("shard %s: lease taken over (%s)", self.shard_id, self.owner)
                return True
            if give_up(holder, holder_kind):
                return False
            if not logged:
                log.info("shard %s: waiting for the lease held by %s (%s)", self.shard_id, holder, holder_kind)
                logged = True
            time.sleep(POLL_SECONDS)

    def renew(self, conn: Connection) -> None:
        """Renew the lease on `conn`'s transaction (the fence); raise LeaseLost when it is not ours
        any more. Notes the live waiter, if any."""
        row = run(conn, "ingest/lease_renew.sql", self._params()).first()
        if row is None:
            self.held = False
            raise LeaseLost(f"the lease of shard {self.shard_id} was taken over by another consumer")
        self.waiter, self.waiter_kind = row

    def renew_now(self) -> None:
        """Renew in a transaction of its own (an idle consumer). When a micro-batch's transaction
        of this consumer holds the row (it renews it too), skip: waiting for it here could close a
        wait cycle through this process that PostgreSQL cannot see."""
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
                self.renew(conn)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise

    def should_let_go(self) -> bool:
        """Whether the holder should stop reading and release: a continuous consumer with a waiter."""
        return self.held and self.kind == CONTINUOUS and self.waiter is not None

    def release(self) -> None:
        """Let go (after the last commit). Safe to call when not held. Best effort: when the database
        cannot be reached (the consumer is failing because of it), the lease expires by itself."""
        if not self.held:
            return
        self.held = False
        try:
            with self.engine.begin() as conn:
                run(conn, "ingest/lease_release.sql", self._params())
        except Exception as exc:  # never mask the error the consumer is failing with
            log.warning(
                "shard %s: could not release the lease (%s); it expires in %.0fs",
                self.shard_id,
                type(exc).__name__,
                TTL_SECONDS,
            )
