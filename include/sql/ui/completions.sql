-- Drill Progress page: one employer's completions per day and drill, for the `days` report
-- days up to `until` (default: that employer's latest report day). computed_at tells a day still
-- in progress (drill_progress_monitor refreshes today's rows every 5 minutes) from a whole one.
WITH last_day AS (
    SELECT coalesce(%(until)s::date, max(report_date)) AS until
    FROM drill_progress_daily
    WHERE employer_id = %(employer_id)s
)
SELECT r.report_date, r.drill_slug, r.started_day, r.completed_day, r.completed_cumulative, r.computed_at
FROM drill_progress_daily AS r
CROSS JOIN last_day AS l
WHERE r.employer_id = %(employer_id)s
  AND r.report_date <= l.until
  AND r.report_date > l.until - %(days)s::int
ORDER BY r.report_date, r.drill_slug
