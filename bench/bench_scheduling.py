"""Next-drill scheduling at scale (docs/scheduling.md):

1. the due-users query, beside the original design's query shape on the original schema: the same
   number of runs of each, medians compared, and the speedup printed only once the two are shown
   to pick the same users, numbers and drills;
2. the plan task on the WHOLE due set: streamed from PostgreSQL, planned and recorded into
   DynamoDB on the emulator, in a fresh process whose peak resident memory is measured (the plan
   task's memory); beside it, for comparison, the former all-in-memory plan (every due user and
   every item built at once, not written);
3. a short paced run (real clock, real emulator): the pacing error |arrival on Kinesis - planned
   time| (p50, p99, max), the busiest second against the mean rate, and the worker-slot time the
   send task held.

Sizes (env): SCHEDULING_BENCH_USERS (default 1,000,000 users x 3 drills; about 69 % are due),
SCHEDULING_BENCH_REPEAT (default 3 runs of each query shape; medians),
SCHEDULING_BENCH_ORIGINAL (default 1: also run the original shape; 0 skips it),
SCHEDULING_BENCH_MEMORY_BASELINE (default 1: also measure the former all-in-memory plan),
SCHEDULING_BENCH_PACED_USERS (default 3,000) over SCHEDULING_BENCH_PACED_SECONDS (default 60).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
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


def _queries(engine, n: int, repeat: int, with_original: bool) -> tuple[list[dict], int]:
    cutoff = REFERENCE - INACTIVITY
    out: list[dict] = []
    plan_text, explained = _explain(engine, load_sql("scheduling/due_users.sql"), {"cutoff": cutoff})
    print(f"# due_users.sql plan at {n:,} users:\n{plan_text}", file=sys.stderr, flush=True)
    times, users = [], []
    for _ in range(repeat):
        seconds, users = _new_query(engine, cutoff)
        times.append(seconds)
    new_median = statistics.median(times)
    _log(f"due users: {len(users):,}; query + fetch {', '.join(f'{t:.2f}s' for t in times)}")
    out.append(
        {
            "metric": "scheduling.due_users_query",
            "value": round(new_median, 3),
            "unit": "s",
            "users": n,
            "due_users": len(users),
            "runs": [round(t, 3) for t in times],
            "statistic": f"median of {repeat}",
            "explain_analyze_s": round(explained, 3),
            "plan": plan_text,
            "goal_s": 4.0,
        }
    )
    if with_original:
        runs, picked, orig_plan = [], {}, ""
        for _ in range(repeat):  # like for like: as many runs as the new query, medians compared
            seconds, picked, orig_plan = _original(engine, cutoff)
            runs.append(seconds)
        print(f"# original shape plan (original schema):\n{orig_plan}", file=sys.stderr, flush=True)
        new = {u.user_id: (u.phone_number, u.drill_slug) for u in users}
        if picked != new:  # a speedup of a query that answers something else means nothing
            raise AssertionError(
                f"the original shape and due_users.sql disagree: {len(picked):,} vs {len(new):,} users, "
                f"{sum(1 for k in picked.keys() & new.keys() if picked[k] != new[k]):,} with another number or drill"
            )
        orig_median = statistics.median(runs)
        _log(f"original shape streamed row by row: {', '.join(f'{t:.2f}s' for t in runs)}; same {len(picked):,} users")
        out.append(
            {
                "metric": "scheduling.original_query_streamed",
                "value": round(orig_median, 3),
                "unit": "s",
                "users": n,
                "due_users": len(picked),
                "runs": [round(t, 3) for t in runs],
                "statistic": f"median of {repeat}",
                "same_result": True,
                "plan": orig_plan,
            }
        )
        out.append(
            {
                "metric": "scheduling.speedup_vs_original",
                "value": round(orig_median / new_median, 1),
                "unit": "x",
                "users": n,
                "statistic": f"median of {repeat} / median of {repeat}",
            }
        )
    return out, len(users)


# The plan task's memory is measured in a process of its own, as a task runs: Airflow's task SDK and
# the scheduling package imported, then one call. VmHWM is the peak resident set of the process's
# own memory since it started (ru_maxrss would carry over the benchmark's own peak across exec).
CHILD = """
import json, sys, time
from datetime import datetime, timedelta
import boto3
import airflow.sdk  # noqa: F401 -- what a task process has loaded
from drill_progress.db import make_engine
from drill_progress.scheduling import planning, tasks  # noqa: F401

url, endpoint, table, mode = sys.argv[1:5]
reference = datetime.fromisoformat(sys.argv[5])
engine = make_engine(url)
dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
baseline = rss_mib()
started = time.perf_counter()
if mode == "stream":
    out = planning.plan_run(engine, dynamodb, table, reference=reference, now=reference, spread_minutes=180,
                            inactivity_minutes=720, max_send_delay_minutes=60, rate_limited=True)
    figures = {k: out["summary"][k] for k in ("due_users", "recorded", "chunks", "slots", "max_per_second")}
    figures["max_slot_users"] = max(s["users"] for s in out["slots"])
else:  # the former plan: every due user, every planned send and every item in memory at once
    window = planning.Window.for_run(reference, 180)
    with engine.begin() as conn:
        users = planning.due_users(conn, reference - timedelta(minutes=720))
    sends = planning.plan(users, window)
    items = [planning.schedule_item(s, window, 0, 0) for s in sends]
    figures = {"due_users": len(users), "items_built": len(items)}
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "baseline_mib": baseline, "peak_mib": rss_mib(), **figures}))
"""


def _plan_in_a_process(url: str, endpoint: str, table: str, mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, endpoint, table, mode, REFERENCE.isoformat()],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"plan process failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _plan_and_record(ctx, url: str, n: int, with_baseline: bool) -> list[dict]:
    dynamodb = ctx.boto3_client("dynamodb")
    table = "bench-drill-schedule"
    ensure_table(dynamodb, table, "pk", "sk")
    out = []
    if with_baseline:
        former = _plan_in_a_process(url, ctx.moto.endpoint_url, table, "all-in-memory")
        _log(f"former all-in-memory plan (not written): {former}")
        out.append(
            {
                "metric": "scheduling.former_plan_peak_memory",
                "value": round(former["peak_mib"]),
                "unit": "MiB",
                "users": n,
                "due_users": former["due_users"],
                "baseline_mib": round(former["baseline_mib"]),
                "note": "every due user and DynamoDB item built at once, nothing written (the design before issue 14)",
            }
        )
    streamed = _plan_in_a_process(url, ctx.moto.endpoint_url, table, "stream")
    _log(f"plan task (streamed, recorded into DynamoDB): {streamed}")
    out.append(
        {
            "metric": "scheduling.plan_and_record_seconds",
            "value": round(streamed["seconds"], 1),
            "unit": "s",
            "users": n,
            "due_users": streamed["due_users"],
            "recorded": streamed["recorded"],
            "items_per_s": round(streamed["recorded"] / streamed["seconds"]),
            "chunks": streamed["chunks"],
        }
    )
    out.append(
        {
            "metric": "scheduling.plan_peak_memory",
            "value": round(streamed["peak_mib"]),
            "unit": "MiB",
            "users": n,
            "due_users": streamed["due_users"],
            "baseline_mib": round(streamed["baseline_mib"]),
            "goal_mib": 300,
        }
    )
    out.append(
        {
            "metric": "scheduling.mapped_send_tasks",
            "value": streamed["slots"],
            "unit": "tasks",
            "users": n,
            "max_slot_users": streamed["max_slot_users"],
            "max_per_second": streamed["max_per_second"],
        }
    )
    return out


def _paced_run(ctx, n: int, seconds: int) -> list[dict]:
    """Plan n due users over `seconds` starting shortly, send them paced with the real clock, and
    compare each record's arrival on Kinesis with its planned time."""
    _url, engine = ctx.new_database("scheduling_paced")
    with engine.begin() as conn:
        conn.exec_driver_sql(GENERATE.format(n=int(n), ref=REFERENCE.isoformat()))
        conn.exec_driver_sql("UPDATE users SET last_interacted_time = NULL, profile = '{}'")
        conn.exec_driver_sql("UPDATE phone_numbers SET is_primary = true")
        conn.exec_driver_sql(
            "UPDATE drill_statuses SET started_time = now() - interval '5 days', completed_time = NULL "
            "WHERE place_in_sequence = 0"
        )
    dynamodb, kinesis = ctx.boto3_client("dynamodb"), ctx.boto3_client("kinesis")
    table, stream = "bench-paced-schedule", "bench-paced-commands"
    ensure_table(dynamodb, table, "pk", "sk")
    ensure_stream(kinesis, stream)
    start = datetime.now(UTC) + timedelta(seconds=5)
    planned = scheduling.plan_run(
        engine,
        dynamodb,
        table,
        reference=start,
        now=datetime.now(UTC),
        spread_minutes=seconds / 60,
        inactivity_minutes=720,
        max_send_delay_minutes=60,
        rate_limited=True,
    )
    planned_at = {}
    for spec in planned["slots"]:
        planned_at.update({i.idempotency_key: i.planned for i in sending.slot_items(dynamodb, table, spec)})
    time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))  # a send task defers until then
    results = [
        sending.send_slot(engine, dynamodb, kinesis, table=table, stream=stream, slot=s) for s in planned["slots"]
    ]
    arrived = {
        json.loads(r["Data"])["idempotency_key"]: r["ApproximateArrivalTimestamp"].timestamp()
        for r in _read_stream(kinesis, stream)
    }
    engine.dispose()
    errors = sorted(abs(arrived[k] - planned_at[k]) for k in arrived)
    per_second = Counter(int(t) for t in arrived.values())
    mean = len(arrived) / seconds
    held = sum(r["held_seconds"] for r in results)
    _log(
        f"paced run: {len(arrived):,} of {len(planned_at):,} sent over {seconds}s; |sent - planned| p50 "
        f"{_pct(errors, 50):.3f}s p99 {_pct(errors, 99):.3f}s max {errors[-1]:.3f}s; busiest second "
        f"{max(per_second.values())} (mean {mean:.1f}/s); send tasks held a worker {held:.1f}s"
    )
    return [
        {
            "metric": "scheduling.pacing_error_p99",
            "value": round(_pct(errors, 99), 3),
            "unit": "s",
            "users": len(planned_at),
            "sent": len(arrived),
            "window_s": seconds,
            "p50_s": round(_pct(errors, 50), 3),
            "max_s": round(errors[-1], 3),
            "goal_s": 5.0,
        },
        {
            "metric": "scheduling.pacing_busiest_second",
            "value": max(per_second.values()),
            "unit": "commands/s",
            "users": len(planned_at),
            "mean_per_s": round(mean, 1),
            "ratio_to_mean": round(max(per_second.values()) / mean, 2),
            "ceiling_per_task": planned["summary"]["max_per_second"],
        },
        {
            "metric": "scheduling.pacing_worker_slot_seconds",
            "value": round(held, 1),
            "unit": "s",
            "users": len(planned_at),
            "window_s": seconds,
            "per_window_second": round(held / seconds, 3),
        },
    ]


def _read_stream(kinesis, stream: str) -> list[dict]:
    from devtools.streams import read_all

    return read_all(kinesis, stream)


def _pct(sorted_values: list[float], pct: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


def run(ctx) -> list[dict]:
    n = ctx.size("SCHEDULING_BENCH_USERS", 1_000_000)
    repeat = max(1, ctx.size("SCHEDULING_BENCH_REPEAT", 3))
    with_original = bool(ctx.size("SCHEDULING_BENCH_ORIGINAL", 1))
    with_baseline = bool(ctx.size("SCHEDULING_BENCH_MEMORY_BASELINE", 1))
    paced_users = ctx.size("SCHEDULING_BENCH_PACED_USERS", 3_000)
    paced_seconds = ctx.size("SCHEDULING_BENCH_PACED_SECONDS", 60)
    url, engine = ctx.new_database("scheduling")
    out: list[dict] = []

    load = _generate(engine, n)
    _log(f"generated {n:,} users x 3 drills in {load:.1f}s")
    out.append({"metric": "scheduling.generate_users", "value": round(load, 2), "unit": "s", "users": n})
    figures, _due = _queries(engine, n, repeat, with_original)
    out += figures
    engine.dispose()
    out += _plan_and_record(ctx, url, n, with_baseline)
    out += _paced_run(ctx, paced_users, paced_seconds)
    return out
