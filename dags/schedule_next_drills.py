"""
### Schedule next drills

Daily at 17:05 UTC: every user who has gone quiet gets a START_DRILL for their next drill, each at
its own moment spread over the following 3 hours, sent within a second or so of that moment
(contract §4; docs/scheduling.md). Code: `drill_progress.scheduling` (`planning`, `sending`,
`shortfall`, `operators`; Airflow glue in `tasks`).

1. **plan** — streams the due users from `drill_progress_db` (`include/sql/scheduling/due_users.sql`,
   a server-side cursor, 10,000 users at a time: memory stays flat whatever the number of users):
   users with a primary phone number, not interacted within `inactivity_minutes` before the
   reference time (or never), with at least one started and one incomplete drill, not opted out;
   and each one's next drill among the drills of their audience (a drill rolled out to some
   employers only is never planned for anyone else). Each gets a planned send time, uniform over
   `spread_minutes` from the reference time (seeded by its idempotency key: planning the same day
   again plans the same times), written to the DynamoDB table of Variable `drill_schedule_table`
   (`pk` = `<date>T<HHMMSS>#slot<NNN>`, `sk` = planned time + user, TTL `expires_at` 3 days after
   the window). A send already more than `max_send_delay_minutes` late is not written but counted
   (`late_dropped`). The window is cut into at most 60 slots; returns the slot specs (the send
   tasks' mapped argument) and pushes its figures as XCom `summary`.
2. **send_slot** — one mapped task per non-empty slot (≤ 60 whatever the number of users; slots
   already begun when the plan ends make one task). Each **defers** until its slot starts
   (DateTimeTrigger: no worker slot held while waiting), then sends its users **paced to the
   second**: once a second, the requests whose planned time has come (at most `max_per_second`
   of the plan summary: 2 x the window's mean rate + 5, so a task that fell behind catches up
   without a flood; tasks woken late together catch up one at a time, through an advisory lock).
   Per sub-batch it drops what must not go out — planned more than
   `max_send_delay_minutes` ago (`late_dropped`), user active again since the plan (`active_again`),
   drill no longer the user's next one, opted out, number no longer primary (`stale`) — records
   the rest in `sent_start_drills`, enqueues them in `command_outbox` (key
   `start-drill:<user>:<drill>:<date>`) and publishes them to the stream of Variable
   `command_stream`. Its result counts each outcome.
3. **check_sends** (runs whatever happened upstream) — compares what the plan recorded with what
   the send tasks report; when more than 1 % is unaccounted for (a send task failed or never ran)
   it alerts (`drill_progress.alerting.notify`) and fails, so the run shows red.

**Worker-slot cost of pacing**: a send task holds one worker slot from its slot's start to its
last planned send, about its slot's width (measured: 60.2 s for a 60 s window); the slots follow
each other, so a run holds **one worker slot for about `spread_minutes`** (3 h a day by default;
two for a moment at each slot boundary), plus the plan task (3.5 min at a million users on the
emulator). Waiting for a slot costs none (deferred). Send tasks woken late hold theirs while they
wait for the catch-up lock.

**Reference time**: the run's logical date when it has one — a scheduled run (17:05 of its day),
a backfill, `airflow dags test schedule_next_drills <date>`; a manual trigger without a logical
date uses the time it was triggered.

**Params** (also the manual trigger form): `spread_minutes` (default 180; 0 sends everything at
once), `inactivity_minutes` (default 720), `max_send_delay_minutes` (default 60; the late guard).

**Never twice**: each START_DRILL's key is recorded in `sent_start_drills` in the transaction of
its outbox row; a key already there is never enqueued again — a task retry, a cleared and re-run
run, a second run the same day or a backfill publishes no START_DRILL twice, even after the
outbox's published rows were pruned.

**Re-run / backfill**: clearing today's run (or a slot) is safe: what was sent is not sent again,
what is still within the late guard goes out (at the catch-up rate), what is later is dropped and
counted. A backfill of an old day plans and sends nothing (every send is `late_dropped`) — a drill
is not started days late. To send for today after a long outage, trigger a manual run without a
logical date (its reference time is now).

**When it fails**: `plan` fails on database/DynamoDB errors (nothing was sent; clear it). A
`send_slot` failing to publish leaves its commands in the outbox and retries (with backoff); clear
a failed slot to send what is left — nothing is sent twice. `check_sends` failing with "far fewer
START_DRILL than planned" says how many are unaccounted for: clear the failed `send_slot` tasks
with their downstream. Many `late_dropped` in a send task mean it woke late (triggerer or workers
down): check the triggerer. Logs mask phone numbers.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from drill_progress import assets
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
        "max_send_delay_minutes": Param(
            60,
            type="integer",
            minimum=0,
            maximum=720,
            title="Late guard (minutes)",
            description="A send whose planned time passed more than this long ago is not sent (counted late_dropped).",
        ),
    },
)
def schedule_next_drills():
    @task(
        inlets=[assets.USERS, assets.PHONE_NUMBERS, assets.DRILL_STATUSES, assets.DRILLS],
        outlets=[assets.DRILL_SCHEDULE],
    )
    def plan(params: dict | None = None, dag_run=None, ti=None) -> list[dict]:
        from drill_progress.scheduling import tasks

        return tasks.plan(dag_run, params, ti)

    @task(trigger_rule="all_done")
    def check_sends(ti=None, dag_run=None) -> dict:
        from drill_progress.scheduling import tasks

        return tasks.check_sends(ti, dag_run)

    sends = SendScheduledSlotOperator.partial(
        task_id="send_slot",
        inlets=[assets.DRILL_SCHEDULE, assets.USERS, assets.PHONE_NUMBERS, assets.DRILL_STATUSES, assets.DRILLS],
        outlets=[assets.COMMAND_STREAM],
    ).expand(slot=plan())
    sends >> check_sends()


schedule_next_drills()
