"""
### Dialog event ingestion

Reads the dialog event stream (Kinesis, Variable `dialog_event_stream`) **continuously** and applies
each event batch to the user aggregate in PostgreSQL (connection `drill_progress_db`): `users`,
`phone_numbers`, `drill_statuses`, `drill_instances` (contract §2, §3). The commands it causes
(START_DRILL on USER_VALIDATED and NEXT_DRILL_REQUESTED) go to the command stream (Variable
`command_stream`, contract §5) **as soon as the micro-batch that caused them commits**: a user who
texts their code gets their first drill within seconds.

**Schedule**: a run every `run_minutes` (default 60; set per deployment by the environment variable
`DRILL_INGEST_RUN_MINUTES` of the Airflow components), up to 3 runs at a time. A scheduled run
consumes every shard until the **next run takes it over**: the next run's shard task waits for the
shard's **lease** (table `shard_leases`), the running consumer sees it waiting, commits its last
micro-batch and lets go, and the new one reads on from the checkpoint: answers never stall at the
hand-over (about a second at most), and new DAG code runs from the next run on. With no next run
(paused DAG, scheduler down) a consumer stops 10 minutes after `run_minutes`. A run **started by
hand** (Trigger in the UI, `airflow dags test dialog_event_ingest`, a replay) takes each shard over
at once, ends as soon as every shard is caught up (or at `max_records_per_shard` / `max_seconds`),
and gives the shards back to the scheduled run: use it to catch up once, or to replay.

1. **plan_shards**: lists the shards; a shard is read when each parent shard (after a split or
   merge) is drained or expired, so a user's batches are always applied in order.
2. **ingest_shard** (one mapped task per open shard, all in parallel: the run holds one worker slot
   per open shard, and for a second at each hand-over so does the next run): takes the shard's lease,
   then reads from the shard's checkpoint (TRIM_HORIZON the first time) in
   micro-batches of `micro_batch_records`, each applied in one transaction, its commands published
   right after by a publisher thread. At most 5 GetRecords calls per second per shard; an idle shard
   is polled every 0.2 s backing off to 1 s (no busy loop), and its checkpoint row's `updated_at` is
   refreshed every 30 s (a heartbeat: stale means no consumer). Every 60 s it re-lists the shards:
   a split or merge is logged, the parent shard is read to its end, and the next run plans the new
   shards (to read them at once, trigger the DAG with `{"continuous": true}`). Logs progress every
   minute; returns records read, batches applied, duplicates
   skipped, records set aside, commands emitted and published, ms behind the tip, why it stopped.
3. **publish_commands**: publishes any ingest command still unpublished in `command_outbox` (a
   failed publish, a consumer killed between commit and publish).
4. **summary**: totals of the run.

**Why long runs that hand over** (weighed): a DAG run every minute answered in ~40 s (the next run
had to start, and a shard's commands went out only when its task ended) and wrote ~7,200 task
instances a day at 2 shards. Deferrable shard tasks woken by a trigger would free idle worker slots,
but every wake-up costs a task start (seconds) on the path of the answer; the provider's
KinesisTrigger (AssetWatcher) keeps its own position outside the state transaction (best effort).
`@continuous` runs (one at a time) answered in about a second but stalled 5-10 s each time one run
ended and the next started. Long-running shard tasks that hand their shard's lease to the next run
keep the checkpoint in the state transaction, answer in about a second at any time, and write ~5
task instances per run: 24 runs and ~120 task instances a day at 2 shards.

**Exactly once in effect**
- *One consumer per shard*: a shard is read only under its lease; each micro-batch renews the lease
  in its own transaction before writing, so a consumer whose lease was taken over commits nothing
  more and stops ("lease lost"). A consumer killed while holding it loses it 10 s after its last
  renewal, and the waiting consumer goes on from the checkpoint.
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
`run_minutes` (default 60, or `DRILL_INGEST_RUN_MINUTES`): when the next scheduled run takes over;
`continuous` (default false): a run by hand consumes like a scheduled one; `max_records_per_shard` (default
20000) and `max_seconds` (default 45) bound a run started by hand; `replay_shard_id` +
`replay_from` re-read one shard from an ISO 8601 timestamp (AT_TIMESTAMP; a run started by hand).

**When it fails**
- A shard task failing on a connection error or throttling retries by itself (from the checkpoint);
  nothing is lost or applied twice. Clear the task to retry it by hand. If a whole run fails, the
  next scheduled run takes over; to consume sooner, trigger the DAG with `{"continuous": true}`.
- A shard task waiting long for its shard ("waiting for the lease held by ..." in its log): the
  holder is another run's shard task (see `shard_leases`: `owner`, `owner_run_id`, `expires_at`).
  A live continuous holder lets go within a second and a run by hand when caught up; a dead one's
  lease expires 10 s after its last renewal. Never delete a lease row by hand while its holder runs.
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

from airflow.sdk import DeltaTriggerTimetable, Param, dag, task

from drill_progress import assets, config
from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE

MAX_RUN_MINUTES = config.INGEST_RUN_MINUTES_MAX
RUN_MINUTES = config.ingest_run_minutes()  # the environment only (DRILL_INGEST_RUN_MINUTES), no lookup


@dag(
    dag_id="dialog_event_ingest",
    # a run every RUN_MINUTES; the next one starts before this one ends and takes its shards over
    schedule=DeltaTriggerTimetable(timedelta(minutes=RUN_MINUTES)),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=3,  # the consuming run, the next one taking over, and one started by hand
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
            RUN_MINUTES,
            type="integer",
            minimum=1,
            maximum=MAX_RUN_MINUTES,
            title="Minutes a scheduled run consumes",
            description="A scheduled run reads every shard until the next run takes over, this long after it "
            "started (the schedule's interval, DRILL_INGEST_RUN_MINUTES); at most 10 minutes more.",
        ),
        "continuous": Param(
            False,
            type="boolean",
            title="Consume continuously (a run by hand)",
            description="A run started by hand consumes like a scheduled run (until the next scheduled run takes "
            "over) instead of ending once caught up: e.g. to read new shards at once after a split.",
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

        return tasks.ingest_shard(shard_id, params or {}, dag_run.run_type, dag_run.run_id)

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
