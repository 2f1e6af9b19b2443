"""Daily next-drill scheduling (contract §4): who is due, when each is sent (docs/scheduling.md).

One run of `schedule_next_drills`:

1. **Plan** (`plan_run`): the due users and each one's next drill (include/sql/scheduling/
   due_users.sql) are **streamed** from PostgreSQL through a server-side cursor, `CHUNK_USERS` at a
   time; each chunk is planned and written to DynamoDB before the next is fetched, so the task's
   memory does not grow with the number of users. Each user gets a planned send time, uniform over
   the sending window [reference time, reference time + spread) and drawn from a generator seeded
   by the command's idempotency key (planning the same day again gives the same times). A send
   whose planned time is already more than the late guard (`max_send_delay_minutes`) behind `now`
   is not recorded but counted (`late_dropped`): a backfill of an old day sends nothing. The window
   is cut into at most `MAX_SLOTS` equal slots; each recorded send goes into the DynamoDB schedule
   table under its slot's partition key, sorted by planned time (`sk`), with a TTL. Slots that have
   already begun when the plan ends are merged into one (they are all due at once).
2. **Send** (`sending.send_slot`, one deferrable task per slot): paced to the second.

A run maps one task instance per non-empty slot (at most `MAX_SLOTS`) whatever the user count.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
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
CHUNK_USERS = 10_000  # due users fetched, planned and written to DynamoDB at a time
BATCH_WRITE_MAX = 25  # DynamoDB BatchWriteItem limit
WRITE_WORKERS = 8  # BatchWriteItem calls in flight (boto3 clients are thread-safe)
DEFAULT_MAX_SEND_DELAY_MINUTES = 60
# The pacing's ceiling, per send task and second: RATE_FACTOR x the window's mean rate +
# RATE_ALLOWANCE. Sends on time are a Poisson stream well under it; a task that has fallen behind
# (a late wake-up) catches up at this rate, so with the task of the current slot sending on time
# beside it, no second carries more than ~3x the mean rate + RATE_ALLOWANCE.
RATE_FACTOR = 2.0
RATE_ALLOWANCE = 5
SAMPLES_LOGGED = 3


class ScheduleWriteError(RuntimeError):
    """Some schedule items could not be written to DynamoDB after every retry."""


# --- pure planning -----------------------------------------------------------------------------


class DueUser(NamedTuple):  # a tuple: a chunk builds ten thousand of them
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
    def for_run(cls, reference: datetime, spread_minutes: float) -> Window:
        if spread_minutes < 0:
            raise ValueError(f"spread_minutes must be >= 0, got {spread_minutes}")
        # slots of at least a minute: a finer grain buys nothing but more task instances
        slots = max(1, min(MAX_SLOTS, int(spread_minutes)))
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
        run at another time) gets its own, and the sent keys keep it from sending twice."""
        return f"{self.start:%Y-%m-%dT%H%M%S}#slot{slot:03d}"


@dataclass(frozen=True)
class PlannedSend:
    user_id: str
    phone_number: str
    drill_slug: str
    idempotency_key: str
    planned_time: datetime
    slot: int


def reference_time(logical_date: datetime | None, run_after: datetime | None) -> datetime:
    """The moment a run schedules for: its logical date when it has one (a scheduled run, a
    backfill, `airflow dags test schedule_next_drills <date>`), so that a re-run or backfill of a
    day plans exactly what that day's run planned; else (a manual trigger without a date, which
    Airflow 3 allows) the time it was triggered, `run_after`."""
    when = logical_date or run_after
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


def is_late(planned_time: datetime, now: datetime, max_send_delay: timedelta | None) -> bool:
    """The late guard: a send whose planned time passed more than `max_send_delay` ago is not sent."""
    return max_send_delay is not None and now - planned_time > max_send_delay


def max_per_second(window: Window, planned: int) -> int | None:
    """The pacing's ceiling per send task and second (None: no ceiling, a spread of 0)."""
    seconds = window.spread.total_seconds()
    if not seconds:
        return None
    return math.ceil(RATE_FACTOR * planned / seconds) + RATE_ALLOWANCE


@dataclass(frozen=True)
class Policy:
    """What the send tasks of a run enforce (carried in every slot spec)."""

    planned_at: datetime  # the plan's time: a user who interacted after it is active again
    max_send_delay: timedelta | None = None  # the late guard; None: off
    rate_limited: bool = False  # pace catch-up at max_per_second; False: no ceiling


def slot_specs(counts: Counter, window: Window, policy: Policy, now: datetime) -> list[dict]:
    """One small, JSON-able spec per send task, from the recorded sends per slot. The slots that
    have already begun at `now` are due at once: they make one task (reading each slot in turn, so
    in planned-time order); each later non-empty slot makes its own."""
    recorded = sum(counts.values())
    ceiling = max_per_second(window, recorded) if policy.rate_limited else None
    groups: list[list[int]] = []
    for slot in sorted(s for s, n in counts.items() if n):
        if groups and window.slot_start(slot) <= now:
            groups[-1].append(slot)
        else:
            groups.append([slot])
    return [
        {
            "slot": group[0],
            "pks": [window.slot_pk(s) for s in group],
            "send_at": window.slot_start(group[0]).isoformat(),
            "slot_end": (window.slot_start(group[-1]) + window.slot_width).isoformat(),
            "window_end": window.end.isoformat(),
            "send_date": window.schedule_date.isoformat(),
            "users": sum(counts[s] for s in group),
            "max_send_delay_s": None if policy.max_send_delay is None else policy.max_send_delay.total_seconds(),
            "max_per_second": ceiling,
        }
        for group in groups
    ]


# --- PostgreSQL --------------------------------------------------------------------------------


def due_users(conn: Connection, cutoff: datetime) -> list[DueUser]:
    """Every due user and next drill at once (tests and the benchmark; the plan streams them)."""
    return [user for chunk in stream_due_users(conn, cutoff) for user in chunk]


def stream_due_users(conn: Connection, cutoff: datetime, chunk: int = CHUNK_USERS) -> Iterator[list[DueUser]]:
    """Due users and their next drill (include/sql/scheduling/due_users.sql) in user_id order, in
    chunks of `chunk`, through a server-side cursor: only one chunk is held at a time. Must run
    inside a transaction (the plan settings of due_users_plan.sql are local to it)."""
    run(conn, "scheduling/due_users_plan.sql")
    streaming = conn.execution_options(stream_results=True, max_row_buffer=chunk)
    result = run(streaming, "scheduling/due_users.sql", {"cutoff": cutoff})
    for rows in result.partitions(chunk):
        yield [DueUser._make(row) for row in rows]


# --- DynamoDB ----------------------------------------------------------------------------------


SORT_KEY_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, UTC: text order is time order


def sort_key(send: PlannedSend) -> str:
    """`<planned time>#<user id>`: a slot's items sort by planned time, so a slot is read back in
    the order it is sent."""
    return f"{send.planned_time.astimezone(UTC):{SORT_KEY_TIME}}#{send.user_id}"


def schedule_item(send: PlannedSend, window: Window, expires_at: int, planned_at: int) -> dict:
    """One schedule item, as small as it can be (the emulator writes ~1.6x faster than with the
    four derivable attributes this design used to write): the user id and the planned time are in
    the sort key, the idempotency key follows from the user, the drill and the slot spec's date.
    `planned_at` (epoch seconds) is when the plan that wrote the item was made."""
    return {
        "pk": {"S": window.slot_pk(send.slot)},
        "sk": {"S": sort_key(send)},
        "phone_number": {"S": send.phone_number},
        "drill_slug": {"S": send.drill_slug},
        "planned_at": {"N": str(planned_at)},
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


def record(dynamodb, table: str, sends: Sequence[PlannedSend], window: Window, planned_at: datetime) -> int:
    expires_at = int((window.end + SCHEDULE_TTL).timestamp())
    at = math.floor(planned_at.timestamp())
    return batch_write(dynamodb, table, [schedule_item(s, window, expires_at, at) for s in sends])


# --- the plan task -----------------------------------------------------------------------------


def plan_run(
    engine: Engine,
    dynamodb,
    table: str,
    *,
    reference: datetime,
    now: datetime,
    spread_minutes: float,
    inactivity_minutes: int,
    max_send_delay_minutes: float | None = None,
    rate_limited: bool = False,
    chunk: int = CHUNK_USERS,
) -> dict:
    """Stream the due users, plan and record their sends chunk by chunk; return the slot specs to
    map the send tasks over and the summary.

    `max_send_delay_minutes` (the late guard) and `rate_limited` (the pacing's ceiling) are the
    DAG's policy, carried to the send tasks in the slot specs; left out (None, False), as the
    fault-injection harness and the benchmarks do, nothing is dropped for lateness and a send task
    that is behind sends its backlog at once."""
    window = Window.for_run(reference, spread_minutes)
    policy = Policy(
        planned_at=now.astimezone(UTC),
        max_send_delay=None if max_send_delay_minutes is None else timedelta(minutes=max_send_delay_minutes),
        rate_limited=rate_limited,
    )
    cutoff = window.start - timedelta(minutes=inactivity_minutes)
    started = time.perf_counter()
    counts: Counter = Counter()
    due = late = written = chunks = 0
    samples: list[PlannedSend] = []
    with engine.begin() as conn:
        for users in stream_due_users(conn, cutoff, chunk):
            chunks += 1
            due += len(users)
            sends = [s for s in plan(users, window) if not is_late(s.planned_time, now, policy.max_send_delay)]
            late += len(users) - len(sends)
            written += record(dynamodb, table, sends, window, policy.planned_at)
            counts.update(s.slot for s in sends)
            samples += sends[: SAMPLES_LOGGED - len(samples)]
    slots = slot_specs(counts, window, policy, now)
    summary = {
        "reference_time": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        "spread_minutes": spread_minutes,
        "inactivity_minutes": inactivity_minutes,
        "max_send_delay_minutes": max_send_delay_minutes,
        "planned_at": policy.planned_at.isoformat(),
        "due_users": due,
        "late_dropped": late,
        "recorded": written,
        "slots": len(slots),
        "max_per_second": slots[0]["max_per_second"] if slots else None,
        "chunks": chunks,
        "seconds": round(time.perf_counter() - started, 3),
    }
    _log_plan(summary, window, cutoff=cutoff, table=table, slots=slots, samples=samples)
    return {"slots": slots, "summary": summary}


def _log_plan(summary: dict, window: Window, *, cutoff: datetime, table: str, slots: list, samples: list) -> None:
    log.info(
        "%d users due (inactive since %s), planned over %s from %s; %d recorded in %s in %d chunks, "
        "%d not recorded because already more than %s min late (late guard); %d send tasks; %.1fs",
        summary["due_users"],
        cutoff.isoformat(),
        window.spread,
        window.start.isoformat(),
        summary["recorded"],
        table,
        summary["chunks"],
        summary["late_dropped"],
        summary["max_send_delay_minutes"],
        len(slots),
        summary["seconds"],
    )
    if summary["late_dropped"]:
        log.warning(
            "late guard: %d sends dropped at planning, their planned time more than %s minutes before now "
            "(a backfill or a run started late); a drill is not started hours late",
            summary["late_dropped"],
            summary["max_send_delay_minutes"],
        )
    for send in samples:
        log.info(
            "e.g. %s -> %s at %s (slot %d)",
            mask_phone(send.phone_number),
            send.drill_slug,
            send.planned_time.isoformat(),
            send.slot,
        )
