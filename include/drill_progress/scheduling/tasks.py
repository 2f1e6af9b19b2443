"""Airflow glue of `schedule_next_drills`: one function per task, resolving the contract's
connections and Variables, then calling the package (called from task bodies only)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from drill_progress import config, connections
from drill_progress.db import masked_errors
from drill_progress.scheduling import planning, sending

log = logging.getLogger(__name__)


@masked_errors
def plan(dag_run, params: dict) -> list[dict]:
    """Task `plan`: plan the run; return the slot specs the send tasks are mapped over."""
    reference = planning.reference_time(dag_run.run_type, dag_run.logical_date, dag_run.run_after)
    planned = planning.plan_run(
        connections.db_engine(),
        connections.aws_client("dynamodb"),
        connections.variable(config.DRILL_SCHEDULE_TABLE),
        reference=reference,
        now=datetime.now(UTC),
        spread_minutes=int(params["spread_minutes"]),
        inactivity_minutes=int(params["inactivity_minutes"]),
    )
    log.info("plan summary: %s", planned["summary"])
    return planned["slots"]


@masked_errors
def send_slot(slot: dict, deferred: bool) -> dict:
    """Task `send_slot` (one per slot, run by SendScheduledSlotOperator when the slot starts)."""
    return sending.send_slot(
        connections.db_engine(),
        connections.aws_client("dynamodb"),
        connections.aws_client("kinesis"),
        table=connections.variable(config.DRILL_SCHEDULE_TABLE),
        stream=connections.variable(config.COMMAND_STREAM),
        slot=slot,
        deferred=deferred,
    )
