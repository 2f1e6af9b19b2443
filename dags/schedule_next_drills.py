"""
### Schedule next drills

Daily at 17:05 UTC: every user who has gone quiet gets a START_DRILL for their next drill, at a
moment spread over the following 3 hours (contract §6). Code: `drill_progress.scheduling`
(`planning`, `sending`, `operators`; Airflow glue in `tasks`).

1. **plan** — one set-based query (`include/sql/scheduling/due_users.sql`, connection
   `drill_progress_db`) finds the users with a primary phone number, not interacted within
   `inactivity_minutes` before the run's reference time (or never), with at least one started and
   one incomplete drill, not opted out; and each one's next drill (first unstarted, else first
   incomplete). Each gets a planned send time, uniform over `spread_minutes` from the reference
   time (seeded by its idempotency key, so planning the same day again plans the same times), and
   goes into the DynamoDB table named by Variable `drill_schedule_table` (`pk` =
   `<date>T<HHMMSS>#slot<NNN>`, `sk` = user id; phone number, drill, planned time, idempotency key,
   TTL `expires_at` 3 days after the window). Users are grouped into at most 60 time slots.
2. **send_slot** — one mapped task per non-empty slot (≤ 60 whatever the number of users). Each
   **defers** until its slot starts (DateTimeTrigger: no worker slot held while waiting; a slot
   whose time has passed sends at once). On waking it re-reads its users from PostgreSQL and
   **drops stale requests** (the drill is no longer the user's next drill, the user opted out, or
   the number is no longer primary), writes START_DRILL commands to the outbox table
   `command_outbox` with key `start-drill:<user>:<drill>:<date>` and publishes them to the
   Kinesis stream named by Variable `command_stream` (partition key = phone number).

**Reference time**: a scheduled run (or a backfill) uses its logical date (17:05 of its day);
a manual run uses the time it was triggered.

**Params** (also the manual trigger form): `spread_minutes` (default 180; 0 sends everything at
once), `inactivity_minutes` (default 720).

**Never twice**: the outbox's unique idempotency key is the conditional write — a task retry, a
cleared and re-run run, a second run the same day or a backfill publishes no START_DRILL twice.

**Re-run / backfill**: clearing today's run (or a slot) is safe: slots already due send at once,
what was sent is not sent again. A run whose whole sending window ended more than 3 hours ago (a
backfill of an old day, a run that waited hours to start) **sends nothing** and logs
"sending window in the past" — a drill is not started days late. To send for today after a long
outage, trigger a manual run (its reference time is now).

**When it fails**: `plan` fails on database/DynamoDB errors (nothing was sent; clear it).
A `send_slot` failing to publish leaves its commands in the outbox and retries (with backoff);
clear a failed slot to send what is left — nothing is sent twice. Logs mask phone numbers.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE
from drill_progress.scheduling.operators import SendScheduledSlotOperator


@dag(
    dag_id="schedule_next_drills",
    schedule="5 17 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["drill-progress", "scheduling"],
    doc_md=__doc__,
    params={
        "spread_minutes": Param(
            180,
            type="integer",
            minimum=0,
            maximum=1440,
            title="Spread (minutes)",
            description="Sends are spread uniformly over this many minutes from the run's time; 0 sends at once.",
        ),
        "inactivity_minutes": Param(
            720,
            type="integer",
            minimum=0,
            maximum=525600,
            title="Inactivity (minutes)",
            description="Only users who have not interacted for at least this long (or never) are due.",
        ),
    },
)
def schedule_next_drills():
    @task
    def plan(params: dict | None = None, dag_run=None) -> list[dict]:
        from drill_progress.scheduling import tasks

        return tasks.plan(dag_run, params)

    SendScheduledSlotOperator.partial(task_id="send_slot").expand(slot=plan())


schedule_next_drills()
