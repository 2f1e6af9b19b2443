"""Drill rollout at scale: ROLLOUT_BENCH_USERS users (default 1,000,000) with the 3-drill catalog each.

1. append a new drill after the last one (the default placement): every user gets one row;
2. a re-run of the same rollout (must insert nothing);
3. a drill for two of the 50 employers only (its audience): the dry run's per-employer counts,
   then the rollout, which gives it to those employers' users (4 % of them) and nobody else;
4. with ROLLOUT_BENCH_SHIFT=1 (off by default to keep `make bench` within 15 minutes): a second
   drill at place 1, which moves each user's later drills one place on (3 status rows per user)
   as well as inserting one row per user.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from drill_progress.rollout import add_drill as rollout

SEED = """
INSERT INTO users (user_id, seq, profile)
SELECT md5('bench-user-' || i)::uuid, i,
       jsonb_build_object('validated', true, 'account_info', jsonb_build_object('employer_id', i %% 50))
FROM generate_series(1, %(n)s) AS i;
"""
SEED_STATUSES = """
INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time)
SELECT gen_random_uuid(), u.user_id, d.drill_slug, d.place_in_sequence,
       CASE WHEN d.place_in_sequence = 0 THEN now() END
FROM users u CROSS JOIN drills d
"""


def _server_cpu_seconds(datadir: Path) -> float:
    """CPU used so far by the PostgreSQL server: live processes plus the backends it has reaped.
    The machine may be shared, so wall time alone says little; CPU seconds do not depend on load."""
    tick = os.sysconf("SC_CLK_TCK")
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])  # own + reaped children
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _timed_rollout(ctx, engine, **params) -> tuple[dict, float]:
    cpu_before = _server_cpu_seconds(ctx.pg.datadir) + time.process_time()
    summary = rollout.roll_out(engine, **params)
    return summary, _server_cpu_seconds(ctx.pg.datadir) + time.process_time() - cpu_before


def _metrics(label: str, summary: dict, cpu: float, users: int) -> list[dict]:
    seconds = summary["seconds"]
    rows = summary["rows_inserted"] + summary["statuses_moved"]
    return [
        {
            "metric": f"rollout.{label}.seconds",
            "value": seconds,
            "unit": "s",
            "users": users,
            "rows_inserted": summary["rows_inserted"],
            "statuses_moved": summary["statuses_moved"],
            "batches": summary["batches"],
            "load_avg_1m": os.getloadavg()[0],
            "cpus": os.cpu_count(),
        },
        {
            "metric": f"rollout.{label}.rows_per_s",
            "value": round(rows / seconds, 1) if seconds else 0.0,
            "unit": "rows/s",
        },
        {
            "metric": f"rollout.{label}.cpu_seconds",
            "value": round(cpu, 1),
            "unit": "cpu-s",
            "note": "PostgreSQL server + this process",
        },
    ]


def _targeted(ctx, engine, users: int) -> list[dict]:
    """A drill for employers 7 and 8 only: the dry run per employer, then the rollout."""
    params = {"drill_slug": "05-bench-targeted", "drill_name": "Bench targeted", "only_employer_ids": [7, 8]}
    expected = sum(1 for i in range(1, users + 1) if i % 50 in (7, 8))
    dry, cpu_dry = _timed_rollout(ctx, engine, **params, dry_run=True)
    assert dry["rows_would_insert"] == expected and set(dry["per_employer"]) == {"7", "8"}, dry
    targeted, cpu = _timed_rollout(ctx, engine, **params)
    assert targeted["rows_inserted"] == expected and targeted["audience"] == ["7", "8"], targeted
    return [
        {
            "metric": "rollout.targeted_dry_run.seconds",
            "value": dry["seconds"],
            "unit": "s",
            "users": users,
            "per_employer": dry["per_employer"],
            "cpu_seconds": round(cpu_dry, 1),
        },
        *_metrics("targeted", targeted, cpu, users),
    ]


def run(ctx) -> list[dict]:
    logging.getLogger("drill_progress.rollout.add_drill").setLevel(logging.WARNING)  # no per-batch lines here
    users = ctx.size("ROLLOUT_BENCH_USERS", 1_000_000)
    shift = ctx.size("ROLLOUT_BENCH_SHIFT", 0)
    _, engine = ctx.new_database("rollout")
    results: list[dict] = []
    try:
        started = time.perf_counter()
        with engine.begin() as conn:
            # synthetic rows, consistent by construction: skip the FK triggers while seeding only
            # (the bench connects as the local cluster's superuser); the rollout runs with them
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            conn.exec_driver_sql(SEED, {"n": users})
            conn.exec_driver_sql(SEED_STATUSES)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE users")
            conn.exec_driver_sql("VACUUM ANALYZE drill_statuses")
        results.append(
            {
                "metric": "rollout.seed.seconds",
                "value": round(time.perf_counter() - started, 2),
                "unit": "s",
                "users": users,
                "statuses": users * 3,
            }
        )

        appended, cpu = _timed_rollout(ctx, engine, drill_slug="04-bench-append", drill_name="Bench append")
        assert appended["rows_inserted"] == users, appended
        results += _metrics("append", appended, cpu, users)

        again, cpu = _timed_rollout(ctx, engine, drill_slug="04-bench-append", drill_name="Bench append")
        assert again["rows_inserted"] == 0, again
        results.append(
            {
                "metric": "rollout.rerun_no_op.seconds",
                "value": again["seconds"],
                "unit": "s",
                "rows_inserted": 0,
                "cpu_seconds": round(cpu, 1),
            }
        )

        results += _targeted(ctx, engine, users)

        if shift:
            middle, cpu = _timed_rollout(
                ctx, engine, drill_slug="bench-middle", drill_name="Bench middle", place_in_sequence=1
            )
            assert middle["rows_inserted"] == users, middle
            results += _metrics("middle_shift", middle, cpu, users)
    finally:
        engine.dispose()
    return results
