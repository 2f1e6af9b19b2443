"""The set-based apply path against real PostgreSQL: state, idempotency, bad input, bisect, crashes."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import sqlalchemy.exc
from ingest_support import (
    INVALID_EXAMPLES,
    PHONE,
    VALID_EXAMPLES,
    batch,
    checksum,
    event,
    example,
    example_bytes,
    instance_id,
    raw_records,
    rows,
    snapshot,
    user_story,
)

from drill_progress import ids
from drill_progress.ingest import pipeline

STREAM = "dialog-events"
SHARD = "shardId-000000000000"
INSTANCE = "12174c1f-8d4a-4982-ad38-8a4ea5e13050"


def apply(engine, docs, start=1, shard=SHARD, **kwargs):
    return pipeline.apply_micro_batch(engine, STREAM, shard, raw_records(docs, start), **kwargs)


def contract_story():
    return [example_bytes(n) for n in VALID_EXAMPLES]


def test_contract_story_lands_in_the_four_tables(drill_db):
    stats = apply(drill_db.engine, contract_story())
    assert (stats.records_read, stats.batches_applied, stats.duplicates_skipped, stats.records_rejected) == (
        11,
        11,
        0,
        0,
    )
    assert stats.commands_emitted == 2 and stats.transactions == 1
    engine = drill_db.engine
    user_id = ids.user_id(PHONE)
    [(uid, seq, profile, last)] = rows(engine, "SELECT user_id, seq, profile, last_interacted_time FROM users")
    assert uid == user_id and seq == 11 and profile == example("multi_event_batch")["events"][-1]["user_profile"]
    assert last == datetime.fromisoformat("2026-03-02T15:12:00+00:00")
    assert rows(engine, "SELECT id, phone_number, user_id, is_primary FROM phone_numbers") == [
        (ids.phone_number_id(PHONE), PHONE, user_id, True)
    ]
    statuses = rows(
        engine,
        "SELECT id, drill_slug, place_in_sequence, drill_instance_id::text, started_time, "
        "completed_time FROM drill_statuses ORDER BY place_in_sequence",
    )
    assert [s[0] for s in statuses] == [ids.status_id(user_id, s[1]) for s in statuses]
    assert [(s[1], s[2]) for s in statuses] == [("01-sample-drill", 0), ("02-sample-drill", 1), ("03-sample-drill", 2)]
    t = datetime.fromisoformat
    assert statuses[0][3:] == (INSTANCE, t("2026-03-02T15:02:00+00:00"), t("2026-03-02T15:07:00+00:00"))
    assert statuses[1][3:] == (
        "471f5819-0455-4739-9ee0-bf6adeec3e92",
        t("2026-03-02T15:10:00+00:00"),
        t("2026-03-02T15:12:00+00:00"),
    )
    assert statuses[2][3:] == (None, None, None)
    instances = rows(
        engine,
        "SELECT drill_instance_id::text, drill_slug, phone_number, current_prompt_slug, "
        "current_prompt_start_time, current_prompt_last_response_time, completion_time, "
        "is_valid FROM drill_instances ORDER BY drill_slug",
    )
    assert instances == [
        (INSTANCE, "01-sample-drill", PHONE, None, None, None, t("2026-03-02T15:07:00+00:00"), True),
        (
            "471f5819-0455-4739-9ee0-bf6adeec3e92",
            "02-sample-drill",
            PHONE,
            None,
            None,
            None,
            t("2026-03-02T15:12:00+00:00"),
            True,
        ),
    ]
    outbox = rows(
        engine, "SELECT idempotency_key, command_type, partition_key, payload, source FROM command_outbox ORDER BY id"
    )
    assert outbox == [
        (
            "ingest:539f6666-32c3-4a69-8e9c-3548dd72a043",
            "START_DRILL",
            PHONE,
            {"phone_number": PHONE, "drill_slug": "01-sample-drill"},
            "ingest",
        ),
        (
            "ingest:80644fea-85a4-4842-a32c-c02c257f222a",
            "START_DRILL",
            PHONE,
            {"phone_number": PHONE, "drill_slug": "02-sample-drill"},
            "ingest",
        ),
    ]
    assert rows(engine, "SELECT stream, shard_id, sequence_number, records_applied FROM stream_checkpoints") == [
        (STREAM, SHARD, f"{11:030d}", 11)
    ]


def test_story_applied_in_many_micro_batches_equals_one(drill_db, pg_server):
    docs = contract_story()
    apply(drill_db.engine, docs)
    one = snapshot(drill_db.engine)
    engine2 = _fresh_engine(pg_server, drill_db)
    for n, doc in enumerate(docs, 1):
        apply(engine2, [doc], start=n)
    assert snapshot(engine2) == one
    engine2.dispose()
    pg_server.drop_database(drill_db.name + "_b")


def _fresh_engine(pg_server, drill_db):
    from drill_progress.db import make_engine

    name = drill_db.name + "_b"
    pg_server.create_database(name, template="drill_template")
    return make_engine(pg_server.uri(name))


def test_redelivery_is_idempotent(drill_db):
    docs = [d for phone in ("+15550000001", "+15550000002") for d in user_story(phone)]
    apply(drill_db.engine, docs)
    first = snapshot(drill_db.engine)
    stats = apply(drill_db.engine, docs, start=100)  # the same batches delivered again
    assert stats.batches_applied == 0 and stats.duplicates_skipped == len(docs) and stats.commands_emitted == 0
    assert snapshot(drill_db.engine) == first


def test_out_of_order_and_duplicates_within_one_micro_batch(drill_db):
    story = user_story(PHONE)
    docs = [story[0], story[1], story[0], story[2], story[1], story[4], story[3]]  # seq 1,2,1,3,2,5,4
    stats = apply(drill_db.engine, docs)
    assert (stats.batches_applied, stats.duplicates_skipped) == (4, 3)
    [(seq,)] = rows(drill_db.engine, "SELECT seq FROM users")
    assert seq == 5
    # the late seq-4 NEXT_DRILL_REQUESTED was skipped: only USER_VALIDATED's command
    assert rows(drill_db.engine, "SELECT payload->>'drill_slug' FROM command_outbox") == [("01-sample-drill",)]


def test_bad_records_mixed_with_good(drill_db):
    docs = [
        example_bytes("user_validated"),
        example_bytes("bad_not_json"),
        example_bytes("drill_started"),
        example_bytes("bad_missing_instance_id"),
        b"\xc3\x28 not utf-8",
        example_bytes("bad_seq_not_a_number"),
        example_bytes("completed_prompt"),
        example_bytes("bad_unknown_event_type"),
        json.dumps({**example("reminder_triggered"), "seq": 7}).encode(),
    ]
    stats = apply(drill_db.engine, docs)
    assert (stats.batches_applied, stats.records_rejected) == (3, 6)
    rejected = rows(
        drill_db.engine,
        "SELECT stream, shard_id, sequence_number, partition_key, raw_data, reason, "
        "attempts FROM rejected_records ORDER BY sequence_number",
    )
    assert [r[2] for r in rejected] == [f"{n:030d}" for n in (2, 4, 5, 6, 8, 9)]
    assert all(r[0] == STREAM and r[1] == SHARD and r[3] == PHONE and r[6] == 1 for r in rejected)
    assert [bytes(r[4]) for r in rejected] == [docs[n - 1] for n in (2, 4, 5, 6, 8, 9)]
    reasons = [r[5] for r in rejected]
    for reason, needle in zip(reasons, ["JSON", "drill_instance_id", "UTF-8", "seq", "event_type", "seq"], strict=True):
        assert needle in reason
        assert "5551230001" not in reason
    [(seq, last)] = rows(drill_db.engine, "SELECT seq, last_interacted_time FROM users")
    assert seq == 4 and last == datetime.fromisoformat("2026-03-02T15:03:00+00:00")
    # re-delivery of the same positions sets nothing aside twice
    apply(drill_db.engine, docs)
    assert rows(drill_db.engine, "SELECT count(*) FROM rejected_records") == [(6,)]


@pytest.mark.parametrize("name", INVALID_EXAMPLES)
def test_each_invalid_example_is_set_aside(drill_db, name):
    stats = apply(drill_db.engine, [example_bytes(name)])
    assert stats.records_rejected == 1
    [(reason,)] = rows(drill_db.engine, "SELECT reason FROM rejected_records")
    assert reason
    assert rows(drill_db.engine, "SELECT count(*) FROM users") == [(0,)]


def _boom_trigger(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("""
            CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.current_prompt_slug = 'boom' THEN RAISE EXCEPTION 'boom prompt rejected'; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON drill_instances FOR EACH ROW EXECUTE FUNCTION boom();
        """)


def test_bisect_sets_aside_the_failing_record_and_applies_the_rest(drill_db):
    _boom_trigger(drill_db.engine)
    phones = [f"+1555000{n:04d}" for n in range(6)]
    docs = [d for p in phones for d in user_story(p)[:2]]
    poisoned = batch(
        3,
        [
            event(
                "DRILL_STARTED",
                30,
                phones[2],
                instance_id(phones[2], 9),
                drill_slug="02-sample-drill",
                first_prompt="boom",
            )
        ],
        phones[2],
    )
    nul_profile = batch(3, [event("REMINDER_TRIGGERED", 31, phones[4])], phones[4])
    nul_profile["events"][0]["user_profile"]["name"] = "nul\u0000"  # jsonb refuses \u0000: refused at the edge
    after = batch(4, [event("REMINDER_TRIGGERED", 40, phones[2])], phones[2])
    docs += [poisoned, nul_profile, after]
    stats = apply(drill_db.engine, docs)
    assert stats.records_rejected == 2
    assert stats.batches_applied == len(docs) - 2
    rejected = rows(drill_db.engine, "SELECT sequence_number, reason, attempts FROM rejected_records ORDER BY 1")
    assert [r[0] for r in rejected] == [f"{len(docs) - 2:030d}", f"{len(docs) - 1:030d}"]
    assert "boom prompt rejected" in rejected[0][1] and rejected[0][2] == pipeline.ATTEMPTS
    assert rejected[1][1:] == ("events[0].user_profile: contains U+0000", 1)
    seqs = dict(rows(drill_db.engine, "SELECT p.phone_number, u.seq FROM users u JOIN phone_numbers p USING (user_id)"))
    assert seqs == {p: (4 if p == phones[2] else 2) for p in phones}  # the later batch still applied, in order
    assert rows(drill_db.engine, "SELECT sequence_number FROM stream_checkpoints") == [(f"{len(docs):030d}",)]


def test_instance_of_another_user_is_an_integrity_error_set_aside(drill_db):
    a, b = "+15550000001", "+15550000002"
    shared = instance_id(a, 1)
    docs = [
        batch(1, [event("DRILL_STARTED", 1, a, shared, drill_slug="01-sample-drill")], a),
        batch(1, [event("DRILL_STARTED", 2, b, shared, drill_slug="01-sample-drill")], b),
        batch(2, [event("REMINDER_TRIGGERED", 3, b)], b),
    ]
    stats = apply(drill_db.engine, docs)
    assert stats.records_rejected == 1
    [(reason,)] = rows(drill_db.engine, "SELECT reason FROM rejected_records")
    assert "23505" in reason
    assert rows(drill_db.engine, "SELECT user_id FROM drill_instances") == [(ids.user_id(a),)]
    # b's first batch was set aside, its second created b (seq 2)
    assert rows(drill_db.engine, "SELECT seq FROM users WHERE user_id = %(u)s", {"u": ids.user_id(b)}) == [(2,)]


def test_connection_loss_mid_transaction_propagates_and_leaves_nothing(drill_db):
    docs = user_story(PHONE)

    def kill(stage, conn):
        if stage == "before_commit":
            conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(sqlalchemy.exc.OperationalError):
        apply(drill_db.engine, docs, fault=kill)
    assert snapshot(drill_db.engine)["users"] == []
    assert rows(drill_db.engine, "SELECT count(*) FROM stream_checkpoints") == [(0,)]
    apply(drill_db.engine, docs)
    clean_checksum = checksum(drill_db.engine)
    assert clean_checksum and snapshot(drill_db.engine)["users"]


def test_existing_user_created_elsewhere_is_found_by_phone(drill_db):
    apply(drill_db.engine, [example_bytes("user_validated")])
    with drill_db.engine.begin() as conn:  # a user whose ids are not ours (e.g. migrated data)
        conn.exec_driver_sql("""
            INSERT INTO users (user_id, seq) VALUES ('00000000-0000-0000-0000-000000000001', 5);
            INSERT INTO phone_numbers (id, phone_number, user_id) VALUES
                ('00000000-0000-0000-0000-000000000002', '+15559999999', '00000000-0000-0000-0000-000000000001');
            INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence) VALUES
                ('00000000-0000-0000-0000-000000000003', '00000000-0000-0000-0000-000000000001', '01-sample-drill', 0);
        """)
    other = "+15559999999"
    stats = apply(
        drill_db.engine,
        [
            batch(5, [event("REMINDER_TRIGGERED", 1, other)], other),
            batch(6, [event("DRILL_STARTED", 2, other, instance_id(other, 1), drill_slug="01-sample-drill")], other),
        ],
        start=2,
    )
    assert (stats.batches_applied, stats.duplicates_skipped) == (1, 1)
    assert rows(
        drill_db.engine,
        "SELECT drill_instance_id::text FROM drill_statuses WHERE id = '00000000-0000-0000-0000-000000000003'",
    ) == [(instance_id(other, 1),)]


def test_awkward_strings_round_trip(drill_db):
    weird = 'q"1,{x} \\ NULL ü\u2028'
    doc = batch(
        1, [event("DRILL_STARTED", 1, instance=instance_id(PHONE, 1), drill_slug="01-sample-drill", first_prompt=weird)]
    )
    doc["events"][0]["user_profile"]["name"] = 'O\'Brien "Bob" \\ {a,b} NULL'
    apply(drill_db.engine, [doc])
    assert rows(drill_db.engine, "SELECT current_prompt_slug FROM drill_instances") == [(weird,)]
    assert rows(drill_db.engine, "SELECT profile->>'name' FROM users") == [('O\'Brien "Bob" \\ {a,b} NULL',)]
