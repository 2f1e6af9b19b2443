"""Airflow glue of `schedule_next_drills`: one function per task, resolving the contract's
connections and Variables, then calling the package (called from task bodies only)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from drill_progress import config, connections, metrics
from drill_progress.db import masked_errors
from drill_progress.scheduling import planning, sending, shortfall

log = logging.getLogger(__name__)


@masked_errors
def plan(dag_run, params: dict, ti) -> list[dict]:
    """Task `plan`: plan the run; return the slot specs the send tasks are mapped over, and push
    the plan's figures as XCom `summary` (read by `check_sends`)."""
    reference = planning.reference_time(dag_run.logical_date, dag_run.run_after)
    planned = planning.plan_run(
        connections.db_engine(),
        connections.aws_client("dynamodb"),
        connections.variable(config.DRILL_SCHEDULE_TABLE),
        reference=reference,
        now=datetime.now(UTC),
        spread_minutes=int(params["spread_minutes"]),
        inactivity_minutes=int(params["inactivity_minutes"]),
        max_send_delay_minutes=int(params.get("max_send_delay_minutes", planning.DEFAULT_MAX_SEND_DELAY_MINUTES)),
        rate_limited=True,
    )
    log.info("plan summary: %s", planned["summary"])
    ti.xcom_push(key="summary", value=planned["summary"])
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


def check_sends(ti, dag_run) -> dict:
    """Task `check_sends` (trigger rule all_done): what was planned against what the send tasks
    report; alert (drill_progress.alerting.notify) and fail when far fewer were sent."""
    from airflow.sdk.exceptions import AirflowFailException

    from drill_progress import alerting

    [summary] = ti.xcom_pull(task_ids=["plan"], key="summary") or [None]
    results = [r for r in ti.xcom_pull(task_ids=["send_slot"]) or [] if isinstance(r, dict)]
    report = shortfall.compare(summary, results)
    log.info("planned against sent: %s", report)
    metrics.scheduling_run(report)
    if report["alert"]:
        subject, message = shortfall.alert_text(report, dag_run.run_id)
        alerting.notify(subject, message)
        raise AirflowFailException(message)
    if summary is None:
        raise AirflowFailException("the plan task did not finish: nothing was planned (see its log)")
    return report
