"""Good input is never refused: batches shaped like the real producer's (tests/ingest/data/
real-producer), with generated contents and sizes (Hypothesis), are all accepted at the edge and
applied by PostgreSQL. The other side of "any bytes are handled"."""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import EXAMPLES, rows

from drill_progress.ingest import events as ev
from drill_progress.ingest import pipeline
from drill_progress.ingest.pipeline import RawRecord

REAL = EXAMPLES / "real-producer"
NAMES = sorted(p.stem for p in REAL.glob("*.json"))

# text the producer may write anywhere: any Unicode scalar value but U+0000 in what is stored
# (slugs, profile) and lone surrogates (not valid JSON text)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
STORED_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=60)
SLUG = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=200)
MESSAGE = st.fixed_dictionaries({"media_url": st.none() | TEXT, "text": TEXT})
PROMPT = st.fixed_dictionaries(
    {
        "response_user_profile_key": st.none() | STORED_TEXT,
        "slug": SLUG,
        "messages": st.lists(MESSAGE, max_size=4),
        "correct_response": st.none() | TEXT,
    }
)
RATING = st.none() | st.integers(-(2**63) + 1, 2**63 - 1) | STORED_TEXT
TIMES = st.datetimes(datetime(1990, 1, 1), datetime(2100, 1, 1)).map(lambda t: t.replace(tzinfo=UTC))
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timedelta(minutes=m))


def _stamp(moment: datetime, offset: timedelta) -> str:
    from datetime import timezone

    return moment.astimezone(timezone(offset)).isoformat()  # microseconds when there are any


@st.composite
def real_shaped(draw, phone: str) -> dict:
    doc = json.loads((REAL / f"{draw(st.sampled_from(NAMES))}.json").read_bytes())
    doc["phone_number"] = phone
    doc["seq"] = draw(st.from_regex(r"[0-9]{1,129}", fullmatch=True))
    moment, offset = draw(TIMES), draw(OFFSETS)
    doc["created_time"] = _stamp(moment, offset)
    # ids unique to each generated user (the examples' own ids would collide between users)
    doc["batch_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"batch/{phone}"))
    instance = str(uuid.uuid5(uuid.NAMESPACE_URL, f"instance/{phone}"))
    for n, event in enumerate(doc["events"]):
        event["phone_number"] = phone
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"event/{phone}/{n}"))
        event["event_id"] = event_id.upper() if draw(st.booleans()) else event_id
        if event.get("drill_instance_id") is not None:
            event["drill_instance_id"] = instance
        event["created_time"] = _stamp(moment, draw(OFFSETS))
        profile = event["user_profile"]
        for k in range(1, 8):
            profile[f"self_rating_{k}"] = draw(RATING)
        profile["name"] = draw(st.none() | STORED_TEXT)
        profile["language"] = draw(st.none() | st.sampled_from(["en", "es", "fr"]))
        if profile.get("account_info"):
            profile["account_info"]["employer_name"] = draw(STORED_TEXT)
            profile["account_info"]["unit_name"] = draw(STORED_TEXT)
        if "drill" in event:
            prompts = draw(st.lists(PROMPT, min_size=1, max_size=12))
            event["drill"]["prompts"] = prompts
            event["drill"]["name"] = draw(TEXT)
            event["first_prompt"] = copy.deepcopy(prompts[0])
        if "prompt" in event:
            event["prompt"] = draw(PROMPT)
        if "response" in event:
            event["response"] = draw(TEXT)
    return doc


_phones = itertools.count(1)
_positions = itertools.count(1)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_real_shaped_batch_is_accepted_and_applied(drill_db, data):
    phone = f"+1666{next(_phones):07d}"
    doc = data.draw(real_shaped(phone))
    raw = json.dumps(doc, ensure_ascii=data.draw(st.booleans())).encode()
    batch = ev.parse_record(raw)  # never a BadRecord
    assert batch.seq == int(doc["seq"])
    stats = pipeline.apply_micro_batch(
        drill_db.engine, "dialog-events", "shardId-000000000000", [RawRecord(str(next(_positions)), phone, raw)]
    )
    assert (stats.batches_applied, stats.records_rejected) == (1, 0)
    stored = rows(
        drill_db.engine,
        "SELECT u.seq::text, u.profile FROM users u JOIN phone_numbers p USING (user_id) WHERE p.phone_number = %(p)s",
        {"p": phone},
    )
    assert stored == [(str(int(doc["seq"])), doc["events"][-1]["user_profile"])]


def test_a_real_shaped_batch_just_under_the_kinesis_record_limit_is_applied(drill_db):
    """The producer's largest: a DRILL_STARTED whose drill has many prompts with long messages,
    1 MiB (the Kinesis record limit) less a few bytes."""
    doc = json.loads((REAL / "drill_started.json").read_bytes())
    prompts = doc["events"][0]["drill"]["prompts"]
    template = prompts[0]
    while len(json.dumps(doc).encode()) < ev.MAX_RECORD_BYTES - 20_000:
        prompt = copy.deepcopy(template)
        prompt["slug"] = f"{len(prompts) + 1} - "
        prompt["messages"] = [{"media_url": None, "text": "é" * 4000}, {"media_url": "https://x/y.png", "text": "z"}]
        prompts.append(prompt)
    raw = json.dumps(doc, ensure_ascii=False).encode()
    raw = raw[:-1] + b" " * (ev.MAX_RECORD_BYTES - len(raw)) + b"}"  # padding whitespace: still one JSON object
    assert len(raw) == ev.MAX_RECORD_BYTES
    stats = pipeline.apply_micro_batch(
        drill_db.engine, "dialog-events", "shardId-000000000000", [RawRecord("1", doc["phone_number"], raw)]
    )
    assert (stats.batches_applied, stats.records_rejected) == (1, 0)
    assert rows(drill_db.engine, "SELECT current_prompt_slug FROM drill_instances") == [("1 - ",)]
