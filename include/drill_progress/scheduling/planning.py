"""Daily next-drill scheduling (contract §6): who is due, when each is sent, and sending.

One run of `schedule_next_drills`:

1. **Plan** (`plan_run`): one set-based query (include/sql/scheduling/due_users.sql) finds the
   due users and each one's next drill. Each gets a planned send time, uniform over the
   sending window [reference time, reference time + spread) — drawn from a generator seeded by
   the command's idempotency key, so planning the same day again gives the same times. The
   window is cut into at most `MAX_SLOTS` equal time slots; every (phone number, drill, planned
   time) is written to the DynamoDB schedule table under its slot's partition key, with a TTL.
   The run maps one task instance per non-empty slot — a bounded number whatever the user count.
2. **Send** (`send_slot`, run by a deferrable slot task when its slot starts): reads the slot's
   items back, re-reads those users from PostgreSQL and drops requests that went stale (the
   drill is no longer the user's next drill, the user opted out, or the number is no longer
   their primary one), then enqueues START_DRILL commands in the outbox — the idempotency key
   `start-drill:<user>:<drill>:<date>` is unique there, so a retry, a second run the same day or
   a backfill enqueues nothing new — and publishes the slot's pending commands.

A run whose whole sending window ended more than `LATE_GRACE` ago (a backfill of an old day, a
run that waited hours for a worker) plans and sends nothing: a drill nudge is only useful on
the day it was meant for. A run that starts inside its window (or less than `LATE_GRACE` after
it) sends the slots already due at once and defers the rest.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from sqlalchemy.engine import Connection, Engine

from drill_progress.db import run
from drill_progress.privacy import mask_phone

log = logging.getLogger(__name__)

SOURCE = "schedule_next_drills"
MAX_SLOTS = 60  # mapped send tasks per run, whatever the number of users (max_map_length: 1024)
SCHEDULE_TTL = timedelta(days=3)  # schedule items expire this long after their window ends
LATE_GRACE = timedelta(hours=3)  # a window that ended longer ago than this is not sent any more
BATCH_WRITE_MAX = 25  # DynamoDB BatchWriteItem limit
WRITE_WORKERS = 8  # BatchWriteItem calls in flight (boto3 clients are thread-safe)


class ScheduleWriteError(RuntimeError):
    """Some schedule items could not be written to DynamoDB after every retry."""


# --- pure planning -----------------------------------------------------------------------------


class DueUser(NamedTuple):  # a tuple: hundreds of thousands are built per run
    user_id: str
    phone_number: str
    drill_slug: str


@dataclass(frozen=True)
class Window:
    """The sending window [start, start + spread), cut into `slots` equal slots."""

    start: datetime
    spread: timedelta
    slots: int

    @classmethod
    def for_run(cls, reference: datetime, spread_minutes: int) -> Window:
        if spread_minutes < 0:
            raise ValueError(f"spread_minutes must be >= 0, got {spread_minutes}")
        # slots of at least a minute: a finer grain buys nothing but more task instances
        slots = max(1, min(MAX_SLOTS, spread_minutes))
        return cls(reference.astimezone(UTC), timedelta(minutes=spread_minutes), slots)

    @property
    def end(self) -> datetime:
        return self.start + self.spread

    @property
    def slot_width(self) -> timedelta:
        return self.spread / self.slots

    @property
    def schedule_date(self) -> date:
        return self.start.date()

    def slot_start(self, slot: int) -> datetime:
        return self.start + self.slot_width * slot

    def slot_of(self, moment: datetime) -> int:
        if not self.spread:
            return 0
        index = int((moment - self.start) / self.slot_width)
        return min(max(index, 0), self.slots - 1)

    def slot_pk(self, slot: int) -> str:
        """DynamoDB partition key of a slot: '<date>T<HHMMSS>#slot<NNN>' (run start, UTC).

        A retry or re-run of the same run gets the same keys; another run the same day (a manual
        run at another time) gets its own, and the outbox keys keep it from sending twice."""
        return f"{self.start:%Y-%m-%dT%H%M%S}#slot{slot:03d}"


@dataclass(frozen=True)
class PlannedSend:
    user_id: str
    phone_number: str
    drill_slug: str
    idempotency_key: str
    planned_time: datetime
    slot: int


def reference_time(run_type: object, logical_date: datetime | None, run_after: datetime | None) -> datetime:
    """The moment a run schedules for: a scheduled run's (or backfill's) logical date, so that a
    re-run or backfill of a day plans exactly what that day's run planned; a manual run's
    trigger time (`run_after`)."""
    kind = str(getattr(run_type, "value", run_type))
    when = logical_date if kind in {"scheduled", "backfill"} and logical_date else run_after or logical_date
    if when is None:
        raise ValueError("a DAG run without logical date nor run_after")
    return when.astimezone(UTC)


def idempotency_key(user_id: str, drill_slug: str, schedule_date: date) -> str:
    """One START_DRILL per user, drill and day, whatever runs, retries or backfills happen."""
    return f"start-drill:{user_id}:{drill_slug}:{schedule_date.isoformat()}"


def planned_fraction(key: str) -> float:
    """A uniform draw in [0, 1) from a generator seeded by `key` (same key, same draw)."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return random.Random(seed).random()  # noqa: S311 -- spreading load, not security


def plan(users: Iterable[DueUser], window: Window) -> list[PlannedSend]:
    """A planned send time for each due user, uniform over the window, and its slot."""
    planned = []
    for user in users:
        key = idempotency_key(user.user_id, user.drill_slug, window.schedule_date)
        moment = window.start + window.spread * planned_fraction(key)
        planned.append(
            PlannedSend(user.user_id, user.phone_number, user.drill_slug, key, moment, window.slot_of(moment))
        )
    return planned


def slot_specs(sends: Sequence[PlannedSend], window: Window) -> list[dict]:
    """One small, JSON-able spec per non-empty slot: what each mapped send task gets."""
    counts: dict[int, int] = {}
    for send in sends:
        counts[send.slot] = counts.get(send.slot, 0) + 1
    return [
        {
            "slot": slot,
            "pk": window.slot_pk(slot),
            "send_at": window.slot_start(slot).isoformat(),
            "window_end": window.end.isoformat(),
            "users": count,
        }
        for slot, count in sorted(counts.items())
    ]


def window_is_past(window: Window, now: datetime) -> bool:
    return now > window.end + LATE_GRACE


# --- PostgreSQL --------------------------------------------------------------------------------


def due_users(conn: Connection, cutoff: datetime) -> list[DueUser]:
    """Due users and their next drill (include/sql/scheduling/due_users.sql), in user_id order."""
    run(conn, "scheduling/due_users_plan.sql")
    rows = run(conn, "scheduling/due_users.sql", {"cutoff": cutoff}).fetchall()
    return [DueUser._make(row) for row in rows]


# --- DynamoDB ----------------------------------------------------------------------------------


def schedule_item(send: PlannedSend, window: Window, expires_at: int) -> dict:
    return {
        "pk": {"S": window.slot_pk(send.slot)},
        "sk": {"S": send.user_id},
        "user_id": {"S": send.user_id},
        "phone_number": {"S": send.phone_number},
        "drill_slug": {"S": send.drill_slug},
        "idempotency_key": {"S": send.idempotency_key},
        "planned_time": {"S": send.planned_time.isoformat()},
        "send_at": {"S": window.slot_start(send.slot).isoformat()},
        "slot": {"N": str(send.slot)},
        "expires_at": {"N": str(expires_at)},
    }


def batch_write(
    dynamodb,
    table: str,
    items: Sequence[dict],
    *,
    max_attempts: int = 8,
    base_delay: float = 0.05,
    max_delay: float = 5.0,
    workers: int = WRITE_WORKERS,
) -> int:
    """PutRequests in BatchWriteItem calls of 25 (`workers` calls in flight), each retrying its
    UnprocessedItems with jittered exponential backoff. Raises ScheduleWriteError if some items
    are still unprocessed after `max_attempts`."""
    chunks = [items[i : i + BATCH_WRITE_MAX] for i in range(0, len(items), BATCH_WRITE_MAX)]

    def write(chunk: Sequence[dict]) -> int:
        pending = [{"PutRequest": {"Item": item}} for item in chunk]
        for attempt in range(1, max_attempts + 1):
            response = dynamodb.batch_write_item(RequestItems={table: pending})
            unprocessed = response.get("UnprocessedItems", {}).get(table, [])
            if not unprocessed:
                return len(chunk)
            if attempt == max_attempts:
                raise ScheduleWriteError(f"{len(unprocessed)} schedule items unprocessed after {attempt} attempts")
            pending = unprocessed
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)  # noqa: S311
            log.info("%d schedule items unprocessed; retrying in %.2fs", len(pending), delay)
            time.sleep(delay)
        return 0  # not reached

    if len(chunks) <= 1 or workers <= 1:
        return sum(write(chunk) for chunk in chunks)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="schedule-write") as pool:
        return sum(pool.map(write, chunks))


def record(dynamodb, table: str, sends: Sequence[PlannedSend], window: Window) -> int:
    expires_at = int((window.end + SCHEDULE_TTL).timestamp())
    return batch_write(dynamodb, table, [schedule_item(s, window, expires_at) for s in sends])


# --- the two steps of a run --------------------------------------------------------------------


def plan_run(
    engine: Engine,
    dynamodb,
    table: str,
    *,
    reference: datetime,
    now: datetime,
    spread_minutes: int,
    inactivity_minutes: int,
) -> dict:
    """Find the due users, plan and record their sends; return the slot specs to map over."""
    window = Window.for_run(reference, spread_minutes)
    summary = {
        "reference_time": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        "spread_minutes": spread_minutes,
        "inactivity_minutes": inactivity_minutes,
    }
    if window_is_past(window, now):
        log.warning(
            "sending window %s..%s ended more than %s before now (%s): a backfill or a very late "
            "run sends nothing, so that no drill is started days late",
            window.start.isoformat(),
            window.end.isoformat(),
            LATE_GRACE,
            now.isoformat(),
        )
        return {"slots": [], "summary": {**summary, "skipped": "sending window in the past", "due_users": 0}}
    cutoff = window.start - timedelta(minutes=inactivity_minutes)
    started = time.perf_counter()
    with engine.begin() as conn:
        users = due_users(conn, cutoff)
    query_seconds = time.perf_counter() - started
    sends = plan(users, window)
    written = record(dynamodb, table, sends, window)
    slots = slot_specs(sends, window)
    late = sum(1 for s in slots if datetime.fromisoformat(s["send_at"]) <= now)
    log.info(
        "%d users due (inactive since %s; query %.2fs); %d schedule items written to %s; "
        "%d slots of %s from %s (%d already due)",
        len(users),
        cutoff.isoformat(),
        query_seconds,
        written,
        table,
        len(slots),
        window.slot_width,
        window.start.isoformat(),
        late,
    )
    for send in sends[:3]:
        log.info(
            "e.g. %s -> %s at %s (slot %d)",
            mask_phone(send.phone_number),
            send.drill_slug,
            send.planned_time.isoformat(),
            send.slot,
        )
    return {
        "slots": slots,
        "summary": {
            **summary,
            "due_users": len(users),
            "items_written": written,
            "slots": len(slots),
            "query_seconds": round(query_seconds, 3),
        },
    }
