"""The ingestion benchmark's traffic and its COPY ceiling, against a real PostgreSQL: the bench
applies real-shaped batches with 56-digit seq values, and the ceiling writes exactly the rows the
apply path writes."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import bench_ingest, copy_ceiling, cpu
from drill_progress.db import make_engine
from drill_progress.ingest import events as ev

REAL_PRODUCER = Path(__file__).resolve().parents[1] / "ingest" / "data" / "real-producer"
USERS = 40


def test_bench_batches_are_real_shaped_with_56_digit_seq_increasing_per_phone_and_stream():
    records = bench_ingest.stream_records(USERS)
    assert len(records) == USERS * bench_ingest.BATCHES_PER_USER
    real = json.loads((REAL_PRODUCER / "drill_started.json").read_text())
    real_event = real["events"][0]
    seqs = []
    last: dict[str, int] = {}
    for phone, data in records:
        doc = json.loads(data)
        batch = ev.parse_record(data)  # the edge accepts every one
        assert list(doc) == list(real) and len(doc["seq"]) == 56
        assert batch.seq > last.get(phone, -1)
        last[phone] = batch.seq
        seqs.append(batch.seq)
        for e in doc["events"]:
            assert list(e["user_profile"]) == list(real_event["user_profile"])
            assert len(e["created_time"]) == len(real_event["created_time"])  # microseconds, +00:00
            if e["event_type"] == "DRILL_STARTED":
                assert list(e) == list(real_event)
                assert [list(p) for p in e["drill"]["prompts"]] == [list(p) for p in real_event["drill"]["prompts"]]
    assert all(a < b for a, b in itertools.pairwise(seqs))  # like one shard's sequence numbers


def _table(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return sorted((tuple(r) for r in conn.exec_driver_sql(sql).all()), key=repr)


@pytest.fixture
def second_db(pg_server, migrated_template):
    """Another fresh, fully migrated database (the COPY ceiling's)."""
    name = f"drill_test_ceiling_{os.getpid()}"
    pg_server.create_database(name, template=migrated_template)
    url = pg_server.uri(name)
    db = SimpleNamespace(name=name, url=url, engine=make_engine(url))
    yield db
    db.engine.dispose()
    pg_server.drop_database(name)


def test_copy_ceiling_writes_exactly_the_rows_the_apply_path_writes(drill_db, second_db):
    """Every row version the apply path writes, and only those: the new rows are the apply path's
    rows themselves, every update is one more row of the same table."""
    records = bench_ingest.stream_records(USERS)
    micro_batch = USERS // 2  # a micro-batch never holds two batches of one user: one row version each
    with copy_ceiling.record_writes() as captured:
        _seconds, _cpu, stats = bench_ingest._apply_path(drill_db.engine, records, micro_batch)
    assert stats.batches_applied == len(records)
    assert len(captured) == stats.transactions == -(-len(records) // micro_batch)
    rows = copy_ceiling.row_counts(captured)
    # per user: created, then updated by each of its 3 later batches; 3 statuses created, the first
    # completed, the second started; 2 instances created, the first updated twice; 2 commands
    assert rows == {
        "users": 4 * USERS,
        "phone_numbers": USERS,
        "drill_statuses": 5 * USERS,
        "drill_instances": 4 * USERS,
        "command_outbox": 2 * USERS,
        "event_history": 4 * USERS,  # every record read
    }
    seconds, mode = copy_ceiling.copy_micro_batches(second_db.url, copy_ceiling.render(captured, second_db.url))
    assert seconds > 0 and mode == "off"  # the test server's setting, reported as it is
    applied, copied = drill_db.engine, second_db.engine
    for sql in (
        "SELECT id, phone_number, user_id, is_primary FROM phone_numbers",
        "SELECT idempotency_key, command_type, partition_key, payload::text, source FROM command_outbox",
        "SELECT phone_number, stream, shard_id, sequence_number, arrival, raw_data FROM event_history",
    ):
        assert _table(copied, sql) == _table(applied, sql)
    # the users' first versions are the rows the apply path inserted (same ids, seq, profile) ...
    first = _table(
        copied, "SELECT user_id, seq, profile::text FROM users WHERE user_id IN (SELECT user_id FROM phone_numbers)"
    )
    created = {(str(u), p) for u, _s, p in first}
    assert {(str(u), p) for u, _s, p in _table(applied, "SELECT user_id, seq, profile::text FROM users")} == created
    # ... and their last versions carry the seq the apply path ended with, exactly (56 digits)
    final_seqs = sorted(s for _u, s, _p in _table(applied, "SELECT user_id, seq, profile::text FROM users"))
    all_copied_seqs = {s for _u, s, _p in _table(copied, "SELECT user_id, seq, profile::text FROM users")}
    assert set(final_seqs) <= all_copied_seqs and all(len(str(s)) == 56 for s in final_seqs)
    # the final statuses and instances are among the copied row versions (ids aside)
    status_cols = "drill_slug, place_in_sequence, drill_instance_id, started_time, completed_time"
    assert set(_table(applied, f"SELECT {status_cols} FROM drill_statuses")) <= set(
        _table(copied, f"SELECT {status_cols} FROM drill_statuses")
    )
    instance_cols = (
        "phone_number, drill_slug, current_prompt_slug, current_prompt_start_time, "
        "current_prompt_last_response_time, completion_time, is_valid"
    )
    assert set(_table(applied, f"SELECT {instance_cols} FROM drill_instances")) <= set(
        _table(copied, f"SELECT {instance_cols} FROM drill_instances")
    )


AGGREGATE_SQL = (
    "SELECT user_id, seq, profile::text, last_interacted_time FROM users",
    "SELECT id, phone_number, user_id, is_primary FROM phone_numbers",
    "SELECT id, user_id, drill_instance_id, drill_slug, place_in_sequence, started_time, completed_time "
    "FROM drill_statuses",
    "SELECT drill_instance_id, user_id, phone_number, drill_slug, current_prompt_slug, current_prompt_start_time, "
    "current_prompt_last_response_time, completion_time, is_valid FROM drill_instances",
    "SELECT idempotency_key, command_type, partition_key, payload::text FROM command_outbox",
    "SELECT phone_number, raw_data FROM event_history",  # (sequence numbers are per shard)
)


def test_shards_applied_at_once_end_in_the_one_shard_state_and_their_cpu_is_read(drill_db, second_db, pg_server):
    """The parallel figure's run: 3 shards in 3 processes apply every record of the headline's users
    (each user on one shard, in stream order) and end in exactly the state one shard ends in; the
    server's CPU is read from /proc."""
    records = bench_ingest.stream_records(USERS)
    _seconds, _cpu, stats = bench_ingest._apply_path(drill_db.engine, records, 25)
    assert stats.batches_applied == len(records)
    shards = [bench_ingest.shard_records(USERS, 3, i) for i in range(3)]
    assert sorted(r for shard in shards for r in shard) == sorted(records)
    for shard in shards:  # a user's batches in their order, on one shard
        phones = [phone for phone, _ in shard]
        assert {phones.count(p) for p in phones} == {bench_ingest.BATCHES_PER_USER}
    run = bench_ingest.parallel_apply(second_db.url, pg_server.datadir, USERS, 25, 3)
    assert run["records"] == len(records) and run["seconds"] > 0 and run["python_cpu"] > 0
    assert run["postgres_cpu"] > 0
    for sql in AGGREGATE_SQL:
        assert _table(second_db.engine, sql) == _table(drill_db.engine, sql), sql
    with second_db.engine.connect() as conn:
        checkpoints = conn.exec_driver_sql("SELECT shard_id, records_applied FROM stream_checkpoints").all()
    assert sorted(checkpoints) == [(f"bench-shard-{i}", len(shards[i])) for i in range(3)]


def test_server_cpu_counts_the_servers_processes_only(drill_db, pg_server, tmp_path):
    before = cpu.server_cpu_seconds(pg_server.datadir)
    with drill_db.engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM generate_series(1, 10000000)").scalar()
        after = cpu.server_cpu_seconds(pg_server.datadir)  # read while the connection is open
    assert after - before >= 0.5  # the backend's work (1 to 2 s of CPU)
    assert cpu.server_cpu_seconds(tmp_path) is None  # no server there
