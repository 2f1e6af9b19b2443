-- Drill Progress page: one employer's funnel per drill (enrolled -> started -> completed) on
-- one report day (default: that employer's latest, which is today's figures so far once
-- drill_progress_monitor has refreshed them), drills in catalog order.
WITH the_day AS (
    SELECT coalesce(%(report_date)s::date, max(report_date)) AS report_date
    FROM drill_progress_daily
    WHERE employer_id = %(employer_id)s
)
SELECT r.report_date, r.drill_slug, coalesce(d.drill_name, r.drill_slug) AS drill_name,
       r.users_enrolled, r.started_cumulative, r.completed_cumulative, r.started_day, r.completed_day,
       r.completion_rate, r.median_completion_seconds, r.inactive_7d, r.stalled_7d, r.computed_at
FROM drill_progress_daily AS r
JOIN the_day AS t ON t.report_date = r.report_date
LEFT JOIN drills AS d ON d.drill_slug = r.drill_slug
WHERE r.employer_id = %(employer_id)s
ORDER BY d.place_in_sequence NULLS LAST, r.drill_slug
