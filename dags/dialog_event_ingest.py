"""
### Dialog event ingestion

Reads the dialog event stream (Kinesis, Variable `dialog_event_stream`) **continuously** and applies
each event batch to the user aggregate in PostgreSQL (connection `drill_progress_db`): `users`,
`phone_numbers`, `drill_statuses`, `drill_instances` (contract §2, §3). The commands it causes
(START_DRILL on USER_VALIDATED and NEXT_DRILL_REQUESTED) go to the command stream (Variable
`command_stream`, contract §5) **as soon as the micro-batch that caused them commits**: a user who
texts their code gets their first drill within seconds.

**Schedule**: `@continuous`, one active run at a time. A scheduled run consumes every shard for
`run_minutes` (default 60) and ends; the scheduler starts the next one at once. A run **started by
hand** (Trigger in the UI, `airflow dags test dialog_event_ingest`, a replay) ends as soon as every
shard is caught up (or at `max_records_per_shard` / `max_seconds`): use it to catch up once, or to
replay. One run at a time: a run started by hand waits behind the scheduled run. To start it now,
trigger it, then mark the running scheduled run as *success*: its shard tasks stop (nothing is lost),
the run by hand starts next and the scheduled runs resume after it. Do not pause the DAG for this:
the runs of a paused DAG wait.

1. **plan_shards**: lists the shards; a shard is read when each parent shard (after a split or
   merge) is drained or expired, so a user's batches are always applied in order.
2. **ingest_shard** (one mapped task per open shard, all in parallel: the run holds one worker slot
   per open shard and no more): reads from the shard's checkpoint (TRIM_HORIZON the first time) in
   micro-batches of `micro_batch_records`, each applied in one transaction, its commands published
   right after by a publisher thread. At most 5 GetRecords calls per second per shard; an idle shard
   is polled every 0.2 s backing off to 1 s (no busy loop), and its checkpoint row's `updated_at` is
   refreshed every 30 s (a heartbeat: stale means no consumer). Every 60 s it re-lists the shards:
   when the readable set changed (a split or merge), every shard task ends so the next run plans
   the new shards. Logs progress every minute; returns records read, batches applied, duplicates
   skipped, records set aside, commands emitted and published, ms behind the tip, why it stopped.
3. **publish_commands**: publishes any ingest command still unpublished in `command_outbox` (a
   failed publish, a consumer killed between commit and publish).
4. **summary**: totals of the run.

**Why continuous** (weighed): a DAG run every minute answered in ~40 s (the next run had to start,
and a shard's commands went out only when its task ended) and wrote ~7,200 task instances a day at
2 shards. Deferrable shard tasks woken by a trigger would free idle worker slots, but every wake-up
costs a task start (seconds) on the path of the answer; the provider's KinesisTrigger
(AssetWatcher) keeps its own position outside the state transaction (best effort). Long-running
shard tasks keep the checkpoint in the state transaction, answer in about a second and write
~5 task instances per run: 24 runs and ~120 task instances a day at 2 shards.

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

**Params**: `micro_batch_records` (records per GetRecords and per transaction, default 500);
`run_minutes` (default 60): how long a scheduled run consumes; `max_records_per_shard` (default
20000) and `max_seconds` (default 45) bound a run started by hand; `replay_shard_id` +
`replay_from` re-read one shard from an ISO 8601 timestamp (AT_TIMESTAMP; a run started by hand).

**When it fails**
- A shard task failing on a connection error or throttling retries by itself (from the checkpoint);
  nothing is lost or applied twice. Clear the task to retry it by hand. If a whole run fails, the
  next continuous run starts at once.
- A SIGKILL of a worker mid-loop loses nothing and sends nothing twice (the chaos scenarios prove
  it): the retry resumes after the last committed micro-batch, and the commands committed but not
  published are published by the next sweep or `publish_commands`. This rests on durable commits:
  keep PostgreSQL's `synchronous_commit` on (the default; Aurora's commits are durable too). With it
  off, a server crash can lose commits it acknowledged and a consumer that reconnects skips them.
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
- Lag: the Drill Progress page shows each shard's `behind_ms` and heartbeat; `make status` shows the
  running tasks.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from drill_progress import assets
from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE

MAX_RUN_MINUTES = 120


@dag(
    dag_id="dialog_event_ingest",
    schedule="@continuous",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=MAX_RUN_MINUTES + 30),
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
        "run_minutes": Param(
            60,
            type="integer",
            minimum=1,
            maximum=MAX_RUN_MINUTES,
            title="Minutes a scheduled run consumes",
            description="A scheduled (continuous) run reads every shard this long, then the next run starts.",
        ),
        "max_records_per_shard": Param(
            20000,
            type="integer",
            minimum=1,
            title="Max records per shard per run",
            description="A run started by hand: a shard task stops after this many records.",
        ),
        "max_seconds": Param(
            45,
            type="integer",
            minimum=1,
            maximum=3600,
            title="Max seconds per shard",
            description="A run started by hand: a shard task stops reading after this long.",
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
    @task(inlets=[assets.DIALOG_EVENT_STREAM])
    def plan_shards(params: dict | None = None) -> list[str]:
        from drill_progress.ingest import tasks

        return tasks.plan_shards(params or {})

    @task(
        max_active_tis_per_dagrun=64,
        execution_timeout=timedelta(minutes=MAX_RUN_MINUTES + 15),
        inlets=[assets.DIALOG_EVENT_STREAM, assets.DRILLS],
        outlets=[*assets.AGGREGATE, assets.EVENT_HISTORY, assets.COMMAND_STREAM],
    )
    def ingest_shard(shard_id: str, params: dict | None = None, dag_run=None) -> dict:
        from drill_progress.ingest import tasks

        return tasks.ingest_shard(shard_id, params or {}, dag_run.run_type)

    @task(trigger_rule="all_done", outlets=[assets.COMMAND_STREAM])
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
