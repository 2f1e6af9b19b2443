"""Names fixed by the contract (../shared/contracts/README.md §7, §8) and their defaults."""

from __future__ import annotations

DB_CONN_ID = "drill_progress_db"
AWS_CONN_ID = "aws_default"

# Airflow Variable name -> default value.
DIALOG_EVENT_STREAM = "dialog_event_stream"
COMMAND_STREAM = "command_stream"
DRILL_SCHEDULE_TABLE = "drill_schedule_table"
IDEMPOTENCY_TABLE = "idempotency_table"

VARIABLE_DEFAULTS: dict[str, str] = {
    DIALOG_EVENT_STREAM: "dialog-events",
    COMMAND_STREAM: "dialog-commands",
    DRILL_SCHEDULE_TABLE: "drill-trigger-schedule",
    IDEMPOTENCY_TABLE: "drill-idempotency",
}

# The initial drill catalog, in order (place_in_sequence 0, 1, 2).
INITIAL_CATALOG: tuple[str, ...] = ("01-sample-drill", "02-sample-drill", "03-sample-drill")

DEFAULT_AWS_REGION = "us-east-1"
OWNER = "drill-progress"
