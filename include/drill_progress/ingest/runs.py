"""One ingestion run of `dialog_event_ingest`, given its engine, clients and stream names: which shards
to read, reading one shard and publishing the commands it caused, the run's totals. The Airflow
glue that resolves connections and Variables is `ingest.tasks`."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy.engine import Engine

from drill_progress import outbox
from drill_progress.ingest import consumer, lease, reader, store

log = logging.getLogger(__name__)

TOTAL_KEYS = (
    "records_read",
    "batches_applied",
    "events_applied",
    "duplicates_skipped",
    "records_rejected",
    "commands_emitted",
)


def plan_shards(
    engine: Engine, kinesis, stream: str, replay_shard_id: str | None = None, replay_from: str | None = None
) -> list[str]:
    """Shard ids to read in this run: every listed shard not yet drained whose parents are
    drained (or expired), plus the shard being replayed, if any."""
    if bool(replay_shard_id) != bool(replay_from):
        raise consumer.ReplayRefused("a replay needs both replay_shard_id and replay_from (ISO 8601 with offset)")
    shards = reader.list_shards(kinesis, stream)
    with engine.connect() as conn:
        checkpoints = store.load_checkpoints(conn, stream)
    readable = reader.readable_shards(shards, checkpoints)
    waiting = sorted(
        {s.shard_id for s in shards} - set(readable) - {k for k, v in checkpoints.items() if v.get("shard_closed")}
    )
    if replay_shard_id:  # refused here, once, before any shard is read
        if replay_shard_id not in {s.shard_id for s in shards}:
            raise consumer.ReplayRefused(f"replay_shard_id {replay_shard_id} is not a listed shard of {stream}")
        consumer.check_replay(
            replay_shard_id,
            consumer.parse_timestamp(replay_from),  # type: ignore[arg-type]
            checkpoints.get(replay_shard_id, {}),
        )
        if replay_shard_id not in readable:
            readable.append(replay_shard_id)
    log.info(
        "stream %s: %d shards listed; reading %s; waiting for parents: %s",
        stream,
        len(shards),
        readable,
        waiting or "none",
    )
    return readable


def run_shard(
    engine: Engine,
    kinesis,
    stream: str,
    command_stream: str,
    shard_id: str,
    *,
    bounds: consumer.Bounds,
    micro_batch_records: int = 500,
    replay_shard_id: str | None = None,
    replay_from: str | None = None,
    run_id: str | None = None,
) -> dict:
    """One shard's part of a run: take the shard's lease (waiting for the consumer of the previous
    run to let go), consume it within `bounds`, publishing each micro-batch's commands as it commits.
    Returns and logs the shard's figures."""
    replay = replay_from if replay_shard_id and shard_id == replay_shard_id else None
    shard_lease = lease.ShardLease(
        engine,
        stream,
        shard_id,
        lease.new_owner(run_id or ""),
        kind=lease.CATCH_UP if bounds.until_caught_up else lease.CONTINUOUS,
        run_id=run_id,
    )
    stats = consumer.consume_shard(
        engine,
        kinesis,
        stream,
        shard_id,
        command_stream=command_stream,
        bounds=bounds,
        micro_batch_records=micro_batch_records,
        replay_from=replay,
        lease=shard_lease,
    )
    result = stats.as_dict()
    log.info(
        "shard %s%s: %s; %d commands published; stopped: %s; seconds %s",
        shard_id,
        f" (replay from {replay})" if replay else "",
        stats.progress(),
        stats.commands_published,
        stats.stopped_because or "-",
        result["seconds"],
    )
    return result


def publish_commands(engine: Engine, kinesis, command_stream: str) -> dict:
    """Publish every unpublished ingest command; raise (so the task retries) if some failed."""
    result = outbox.publish_pending(engine, kinesis, command_stream, source=store.OUTBOX_SOURCE)
    log.info("published %d commands to %s", result["published"], command_stream)
    if result["failed"]:
        raise outbox.PublishError(
            f"{result['failed']} commands could not be published to {command_stream}; "
            "they stay in command_outbox and are sent on retry"
        )
    return result


def summarize(shard_results: Iterable[dict] | None, published: dict | None = None) -> dict:
    results = [r for r in (shard_results or []) if r]
    totals = {key: sum(int(r.get(key) or 0) for r in results) for key in TOTAL_KEYS}
    totals["shards"] = len(results)
    totals["max_behind_ms"] = max((int(r.get("behind_ms") or 0) for r in results), default=0)
    totals["commands_published"] = (published or {}).get("published", 0)
    totals["per_shard"] = {r["shard_id"]: {k: r.get(k) for k in (*TOTAL_KEYS, "behind_ms")} for r in results}
    log.info("ingestion run: %s", {k: v for k, v in totals.items() if k != "per_shard"})
    for shard_id, figures in totals["per_shard"].items():
        log.info("  %s: %s", shard_id, figures)
    return totals
