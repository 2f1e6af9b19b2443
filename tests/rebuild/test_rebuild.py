"""The event history and `drill_progress_rebuild` against real PostgreSQL: every record read is kept
in order; a rebuild from the history gives exactly the rows live ingestion gave; a fold bug's damage
is repaired for exactly the users it touched; a rebuild twice changes nothing; it sends nothing."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest
from airflow_support import return_value, run_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import EXAMPLES, batch, encode, event, instance_id, rows, user_story

from devtools.aggregate import aggregate_rows as aggregate
from drill_progress import rebuild
from drill_progress.ingest import events as ev
from drill_progress.ingest import fold, pipeline
from drill_progress.ingest.pipeline import RawRecord

STREAM, SHARD = "dialog-events", "shardId-000000000000"
REAL = EXAMPLES / "real-producer"
_positions = itertools.count(1)
_phones = itertools.count(1)


def apply_stream(engine, docs: list, per_micro_batch: int = 7) -> None:
    raws = []
    for doc in docs:
        data = doc if isinstance(doc, bytes) else encode(doc)
        phone = json.loads(data)["phone_number"] if isinstance(doc, bytes) else doc["phone_number"]
        raws.append(RawRecord(str(next(_positions)), phone, data))
    for start in range(0, len(raws), per_micro_batch):
        pipeline.apply_micro_batch(engine, STREAM, SHARD, raws[start : start + per_micro_batch])


def real_stream() -> list[bytes]:
    names = sorted(p.stem for p in REAL.glob("*.json"))
    names.sort(key=lambda n: int(json.loads((REAL / f"{n}.json").read_bytes())["seq"]))
    return [(REAL / f"{n}.json").read_bytes() for n in names]


def phones_of(docs: list) -> list[str]:
    return sorted({(json.loads(d) if isinstance(d, bytes) else d)["phone_number"] for d in docs})


def wipe_aggregate(engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE users, command_outbox CASCADE")


# ---- the history -----------------------------------------------------------------------------------


def test_every_record_read_is_in_the_history_in_the_order_applied(drill_db):
    phone = "+15557770001"
    story = user_story(phone)
    docs = [*story[:3], b"not json", story[1], *story[3:]]  # a bad record and a duplicate among them
    raws = [RawRecord(str(n), phone, d if isinstance(d, bytes) else encode(d)) for n, d in enumerate(docs, 1)]
    pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raws[:4])
    pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raws[4:])
    assert rows(
        drill_db.engine,
        "SELECT phone_number, stream, shard_id, sequence_number, raw_data FROM event_history ORDER BY id",
    ) == [(phone, STREAM, SHARD, r.sequence_number, r.data) for r in raws]
    # a replay writes its records again: harmless duplicates
    pipeline.apply_micro_batch(drill_db.engine, STREAM, SHARD, raws[1:3])
    assert rows(drill_db.engine, "SELECT count(*) FROM event_history") == [(len(raws) + 2,)]


def test_a_record_refused_by_the_database_is_kept_under_its_phone_number(drill_db):
    """A record set aside after the database refused it (bisected down to it) is in the history
    with the phone number of its batch, so a rebuild after a fix includes it."""
    phone = "+15557770002"
    with drill_db.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;"
            "CREATE TRIGGER refuse BEFORE INSERT ON drill_instances FOR EACH ROW EXECUTE FUNCTION refuse();"
        )
    docs = user_story(phone)[:2]
    stats = pipeline.apply_micro_batch(
        drill_db.engine, STREAM, SHARD, [RawRecord(str(n), "some-key", encode(d)) for n, d in enumerate(docs, 1)]
    )
    assert (stats.batches_applied, stats.records_rejected) == (1, 1)
    assert rows(drill_db.engine, "SELECT phone_number, sequence_number FROM event_history ORDER BY id") == [
        (phone, "1"),
        (phone, "2"),
    ]


# ---- rebuild = live ----------------------------------------------------------------------------------

EVENT_TYPES = [
    "USER_VALIDATED",
    "DRILL_STARTED",
    "COMPLETED_PROMPT",
    "FAILED_PROMPT",
    "ADVANCED_TO_NEXT_PROMPT",
    "DRILL_COMPLETED",
    "NEXT_DRILL_REQUESTED",
    "REMINDER_TRIGGERED",
    "OPTED_OUT",
    "USER_VALIDATION_FAILED",
]


@st.composite
def traffic(draw) -> list:
    """Random traffic of a few users (late and repeated batches included), with the real
    producer's batches among it."""
    docs: list = []
    for _ in range(draw(st.integers(1, 4))):
        phone = f"+1555888{next(_phones):04d}"
        seq, minute = 0, 0
        for _ in range(draw(st.integers(1, 8))):
            seq += draw(st.integers(1, 3))
            events = []
            for _ in range(draw(st.integers(1, 3))):
                minute += 1
                kind = draw(st.sampled_from(EVENT_TYPES))
                n = draw(st.integers(1, 2))
                extra = {}
                if kind == "DRILL_STARTED":
                    extra["drill_slug"] = draw(
                        st.sampled_from(["01-sample-drill", "02-sample-drill", "03-sample-drill"])
                    )
                if kind in ("ADVANCED_TO_NEXT_PROMPT", "COMPLETED_PROMPT", "FAILED_PROMPT"):
                    extra["prompt"] = draw(st.sampled_from(["q1", "q2", "1 - "]))
                instance = instance_id(phone, n) if kind not in ("OPTED_OUT",) or draw(st.booleans()) else None
                needs = kind in ("DRILL_STARTED", "ADVANCED_TO_NEXT_PROMPT", "COMPLETED_PROMPT", "FAILED_PROMPT")
                events.append(
                    event(
                        kind,
                        minute,
                        phone,
                        instance if (needs or kind in ("DRILL_COMPLETED", "OPTED_OUT")) else None,
                        **extra,
                    )
                )
            docs.append(batch(seq, events, phone))
            if draw(st.integers(0, 9)) == 0:
                docs.append(docs[draw(st.integers(0, len(docs) - 1))])  # a re-delivered or late batch
    if draw(st.booleans()):
        docs += real_stream()
    return docs


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(docs=traffic(), per_micro_batch=st.integers(1, 10))
def test_a_rebuild_from_the_history_gives_exactly_the_live_rows(drill_db, docs, per_micro_batch):
    engine = drill_db.engine
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE users, command_outbox, event_history, stream_checkpoints CASCADE")
    apply_stream(engine, docs, per_micro_batch)
    live = aggregate(engine)
    phones = phones_of(docs)

    dry = rebuild.rebuild(engine, phones, dry_run=True)
    assert (dry.changed, dry.unchanged) == (0, len(phones))

    wipe_aggregate(engine)  # every row gone: the history alone gives them back
    done = rebuild.rebuild(engine, phones, dry_run=False)
    assert done.changed == len(phones)
    assert aggregate(engine) == live
    assert rows(engine, "SELECT count(*) FROM command_outbox") == [(0,)]  # never a command
    assert rebuild.rebuild(engine, phones, dry_run=False).changed == 0


# ---- a fold bug, then the fix --------------------------------------------------------------------------


def _buggy_completion(user, batch_, event_, out):
    """A deliberate fold bug: DRILL_COMPLETED marks the status but forgets the instance."""
    for status in user.statuses:
        if status.drill_instance_id == event_.drill_instance_id:
            status.completed_time = event_.created_time


def test_a_rebuild_repairs_exactly_the_users_a_fold_bug_touched(drill_db, monkeypatch):
    engine = drill_db.engine
    phones = [f"+1555999{n:04d}" for n in range(6)]
    stories = {p: user_story(p, minute0=10 * n) for n, p in enumerate(phones)}
    # days before the bug: every user's first two batches
    apply_stream(engine, [d for p in phones for d in stories[p][:2]])
    # the bug ships: the third batch (which completes drill 1) of the first three users
    with monkeypatch.context() as m:
        m.setitem(fold.RULES, ev.DRILL_COMPLETED, _buggy_completion)
        apply_stream(engine, [stories[p][2] for p in phones[:3]])
    # fixed: the rest of everybody's traffic
    apply_stream(engine, [stories[p][2] for p in phones[3:]])
    apply_stream(engine, [d for p in phones for d in stories[p][3:]])
    damaged = aggregate(engine)

    dry = rebuild.rebuild(engine, all_users=True, dry_run=True)
    assert (dry.examined, dry.changed, dry.unchanged) == (6, 3, 3)
    assert sorted(u["phone_number"] for u in dry.users) == ["***0000", "***0001", "***0002"]
    assert all(
        u
        == {
            "phone_number": u["phone_number"],
            "drill_instances": {
                "added": 0,
                "removed": 0,
                "changed": 1,
                "fields": [
                    "completion_time",
                    "current_prompt_last_response_time",
                    "current_prompt_slug",
                    "current_prompt_start_time",
                ],
            },
        }
        for u in dry.users
    )
    assert aggregate(engine) == damaged  # a dry run changes nothing

    done = rebuild.rebuild(engine, all_users=True, dry_run=False)
    assert (done.changed, done.rows["drill_instances"]["changed"]) == (3, 3)
    repaired = aggregate(engine)
    # the reference: the same traffic applied by a fold without the bug
    wipe_aggregate(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE event_history")
    apply_stream(engine, [d for p in phones for d in stories[p]])
    assert repaired == aggregate(engine)
    # the undamaged users' rows were never touched
    assert [r for r in repaired["drill_instances"] if r[2] in phones[3:]] == [
        r for r in damaged["drill_instances"] if r[2] in phones[3:]
    ]


def test_a_rebuild_deletes_the_instances_the_history_does_not_produce_and_only_those(drill_db):
    """An instance that no batch of the history starts (a fold bug created it) is deleted from its
    user; the user's other instances and every other user's rows stay as they are."""
    engine = drill_db.engine
    damaged_phone, other_phone = "+15557770011", "+15557770012"
    apply_stream(engine, user_story(damaged_phone) + user_story(other_phone, minute0=30))
    before = aggregate(engine)
    stray = "7f3d9a52-0c1e-4e8b-9a61-3b2c1d0e9f8a"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug, is_valid) "
            "SELECT %(id)s, user_id, phone_number, '03-sample-drill', true FROM phone_numbers "
            "WHERE phone_number = %(p)s",
            {"id": stray, "p": damaged_phone},
        )
    dry = rebuild.rebuild(engine, [damaged_phone, other_phone], dry_run=True)
    assert (dry.changed, dry.unchanged) == (1, 1)
    assert dry.users == [
        {"phone_number": "***0011", "drill_instances": {"added": 0, "removed": 1, "changed": 0, "fields": []}}
    ]
    done = rebuild.rebuild(engine, [damaged_phone, other_phone], dry_run=False)
    assert (done.changed, done.rows["drill_instances"]["removed"]) == (1, 1)
    assert rows(engine, "SELECT count(*) FROM drill_instances WHERE drill_instance_id = %(id)s", {"id": stray}) == [
        (0,)
    ]
    assert aggregate(engine) == before
    assert rebuild.rebuild(engine, [damaged_phone, other_phone], dry_run=False).changed == 0  # nothing left


def test_users_older_than_the_history_are_left_alone(drill_db):
    engine = drill_db.engine
    phone = "+15557770003"
    apply_stream(engine, user_story(phone))
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE users SET created_at = created_at - interval '1 day'")
        conn.exec_driver_sql("UPDATE drill_instances SET current_prompt_slug = 'damaged'")
    result = rebuild.rebuild(engine, [phone], dry_run=False)
    assert (result.examined, result.incomplete_history, result.changed) == (1, 1, 0)
    assert rows(engine, "SELECT DISTINCT current_prompt_slug FROM drill_instances WHERE completion_time IS NULL") == [
        ("damaged",)
    ]


def test_params_must_name_users_one_way():
    with pytest.raises(ValueError, match="either phone_numbers"):
        rebuild.rebuild(None, [], all_users=False)
    with pytest.raises(ValueError, match="either phone_numbers"):
        rebuild.rebuild(None, ["+15550000001"], all_users=True)


# ---- during ingestion ----------------------------------------------------------------------------------


def test_a_batch_arriving_during_the_rebuild_is_neither_lost_nor_applied_twice(drill_db, monkeypatch):
    engine = drill_db.engine
    phone = "+15557770004"
    story = user_story(phone)
    apply_stream(engine, story[:4])
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE drill_instances SET current_prompt_slug = 'damaged'")
    read_history = rebuild._history
    history_read = threading.Event()

    def slow_history(conn, phones, summary):
        batches = read_history(conn, phones, summary)
        history_read.set()
        time.sleep(1.0)  # the users stay locked meanwhile
        return batches

    monkeypatch.setattr(rebuild, "_history", slow_history)
    worker = threading.Thread(target=rebuild.rebuild, args=(engine, [phone]), kwargs={"dry_run": False})
    worker.start()
    assert history_read.wait(10)
    apply_stream(engine, story[4:])  # waits for the rebuild's lock, then lands on the rebuilt tree
    worker.join()
    rebuilt_then_applied = aggregate(engine)
    wipe_aggregate(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE event_history")
    apply_stream(engine, story)
    assert rebuilt_then_applied == aggregate(engine)


# ---- the DAG ---------------------------------------------------------------------------------------------


def test_rebuild_dag_reports_then_repairs_one_user(run_dag, airflow_env):
    engine = airflow_env["db"].engine
    phone, other = "+15557770005", "+15557770006"
    apply_stream(engine, user_story(phone) + user_story(other))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE users SET seq = 1 WHERE user_id = (SELECT user_id FROM phone_numbers WHERE phone_number = %(p)s)",
            {"p": phone},
        )
    run = run_dag("drill_progress_rebuild", {"phone_numbers": [phone]})  # dry_run by default
    assert run_state(run) == "success"
    result = return_value(run, "rebuild_users")
    assert (result["dry_run"], result["changed"], result["rows"]["users"]["changed"]) == (True, 1, 1)
    assert result["users"] == [
        {"phone_number": "***0005", "users": {"added": 0, "removed": 0, "changed": 1, "fields": ["seq"]}}
    ]
    assert "5557770005" not in json.dumps(result)
    assert run_state(run_dag("drill_progress_rebuild", {"phone_numbers": [phone], "dry_run": False})) == "success"
    assert rows(engine, "SELECT u.seq FROM users u JOIN phone_numbers p USING (user_id) ORDER BY p.phone_number") == [
        (5,),
        (5,),
    ]
    again = return_value(run_dag("drill_progress_rebuild", {"all_users": True, "dry_run": False}), "rebuild_users")
    assert (again["examined"], again["changed"]) == (2, 0)
    assert run_state(run_dag("drill_progress_rebuild", {})) == "failed"  # neither phone numbers nor all_users


# ---- retention --------------------------------------------------------------------------------------------


def test_history_months_past_the_retention_are_dropped_and_the_coverage_moves(drill_db):
    from datetime import UTC, datetime

    from drill_progress.maintenance import history

    engine = drill_db.engine
    phone = "+15557770007"
    apply_stream(engine, user_story(phone))
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT event_history_ensure_partitions('2025-01-15', 2)")  # Jan and Feb 2025
        conn.exec_driver_sql(
            "INSERT INTO event_history (recorded_at, phone_number, stream, shard_id, sequence_number, raw_data) "
            "VALUES ('2025-01-20', %(p)s, 's', 'x', '1', 'a'), ('2025-02-20', %(p)s, 's', 'x', '2', 'b')",
            {"p": phone},
        )
    now = datetime(2026, 3, 20, tzinfo=UTC)  # 400 days before: 2025-02-13, inside February
    dry = history.keep_history(engine, now=now, retention_days=400, dry_run=True)
    assert [d["partition"] for d in dry["dropped"]] == ["event_history_202501"]
    assert rows(engine, "SELECT count(*) FROM event_history WHERE recorded_at < '2025-03-01'") == [(2,)]

    done = history.keep_history(engine, now=now, retention_days=400, dry_run=False)
    assert [(d["partition"], d["month_end"]) for d in done["dropped"]] == [
        ("event_history_202501", "2025-02-01T00:00:00+00:00")
    ]
    assert rows(engine, "SELECT sequence_number FROM event_history WHERE recorded_at < '2025-03-01'") == [("2",)]
    [(since,)] = rows(engine, "SELECT complete_since FROM event_history_coverage")
    assert since >= datetime(2025, 2, 1, tzinfo=UTC)
    assert rows(engine, "SELECT count(*) FROM event_history WHERE phone_number = %(p)s", {"p": phone}) == [(6,)]
    again = history.keep_history(engine, now=now, retention_days=400, dry_run=False)
    assert (again["dropped"], again["partitions_created"]) == ([], 0)
