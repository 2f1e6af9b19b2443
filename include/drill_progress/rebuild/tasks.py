"""Airflow glue of `drill_progress_rebuild` (called from the task body only)."""

from __future__ import annotations

from drill_progress import connections
from drill_progress.db import masked_errors


@masked_errors
def rebuild_users(params: dict) -> dict:
    """Task `rebuild_users`: the rebuild's summary (phone numbers masked)."""
    from airflow.sdk.exceptions import AirflowFailException

    from drill_progress import rebuild

    phones = [p.strip() for p in params.get("phone_numbers") or [] if p and p.strip()]
    try:
        summary = rebuild.rebuild(
            connections.db_engine(),
            phones,
            all_users=bool(params.get("all_users")),
            dry_run=bool(params.get("dry_run", True)),
        )
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from exc  # the params are wrong: no retry
    return summary.as_dict()
