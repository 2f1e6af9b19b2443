"""Parsing and validation at the edge (contract §2): no database, no Airflow."""

from __future__ import annotations

import copy
import json
import random
from datetime import datetime

import pytest
from ingest_support import (
    EXAMPLES,
    INVALID_EXAMPLES,
    LOCAL_EXAMPLES,
    SHARED_EXAMPLES,
    VALID_EXAMPLES,
    example,
    example_bytes,
)

from drill_progress.ingest import events as ev


def test_schema_copy_is_the_contracts():
    shared = SHARED_EXAMPLES.parent / "dialog-event-batch.schema.json"
    if not shared.exists():
        pytest.skip("shared/ not present")
    assert json.loads(ev.SCHEMA_PATH.read_text()) == json.loads(shared.read_text())


def test_local_example_copies_match_shared():
    if not SHARED_EXAMPLES.is_dir():
        pytest.skip("shared/ not present")
    for path in SHARED_EXAMPLES.iterdir():
        assert (LOCAL_EXAMPLES / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize("name", VALID_EXAMPLES)
def test_valid_examples_parse(name):
    batch = ev.parse_record(example_bytes(name))
    doc = example(name)
    assert batch.seq == int(doc["seq"]) and batch.phone_number == doc["phone_number"]
    assert [e.event_type for e in batch.events] == [e["event_type"] for e in doc["events"]]
    assert [datetime.fromisoformat(e.created_time) for e in batch.events] == [
        datetime.fromisoformat(e["created_time"].upper()) for e in doc["events"]]
    assert not list(ev.schema_validator().iter_errors(doc))


@pytest.mark.parametrize(("text", "kept"), [
    ("2026-03-02T08:00:00Z", "2026-03-02T08:00:00Z"),
    ("2026-03-02t08:00:00.5z", "2026-03-02T08:00:00.5Z"),
    ("2026-03-02T08:00:00.123456+05:30", "2026-03-02T08:00:00.123456+05:30"),
    ("2026-03-02T08:00:00.123456789Z", "2026-03-02T08:00:00.123456Z"),  # truncated, as datetime does
    ("2026-03-02T08:00:00.1234567-01:00", "2026-03-02T08:00:00.123456-01:00"),
])
def test_times_are_kept_as_validated_text(text, kept):
    assert ev._timestamp(text, "", "created_time") == kept
    assert datetime.fromisoformat(kept) == datetime.fromisoformat(text.upper())


@pytest.mark.parametrize("text", ["2026-03-02T08:00:00Z\n", "2026-02-30T08:00:00Z", "2026-03-02T08:00:00",
                                  "2026-03-02 08:00:00Z", "2026-03-02T24:00:00Z", "2026-03-02T08:00:60Z"])
def test_times_that_are_not_rfc_3339_are_refused(text):
    with pytest.raises(ev.BadRecord, match="created_time"):
        ev._timestamp(text, "", "created_time")


@pytest.mark.parametrize(("name", "needle"), [
    ("bad_missing_instance_id", "drill_instance_id"),
    ("bad_not_json", "not valid JSON"),
    ("bad_seq_not_a_number", "seq"),
    ("bad_unknown_event_type", "event_type"),
])
def test_invalid_examples_rejected_with_reason(name, needle):
    with pytest.raises(ev.BadRecord) as info:
        ev.parse_record(example_bytes(name))
    assert needle in str(info.value)
    assert "5551230001" not in str(info.value)


def test_every_invalid_example_is_covered():
    names = {p.stem for p in EXAMPLES.iterdir() if p.stem.startswith("bad_")}
    assert names == set(INVALID_EXAMPLES)


@pytest.mark.parametrize(("data", "needle"), [
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"a": NaN}', "JSON"),
    (b"[1, 2]", "object"),
    ('{"x": 1}'.encode("utf-16"), "UTF-8"),
    (b"", "JSON"),
    (b'{"a": 1e400}', "JSON"),
    (b'{"a": 1} trailing', "JSON"),
])
def test_edge_rejections(data, needle):
    with pytest.raises(ev.BadRecord, match=needle):
        ev.parse_record(data)


def test_unknown_extra_fields_are_ignored():
    doc = example("drill_started")
    doc["something_new"] = {"x": 1}
    doc["events"][0]["another"] = [1, 2]
    doc["events"][0]["drill"]["extra"] = True
    batch = ev.parse_record(json.dumps(doc).encode())
    assert batch.events[0].drill_slug == "01-sample-drill"
    assert batch.events[0].prompt_slug == "q1"


def test_opted_out_without_instance_field():
    doc = example("opted_out")
    del doc["events"][0]["drill_instance_id"]
    assert ev.parse_record(json.dumps(doc).encode()).events[0].drill_instance_id is None


# ---- differential check against the reference validator (jsonschema, formats checked) ----

_WEIRD = [None, True, False, 0, 1, 1.0, 1.5, -3, "", "x", "abc", "12", "+1", [], [1], {}, {"slug": ""},
          {"slug": "q"}, {"valid": True}, "2026-03-02T15:00:00+00:00", "2026-02-30T15:00:00Z",
          "2026-03-02 15:00:00+00:00", "2026-03-02T15:00:00", "2026-03-02t15:00:00z",
          "0000-01-01T00:00:00Z", "2026-03-02T24:00:00Z", "2026-03-02T15:00:00.123456789-07:00",
          "6b090220-cb8c-4d3d-b49b-dc50e37b49ff", "6B090220-CB8C-4D3D-B49B-DC50E37B49FF",
          "6b090220cb8c4d3db49bdc50e37b49ff", "{6b090220-cb8c-4d3d-b49b-dc50e37b49ff}",
          "6b090220-cb8c-4d3d-b49b-dc50e37b49fg", "1" * 30, "1" * 31, "007", "x" * 201, "+1555", "+" * 33,
          "USER_VALIDATED", "DRILL_STARTED", "OPTED_OUT", "FAILED_PROMPT", "COMPLETED_PROMPT",
          "ADVANCED_TO_NEXT_PROMPT", "DRILL_COMPLETED", "NEXT_DRILL_REQUESTED", "drill_started"]
_DELETE = object()


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _mutate(doc, path, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value if value is not _DELETE else {}
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return doc


def _mutants(rng: random.Random, count: int):
    bases = [example(n) for n in VALID_EXAMPLES if n != "bad_not_json"]
    bases += [example(n) for n in INVALID_EXAMPLES if n != "bad_not_json"]
    for _ in range(count):
        doc = rng.choice(bases)
        for _ in range(rng.choice([1, 1, 2, 3])):
            paths = list(_paths(doc))
            path = rng.choice(paths)
            doc = _mutate(doc, path, rng.choice([*_WEIRD, _DELETE, _DELETE]))
        yield doc


def test_fast_validator_agrees_with_jsonschema():
    reference = ev.schema_validator()
    rng = random.Random(20260302)
    disagreements = []
    accepted = rejected = 0
    for doc in _mutants(rng, 6000):
        schema_ok = reference.is_valid(doc)
        try:
            ev.validate(doc)
            ours_ok = True
        except ev.BadRecord:
            ours_ok = False
        if schema_ok != ours_ok:
            disagreements.append((schema_ok, ours_ok, doc))
        accepted += ours_ok
        rejected += not ours_ok
    assert not disagreements, disagreements[:3]
    assert accepted > 300 and rejected > 300


def test_uuids_are_canonicalised():
    doc = example("drill_completed")
    doc["events"][0]["drill_instance_id"] = doc["events"][0]["drill_instance_id"].upper()
    assert ev.parse_record(json.dumps(doc).encode()).events[0].drill_instance_id == (
        "12174c1f-8d4a-4982-ad38-8a4ea5e13050")
