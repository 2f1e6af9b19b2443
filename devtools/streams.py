"""Reading a whole Kinesis stream back (tests, fault-injection checks, operators' spot checks)."""

from __future__ import annotations


def read_all(kinesis, stream: str) -> list[dict]:
    """Every record on every shard of `stream`, from TRIM_HORIZON, shard by shard in order.

    Stops on a shard when a read returns nothing (the emulator never ends an open shard)."""
    records: list[dict] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            records += response["Records"]
            if not response["Records"]:
                break
            iterator = response.get("NextShardIterator")
    return records
