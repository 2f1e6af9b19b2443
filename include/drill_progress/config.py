"""Names fixed by the contract (docs/contract.md) and their defaults, and the drill database's
per-job timeouts. Light: DAG files import it at parse time."""

from __future__ import annotations

from pathlib import Path

# The reviewed SQL templates and migrations (include/sql); also the DAGs' template_searchpath.
SQL_DIR = Path(__file__).resolve().parents[1] / "sql"

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

# OpenLineage (docs/lineage.md): the extractor that turns the tasks' declared Assets into datasets
# with their physical names, and the job namespace of the project's stacks.
OPENLINEAGE_EXTRACTORS = "drill_progress.lineage.DeclaredAssetsExtractor"
OPENLINEAGE_NAMESPACE = "drill-progress"
OWNER = "drill-progress"

# (lock_timeout, statement_timeout) of every connection to the drill database, by the job that opens
# it (docs/operations.md). A lock or a statement that waits longer fails with SQLSTATE 55P03 / 57014,
# which each job treats as transient trouble: ingestion retries the micro-batch, tasks retry.
TIMEOUTS: dict[str, tuple[str, str]] = {
    "ingest": ("10s", "60s"),  # a micro-batch's statements take milliseconds; users locked ~1 s at most
    "task": ("30s", "10min"),  # set-based DAG tasks: due users, reports, rollout batches, prunes
    "migrations": ("60s", "0"),  # DDL may rewrite tables; never queue forever behind a long lock
    "ui": ("2s", "15s"),  # the Drill Progress page reads: it must answer or fail fast
}


def postgres_options(role: str) -> str:
    """libpq `options` setting `role`'s timeouts, e.g. '-c lock_timeout=30s -c statement_timeout=10min'."""
    lock_timeout, statement_timeout = TIMEOUTS[role]
    return f"-c lock_timeout={lock_timeout} -c statement_timeout={statement_timeout}"


# dialog_event_ingest: a scheduled run starts every this many minutes and consumes until the next
# run takes its shards over (the `run_minutes` param's default). Set per deployment in the
# environment of the Airflow components (read when the DAG file is parsed: no lookup).
INGEST_RUN_MINUTES_ENV = "DRILL_INGEST_RUN_MINUTES"
INGEST_RUN_MINUTES_DEFAULT = 60
INGEST_RUN_MINUTES_MAX = 120


def ingest_run_minutes(environ: dict[str, str] | None = None) -> int:
    """DRILL_INGEST_RUN_MINUTES as whole minutes within 1..120; the default when unset or not a number."""
    import os

    value = (os.environ if environ is None else environ).get(INGEST_RUN_MINUTES_ENV, "")
    try:
        minutes = int(value.strip())
    except ValueError:
        return INGEST_RUN_MINUTES_DEFAULT
    return max(1, min(INGEST_RUN_MINUTES_MAX, minutes))
