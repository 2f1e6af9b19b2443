"""Retention and publishing cost of the command outbox (issue 15), against a real PostgreSQL.

1. **Publishing before and after migration 0011**, the same commands through the same statements
   each schema is published with: before (migrations up to 0009: `published_at` in two indexes,
   fillfactor 100) the claim reads `WHERE published_at IS NULL` and the stamp is a non-HOT UPDATE;
   after, pending rows are claimed from `command_outbox_pending` and the stamp is a HOT UPDATE.
   Figures per command: time, WAL bytes, share of HOT updates (pg_stat_user_tables), table size.
   Size: MAINTENANCE_BENCH_PUBLISH_ROWS (default 200,000), in chunks of 500 as publish_pending does.

2. **A year of outbox rows, pruned to 30 days**: a *scaled* simulation. At a million users the
   outbox gains ~700,000 START_DRILLs a day (~255 million rows, ~110 GB a year), more than this
   shared machine holds; the bench seeds MAINTENANCE_BENCH_ROWS_PER_DAY (default 10,000, 1/70 of
   that rate) for 365 days, in time order, published a few seconds after creation, a few never
   published. Then drill_progress_maintenance's own prune (`prune.prune_drill_database`, batches
   of 10,000 rows, a commit each) with a 30-day retention, while a publisher enqueues and stamps
   commands next to it (its latency shows whether the prune holds locks); then a steady-state
   day: one more day of rows, pruned again. The prune is linear in the rows it deletes (fixed-size
   batches read in primary-key order), so the daily figure is extrapolated to 700,000 rows a day.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drill_progress import db, outbox
from drill_progress.maintenance import prune
from drill_progress.outbox import commands
from drill_progress.setup import migrations

CHUNK = 500
FULL_SCALE_ROWS_PER_DAY = 700_000  # START_DRILLs a day at a million users (issue 15)

# How commands were claimed and stamped before migration 0011 (include/sql/outbox at 0009).
CLAIM_BEFORE = """
SELECT id, idempotency_key, command_type, partition_key, payload::text
FROM command_outbox
WHERE published_at IS NULL
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED"""
MARK_BEFORE = """
UPDATE command_outbox
SET published_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY (%(ids)s::bigint[])"""

SEED_YEAR = """
INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, created_at,
                            published_at, attempts)
SELECT 'start-drill:' || md5(g::text) || ':01-sample-drill:' || to_char(t, 'YYYY-MM-DD'),
       'START_DRILL', '+1555' || lpad((g %% 10000000)::text, 7, '0'),
       jsonb_build_object('phone_number', '+1555' || lpad((g %% 10000000)::text, 7, '0'),
                          'drill_slug', '01-sample-drill'),
       'scheduling', t,
       CASE WHEN g %% 100000 <> 7 THEN t + (g %% 30) * interval '1 second' END,  -- a few never published
       1
FROM (SELECT g, %(start)s::timestamptz + (g::float8 / %(rows)s) * %(span)s::interval AS t
      FROM generate_series(0, %(rows)s - 1) AS g) AS s
ORDER BY t"""


def _schema_before(ctx):
    """A database at migration 0009: the outbox as it was before this issue."""
    _, engine = ctx.new_database("outbox_before", migrated=False)
    with tempfile.TemporaryDirectory() as folder:
        for m in migrations.discover():
            if m.version < 11:
                (Path(folder) / m.path.name).write_bytes(m.path.read_bytes())
        migrations.apply_migrations(engine, Path(folder))
    return engine


def _wal(conn) -> str:
    return conn.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar()


def _wal_since(conn, lsn: str) -> int:
    return int(conn.exec_driver_sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %(l)s)", {"l": lsn}).scalar())


def _autocommit(engine, sql: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(sql)


def _commands(n: int, offset: int = 0) -> list[commands.Command]:
    return [
        commands.start_drill(f"+1555{(offset + i) % 10_000_000:07d}", "01-sample-drill", f"start-drill:{offset + i}")
        for i in range(n)
    ]


def _publish_once(engine, claim, mark) -> int:
    """One publish_pending chunk without Kinesis: claim, then stamp, in one transaction."""
    with engine.begin() as conn:
        rows = claim(conn)
        if rows:
            mark(conn, [r[0] for r in rows])
        return len(rows)


def _publish_cost(engine, label: str, rows: int, claim, mark) -> list[dict]:
    started = time.perf_counter()
    with engine.connect() as conn:
        lsn = _wal(conn)
    for offset in range(0, rows, CHUNK):
        with engine.begin() as conn:
            outbox.enqueue(conn, _commands(min(CHUNK, rows - offset), offset), "bench")
    enqueue_seconds = time.perf_counter() - started
    with engine.connect() as conn:
        enqueue_wal = _wal_since(conn, lsn)
        conn.exec_driver_sql("SELECT pg_stat_reset()")
        lsn = _wal(conn)
    started = time.perf_counter()
    while _publish_once(engine, claim, mark):
        pass
    publish_seconds = time.perf_counter() - started
    with engine.connect() as conn:
        publish_wal = _wal_since(conn, lsn)
    engine.dispose()  # the backends that published flush their statistics as they exit
    time.sleep(1)
    with engine.connect() as conn:
        updates, hot = conn.exec_driver_sql(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'command_outbox'"
        ).one()
        total, heap = conn.exec_driver_sql(
            "SELECT pg_total_relation_size('command_outbox'), pg_relation_size('command_outbox')"
        ).one()
        indexes = conn.exec_driver_sql("SELECT count(*) FROM pg_indexes WHERE tablename = 'command_outbox'").scalar()
    common = {"schema": label, "rows": rows}
    return [
        {"metric": f"maintenance.publish_{label}_us_per_command", "value": round(publish_seconds / rows * 1e6, 1),
         "unit": "us", **common},
        {"metric": f"maintenance.publish_{label}_wal_bytes_per_command", "value": round(publish_wal / rows),
         "unit": "B", **common},
        {"metric": f"maintenance.publish_{label}_hot_share", "value": round(hot / max(1, updates), 3),
         "unit": "ratio", "updates": updates, "hot_updates": hot, **common},
        {"metric": f"maintenance.enqueue_{label}_us_per_command", "value": round(enqueue_seconds / rows * 1e6, 1),
         "unit": "us", "wal_bytes_per_command": round(enqueue_wal / rows), **common},
        {"metric": f"maintenance.outbox_{label}_bytes_per_command", "value": round(total / rows), "unit": "B",
         "heap_bytes_per_command": round(heap / rows), "indexes": indexes, **common},
    ]  # fmt: skip


def publishing(ctx) -> list[dict]:
    rows = ctx.size("MAINTENANCE_BENCH_PUBLISH_ROWS", 200_000)
    before = _schema_before(ctx)
    results = _publish_cost(
        before,
        "before",
        rows,
        lambda conn: conn.exec_driver_sql(CLAIM_BEFORE, {"limit": CHUNK}).all(),
        lambda conn, ids: conn.exec_driver_sql(MARK_BEFORE, {"ids": ids}),
    )
    before.dispose()
    _, after = ctx.new_database("outbox_after")
    claim = {"source": None, "keys": None, "limit": CHUNK}
    results += _publish_cost(
        after,
        "after",
        rows,
        lambda conn: db.run(conn, "outbox/claim_pending.sql", claim).all(),
        lambda conn, ids: db.run(conn, "outbox/mark_published.sql", {"ids": ids}),
    )
    after.dispose()
    return results


# ---- a year of rows, pruned ---------------------------------------------------------------------


def _sizes(engine) -> dict:
    with engine.connect() as conn:
        total, heap, rows = conn.exec_driver_sql(
            "SELECT pg_total_relation_size('command_outbox'), pg_relation_size('command_outbox'), "
            "(SELECT count(*) FROM command_outbox)"
        ).one()
    return {"total_mb": round(total / 2**20, 1), "heap_mb": round(heap / 2**20, 1), "rows": rows}


class Publisher(threading.Thread):
    """Enqueue and stamp 50 commands every 50 ms, as producers do while the prune runs; latencies."""

    def __init__(self, engine):
        super().__init__(daemon=True)
        self.engine, self.latencies, self.stop, self.offset = engine, [], threading.Event(), 10**9

    def run(self) -> None:
        claim = {"source": "bench", "keys": None, "limit": CHUNK}
        while not self.stop.is_set():
            started = time.perf_counter()
            with self.engine.begin() as conn:
                outbox.enqueue(conn, _commands(50, self.offset), "bench")
            with self.engine.begin() as conn:
                ids = [r[0] for r in db.run(conn, "outbox/claim_pending.sql", claim).all()]
                db.run(conn, "outbox/mark_published.sql", {"ids": ids})
            self.latencies.append((time.perf_counter() - started) * 1000)
            self.offset += 50
            time.sleep(0.05)


def year(ctx) -> list[dict]:
    per_day = ctx.size("MAINTENANCE_BENCH_ROWS_PER_DAY", 10_000)
    scale = {"rows_per_day": per_day, "scale": f"1/{FULL_SCALE_ROWS_PER_DAY / per_day:.0f} of a million users"}
    _, engine = ctx.new_database("outbox_year")
    now = datetime.now(UTC)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(SEED_YEAR, {"start": now - timedelta(days=365), "rows": per_day * 365, "span": "365 days"})
    _autocommit(engine, "VACUUM ANALYZE command_outbox")
    results = [
        {"metric": "maintenance.year_seed_seconds", "value": round(time.perf_counter() - started, 1), "unit": "s",
         **scale},
        {"metric": "maintenance.outbox_year_before_prune_mb", "value": _sizes(engine)["total_mb"], "unit": "MB",
         **_sizes(engine), **scale},
    ]  # fmt: skip

    publisher = Publisher(engine)
    publisher.start()
    time.sleep(1)
    idle = list(publisher.latencies)
    started = time.perf_counter()
    tables = prune.prune_drill_database(
        engine, now=datetime.now(UTC), outbox_retention_days=30, rejected_retention_days=30
    )["tables"]
    seconds = time.perf_counter() - started
    publisher.stop.set()
    publisher.join()
    during = publisher.latencies[len(idle) :]
    pruned = tables["command_outbox"]
    results += [
        {"metric": "maintenance.year_prune_seconds", "value": round(seconds, 1), "unit": "s",
         "rows_deleted": pruned["rows"], "batches": pruned["batches"], "bytes_of_deleted_rows": pruned["bytes"],
         "rows_per_second": round(pruned["rows"] / seconds), **scale},
        {"metric": "maintenance.publisher_latency_during_prune_ms_max", "value": round(max(during), 1), "unit": "ms",
         "p50": round(statistics.median(during), 1), "cycles": len(during),
         "before_prune_max": round(max(idle), 1) if idle else None},
        {"metric": "maintenance.outbox_year_after_prune_mb", "value": _sizes(engine)["total_mb"], "unit": "MB",
         **_sizes(engine), "note": "files keep their size; the space is reused by new rows"},
    ]  # fmt: skip
    _autocommit(engine, "VACUUM ANALYZE command_outbox")
    results.append({"metric": "maintenance.outbox_year_after_vacuum_mb", "value": _sizes(engine)["total_mb"],
                    "unit": "MB", **_sizes(engine)})  # fmt: skip

    # steady state: one more day of commands, then the next daily prune
    with engine.begin() as conn:
        conn.exec_driver_sql(SEED_YEAR.replace("'start-drill:'", "'next-day:'"),
                             {"start": now - timedelta(days=1), "rows": per_day, "span": "1 day"})  # fmt: skip
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    started = time.perf_counter()
    daily = prune.prune_drill_database(engine, now=tomorrow, outbox_retention_days=30, rejected_retention_days=30)
    daily_seconds = time.perf_counter() - started
    factor = FULL_SCALE_ROWS_PER_DAY / per_day
    results += [
        {"metric": "maintenance.daily_prune_seconds", "value": round(daily_seconds, 2), "unit": "s",
         "rows_deleted": daily["tables"]["command_outbox"]["rows"], **scale},
        {"metric": "maintenance.daily_prune_seconds_at_1m_users", "value": round(daily_seconds * factor, 1),
         "unit": "s", "extrapolated": f"x{factor:.0f}, linear in rows deleted",
         "year_prune_at_1m_users_seconds": round(seconds * factor)},
    ]  # fmt: skip
    engine.dispose()
    return results


def run(ctx) -> list[dict]:
    return publishing(ctx) + year(ctx)
