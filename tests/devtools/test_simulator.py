"""The simulated Dialog Context: its traffic follows the contract (§2) and reaches the stream."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from devtools.simulator import (
    MALFORMED_KINDS,
    Record,
    Simulator,
    chunks,
    main,
    publish,
)
from drill_progress import config

ROOT = Path(__file__).resolve().parents[2]
_PACKAGED = ROOT / "include" / "drill_progress" / "schemas" / "dialog-event-batch.schema.json"
_SHARED = ROOT.parent / "shared" / "contracts" / "dialog-event-batch.schema.json"
SCHEMA_PATH = _PACKAGED if _PACKAGED.exists() else _SHARED
ALL_EVENT_TYPES = {
    "USER_VALIDATED",
    "USER_VALIDATION_FAILED",
    "DRILL_STARTED",
    "ADVANCED_TO_NEXT_PROMPT",
    "COMPLETED_PROMPT",
    "FAILED_PROMPT",
    "DRILL_COMPLETED",
    "REMINDER_TRIGGERED",
    "NEXT_DRILL_REQUESTED",
    "OPTED_OUT",
}


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def burst() -> list[Record]:
    return Simulator(users=20, seed=42).burst(4000)


def _good(records):
    return [r for r in records if r.malformed is None]


def test_every_good_record_is_valid_per_the_contract_schema(burst, validator):
    good = _good(burst)
    assert len(good) > 3900
    for rec in good:
        batch = rec.json()
        errors = list(validator.iter_errors(batch))
        assert not errors, (errors[0].message, batch)
        assert rec.partition_key == batch["phone_number"]
        assert 1 <= len(batch["events"]) <= 3
        assert all(e["phone_number"] == batch["phone_number"] for e in batch["events"])
        times = [datetime.fromisoformat(e["created_time"]) for e in batch["events"]]
        assert all(t.utcoffset() is not None for t in times)
        assert times == sorted(times)
        assert batch["created_time"] == batch["events"][-1]["created_time"]


def test_traffic_covers_every_event_type_with_catalog_drills(burst):
    counts = Counter(e["event_type"] for r in _good(burst) for e in r.json()["events"])
    assert set(counts) == ALL_EVENT_TYPES
    # realistic proportions: answering prompts dominates, opt-outs and failed validations are rare
    assert counts["COMPLETED_PROMPT"] > counts["FAILED_PROMPT"] > counts["OPTED_OUT"]
    assert counts["USER_VALIDATED"] > counts["USER_VALIDATION_FAILED"]
    started = [e for r in _good(burst) for e in r.json()["events"] if e["event_type"] == "DRILL_STARTED"]
    assert {e["drill"]["slug"] for e in started} == set(config.INITIAL_CATALOG)
    assert len({e["drill_instance_id"] for e in started}) == len(started)  # a new instance each time
    validated = [e for r in _good(burst) for e in r.json()["events"] if e["event_type"] == "USER_VALIDATED"]
    assert all(e["code_validation_payload"]["valid"] is True for e in validated)
    employers = {e["user_profile"]["account_info"]["employer_id"] for e in validated}
    assert len(employers) >= 3
    assert all(set(e["user_profile"]["account_info"]) == {"employer_id", "unit_id"} for e in validated)


def test_conversations_are_coherent_per_phone_number(burst):
    """Prompt events name the instance of the user's latest DRILL_STARTED; a drill is started only
    by a validated user; nothing follows an opt-out until the user validates again."""
    active: dict[str, str | None] = {}
    for rec in _good(burst):
        for e in rec.json()["events"]:
            phone, kind = e["phone_number"], e["event_type"]
            if kind == "DRILL_STARTED":
                assert e["user_profile"]["validated"] is True
                active[phone] = e["drill_instance_id"]
            elif kind in {"ADVANCED_TO_NEXT_PROMPT", "COMPLETED_PROMPT", "FAILED_PROMPT", "DRILL_COMPLETED"}:
                assert active.get(phone) == e["drill_instance_id"], e
                if kind == "DRILL_COMPLETED" or (kind == "FAILED_PROMPT" and e["abandoned"]):
                    active[phone] = None
            elif kind in {"USER_VALIDATED", "OPTED_OUT"}:
                if kind == "OPTED_OUT":
                    assert e["drill_instance_id"] == active.get(phone)
                    assert e["user_profile"]["opted_out"] is True
                active[phone] = None


def test_seq_is_a_strictly_increasing_decimal_string_per_phone_number(burst):
    last: dict[str, int] = {}
    for rec in _good(burst):
        batch = rec.json()
        assert batch["seq"].isdigit()
        seq = int(batch["seq"])
        assert seq > last.get(batch["phone_number"], -1)
        last[batch["phone_number"]] = seq


def test_seq_keeps_increasing_across_a_restart_and_with_a_frozen_clock():
    frozen = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    sim = Simulator(users=1, seed=1, malformed_rate=0, clock=lambda: frozen)
    per_phone = defaultdict(list)
    for rec in sim.burst(50):
        per_phone[rec.partition_key].append(int(rec.json()["seq"]))
    assert all(seqs == sorted(set(seqs)) for seqs in per_phone.values())
    first_phone = next(iter(per_phone))
    # a new simulator (a restart) for the same phone numbers, a minute later: still greater
    later = datetime(2026, 3, 2, 15, 1, tzinfo=UTC)
    restarted = Simulator(users=1, seed=2, malformed_rate=0, clock=lambda: later).next_record()
    assert restarted.partition_key == first_phone
    assert int(restarted.json()["seq"]) > max(per_phone[first_phone])


def test_malformed_fraction_and_every_malformed_record_is_bad_input(validator):
    records = Simulator(users=30, seed=7).burst(20000)
    bad = [r for r in records if r.malformed]
    assert 0.002 < len(bad) / len(records) < 0.01  # about 0.5%
    assert {r.malformed for r in bad} == set(MALFORMED_KINDS)
    for rec in bad:
        try:
            batch = json.loads(rec.data)
        except ValueError:
            assert rec.malformed == "not_json"
            continue
        assert list(validator.iter_errors(batch)), rec.malformed
    assert not any(r.malformed for r in Simulator(users=3, seed=7, malformed_rate=0).burst(2000))


def test_same_seed_same_traffic():
    frozen = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    a = Simulator(users=5, seed=11, clock=lambda: frozen).burst(100)
    b = Simulator(users=5, seed=11, clock=lambda: frozen).burst(100)
    assert a == b


def test_chunks_hold_one_record_per_phone_and_at_most_500():
    records = Simulator(users=600, seed=3).burst(2000)
    out = chunks(records)
    assert [r for c in out for r in c] == records  # order kept
    for chunk in out:
        assert len(chunk) <= 500
        keys = [r.partition_key for r in chunk]
        assert len(keys) == len(set(keys))


class _FlakyKinesis:
    """Fails the first attempt of every other record, like a throttled shard; keeps what got in."""

    def __init__(self):
        self.calls = 0
        self.refused: set[bytes] = set()
        self.delivered: list[bytes] = []

    def put_records(self, StreamName, Records):  # boto3 signature
        self.calls += 1
        results = []
        for i, rec in enumerate(Records):
            if i % 2 and rec["Data"] not in self.refused:
                self.refused.add(rec["Data"])
                results.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"})
            else:
                self.delivered.append(rec["Data"])
                results.append({"SequenceNumber": str(len(self.delivered)), "ShardId": "shardId-000000000000"})
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}


def test_publish_retries_failed_records_and_keeps_each_phone_in_order(monkeypatch):
    monkeypatch.setattr("devtools.simulator.time.sleep", lambda _s: None)
    records = Simulator(users=3, seed=5, malformed_rate=0).burst(30)
    fake = _FlakyKinesis()
    stats = publish(fake, "s", records)
    assert stats.records == 30 and stats.failed == 0
    assert fake.refused and stats.calls > len(chunks(records))  # there were retries
    assert sorted(fake.delivered) == sorted(r.data for r in records)  # each exactly once
    per_phone = defaultdict(list)
    for data in fake.delivered:
        batch = json.loads(data)
        per_phone[batch["phone_number"]].append(int(batch["seq"]))
    assert all(seqs == sorted(seqs) for seqs in per_phone.values())


def _read_stream(kinesis, stream: str) -> list[dict]:
    out = []
    for shard in kinesis.describe_stream(StreamName=stream)["StreamDescription"]["Shards"]:
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        while it:
            resp = kinesis.get_records(ShardIterator=it, Limit=1000)
            out += [{"data": r["Data"], "key": r["PartitionKey"], "shard": shard["ShardId"]} for r in resp["Records"]]
            if not resp["Records"]:
                break
            it = resp["NextShardIterator"]
    return out


def test_one_burst_is_published_to_the_stream_in_order(aws, validator):
    aws.kinesis.create_stream(StreamName="sim-events", ShardCount=2)
    aws.kinesis.get_waiter("stream_exists").wait(StreamName="sim-events", WaiterConfig={"Delay": 0.2})
    rc = main(
        [
            "--endpoint-url",
            aws.endpoint_url,
            "--stream",
            "sim-events",
            "--batches",
            "120",
            "--users",
            "8",
            "--seed",
            "9",
            "--malformed-rate",
            "0",
        ]
    )
    assert rc == 0
    records = _read_stream(aws.kinesis, "sim-events")
    assert len(records) == 120
    per_phone: dict[str, list[int]] = defaultdict(list)
    shard_of: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        batch = json.loads(rec["data"])
        assert not list(validator.iter_errors(batch))
        assert rec["key"] == batch["phone_number"]
        per_phone[rec["key"]].append(int(batch["seq"]))
        shard_of[rec["key"]].add(rec["shard"])
    assert all(len(shards) == 1 for shards in shard_of.values())  # partition key = phone number
    assert all(seqs == sorted(seqs) and len(set(seqs)) == len(seqs) for seqs in per_phone.values())


def test_a_missing_stream_is_reported_clearly(aws):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--endpoint-url", aws.endpoint_url, "--stream", "nope", "--batches", "1"])
