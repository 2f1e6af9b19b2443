"""
### Re-apply set-aside dialog events

Manual. After the cause of rejected records is fixed (a producer bug, a schema change, a database
problem), re-applies the records `dialog_event_ingest` set aside in `rejected_records` (connection
`drill_progress_db`), in stream order: by shard, then by sequence number. Code:
`drill_progress.ingest.reapply`.

Each unresolved record is parsed again by today's edge, then:
- **still bad**: left unresolved (the first reasons are in the summary);
- **superseded**: its user already has this batch's `seq` or a later one, so applying it now would
  apply it out of order: not applied; marked resolved as `superseded` and listed in the summary;
- **reapplied**: applied exactly as ingestion applies a micro-batch (users locked, the same state
  rules, one transaction per chunk of 500 with the resolution), marked `reapplied`. The commands it
  causes (START_DRILL) go through `command_outbox` under their usual keys and are published to the
  command stream (Variable `command_stream`): a command is never sent twice.

**Params**: `shard_id` (only this shard), `rejected_since` / `rejected_until` (ISO 8601: only records
set aside in that window), `limit` (at most this many records, default 10,000), `dry_run` (report
what would happen, change nothing; default false).

**Result** (XCom `return_value`): examined, reapplied, superseded, still_bad, failed,
commands_enqueued, commands_published, and up to 10 examples per outcome (phone numbers masked).

**Re-run**: safe at any time: resolved records are not looked at again; a re-run takes the next ones.

**When it fails**: a database error the task cannot get past (connection, permissions) fails it with
nothing half-done (one transaction per chunk); clear it. A record the database still refuses is
counted as `failed` with the error and stays unresolved. Commands left unpublished stay in the
outbox and go out with the next ingestion run.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from drill_progress import assets
from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE, TAGS_BASE


@dag(
    dag_id="dialog_event_reapply",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS_BASE, "ingest"],
    doc_md=__doc__,
    params={
        "shard_id": Param(
            None,
            type=["null", "string"],
            maxLength=128,
            title="Shard id",
            description="Only records of this shard, e.g. shardId-000000000001. Empty = every shard.",
        ),
        "rejected_since": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Set aside since",
            description="Only records set aside at or after this time (ISO 8601).",
        ),
        "rejected_until": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Set aside until",
            description="Only records set aside before this time (ISO 8601).",
        ),
        "limit": Param(10_000, type="integer", minimum=1, maximum=1_000_000, title="At most this many records"),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Report what would happen only."),
    },
)
def dialog_event_reapply():
    @task(inlets=[assets.DRILLS], outlets=[*assets.AGGREGATE, assets.COMMAND_STREAM])
    def reapply_rejected(params: dict | None = None) -> dict:
        from drill_progress.ingest import tasks

        return tasks.reapply_rejected(params or {})

    reapply_rejected()


dialog_event_reapply()
