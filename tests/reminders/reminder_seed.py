"""Seeding helpers for the reminder tests: the aggregate tables written directly with SQL."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from devtools.streams import read_all as read_stream  # noqa: F401  (re-exported for the tests)


def add_instance(
    engine,
    *,
    started: datetime | None,
    prompt: str | None = "q1",
    completed: datetime | None = None,
    valid: bool = True,
    phone: str | None = None,
    drill_slug: str = "01-sample-drill",
) -> str:
    """One user (with a primary phone) and one drill instance on `prompt` since `started`."""
    user_id, instance_id = uuid.uuid4(), uuid.uuid4()
    phone = phone or f"+1555{uuid.uuid4().int % 10**7:07d}"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO users (user_id, seq, profile) VALUES (%(u)s, 1, %(p)s::jsonb)",
            {"u": user_id, "p": json.dumps({"validated": True})},
        )
        conn.exec_driver_sql(
            "INSERT INTO phone_numbers (id, phone_number, user_id, is_primary) VALUES (%(i)s, %(ph)s, %(u)s, true)",
            {"i": uuid.uuid4(), "ph": phone, "u": user_id},
        )
        conn.exec_driver_sql(
            """INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug,
                   current_prompt_slug, current_prompt_start_time, completion_time, is_valid)
               VALUES (%(d)s, %(u)s, %(ph)s, %(s)s, %(p)s, %(t)s, %(c)s, %(v)s)""",
            {
                "d": instance_id,
                "u": user_id,
                "ph": phone,
                "s": drill_slug,
                "p": prompt,
                "t": started,
                "c": completed,
                "v": valid,
            },
        )
    return str(instance_id)


def advance(engine, instance_id: str, prompt: str, started: datetime) -> None:
    """ADVANCED_TO_NEXT_PROMPT as ingestion applies it (contract §3)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            """UPDATE drill_instances SET current_prompt_slug = %(p)s, current_prompt_start_time = %(t)s,
                   current_prompt_last_response_time = NULL WHERE drill_instance_id = %(d)s""",
            {"p": prompt, "t": started, "d": instance_id},
        )


def outbox_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT idempotency_key, command_type, partition_key, payload::text, published_at, source "
            "FROM command_outbox ORDER BY id"
        ).all()
