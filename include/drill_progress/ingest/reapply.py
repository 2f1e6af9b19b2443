"""Re-apply records set aside in `rejected_records` once their cause is fixed (DAG dialog_event_reapply).

Records are taken in stream order (shard, then sequence number), in chunks of CHUNK, and parsed
again by today's edge:
- still bad: left as they are (unresolved) and counted; the first reasons are reported;
- their user (by phone number) already has this batch's `seq` or a later one: applying it now would
  apply it out of order, so it is not applied; it is marked resolved as `superseded` and reported;
- otherwise applied exactly as ingestion applies a micro-batch (lock the users, fold, one write),
  in one transaction per chunk together with marking them resolved as `reapplied`. The commands
  they cause go through the outbox under their usual keys (`ingest:<event_id>`: never sent twice)
  and are published afterwards.
A chunk the database refuses is retried one record at a time; a record that still fails stays
unresolved and its error is reported. A dry run reports what would happen and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from drill_progress import db, outbox
from drill_progress.db import run
from drill_progress.ingest import events as ev
from drill_progress.ingest import store
from drill_progress.ingest.fold import apply_batch, new_user
from drill_progress.privacy import mask_phone

log = logging.getLogger(__name__)

CHUNK = 500
EXAMPLES = 10  # per outcome, in the summary


@dataclass(frozen=True)
class Candidate:
    id: int
    shard_id: str
    sequence_number: str
    raw_data: bytes


@dataclass
class Summary:
    dry_run: bool
    examined: int = 0
    reapplied: int = 0
    superseded: int = 0
    still_bad: int = 0
    failed: int = 0
    commands: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, outcome: str, text: str) -> None:
        shown = self.examples.setdefault(outcome, [])
        if len(shown) < EXAMPLES:
            shown.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "examined": self.examined,
            "reapplied": self.reapplied,
            "superseded": self.superseded,
            "still_bad": self.still_bad,
            "failed": self.failed,
            "commands_enqueued": len(self.commands),
            "examples": self.examples,
        }


def candidates(
    engine: Engine, stream: str, *, shard_id: str | None, since: datetime | None, until: datetime | None, limit: int
):
    """Unresolved set-aside records in stream order, a chunk at a time (keyset pagination)."""
    after_shard, after_seq, left = "", "-1", limit
    while left > 0:
        with engine.connect() as conn:
            rows = run(
                conn,
                "ingest/reapply_candidates.sql",
                {
                    "stream": stream,
                    "shard_id": shard_id,
                    "since": since,
                    "until": until,
                    "after_shard": after_shard,
                    "after_seq": after_seq,
                    "limit": min(CHUNK, left),
                },
            ).all()
        if not rows:
            return
        chunk = [Candidate(r[0], r[1], r[2], bytes(r[3])) for r in rows]
        yield chunk
        left -= len(chunk)
        after_shard, after_seq = chunk[-1].shard_id, chunk[-1].sequence_number


def reapply(
    engine: Engine,
    stream: str,
    *,
    shard_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 10_000,
    dry_run: bool = False,
) -> Summary:
    summary = Summary(dry_run)
    for chunk in candidates(engine, stream, shard_id=shard_id, since=since, until=until, limit=limit):
        summary.examined += len(chunk)
        parsed = []
        for candidate in chunk:
            try:
                parsed.append((candidate, ev.parse_record(candidate.raw_data)))
            except ev.BadRecord as bad:
                summary.still_bad += 1
                summary.note("still_bad", f"{candidate.shard_id} {candidate.sequence_number}: {bad}")
        if parsed:
            _apply_chunk(engine, parsed, summary)
    log.info(
        "re-apply of set-aside records%s: %s",
        " (DRY RUN)" if dry_run else "",
        {k: v for k, v in summary.as_dict().items() if k != "examples"},
    )
    return summary


def _apply_chunk(engine: Engine, parsed: list[tuple[Candidate, ev.Batch]], summary: Summary) -> None:
    try:
        _apply(engine, parsed, summary)
        return
    except Exception as exc:
        if db.trouble(exc) == db.FATAL:
            raise
        reason = db.error_summary(exc)
    if len(parsed) > 1:
        log.warning("a chunk of %d records failed (%s); re-applying them one by one", len(parsed), reason)
        for one in parsed:
            _apply_chunk(engine, [one], summary)
        return
    candidate = parsed[0][0]
    summary.failed += 1
    summary.note("failed", f"{candidate.shard_id} {candidate.sequence_number}: {reason}")


def _apply(engine: Engine, parsed: list[tuple[Candidate, ev.Batch]], summary: Summary) -> None:
    """One transaction: lock and load the users, fold each record in order, write, mark resolved."""
    outcomes: dict[str, list[int]] = {"reapplied": [], "superseded": []}
    notes: list[tuple[str, str]] = []
    commands = []
    with engine.begin() as conn:
        catalog, users = store.load_micro_batch(conn, [batch for _, batch in parsed])
        for candidate, batch in parsed:
            user = users.get(batch.phone_number)
            if user is None:
                user = users[batch.phone_number] = new_user(batch.phone_number, catalog)
            stored_seq = user.seq
            produced = apply_batch(user, batch, catalog)
            where = f"{candidate.shard_id} {candidate.sequence_number}: {mask_phone(batch.phone_number)}"
            if produced is None:
                outcomes["superseded"].append(candidate.id)
                notes.append(("superseded", f"{where} is already at seq {stored_seq}, the batch has seq {batch.seq}"))
            else:
                outcomes["reapplied"].append(candidate.id)
                commands += produced
                notes.append(("reapplied", f"{where} seq {batch.seq}"))
        if summary.dry_run:
            conn.rollback()
            keys = [c.idempotency_key for c in commands]
        else:
            keys = store.execute_write(conn, store.plan_write(users, commands=commands))
            _resolve(conn, outcomes)
    summary.reapplied += len(outcomes["reapplied"])
    summary.superseded += len(outcomes["superseded"])
    summary.commands += keys
    for outcome, text in notes:
        summary.note(outcome, text)


def _resolve(conn: Connection, outcomes: dict[str, list]) -> None:
    ids = [i for ids in outcomes.values() for i in ids]
    resolutions = [outcome for outcome, ids in outcomes.items() for _ in ids]
    if ids:
        run(conn, "ingest/resolve_rejected.sql", {"ids": ids, "resolutions": resolutions})


def reapply_and_publish(engine: Engine, kinesis, stream: str, command_stream: str, **kwargs: Any) -> dict:
    """The DAG's task: re-apply, then publish the commands the re-applied records caused."""
    summary = reapply(engine, stream, **kwargs)
    result = summary.as_dict()
    if summary.commands and not summary.dry_run:
        published = outbox.publish_pending(
            engine, kinesis, command_stream, source=store.OUTBOX_SOURCE, keys=summary.commands
        )
        result["commands_published"] = published["published"]
        if published["failed"]:
            raise outbox.PublishError(
                f"{published['failed']} commands could not be published to {command_stream}; "
                "they stay in command_outbox and go out with the next ingestion run"
            )
    return result
