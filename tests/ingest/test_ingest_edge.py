"""The edge (contract §2): any bytes become a Batch or a BadRecord with a reason; what it accepts the
JSON Schema accepts, and PostgreSQL stores. Examples, thousands of mutations, and generated input
(Hypothesis, tests/ingest/hostile.py)."""

from __future__ import annotations

import copy
import json
import random
from datetime import datetime

import hostile
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import (
    EXAMPLES,
    INVALID_EXAMPLES,
    VALID_EXAMPLES,
    example,
    example_bytes,
)

from drill_progress.ingest import events as ev


@pytest.mark.parametrize("name", VALID_EXAMPLES)
def test_valid_examples_parse(name):
    batch = ev.parse_record(example_bytes(name))
    doc = example(name)
    assert batch.seq == int(doc["seq"]) and batch.phone_number == doc["phone_number"]
    assert [e.event_type for e in batch.events] == [e["event_type"] for e in doc["events"]]
    assert [datetime.fromisoformat(e.created_time) for e in batch.events] == [
        datetime.fromisoformat(e["created_time"].upper()) for e in doc["events"]
    ]
    assert not list(ev.schema_validator().iter_errors(doc))


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("2026-03-02T08:00:00Z", "2026-03-02T08:00:00Z"),
        ("2026-03-02t08:00:00.5z", "2026-03-02T08:00:00.5Z"),
        ("2026-03-02T08:00:00.123456+05:30", "2026-03-02T08:00:00.123456+05:30"),
        ("2026-03-02T08:00:00.123456789Z", "2026-03-02T08:00:00.123456Z"),  # truncated, as datetime does
        ("2026-03-02T08:00:00.1234567-01:00", "2026-03-02T08:00:00.123456-01:00"),
    ],
)
def test_times_are_kept_as_validated_text(text, kept):
    assert ev._timestamp(text, "created_time") == kept
    assert datetime.fromisoformat(kept) == datetime.fromisoformat(text.upper())


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-02T08:00:00Z\n",
        "2026-02-30T08:00:00Z",
        "2026-03-02T08:00:00",
        "2026-03-02 08:00:00Z",
        "2026-03-02T24:00:00Z",
        "2026-03-02T08:00:60Z",
        "2026-03-00T08:00:00Z",
        "2026-03-02T08:00:00+24:00",
    ],
)
def test_times_that_are_not_rfc_3339_are_refused(text):
    with pytest.raises(ev.BadRecord, match="created_time"):
        ev._timestamp(text, "created_time")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("1899-12-31T23:59:59+00:00", False),
        ("1900-01-01T00:00:00+23:59", True),
        ("0001-01-01T00:00:00Z", False),
        ("9998-12-31T23:59:59-23:59", True),
        ("9999-12-31T23:59:59-10:00", False),
        ("2028-02-29T00:00:00Z", True),
        ("2027-02-29T00:00:00Z", False),
    ],
)
def test_years_outside_1900_to_9998_are_refused(text, ok):
    """Python's datetime and PostgreSQL then agree on every accepted instant (year 10000 in UTC or
    1 BC would make psycopg fail to read the row back)."""
    if ok:
        assert datetime.fromisoformat(ev._timestamp(text, "created_time"))
    else:
        with pytest.raises(ev.BadRecord, match="created_time: (year must be from 1900 to 9998|not a valid)"):
            ev._timestamp(text, "created_time")


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("bad_missing_instance_id", "drill_instance_id"),
        ("bad_not_json", "not valid JSON"),
        ("bad_seq_not_a_number", "seq"),
        ("bad_unknown_event_type", "event_type"),
    ],
)
def test_invalid_examples_rejected_with_reason(name, needle):
    with pytest.raises(ev.BadRecord) as info:
        ev.parse_record(example_bytes(name))
    assert needle in str(info.value)
    assert "5551230001" not in str(info.value)


def test_every_invalid_example_is_covered():
    names = {p.stem for p in EXAMPLES.iterdir() if p.stem.startswith("bad_")}
    assert names == set(INVALID_EXAMPLES)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"[" * 5000, r"not valid JSON \(nested too deeply\)"),
        (b'{"a":' * 3000, r"not valid JSON \(nested too deeply\)"),
        (b'"' + b"x" * (2**20 - 1) + b'"', r"record of 1048577 bytes is larger than 1048576 bytes"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"a": NaN}', "JSON"),
        (b"[1, 2]", "object"),
        ('{"x": 1}'.encode("utf-16"), "UTF-8"),
        (b"", "JSON"),
        (b'{"a": 1e400}', "JSON"),
        (b'{"a": 1} trailing', "JSON"),
    ],
)
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

_WEIRD = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    1.5,
    -3,
    "",
    "x",
    "abc",
    "12",
    "+1",
    [],
    [1],
    {},
    {"slug": ""},
    {"slug": "q"},
    {"valid": True},
    "2026-03-02T15:00:00+00:00",
    "2026-02-30T15:00:00Z",
    "2026-03-02 15:00:00+00:00",
    "2026-03-02T15:00:00",
    "2026-03-02t15:00:00z",
    "0000-01-01T00:00:00Z",
    "2026-03-02T24:00:00Z",
    "2026-03-02T15:00:00.123456789-07:00",
    "6b090220-cb8c-4d3d-b49b-dc50e37b49ff",
    "6B090220-CB8C-4D3D-B49B-DC50E37B49FF",
    "6b090220cb8c4d3db49bdc50e37b49ff",
    "{6b090220-cb8c-4d3d-b49b-dc50e37b49ff}",
    "6b090220-cb8c-4d3d-b49b-dc50e37b49fg",
    "1" * 30,
    "1" * 31,
    "007",
    "x" * 201,
    "+1555",
    "+" * 33,
    "USER_VALIDATED",
    "DRILL_STARTED",
    "OPTED_OUT",
    "FAILED_PROMPT",
    "COMPLETED_PROMPT",
    "ADVANCED_TO_NEXT_PROMPT",
    "DRILL_COMPLETED",
    "NEXT_DRILL_REQUESTED",
    "drill_started",
]
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


def _edge_accepts(doc) -> bool:
    try:
        ev.parse_record(json.dumps(doc).encode())
    except ev.BadRecord:
        return False
    return True


# Where the edge is stricter than the schema, on purpose (docs/edge.md): years before 1900
_OUTSIDE_EDGE_LIMITS = ("0000-01-01T00:00:00Z",)


def test_the_edge_agrees_with_the_schema_on_thousands_of_mutations():
    reference = ev.schema_validator()
    rng = random.Random(20260302)
    disagreements = []
    accepted = rejected = 0
    for doc in _mutants(rng, 6000):
        schema_ok = reference.is_valid(doc)
        ours_ok = _edge_accepts(doc)
        if schema_ok != ours_ok and not any(limit in json.dumps(doc) for limit in _OUTSIDE_EDGE_LIMITS):
            disagreements.append((schema_ok, ours_ok, doc))
        accepted += ours_ok
        rejected += not ours_ok
    assert not disagreements, disagreements[:3]
    assert accepted > 300 and rejected > 300


def test_uuids_are_canonicalised():
    doc = example("drill_completed")
    doc["events"][0]["drill_instance_id"] = doc["events"][0]["drill_instance_id"].upper()
    assert ev.parse_record(json.dumps(doc).encode()).events[0].drill_instance_id == (
        "12174c1f-8d4a-4982-ad38-8a4ea5e13050"
    )


def _with(name: str, edit) -> bytes:
    doc = example(name)
    edit(doc)
    return json.dumps(doc).encode()


def _profile(doc):
    return doc["events"][0]["user_profile"]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d.__setitem__("phone_number", "+1555\u00001234"), "phone_number: contains U+0000"),
        (lambda d: d["events"][0]["drill"].__setitem__("slug", "drill\u0000"), "events[0].drill.slug: contains U+0000"),
        (
            lambda d: d["events"][0]["first_prompt"].__setitem__("slug", "\u0000"),
            "events[0].first_prompt.slug: contains U+0000",
        ),
        (lambda d: _profile(d).__setitem__("name", "A\u0000"), "events[0].user_profile: contains U+0000"),
        (lambda d: _profile(d).__setitem__("x\u0000", 1), "events[0].user_profile: a key contains U+0000"),
        (lambda d: _profile(d).__setitem__("extra", {"deep": [["\u0000"]]}), "events[0].user_profile: contains U+0000"),
        (
            lambda d: _profile(d).__setitem__("extra", hostile.nested(40)),
            "events[0].user_profile: nested deeper than 32 levels",
        ),
        (
            lambda d: _profile(d).__setitem__("extra", [2**63]),
            "events[0].user_profile: integer out of the 64-bit range",
        ),
        (
            lambda d: _profile(d).__setitem__("extra", -(2**63)),
            "events[0].user_profile: integer out of the 64-bit range",
        ),
        (
            lambda d: _profile(d)["account_info"].__setitem__("employer_id", "e" * 257),
            "events[0].user_profile.account_info.employer_id: longer than 256 characters as text",
        ),
        (
            lambda d: _profile(d)["account_info"].__setitem__("unit_id", list(range(100))),
            "events[0].user_profile.account_info.unit_id: longer than 256 characters as text",
        ),
        (
            lambda d: d["events"][0].__setitem__("created_time", "0001-01-01T00:00:00+01:00"),
            "events[0].created_time: year must be from 1900 to 9998",
        ),
        (
            lambda d: d.__setitem__("created_time", "9999-12-31T23:59:59-10:00"),
            "created_time: year must be from 1900 to 9998",
        ),
        (
            lambda d: d["events"][0].__setitem__("event_type", "+15551230001 says hi"),
            "events[0].event_type: unknown event type",
        ),
        (lambda d: d["events"][0].__setitem__("schema_version", 1.5), "events[0].schema_version: must be an integer"),
        (
            lambda d: d.__setitem__("batch_id", "12345678-1234-1234-1234-1234-5678abcd"),
            "batch_id: Expected a UUID (8-4-4-4-12 hexadecimal digits)",
        ),
    ],
)
def test_what_postgresql_or_python_would_refuse_is_refused_at_the_edge(edit, reason):
    """Each of these reached the database before (and a NUL in a slug or a phone number stopped
    the shard): now each is a bad record with a reason that names the field, never the value."""
    with pytest.raises(ev.BadRecord) as info:
        ev.parse_record(_with("drill_started", edit))
    assert str(info.value) == reason


@pytest.mark.parametrize("name", ["advanced_to_next_prompt", "completed_prompt", "failed_prompt"])
def test_a_nul_in_prompt_slug_is_refused_with_its_own_reason(name):
    """prompt.slug (ADVANCED_TO_NEXT_PROMPT, COMPLETED_PROMPT, FAILED_PROMPT) is stored as the
    instance's current prompt: a NUL there is refused at the edge, naming that field."""
    with pytest.raises(ev.BadRecord) as info:
        ev.parse_record(_with(name, lambda d: d["events"][0]["prompt"].__setitem__("slug", "q\u00002")))
    assert str(info.value) == "events[0].prompt.slug: contains U+0000"


SEQ_REASON = "seq: Expected a string of 1 to 129 decimal digits"


@pytest.mark.parametrize(
    ("seq", "kept"),
    [
        ("0", 0),
        ("7", 7),
        (
            "49606593837744405372328183282036468425276344895955287863",
            49606593837744405372328183282036468425276344895955287863,
        ),
        ("9" * 129, 10**129 - 1),
        ("0" * 128 + "5", 5),  # leading zeros: the original compares int(seq)
        ("1" + "0" * 128, 10**128),
    ],
)
def test_seq_of_1_to_129_digits_is_kept_as_an_exact_integer(seq, kept):
    batch = ev.parse_record(_with("user_validated", lambda d: d.__setitem__("seq", seq)))
    assert batch.seq == kept
    assert type(batch.seq) is int


@pytest.mark.parametrize(
    "seq",
    ["", "1" * 130, "9" * 200, "12\n", "\n12", " 12", "12 ", "-1", "+1", "1_000", "1e5", "1.0", "\u0661\u0662", "0x1f"],
)
def test_seq_outside_1_to_129_decimal_digits_is_refused(seq):
    with pytest.raises(ev.BadRecord) as info:
        ev.parse_record(_with("user_validated", lambda d: d.__setitem__("seq", seq)))
    assert str(info.value) == SEQ_REASON


def test_seq_that_is_not_a_string_is_refused():
    with pytest.raises(ev.BadRecord) as info:
        ev.parse_record(_with("user_validated", lambda d: d.__setitem__("seq", 12)))
    assert str(info.value) == "seq: Expected `str`, got `int`"


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: _profile(d).__setitem__("extra", hostile.nested(30)),
        lambda d: _profile(d).__setitem__("extra", [2**63 - 1, -(2**63 - 1), 1e308, -0.0]),
        lambda d: _profile(d)["account_info"].__setitem__("employer_id", "e" * 256),
        lambda d: _profile(d)["account_info"].__setitem__("unit_id", [1, {"a": None}]),
        lambda d: _profile(d).__setitem__("name", "\u202e\U0001f600\x7f\x1f\ufffe"),
        lambda d: d["events"][0].__setitem__("schema_version", 1.0),
        lambda d: d["events"][0].__setitem__("response", "\u0000 is fine where nothing stores it"),
    ],
)
def test_accepted_edges(edit):
    batch = ev.parse_record(_with("drill_started", edit))
    assert batch.events[0].drill_slug == "01-sample-drill"


def _only_bad_records(data: bytes):
    """parse_record's whole contract: a Batch, or BadRecord with a storable, bounded reason."""
    try:
        return ev.parse_record(data)
    except ev.BadRecord as bad:
        reason = str(bad)
        assert reason and len(reason) <= ev.MAX_REASON_LENGTH + 100
        reason.encode("utf-8")  # no lone surrogate
        assert "\x00" not in reason
        return None


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_batch_or_a_bad_record(data):
    _only_bad_records(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile.records())
def test_hostile_records_give_a_batch_or_a_bad_record(data):
    _only_bad_records(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile.batch_docs(), st.booleans())
def test_what_the_edge_accepts_the_schema_accepts(doc, ascii_only):
    """Soundness on generated batch-shaped JSON: the edge never accepts what the schema refuses."""
    data = hostile.encode(doc, ascii_only)
    batch = _only_bad_records(data)
    if batch is not None:
        assert ev.schema_validator().is_valid(json.loads(data)), doc


def test_a_profile_equal_to_the_last_one_is_still_checked_for_its_types():
    """The storability check is skipped for a profile equal to the last one found storable; Python's
    == equates 1 and true, so the types of the known keys are checked every time."""
    ev.parse_record(example_bytes("drill_started"))  # remembers its profile
    with pytest.raises(ev.BadRecord, match=r"events\[0\].user_profile.validated: Expected `bool`, got `int`"):
        ev.parse_record(_with("drill_started", lambda d: _profile(d).__setitem__("validated", 1)))
    deep = _with("drill_started", lambda d: _profile(d).__setitem__("extra", hostile.nested(40)))
    with pytest.raises(ev.BadRecord, match="nested deeper"):
        ev.parse_record(deep)
    with pytest.raises(ev.BadRecord, match="nested deeper"):  # not remembered: refused again
        ev.parse_record(deep)


_TWO_THREADS = """
import sys, threading
sys.setswitchinterval(1e-6)
from drill_progress.ingest import events as ev
data = open(sys.argv[1], "rb").read()
barrier = threading.Barrier(8)
def parse():
    barrier.wait()
    for _ in range(20):
        ev.parse_record(data)
threads = [threading.Thread(target=parse) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def test_parsing_on_several_threads_right_after_import_is_safe():
    """msgspec describes a type on its first use, unsafely if threads race for it (a segfault seen
    with two shard consumers in one process): the edge describes its types at import."""
    import subprocess
    import sys

    from ingest_support import EXAMPLES

    for _ in range(30):  # without the fix, about 1 run in 7 crashed
        done = subprocess.run(
            [sys.executable, "-c", _TWO_THREADS, str(EXAMPLES / "multi_event_batch.json")],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (done.returncode, done.stderr[-500:])
