"""Transactional outbox for commands to the Dialog Context.

Producers call `enqueue()` inside the same transaction as the state change (or decision) that
causes the command; the unique `idempotency_key` makes a second enqueue of the same command a
no-op, so re-delivered events, task retries, re-runs and backfills add nothing. After commit,
`publish_pending()` sends unpublished rows with PutRecords and stamps `published_at`.

Pending rows are tracked in `command_outbox_pending` (migration 0011), filled by a trigger from
every insert into `command_outbox` whatever its producer, and emptied as rows are published: no
index of `command_outbox` mentions `published_at`, so publishing is a HOT update. Published rows
older than a retention are pruned by drill_progress_maintenance; no promise depends on them
(docs/operations.md).

Delivery is at-least-once with a narrow window, bounded by one PutRecords chunk (<= 500
commands) per incident, always with the same `idempotency_key` and the same bytes (the Dialog
Context tolerates it). The incidents that open it, each measured by the chaos suite
(tests/chaos): the process dies after Kinesis accepted a chunk but before `published_at`
commits; the PutRecords response is lost and the AWS client resends the call; PostgreSQL fails
while PutRecords is in flight (the claimed pending rows stay locked inside that transaction, so
its rollback makes them pending again). Pending rows are locked FOR UPDATE SKIP LOCKED while being
sent, so overlapping publishers never send the same row concurrently.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from sqlalchemy.engine import Connection, Engine

from drill_progress import metrics
from drill_progress.db import run
from drill_progress.outbox.commands import Command, publish

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """Some commands could not be published; they stay in the outbox for the next attempt."""


def enqueue(conn: Connection, commands: Iterable[Command], source: str) -> list[str]:
    """Add commands to the outbox in one statement; return the keys that were new."""
    commands = list(commands)
    if not commands:
        return []
    params = {
        "source": source,
        "keys": [c.idempotency_key for c in commands],
        "types": [c.command_type for c in commands],
        "phones": [c.phone_number for c in commands],
        "payloads": [json.dumps(c.payload) for c in commands],
    }
    return [row[0] for row in run(conn, "outbox/enqueue.sql", params).all()]


def publish_pending(
    engine: Engine,
    kinesis,
    stream: str,
    *,
    source: str | None = None,
    keys: list[str] | None = None,
    chunk: int = 500,
    max_attempts: int = 8,
) -> dict:
    """Publish every unpublished outbox row (optionally only `source`'s, or only `keys`).

    Returns counts. Rows whose publish kept failing stay unpublished (their `last_error` set)
    and are counted in `failed`; callers usually raise PublishError so the task retries."""
    sent = failed = 0
    while True:
        with engine.begin() as conn:
            rows = run(conn, "outbox/claim_pending.sql", {"source": source, "keys": keys, "limit": chunk}).all()
            if not rows:
                break
            by_key = {row[1]: row[0] for row in rows}
            commands = [Command(row[2], row[3], json.loads(row[4]), row[1]) for row in rows]
            result = publish(kinesis, stream, commands, max_attempts=max_attempts)
            if result.sent:
                run(conn, "outbox/mark_published.sql", {"ids": [by_key[c.idempotency_key] for c in result.sent]})
            if result.failed:
                run(
                    conn,
                    "outbox/mark_failed.sql",
                    {"ids": [by_key[c.idempotency_key] for c, _ in result.failed], "error": result.failed[0][1]},
                )
            sent += len(result.sent)
            failed += len(result.failed)
        if result.failed:
            break  # don't spin on a failing stream; the rest stays pending for the next attempt
    if sent or failed:
        log.info("outbox: published %d commands, %d still failing", sent, failed)
        metrics.outbox_published(source or "any", sent, failed)
    return {"published": sent, "failed": failed}
