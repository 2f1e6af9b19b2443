"""Reading the dialog event stream: shards, resharding order, iterators, GetRecords.

A shard is readable when it is not yet drained and each of its parents (ParentShardId,
AdjacentParentShardId) is drained (checkpoint `shard_closed`) or no longer listed (expired).
A shard is drained when GetRecords on it returns no NextShardIterator (AWS), or when it is
listed as closed (it has an EndingSequenceNumber) and a read returns nothing with
MillisBehindLatest 0 (what the moto emulator offers: it never ends a closed shard's iterator).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from drill_progress.retry import retrying


@dataclass(frozen=True, slots=True)
class ShardInfo:
    shard_id: str
    parents: tuple[str, ...]
    closed: bool  # listed with an EndingSequenceNumber: no new records will arrive


def list_shards(kinesis, stream: str) -> list[ShardInfo]:
    """Every listed shard of the stream (ListShards, following NextToken)."""
    shards: list[ShardInfo] = []
    response = kinesis.list_shards(StreamName=stream)
    while True:
        for shard in response["Shards"]:
            parents = tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p)
            closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
            shards.append(ShardInfo(shard["ShardId"], parents, closed))
        token = response.get("NextToken")
        if not token:
            return shards
        response = kinesis.list_shards(NextToken=token)


def readable_shards(shards: Iterable[ShardInfo], checkpoints: dict[str, dict]) -> list[str]:
    """Shard ids to read now, parents before children (pure)."""
    shards = list(shards)
    listed = {s.shard_id for s in shards}

    def drained(shard_id: str) -> bool:
        return bool(checkpoints.get(shard_id, {}).get("shard_closed"))

    return [
        s.shard_id for s in shards if not drained(s.shard_id) and all(drained(p) or p not in listed for p in s.parents)
    ]


def shard_info(kinesis, stream: str, shard_id: str) -> ShardInfo:
    for shard in list_shards(kinesis, stream):
        if shard.shard_id == shard_id:
            return shard
    raise LookupError(f"shard {shard_id} is not listed on stream {stream}")


def shard_iterator(kinesis, stream: str, shard_id: str, after: str | None, at_timestamp: datetime | None = None) -> str:
    """AT_TIMESTAMP for a replay, else AFTER_SEQUENCE_NUMBER the checkpoint, else TRIM_HORIZON."""
    kwargs: dict = {"StreamName": stream, "ShardId": shard_id}
    if at_timestamp is not None:
        kwargs.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=at_timestamp)
    elif after:
        kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
    else:
        kwargs.update(ShardIteratorType="TRIM_HORIZON")
    return kinesis.get_shard_iterator(**kwargs)["ShardIterator"]


@dataclass(slots=True)
class Page:
    records: list[dict]
    next_iterator: str | None
    behind_ms: int


def _throttled(exc: BaseException) -> bool:
    error = getattr(exc, "response", {}).get("Error", {})
    return error.get("Code") == "ProvisionedThroughputExceededException"


def get_records(kinesis, iterator: str, limit: int, max_attempts: int = 8) -> Page:
    """One GetRecords call, backing off (drill_progress.retry) while throttled; the client retries
    most other errors itself."""
    call = retrying("GetRecords", attempts=max_attempts, retry_on=_throttled, base=0.2)(kinesis.get_records)
    response = call(ShardIterator=iterator, Limit=limit)
    return Page(response["Records"], response.get("NextShardIterator"), int(response.get("MillisBehindLatest") or 0))
