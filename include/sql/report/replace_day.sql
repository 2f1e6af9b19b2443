-- Replace one report day of drill_progress_daily, in ONE transaction (the task's): readers see the old
-- day or the new one, never a mix. Run by the DAG's SQLExecuteQueryOperator (statement by statement,
-- the same bound parameters for each; the Rendered Template tab shows this text) and by
-- drill_progress.report.daily.build_day. Parameters: report_date, day_start, day_end, inactive_days.

-- Serialise runs of the same report day (a backfill overlapping a scheduled run or a retry):
-- held until the transaction ends.
SELECT pg_advisory_xact_lock(7316007, (%(report_date)s::date - DATE '2000-01-01'));

-- The day's previous rows go; how many is kept for the summary (a transaction-local setting).
WITH gone AS (DELETE FROM drill_progress_daily WHERE report_date = %(report_date)s::date RETURNING 1)
SELECT set_config('drill_progress.rows_replaced', count(*)::text, true) FROM gone;

-- One report day, per (employer, drill), from the aggregate's timestamps only: every bound is
-- the day's [day_start, day_end) in UTC, never now(). Definitions (also in the DAG's doc_md):
--   known_at   : earliest timestamp the aggregate holds for the user: users.created_at,
--                last_interacted_time, or any started/completed time of any of their drills
--                (events may be older than the row that recorded them)
--   enrolled   : users with a status row for the drill and known_at before day_end;
--                demo users (profile.is_demo = true) are left out of every figure
--   started    : drill_statuses.started_time in the day / before day_end
--   completed  : drill_statuses.completed_time in the day / before day_end
--   rate       : of those who had started by day_end, the share who had completed by day_end
--   median     : median seconds from started_time to completed_time, completions before day_end
--   inactive   : enrolled users whose last_interacted_time is before day_end - inactive_days
--   stalled    : inactive users with this drill started but not completed by day_end
INSERT INTO drill_progress_daily (
    report_date, employer_id, drill_slug, users_enrolled,
    started_day, started_cumulative, completed_day, completed_cumulative,
    completion_rate, median_completion_seconds, inactive_7d, stalled_7d)
WITH bounds AS (
    SELECT %(day_start)s::timestamptz AS day_start,
           %(day_end)s::timestamptz AS day_end,
           %(day_end)s::timestamptz - make_interval(days => %(inactive_days)s::int) AS inactive_before
), known AS (
    SELECT u.user_id,
           coalesce(nullif(btrim(u.profile -> 'account_info' ->> 'employer_id'), ''), 'unknown') AS employer_id,
           u.last_interacted_time,
           least(u.created_at, u.last_interacted_time, min(s.started_time), min(s.completed_time)) AS known_at
    FROM users AS u
    JOIN drill_statuses AS s ON s.user_id = u.user_id
    WHERE (u.profile -> 'is_demo') IS DISTINCT FROM 'true'::jsonb
    GROUP BY u.user_id
), enrolled AS (
    SELECT k.employer_id,
           s.drill_slug,
           s.started_time < b.day_end AS started_by_end,
           s.started_time >= b.day_start AND s.started_time < b.day_end AS started_in_day,
           s.completed_time < b.day_end AS completed_by_end,
           s.completed_time >= b.day_start AND s.completed_time < b.day_end AS completed_in_day,
           CASE WHEN s.completed_time < b.day_end AND s.completed_time >= s.started_time
                THEN extract(epoch FROM s.completed_time - s.started_time) END AS completion_seconds,
           coalesce(k.last_interacted_time, '-infinity'::timestamptz) < b.inactive_before AS inactive
    FROM known AS k
    JOIN drill_statuses AS s ON s.user_id = k.user_id
    CROSS JOIN bounds AS b
    WHERE k.known_at < b.day_end
)
SELECT %(report_date)s::date,
       employer_id,
       drill_slug,
       count(*),
       count(*) FILTER (WHERE started_in_day),
       count(*) FILTER (WHERE started_by_end),
       count(*) FILTER (WHERE completed_in_day),
       count(*) FILTER (WHERE completed_by_end),
       round(count(*) FILTER (WHERE started_by_end AND completed_by_end)::numeric
             / nullif(count(*) FILTER (WHERE started_by_end), 0), 4),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY completion_seconds),
       count(*) FILTER (WHERE inactive),
       count(*) FILTER (WHERE inactive AND started_by_end AND completed_by_end IS NOT TRUE)
FROM enrolled
GROUP BY employer_id, drill_slug;

-- What the task returns: the day, the rows it replaced and the rows it wrote.
SELECT %(report_date)s::date::text AS report_date,
       current_setting('drill_progress.rows_replaced')::int AS rows_replaced,
       count(*) AS rows_written
FROM drill_progress_daily
WHERE report_date = %(report_date)s::date;
