"""A user's progress through the catalog: which drill comes next (contract §3), among the drills
that are the user's.

A drill's **audience** is the catalog's `drills.employer_ids`: NULL (None here) = everyone, else the
employer ids, as text, whose users get it (a drill rolled out with `only_employer_ids`). A user's
employer is the profile's `account_info.employer_id` as text (1 and "1" alike, as PostgreSQL's
`profile #>> '{account_info,employer_id}'` reads it). Every rule that reads a user's status rows
(the next drill, the first drill on USER_VALIDATED, scheduling) ignores the rows of drills whose
audience leaves the user out: such a row can only be history (a drill started before the audience
was recorded, or before the user changed employer), never a drill to send.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy.engine import Connection

from drill_progress.db import run

Audience = tuple[str, ...] | None  # employer ids as text; None = everyone


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


def employer_of(profile: object) -> str | None:
    """The profile's account_info.employer_id as text, the way SQL's #>> reads it for the values an
    audience can list (integers or strings); anything else (absent, null, a bool, a float, an
    object) matches no audience, here as in SQL."""
    account = profile.get("account_info") if isinstance(profile, dict) else None
    value = account.get("employer_id") if isinstance(account, dict) else None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def admits(audience: Sequence[str] | None, employer: str | None) -> bool:
    """Whether a drill with this audience is for a user of this employer."""
    return audience is None or (employer is not None and employer in audience)


def next_drills(conn: Connection, user_ids: Sequence[UUID | str]) -> dict[str, str]:
    """Next drill per user id (as str), for many users in one statement, among each user's own
    drills (include/sql/scheduling/next_drill.sql); users with none are absent."""
    if not user_ids:
        return {}
    rows = run(conn, "scheduling/next_drill.sql", {"user_ids": [str(u) for u in user_ids]}).all()
    return {str(user_id): slug for user_id, slug in rows}
