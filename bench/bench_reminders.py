"""The reminder query (include/sql/reminders/due_reminders.sql) on a large drill_instances table.

Sizes (env): REMINDERS_BENCH_INSTANCES (default 1,000,000 drill instances),
REMINDERS_BENCH_OUTBOX (default 200,000 older command rows), REMINDERS_BENCH_RUNS (default 15).

A realistic mix, generated with generate_series: 80 % completed, 5 % invalid (opted out or
re-validated), 15 % valid and incomplete with the current prompt started uniformly over the last
30 days, so about 1/36 of those (~4,200 per million) fall in the 20-hour reminder window. Rows are
inserted in start-time order, as they are written in production (drills start and advance over
time), so recent rows share heap pages. The outbox is in the steady state of the 5-minute
schedule: every in-window instance already has its reminder except those whose prompt crossed the
4-hour floor in the last 5 minutes; plus REMINDERS_BENCH_OUTBOX older commands.

Measures: the plan (EXPLAIN (ANALYZE, BUFFERS), printed), the median server-side execution time
(EXPLAIN (ANALYZE, TIMING OFF)), the median time of the query as the task runs it
(`reminders.find_due`: bound params, rows fetched into Python objects), the same without the
partial index for contrast, and a whole `trigger_reminders` run (enqueue + publish to moto),
then a re-run that finds nothing new; and what `drill_instances.reminded_prompts` (the record of
"reminded, ever" that survives the outbox's pruning) costs: bytes per reminded instance and a day.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from drill_progress.reminders import due as reminders
from drill_progress.setup.aws_resources import ensure_stream

REF = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

SEED_SQL = [
    "SELECT setseed(0.42)",
    """
INSERT INTO users (user_id, seq, profile)
SELECT md5('user' || u)::uuid, 1, '{"validated": true}'::jsonb
FROM generate_series(0, %(users)s - 1) u""",
    """
INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug, current_prompt_slug,
                             current_prompt_start_time, current_prompt_last_response_time, completion_time,
                             is_valid, created_at)
SELECT md5('instance' || g)::uuid,
       md5('user' || (g %% %(users)s))::uuid,
       '+1555' || lpad((g %% %(users)s)::text, 7, '0'),
       '0' || (g %% 3 + 1) || '-sample-drill',
       CASE WHEN g %% 100 < 80 THEN NULL ELSE 'q' || (g %% 5 + 1) END,
       CASE WHEN g %% 100 < 80 THEN NULL ELSE start_time END,
       NULL,
       CASE WHEN g %% 100 < 80 THEN start_time + interval '20 minutes' END,
       g %% 100 NOT BETWEEN 80 AND 84,
       start_time
FROM (SELECT g, %(ref)s::timestamptz - random() * interval '30 days' AS start_time
      FROM generate_series(1, %(instances)s) g) s
ORDER BY s.start_time  -- rows are written as drills start and advance: recent rows sit together""",
    """
-- older commands: start-drill requests and reminders of prompts long gone
INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, created_at,
                            published_at, attempts)
SELECT 'history:' || h, CASE WHEN h %% 2 = 0 THEN 'START_DRILL' ELSE 'TRIGGER_REMINDER' END,
       '+1555' || lpad((h %% %(users)s)::text, 7, '0'), '{}'::jsonb, 'history',
       %(ref)s::timestamptz - interval '40 days', %(ref)s::timestamptz - interval '40 days', 1
FROM generate_series(1, %(outbox)s) h""",
]

# steady state of a 5-minute schedule: every instance that was already due at the previous run
# (prompt started more than 4 h 05 min ago) has its reminder (its prompt in reminded_prompts, its
# command in the outbox); only the last 5 minutes' are new
REMINDED_SQL = """
UPDATE drill_instances SET reminded_prompts = ARRAY[current_prompt_slug]
WHERE is_valid AND completion_time IS NULL AND current_prompt_slug IS NOT NULL
  AND current_prompt_start_time > %(ref)s::timestamptz - interval '24 hours'
  AND current_prompt_start_time <= %(ref)s::timestamptz - interval '4 hours 5 minutes'
"""
SENT_SQL = """
INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source, published_at, attempts)
SELECT 'reminder:' || drill_instance_id || ':' || current_prompt_slug, 'TRIGGER_REMINDER', phone_number,
       jsonb_build_object('phone_number', phone_number, 'drill_instance_id', drill_instance_id,
                          'prompt_slug', current_prompt_slug), 'reminders', %(ref)s, 1
FROM drill_instances
WHERE is_valid AND completion_time IS NULL AND current_prompt_slug IS NOT NULL
  AND current_prompt_start_time > %(ref)s::timestamptz - interval '24 hours'
  AND current_prompt_start_time <= %(ref)s::timestamptz - interval '4 hours 5 minutes'
"""


def _median_ms(fn, runs: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), times


def _plan_figures(plan: str) -> dict:
    figures = {}
    for raw in plan.splitlines():
        line = raw.strip()
        for label in ("Planning Time", "Execution Time"):
            if line.startswith(label + ":"):
                figures[label] = float(line.split(":")[1].split()[0])
    return figures


def run(ctx) -> list[dict]:
    instances = ctx.size("REMINDERS_BENCH_INSTANCES", 1_000_000)
    history = ctx.size("REMINDERS_BENCH_OUTBOX", 200_000)
    runs = ctx.size("REMINDERS_BENCH_RUNS", 15)
    users = max(1, instances // 3)
    _, engine = ctx.new_database("reminders")
    win = reminders.window()
    results: list[dict] = []

    started = time.perf_counter()
    with engine.begin() as conn:
        params = {"users": users, "instances": instances, "outbox": history, "ref": REF}
        for statement in SEED_SQL:
            conn.exec_driver_sql(statement, params)
        conn.exec_driver_sql(SENT_SQL, {"ref": REF})
        conn.exec_driver_sql(REMINDED_SQL, {"ref": REF})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE drill_instances")
        conn.exec_driver_sql("VACUUM ANALYZE command_outbox")
    results.append(
        {
            "metric": "reminders.seed_seconds",
            "value": round(time.perf_counter() - started, 1),
            "unit": "s",
            "instances": instances,
            "outbox_rows": history,
        }
    )

    with engine.connect() as conn:
        due = reminders.find_due(conn, REF, win)
        plan = reminders.explain_due(conn, REF, win, "ANALYZE, BUFFERS")
        median, times = _median_ms(lambda: reminders.find_due(conn, REF, win), runs)
    print(
        f"\n-- reminder query plan, {instances:,} drill instances, window ({win.ceil_minutes}, "
        f"{win.floor_minutes}] minutes before {REF.isoformat()}\n{plan}\n",
        flush=True,
    )
    figures = _plan_figures(plan)
    with engine.connect() as conn:  # server-side only: no transfer, no Python, light instrumentation
        server = [
            _plan_figures(reminders.explain_due(conn, REF, win, "ANALYZE, TIMING OFF"))["Execution Time"]
            for _ in range(runs)
        ]
    results += [
        {
            "metric": "reminders.query_candidates",
            "value": len(due),
            "unit": "rows",
            "already_enqueued": sum(c.already_enqueued for c in due),
        },
        {
            "metric": "reminders.query_ms_median",
            "value": round(median, 2),
            "unit": "ms",
            "runs": runs,
            "min": round(min(times), 2),
            "max": round(max(times), 2),
            "index": "drill_instances_reminder_idx",
            "uses_index": "drill_instances_reminder_idx" in plan,
        },
        {
            "metric": "reminders.query_server_ms_median",
            "value": round(statistics.median(server), 2),
            "unit": "ms",
            "runs": runs,
            "min": min(server),
            "max": max(server),
            "planning_ms": figures.get("Planning Time"),
            "printed_plan_execution_ms": figures.get("Execution Time"),
        },
    ]

    # contrast: the same query without its partial index (inside a transaction rolled back)
    with engine.connect() as conn:
        conn.exec_driver_sql("DROP INDEX drill_instances_reminder_idx")
        no_index_plan = reminders.explain_due(conn, REF, win, "ANALYZE, BUFFERS")
        median_no_index, _ = _median_ms(lambda: reminders.find_due(conn, REF, win), max(3, runs // 3))
        conn.rollback()
    print(f"-- without drill_instances_reminder_idx\n{no_index_plan}\n", flush=True)
    results.append(
        {"metric": "reminders.query_ms_median_without_index", "value": round(median_no_index, 2), "unit": "ms"}
    )

    # a whole run: enqueue the new half, publish them to the emulator; then a re-run
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_reset()")
    kinesis = ctx.boto3_client("kinesis")
    ensure_stream(kinesis, "bench-reminder-commands")
    for label in ("first_run", "rerun"):
        started = time.perf_counter()
        summary = reminders.trigger_reminders(engine, kinesis, "bench-reminder-commands", reference=REF)
        results.append(
            {
                "metric": f"reminders.{label}_seconds",
                "value": round(time.perf_counter() - started, 3),
                "unit": "s",
                **{k: summary[k] for k in ("candidates", "enqueued", "published", "failed")},
            }
        )
    results += _reminded_prompts_cost(engine, instances)
    engine.dispose()
    return results


def _reminded_prompts_cost(engine, instances: int) -> list[dict]:
    """What keeping "reminded" on the instance costs: bytes per reminded instance, reminders a day in
    this mix (prompts entering the window in a day), so bytes a day; and how many of the marking
    updates were HOT (no index entry written)."""
    engine.dispose()  # the backends that updated flush their statistics as they exit
    time.sleep(1)
    with engine.connect() as conn:
        reminded, size = conn.exec_driver_sql(
            "SELECT count(*), coalesce(sum(pg_column_size(reminded_prompts)), 0) FROM drill_instances "
            "WHERE reminded_prompts IS NOT NULL"
        ).one()
        per_day = conn.exec_driver_sql(
            "SELECT count(*) FROM drill_instances WHERE is_valid AND completion_time IS NULL "
            "AND current_prompt_start_time > %(ref)s::timestamptz - interval '28 hours' "
            "AND current_prompt_start_time <= %(ref)s::timestamptz - interval '4 hours'",
            {"ref": REF},
        ).scalar()
        updates, hot = conn.exec_driver_sql(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'drill_instances'"
        ).one()
    per_instance = size / max(1, reminded)
    scale = 1_000_000 / max(1, instances)
    return [
        {
            "metric": "reminders.reminded_prompts_bytes_per_instance",
            "value": round(per_instance, 1),
            "unit": "B",
            "reminded_instances": reminded,
        },
        {
            "metric": "reminders.reminded_prompts_bytes_per_day_at_1m_instances",
            "value": round(per_day * scale * per_instance),
            "unit": "B",
            "reminders_per_day": round(per_day * scale),
            "note": "prompts entering the reminder window in a day, in this mix",
        },
        {"metric": "reminders.mark_hot_share", "value": round(hot / max(1, updates), 3), "unit": "ratio",
         "updates": updates},
    ]  # fmt: skip
