"""Create the Kinesis streams and DynamoDB tables the pipeline uses, where they are missing.

Works on boto3 clients, so it runs the same against AWS and against the local emulator.

DynamoDB key schemas (both tables carry a TTL attribute `expires_at`, epoch seconds):
- drill schedule table: partition key `pk` (S), sort key `sk` (S)
- idempotency table: partition key `idempotency_key` (S)
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

TTL_ATTRIBUTE = "expires_at"


def ensure_stream(kinesis, name: str, shard_count: int = 1, timeout: float = 60) -> bool:
    """Create the stream if missing and wait (boto3's `stream_exists` waiter) until it is ACTIVE;
    return True if created."""
    created = False
    try:
        kinesis.describe_stream_summary(StreamName=name)
    except kinesis.exceptions.ResourceNotFoundException:
        try:
            kinesis.create_stream(StreamName=name, ShardCount=shard_count)
            created = True
        except kinesis.exceptions.ResourceInUseException:
            pass  # created concurrently by another run
    delay = 0.5
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(timeout / delay))}
    )
    log.info("Kinesis stream %s %s", name, "created" if created else "already exists")
    return created


def ensure_table(dynamodb, name: str, hash_key: str, range_key: str | None = None) -> bool:
    """Create an on-demand DynamoDB table with TTL on `expires_at` if missing; True if created."""
    try:
        dynamodb.describe_table(TableName=name)
        log.info("DynamoDB table %s already exists", name)
        return False
    except dynamodb.exceptions.ResourceNotFoundException:
        pass
    keys = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    attrs = [{"AttributeName": hash_key, "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
        attrs.append({"AttributeName": range_key, "AttributeType": "S"})
    try:
        dynamodb.create_table(TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST")
    except dynamodb.exceptions.ResourceInUseException:
        return False  # created concurrently by another run
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
    log.info("DynamoDB table %s created", name)
    return True


def ensure_all(kinesis, dynamodb, names: dict[str, str], dialog_shards: int = 2) -> dict[str, bool]:
    """Create every stream and table named in `names` (config Variable name -> resource name)."""
    return {
        names["dialog_event_stream"]: ensure_stream(kinesis, names["dialog_event_stream"], dialog_shards),
        names["command_stream"]: ensure_stream(kinesis, names["command_stream"], 1),
        names["drill_schedule_table"]: ensure_table(dynamodb, names["drill_schedule_table"], "pk", "sk"),
        names["idempotency_table"]: ensure_table(dynamodb, names["idempotency_table"], "idempotency_key"),
    }
