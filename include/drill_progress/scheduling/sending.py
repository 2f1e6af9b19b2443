"""Sending the day's schedule, paced to the second (the `send_slot` tasks of schedule_next_drills).

A send task reads its slot(s) back from DynamoDB, page by page, in planned-time order (the items'
sort key), and sends each request at its planned time: once a second it takes the requests whose
time has come (at most the slot spec's `max_per_second`, so that a task that fell behind catches
up at a bounded rate), and for that sub-batch, in one transaction:

1. drops what must not be sent now: a request whose planned time passed more than the late guard
   (`max_send_delay_s`) ago (`late_dropped`), a user who interacted after the plan was made
   (`active_again`), a request whose drill is no longer the user's next drill or whose user opted
   out or whose number is no longer their primary one (`stale`);
2. records the rest in `sent_start_drills` (INSERT ... ON CONFLICT DO NOTHING: a key already there,
   from a retry, a re-run or another run the same day, is never enqueued again) and enqueues the
   new ones as START_DRILL commands in the outbox, in the same transaction;

then publishes the sub-batch's pending commands (the new ones and any a failed attempt left) and
sleeps until the next second. Memory holds one DynamoDB page (<= 1 MB) and one sub-batch.

A task that is behind (its next request due more than `CATCH_UP_AFTER_S` ago: it woke late) first
takes the run's catch-up lock (a PostgreSQL advisory lock keyed by the run's window), so that send
tasks woken late together (a triggerer outage) drain their backlogs one after another, each at the
ceiling, beside the tasks sending on time; it lets the lock go once it is on time again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from typing import NamedTuple

from sqlalchemy.engine import Engine

from drill_progress import outbox
from drill_progress.db import run
from drill_progress.next_drill import next_drills
from drill_progress.privacy import mask_phone
from drill_progress.scheduling.planning import SORT_KEY_TIME, SOURCE, idempotency_key

log = logging.getLogger(__name__)

MAX_BATCH = 500  # requests per sub-batch (one PutRecords call): a backlog goes out in several
CATCH_UP_AFTER_S = 5.0  # a task whose next request is later than this is catching up (one at a time)
CATCH_UP_POLL_S = 1.0
DROPS_LOGGED = 5  # dropped requests logged one by one per task and reason; the rest are counted
PROGRESS_EVERY_S = 60.0  # a progress line per minute of sending

COUNTERS = ("items", "late_dropped", "active_again", "stale", "enqueued", "already_enqueued", "published")


class Scheduled(NamedTuple):
    """One planned send, as read back from the schedule table."""

    user_id: str
    phone_number: str
    drill_slug: str
    idempotency_key: str
    planned: float  # planned send time, epoch seconds
    planned_at: datetime | None  # when the plan that wrote it was made


def from_item(item: dict, day: date) -> Scheduled:
    """A schedule item (as DynamoDB returns it) of the day's schedule, read back."""
    values = {name: next(iter(value.values())) for name, value in item.items()}
    if "idempotency_key" in values:  # an item written before issue 14 (a run planned before an upgrade)
        planned = datetime.fromisoformat(values["planned_time"])
        return Scheduled(
            values["user_id"],
            values["phone_number"],
            values["drill_slug"],
            values["idempotency_key"],
            planned.timestamp(),
            None,
        )
    when, user_id = values["sk"].split("#", 1)
    planned = datetime.strptime(when, SORT_KEY_TIME).replace(tzinfo=UTC)
    return Scheduled(
        user_id,
        values["phone_number"],
        values["drill_slug"],
        idempotency_key(user_id, values["drill_slug"], day),
        planned.timestamp(),
        datetime.fromtimestamp(int(values["planned_at"]), UTC),
    )


def read_slot(dynamodb, table: str, pk: str) -> Iterator[dict]:
    """Every raw schedule item of a slot, in sort-key (planned-time) order, one page at a time
    (strongly consistent queries)."""
    kwargs = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": pk}},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.query(**kwargs)
        yield from page["Items"]
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def slot_pks(slot: dict) -> list[str]:
    return slot.get("pks") or [slot["pk"]]  # "pk": a slot spec planned before issue 14


def schedule_date(slot: dict) -> date:
    """The schedule's day (the date in its idempotency keys)."""
    return date.fromisoformat(slot.get("send_date") or slot_pks(slot)[0][:10])


def slot_items(dynamodb, table: str, slot: dict) -> Iterator[Scheduled]:
    """The planned sends of a slot spec's slots, slot after slot: in planned-time order."""
    day = schedule_date(slot)
    for pk in slot_pks(slot):
        for item in read_slot(dynamodb, table, pk):
            yield from_item(item, day)


def paced(
    items: Iterable[Scheduled],
    *,
    per_second: int | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    max_batch: int = MAX_BATCH,
    gate: Callable[[bool], None] | None = None,
) -> Iterator[tuple[float, list[Scheduled]]]:
    """(now, sub-batch) pairs: the requests whose planned time has come, in order, at most one
    sub-batch per wall-clock second and at most `per_second` requests in a second (None: no
    ceiling), sleeping in between. A second is the one a sub-batch was taken in and, if its sending
    (the caller's work between two pairs) ran into the next, that one too: the requests reaching the
    stream in any second stay within `per_second`. A backlog of more than `max_batch` due requests goes out in
    consecutive sub-batches. `items` must come in planned-time order; one that does not is simply
    due at once. `gate(behind)` is called before each sub-batch, `behind` when the next request
    is more than CATCH_UP_AFTER_S late; it may block (the catch-up lock)."""
    source = iter(items)
    ahead = next(source, None)
    second, used = -1, 0
    while ahead is not None:
        now = clock()
        if gate is not None:
            gate(now - ahead.planned > CATCH_UP_AFTER_S)
            now = clock()
        if math.floor(now) != second:
            second, used = math.floor(now), 0
        room = max_batch if per_second is None else min(max_batch, per_second - used)
        batch: list[Scheduled] = []
        while ahead is not None and len(batch) < room and ahead.planned <= now:
            batch.append(ahead)
            ahead = next(source, None)
        if batch:
            used += len(batch)
            yield now, batch
            finished = math.floor(clock())
            if finished != second:  # its sending ran into a later second, where it may have landed: that
                second, used = finished, len(batch)  # second counts it, so arrivals per second stay bounded
        if ahead is None:
            return
        if len(batch) == max_batch and ahead.planned <= now and (per_second is None or used < per_second):
            continue  # a backlog: the next sub-batch at once
        if used and ((per_second is not None and used >= per_second) or ahead.planned < second + 1):
            wake = second + 1  # this second has had its sub-batch (or its ceiling)
        else:
            wake = ahead.planned
        sleep(max(0.0, wake - clock()))


class CatchUp:
    """The run's catch-up lock, held by at most one send task of the run at a time (see the module
    docstring): `__call__(behind)` takes it (polling, sleeping between tries) when behind and lets
    it go when on time; `release()` at the end."""

    def __init__(
        self,
        engine: Engine,
        run_key: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        digest = hashlib.sha256(f"schedule_next_drills catch-up {run_key}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big") & (2**63 - 1)
        self.engine, self.clock, self.sleep = engine, clock, sleep
        self.conn = None
        self.waited_s = 0.0

    def __call__(self, behind: bool) -> None:
        if behind and self.conn is None:
            conn = self.engine.connect()
            waited = False
            while not run(conn, "scheduling/catch_up_lock.sql", {"key": self.key}).scalar_one():
                conn.commit()
                self.sleep(CATCH_UP_POLL_S)
                self.waited_s += CATCH_UP_POLL_S
                waited = True
            conn.commit()  # the lock is the session's; no transaction stays open
            self.conn = conn
            if waited:  # the task that let it go may have sent in this very second: start with the next
                now = self.clock()
                self.sleep(math.floor(now) + 1 - now)
        elif not behind:
            self.release()

    def release(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                run(conn, "scheduling/catch_up_unlock.sql", {"key": self.key})
                conn.commit()
            finally:
                conn.close()


def send_slot(
    engine: Engine,
    dynamodb,
    kinesis,
    *,
    table: str,
    stream: str,
    slot: dict,
    deferred: bool = False,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Send one slot spec's requests paced to the second (see the module docstring); return the
    counts. Raises outbox.PublishError, once the sub-batch's commands are safe in the outbox, if
    some could not be published (the task's retry publishes them)."""
    started = clock()
    result: dict = {"slot": slot["slot"], "pks": slot_pks(slot), "deferred": deferred}
    result.update(dict.fromkeys(COUNTERS, 0))
    result.update(sub_batches=0, max_lateness_s=0.0, catch_up_wait_s=0.0)
    # the catch-up lock comes with the ceiling (the DAG's policy); without it a backlog goes at once
    catch_up = (
        None if slot.get("max_per_second") is None else CatchUp(engine, result["pks"][0].split("#")[0], clock, sleep)
    )
    try:
        _send_paced(
            engine,
            dynamodb,
            kinesis,
            table=table,
            stream=stream,
            slot=slot,
            result=result,
            clock=clock,
            sleep=sleep,
            catch_up=catch_up,
        )
    finally:
        if catch_up is not None:
            catch_up.release()
            result["catch_up_wait_s"] = catch_up.waited_s
    result["held_seconds"] = round(clock() - started, 3)
    _log_slot(slot, result)
    return result


def _send_paced(
    engine: Engine, dynamodb, kinesis, *, table: str, stream: str, slot: dict, result: dict, clock, sleep, catch_up
) -> None:
    max_delay = slot.get("max_send_delay_s")
    dropped: dict[str, int] = {}
    next_progress = clock() + PROGRESS_EVERY_S
    batches = paced(
        slot_items(dynamodb, table, slot),
        per_second=slot.get("max_per_second"),
        clock=clock,
        sleep=sleep,
        gate=catch_up,
    )
    for now, batch in batches:
        result["items"] += len(batch)
        result["sub_batches"] += 1
        fresh = []
        for item in batch:
            if max_delay is not None and now - item.planned > max_delay:
                _dropped(dropped, "late_dropped", item, f"planned {now - item.planned:.0f}s ago")
                result["late_dropped"] += 1
            else:
                fresh.append(item)
        if fresh:
            result["max_lateness_s"] = max(result["max_lateness_s"], round(now - fresh[0].planned, 3))
            _send_batch(engine, kinesis, stream, fresh, send_date=schedule_date(slot), result=result, dropped=dropped)
        if now >= next_progress:
            next_progress = now + PROGRESS_EVERY_S
            log.info("slot %s: so far %s", slot["slot"], {k: result[k] for k in COUNTERS})


def _log_slot(slot: dict, result: dict) -> None:
    max_delay = slot.get("max_send_delay_s")
    log.info(
        "slot %s (%s): %d requests in %d sub-batches over %.0fs, %d enqueued (%d were already), %d published; "
        "dropped: %d late (guard %s s), %d active again, %d stale; latest send %.1fs after its time; "
        "%.0fs waited to catch up",
        slot["slot"],
        ", ".join(result["pks"]),
        result["items"],
        result["sub_batches"],
        result["held_seconds"],
        result["enqueued"],
        result["already_enqueued"],
        result["published"],
        result["late_dropped"],
        max_delay,
        result["active_again"],
        result["stale"],
        result["max_lateness_s"],
        result["catch_up_wait_s"],
    )
    if result["late_dropped"]:
        log.warning(
            "late guard: %d requests of slot %s not sent, their planned time more than %s s before they came due "
            "(the task woke late); they are counted, not sent",
            result["late_dropped"],
            slot["slot"],
            max_delay,
        )


def _send_batch(
    engine: Engine, kinesis, stream: str, items: list[Scheduled], *, send_date: date, result: dict, dropped: dict
) -> None:
    """One sub-batch: re-check, record and enqueue in one transaction; then publish."""
    keys = [item.idempotency_key for item in items]
    with engine.begin() as conn:
        next_now = next_drills(conn, [item.user_id for item in items])
        checks = {
            key: (already, active, reachable)
            for key, already, active, reachable in run(
                conn,
                "scheduling/send_check.sql",
                {
                    "user_ids": [item.user_id for item in items],
                    "phones": [item.phone_number for item in items],
                    "keys": keys,
                    "planned_at": [item.planned_at for item in items],
                },
            ).all()
        }
        already_sent, to_send = [], []
        for item in items:
            already, active, reachable = checks[item.idempotency_key]
            if already:
                already_sent.append(item.idempotency_key)  # pending if an earlier attempt failed to publish it
            elif active:
                _dropped(dropped, "active_again", item, "interacted after the plan was made")
                result["active_again"] += 1
            elif not reachable or next_now.get(item.user_id) != item.drill_slug:
                why = "opted out or number changed" if reachable else None
                _dropped(dropped, "stale", item, why or f"next drill now {next_now.get(item.user_id)}")
                result["stale"] += 1
            else:
                to_send.append(item)
        new = set(
            run(
                conn,
                "scheduling/record_sent.sql",
                {"keys": [item.idempotency_key for item in to_send], "send_date": send_date},
            ).scalars()
        )
        commands = [
            outbox.start_drill(item.phone_number, item.drill_slug, item.idempotency_key)
            for item in to_send
            if item.idempotency_key in new
        ]
        enqueued = outbox.enqueue(conn, commands, SOURCE)
    result["enqueued"] += len(enqueued)
    result["already_enqueued"] += len(already_sent) + len(to_send) - len(enqueued)
    publish = already_sent + [item.idempotency_key for item in to_send]
    if not publish:
        return
    published = outbox.publish_pending(engine, kinesis, stream, source=SOURCE, keys=publish)
    result["published"] += published["published"]
    if published["failed"]:
        raise outbox.PublishError(
            f"{published['failed']} START_DRILL commands of slot {result['slot']} not published; "
            "they stay in the outbox and the task's retry publishes them"
        )


def _dropped(dropped: dict[str, int], reason: str, item: Scheduled, why: str) -> None:
    dropped[reason] = dropped.get(reason, 0) + 1
    if dropped[reason] <= DROPS_LOGGED:
        log.info(
            "not sent (%s): %s -> %s planned %s: %s",
            reason,
            mask_phone(item.phone_number),
            item.drill_slug,
            datetime.fromtimestamp(item.planned, UTC).isoformat(),
            why,
        )
