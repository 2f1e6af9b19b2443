"""Helpers for the scheduling tests: seed users straight into the aggregate, read the command stream."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from devtools.streams import read_all
from drill_progress.config import INITIAL_CATALOG

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
UNSTARTED, STARTED, COMPLETED = "unstarted", "started", "completed"


def add_user(
    conn,
    *,
    phone: str | None = None,
    states=(STARTED, UNSTARTED, UNSTARTED),
    last_interacted: datetime | None = None,
    profile: dict | None = None,
    primary: bool = True,
    user_id: str | None = None,
    at: datetime = T0 - timedelta(days=3),
) -> str:
    """One user with one status row per catalog drill in the given states; returns the user id."""
    user_id = user_id or str(uuid.uuid4())
    conn.exec_driver_sql(
        "INSERT INTO users (user_id, seq, profile, last_interacted_time) VALUES (%(u)s, 1, %(p)s::jsonb, %(t)s)",
        {"u": user_id, "p": json.dumps(profile if profile is not None else {"validated": True}), "t": last_interacted},
    )
    if phone:
        conn.exec_driver_sql(
            "INSERT INTO phone_numbers (id, phone_number, user_id, is_primary)"
            " VALUES (gen_random_uuid(), %(n)s, %(u)s, %(p)s)",
            {"n": phone, "u": user_id, "p": primary},
        )
    for place, (slug, state) in enumerate(zip(INITIAL_CATALOG, states, strict=True)):
        conn.exec_driver_sql(
            "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time, completed_time)"
            " VALUES (gen_random_uuid(), %(u)s, %(s)s, %(p)s, %(st)s, %(c)s)",
            {
                "u": user_id,
                "s": slug,
                "p": place,
                "st": at if state in (STARTED, COMPLETED) else None,
                "c": at if state == COMPLETED else None,
            },
        )
    return user_id


def set_state(conn, user_id: str, slug: str, state: str, at: datetime = T0) -> None:
    conn.exec_driver_sql(
        "UPDATE drill_statuses SET started_time = %(st)s, completed_time = %(c)s"
        " WHERE user_id = %(u)s AND drill_slug = %(s)s",
        {
            "u": user_id,
            "s": slug,
            "st": at if state in (STARTED, COMPLETED) else None,
            "c": at if state == COMPLETED else None,
        },
    )


def read_stream(kinesis, stream: str) -> list[dict]:
    """Every record on the stream: {"partition_key", "body"}."""
    return [{"partition_key": r["PartitionKey"], "body": json.loads(r["Data"])} for r in read_all(kinesis, stream)]


def scan_table(dynamodb, table: str) -> list[dict]:
    items, kwargs = [], {"TableName": table}
    while True:
        page = dynamodb.scan(**kwargs)
        items += [{k: next(iter(v.values())) for k, v in item.items()} for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class VirtualClock:
    """A clock for the send tasks that only moves when they sleep: a paced run of minutes takes
    milliseconds, and every wait is recorded."""

    def __init__(self, start: float):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def arrivals(kinesis, stream: str) -> dict[str, float]:
    """idempotency_key -> when the record reached the stream (the emulator stamps each record's
    ApproximateArrivalTimestamp, in milliseconds), in epoch seconds."""
    return {
        json.loads(r["Data"])["idempotency_key"]: r["ApproximateArrivalTimestamp"].timestamp()
        for r in read_all(kinesis, stream)
    }


def planned_sends(dynamodb, table: str) -> dict:
    """Every schedule item read back as the send tasks read it (drill_progress.scheduling.sending
    .Scheduled), by idempotency key."""
    from datetime import date

    from drill_progress.scheduling.sending import from_item

    found, kwargs = {}, {"TableName": table}
    while True:
        page = dynamodb.scan(**kwargs)
        for item in page["Items"]:
            send = from_item(item, date.fromisoformat(item["pk"]["S"][:10]))
            found[send.idempotency_key] = send
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
