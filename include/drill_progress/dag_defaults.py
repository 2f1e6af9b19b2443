"""Defaults shared by every DAG file. Light imports only: this module is loaded at parse time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drill_progress import alerting, config
from drill_progress.config import OWNER

# include/sql as the DAGs' template_searchpath, so that a SQL operator's `sql="report/x.sql"` is found
# and its text shows, rendered, under the task's Rendered Template in the UI.
SQL_DIR = str(config.SQL_DIR)

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    # one SNS alert per task that failed its last attempt (topic: Variable alert_topic_arn)
    "on_failure_callback": alerting.on_task_failure,
}

TAGS_BASE = ["drill-progress"]
