"""
### Drill Progress maintenance

Daily at 02:30 UTC, deletes what would otherwise grow for ever, in bounded batches with no long
locks, and keeps every promise of the contract (docs/operations.md). No catchup; one run at a time.

**Tasks** (independent: one failing does not stop the others):

1. **prune_drill_database** (connection `drill_progress_db`), batches of 10,000 rows in primary-key
   order, one short transaction each:
   - `command_outbox`: **published** commands published more than `outbox_retention_days` ago.
     Pending (unpublished) commands are never deleted.
   - `rejected_records`: set-aside records (raw payloads with phone numbers, names and SMS
     answers) set aside more than `rejected_retention_days` ago, resolved or not; a record locked
     by a running `dialog_event_reapply` waits for the next run.
   - `sent_start_drills` (schedule_next_drills' "one START_DRILL per user, drill and day"): send
     dates before today - 2 (UTC), whatever the params: such a day can no longer send.
   - `ingestion_lag_samples`: older than 7 days.
2. **prune_airflow_metadata**: `airflow db clean` (Airflow's own interface) for `dag_run`,
   `task_instance`, `task_instance_history`, `task_reschedule`, `xcom` and `log` (audit) rows older
   than `metadata_retention_days`, in batches of 10,000, without archive tables. Never this run
   (the cutoff is at most its start) and never a queued or running run of another DAG. It needs
   the metadata database: connection **`airflow_metadata_db`** (`AIRFLOW_CONN_AIRFLOW_METADATA_DB`,
   the same URL as `[database] sql_alchemy_conn`; a worker's task has no database access of its
   own). Without it the task is **skipped**, saying so in its log (`airflow dags test` works
   without it: the task then runs in-process with Airflow's own database).
3. **prune_task_logs**: files under `[logging] base_log_folder` last written more than
   `metadata_retention_days` ago, then emptied directories; never a log of this run.
4. **keep_event_history**: the event history (`event_history`, the records `drill_progress_rebuild`
   folds again) is partitioned by UTC month: this month's and the next two months' partitions are
   created if missing, and each month wholly older than `history_retention_days` is dropped whole
   (no row-by-row delete). Users created before the history's new start can then no longer be
   rebuilt (docs/history.md).
5. **summary**: everything above in one return value (XCom `return_value`): rows per table and the
   bytes of the deleted rows (space reusable by new rows; files do not shrink), Airflow rows per
   table, log files and bytes freed.

**Params** (whole days, ≥ 0; **0 means everything older than now**): `outbox_retention_days`
(30), `rejected_retention_days` (30), `metadata_retention_days` (30, Airflow's history and task
logs), `history_retention_days` (400, the event history); `dry_run` (false): count what would go,
delete nothing.

**Promises that survive pruning** (tested with every retention at 0): a prompt already reminded is
never reminded again (`drill_instances.reminded_prompts`), a drill already sent today is never sent
again (`sent_start_drills`, kept two days), and a re-delivered dialog event changes nothing (each
user's `seq`), so nothing a prune deletes can cause a command to be sent twice.

**Re-run**: safe at any time; a second run finds less or nothing to delete. Start with
`dry_run` on to see the counts: `airflow dags test drill_progress_maintenance -c '{"dry_run": true}'`.

**When it fails**:
- *prune_drill_database*: a database error or a lock/statement timeout (30 s / 10 min per
  statement). Every batch already committed stays deleted; clear the task to continue.
- *prune_airflow_metadata*: the log shows the last lines of `airflow db clean`. Check the
  `airflow_metadata_db` connection (it must point at the metadata database Airflow itself uses),
  then clear the task. A table it could not clean fails the task (`--error-on-cleanup-failure`).
- *prune_task_logs*: usually permissions on the log folder; fix them and clear the task.
- *keep_event_history*: a lock timeout (2 s) while dropping a month means ingestion held the table:
  clear the task or let the next day's run drop it. Until the partitions ahead exist, ingestion
  writes into `event_history_default` (never fails); the next run creates them.
- Invalid params (a negative retention) fail without retries: trigger again with valid ones.

A failed task sends an alert (Variable `alert_topic_arn`). A task that overruns (2 h for the drill
database, 3 h for Airflow's metadata, 1 h for the logs) is stopped by its `execution_timeout` and
alerts the same way.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from drill_progress import assets
from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE, TAGS_BASE


def _retention(title: str, description: str) -> Param:
    return Param(30, type="integer", minimum=0, maximum=3650, title=title, description=description)


@dag(
    dag_id="drill_progress_maintenance",
    schedule="30 2 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS_BASE, "maintenance"],
    doc_md=__doc__,
    params={
        "outbox_retention_days": _retention(
            "Outbox retention (days)",
            "Published commands published longer ago than this are deleted (0 = all published ones).",
        ),
        "rejected_retention_days": _retention(
            "Set-aside records retention (days)",
            "rejected_records set aside longer ago than this are deleted (0 = all of them).",
        ),
        "metadata_retention_days": _retention(
            "Airflow history and task logs retention (days)",
            "DAG runs, task instances, XComs, audit log rows and task log files older than this are "
            "deleted (0 = all but this run and unfinished runs).",
        ),
        "history_retention_days": Param(
            400,
            type="integer",
            minimum=0,
            maximum=3650,
            title="Event history retention (days)",
            description="Months of the event history wholly older than this are dropped; users created "
            "before the history's new start can no longer be rebuilt.",
        ),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Count what would go; delete nothing."),
    },
)
def drill_progress_maintenance():
    @task(execution_timeout=timedelta(hours=2))
    def prune_drill_database(params: dict | None = None) -> dict:
        from drill_progress.maintenance import tasks

        return tasks.prune_drill_database(params or {})

    @task(execution_timeout=timedelta(hours=3))
    def prune_airflow_metadata(params: dict | None = None, dag_run=None) -> dict:
        from drill_progress.maintenance import tasks

        return tasks.prune_airflow_metadata(params or {}, dag_run)

    @task(execution_timeout=timedelta(hours=1))
    def prune_task_logs(params: dict | None = None, dag_run=None) -> dict:
        from drill_progress.maintenance import tasks

        return tasks.prune_task_logs(params or {}, dag_run)

    @task(execution_timeout=timedelta(minutes=30), outlets=[assets.EVENT_HISTORY])
    def keep_event_history(params: dict | None = None) -> dict:
        from drill_progress.maintenance import tasks

        return tasks.keep_event_history(params or {})

    @task(trigger_rule="all_done")
    def summary(
        drill_database: dict | None,
        airflow_metadata: dict | None,
        task_logs: dict | None,
        event_history: dict | None,
    ) -> dict:
        from drill_progress.maintenance import tasks

        return tasks.summary(drill_database, airflow_metadata, task_logs, event_history)

    summary(prune_drill_database(), prune_airflow_metadata(), prune_task_logs(), keep_event_history())


drill_progress_maintenance()
