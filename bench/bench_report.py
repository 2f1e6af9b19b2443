"""Daily report: time to replace one report day, and the Drill Progress page's queries.

Sizes: DRILL_BENCH_REPORT_USERS (default 50000 users, 3 drills each, 50 employers),
DRILL_BENCH_REPORT_DAYS (default 7 report days built).
"""

from __future__ import annotations

import time
from datetime import date, timedelta

from drill_progress.report import daily as report
from drill_progress.ui import queries

SEED_SQL = """
INSERT INTO users (user_id, seq, profile, created_at, last_interacted_time)
SELECT md5('u' || g)::uuid, g,
       jsonb_build_object('account_info', jsonb_build_object('employer_id', g %% 50)),
       timestamptz '2026-03-01' + (g %% 30) * interval '1 day',
       timestamptz '2026-03-01' + (g %% 30) * interval '1 day' + (g %% 17) * interval '1 day'
FROM generate_series(1, %(users)s) AS g;

INSERT INTO drill_statuses (id, user_id, drill_slug, place_in_sequence, started_time, completed_time)
SELECT md5('s' || g || d.place_in_sequence)::uuid, md5('u' || g)::uuid, d.drill_slug, d.place_in_sequence,
       CASE WHEN (g + d.place_in_sequence) %% 4 <> 0
            THEN timestamptz '2026-03-01' + ((g + 3 * d.place_in_sequence) %% 40) * interval '1 day'
                 + (g %% 24) * interval '1 hour' END,
       CASE WHEN (g + d.place_in_sequence) %% 4 NOT IN (0, 1)
            THEN timestamptz '2026-03-01' + ((g + 3 * d.place_in_sequence) %% 40 + g %% 3) * interval '1 day'
                 + (g %% 24) * interval '1 hour' + interval '30 minutes' END
FROM generate_series(1, %(users)s) AS g CROSS JOIN drills AS d;
"""


def _timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def run(ctx) -> list[dict]:
    users = ctx.size("DRILL_BENCH_REPORT_USERS", 50_000)
    days = ctx.size("DRILL_BENCH_REPORT_DAYS", 7)
    _url, engine = ctx.new_database("report")
    with engine.begin() as conn:
        for statement in SEED_SQL.split(";\n\n"):
            conn.exec_driver_sql(statement, {"users": users})
        conn.exec_driver_sql("ANALYZE")

    first = date(2026, 3, 20)
    timings = []
    for i in range(days):
        _summary, seconds = _timed(report.build_day, engine, report.ReportDay(first + timedelta(days=i)))
        timings.append(seconds)
    rows = _summary["rows_written"]
    _again, rerun = _timed(report.build_day, engine, report.ReportDay(first))

    _e, t_employers = _timed(queries.employers, engine)
    _c, t_completions = _timed(queries.completions, engine, "7", 30)
    _f, t_funnel = _timed(queries.funnel, engine, "7")
    engine.dispose()
    common = {"users": users, "status_rows": users * 3}
    return [
        {
            "metric": "report.build_day.mean",
            "value": sum(timings) / len(timings),
            "unit": "s/day",
            "days": days,
            "rows_per_day": rows,
            **common,
        },
        {"metric": "report.build_day.max", "value": max(timings), "unit": "s/day", **common},
        {"metric": "report.rerun_day", "value": rerun, "unit": "s", **common},
        {"metric": "report.ui.employers", "value": t_employers * 1000, "unit": "ms", **common},
        {"metric": "report.ui.completions", "value": t_completions * 1000, "unit": "ms", **common},
        {"metric": "report.ui.funnel", "value": t_funnel * 1000, "unit": "ms", **common},
    ]
