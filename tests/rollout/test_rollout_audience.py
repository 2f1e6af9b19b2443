"""Targeted drills stay targeted (issue 14), against real PostgreSQL: a drill rolled out to two
employers reaches their existing users and the users created later through ingestion's own load,
fold and write, and nobody else -- not in status rows, not as a first drill, not in scheduling."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from rollout_seed import catalog, orders, out_of_step, seed_users, user_ids_of_employer, users_with

from drill_progress import ids
from drill_progress.ingest import events as ev
from drill_progress.ingest import fold, store
from drill_progress.next_drill import next_drills
from drill_progress.rollout.add_drill import RolloutRefused, roll_out
from drill_progress.scheduling import planning

SAMPLE = ["01-sample-drill", "02-sample-drill", "03-sample-drill"]
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _event(kind: str, phone: str, minute: int, employer) -> dict:
    doc = {
        "event_id": str(ids.uuid.uuid5(ids.uuid.NAMESPACE_URL, f"{phone}/{kind}/{minute}")),
        "event_type": kind,
        "phone_number": phone,
        "created_time": (T0 + timedelta(minutes=minute)).isoformat(),
        "user_profile": {
            "validated": kind == "USER_VALIDATED",
            "account_info": None if employer is None else {"employer_id": employer, "unit_id": 1},
        },
    }
    if kind == "USER_VALIDATED":
        doc["code_validation_payload"] = {"valid": True}
    return doc


def _ingest(engine, phone: str, seq: int, kind: str, employer) -> list:
    """One event batch through ingestion's own path: lock and load (catalog included), fold, write."""
    doc = {
        "batch_id": str(ids.uuid.uuid5(ids.uuid.NAMESPACE_URL, f"{phone}/{seq}")),
        "seq": str(seq),
        "phone_number": phone,
        "created_time": (T0 + timedelta(minutes=seq)).isoformat(),
        "events": [_event(kind, phone, seq, employer)],
    }
    batches = [ev.parse_record(json.dumps(doc).encode())]
    with engine.begin() as conn:
        catalog_now, users = store.load_micro_batch(conn, batches)
        result = fold.fold(users, batches, catalog_now)
        store.execute_write(conn, store.plan_write(users, commands=result.commands))
    return [(c.phone_number, c.payload["drill_slug"]) for c in result.commands]


def _audience(engine, slug: str):
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT employer_ids FROM drills WHERE drill_slug = %(s)s", {"s": slug}
        ).scalar_one()


def test_a_drill_for_two_employers_reaches_their_old_and_new_users_and_nobody_else(drill_db):
    engine = drill_db.engine
    seed_users(engine, 30, employers=3)  # employers 0, 1, 2; the first drill started by everyone
    dry = roll_out(
        engine,
        drill_slug="00-special",
        drill_name="Special",
        place_in_sequence=0,
        only_employer_ids=[2, 1, 5],
        dry_run=True,
    )
    assert dry["per_employer"] == {
        "1": {"users": 10, "would_insert": 10},
        "2": {"users": 10, "would_insert": 10},
        "5": {"users": 0, "would_insert": 0},  # a typo shows before the real run
    }
    assert (dry["users_matched"], dry["rows_would_insert"], dry["audience"]) == (20, 20, ["1", "2", "5"])

    summary = roll_out(
        engine, drill_slug="00-special", drill_name="Special", place_in_sequence=0, only_employer_ids=[1, 2]
    )
    assert summary["rows_inserted"] == 20 and summary["audience"] == ["1", "2"]
    assert _audience(engine, "00-special") == ["1", "2"]
    assert catalog(engine)[0] == ("00-special", "Special", 0)

    # users created later, by ingestion: employers 1 and "2" get it first; employer 0 and 3 never
    first = {
        "+15550000001": _ingest(engine, "+15550000001", 1, "USER_VALIDATED", 1),
        "+15550000002": _ingest(engine, "+15550000002", 1, "USER_VALIDATED", "2"),
        "+15550000003": _ingest(engine, "+15550000003", 1, "USER_VALIDATED", 0),
        "+15550000004": _ingest(engine, "+15550000004", 1, "USER_VALIDATED", 3),
    }
    assert first == {
        "+15550000001": [("+15550000001", "00-special")],
        "+15550000002": [("+15550000002", "00-special")],
        "+15550000003": [("+15550000003", "01-sample-drill")],
        "+15550000004": [("+15550000004", "01-sample-drill")],
    }
    # created before its employer was known (a failed validation first), validated later for employer 2
    assert _ingest(engine, "+15550000005", 1, "USER_VALIDATION_FAILED", None) == []
    assert _ingest(engine, "+15550000005", 2, "USER_VALIDATED", 2) == [("+15550000005", "00-special")]

    new = {p: str(ids.user_id(p)) for p in (f"+1555000000{i}" for i in range(1, 6))}
    audience_users = user_ids_of_employer(engine, 1) | user_ids_of_employer(engine, 2)  # old and new, 1 and "2" alike
    assert len(audience_users) == 23
    assert users_with(engine, "00-special") == audience_users  # nobody else has a row
    for user_id, order in orders(engine).items():
        assert order == (["00-special", *SAMPLE] if user_id in audience_users else SAMPLE)  # a gap for the others
    assert out_of_step(engine) == 0

    # scheduling: employer 1 and 2 users who started drill 1 are due for it; nobody else ever
    with engine.begin() as conn:
        conn.exec_driver_sql(  # the seeded users get a primary number too
            "INSERT INTO phone_numbers (id, phone_number, user_id) SELECT gen_random_uuid(), '+1666' || seq, user_id "
            "FROM users u WHERE NOT EXISTS (SELECT 1 FROM phone_numbers p WHERE p.user_id = u.user_id)"
        )
        due = {u.user_id: u.drill_slug for u in planning.due_users(conn, datetime.now(UTC))}
        nexts = next_drills(conn, [r[0] for r in conn.exec_driver_sql("SELECT user_id::text FROM users").all()])
    old_audience = audience_users - set(new.values())
    assert {u for u, d in due.items() if d == "00-special"} == old_audience
    assert {u for u, d in nexts.items() if d == "00-special"} == audience_users
    assert all(d == "02-sample-drill" for u, d in due.items() if u not in audience_users)


def test_a_rollout_for_more_employers_extends_the_audience_never_narrows_it(drill_db):
    engine = drill_db.engine
    seed_users(engine, 30, employers=3)
    roll_out(engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1, only_employer_ids=[1])
    assert _ingest(engine, "+15550000001", 1, "USER_VALIDATED", 0) == [("+15550000001", "01-sample-drill")]
    assert str(ids.user_id("+15550000001")) not in users_with(engine, "mid")

    more = roll_out(engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1, only_employer_ids=[0])
    assert (more["audience_before"], more["audience"], more["rows_inserted"]) == (["1"], ["0", "1"], 11)
    assert str(ids.user_id("+15550000001")) in users_with(engine, "mid")  # the new employer-0 user too

    everyone = roll_out(engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1)  # no employers listed
    assert (everyone["audience"], everyone["rows_inserted"]) == (None, 10)
    assert _audience(engine, "mid") is None and len(users_with(engine, "mid")) == 31
    with pytest.raises(RolloutRefused, match="never narrows"):
        roll_out(engine, drill_slug="mid", drill_name="Middle", place_in_sequence=1, only_employer_ids=[2])
    assert _audience(engine, "mid") is None
