"""A user's progress through the catalog: which drill comes next (contract §3)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy.engine import Connection

from drill_progress.db import run


@dataclass(frozen=True)
class StatusRow:
    drill_slug: str
    place_in_sequence: int
    started_time: datetime | None
    completed_time: datetime | None


def next_drill(statuses: Iterable[StatusRow]) -> str | None:
    """First drill not yet started; if all started, first not completed; else None."""
    ordered = sorted(statuses, key=lambda s: s.place_in_sequence)
    for status in ordered:
        if status.started_time is None:
            return status.drill_slug
    for status in ordered:
        if status.completed_time is None:
            return status.drill_slug
    return None


def next_drills(conn: Connection, user_ids: Sequence[UUID | str]) -> dict[str, str]:
    """Next drill per user id (as str), for many users in one statement; users with none are absent."""
    if not user_ids:
        return {}
    rows = run(conn, "scheduling/next_drill.sql", {"user_ids": [str(u) for u in user_ids]}).all()
    return {str(user_id): slug for user_id, slug in rows}
