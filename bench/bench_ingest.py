"""Ingestion benchmark: the set-based apply path (one shard, then several shards at once, one
process each), the CPU it costs per event, the per-event baseline like for like, a backlog drained
end to end through the emulator, and peak memory.

Sizes (env): INGEST_BENCH_USERS (10000 users x 10 events in batches of 3,3,2,2: the apply path),
INGEST_BENCH_BASELINE_USERS (2000: the per-event baseline and the apply path on the same records),
INGEST_BENCH_BACKLOG_EVENTS (100000: the backlog drain), INGEST_BENCH_MICRO_BATCH (500),
INGEST_BENCH_SHARDS (2: the backlog's), INGEST_BENCH_PARALLEL_SHARDS (one per two cores, at least 2:
shards applied at once on the headline's records), INGEST_BENCH_REPEAT (3: fresh-database runs of
each measured path; the median is the figure and every run is printed, because on a shared 2-core
machine the same run varies by a third from one minute to the next).

The apply path overlaps two micro-batches (parse/load/fold of the next while the previous one is
written), so its time split has two columns: the main thread (parse, db_load, fold: these add up
to at most the wall time) and the writer thread (db_write, overlapping them).
"""

from __future__ import annotations

import os
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

from bench import baseline_ingest, copy_ceiling, cpu
from devtools import aggregate, streams
from devtools import simulator as sim
from drill_progress import config
from drill_progress.db import make_engine
from drill_progress.ingest import pipeline
from drill_progress.setup.aws_resources import ensure_stream

STREAM = "bench-dialog-events"
EVENTS_PER_USER = 10
BATCHES_PER_USER = 4
NS = uuid.UUID("0b5e1c2a-9d4f-4e3b-8a7c-6f5d4c3b2a19")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
# The real producer's shapes (devtools.simulator builds them like tests/ingest/data/real-producer):
# a validated user's profile with its seven self ratings and employer/unit names, full drill objects.
PROFILE = sim.profile(validated=True, account=sim.account_info(7, 1))
DRILLS = {slug: sim.drill(slug, n) for n, slug in enumerate(config.INITIAL_CATALOG, 1)}


def seq(u: int, r: int) -> int:
    """The `seq` of user u's batch r (0-based): a 56-digit Kinesis sequence number, as the real
    producer stamps its batches, increasing per phone number and over the stream order of
    `stream_records` (every user's batch 1, then every user's batch 2, ...), like one shard's."""
    micros = int(T0.timestamp()) * 10**6 + r
    return sim.SEQ_PREFIX * 10**25 + micros * 10**9 + u


def _event(phone: str, n: int, kind: str, minute: int, **extra) -> dict:
    at = T0 + timedelta(minutes=minute, microseconds=n * 317)
    return sim.event(kind, str(uuid.uuid5(NS, f"{phone}:{n}")), phone, sim.iso(at), PROFILE, **extra)


def user_batches(u: int) -> list[bytes]:
    """One user's 10 events in 4 batches of 3, 3, 2, 2 events, shaped like the real producer's."""
    phone = f"+1555{u:07d}"
    i1, i2 = str(uuid.uuid5(NS, f"{phone}:i1")), str(uuid.uuid5(NS, f"{phone}:i2"))
    d1, d2 = DRILLS["01-sample-drill"], DRILLS["02-sample-drill"]
    p1, p2 = d1["prompts"][0], d1["prompts"][1]
    validation = {"is_demo": False, "account_info": PROFILE["account_info"], "valid": True}
    m = u % 600
    batches = [
        [
            _event(phone, 1, "USER_VALIDATED", m, code_validation_payload=validation),
            _event(phone, 2, "DRILL_STARTED", m + 1, first_prompt=p1, drill_instance_id=i1, drill=d1),
            _event(phone, 3, "COMPLETED_PROMPT", m + 2, drill_instance_id=i1, prompt=p1, response="b)"),
        ],
        [
            _event(phone, 4, "ADVANCED_TO_NEXT_PROMPT", m + 3, drill_instance_id=i1, prompt=p2),
            _event(phone, 5, "FAILED_PROMPT", m + 4, abandoned=False, drill_instance_id=i1, prompt=p2, response="e"),
            _event(phone, 6, "COMPLETED_PROMPT", m + 5, drill_instance_id=i1, prompt=p2, response="c)"),
        ],
        [
            _event(phone, 7, "DRILL_COMPLETED", m + 6, drill_instance_id=i1),
            _event(phone, 8, "NEXT_DRILL_REQUESTED", m + 7),
        ],
        [
            _event(phone, 9, "DRILL_STARTED", m + 8, first_prompt=d2["prompts"][0], drill_instance_id=i2, drill=d2),
            _event(phone, 10, "REMINDER_TRIGGERED", m + 9),
        ],
    ]
    return [
        sim.encode(
            sim.batch(
                str(uuid.uuid5(NS, f"{phone}:b{r}")),
                seq(u, r),
                phone,
                sim.iso(datetime.fromisoformat(events[-1]["created_time"]) + timedelta(microseconds=41)),
                events,
            )
        )
        for r, events in enumerate(batches)
    ]


def stream_records(users: int) -> list[tuple[str, bytes]]:
    """(partition key, data) in stream order: every user's batch 1, then every user's batch 2, ..."""
    return shard_records(users, 1, 0)


def apply_path(engine, records: list[tuple[str, bytes]], micro_batch: int) -> tuple[float, pipeline.ShardStats]:
    seconds, _cpu, stats = _apply_path(engine, records, micro_batch)
    return seconds, stats


def _apply_path(engine, records: list[tuple[str, bytes]], micro_batch: int, shard_id: str = "bench-shard"):
    """(wall seconds, this process's CPU seconds, stats): on a shared machine the CPU seconds show
    how much of the wall time was Python, the rest being PostgreSQL's work and waiting for a core."""
    raws = [pipeline.RawRecord(f"{n:020d}", pk, data) for n, (pk, data) in enumerate(records, 1)]
    applier = pipeline.Applier(engine, STREAM, shard_id)
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
    parallel = max(1, ctx.size("INGEST_BENCH_PARALLEL_SHARDS", default_parallel_shards()))
    repeat = max(1, ctx.size("INGEST_BENCH_REPEAT", 3))
    out: list[dict] = []
    out += _apply_path_figures(ctx, users, micro_batch, repeat)
    out += _parallel_figures(ctx, users, micro_batch, parallel, repeat)
    out += _baseline_figures(ctx, baseline_users, micro_batch, repeat)
    out += _backlog_figures(ctx, backlog_events // EVENTS_PER_USER, micro_batch, shards)
    out += _memory_figures(ctx, min(users, 2000), micro_batch)
    return out


SYNC_ON = {"synchronous_commit": "on"}  # production's setting (the bench server's default is off)


def _synchronous_commit(engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SHOW synchronous_commit").scalar()


def _apply_path_figures(ctx, users: int, micro_batch: int, repeat: int) -> list[dict]:
    """The set-based apply path (parse + validate + load + fold + write + checkpoint) on fresh
    databases, with synchronous_commit on (production's setting: the headline) and off (the bench
    server's default), and the ceiling: the same rows COPYed into the same tables, committed per
    micro-batch with synchronous_commit on. The median run is each figure."""
    records = stream_records(users)
    events = users * EVENTS_PER_USER

    def measure(settings: dict | None, expect: str):
        _url, engine = ctx.new_database("ingest_apply", settings=settings)
        assert _synchronous_commit(engine) == expect
        server_before = cpu.server_cpu_seconds(ctx.pg.datadir)
        seconds, python_cpu, stats = _apply_path(engine, records, micro_batch)
        server_after = cpu.server_cpu_seconds(ctx.pg.datadir)  # the pool's connections are still open
        assert stats.batches_applied == len(records), stats.as_dict()
        assert _count(engine, "command_outbox") == 2 * users
        postgres_cpu = None if server_before is None else server_after - server_before
        return seconds, (python_cpu, postgres_cpu), stats, engine

    def median_of(settings, expect):
        (seconds, cpus, stats, engine), done = _median_run(lambda: measure(settings, expect), repeat)
        for *_rest, other in done:
            if other is not engine:
                other.dispose()
        return seconds, cpus, stats, engine, done

    async_seconds, _cpu, _stats, async_engine, async_done = median_of(None, "off")
    async_engine.dispose()
    seconds, (python_cpu, postgres_cpu), stats, engine, done = median_of(SYNC_ON, "on")
    ceiling = _copy_ceiling(ctx, records, micro_batch, repeat, events, stats.transactions)
    out = [
        {
            "metric": "ingest.apply.events_per_s",
            "value": round(events / seconds),
            "unit": "events/s",
            "synchronous_commit": "on",
            "users": users,
            "events": events,
            "records": len(records),
            "record_bytes_mean": round(sum(len(d) for _, d in records) / len(records)),
            "micro_batch": micro_batch,
            "seconds": round(seconds, 2),
            "of_runs": repeat,
            "runs_events_per_s": [round(events / r[0]) for r in done],
        },
        {
            "metric": "ingest.apply.events_per_s_async_commit",
            "value": round(events / async_seconds),
            "unit": "events/s",
            "synchronous_commit": "off",
            "seconds": round(async_seconds, 2),
            "of_runs": repeat,
            "runs_events_per_s": [round(events / r[0]) for r in async_done],
        },
        *ceiling,
        {
            "metric": "ingest.apply.ratio_to_copy_ceiling",
            "value": round((events / seconds) / ceiling[0]["value"], 2),
            "unit": "x",
            "note": "apply path (synchronous_commit on) / COPY of the same rows (synchronous_commit on)",
        },
        {"metric": "ingest.apply.best_events_per_s", "value": round(events / done[0][0]), "unit": "events/s"},
        {"metric": "ingest.apply.transactions", "value": stats.transactions, "unit": "transactions"},
        {
            "metric": "ingest.apply.python_cpu_seconds",
            "value": round(python_cpu, 2),
            "unit": "s",
            "load_average": round(os.getloadavg()[0], 1),
        },
        *_cpu_figures(events, python_cpu, postgres_cpu),
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


TARGET_EVENTS_PER_S = 30_000  # issue 21's figure for the apply path


def _cpu_figures(events: int, python_cpu: float, postgres_cpu: float | None) -> list[dict]:
    """CPU per event of the apply path, Python's and PostgreSQL's (the server's processes, read in
    /proc), and the cores that TARGET_EVENTS_PER_S takes at that cost: the figure that carries from
    this machine to another one, whatever the cores each has."""
    if postgres_cpu is None:  # no /proc: the split cannot be read here
        return []
    python_us, postgres_us = python_cpu / events * 1e6, postgres_cpu / events * 1e6
    return [
        {
            "metric": "ingest.apply.cpu_us_per_event",
            "value": round(python_us + postgres_us, 1),
            "unit": "core-us/event",
            "python": round(python_us, 1),
            "postgresql": round(postgres_us, 1),
            "cores": os.cpu_count(),
        },
        {
            "metric": "ingest.apply.cores_for_target",
            "value": round(TARGET_EVENTS_PER_S * (python_us + postgres_us) / 1e6, 1),
            "unit": "cores",
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "note": "cores busy at the target, Python and PostgreSQL together, at the CPU per event measured",
        },
    ]


def _parallel_figures(ctx, users: int, micro_batch: int, shards: int, repeat: int) -> list[dict]:
    """The apply path as production scales it: `shards` shards applied at once, one process each,
    on one database (synchronous_commit on), the same users and records as the headline. The
    median of `repeat` fresh-database runs."""

    def measure():
        url, engine = ctx.new_database("ingest_parallel", settings=SYNC_ON)
        engine.dispose()
        run = parallel_apply(url, ctx.pg.datadir, users, micro_batch, shards)
        return run["seconds"], run

    (seconds, run), done = _median_run(measure, repeat)
    events = users * EVENTS_PER_USER
    figure = {
        "metric": "ingest.apply.parallel_events_per_s",
        "value": round(events / seconds),
        "unit": "events/s",
        "shards": shards,
        "processes": shards,
        "cores": os.cpu_count(),
        "synchronous_commit": "on",
        "seconds": round(seconds, 2),
        "python_cpu_seconds": round(run["python_cpu"], 2),
        "of_runs": repeat,
        "runs_events_per_s": [round(events / r[0]) for r in done],
        "note": "one process per shard, as one task per shard runs in production",
    }
    if run["postgres_cpu"] is not None:
        figure["postgres_cpu_seconds"] = round(run["postgres_cpu"], 2)
    return [figure]


def _copy_ceiling(ctx, records, micro_batch: int, repeat: int, events: int, transactions: int) -> list[dict]:
    """Every row the apply path writes (recorded in a run of its own, untimed), COPYed into the
    same tables of fresh databases on the same server, one transaction per micro-batch, with
    synchronous_commit on (bench/copy_ceiling.py says how updated rows are written)."""
    record_url, engine = ctx.new_database("ingest_apply_record")
    with copy_ceiling.record_writes() as captured:
        _seconds, _cpu, stats = _apply_path(engine, records, micro_batch)
    written = {t: _count(engine, t) for t in ("users", "phone_numbers", "drill_statuses", "command_outbox")}
    engine.dispose()
    assert len(captured) == stats.transactions == transactions, (len(captured), stats.transactions, transactions)
    rows = copy_ceiling.row_counts(captured)
    # the recorded rows are the apply path's: as many new rows as the tables hold in the end
    assert rows["phone_numbers"] == written["phone_numbers"] and rows["command_outbox"] == written["command_outbox"]
    assert rows["users"] >= written["users"] and rows["drill_statuses"] >= written["drill_statuses"]
    blocks = copy_ceiling.render(captured, record_url)

    def measure():
        url, engine = ctx.new_database("ingest_copy_ceiling", settings=SYNC_ON)
        engine.dispose()
        seconds, mode = copy_ceiling.copy_micro_batches(url, blocks)
        assert mode == "on"
        check = make_engine(url)
        copied = {t: _count(check, t) for t in rows}
        check.dispose()
        assert copied == rows, (copied, rows)
        return (seconds,)

    (seconds,), done = _median_run(measure, repeat)
    return [
        {
            "metric": "ingest.apply.copy_ceiling_events_per_s",
            "value": round(events / seconds),
            "unit": "events/s",
            "synchronous_commit": "on",
            "seconds": round(seconds, 2),
            "transactions": len(blocks),
            "rows": rows,
            "rows_total": sum(rows.values()),
            "of_runs": repeat,
            "runs_events_per_s": [round(events / r[0]) for r in done],
            "note": "the apply path's rows (inserts and new row versions) COPYed, one commit per micro-batch",
        }
    ]


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


def default_parallel_shards() -> int:
    """Shards applied at once by default: one per two cores (a shard keeps about one core of
    Python and one of PostgreSQL busy), at least 2."""
    return max(2, (os.cpu_count() or 2) // 2)


def shard_records(users: int, shards: int, shard: int) -> list[tuple[str, bytes]]:
    """The records of the users of one of `shards` shards (user u on shard u % shards), in stream order."""
    per_user = [(f"+1555{u:07d}", user_batches(u)) for u in range(shard, users, shards)]
    return [(phone, batches[r]) for r in range(BATCHES_PER_USER) for phone, batches in per_user]


def _apply_one_shard(url: str, users: int, shards: int, shard: int, micro_batch: int, start, end, results) -> None:
    """One shard's apply path in a process of its own (as the DAG runs one task per shard): its
    records built first, then applied from the moment every shard is ready (`start`); its
    connections stay open until every shard is done (`end`), so that their CPU can be read."""
    records = shard_records(users, shards, shard)
    engine = make_engine(url, "ingest")
    start.wait()
    seconds, python_cpu, stats = _apply_path(engine, records, micro_batch, f"bench-shard-{shard}")
    ended = time.time()  # wall clock: comparable between the processes
    results.put((ended - seconds, ended, python_cpu, stats.batches_applied, len(records)))
    end.wait()
    engine.dispose()


def parallel_apply(url: str, datadir, users: int, micro_batch: int, shards: int) -> dict:
    """The apply path of `users` users' records spread over `shards` shards applied at once, one
    process per shard, on one database: wall seconds from the first shard's start to the last one's
    end, and the CPU seconds of the shards' processes and of the PostgreSQL server meanwhile."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    start, end, results = spawn.Barrier(shards + 1), spawn.Barrier(shards + 1), spawn.Queue()
    workers = [
        spawn.Process(target=_apply_one_shard, args=(url, users, shards, i, micro_batch, start, end, results))
        for i in range(shards)
    ]
    for worker in workers:
        worker.start()
    try:
        start.wait(timeout=600)
        server_before = cpu.server_cpu_seconds(datadir)
        done = [results.get(timeout=1800) for _ in workers]
        server_after = cpu.server_cpu_seconds(datadir)
        end.wait(timeout=60)
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    applied, records = sum(d[3] for d in done), sum(d[4] for d in done)
    assert applied == records, (applied, records)
    return {
        "seconds": max(d[1] for d in done) - min(d[0] for d in done),
        "python_cpu": sum(d[2] for d in done),
        "postgres_cpu": None if server_before is None else server_after - server_before,
        "records": records,
    }


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
