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


def bounds_for(params: dict, run_type: object) -> consumer.Bounds:
    """The scheduled runs of the continuous DAG consume for `run_minutes`; a run started by hand
    (a manual trigger, `airflow dags test`, a replay) ends once every shard is caught up."""
    if str(getattr(run_type, "value", run_type)) == "scheduled" and not params.get("replay_shard_id"):
        return consumer.Bounds.continuous(float(params["run_minutes"]) * 60)
    return consumer.Bounds.catch_up(int(params["max_records_per_shard"]), float(params["max_seconds"]))


@masked_errors
def ingest_shard(shard_id: str, params: dict, run_type: object) -> dict:
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
