"""The event history's retention (DAG drill_progress_maintenance, docs/history.md): monthly
partitions are created ahead (so ingestion never writes to the DEFAULT partition) and months older
than `history_retention_days` are dropped whole (no DELETE, no bloat). After a drop, users created
before the new start of the history can no longer be rebuilt (event_history_coverage)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from drill_progress import metrics
from drill_progress.db import run

log = logging.getLogger(__name__)

MONTHS_AHEAD = 3  # this month and the next two exist at all times
DEFAULT_RETENTION_DAYS = 400


def keep_history(engine: Engine, *, now: datetime, retention_days: int, dry_run: bool) -> dict:
    """Create the coming months' partitions; drop (or, dry, list) the months older than the
    retention. Returns the partitions created and the months dropped with their size."""
    cutoff = now - timedelta(days=retention_days)
    with engine.begin() as conn:
        created = 0 if dry_run else run(conn, "maintenance/history_partitions.sql", {"months": MONTHS_AHEAD}).scalar()
        dropped = [
            {"partition": name, "month_end": end.isoformat(), "rows_estimate": rows, "bytes": size}
            for name, end, rows, size in run(
                conn, "maintenance/history_drop_before.sql", {"cutoff": cutoff, "dry_run": dry_run}
            ).all()
        ]
    result = {"cutoff": cutoff.isoformat(), "partitions_created": created, "dropped": dropped, "dry_run": dry_run}
    if not dry_run:
        metrics.history_partitions_dropped(len(dropped))
    log.info("event history: %s", result)
    return result
