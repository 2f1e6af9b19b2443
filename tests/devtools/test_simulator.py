"""The simulated Dialog Context: its traffic follows the contract (§2) and reaches the stream."""

from __future__ import annotations

import itertools
import json
import re
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


REAL_PRODUCER = ROOT / "tests" / "ingest" / "data" / "real-producer"
ACCOUNT_INFO_KEYS = ["employer_id", "employer_name", "unit_id", "unit_name"]
REAL_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00\Z")


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
        assert datetime.fromisoformat(batch["created_time"]) >= times[-1]


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
    assert all(list(e["user_profile"]["account_info"]) == ACCOUNT_INFO_KEYS for e in validated)


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


def test_seq_is_a_56_digit_kinesis_sequence_number_increasing_over_the_stream(burst):
    """Like the real producer's: 56 digits, the examples' 31-digit shard prefix, and (like one
    shard's sequence numbers) strictly increasing over the whole stream, not only per phone."""
    real = [json.loads(p.read_text())["seq"] for p in sorted(REAL_PRODUCER.glob("*.json"))]
    seqs = [rec.json()["seq"] for rec in _good(burst)]
    assert {len(s) for s in seqs} == {len(s) for s in real} == {56}
    assert {s[:31] for s in seqs} == {s[:31] for s in real}
    as_ints = [int(s) for s in seqs]
    assert all(a < b for a, b in itertools.pairwise(as_ints))
    assert max(as_ints) >= 2**128  # far beyond 64 bits, beyond a float's exact range too


def _skeleton(value):
    """Key order, recursively, with scalars reduced to "scalar"; account_info (its keys depend on
    whether the user is validated) is checked apart."""
    if isinstance(value, dict):
        return tuple((k, "account_info" if k == "account_info" else _skeleton(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(sorted({_skeleton(v) for v in value}, key=repr))
    return "scalar"


def _real_events() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(REAL_PRODUCER.glob("*.json")):
        for e in json.loads(path.read_text())["events"]:
            out[e["event_type"]].append(e)
    return out


def test_batches_are_shaped_like_the_real_producers(burst):
    """Every event has the keys of the real producer's event of its type, in the same order, down to
    the prompts' messages and the profile's self ratings; timestamps have microseconds and +00:00."""
    real = _real_events()
    assert set(real) == ALL_EVENT_TYPES
    real_shapes = {kind: {_skeleton(e) for e in events} for kind, events in real.items()}
    batch_keys = list(json.loads((REAL_PRODUCER / "drill_started.json").read_text()))
    seen = set()
    for rec in _good(burst):
        batch = rec.json()
        assert list(batch) == batch_keys
        assert REAL_TIMESTAMP.match(batch["created_time"]), batch["created_time"]
        for e in batch["events"]:
            kind = e["event_type"]
            assert _skeleton(e) in real_shapes[kind], (kind, list(e))
            assert REAL_TIMESTAMP.match(e["created_time"]), e["created_time"]
            prof = e["user_profile"]
            assert prof["name"] is None and prof["language"] is None
            assert list(prof["account_info"]) == (ACCOUNT_INFO_KEYS if prof["validated"] else [])
            seen.add(kind)
    assert seen == ALL_EVENT_TYPES


def test_drills_and_prompts_are_the_real_catalogs_shape(burst):
    """Full drill objects: six prompts with slugs "1 - ", "2 -" ... "6 -", two messages each with
    media_url null, a correct response except on the closing prompt; a correct answer quotes the
    correct response's letter."""
    started = [e for r in _good(burst) for e in r.json()["events"] if e["event_type"] == "DRILL_STARTED"]
    real = _real_events()["DRILL_STARTED"][0]["drill"]
    for e in started:
        prompts = e["drill"]["prompts"]
        assert (
            [p["slug"] for p in prompts]
            == [p["slug"] for p in real["prompts"]]
            == ["1 - "] + [f"{i} -" for i in range(2, 7)]
        )
        assert e["first_prompt"] == prompts[0]
        assert all(m["media_url"] is None for p in prompts for m in p["messages"])
        assert [p["correct_response"] is None for p in prompts] == [False] * 5 + [True]
        assert e["drill"]["name"] == f"Sample Drill {config.INITIAL_CATALOG.index(e['drill']['slug']) + 1}"
    answers = [e for r in _good(burst) for e in r.json()["events"] if e["event_type"] == "COMPLETED_PROMPT"]
    assert answers and all(e["response"] == e["prompt"]["correct_response"][:2] for e in answers)
    closing = [e for r in _good(burst) for e in r.json()["events"] if e["event_type"] == "ADVANCED_TO_NEXT_PROMPT"]
    assert any(e["prompt"]["slug"] == "6 -" for e in closing)


def test_opt_outs_inside_and_outside_a_drill(burst):
    """STOP inside a drill names its instance; STOP outside any drill (here: before validating,
    like the real example) carries "drill_instance_id": null."""
    opt_outs = [e for r in _good(burst) for e in r.json()["events"] if e["event_type"] == "OPTED_OUT"]
    assert all("drill_instance_id" in e for e in opt_outs)
    outside = [e for e in opt_outs if e["drill_instance_id"] is None]
    inside = [e for e in opt_outs if e["drill_instance_id"] is not None]
    assert outside and inside
    assert any(not e["user_profile"]["validated"] and e["user_profile"]["account_info"] == {} for e in outside)


def test_every_good_record_passes_the_ingestion_edge(burst):
    from drill_progress.ingest import events as ev

    for rec in _good(burst):
        batch = ev.parse_record(rec.data)
        assert batch.seq == int(rec.json()["seq"])


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
