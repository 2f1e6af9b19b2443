"""
### Rebuild users' progress from the event history

Rebuilds the aggregate (`users`, `drill_statuses`, `drill_instances`) of the phone numbers given, or
of every user, from the **event history** (`event_history`: every record ingestion has read, kept
for `history_retention_days`, see `drill_progress_maintenance`), with the ingestion's own parser
and fold. Use it after a fold bug is fixed: the users it touched get the progress their batches
give under the fixed rules. **It never sends a command.** Runbook: docs/history.md
("a fold bug shipped on day D").

**Params**
- `phone_numbers`: the users to rebuild, by phone number (a list; E.164 as ingested).
- `all_users` (default false): every user instead (a page of phone numbers at a time).
- `dry_run` (default **true**): report, per user, what would change (rows added, removed, changed
  in each table, and which fields), change nothing. Run it first; then again with `dry_run` off.

**How**: 200 phone numbers per transaction: their users are locked (ingestion waits for them, so a
batch arriving meanwhile is neither lost nor applied twice), their history is read in the order
ingestion applied it and folded again, and each differing tree is rewritten in that transaction.
Instances the history does not produce are deleted; drill status rows it does not produce (a
rollout's) are kept. Users created before the history was complete (before it existed, or whose
oldest records were pruned) are counted as `incomplete_history` and left alone.

**Result** (XCom `return_value`): examined, changed, unchanged, no_history, incomplete_history,
records_read, records_bad (still refused by the edge), rows added/removed/changed per table, and
the first 200 changed users with their differences (phone numbers masked).

**Re-run**: safe: a second run finds nothing to change.

**When it fails**: the params are wrong (neither or both of `phone_numbers` and `all_users`): fix
them, trigger again. A database error fails the task with the chunk in progress rolled back; the
chunks before it are done (and are found unchanged by the retry).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from drill_progress import assets
from drill_progress.dag_defaults import DEFAULT_ARGS, START_DATE, TAGS_BASE


@dag(
    dag_id="drill_progress_rebuild",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS_BASE, "rebuild"],
    doc_md=__doc__,
    params={
        "phone_numbers": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 3, "maxLength": 32},
            maxItems=100_000,
            title="Phone numbers",
            description="The users to rebuild, one phone number per line. Empty with all_users.",
        ),
        "all_users": Param(False, type="boolean", title="All users", description="Rebuild every user."),
        "dry_run": Param(
            True, type="boolean", title="Dry run", description="Report what would change per user; change nothing."
        ),
    },
)
def drill_progress_rebuild():
    @task(
        inlets=[assets.EVENT_HISTORY, assets.PHONE_NUMBERS, assets.DRILLS],
        outlets=[assets.USERS, assets.DRILL_STATUSES, assets.DRILL_INSTANCES],
    )
    def rebuild_users(params: dict | None = None) -> dict:
        from drill_progress.rebuild import tasks

        return tasks.rebuild_users(params or {})

    rebuild_users()


drill_progress_rebuild()
