"""The straightforward per-event updater, as the original design had it: one transaction per
event batch, one statement per state change. Only used as the benchmark's baseline.

It applies the same rules as drill_progress.ingest (seq guard, new users with a status row per
catalog drill, every event type, outbox rows for commands) so the two end in the same state.
"""

from __future__ import annotations

import json

import psycopg

from bench.urls import libpq_uri
from drill_progress import ids
from drill_progress.ingest import events as ev
from drill_progress.next_drill import StatusRow, next_drill


def apply_batches(url: str, records: list[bytes]) -> int:
    """Apply each record (an event batch) in its own transaction; returns batches applied."""
    applied = 0
    with psycopg.connect(libpq_uri(url)) as conn:
        catalog = conn.execute("SELECT drill_slug, place_in_sequence FROM drills ORDER BY place_in_sequence").fetchall()
        conn.commit()
        for data in records:
            batch = ev.parse_record(data)
            with conn.transaction():
                applied += _apply(conn, batch, catalog)
    return applied


def _apply(conn, batch: ev.Batch, catalog) -> int:
    phone = batch.phone_number
    row = conn.execute(
        "SELECT u.user_id, u.seq FROM phone_numbers p JOIN users u USING (user_id) "
        "WHERE p.phone_number = %s FOR UPDATE OF u",
        (phone,),
    ).fetchone()
    if row is None:
        user_id = ids.user_id(phone)
        conn.execute(
            "INSERT INTO users (user_id, seq, profile) VALUES (%s, %s, %s)",
            (user_id, batch.seq, json.dumps(batch.events[-1].user_profile)),
        )
        conn.execute(
            "INSERT INTO phone_numbers (id, phone_number, user_id, is_primary) VALUES (%s, %s, %s, true)",
            (ids.phone_number_id(phone), phone, user_id),
        )
        for slug, place in catalog:
            conn.execute(
                "INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence) VALUES (%s, %s, %s, %s)",
                (ids.status_id(user_id, slug), user_id, slug, place),
            )
    else:
        user_id, seq = row
        if batch.seq <= seq:
            return 0
    next_requested = None
    for e in batch.events:
        t = e.created_time
        conn.execute(
            "UPDATE users SET last_interacted_time = %s, profile = %s WHERE user_id = %s",
            (t, json.dumps(e.user_profile), user_id),
        )
        kind = e.event_type
        if kind == ev.DRILL_STARTED:
            conn.execute(
                "UPDATE drill_statuses SET started_time = %s, drill_instance_id = %s "
                "WHERE user_id = %s AND drill_slug = %s",
                (t, e.drill_instance_id, user_id, e.drill_slug),
            )
            conn.execute(
                "INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug, "
                "current_prompt_slug, current_prompt_start_time) VALUES (%s, %s, %s, %s, %s, %s)",
                (e.drill_instance_id, user_id, phone, e.drill_slug, e.prompt_slug, t),
            )
        elif kind in (ev.COMPLETED_PROMPT, ev.FAILED_PROMPT):
            conn.execute(
                "UPDATE drill_instances SET current_prompt_last_response_time = %s "
                "WHERE drill_instance_id = %s AND user_id = %s",
                (t, e.drill_instance_id, user_id),
            )
        elif kind == ev.ADVANCED_TO_NEXT_PROMPT:
            conn.execute(
                "UPDATE drill_instances SET current_prompt_slug = %s, current_prompt_start_time = %s, "
                "current_prompt_last_response_time = NULL WHERE drill_instance_id = %s AND user_id = %s",
                (e.prompt_slug, t, e.drill_instance_id, user_id),
            )
        elif kind == ev.DRILL_COMPLETED:
            conn.execute(
                "UPDATE drill_statuses SET completed_time = %s WHERE user_id = %s AND drill_instance_id = %s",
                (t, user_id, e.drill_instance_id),
            )
            conn.execute(
                "UPDATE drill_instances SET completion_time = %s, current_prompt_slug = NULL, "
                "current_prompt_start_time = NULL, current_prompt_last_response_time = NULL "
                "WHERE drill_instance_id = %s AND user_id = %s",
                (t, e.drill_instance_id, user_id),
            )
        elif kind == ev.USER_VALIDATED:
            conn.execute(
                "UPDATE drill_statuses SET started_time = NULL, completed_time = NULL, "
                "drill_instance_id = NULL WHERE user_id = %s",
                (user_id,),
            )
            conn.execute("UPDATE drill_instances SET is_valid = false WHERE user_id = %s", (user_id,))
            _command(conn, phone, catalog[0][0], e.event_id)
        elif kind == ev.OPTED_OUT and e.drill_instance_id:
            conn.execute(
                "UPDATE drill_statuses SET started_time = NULL WHERE user_id = %s AND drill_instance_id = %s",
                (user_id, e.drill_instance_id),
            )
            conn.execute(
                "UPDATE drill_instances SET is_valid = false WHERE drill_instance_id = %s AND user_id = %s",
                (e.drill_instance_id, user_id),
            )
        elif kind == ev.NEXT_DRILL_REQUESTED and next_requested is None:
            next_requested = e.event_id
    conn.execute("UPDATE users SET seq = %s WHERE user_id = %s", (batch.seq, user_id))
    if next_requested:
        statuses = [
            StatusRow(*r)
            for r in conn.execute(
                "SELECT drill_slug, place_in_sequence, started_time, completed_time FROM drill_statuses "
                "WHERE user_id = %s",
                (user_id,),
            ).fetchall()
        ]
        slug = next_drill(statuses)
        if slug:
            _command(conn, phone, slug, next_requested)
    return 1


def _command(conn, phone: str, slug: str, event_id: str) -> None:
    conn.execute(
        "INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source) "
        "VALUES (%s, 'START_DRILL', %s, %s, 'baseline') ON CONFLICT (idempotency_key) DO NOTHING",
        (f"ingest:{event_id}", phone, json.dumps({"phone_number": phone, "drill_slug": slug})),
    )
