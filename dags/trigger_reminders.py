"""
### Trigger reminders

Every 5 minutes from 14:00 to 23:55 UTC, sends one `TRIGGER_REMINDER` command per (drill instance,
prompt), ever, to users stuck on a prompt (contract §6). No catchup; one active run at a time.

**What it does** (task `send_reminders`, one transaction then one publish):

1. **Records the reminder.** Finds the valid (`is_valid`; an opted-out instance is invalid),
   incomplete drill instances whose current prompt started in the window
   `(reference - ceil_minutes, reference - floor_minutes]` — a prompt started exactly 4 h before
   is due, one started exactly 24 h before is not — adds the prompt to the instance's
   `drill_instances.reminded_prompts` where it is not there yet, and writes a reminder for each
   prompt marked into the PostgreSQL outbox `command_outbox` under the key
   `reminder:<drill_instance_id>:<prompt_slug>`, in one transaction. A prompt already marked
   writes nothing: retries, overlapping runs and re-runs never send twice, even after
   `drill_progress_maintenance` pruned the outbox. A prompt advanced since its reminder is a new
   prompt and gets its own reminder.
2. **Publishes.** Sends every pending reminder row to the command stream (PutRecords ≤ 500, failed
   records retried with backoff) as `{"type": "TRIGGER_REMINDER", "payload": {"phone_number",
   "drill_instance_id", "prompt_slug"}, "idempotency_key"}`, partition key = phone number, and stamps
   `published_at`.

The reference time is the run's logical date (a scheduled run: its schedule time); a manual run
without a logical date uses the time it was triggered, at any hour.

**Params**: `floor_minutes` (default 240) and `ceil_minutes` (default 1440), minutes before the
reference time; `floor_minutes` must be less than `ceil_minutes` (the task fails without retrying
otherwise).

**Reads**: `drill_instances`, `command_outbox` (connection `drill_progress_db`).
**Writes**: `drill_instances.reminded_prompts`, `command_outbox`; the Kinesis stream named by
Variable `command_stream` (connection `aws_default`). The task returns a summary: candidates in
the window, already recorded, newly enqueued, published, failed.

**Re-run / backfill**: safe at any time — a re-run sends only reminders never recorded before, plus
any still pending. A manual run (`airflow dags trigger trigger_reminders`, or
`airflow dags test trigger_reminders <logical date>`) reminds as of its logical date. Backfilling
past slots is pointless (catchup is off): the next run covers the whole 20-hour window.

**When it fails**:
- *floor_minutes ≥ ceil_minutes*: fix the params and trigger again.
- *"reminders could not be published"*: the command stream is missing, throttled or unreachable.
  The reminders stay pending in `command_outbox` (`published_at IS NULL`, `last_error` set) and
  are sent by the task's retry or the next run; nothing is lost. Check the stream and the
  `aws_default` connection, then clear the task.
- *database errors*: nothing was recorded (the transaction rolled back); clear the task.

**Good to know**: a reminder left pending by a failed publish is sent by the next successful run
even if the user has answered meanwhile; it names its `prompt_slug`, so the Dialog Context can
tell it is stale. Users who opted out are not reminded: `OPTED_OUT` invalidates their instance.

**Residual risk**: if the worker dies after Kinesis accepted a chunk but before `published_at`
was committed, the next run sends that chunk (≤ 500 reminders) once more with the same
`idempotency_key`, which the Dialog Context tolerates (contract §5).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from drill_progress import assets
from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE


@dag(
    dag_id="trigger_reminders",
    schedule="*/5 14-23 * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["drill-progress", "reminders", "commands"],
    doc_md=__doc__,
    params={
        "floor_minutes": Param(
            240,
            type="integer",
            minimum=0,
            maximum=10080,
            title="Floor (minutes)",
            description="A prompt must have started at least this many minutes before the run "
            "(inclusive) to get a reminder. Must be less than ceil_minutes.",
        ),
        "ceil_minutes": Param(
            1440,
            type="integer",
            minimum=1,
            maximum=10080,
            title="Ceiling (minutes)",
            description="A prompt that started this many minutes before the run or earlier is too "
            "old for a reminder. Must be greater than floor_minutes.",
        ),
    },
)
def trigger_reminders():
    @task(inlets=[assets.DRILL_INSTANCES], outlets=[assets.DRILL_INSTANCES, assets.COMMAND_STREAM])
    def send_reminders(params: dict | None = None, dag_run=None) -> dict:
        from drill_progress.reminders import tasks

        return tasks.send_reminders(dag_run, params or {})

    send_reminders()


trigger_reminders()
