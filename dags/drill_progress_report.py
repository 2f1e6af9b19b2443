"""
### Drill Progress daily report

Builds the daily progress report for the platform's customers (the employers in each user's
`profile.account_info.employer_id`): one row per **(report day, employer, drill)** in the table
`drill_progress_daily` of the drill database (connection `drill_progress_db`). The "Drill
Progress" page of this Airflow UI (plugin `drill_progress`) charts it.

**Schedule**: `CronDataIntervalTimetable("0 0 * * *", timezone="UTC")`: each run covers exactly
one UTC calendar day, its data interval `[day 00:00, next day 00:00)`, and runs just after that
day ends. (A plain cron string would give a `CronTriggerTimetable` whose interval is empty.)
`catchup=False`; `max_active_runs=1`.

**Figures** (per employer and drill; `day_end` = the end of the report day; computed only from
the aggregate's timestamps against the day's bounds, never from "now"):

- `employer_id`: `profile.account_info.employer_id` as text; `unknown` when absent or empty.
- `users_enrolled`: users with a status row for the drill who were known before `day_end`:
  the earliest of `users.created_at`, `users.last_interacted_time` and any `started_time` /
  `completed_time` of any of their drills is before `day_end` (events are often older than the
  row that recorded them, e.g. a replay). Demo users (`profile.is_demo = true`) are left out of
  every figure. A drill added later by `drill_rollout` counts its users as enrolled on earlier
  days too when those days are backfilled (status rows carry no creation time).
- `started_day` / `started_cumulative`: status rows whose `drill_statuses.started_time` is in
  the day / before `day_end`.
- `completed_day` / `completed_cumulative`: the same with `drill_statuses.completed_time`.
- `completion_rate`: of the users who had started the drill by `day_end`, the share who had also
  completed it by then (0..1; empty when nobody had started).
- `median_completion_seconds`: median of `completed_time - started_time` over all completions
  before `day_end` (empty when none).
- `inactive_7d`: enrolled users whose `users.last_interacted_time` is more than 7 days before
  `day_end` (or never set).
- `stalled_7d`: of those, the ones who had started this drill but not completed it by `day_end`.

Starts and completions come from `drill_statuses` (one row per user and drill, event times),
not from `drill_instances` (which has no event-time start). **The aggregate keeps only current
state**: `USER_VALIDATED` clears a user's started/completed times and `OPTED_OUT` clears a
started time, and `last_interacted_time` only moves forward. A backfill of a past day therefore
reports that day as today's timestamps place it; re-running a day whose underlying rows did not
change gives exactly the same figures.

**Params**: `report_date` (optional, `YYYY-MM-DD`): report this day instead of the run's data
interval. Without it, a scheduled or backfill run reports its data interval's day, and a manual
run reports the last complete UTC day before its logical date (Airflow's manual-run rule), e.g.
`airflow dags test drill_progress_report 2026-03-10` reports 2026-03-09.

**Tasks**: `report_day` works out the day (params, data interval) and returns the bound parameters;
`replace_day` (the common-sql provider's SQLExecuteQueryOperator) runs
`include/sql/report/replace_day.sql` with them: an advisory lock for the day, `DELETE` that day's
rows, one set-based `INSERT ... SELECT`, then the count written (its return value), all in ONE
transaction. Readers see the old day or the new day, never a mix. Idempotent: re-run or clear any
run freely. The exact SQL that ran is under the task's **Rendered Template** in the UI.

**Re-run / backfill**: clear the run in the UI, or
`airflow backfill create --dag-id drill_progress_report --from-date 2026-03-01 --to-date 2026-03-07`
which reports the days 03-01 .. 03-07 (a backfill run's logical date is the start of its day;
add `--reprocess-behavior completed` to redo days that already ran), or trigger with
`{"report_date": "2026-03-05"}`. Late events for a past day are picked up by re-running it.

**When it fails**: the log names the day. A failure leaves the previous figures of that day
untouched (the transaction rolls back). Usual causes: the database is unreachable (check the
`drill_progress_db` connection and retry) or migration 0007 was not applied (run
`drill_progress_setup`, then clear the failed run). A `ReportDayError` means the run's interval
is not one whole UTC day or `report_date` is malformed (`report_day` fails without retrying): fix
the param and trigger again. Its connection waits at most 30 s for a lock and 10 min per statement.
"""

from __future__ import annotations

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from drill_progress import assets, config
from drill_progress.dag_defaults import DEFAULT_ARGS, SQL_DIR, START_DATE, TAGS_BASE


@dag(
    dag_id="drill_progress_report",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    template_searchpath=[SQL_DIR],
    tags=[*TAGS_BASE, "report"],
    doc_md=__doc__,
    params={
        "report_date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Report date",
            description="Optional YYYY-MM-DD: report this UTC day instead of the run's data interval.",
        ),
    },
)
def drill_progress_report():
    @task
    def report_day(params: dict | None = None, data_interval_start=None, data_interval_end=None, dag_run=None) -> dict:
        from drill_progress.report import tasks

        return tasks.report_day(
            params or {}, data_interval_start, data_interval_end, getattr(dag_run, "run_after", None)
        )

    SQLExecuteQueryOperator(
        task_id="replace_day",
        conn_id=config.DB_CONN_ID,
        sql="report/replace_day.sql",
        parameters=report_day(),
        split_statements=True,
        return_last=True,
        hook_params={"options": config.postgres_options("task")},
        inlets=[assets.USERS, assets.DRILL_STATUSES, assets.DRILLS],
        outlets=[assets.DRILL_PROGRESS_DAILY],
    )


drill_progress_report()
