"""Next-drill scheduling: the due-users query at scale, beside the original design's query shape,
and planning + recording a day's schedule in DynamoDB.

Sizes (env): SCHEDULING_BENCH_USERS (default 1,000,000 users x 3 drills),
SCHEDULING_BENCH_RECORD_USERS (default 20,000 schedule items written to DynamoDB; 100,000 on request),
SCHEDULING_BENCH_REPEAT (default 3 timed runs of the new query; the best is reported),
SCHEDULING_BENCH_ORIGINAL (default 1: also time the original shape; 0 skips it).
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from drill_progress.db import load_sql
from drill_progress.next_drill import StatusRow, next_drill
from drill_progress.scheduling import planning as scheduling
from drill_progress.scheduling import sending
from drill_progress.setup.aws_resources import ensure_stream, ensure_table

REFERENCE = datetime(2026, 3, 2, 17, 5, tzinfo=UTC)
INACTIVITY = timedelta(minutes=720)
TABLES = ("users", "phone_numbers", "drill_statuses")
# The original schema's indexes: migration 0004's covering indexes dropped and the per-user place
# constraint without the INCLUDE columns migration 0008 gave it (statements run in a transaction
# that is rolled back).
ORIGINAL_INDEXES = (
    "DROP INDEX phone_numbers_primary_idx, users_not_opted_out_idx",
    "ALTER TABLE drill_statuses DROP CONSTRAINT drill_statuses_user_place_unique",
    "ALTER TABLE drill_statuses ADD CONSTRAINT drill_statuses_user_place_unique "
    "UNIQUE (user_id, place_in_sequence) DEFERRABLE INITIALLY IMMEDIATE",
)

# The data: user i has random progress through the 3 drills (7 levels, from nothing started to
# all complete), 20% never interacted, the rest interacted uniformly over the last 72 hours,
# 2% opted out, 1% without a primary number. Random uuids, inserted in i order (as in life:
# heap order is arrival order, not key order).
GENERATE = """
SELECT setseed(0.42);
CREATE TEMP TABLE g AS
SELECT i, md5('u' || i)::uuid AS user_id,
       random() AS r_inter, random() AS r_prog, random() AS r_opt, random() AS r_phone
FROM generate_series(1, {n}) AS i;
INSERT INTO users (user_id, seq, profile, last_interacted_time)
SELECT user_id, 1,
       CASE WHEN r_opt < 0.02 THEN '{{"validated": true, "opted_out": true}}'::jsonb
            WHEN r_opt < 0.10 THEN '{{"validated": true, "opted_out": false}}'::jsonb
            ELSE '{{"validated": true}}'::jsonb END,
       CASE WHEN r_inter >= 0.2 THEN TIMESTAMPTZ '{ref}' - r_inter * interval '72 hours' END
FROM g;
INSERT INTO phone_numbers (id, phone_number, user_id, is_primary)
SELECT md5('p' || i)::uuid, '+1555' || lpad(i::text, 8, '0'), user_id, r_phone >= 0.01 FROM g;
INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time, completed_time)
SELECT md5('s' || i || '-' || d.place_in_sequence)::uuid, g.user_id, d.drill_slug, d.place_in_sequence,
       CASE WHEN lvl >= 2 * d.place_in_sequence + 1 THEN TIMESTAMPTZ '{ref}' - interval '5 days' END,
       CASE WHEN lvl >= 2 * d.place_in_sequence + 2 THEN TIMESTAMPTZ '{ref}' - interval '4 days' END
FROM (SELECT *, floor(r_prog * 7)::int AS lvl FROM g) g CROSS JOIN drills d
WHERE d.place_in_sequence < 3;
DROP TABLE g;
"""

# The original design's shape: every status row of every candidate user, joined, filtered with
# EXISTS, ordered, streamed to Python which picks each user's next drill.
ORIGINAL = """
SELECT ds.user_id::text, p.phone_number, ds.drill_slug, ds.place_in_sequence, ds.started_time, ds.completed_time
FROM drill_statuses ds
JOIN users u ON u.user_id = ds.user_id
JOIN phone_numbers p ON p.user_id = u.user_id
WHERE p.is_primary
  AND (u.last_interacted_time IS NULL OR u.last_interacted_time <= %(cutoff)s)
  AND u.profile ->> 'opted_out' IS DISTINCT FROM 'true'
  AND EXISTS (SELECT 1 FROM drill_statuses s WHERE s.user_id = u.user_id AND s.started_time IS NOT NULL)
  AND EXISTS (SELECT 1 FROM drill_statuses s WHERE s.user_id = u.user_id AND s.completed_time IS NULL)
ORDER BY ds.user_id, ds.place_in_sequence
"""


def _log(msg: str) -> None:
    print(f"# scheduling: {msg}", file=sys.stderr, flush=True)


def _generate(engine, n: int) -> float:
    """Bulk-load n users: constraints and indexes are dropped for the load and rebuilt after."""
    started = time.perf_counter()
    with engine.begin() as conn:
        pg = conn.connection.driver_connection
        cons = pg.execute(
            """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype
            FROM pg_constraint
            WHERE contype IN ('p', 'u', 'f')
              AND (conrelid::regclass::text = ANY (%(t)s) OR confrelid::regclass::text = ANY (%(t)s))
            ORDER BY contype = 'f' DESC""",
            {"t": list(TABLES)},
        ).fetchall()
        idx = pg.execute(
            """
            SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
            FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid
            WHERE i.indrelid::regclass::text = ANY (%(t)s) AND c.oid IS NULL""",
            {"t": list(TABLES)},
        ).fetchall()
        for name, _ in idx:
            pg.execute(f'DROP INDEX "{name}"')
        for table, name, _, _ in cons:  # foreign keys first
            pg.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        pg.execute(GENERATE.format(n=int(n), ref=REFERENCE.isoformat()))
        for table, name, definition, _ in reversed(cons):  # keys first, then foreign keys
            pg.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for _, definition in idx:
            pg.execute(definition)
    # VACUUM sets the visibility map the index-only scans rely on; a snapshot held meanwhile
    # (autovacuum's own ANALYZE after the load) can keep it from doing so: repeat until it has.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        pending = list(TABLES)
        for _attempt in range(20):
            for table in pending:
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
            pending = (
                conn.exec_driver_sql(
                    "SELECT relname FROM pg_class WHERE relname = ANY (%(t)s) AND relallvisible < relpages",
                    {"t": pending},
                )
                .scalars()
                .all()
            )
            if not pending:
                break
            time.sleep(1)
        else:
            _log(f"visibility map still incomplete on {pending}: index-only scans will visit the heap")
    return time.perf_counter() - started


def _explain(engine, sql: str, params: dict) -> tuple[str, float]:
    with engine.begin() as conn:
        conn.exec_driver_sql(load_sql("scheduling/due_users_plan.sql"))
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + sql, params).scalars().all()
    total = next((float(r.split(":")[1].split()[0]) for r in rows if r.startswith("Execution Time")), 0.0)
    return "\n".join(rows), total / 1000


def _new_query(engine, cutoff) -> tuple[float, list]:
    started = time.perf_counter()
    with engine.begin() as conn:
        users = scheduling.due_users(conn, cutoff)
    return time.perf_counter() - started, users


def _original(engine, cutoff) -> tuple[float, dict, str]:
    """Stream the original shape row by row (server-side cursor) and pick in Python, on the
    original schema: the covering indexes are dropped inside the transaction, rolled back after."""
    picked: dict[str, tuple[str, str]] = {}
    with engine.connect() as conn, conn.begin() as tx:
        for statement in ORIGINAL_INDEXES:
            conn.exec_driver_sql(statement)
        plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + ORIGINAL, {"cutoff": cutoff}).scalars())
        started = time.perf_counter()
        result = conn.execution_options(stream_results=True, yield_per=10_000).exec_driver_sql(
            ORIGINAL, {"cutoff": cutoff}
        )
        current, phone, rows = None, None, []
        for user_id, number, slug, place, started_time, completed_time in result:
            if user_id != current:
                if rows and (chosen := next_drill(rows)):
                    picked[current] = (phone, chosen)
                current, phone, rows = user_id, number, []
            rows.append(StatusRow(slug, place, started_time, completed_time))
        if rows and (chosen := next_drill(rows)):
            picked[current] = (phone, chosen)
        seconds = time.perf_counter() - started
        tx.rollback()
    return seconds, picked, plan


def run(ctx) -> list[dict]:
    n = ctx.size("SCHEDULING_BENCH_USERS", 1_000_000)
    n_record = ctx.size("SCHEDULING_BENCH_RECORD_USERS", 20_000)
    repeat = max(1, ctx.size("SCHEDULING_BENCH_REPEAT", 3))
    with_original = bool(ctx.size("SCHEDULING_BENCH_ORIGINAL", 1))
    _url, engine = ctx.new_database("scheduling")
    out: list[dict] = []
    cutoff = REFERENCE - INACTIVITY

    load = _generate(engine, n)
    _log(f"generated {n:,} users x 3 drills in {load:.1f}s")
    out.append({"metric": "scheduling.generate_users", "value": round(load, 2), "unit": "s", "users": n})

    plan_text, explained = _explain(engine, load_sql("scheduling/due_users.sql"), {"cutoff": cutoff})
    print(f"# due_users.sql plan at {n:,} users:\n{plan_text}", file=sys.stderr, flush=True)
    times = []
    for _ in range(repeat):
        seconds, users = _new_query(engine, cutoff)
        times.append(seconds)
    best = min(times)
    _log(f"due users: {len(users):,}; query + fetch {', '.join(f'{t:.2f}s' for t in times)}")
    out.append(
        {
            "metric": "scheduling.due_users_query",
            "value": round(best, 3),
            "unit": "s",
            "users": n,
            "due_users": len(users),
            "runs": [round(t, 3) for t in times],
            "median": round(statistics.median(times), 3),
            "explain_analyze_s": round(explained, 3),
            "plan": plan_text,
            "goal_s": 4.0,
        }
    )

    if with_original:
        orig_seconds, picked, orig_plan = _original(engine, cutoff)
        print(f"# original shape plan (original schema):\n{orig_plan}", file=sys.stderr, flush=True)
        agree = picked == {u.user_id: (u.phone_number, u.drill_slug) for u in users}
        _log(f"original shape streamed row by row: {orig_seconds:.2f}s, {len(picked):,} users; same result: {agree}")
        out.append(
            {
                "metric": "scheduling.original_query_streamed",
                "value": round(orig_seconds, 3),
                "unit": "s",
                "users": n,
                "due_users": len(picked),
                "same_result": agree,
                "plan": orig_plan,
            }
        )
        out.append({"metric": "scheduling.speedup_vs_original", "value": round(orig_seconds / best, 1), "unit": "x"})

    # plan + record one day's schedule for n_record due users (DynamoDB on the moto server)
    dynamodb, kinesis = ctx.boto3_client("dynamodb"), ctx.boto3_client("kinesis")
    table, stream = "bench-drill-schedule", "bench-commands"
    ensure_table(dynamodb, table, "pk", "sk")
    ensure_stream(kinesis, stream)
    sample = users[:n_record]  # fewer if fewer users are due
    window = scheduling.Window.for_run(REFERENCE, 180)
    started = time.perf_counter()
    sends = scheduling.plan(sample, window)
    planned = time.perf_counter() - started
    written = scheduling.record(dynamodb, table, sends, window)
    recorded = time.perf_counter() - started
    slots = scheduling.slot_specs(sends, window)
    _log(
        f"planned {len(sends):,} sends in {planned:.2f}s, recorded {written:,} items in {recorded:.1f}s; "
        f"{len(slots)} slots (mapped send tasks)"
    )
    out.append(
        {
            "metric": "scheduling.plan_and_record",
            "value": round(recorded, 2),
            "unit": "s",
            "items": written,
            "plan_s": round(planned, 3),
            "items_per_s": round(written / recorded),
        }
    )
    out.append(
        {
            "metric": "scheduling.mapped_send_tasks",
            "value": len(slots),
            "unit": "tasks",
            "users": len(sends),
            "max_slot_users": max((s["users"] for s in slots), default=0),
        }
    )

    # send the fullest slot: read it back, re-check the users in PostgreSQL, enqueue, publish
    if slots:
        fullest = max(slots, key=lambda s: s["users"])
        started = time.perf_counter()
        result = sending.send_slot(engine, dynamodb, kinesis, table=table, stream=stream, slot=fullest)
        seconds = time.perf_counter() - started
        _log(f"sent slot {fullest['pk']}: {result}")
        out.append(
            {
                "metric": "scheduling.send_one_slot",
                "value": round(seconds, 2),
                "unit": "s",
                "items": result["items"],
                "published": result["published"],
                "stale": result["stale"],
            }
        )
    engine.dispose()
    return out
