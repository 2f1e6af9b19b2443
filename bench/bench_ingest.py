"""Ingestion benchmark: the set-based apply path, the per-event baseline like for like, a backlog
drained end to end through the emulator, and peak memory.

Sizes (env): INGEST_BENCH_USERS (10000 users x 10 events in batches of 3,3,2,2: the apply path),
INGEST_BENCH_BASELINE_USERS (2000: the per-event baseline and the apply path on the same records),
INGEST_BENCH_BACKLOG_EVENTS (100000: the backlog drain), INGEST_BENCH_MICRO_BATCH (500),
INGEST_BENCH_SHARDS (2), INGEST_BENCH_REPEAT (3: fresh-database runs of each measured path; the
median is the figure and every run is printed, because on a shared 2-core machine the same run
varies by a third from one minute to the next).

The apply path overlaps two micro-batches (parse/load/fold of the next while the previous one is
written), so its time split has two columns: the main thread (parse, db_load, fold: these add up
to at most the wall time) and the writer thread (db_write, overlapping them).
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

from bench import baseline_ingest
from devtools import aggregate, streams
from drill_progress.ingest import pipeline
from drill_progress.setup.aws_resources import ensure_stream

STREAM = "bench-dialog-events"
EVENTS_PER_USER = 10
NS = uuid.UUID("0b5e1c2a-9d4f-4e3b-8a7c-6f5d4c3b2a19")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PROFILE = {
    "validated": True,
    "opted_out": False,
    "is_demo": False,
    "name": None,
    "language": "en",
    "account_info": {"employer_id": 7, "unit_id": 1},
}


def _event(phone: str, n: int, kind: str, minute: int, **extra) -> dict:
    doc = {
        "event_id": str(uuid.uuid5(NS, f"{phone}:{n}")),
        "event_type": kind,
        "phone_number": phone,
        "created_time": (T0 + timedelta(minutes=minute)).isoformat(),
        "schema_version": 1,
        "user_profile": PROFILE,
    }
    doc.update(extra)
    return doc


def user_batches(u: int) -> list[bytes]:
    """One user's 10 events in 4 batches of 3, 3, 2, 2 events."""
    phone = f"+1555{u:07d}"
    i1, i2 = str(uuid.uuid5(NS, f"{phone}:i1")), str(uuid.uuid5(NS, f"{phone}:i2"))
    prompt = lambda slug: {"slug": slug, "messages": []}  # noqa: E731
    m = u % 600
    batches = [
        [
            _event(phone, 1, "USER_VALIDATED", m, code_validation_payload={"valid": True}),
            _event(
                phone,
                2,
                "DRILL_STARTED",
                m + 1,
                drill={"slug": "01-sample-drill", "name": "01", "prompts": []},
                drill_instance_id=i1,
                first_prompt=prompt("q1"),
            ),
            _event(phone, 3, "COMPLETED_PROMPT", m + 2, prompt=prompt("q1"), response="a", drill_instance_id=i1),
        ],
        [
            _event(phone, 4, "ADVANCED_TO_NEXT_PROMPT", m + 3, prompt=prompt("q2"), drill_instance_id=i1),
            _event(
                phone,
                5,
                "FAILED_PROMPT",
                m + 4,
                prompt=prompt("q2"),
                response="x",
                abandoned=False,
                drill_instance_id=i1,
            ),
            _event(phone, 6, "COMPLETED_PROMPT", m + 5, prompt=prompt("q2"), response="b", drill_instance_id=i1),
        ],
        [
            _event(phone, 7, "DRILL_COMPLETED", m + 6, drill_instance_id=i1),
            _event(phone, 8, "NEXT_DRILL_REQUESTED", m + 7),
        ],
        [
            _event(
                phone,
                9,
                "DRILL_STARTED",
                m + 8,
                drill={"slug": "02-sample-drill", "name": "02", "prompts": []},
                drill_instance_id=i2,
                first_prompt=prompt("q1"),
            ),
            _event(phone, 10, "REMINDER_TRIGGERED", m + 9),
        ],
    ]
    return [
        json.dumps(
            {
                "batch_id": str(uuid.uuid5(NS, f"{phone}:b{seq}")),
                "seq": str(seq),
                "phone_number": phone,
                "created_time": events[-1]["created_time"],
                "events": events,
            }
        ).encode()
        for seq, events in enumerate(batches, 1)
    ]


def stream_records(users: int) -> list[tuple[str, bytes]]:
    """(partition key, data) in stream order: every user's batch 1, then every user's batch 2, ..."""
    per_user = [(f"+1555{u:07d}", user_batches(u)) for u in range(users)]
    return [(phone, batches[r]) for r in range(4) for phone, batches in per_user]


def apply_path(engine, records: list[tuple[str, bytes]], micro_batch: int) -> tuple[float, pipeline.ShardStats]:
    seconds, _cpu, stats = _apply_path(engine, records, micro_batch)
    return seconds, stats


def _apply_path(engine, records: list[tuple[str, bytes]], micro_batch: int):
    """(wall seconds, this process's CPU seconds, stats): on a shared machine the CPU seconds show
    how much of the wall time was Python, the rest being PostgreSQL's work and waiting for a core."""
    raws = [pipeline.RawRecord(f"{n:020d}", pk, data) for n, (pk, data) in enumerate(records, 1)]
    applier = pipeline.Applier(engine, STREAM, "bench-shard")
    started, cpu = time.perf_counter(), time.process_time()
    applier.apply_pages((raws[i : i + micro_batch], 0) for i in range(0, len(raws), micro_batch))
    return time.perf_counter() - started, time.process_time() - cpu, applier.stats


def _count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()


def _median_run(measure, repeat: int):
    """Run `measure()` (-> (seconds, *rest)) `repeat` times; (median run, all runs sorted)."""
    done = sorted((measure() for _ in range(repeat)), key=lambda r: r[0])
    return done[len(done) // 2], done


def run(ctx) -> list[dict]:
    users = ctx.size("INGEST_BENCH_USERS", 10000)
    baseline_users = ctx.size("INGEST_BENCH_BASELINE_USERS", 2000)
    backlog_events = ctx.size("INGEST_BENCH_BACKLOG_EVENTS", 100_000)
    micro_batch = ctx.size("INGEST_BENCH_MICRO_BATCH", 500)
    shards = ctx.size("INGEST_BENCH_SHARDS", 2)
    repeat = max(1, ctx.size("INGEST_BENCH_REPEAT", 3))
    out: list[dict] = []
    out += _apply_path_figures(ctx, users, micro_batch, repeat)
    out += _baseline_figures(ctx, baseline_users, micro_batch, repeat)
    out += _backlog_figures(ctx, backlog_events // EVENTS_PER_USER, micro_batch, shards)
    out += _memory_figures(ctx, min(users, 2000), micro_batch)
    return out


def _apply_path_figures(ctx, users: int, micro_batch: int, repeat: int) -> list[dict]:
    """The set-based apply path (parse + validate + load + fold + write + checkpoint) on fresh
    databases; the median run is the figure."""
    records = stream_records(users)
    events = users * EVENTS_PER_USER

    def measure():
        _url, engine = ctx.new_database("ingest_apply")
        seconds, python_cpu, stats = _apply_path(engine, records, micro_batch)
        assert stats.batches_applied == len(records), stats.as_dict()
        assert _count(engine, "command_outbox") == 2 * users
        return seconds, python_cpu, stats, engine

    (seconds, python_cpu, stats, engine), done = _median_run(measure, repeat)
    for *_rest, other in done:
        if other is not engine:
            other.dispose()
    out = [
        {
            "metric": "ingest.apply.events_per_s",
            "value": round(events / seconds),
            "unit": "events/s",
            "users": users,
            "events": events,
            "records": len(records),
            "micro_batch": micro_batch,
            "seconds": round(seconds, 2),
            "of_runs": repeat,
            "runs_events_per_s": [round(events / r[0]) for r in done],
        },
        {"metric": "ingest.apply.best_events_per_s", "value": round(events / done[0][0]), "unit": "events/s"},
        {"metric": "ingest.apply.transactions", "value": stats.transactions, "unit": "transactions"},
        {
            "metric": "ingest.apply.python_cpu_seconds",
            "value": round(python_cpu, 2),
            "unit": "s",
            "load_average": round(os.getloadavg()[0], 1),
        },
    ]
    for part, spent in stats.timings.items():
        if part != "get_records":
            thread = "writer" if part == "db_write" else "main"
            out.append(
                {"metric": f"ingest.apply.seconds.{part}", "value": round(spent, 3), "unit": "s", "thread": thread}
            )
    # re-delivery of everything: all skipped by the seq guard
    seconds_dup, dup_stats = apply_path(engine, records, micro_batch)
    assert dup_stats.duplicates_skipped == len(records)
    out.append(
        {"metric": "ingest.apply.redelivery_events_per_s", "value": round(events / seconds_dup), "unit": "events/s"}
    )
    engine.dispose()
    return out


def _baseline_figures(ctx, users: int, micro_batch: int, repeat: int) -> list[dict]:
    """Like for like: the per-event baseline and the apply path on the same records, the same number
    of fresh-database runs each, medians of both, and the same end state checked before the ratio."""
    records = stream_records(users)
    events = users * EVENTS_PER_USER

    def baseline():
        url, engine = ctx.new_database("ingest_baseline")
        started = time.perf_counter()
        applied = baseline_ingest.apply_batches(url, [data for _, data in records])
        seconds = time.perf_counter() - started
        assert applied == len(records)
        state = aggregate.aggregate_checksum(engine)
        engine.dispose()
        return seconds, state

    def apply():
        _url, engine = ctx.new_database("ingest_apply_small")
        seconds, _cpu, _stats = _apply_path(engine, records, micro_batch)
        state = aggregate.aggregate_checksum(engine)
        engine.dispose()
        return seconds, state

    (base_seconds, base_state), _ = _median_run(baseline, repeat)
    (apply_seconds, apply_state), _ = _median_run(apply, repeat)
    assert base_state == apply_state, "the baseline and the apply path end in different states"
    return [
        {
            "metric": "ingest.baseline.events_per_s",
            "value": round(events / base_seconds),
            "unit": "events/s",
            "users": users,
            "seconds": round(base_seconds, 2),
            "of_runs": repeat,
        },
        {
            "metric": "ingest.apply.same_events_per_s",
            "value": round(events / apply_seconds),
            "unit": "events/s",
            "users": users,
            "seconds": round(apply_seconds, 2),
            "of_runs": repeat,
        },
        {
            "metric": "ingest.apply.speedup_vs_baseline",
            "value": round(base_seconds / apply_seconds, 1),
            "unit": "x",
            "end_states": f"equal ({apply_state['all'][:12]})",
        },
    ]


def _consume_one_shard(url: str, endpoint: str, stream: str, shard_id: str, commands: str, micro_batch: int) -> dict:
    """One shard task of the DAG, in a process of its own (the bench's backlog drain)."""
    import boto3

    from drill_progress.db import make_engine
    from drill_progress.ingest import consumer

    engine = make_engine(url, "ingest")
    kinesis = boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    stats = consumer.consume_shard(
        engine,
        kinesis,
        stream,
        shard_id,
        command_stream=commands,
        bounds=consumer.Bounds.catch_up(max_records=10**9, max_seconds=600),
        micro_batch_records=micro_batch,
    )
    engine.dispose()
    return stats.as_dict()


def _backlog_figures(ctx, users: int, micro_batch: int, shards: int) -> list[dict]:
    """A backlog on the stream drained end to end through the emulator, as the DAG does it: one
    process per shard (one task per shard), each reading, applying and publishing its commands."""
    import multiprocessing

    from drill_progress.ingest import runs as ingest_runs

    kinesis = ctx.boto3_client("kinesis")
    stream, commands = f"{STREAM}-{int(time.time())}", f"bench-commands-{int(time.time())}"
    ensure_stream(kinesis, stream, shards)
    ensure_stream(kinesis, commands, 1)
    records = stream_records(users)
    for i in range(0, len(records), 500):
        kinesis.put_records(
            StreamName=stream, Records=[{"PartitionKey": pk, "Data": data} for pk, data in records[i : i + 500]]
        )
    url, engine = ctx.new_database("ingest_backlog")
    shard_ids = ingest_runs.plan_shards(engine, kinesis, stream)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(len(shard_ids)) as pool:
        results = pool.starmap(
            _consume_one_shard,
            [(url, ctx.moto.endpoint_url, stream, shard_id, commands, micro_batch) for shard_id in shard_ids],
        )
    seconds = time.perf_counter() - started
    read = sum(r["records_read"] for r in results)
    published = sum(r["commands_published"] for r in results)
    on_stream = sum(1 for _ in streams.read_all(kinesis, commands))
    assert read == len(records) and published == on_stream == 2 * users, (read, published, on_stream)
    assert _count(engine, "command_outbox WHERE published_at IS NULL") == 0
    engine.dispose()
    events = users * EVENTS_PER_USER
    return [
        {
            "metric": "ingest.backlog.seconds",
            "value": round(seconds, 2),
            "unit": "s",
            "events": events,
            "records": len(records),
            "shards": len(shard_ids),
            "commands_published": published,
            "note": "one process per shard, read + apply + publish, through the emulator",
        },
        {"metric": "ingest.backlog.events_per_s", "value": round(events / seconds), "unit": "events/s"},
    ]


def _memory_figures(ctx, users: int, micro_batch: int) -> list[dict]:
    """Peak Python memory of an ingestion run (tracemalloc slows the run, so it is timed apart)."""
    _url, mem_engine = ctx.new_database("ingest_mem")
    mem_records = stream_records(users)
    tracemalloc.start()
    apply_path(mem_engine, mem_records, micro_batch)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mem_engine.dispose()
    return [
        {
            "metric": "ingest.apply.peak_python_memory",
            "value": round(peak / 2**20, 1),
            "unit": "MiB",
            "records": len(mem_records),
            "micro_batch": micro_batch,
        }
    ]
