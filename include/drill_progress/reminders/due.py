"""Reminders for users stuck on a prompt (contract §6): one TRIGGER_REMINDER per (drill
instance, prompt), ever.

Order of operations, and why nothing is lost or doubled:

1. **Record the reminder.** In one transaction, `reminders/due_reminders.sql` finds the valid,
   incomplete drill instances whose current prompt started in the window
   (reference - ceil_minutes, reference - floor_minutes], `reminders/mark_reminded.sql` adds the
   prompt to the instance's `reminded_prompts` (a conditional UPDATE: only a prompt not yet
   there is added, and PostgreSQL re-checks that on a concurrently updated row), and exactly the
   prompts marked now are enqueued with the key `reminder:<drill_instance_id>:<prompt_slug>`
   (INSERT … ON CONFLICT DO NOTHING). A re-run, a retry or an overlapping run finds the prompt
   already marked and adds nothing. A prompt advanced since the last reminder is a new prompt,
   so it gets its own reminder.
2. **Publish.** After commit, every pending reminder row is sent (PutRecords ≤ 500 per call,
   failed records retried with backoff) and stamped `published_at`. A row whose publish kept
   failing stays pending and is sent by the task's retry or the next run; this run raises
   `PublishError` so that Airflow retries it.

A reminder left pending by a failed publish is sent by the next successful run even if its
prompt has been answered meanwhile (it names the prompt, so the Dialog Context can tell).

"Ever" does not depend on the outbox: its rows are pruned by drill_progress_maintenance, the
`reminded_prompts` of an instance are not (they go only with the instance itself).

Residual risk: a crash after Kinesis accepted a chunk but before `published_at` committed makes
the next run send that chunk (≤ 500 reminders) again, with the same `idempotency_key`, which the
Dialog Context tolerates (contract §5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from drill_progress import metrics, outbox
from drill_progress.db import load_sql, run
from drill_progress.outbox import commands
from drill_progress.privacy import mask_phone

log = logging.getLogger(__name__)

SOURCE = "reminders"
DEFAULT_FLOOR_MINUTES = 240
DEFAULT_CEIL_MINUTES = 1440
LOGGED_PER_RUN = 20  # new reminders logged one by one (masked); the rest only counted


class InvalidWindow(ValueError):
    """The params do not describe a window; retrying cannot help."""


@dataclass(frozen=True)
class Window:
    floor_minutes: int
    ceil_minutes: int

    def bounds(self, reference_time: datetime) -> tuple[datetime, datetime]:
        """(exclusive start, inclusive end) of current_prompt_start_time for a reminder."""
        return (
            reference_time - timedelta(minutes=self.ceil_minutes),
            reference_time - timedelta(minutes=self.floor_minutes),
        )


def window(floor_minutes: int = DEFAULT_FLOOR_MINUTES, ceil_minutes: int = DEFAULT_CEIL_MINUTES) -> Window:
    """Validate the params: 0 ≤ floor < ceil (minutes)."""
    floor_minutes, ceil_minutes = int(floor_minutes), int(ceil_minutes)
    if floor_minutes < 0:
        raise InvalidWindow(f"floor_minutes must be >= 0, got {floor_minutes}")
    if floor_minutes >= ceil_minutes:
        raise InvalidWindow(
            f"floor_minutes ({floor_minutes}) must be less than ceil_minutes ({ceil_minutes}): a reminder "
            f"goes to prompts started between ceil_minutes and floor_minutes before the run"
        )
    return Window(floor_minutes, ceil_minutes)


def reference_time(logical_date: datetime | None, run_after: datetime | None) -> datetime:
    """The time a run reminds "as of": its logical date (a scheduled run's schedule time, or the
    date given to `airflow dags test`); for a manual run without one, the time it was triggered."""
    chosen = logical_date or run_after
    if chosen is None:
        raise ValueError("a run needs a logical date or a run_after time")
    if chosen.tzinfo is None:
        raise ValueError(f"reference time must be timezone-aware, got {chosen!r}")
    return chosen.astimezone(UTC)


@dataclass(frozen=True)
class Candidate:
    drill_instance_id: str
    phone_number: str
    prompt_slug: str
    current_prompt_start_time: datetime
    idempotency_key: str
    already_enqueued: bool

    def command(self) -> commands.Command:
        return commands.trigger_reminder(
            self.phone_number, self.drill_instance_id, self.prompt_slug, self.idempotency_key
        )


DUE_SQL = "reminders/due_reminders.sql"


def _due_params(reference: datetime, win: Window) -> dict:
    return {"reference_time": reference, "floor_minutes": win.floor_minutes, "ceil_minutes": win.ceil_minutes}


def find_due(conn, reference: datetime, win: Window) -> list[Candidate]:
    """Instances in the window at `reference`, with their reminder key (one statement)."""
    return [Candidate(*row) for row in run(conn, DUE_SQL, _due_params(reference, win)).all()]


def explain_due(conn, reference: datetime, win: Window, options: str = "") -> str:
    """The plan of the reminder query (`options` e.g. "ANALYZE, BUFFERS"), for tests and benchmarks."""
    if options and not set(options.upper().replace(",", " ").split()) <= {
        "ANALYZE",
        "BUFFERS",
        "VERBOSE",
        "TIMING",
        "SUMMARY",
        "ON",
        "OFF",
    }:
        raise ValueError(f"unsupported EXPLAIN options: {options}")
    prefix = f"EXPLAIN ({options}) " if options else "EXPLAIN "
    rows = conn.exec_driver_sql(prefix + load_sql(DUE_SQL), _due_params(reference, win)).all()
    return "\n".join(row[0] for row in rows)


def mark_reminded(conn, candidates: list[Candidate]) -> set[tuple[str, str]]:
    """Add each candidate's prompt to its instance's `reminded_prompts` where it is not there yet
    (one statement); return the (drill_instance_id, prompt_slug) pairs marked by this call."""
    if not candidates:
        return set()
    params = {
        "instance_ids": [c.drill_instance_id for c in candidates],
        "prompt_slugs": [c.prompt_slug for c in candidates],
    }
    return {(row[0], row[1]) for row in run(conn, "reminders/mark_reminded.sql", params).all()}


def enqueue_due(engine: Engine, reference: datetime, win: Window) -> dict:
    """Step 1: find the due reminders, mark their prompts reminded and enqueue exactly the ones
    marked now (one transaction)."""
    with engine.begin() as conn:
        due = find_due(conn, reference, win)
        fresh = [c for c in due if not c.already_enqueued]
        marked = mark_reminded(conn, fresh)
        to_send = [c for c in fresh if (c.drill_instance_id, c.prompt_slug) in marked]
        new_keys = outbox.enqueue(conn, [c.command() for c in to_send], SOURCE)
    new = set(new_keys)
    for c in [c for c in to_send if c.idempotency_key in new][:LOGGED_PER_RUN]:
        log.info(
            "reminder for %s: instance %s prompt %s (waiting since %s)",
            mask_phone(c.phone_number),
            c.drill_instance_id,
            c.prompt_slug,
            c.current_prompt_start_time.isoformat(),
        )
    return {"candidates": len(due), "already_enqueued": len(due) - len(fresh), "enqueued": len(new_keys)}


def trigger_reminders(
    engine: Engine,
    kinesis,
    stream: str,
    *,
    reference: datetime,
    floor_minutes: int = DEFAULT_FLOOR_MINUTES,
    ceil_minutes: int = DEFAULT_CEIL_MINUTES,
    max_attempts: int = 8,
) -> dict:
    """Enqueue the reminders due at `reference`, then publish every pending reminder.

    Returns a summary; raises InvalidWindow for bad params (before touching anything) and
    outbox.PublishError if some reminders are still unpublished after retries (they stay pending)."""
    win = window(floor_minutes, ceil_minutes)
    if reference.tzinfo is None:
        raise ValueError(f"reference time must be timezone-aware, got {reference!r}")
    start, end = win.bounds(reference)
    summary = {
        "reference_time": reference.isoformat(),
        "window_start_exclusive": start.isoformat(),
        "window_end_inclusive": end.isoformat(),
    }
    summary.update(enqueue_due(engine, reference, win))
    metrics.reminders_enqueued(summary["enqueued"])
    summary.update(outbox.publish_pending(engine, kinesis, stream, source=SOURCE, max_attempts=max_attempts))
    log.info(
        "reminders at %s: %d in window, %d already recorded, %d new, %d published, %d failing",
        summary["reference_time"],
        summary["candidates"],
        summary["already_enqueued"],
        summary["enqueued"],
        summary["published"],
        summary["failed"],
    )
    if summary["failed"]:
        raise outbox.PublishError(
            f"{summary['failed']} reminders could not be published to {stream}; they stay pending in "
            f"command_outbox and are sent by the retry or the next run (summary: {summary})"
        )
    return summary
