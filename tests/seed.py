"""Ordinary seed data for tests: users with phone numbers, drill instances due a reminder, users due
their next drill, written set-based (one statement per table) straight into the drill database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta


def _insert_users(conn, phones: list[str], users: list[str], last_interacted) -> None:
    """Validated users with one primary phone number each, in two set-based statements."""
    conn.exec_driver_sql(
        "INSERT INTO users (user_id, seq, profile, last_interacted_time) "
        "SELECT u, 1, '{\"validated\": true}'::jsonb, %(t)s FROM unnest(%(u)s::uuid[]) AS u",
        {"u": users, "t": last_interacted},
    )
    conn.exec_driver_sql(
        "INSERT INTO phone_numbers (id, phone_number, user_id, is_primary) "
        "SELECT gen_random_uuid(), p, u, true FROM unnest(%(p)s::text[], %(u)s::uuid[]) AS x(p, u)",
        {"p": phones, "u": users},
    )


def seed_reminder_instances(engine, n: int, reference: datetime, phone_base: int = 1_000_000) -> None:
    """n users, each with one valid, incomplete drill instance whose prompt started 5 h before
    `reference` (inside the default reminder window), one statement per table."""
    from drill_progress import ids

    phones = [f"+1555{phone_base + i:07d}" for i in range(n)]
    users = [str(ids.user_id(p)) for p in phones]
    instances = [_uuid5("chaos-instance:" + p) for p in phones]
    started = reference - timedelta(hours=5)
    with engine.begin() as conn:
        _insert_users(conn, phones, users, started)
        conn.exec_driver_sql(
            "INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug, "
            "current_prompt_slug, current_prompt_start_time, is_valid) "
            "SELECT i, u, p, '01-sample-drill', 'q2', %(t)s, true "
            "FROM unnest(%(i)s::uuid[], %(u)s::uuid[], %(p)s::text[]) AS x(i, u, p)",
            {"i": instances, "u": users, "p": phones, "t": started},
        )


def seed_due_users(engine, n: int, reference: datetime, phone_base: int = 2_000_000) -> None:
    """n users due for their next drill: drill 1 started 3 days before `reference`, drills 2 and 3
    not started, last interaction 3 days before (so the next drill is 01-sample-drill)."""
    from drill_progress import config, ids

    phones = [f"+1555{phone_base + i:07d}" for i in range(n)]
    users = [str(ids.user_id(p)) for p in phones]
    at = reference - timedelta(days=3)
    with engine.begin() as conn:
        _insert_users(conn, phones, users, at)
        for place, slug in enumerate(config.INITIAL_CATALOG):
            conn.exec_driver_sql(
                "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time) "
                "SELECT gen_random_uuid(), u, %(s)s, %(pl)s, %(st)s FROM unnest(%(u)s::uuid[]) AS u",
                {"u": users, "s": slug, "pl": place, "st": at if place == 0 else None},
            )


def _uuid5(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))
