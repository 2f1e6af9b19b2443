"""Deterministic identifiers for rows of the aggregate.

Every id the pipeline creates is a UUIDv5 of a stable name, so a crashed and retried (or
replayed) ingestion writes exactly the rows a clean run writes, and other areas (the drill
rollout) can compute the same ids without a lookup.
"""

from __future__ import annotations

import uuid

# Fixed for the life of the data: changing it would change every id the pipeline creates.
NAMESPACE = uuid.UUID("7f3c2a0e-5d1b-4c8e-9a61-0b2d4e6f8a13")


def user_id(phone_number: str) -> uuid.UUID:
    """The id of the user created for a phone number seen for the first time."""
    return uuid.uuid5(NAMESPACE, "user:" + phone_number)


def phone_number_id(phone_number: str) -> uuid.UUID:
    """The id of a user's primary `phone_numbers` row."""
    return uuid.uuid5(NAMESPACE, "phone:" + phone_number)


def status_id(user_id: uuid.UUID | str, drill_slug: str) -> uuid.UUID:
    """The id of the `drill_statuses` row of (user, drill); the rollout uses the same rule."""
    return uuid.uuid5(NAMESPACE, f"{user_id}:{drill_slug}")
