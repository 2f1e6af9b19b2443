"""User lookup of the Drill Progress page: one phone number's whole story, as one JSON-ready dict.

No Airflow here (the route, its permission and its audit row are in drill_progress.ui.app).

What is shown: the user (id, seq, profile, last interaction), the user's phone numbers, every drill
status and instance (current prompt, its times, the prompts already reminded), the next drill that
scheduling would pick (scheduling's own statement, `drill_progress.next_drill.next_drills`, i.e.
include/sql/scheduling/next_drill.sql, the one the send tasks check before sending), whether the
user is due at today's scheduled run and why not, the START_DRILLs daily scheduling recorded as
sent (`sent_start_drills`, keys made by `scheduling.planning.idempotency_key`), the commands of
the user's numbers in the outbox and the records set aside for them.

"Due at today's run" applies contract §6 with the DAG's defaults (run at 17:05 UTC, inactivity
720 minutes) to the rows read here, criterion by criterion, so that the operator sees which one
failed; tests cross-check it against scheduling's own due_users.sql. Today's planned send time is
`scheduling.planning.plan` over the default window (180 minutes): the time the scheduled run gives
this user, since it is seeded by the idempotency key. The DynamoDB schedule is not read: it is
keyed by slot and planned time, so finding one user would mean reading the day's whole schedule.

Phone numbers never leave this module in full: numbers, command payloads and partition keys,
reasons and errors are masked with `drill_progress.privacy` (the operator typed the number).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from drill_progress.db import run
from drill_progress.next_drill import next_drills
from drill_progress.privacy import mask_phone, mask_phones_in
from drill_progress.scheduling.planning import DueUser, Window, idempotency_key, plan
from drill_progress.ui.queries import _json

# schedule_next_drills' schedule and default params (dags/schedule_next_drills.py)
SCHEDULED_RUN_TIME = time(17, 5, tzinfo=UTC)
DEFAULT_INACTIVITY_MINUTES = 720
DEFAULT_SPREAD_MINUTES = 180
SENT_DAYS = 3  # sent_start_drills keeps a send date for two days after it (maintenance)
INSTANCES_LIMIT = 100
COMMANDS_LIMIT = 200
REJECTED_LIMIT = 100
MAX_INPUT = 64
_SEPARATORS = re.compile(r"[\s().-]")
_PHONE = re.compile(r"\+?\d{7,20}")


class NotAPhoneNumber(ValueError):
    """The lookup's input is not a phone number (never quoted in the message: it may be one)."""


def spellings(typed: str) -> list[str]:
    """The stored spellings to try for what the operator typed: as typed (trimmed), and without
    spaces, dots, dashes and parentheses ('+1 555 123-0001' -> '+15551230001')."""
    trimmed = typed.strip()
    compact = _SEPARATORS.sub("", trimmed)
    if len(trimmed) > MAX_INPUT or not _PHONE.fullmatch(compact):
        raise NotAPhoneNumber("not a phone number: digits, optionally a leading +, spaces and dashes allowed")
    return list(dict.fromkeys((trimmed, compact)))


def _rows(conn: Connection, template: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: _json(v) for k, v in row.items()} for row in run(conn, template, params).mappings()]


def _masked_payload(payload: Any) -> Any:
    if isinstance(payload, dict):
        return {k: (mask_phone(v) if k == "phone_number" and isinstance(v, str) else v) for k, v in payload.items()}
    return payload


def scheduled_run(today: date) -> datetime:
    """Today's scheduled schedule_next_drills run (its reference time)."""
    return datetime.combine(today, SCHEDULED_RUN_TIME)


def due_today(
    user: dict[str, Any], statuses: list[dict[str, Any]], numbers: list[dict[str, Any]], drill: str | None, today: date
) -> dict[str, Any]:
    """Contract §6 at today's scheduled run (default params), criterion by criterion: the rule of
    scheduling/due_users.sql, for one user already read (tests cross-check the two)."""
    reference = scheduled_run(today)
    cutoff = reference - timedelta(minutes=DEFAULT_INACTIVITY_MINUTES)
    last = user["last_interacted_time"]
    primaries = sorted(n["phone_number"] for n in numbers if n["is_primary"])
    profile = user["profile"] if isinstance(user["profile"], dict) else {}
    why_not = []
    if not primaries:
        why_not.append("no primary phone number")
    if last is not None and datetime.fromisoformat(last) > cutoff:
        why_not.append(f"interacted after {cutoff.isoformat()} (less than 12 h before the run)")
    if not any(s["started_time"] for s in statuses):
        why_not.append("no drill started yet")
    if all(s["completed_time"] for s in statuses):
        why_not.append("no incomplete drill")
    opted_out = profile.get("opted_out")
    if opted_out is True or opted_out == "true":  # SQL: profile ->> 'opted_out' = 'true'
        why_not.append("opted out")
    if drill is None:
        why_not.append("no next drill among the user's own drills")
    answer: dict[str, Any] = {
        "date": today.isoformat(),
        "scheduled_run": reference.isoformat(),
        "inactivity_cutoff": cutoff.isoformat(),
        "due": not why_not,
        "why_not": why_not,
        "drill_slug": drill,
        "idempotency_key": idempotency_key(user["user_id"], drill, today) if drill else None,
        "planned_time": None,
    }
    if not why_not:
        window = Window.for_run(reference, DEFAULT_SPREAD_MINUTES)
        (send,) = plan([DueUser(user["user_id"], primaries[0], drill)], window)
        answer["planned_time"] = send.planned_time.isoformat()
    return answer


def not_found(engine: Engine, typed: str) -> dict[str, Any]:
    """What a number without a user still has: the records set aside for it."""
    numbers = spellings(typed)
    with engine.connect() as conn:
        rejected = _rejected(conn, numbers)
    return {"detail": "no user with this phone number", "phone_number": mask_phone(typed), "rejected_records": rejected}


def _rejected(conn: Connection, numbers: list[str]) -> list[dict[str, Any]]:
    rows = _rows(conn, "ui/lookup/rejected.sql", {"phone_numbers": numbers, "limit": REJECTED_LIMIT})
    for r in rows:
        r["partition_key"] = mask_phone(r["partition_key"])
        r["reason"] = mask_phones_in(r["reason"])
    return rows


def lookup(engine: Engine, typed: str, now: datetime | None = None) -> dict[str, Any] | None:
    """The whole story of the user with this phone number, or None when no user has it.
    Raises NotAPhoneNumber for input that is not one."""
    numbers = spellings(typed)
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    with engine.connect() as conn:
        found = _rows(conn, "ui/lookup/user.sql", {"phone_numbers": numbers})
        if not found:
            return None
        user = found[0]
        user_id = user["user_id"]
        ids = {"user_id": user_id}
        phone_rows = _rows(conn, "ui/lookup/phone_numbers.sql", ids)
        statuses = _rows(conn, "ui/lookup/statuses.sql", ids)
        instances = _rows(conn, "ui/lookup/instances.sql", {**ids, "limit": INSTANCES_LIMIT})
        drill = next_drills(conn, [user_id]).get(user_id)
        user_numbers = [n["phone_number"] for n in phone_rows]
        commands = _rows(conn, "ui/lookup/commands.sql", {"phone_numbers": user_numbers, "limit": COMMANDS_LIMIT})
        rejected = _rejected(conn, user_numbers)
        keys = [
            idempotency_key(user_id, s["drill_slug"], today - timedelta(days=d))
            for s in statuses
            for d in range(SENT_DAYS)
        ]
        sent = _rows(conn, "ui/lookup/sent_start_drills.sql", {"keys": keys})
    today_plan = due_today(user, statuses, phone_rows, drill, today)
    today_plan["recorded_as_sent"] = any(s["idempotency_key"] == today_plan["idempotency_key"] for s in sent)
    for c in commands:
        c["partition_key"] = mask_phone(c["partition_key"])
        c["payload"] = _masked_payload(c["payload"])
        c["last_error"] = mask_phones_in(c["last_error"]) if c["last_error"] else None
    return {
        "phone_number": mask_phone(user["phone_number"]),
        "user": {
            "user_id": user_id,
            "seq": user["seq"],
            "profile": user["profile"],
            "last_interacted_time": user["last_interacted_time"],
            "created_at": user["created_at"],
        },
        "phone_numbers": [
            {
                "phone_number": mask_phone(n["phone_number"]),
                "is_primary": n["is_primary"],
                "looked_up": n["phone_number"] == user["phone_number"],
            }
            for n in phone_rows
        ],
        "next_drill": drill,
        "today": today_plan,
        "sent_start_drills": sent,
        "drill_statuses": statuses,
        "drill_instances": instances,
        "commands": commands,
        "rejected_records": rejected,
    }
