"""
### Dialog event ingestion

Every minute, reads the dialog event stream (Kinesis, Variable `dialog_event_stream`) and applies
each event batch to the user aggregate in PostgreSQL (connection `drill_progress_db`): `users`,
`phone_numbers`, `drill_statuses`, `drill_instances` (contract §2, §3). Commands it causes
(START_DRILL on USER_VALIDATED and NEXT_DRILL_REQUESTED) go to the command stream (Variable
`command_stream`, contract §5).

1. **plan_shards** — lists the shards; a shard is read when each parent shard (after a split or
   merge) is drained or expired, so a user's batches are always applied in order.
2. **ingest_shard** (one mapped task per shard, in parallel; in order within a shard) — reads from
   the shard's checkpoint (TRIM_HORIZON the first time) in micro-batches of `micro_batch_records`
   until caught up or `max_records_per_shard` / `max_seconds` is hit. Logs and returns records
   read, batches applied, duplicates skipped, records rejected, commands emitted, ms behind the tip.
3. **publish_commands** — publishes unpublished commands from the outbox table `command_outbox`.
4. **summary** — totals of the run.

**Exactly once in effect**
- *Checkpoint in the state transaction*: each micro-batch's state changes, its set-aside bad records,
  its commands (outbox rows) and the shard checkpoint (`stream_checkpoints`) commit in ONE transaction.
  A crash before the commit leaves nothing; a retry resumes after the last committed record.
- *Seq guard*: a batch whose `seq` is not above the user's stored `seq` is skipped whole, so a
  re-delivered or replayed record changes nothing. Ids are deterministic (UUIDv5), so a retry writes
  exactly the rows a clean run writes.
- *Outbox + idempotency_key*: commands are written as outbox rows keyed `ingest:<event_id>` (a key is
  written once) and published after commit; a task retry or a re-run never publishes a command twice.
  Only a crash between Kinesis accepting a command and `published_at` committing can resend it, with
  the same `idempotency_key`.
- *Overlap, commits in order*: while one micro-batch is written and committed, the next is parsed, its
  users locked (`FOR UPDATE`) and loaded, and folded, on a second connection. It is written only after
  the previous one has committed, so a checkpoint never covers an uncommitted micro-batch; when the two
  share a phone number the next waits for the commit before loading. A micro-batch stuck behind a
  lock for more than 2 s lets go of the next one's locks (no hidden lock cycle with, say, a rollout).
- *Database trouble* (deadlock, serialization failure, lock or statement timeout, a value the client
  library refuses) retries the micro-batch up to 3 times with jittered backoff. *Bisect*: an error
  caused by the data (constraint, bad data, trigger), or trouble that outlasts the retries, splits the
  micro-batch in halves, each applied in its own transaction, down to the single record, which is set
  aside in `rejected_records` with the error after 3 attempts. The stream keeps flowing.

**Bad input, any bytes at all** (not UTF-8, not JSON, failing the schema, an unknown event type, or
beyond the edge's limits: over 1 MiB, nested too deeply, U+0000 in a stored field, dates outside
1900-9998, ...) is set aside in `rejected_records` (stream, shard, sequence number, raw data, reason)
exactly once; no record can stop its shard. Every refusal and its reason: `docs/edge.md`. After a fix,
re-apply set-aside records with the DAG **dialog_event_reapply**.

**Params**: `micro_batch_records` (records per GetRecords and per transaction, default 500),
`max_records_per_shard` (default 20000) and `max_seconds` (default 45) bound one run;
`replay_shard_id` + `replay_from` re-read one shard from an ISO 8601 timestamp (AT_TIMESTAMP).

**When it fails**
- A shard task failing on a connection error or throttling retries by itself (from the checkpoint);
  nothing is lost or applied twice. Clear the task to retry it by hand.
- `publish_commands` failing means the command stream refused records: they stay in `command_outbox`
  (`published_at IS NULL`, `last_error`) and go out on the retry or the next run.
- Records that keep failing are in `rejected_records` (reason, attempts). After fixing the cause
  (e.g. a schema change or a bug), trigger **dialog_event_reapply**: it applies them in stream order
  where their user has not moved past them, and reports the others.
- To re-read a shard, **replay** it: trigger with
  `{"replay_shard_id": "shardId-000000000001", "replay_from": "2026-03-02T15:00:00+00:00"}`.
  Replaying is safe: batches already applied are skipped by the seq guard and commands are not
  re-sent; the checkpoint never moves backwards. A `replay_from` later than the arrival of the last
  record the checkpoint covers is refused (it would skip records never read), as is a replay of a
  shard never read.
- A task failing with `DatabaseError: <SQLSTATE>: ...` met an error of the connection, the server or
  the code (the message is a summary: no SQL, no values); fix the cause and clear the task.
- Backfill is not meaningful (the stream is the source of truth, not the logical date); catchup is off.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE


@dag(
    dag_id="dialog_event_ingest",
    schedule="* * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=30),
    tags=["drill-progress", "ingest", "kinesis"],
    doc_md=__doc__,
    params={
        "micro_batch_records": Param(
            500,
            type="integer",
            minimum=1,
            maximum=10000,
            title="Records per micro-batch",
            description="GetRecords limit; each micro-batch is applied in one transaction with its checkpoint.",
        ),
        "max_records_per_shard": Param(
            20000,
            type="integer",
            minimum=1,
            title="Max records per shard per run",
            description="A shard task stops after this many records; the next run continues.",
        ),
        "max_seconds": Param(
            45,
            type="integer",
            minimum=1,
            maximum=3600,
            title="Max seconds per shard",
            description="A shard task stops reading after this long; the next run continues.",
        ),
        "replay_shard_id": Param(
            None,
            type=["null", "string"],
            title="Replay shard id",
            description="Re-read this shard from replay_from (AT_TIMESTAMP). Safe: the seq guard skips "
            "applied batches.",
        ),
        "replay_from": Param(
            None,
            type=["null", "string"],
            title="Replay from (ISO 8601)",
            description="Timestamp with offset to replay replay_shard_id from, e.g. 2026-03-02T15:00:00+00:00.",
        ),
    },
)
def dialog_event_ingest():
    @task
    def plan_shards(params: dict | None = None) -> list[str]:
        from drill_progress.ingest import tasks

        return tasks.plan_shards(params or {})

    @task(max_active_tis_per_dagrun=16, execution_timeout=timedelta(minutes=15))
    def ingest_shard(shard_id: str, params: dict | None = None) -> dict:
        from drill_progress.ingest import tasks

        return tasks.ingest_shard(shard_id, params or {})

    @task(trigger_rule="all_done")
    def publish_commands() -> dict:
        from drill_progress.ingest import tasks

        return tasks.publish_commands()

    @task(trigger_rule="none_failed")
    def summary(shard_results: list[dict] | None = None, published: dict | None = None) -> dict:
        from drill_progress.ingest import tasks

        return tasks.summary(shard_results, published)

    results = ingest_shard.expand(shard_id=plan_shards())
    published = publish_commands()
    results >> published
    summary(results, published)


dialog_event_ingest()
