"""
### Drill Progress setup

Prepares everything the other Drill Progress DAGs need. Manual; safe to run any number of times.

1. **apply_migrations** — applies the versioned SQL migrations in `include/sql/migrations` to the
   drill database (connection `drill_progress_db`) and seeds the drill catalog. Each migration
   runs in one transaction with its row in `schema_migrations`; a second run is a no-op.
2. **create_aws_resources** — when param `create_aws_resources` is true (default), creates the
   dialog event stream, the command stream and the two DynamoDB tables named by the Variables
   `dialog_event_stream`, `command_stream`, `drill_schedule_table`, `idempotency_table`
   (connection `aws_default`) where they are missing.

**Params**: `create_aws_resources` (bool, default true); `dialog_stream_shards` (shards of a
newly created dialog event stream, default 2).

**When it fails**: the log names the migration or resource. A failed migration is rolled back
whole; fix the cause (usually connectivity or permissions) and clear the task. Never edit an
applied migration: add a new one.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from drill_progress import assets
from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE


@dag(
    dag_id="drill_progress_setup",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["drill-progress", "setup"],
    doc_md=__doc__,
    params={
        "create_aws_resources": Param(
            True,
            type="boolean",
            title="Create AWS resources",
            description="Create the Kinesis streams and DynamoDB tables where they are missing.",
        ),
        "dialog_stream_shards": Param(
            2,
            type="integer",
            minimum=1,
            maximum=64,
            title="Dialog stream shards",
            description="Shard count of the dialog event stream, if it has to be created.",
        ),
    },
)
def drill_progress_setup():
    @task(outlets=assets.TABLES)
    def apply_migrations() -> dict:
        from drill_progress.setup import tasks

        return tasks.apply_migrations()

    @task(outlets=[assets.DIALOG_EVENT_STREAM, assets.COMMAND_STREAM, assets.DRILL_SCHEDULE])
    def create_aws_resources(params: dict | None = None) -> dict:
        from drill_progress.setup import tasks

        return tasks.create_aws_resources(params or {})

    apply_migrations() >> create_aws_resources()


drill_progress_setup()
