"""Airflow glue of `dialog_event_ingest` and `dialog_event_reapply`: one function per task, resolving
the contract's connections and Variables, then calling the package (called from task bodies only)."""

from __future__ import annotations

from drill_progress import config, connections
from drill_progress.db import masked_errors
from drill_progress.ingest import consumer, reapply, runs


def _refused(exc: Exception):
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(str(exc))


@masked_errors
def plan_shards(params: dict) -> list[str]:
    """Task `plan_shards`: the shards to read in this run."""
    try:
        return runs.plan_shards(
            connections.db_engine(),
            connections.aws_client("kinesis"),
            connections.variable(config.DIALOG_EVENT_STREAM),
            params.get("replay_shard_id"),
            params.get("replay_from"),
        )
    except consumer.ReplayRefused as exc:
        raise _refused(exc) from exc  # no retries: the params are wrong


# How long a continuous consumer goes on past `run_minutes` while no consumer of a newer run has
# come to take its shard over (the scheduler is late, or the DAG was paused).
HANDOVER_GRACE_SECONDS = 600


def bounds_for(params: dict, run_type: object) -> consumer.Bounds:
    """The scheduled runs (and a run by hand with `continuous`) consume until the next run takes
    their shards over, `run_minutes` later (at most HANDOVER_GRACE_SECONDS more); a run started by
    hand (a manual trigger, `airflow dags test`, a replay) ends once every shard is caught up."""
    scheduled = str(getattr(run_type, "value", run_type)) == "scheduled"
    if (scheduled or params.get("continuous")) and not params.get("replay_shard_id"):
        return consumer.Bounds.continuous(float(params["run_minutes"]) * 60 + HANDOVER_GRACE_SECONDS)
    return consumer.Bounds.catch_up(int(params["max_records_per_shard"]), float(params["max_seconds"]))


@masked_errors
def ingest_shard(shard_id: str, params: dict, run_type: object, run_id: str | None = None) -> dict:
    """Task `ingest_shard` (mapped, one per shard)."""
    try:
        return runs.run_shard(
            connections.db_engine(role="ingest"),
            connections.aws_client("kinesis"),
            connections.variable(config.DIALOG_EVENT_STREAM),
            connections.variable(config.COMMAND_STREAM),
            shard_id,
            bounds=bounds_for(params, run_type),
            micro_batch_records=int(params["micro_batch_records"]),
            replay_shard_id=params.get("replay_shard_id"),
            replay_from=params.get("replay_from"),
            run_id=run_id,
        )
    except consumer.ReplayRefused as exc:
        raise _refused(exc) from exc


@masked_errors
def publish_commands() -> dict:
    """Task `publish_commands`: every ingest command still in the outbox."""
    return runs.publish_commands(
        connections.db_engine(), connections.aws_client("kinesis"), connections.variable(config.COMMAND_STREAM)
    )


def summary(shard_results: list[dict] | None, published: dict | None) -> dict:
    """Task `summary`: the run's totals."""
    return runs.summarize(shard_results, published)


@masked_errors
def reapply_rejected(params: dict) -> dict:
    """Task `reapply_rejected` of `dialog_event_reapply`: re-apply set-aside records, then publish."""
    return reapply.reapply_and_publish(
        connections.db_engine(role="ingest"),
        connections.aws_client("kinesis"),
        connections.variable(config.DIALOG_EVENT_STREAM),
        connections.variable(config.COMMAND_STREAM),
        shard_id=params.get("shard_id") or None,
        since=consumer.parse_timestamp(params.get("rejected_since")),
        until=consumer.parse_timestamp(params.get("rejected_until")),
        limit=int(params.get("limit") or 10_000),
        dry_run=bool(params.get("dry_run")),
    )
