"""
### Drill rollout

Adds a new drill to the drill catalog and to every existing user of its audience (docs/rollout.md). Manual only:
launch it from **Trigger DAG** and fill in the form (or `airflow dags test drill_rollout -c '<json>'`).
One task, **roll_out_drill**; its return value (XCom `return_value`) is the summary: the drill's
audience, users matched, rows inserted, statuses moved, batches, seconds, dry_run.

**Params**
- `drill_slug` (required): lower-case letters, digits and `-`, starting with a letter or digit, at most
  64 characters (`^[a-z0-9][a-z0-9-]{0,63}$`).
- `drill_name` (required): 1 to 120 characters: letters, digits, spaces and `- _ . , : ' ( ) & / + ! ?`.
- `place_in_sequence` (optional, **0-based**: 0 = first drill; the initial catalog is 0, 1, 2). Empty =
  after the last drill. A place at or before the last drill inserts the drill there and shifts that
  drill and all later ones one place on — in the catalog and for every user, each user's order kept
  (place uniqueness is checked at commit, so there are no transient collisions). A place past the
  end appends (the drill gets last + 1, no gaps).
- `only_employer_ids` (optional list of integers): the drill's **audience** — it belongs, for good, to
  the users whose profile `account_info.employer_id` is listed (1 and "1" alike): their existing users
  get a status row now, the users created later get it from the catalog (which records the audience,
  `drills.employer_ids`), nobody else ever gets a row for it or is started on it (their place stays a
  gap). Empty = everyone. Re-running for a drill already in the catalog **extends** its audience with
  the listed employers (empty: to everyone); it never narrows it (refused).
- `dry_run` (default false): logs and returns how many users would get the drill, **per employer** of
  the audience (an employer listed without users shows 0), and how many status rows would move;
  changes nothing, not even the catalog.

**What it does** (database `drill_progress_db`): (1) validates the params again — invalid or hostile
values fail the run at once, without retries, changing nothing; (2) adds the drill and its audience to
`drills` in its own committed transaction, so ingestion gives it to new users of the audience from then
on; (3) walks `users` in batches of about 10,000 (`user_id` key ranges, one transaction each, two at a
time): the batch's status rows of the drills after the new one take their new catalog place, then each
user of the audience gets a not-started row (`ON CONFLICT DO NOTHING`; ids from
`drill_progress.ids.status_id`); progress (users, matched, inserted, moved, seconds) is logged per
batch; (4) waits (up to 60 s) for transactions that began before the catalog change, then sweeps once
more for users created meanwhile. One rollout at a time (advisory lock; `max_active_runs=1`).

**Re-running** with the same params is safe and inserts nothing new; it also completes a rollout that
failed half-way (the catalog is already right, the missing users get the row). A slug already in the
catalog with another place or another name is refused — a rollout never moves or renames a drill. To
add the drill for more employers later, re-run with the same slug, name and place and the new employers
(they are added to the audience; the users who lack the drill get it).
No backfill: the DAG has no schedule.

**When it fails**: the log's first error line says why. "rollout refused" = bad params or a conflict
with the catalog (another place or name, or employers named for a drill that is already everyone's);
nothing was changed; fix the params and trigger again. "another drill rollout is
running" = wait for it (retries do). Database errors are retried; each batch is all-or-nothing, so
clearing the task (or triggering again with the same params) continues where it stopped.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from drill_progress import assets
from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE, TAGS_BASE


@dag(
    dag_id="drill_rollout",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS_BASE, "rollout"],
    doc_md=__doc__,
    params={
        "drill_slug": Param(
            type="string",
            pattern="^[a-z0-9][a-z0-9-]{0,63}$",
            minLength=1,
            maxLength=64,
            title="Drill slug",
            description="Id of the new drill: lower-case letters, digits and '-', e.g. 04-breathing.",
        ),
        "drill_name": Param(
            type="string",
            pattern="^[\\w.,:'()&/+!?-][\\w .,:'()&/+!?-]{0,119}$",
            minLength=1,
            maxLength=120,
            title="Drill name",
            description="Display name: letters, digits, spaces and - _ . , : ' ( ) & / + ! ? (at most 120).",
        ),
        "place_in_sequence": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=9999,
            title="Place in sequence (0-based)",
            description="0 = first drill. Empty = after the last drill. Later drills shift one place on.",
        ),
        "only_employer_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "integer", "minimum": 0},
            maxItems=1000,
            title="Only these employers",
            description="The drill is for these employers' users only, now and later. Empty = everyone.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Only report how many users would get the drill; change nothing.",
        ),
    },
)
def drill_rollout():
    @task(inlets=[assets.USERS, assets.DRILLS], outlets=[assets.DRILLS, assets.DRILL_STATUSES])
    def roll_out_drill(params: dict | None = None) -> dict:
        from drill_progress.rollout import tasks

        return tasks.roll_out_drill(params or {})

    roll_out_drill()


drill_rollout()
