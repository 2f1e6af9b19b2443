"""Helpers for the ingestion tests: contract examples, synthetic batches, table snapshots."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devtools import aggregate, streams

ROOT = Path(__file__).resolve().parents[2]
# One valid record per event type and a few invalid ones (docs/formats.md): the repository's own copy.
EXAMPLES = Path(__file__).resolve().parent / "data"
PHONE = "+15551230001"
DIALOG_STREAM, COMMAND_STREAM = "dialog-events", "dialog-commands"

# the contract's examples, in the order they happen (seq 1..11)
VALID_EXAMPLES = [
    "user_validated",
    "user_validation_failed",
    "drill_started",
    "completed_prompt",
    "advanced_to_next_prompt",
    "failed_prompt",
    "reminder_triggered",
    "drill_completed",
    "next_drill_requested",
    "opted_out",
    "multi_event_batch",
]
INVALID_EXAMPLES = ["bad_missing_instance_id", "bad_not_json", "bad_seq_not_a_number", "bad_unknown_event_type"]


def example_bytes(name: str) -> bytes:
    path = EXAMPLES / f"{name}.json"
    if not path.exists():
        path = EXAMPLES / f"{name}.txt"
    return path.read_bytes()


def example(name: str) -> dict:
    return json.loads(example_bytes(name))


def encode(doc: dict) -> bytes:
    return json.dumps(doc).encode()


PROFILE = {
    "validated": True,
    "opted_out": False,
    "is_demo": False,
    "name": None,
    "language": "en",
    "account_info": {"employer_id": 7, "unit_id": 1},
}
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _uuid(*parts) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def event(event_type: str, minute: int, phone: str = PHONE, instance: str | None = None, **extra) -> dict:
    doc = {
        "event_id": _uuid("event", phone, event_type, minute, json.dumps(extra, sort_keys=True)),
        "event_type": event_type,
        "phone_number": phone,
        "created_time": (T0 + timedelta(minutes=minute)).isoformat(),
        "schema_version": 1,
        "user_profile": dict(PROFILE),
    }
    if event_type == "USER_VALIDATED":
        doc["code_validation_payload"] = {"valid": True, "is_demo": False, "account_info": {"employer_id": 7}}
    elif event_type == "DRILL_STARTED":
        slug = extra.pop("drill_slug")
        doc["drill"] = {"slug": slug, "name": slug, "prompts": []}
        doc["first_prompt"] = {"slug": extra.pop("first_prompt", "q1"), "messages": []}
    elif event_type in ("ADVANCED_TO_NEXT_PROMPT", "COMPLETED_PROMPT", "FAILED_PROMPT"):
        doc["prompt"] = {"slug": extra.pop("prompt", "q1"), "messages": []}
        if event_type != "ADVANCED_TO_NEXT_PROMPT":
            doc["response"] = "a"
        if event_type == "FAILED_PROMPT":
            doc["abandoned"] = False
    if instance is not None or event_type in (
        "DRILL_STARTED",
        "ADVANCED_TO_NEXT_PROMPT",
        "COMPLETED_PROMPT",
        "FAILED_PROMPT",
        "DRILL_COMPLETED",
        "OPTED_OUT",
    ):
        doc["drill_instance_id"] = instance
    doc.update(extra)
    return doc


def batch(seq: int, events: list[dict], phone: str = PHONE) -> dict:
    return {
        "batch_id": _uuid("batch", phone, seq, len(events)),
        "seq": str(seq),
        "phone_number": phone,
        "created_time": events[-1]["created_time"],
        "events": events,
    }


def instance_id(phone: str, n: int) -> str:
    return _uuid("instance", phone, n)


def user_story(phone: str, minute0: int = 0) -> list[dict]:
    """A typical user's stream: validate, do drill 1, ask for the next, start drill 2 (5 batches)."""
    i1, i2 = instance_id(phone, 1), instance_id(phone, 2)
    m = minute0
    return [
        batch(1, [event("USER_VALIDATED", m, phone)], phone),
        batch(
            2,
            [
                event("DRILL_STARTED", m + 1, phone, i1, drill_slug="01-sample-drill"),
                event("COMPLETED_PROMPT", m + 2, phone, i1),
            ],
            phone,
        ),
        batch(
            3,
            [
                event("ADVANCED_TO_NEXT_PROMPT", m + 3, phone, i1, prompt="q2"),
                event("FAILED_PROMPT", m + 4, phone, i1, prompt="q2"),
                event("DRILL_COMPLETED", m + 5, phone, i1),
            ],
            phone,
        ),
        batch(4, [event("NEXT_DRILL_REQUESTED", m + 6, phone)], phone),
        batch(
            5,
            [
                event("DRILL_STARTED", m + 7, phone, i2, drill_slug="02-sample-drill"),
                event("REMINDER_TRIGGERED", m + 8, phone),
            ],
            phone,
        ),
    ]


SNAPSHOT_QUERIES = {
    **aggregate.AGGREGATE_QUERIES,
    "command_outbox": "SELECT idempotency_key, command_type, partition_key, payload FROM command_outbox ORDER BY 1",
}


def snapshot(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {name: [tuple(r) for r in conn.exec_driver_sql(sql).all()] for name, sql in SNAPSHOT_QUERIES.items()}


def checksum(engine) -> str:
    return hashlib.sha256(repr(snapshot(engine)).encode()).hexdigest()


def rows(engine, sql: str, params: dict | None = None) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql, params or {}).all()]


def raw_records(docs: list, start: int = 1):
    """RawRecords for a list of dicts/bytes, sequence numbers start, start+1, ... (zero-padded)."""
    from drill_progress.ingest.pipeline import RawRecord

    out = []
    for n, doc in enumerate(docs, start):
        data = doc if isinstance(doc, bytes) else encode(doc)
        phone = doc.get("phone_number") if isinstance(doc, dict) else None
        out.append(RawRecord(f"{n:030d}", phone or PHONE, data))
    return out


def read_stream(kinesis, stream: str) -> list[dict]:
    return streams.read_all(kinesis, stream)


def put_docs(kinesis, stream: str, docs: list) -> None:
    for doc in docs:
        data = doc if isinstance(doc, bytes) else encode(doc)
        key = doc["phone_number"] if isinstance(doc, dict) and isinstance(doc.get("phone_number"), str) else PHONE
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)


def first_shard(kinesis, stream: str = DIALOG_STREAM) -> str:
    return kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]


def put_doc(kinesis, doc: dict, stream: str = DIALOG_STREAM) -> dict:
    """One batch on the stream, keyed by its phone number; the PutRecord answer."""
    return kinesis.put_record(StreamName=stream, Data=json.dumps(doc).encode(), PartitionKey=doc["phone_number"])


def wait_for(predicate, timeout: float = 15.0):
    """Poll `predicate` until it returns something true (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")
