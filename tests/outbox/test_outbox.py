"""Outbox and command publishing against real PostgreSQL and the moto server."""

from __future__ import annotations

import json

import pytest

from devtools.streams import read_all as _read_all
from drill_progress import outbox
from drill_progress.outbox import commands
from drill_progress.privacy import mask_phone, mask_phones_in
from drill_progress.setup.aws_resources import ensure_stream


def test_enqueue_twice_publishes_once(drill_db, aws):
    ensure_stream(aws.kinesis, "cmds")
    cmds = [commands.start_drill(f"+1555000{i:04d}", "01-sample-drill", f"k{i}") for i in range(1200)]
    with drill_db.engine.begin() as conn:
        assert len(outbox.enqueue(conn, cmds, "test")) == 1200
    with drill_db.engine.begin() as conn:
        assert outbox.enqueue(conn, cmds, "test") == []
    assert outbox.publish_pending(drill_db.engine, aws.kinesis, "cmds") == {"published": 1200, "failed": 0}
    assert outbox.publish_pending(drill_db.engine, aws.kinesis, "cmds") == {"published": 0, "failed": 0}
    records = _read_all(aws.kinesis, "cmds")
    assert len(records) == 1200
    body = json.loads(records[0]["Data"])
    assert body["type"] == "START_DRILL"
    assert set(body["payload"]) == {"phone_number", "drill_slug"}
    assert records[0]["PartitionKey"] == body["payload"]["phone_number"]
    assert len({json.loads(r["Data"])["idempotency_key"] for r in records}) == 1200


def test_failed_publish_stays_pending(drill_db, aws):
    cmd = commands.trigger_reminder("+15550001111", "6b090220-cb8c-4d3d-b49b-dc50e37b49ff", "q2", "r1")
    with drill_db.engine.begin() as conn:
        outbox.enqueue(conn, [cmd], "test")
    # the stream does not exist yet: every attempt fails, nothing is lost
    result = outbox.publish_pending(drill_db.engine, aws.kinesis, "missing", max_attempts=2)
    assert result == {"published": 0, "failed": 1}
    with drill_db.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT published_at, attempts, last_error FROM command_outbox").one()
    assert row[0] is None and row[1] == 1 and row[2]
    ensure_stream(aws.kinesis, "missing")
    assert outbox.publish_pending(drill_db.engine, aws.kinesis, "missing")["published"] == 1
    assert json.loads(_read_all(aws.kinesis, "missing")[0]["Data"])["payload"]["prompt_slug"] == "q2"


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("+15551230001", "***0001"),
        ("+44 20 7946 0958", "***0958"),
        ("5551234", "***4"),
        ("+1555123", "***3"),
        ("12345", "***"),
        ("+1", "***"),
        ("", "<none>"),
        (None, "<none>"),
        ("+1 (555) 123-0001", "***0001"),
    ],
)
def test_mask_phone_keeps_at_most_the_last_four_digits(phone, masked):
    assert mask_phone(phone) == masked


def test_mask_phones_in_free_text():
    assert mask_phones_in("user +15551230001 failed; 555-123-4567 too") == "user ***0001 failed; ***4567 too"
