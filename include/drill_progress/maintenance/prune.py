"""Pruning the drill database's own growing tables, in bounded batches (DAG drill_progress_maintenance).

Each table is read in primary-key order, a batch at a time (`BATCH_ROWS` keys), in its own short
transaction: the rows of the batch older than the cutoff are deleted and the transaction commits
before the next batch. No statement holds a lock for long and none takes a table lock; a dry run
runs the very same statements with deletion switched off, so its counts are what a real run deletes.

| table | what goes | cutoff |
|---|---|---|
| `command_outbox` | published rows (never pending ones) | `outbox_retention_days` |
| `rejected_records` | set-aside records, resolved or not | `rejected_retention_days` |
| `sent_start_drills` | guards of days that can no longer send | send date before today - 2 (UTC), fixed |
| `ingestion_lag_samples` | lag history | `LAG_HISTORY_DAYS`, fixed |

A retention of 0 days means "everything older than now". The promises of the contract do not
depend on any of these rows (docs/operations.md): a reminded prompt is recorded on its instance,
a day's START_DRILL in sent_start_drills (kept while that day can still send), and ingestion's
commands are guarded by each user's `seq`.

Sizes: `bytes` is the size of the deleted rows (PostgreSQL's `pg_column_size` of each row): the
space made reusable for new rows. The table files do not shrink (VACUUM FULL would lock the table).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from drill_progress import metrics
from drill_progress.db import run

log = logging.getLogger(__name__)

BATCH_ROWS = 10_000
LAG_HISTORY_DAYS = 7
START_DRILL_GUARD_DAYS = 2  # sent_start_drills rows for send dates before today - 2 can go
# Ids are drawn when a row is inserted, its time when its transaction started: an id order scan can
# meet rows up to one transaction's length older than those before them. Scanning on until a batch
# is this much newer than the cutoff catches them.
TIME_ORDER_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class KeysetPrune:
    """A table pruned batch by batch in primary-key order by one SQL template (include/sql)."""

    table: str
    template: str
    first_key: Any
    keys_follow_time: bool  # ids grow with time: stop once past the cutoff (plus the margin)


OUTBOX = KeysetPrune("command_outbox", "maintenance/prune_outbox.sql", 0, True)
REJECTED = KeysetPrune("rejected_records", "maintenance/prune_rejected_records.sql", 0, True)
SENT_START_DRILLS = KeysetPrune("sent_start_drills", "maintenance/prune_sent_start_drills.sql", "", False)


class InvalidRetention(ValueError):
    """A retention param that is not a whole number of days >= 0; retrying cannot help."""


def retention_days(value: Any, name: str) -> int:
    """Validate a retention param: an integer >= 0 (0 = everything older than now)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRetention(f"{name} must be a whole number of days >= 0, got {value!r}")
    try:
        days = int(value)
    except ValueError:
        raise InvalidRetention(f"{name} must be a whole number of days >= 0, got {value!r}") from None
    if days < 0:
        raise InvalidRetention(f"{name} must be >= 0 (0 = everything older than now), got {days}")
    return days


def prune_keyset(engine: Engine, spec: KeysetPrune, cutoff: datetime | date, *, dry_run: bool, batch: int) -> dict:
    """Prune one table batch by batch (a commit after each); the rows and bytes deleted (or, in a
    dry run, that would be)."""
    after, rows, size, batches = spec.first_key, 0, 0, 0
    while True:
        params = {"after": after, "cutoff": cutoff, "batch": batch, "dry_run": dry_run}
        with engine.begin() as conn:
            result = run(conn, spec.template, params).mappings().one()
        if not result["scanned"]:
            break
        batches += 1
        rows += result["matched"] if dry_run else result["deleted"]
        size += int(result["bytes"])
        after = result["last_key"]
        if spec.keys_follow_time and result["oldest"] >= cutoff + TIME_ORDER_MARGIN:
            break
    verb = "would delete" if dry_run else "deleted"
    log.info("%s: %s %d rows (%d bytes) older than %s in %d batches", spec.table, verb, rows, size, cutoff, batches)
    return {"rows": rows, "bytes": size, "batches": batches, "cutoff": cutoff.isoformat()}


def prune_lag_samples(engine: Engine, cutoff: datetime, *, dry_run: bool) -> dict:
    with engine.begin() as conn:
        result = run(conn, "maintenance/prune_lag_samples.sql", {"cutoff": cutoff, "dry_run": dry_run}).mappings().one()
    rows = result["matched"] if dry_run else result["deleted"]
    return {"rows": rows, "bytes": int(result["bytes"]), "batches": 1, "cutoff": cutoff.isoformat()}


def prune_drill_database(
    engine: Engine,
    *,
    now: datetime,
    outbox_retention_days: int,
    rejected_retention_days: int,
    dry_run: bool = False,
    batch: int = BATCH_ROWS,
) -> dict:
    """Prune every growing table of the drill database; per table the rows and bytes deleted."""
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    now = now.astimezone(UTC)
    outbox_days = retention_days(outbox_retention_days, "outbox_retention_days")
    rejected_days = retention_days(rejected_retention_days, "rejected_retention_days")
    guard_cutoff = now.date() - timedelta(days=START_DRILL_GUARD_DAYS)
    tables = {
        OUTBOX.table: prune_keyset(engine, OUTBOX, now - timedelta(days=outbox_days), dry_run=dry_run, batch=batch),
        REJECTED.table: prune_keyset(
            engine, REJECTED, now - timedelta(days=rejected_days), dry_run=dry_run, batch=batch
        ),
        SENT_START_DRILLS.table: prune_keyset(engine, SENT_START_DRILLS, guard_cutoff, dry_run=dry_run, batch=batch),
    }
    tables["ingestion_lag_samples"] = prune_lag_samples(engine, now - timedelta(days=LAG_HISTORY_DAYS), dry_run=dry_run)
    if not dry_run:
        for table, figures in tables.items():
            metrics.rows_pruned(table, figures["rows"])
    return {"dry_run": dry_run, "tables": tables}
