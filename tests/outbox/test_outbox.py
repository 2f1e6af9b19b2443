"""Outbox and command publishing against real PostgreSQL and the moto server."""

from __future__ import annotations

import json
import time

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


# ---------------------------------------------------------------------------- pending rows, HOT publishing


def _pending(engine) -> list[str]:
    with engine.connect() as conn:
        return [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT o.idempotency_key FROM command_outbox_pending p JOIN command_outbox o USING (id) ORDER BY 1"
            )
        ]


def test_publishing_is_a_hot_update(drill_db, aws):
    """No index of command_outbox mentions published_at (pending rows live in command_outbox_pending)
    and its pages keep room (fillfactor 50): stamping published_at writes no index entry."""
    ensure_stream(aws.kinesis, "cmds")
    cmds = [commands.start_drill(f"+1555000{i:04d}", "01-sample-drill", f"start-drill:{i:04d}") for i in range(1200)]
    with drill_db.engine.begin() as conn:
        outbox.enqueue(conn, cmds, "test")
    assert outbox.publish_pending(drill_db.engine, aws.kinesis, "cmds") == {"published": 1200, "failed": 0}
    drill_db.engine.dispose()  # the publisher's backends flush their statistics as they exit
    time.sleep(0.5)
    with drill_db.engine.connect() as conn:
        updates, hot = conn.exec_driver_sql(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'command_outbox'"
        ).one()
        indexed = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'command_outbox' AND indexdef LIKE '%%published_at%%'"
        ).scalar()
    assert indexed == 0
    assert (updates, hot) == (1200, 1200)
    assert _pending(drill_db.engine) == []


def test_every_unpublished_insert_is_pending_whoever_makes_it(drill_db, aws):
    ensure_stream(aws.kinesis, "cmds")
    with drill_db.engine.begin() as conn:  # a producer writing its own INSERT (as ingestion does)
        conn.exec_driver_sql(
            "INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, published_at) "
            "VALUES ('raw-pending', 'START_DRILL', '+15550001234', '{\"phone_number\": \"+15550001234\", "
            '"drill_slug": "01-sample-drill"}\', \'ingest\', NULL), '
            "('raw-done', 'START_DRILL', '+15550001234', '{}', 'ingest', now())"
        )
        outbox.enqueue(conn, [commands.start_drill("+15550004321", "02-sample-drill", "enqueued")], "scheduling")
        # a re-delivered cause: the key exists, nothing is written, nothing becomes pending twice
        assert outbox.enqueue(conn, [commands.start_drill("+15550004321", "02-sample-drill", "enqueued")], "x") == []
    assert _pending(drill_db.engine) == ["enqueued", "raw-pending"]
    assert outbox.publish_pending(drill_db.engine, aws.kinesis, "cmds", source="ingest") == {
        "published": 1,
        "failed": 0,
    }
    assert _pending(drill_db.engine) == ["enqueued"]
    assert outbox.publish_pending(drill_db.engine, aws.kinesis, "cmds", keys=["nope"])["published"] == 0
    assert outbox.publish_pending(drill_db.engine, aws.kinesis, "cmds", keys=["enqueued"])["published"] == 1
    assert [json.loads(r["Data"])["idempotency_key"] for r in _read_all(aws.kinesis, "cmds")] == [
        "raw-pending",
        "enqueued",
    ]


def test_migration_0011_carries_pending_commands_and_reminded_prompts_over(empty_db, tmp_path):
    """A database at 0009 with published and pending reminders: after 0011 the pending one is still
    pending and every reminded prompt is recorded on its instance."""
    from drill_progress.setup import migrations

    for m in migrations.discover():
        if m.version < 11:
            (tmp_path / m.path.name).write_bytes(m.path.read_bytes())
    migrations.apply_migrations(empty_db.engine, tmp_path)
    instance = "6b090220-cb8c-4d3d-b49b-dc50e37b49ff"
    with empty_db.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO users (user_id, seq) VALUES ('00000000-0000-0000-0000-000000000001', 1)")
        conn.exec_driver_sql(
            "INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug, current_prompt_slug, "
            "current_prompt_start_time) VALUES (%(i)s, '00000000-0000-0000-0000-000000000001', '+15550001111', "
            "'01-sample-drill', 'q3', now())",
            {"i": instance},
        )
        for prompt, published in (("q1", "now()"), ("q2", "NULL")):
            conn.exec_driver_sql(
                "INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, "
                f"published_at) VALUES (%(k)s, 'TRIGGER_REMINDER', '+15550001111', %(p)s::jsonb, 'reminders', {published})",
                {
                    "k": f"reminder:{instance}:{prompt}",
                    "p": json.dumps(
                        {"phone_number": "+15550001111", "drill_instance_id": instance, "prompt_slug": prompt}
                    ),
                },
            )
    assert 11 in migrations.apply_migrations(empty_db.engine)
    assert _pending(empty_db.engine) == [f"reminder:{instance}:q2"]
    with empty_db.engine.connect() as conn:
        reminded = conn.exec_driver_sql("SELECT reminded_prompts FROM drill_instances").scalar()
    assert reminded == ["q1", "q2"]
