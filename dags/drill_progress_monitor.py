"""
### Drill Progress monitor

Every 5 minutes: watches ingestion's lag behind the dialog event stream, alerts when it stays too
far behind, and refreshes today's figures of the progress report so that the **Drill Progress**
page is live. No catchup; one run at a time; a run only looks at the present.

**Tasks**:

1. **check_ingestion_lag**: per shard of the dialog event stream (Variable `dialog_event_stream`,
   connection `aws_default`), the age of the oldest record ingestion has not applied yet, read
   with one GetRecords right after the shard's committed checkpoint (`stream_checkpoints`); 0 when
   nothing is unread. The worst shard's is recorded in `ingestion_lag_samples` (the page charts the
   last hours; drill_progress_maintenance keeps 7 days). When it has been above
   **`ingestion_lag_alert_minutes`** (Variable, default 5) in every sample for at least
   **`ingestion_lag_alert_sustain_minutes`** (Variable, default 5: two runs in a row), one alert goes
   to the SNS topic of Variable `alert_topic_arn`, and one "caught up" message when it is back
   under. Based on the stream and the checkpoints only, not on DAG runs.
2. **today_so_far** + **refresh_today**: the daily report (`include/sql/report/replace_day.sql`,
   the very statements of `drill_progress_report`) for the current UTC day, its figures so far,
   in `drill_progress_daily`. The page shows that day as "today (live)". When the day is over,
   `drill_progress_report` replaces it with the whole day's figures (the same bounds, so the same
   statements give the final figures).

**Reads**: `stream_checkpoints`, the users' aggregate, the stream. **Writes**:
`ingestion_lag_samples`, today's rows of `drill_progress_daily`. No params.

**Re-run**: pointless but harmless: a run measures the present; a re-run of `refresh_today`
replaces today's rows in one transaction.

**When it fails**: *check_ingestion_lag* fails when the stream or the database is unreachable
(check `aws_default`, `drill_progress_db` and the Variable `dialog_event_stream`); the next run
measures again. *refresh_today* fails like the report does (database, migrations: see
drill_progress_report's Docs). Each failure sends one alert; the run after it usually succeeds.
Each task is stopped (and alerts) after 4 minutes, so a stuck run cannot hold up the next ones.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import dag, task

from drill_progress import assets, config
from drill_progress.dag_defaults import DEFAULT_ARGS, SQL_DIR, START_DATE, TAGS_BASE


@dag(
    dag_id="drill_progress_monitor",
    schedule="*/5 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(seconds=30)},
    template_searchpath=[SQL_DIR],
    tags=[*TAGS_BASE, "monitoring"],
    doc_md=__doc__,
)
def drill_progress_monitor():
    @task(execution_timeout=timedelta(minutes=4), inlets=[assets.DIALOG_EVENT_STREAM])
    def check_ingestion_lag() -> dict:
        from drill_progress.maintenance import tasks

        return tasks.check_ingestion_lag()

    @task
    def today_so_far(dag_run=None) -> dict:
        from drill_progress.maintenance import tasks

        return tasks.today_report_parameters(dag_run)

    check_ingestion_lag()
    SQLExecuteQueryOperator(
        task_id="refresh_today",
        conn_id=config.DB_CONN_ID,
        sql="report/replace_day.sql",
        parameters=today_so_far(),
        split_statements=True,
        return_last=True,
        hook_params={"options": config.postgres_options("task")},
        execution_timeout=timedelta(minutes=4),
        inlets=[assets.USERS, assets.DRILL_STATUSES, assets.DRILLS],
        outlets=[assets.DRILL_PROGRESS_DAILY],
    )


drill_progress_monitor()
